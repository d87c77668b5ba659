//! Arithmetic modulo a curve's field prime p and group order n: numbers as `L` 32-bit limbs
//! (wasm multiplies 32x32->64 natively), Montgomery multiplication with R = 2^(32 L).
//!
//! Everything verified here is public (keys, signatures, messages), so the code may branch
//! on values; it is not meant for secrets.

use super::curves::CurveParams;
use std::marker::PhantomData;

/// Little-endian 32-bit limbs.
pub type Limbs<const L: usize> = [u32; L];

/// Limbs from big-endian hex digits. Only used for the curves' constants, so it runs at
/// compile time, where a bad digit is a build error.
#[allow(clippy::panic)]
pub const fn from_hex<const L: usize>(hex: &str) -> Limbs<L> {
    let bytes = hex.as_bytes();
    let mut out = [0u32; L];
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[bytes.len() - 1 - i];
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lower-case hex digit"),
        };
        out[i / 8] |= (digit as u32) << (4 * (i % 8));
        i += 1;
    }
    out
}

/// -m^-1 mod 2^32 (Newton's iteration: each step doubles the correct low bits).
pub const fn neg_inv(m0: u32) -> u32 {
    let mut inv: u32 = 1;
    let mut i = 0;
    while i < 5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(m0.wrapping_mul(inv)));
        i += 1;
    }
    inv.wrapping_neg()
}

/// R^2 mod m, by doubling 1 modulo m 2 * 32 * L times.
pub const fn r_squared<const L: usize>(m: &Limbs<L>) -> Limbs<L> {
    let mut x = [0u32; L];
    x[0] = 1;
    let mut k = 0;
    while k < 64 * L {
        let mut carry = 0u32;
        let mut i = 0;
        while i < L {
            let top = x[i] >> 31;
            x[i] = (x[i] << 1) | carry;
            carry = top;
            i += 1;
        }
        if carry != 0 || !lt(&x, m) {
            x = sub(&x, m).0;
        }
        k += 1;
    }
    x
}

/// Bits of `a` up to its highest set bit.
pub const fn bit_length<const L: usize>(a: &Limbs<L>) -> usize {
    let mut i = L;
    while i > 0 {
        i -= 1;
        if a[i] != 0 {
            return 32 * i + 32 - a[i].leading_zeros() as usize;
        }
    }
    0
}

/// `a < b`.
pub const fn lt<const L: usize>(a: &Limbs<L>, b: &Limbs<L>) -> bool {
    let mut i = L;
    while i > 0 {
        i -= 1;
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    false
}

/// `a - b` and the borrow.
pub const fn sub<const L: usize>(a: &Limbs<L>, b: &Limbs<L>) -> (Limbs<L>, bool) {
    let mut out = [0u32; L];
    let mut borrow = 0u64;
    let mut i = 0;
    while i < L {
        let d = (a[i] as u64).wrapping_sub(b[i] as u64).wrapping_sub(borrow);
        out[i] = d as u32;
        borrow = (d >> 63) & 1;
        i += 1;
    }
    (out, borrow != 0)
}

/// `a + b` and the carry.
#[inline(always)]
pub fn add<const L: usize>(a: &Limbs<L>, b: &Limbs<L>) -> (Limbs<L>, bool) {
    let mut out = [0u32; L];
    let mut carry = 0u64;
    for i in 0..L {
        let s = u64::from(a[i]) + u64::from(b[i]) + carry;
        out[i] = s as u32;
        carry = s >> 32;
    }
    (out, carry != 0)
}

/// `a + b mod m` for `a, b < m`.
#[inline(always)]
pub fn add_mod<const L: usize>(a: &Limbs<L>, b: &Limbs<L>, m: &Limbs<L>) -> Limbs<L> {
    let (s, carry) = add(a, b);
    if carry || !lt(&s, m) {
        sub(&s, m).0
    } else {
        s
    }
}

/// `a - b mod m` for `a, b < m`.
#[inline(always)]
pub fn sub_mod<const L: usize>(a: &Limbs<L>, b: &Limbs<L>, m: &Limbs<L>) -> Limbs<L> {
    let (d, borrow) = sub(a, b);
    if borrow {
        add(&d, m).0
    } else {
        d
    }
}

/// `a * b / R mod m` for `a, b < m` (CIOS). Inlined so that each modulus's constant limbs
/// fold into the code (P-256's p has limbs 0, 1 and 2^32-1).
#[inline(always)]
pub fn mont_mul<const L: usize>(a: &Limbs<L>, b: &Limbs<L>, m: &Limbs<L>, m_inv: u32) -> Limbs<L> {
    let mut t = [0u32; L];
    let mut top: u32 = 0;
    for &bi in b {
        let bi = u64::from(bi);
        let mut c = 0u64;
        for j in 0..L {
            let x = u64::from(t[j]) + u64::from(a[j]) * bi + c;
            t[j] = x as u32;
            c = x >> 32;
        }
        let x = u64::from(top) + c;
        let (lo, hi) = (x as u32, (x >> 32) as u32);
        let q = u64::from(t[0].wrapping_mul(m_inv));
        let mut c = (u64::from(t[0]) + q * u64::from(m[0])) >> 32;
        for j in 1..L {
            let x = u64::from(t[j]) + q * u64::from(m[j]) + c;
            t[j - 1] = x as u32;
            c = x >> 32;
        }
        let x = u64::from(lo) + c;
        t[L - 1] = x as u32;
        top = hi + (x >> 32) as u32;
    }
    if top != 0 || !lt(&t, m) {
        sub(&t, m).0
    } else {
        t
    }
}

/// Big-endian bytes (at most 4 L of them) to limbs.
pub fn from_be_bytes<const L: usize>(bytes: &[u8]) -> Option<Limbs<L>> {
    let mut out = [0u32; L];
    for (i, chunk) in bytes.rchunks(4).enumerate() {
        let mut word = 0u32;
        for b in chunk {
            word = (word << 8) | u32::from(*b);
        }
        *out.get_mut(i)? = word;
    }
    Some(out)
}

pub fn is_zero<const L: usize>(a: &Limbs<L>) -> bool {
    a.iter().all(|l| *l == 0)
}

pub fn one<const L: usize>() -> Limbs<L> {
    let mut x = [0u32; L];
    x[0] = 1;
    x
}

/// An element of the field of curve `C`, in Montgomery form and always fully reduced (so
/// `==` compares values).
pub struct Fe<C: CurveParams<L>, const L: usize>(Limbs<L>, PhantomData<C>);

impl<C: CurveParams<L>, const L: usize> Clone for Fe<C, L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: CurveParams<L>, const L: usize> Copy for Fe<C, L> {}
impl<C: CurveParams<L>, const L: usize> PartialEq for Fe<C, L> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<C: CurveParams<L>, const L: usize> Eq for Fe<C, L> {}
impl<C: CurveParams<L>, const L: usize> std::fmt::Debug for Fe<C, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fe({:08x?})", self.0)
    }
}

impl<C: CurveParams<L>, const L: usize> Fe<C, L> {
    pub const ZERO: Self = Fe([0; L], PhantomData);

    /// From an integer below p; `None` otherwise.
    pub fn from_limbs(x: &Limbs<L>) -> Option<Self> {
        lt(x, &C::P).then(|| Fe(mont_mul(x, &C::R2_P, &C::P, C::P_INV), PhantomData))
    }

    pub fn one() -> Self {
        Fe(mont_mul(&one(), &C::R2_P, &C::P, C::P_INV), PhantomData)
    }

    /// The integer value.
    #[cfg(test)]
    pub fn to_limbs(self) -> Limbs<L> {
        mont_mul(&self.0, &one(), &C::P, C::P_INV)
    }

    /// Not inlined: one copy of the unrolled multiplication per curve instead of one per
    /// call site keeps the module small, and the call costs little next to L^2 products.
    #[inline(never)]
    pub fn mul(&self, b: &Self) -> Self {
        Fe(mont_mul(&self.0, &b.0, &C::P, C::P_INV), PhantomData)
    }

    #[inline]
    pub fn square(&self) -> Self {
        self.mul(self)
    }

    /// Not inlined either (like `mul`): ~80 KB less module for ~3% of an ES256 check.
    #[inline(never)]
    pub fn add(&self, b: &Self) -> Self {
        Fe(add_mod(&self.0, &b.0, &C::P), PhantomData)
    }

    #[inline(never)]
    pub fn sub(&self, b: &Self) -> Self {
        Fe(sub_mod(&self.0, &b.0, &C::P), PhantomData)
    }

    #[inline]
    pub fn double(&self) -> Self {
        self.add(self)
    }

    pub fn neg(&self) -> Self {
        Self::ZERO.sub(self)
    }

    pub fn is_zero(&self) -> bool {
        is_zero(&self.0)
    }

    /// self^(p-2) = self^-1 (Fermat); zero maps to zero.
    pub fn invert(&self) -> Self {
        let mut two = [0u32; L];
        two[0] = 2;
        let (exp, _) = sub(&C::P, &two);
        let mut acc = Self::one();
        for i in (0..32 * L).rev() {
            acc = acc.square();
            if (exp[i / 32] >> (i % 32)) & 1 == 1 {
                acc = acc.mul(self);
            }
        }
        acc
    }
}

/// Arithmetic modulo n on plain (not Montgomery) integers below n.
pub mod scalar {
    use super::*;

    /// `a * b mod n`.
    pub fn mul<C: CurveParams<L>, const L: usize>(a: &Limbs<L>, b: &Limbs<L>) -> Limbs<L> {
        // (a * b / R) * R^2 / R = a * b
        mont_mul(&mont_mul(a, b, &C::N, C::N_INV), &C::R2_N, &C::N, C::N_INV)
    }

    /// Reduces an integer below 2^(bits of n) modulo n: 2^bits < 2n for the NIST curves, so
    /// at most one subtraction.
    pub fn reduce<C: CurveParams<L>, const L: usize>(a: &Limbs<L>) -> Limbs<L> {
        if lt(a, &C::N) {
            *a
        } else {
            sub(a, &C::N).0
        }
    }

    fn shr1<const L: usize>(a: &mut Limbs<L>, top: u32) {
        for i in 0..L {
            let next = if i + 1 == L { top } else { a[i + 1] };
            a[i] = (a[i] >> 1) | (next << 31);
        }
    }

    /// x / 2 mod n.
    fn half<const L: usize>(x: &mut Limbs<L>, n: &Limbs<L>) {
        if x[0] & 1 == 0 {
            shr1(x, 0);
        } else {
            let (s, carry) = add(x, n);
            *x = s;
            shr1(x, u32::from(carry));
        }
    }

    /// a^-1 mod n by the binary extended Euclidean algorithm (variable time: a is public);
    /// `None` for zero.
    pub fn invert<C: CurveParams<L>, const L: usize>(a: &Limbs<L>) -> Option<Limbs<L>> {
        let n = &C::N;
        if is_zero(a) || !lt(a, n) {
            return None;
        }
        let one = one::<L>();
        // Invariants: x1 * a = u, x2 * a = v (mod n).
        let (mut u, mut v) = (*a, *n);
        let (mut x1, mut x2) = (one, [0u32; L]);
        // Each round removes at least one bit from u or v: 2 * 32 * L rounds suffice.
        for _ in 0..(64 * L + 2) {
            if u == one {
                return Some(x1);
            }
            if v == one {
                return Some(x2);
            }
            if is_zero(&u) || is_zero(&v) {
                return None; // only with a common factor, impossible for a prime n
            }
            while u[0] & 1 == 0 {
                shr1(&mut u, 0);
                half(&mut x1, n);
            }
            while v[0] & 1 == 0 {
                shr1(&mut v, 0);
                half(&mut x2, n);
            }
            if lt(&u, &v) {
                v = sub(&v, &u).0;
                x2 = sub_mod(&x2, &x1, n);
            } else {
                u = sub(&u, &v).0;
                x1 = sub_mod(&x1, &x2, n);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::curves::{P256, P384, P521};
    use super::*;
    use proptest::prelude::*;

    /// A value below 2^(bits of n), as signature scalars and digests are.
    fn limbs<C: CurveParams<L>, const L: usize>(seed: &[u32]) -> Limbs<L> {
        let mut out = [0u32; L];
        for (i, (o, s)) in out.iter_mut().zip(seed.iter().cycle()).enumerate() {
            let keep = C::N_BITS.saturating_sub(32 * i).min(32);
            *o = if keep == 0 { 0 } else { *s >> (32 - keep) };
        }
        out
    }

    fn field_inverse_holds<C: CurveParams<L>, const L: usize>(seed: &[u32]) {
        let x = limbs::<C, L>(seed);
        let Some(a) = Fe::<C, L>::from_limbs(&x) else {
            return;
        };
        assert_eq!(a.to_limbs(), x, "Montgomery form round-trips");
        if a.is_zero() {
            assert!(a.invert().is_zero());
        } else {
            assert_eq!(a.mul(&a.invert()), Fe::one());
        }
        assert!(a.add(&a.neg()).is_zero());
        assert_eq!(a.double().sub(&a), a);
    }

    fn scalar_inverse_holds<C: CurveParams<L>, const L: usize>(seed: &[u32]) {
        let x = scalar::reduce::<C, L>(&limbs::<C, L>(seed));
        match scalar::invert::<C, L>(&x) {
            Some(inv) => assert_eq!(scalar::mul::<C, L>(&x, &inv), one::<L>()),
            None => assert!(is_zero(&x)),
        }
    }

    proptest! {
        #[test]
        fn field_and_scalar_inverses_hold_on_every_curve(seed in prop::collection::vec(any::<u32>(), 17)) {
            field_inverse_holds::<P256, 8>(&seed);
            field_inverse_holds::<P384, 12>(&seed);
            field_inverse_holds::<P521, 17>(&seed);
            scalar_inverse_holds::<P256, 8>(&seed);
            scalar_inverse_holds::<P384, 12>(&seed);
            scalar_inverse_holds::<P521, 17>(&seed);
        }
    }

    #[test]
    fn values_at_or_above_p_are_not_field_elements() {
        assert!(Fe::<P256, 8>::from_limbs(&P256::P).is_none());
        assert!(Fe::<P521, 17>::from_limbs(&[u32::MAX; 17]).is_none());
        assert!(scalar::invert::<P384, 12>(&P384::N).is_none());
    }

    #[test]
    fn hex_constants_decode_little_endian() {
        let x: Limbs<2> = from_hex("0123456789abcdef");
        assert_eq!(x, [0x89ab_cdef, 0x0123_4567]);
        assert_eq!(bit_length(&x), 57);
    }
}
