//! Arithmetic modulo the P-256 field prime p and the group order n: 256-bit numbers as eight
//! 32-bit limbs (wasm multiplies 32x32->64 natively), Montgomery multiplication with R = 2^256.
//!
//! Everything verified here is public (keys, signatures, messages), so the code may branch
//! on values; it is not meant for secrets.

/// Little-endian 32-bit limbs.
pub type Limbs = [u32; 8];

/// p = 2^256 - 2^224 + 2^192 + 2^96 - 1
pub const P: Limbs = [
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
    0,
    0,
    0,
    1,
    0xffff_ffff,
];

/// n, the order of the base point.
pub const N: Limbs = [
    0xfc63_2551,
    0xf3b9_cac2,
    0xa717_9e84,
    0xbce6_faad,
    0xffff_ffff,
    0xffff_ffff,
    0,
    0xffff_ffff,
];

/// -m^-1 mod 2^32 (Newton's iteration: each step doubles the correct low bits).
const fn neg_inv(m0: u32) -> u32 {
    let mut inv: u32 = 1;
    let mut i = 0;
    while i < 5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(m0.wrapping_mul(inv)));
        i += 1;
    }
    inv.wrapping_neg()
}

/// R^2 mod m, by doubling 1 modulo m 512 times.
const fn r_squared(m: &Limbs) -> Limbs {
    let mut x: Limbs = [1, 0, 0, 0, 0, 0, 0, 0];
    let mut k = 0;
    while k < 512 {
        let mut carry = 0u32;
        let mut i = 0;
        while i < 8 {
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

pub const P_INV: u32 = neg_inv(P[0]);
pub const N_INV: u32 = neg_inv(N[0]);
pub const R2_P: Limbs = r_squared(&P);
pub const R2_N: Limbs = r_squared(&N);

/// `a < b`.
pub const fn lt(a: &Limbs, b: &Limbs) -> bool {
    let mut i = 8;
    while i > 0 {
        i -= 1;
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    false
}

/// `a - b` and the borrow.
pub const fn sub(a: &Limbs, b: &Limbs) -> (Limbs, bool) {
    let mut out = [0u32; 8];
    let mut borrow = 0u64;
    let mut i = 0;
    while i < 8 {
        let d = (a[i] as u64).wrapping_sub(b[i] as u64).wrapping_sub(borrow);
        out[i] = d as u32;
        borrow = (d >> 63) & 1;
        i += 1;
    }
    (out, borrow != 0)
}

/// `a + b` and the carry.
pub fn add(a: &Limbs, b: &Limbs) -> (Limbs, bool) {
    let mut out = [0u32; 8];
    let mut carry = 0u64;
    for i in 0..8 {
        let s = u64::from(a[i]) + u64::from(b[i]) + carry;
        out[i] = s as u32;
        carry = s >> 32;
    }
    (out, carry != 0)
}

/// `a + b mod m` for `a, b < m`.
#[inline(always)]
pub fn add_mod(a: &Limbs, b: &Limbs, m: &Limbs) -> Limbs {
    let (s, carry) = add(a, b);
    if carry || !lt(&s, m) {
        sub(&s, m).0
    } else {
        s
    }
}

/// `a - b mod m` for `a, b < m`.
#[inline(always)]
pub fn sub_mod(a: &Limbs, b: &Limbs, m: &Limbs) -> Limbs {
    let (d, borrow) = sub(a, b);
    if borrow {
        add(&d, m).0
    } else {
        d
    }
}

/// `a * b / R mod m` for `a, b < m` (CIOS). Inlined so that each modulus's constant limbs
/// fold into the code (p has limbs 0, 1 and 2^32-1).
#[inline(always)]
pub fn mont_mul(a: &Limbs, b: &Limbs, m: &Limbs, m_inv: u32) -> Limbs {
    let mut t = [0u32; 8];
    let mut t8: u32 = 0;
    for &bi in b {
        let bi = u64::from(bi);
        let mut c = 0u64;
        for j in 0..8 {
            let x = u64::from(t[j]) + u64::from(a[j]) * bi + c;
            t[j] = x as u32;
            c = x >> 32;
        }
        let x = u64::from(t8) + c;
        let (lo, hi) = (x as u32, (x >> 32) as u32);
        let q = u64::from(t[0].wrapping_mul(m_inv));
        let mut c = (u64::from(t[0]) + q * u64::from(m[0])) >> 32;
        for j in 1..8 {
            let x = u64::from(t[j]) + q * u64::from(m[j]) + c;
            t[j - 1] = x as u32;
            c = x >> 32;
        }
        let x = u64::from(lo) + c;
        t[7] = x as u32;
        t8 = hi + (x >> 32) as u32;
    }
    if t8 != 0 || !lt(&t, m) {
        sub(&t, m).0
    } else {
        t
    }
}

/// Big-endian 32 bytes to limbs.
pub fn from_be_bytes(bytes: &[u8; 32]) -> Limbs {
    let mut out = [0u32; 8];
    for (i, limb) in out.iter_mut().enumerate() {
        let at = 28 - 4 * i;
        *limb = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    }
    out
}

pub fn is_zero(a: &Limbs) -> bool {
    a.iter().all(|l| *l == 0)
}

/// An element of the field in Montgomery form, always fully reduced (so `==` compares
/// values).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Fe(Limbs);

impl Fe {
    pub const ZERO: Fe = Fe([0; 8]);

    /// From an integer below p; `None` otherwise.
    pub fn from_limbs(x: &Limbs) -> Option<Fe> {
        lt(x, &P).then(|| Fe(mont_mul(x, &R2_P, &P, P_INV)))
    }

    pub fn one() -> Fe {
        Fe(mont_mul(&[1, 0, 0, 0, 0, 0, 0, 0], &R2_P, &P, P_INV))
    }

    /// The integer value.
    #[cfg(test)]
    pub fn to_limbs(self) -> Limbs {
        mont_mul(&self.0, &[1, 0, 0, 0, 0, 0, 0, 0], &P, P_INV)
    }

    #[inline]
    pub fn mul(&self, b: &Fe) -> Fe {
        Fe(mont_mul(&self.0, &b.0, &P, P_INV))
    }

    #[inline]
    pub fn square(&self) -> Fe {
        self.mul(self)
    }

    #[inline]
    pub fn add(&self, b: &Fe) -> Fe {
        Fe(add_mod(&self.0, &b.0, &P))
    }

    #[inline]
    pub fn sub(&self, b: &Fe) -> Fe {
        Fe(sub_mod(&self.0, &b.0, &P))
    }

    #[inline]
    pub fn double(&self) -> Fe {
        self.add(self)
    }

    pub fn neg(&self) -> Fe {
        Fe::ZERO.sub(self)
    }

    pub fn is_zero(&self) -> bool {
        is_zero(&self.0)
    }

    /// self^(p-2) = self^-1 (Fermat); zero maps to zero.
    pub fn invert(&self) -> Fe {
        let (exp, _) = sub(&P, &[2, 0, 0, 0, 0, 0, 0, 0]);
        let mut acc = Fe::one();
        for i in (0..256).rev() {
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
    pub fn mul(a: &Limbs, b: &Limbs) -> Limbs {
        // (a * b / R) * R^2 / R = a * b
        mont_mul(&mont_mul(a, b, &N, N_INV), &R2_N, &N, N_INV)
    }

    /// Reduces a 256-bit integer modulo n (2^256 < 2n: at most one subtraction).
    pub fn reduce(a: &Limbs) -> Limbs {
        if lt(a, &N) {
            *a
        } else {
            sub(a, &N).0
        }
    }

    fn shr1(a: &mut Limbs, top: u32) {
        for i in 0..8 {
            let next = if i == 7 { top } else { a[i + 1] };
            a[i] = (a[i] >> 1) | (next << 31);
        }
    }

    /// x / 2 mod n.
    fn half(x: &mut Limbs) {
        if x[0] & 1 == 0 {
            shr1(x, 0);
        } else {
            let (s, carry) = add(x, &N);
            *x = s;
            shr1(x, u32::from(carry));
        }
    }

    /// a^-1 mod n by the binary extended Euclidean algorithm (variable time: a is public);
    /// `None` for zero.
    pub fn invert(a: &Limbs) -> Option<Limbs> {
        const ONE: Limbs = [1, 0, 0, 0, 0, 0, 0, 0];
        if is_zero(a) || !lt(a, &N) {
            return None;
        }
        // Invariants: x1 * a = u, x2 * a = v (mod n).
        let (mut u, mut v) = (*a, N);
        let (mut x1, mut x2) = (ONE, [0u32; 8]);
        // Each round removes at least one bit from u or v: 512 rounds always suffice.
        for _ in 0..1024 {
            if u == ONE {
                return Some(x1);
            }
            if v == ONE {
                return Some(x2);
            }
            if is_zero(&u) || is_zero(&v) {
                return None; // only with a common factor, impossible for a prime n
            }
            while u[0] & 1 == 0 {
                shr1(&mut u, 0);
                half(&mut x1);
            }
            while v[0] & 1 == 0 {
                shr1(&mut v, 0);
                half(&mut x2);
            }
            if lt(&u, &v) {
                v = sub(&v, &u).0;
                x2 = sub_mod(&x2, &x1, &N);
            } else {
                u = sub(&u, &v).0;
                x1 = sub_mod(&x1, &x2, &N);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
    use crypto_bigint::U256;
    use proptest::prelude::*;

    fn to_u256(a: &Limbs) -> U256 {
        let mut words = [0u64; 4];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u64::from(a[2 * i]) | (u64::from(a[2 * i + 1]) << 32);
        }
        U256::from_words(words)
    }

    fn below(m: Limbs) -> impl Strategy<Value = Limbs> {
        any::<[u32; 8]>().prop_map(move |mut a| {
            while !lt(&a, &m) {
                a[7] >>= 1;
            }
            a
        })
    }

    proptest! {
        #[test]
        fn field_multiplication_matches_crypto_bigint(a in below(P), b in below(P)) {
            let params = DynResidueParams::new(&to_u256(&P));
            let expected = DynResidue::new(&to_u256(&a), params).mul(&DynResidue::new(&to_u256(&b), params)).retrieve();
            let got = Fe::from_limbs(&a).unwrap().mul(&Fe::from_limbs(&b).unwrap()).to_limbs();
            prop_assert_eq!(to_u256(&got), expected);
        }

        #[test]
        fn field_addition_and_subtraction_match(a in below(P), b in below(P)) {
            let params = DynResidueParams::new(&to_u256(&P));
            let (x, y) = (DynResidue::new(&to_u256(&a), params), DynResidue::new(&to_u256(&b), params));
            let (fa, fb) = (Fe::from_limbs(&a).unwrap(), Fe::from_limbs(&b).unwrap());
            prop_assert_eq!(to_u256(&fa.add(&fb).to_limbs()), x.add(&y).retrieve());
            prop_assert_eq!(to_u256(&fa.sub(&fb).to_limbs()), x.sub(&y).retrieve());
        }

        #[test]
        fn field_inverse_inverts(a in below(P)) {
            let fa = Fe::from_limbs(&a).unwrap();
            prop_assume!(!fa.is_zero());
            prop_assert_eq!(fa.mul(&fa.invert()), Fe::one());
        }

        #[test]
        fn scalar_multiplication_matches_crypto_bigint(a in below(N), b in below(N)) {
            let params = DynResidueParams::new(&to_u256(&N));
            let expected = DynResidue::new(&to_u256(&a), params).mul(&DynResidue::new(&to_u256(&b), params)).retrieve();
            prop_assert_eq!(to_u256(&scalar::mul(&a, &b)), expected);
        }

        #[test]
        fn scalar_inverse_inverts(a in below(N)) {
            prop_assume!(!is_zero(&a));
            let inv = scalar::invert(&a).unwrap();
            prop_assert_eq!(scalar::mul(&a, &inv), [1, 0, 0, 0, 0, 0, 0, 0]);
        }
    }

    #[test]
    fn scalar_inverse_edges() {
        assert_eq!(scalar::invert(&[0; 8]), None);
        assert_eq!(scalar::invert(&N), None);
        assert_eq!(
            scalar::invert(&[1, 0, 0, 0, 0, 0, 0, 0]),
            Some([1, 0, 0, 0, 0, 0, 0, 0])
        );
        let n_minus_1 = sub(&N, &[1, 0, 0, 0, 0, 0, 0, 0]).0;
        assert_eq!(scalar::invert(&n_minus_1), Some(n_minus_1));
    }

    #[test]
    fn montgomery_constants() {
        assert_eq!(
            P[0].wrapping_mul(P_INV),
            u32::MAX,
            "p * p_inv = -1 mod 2^32"
        );
        assert_eq!(N[0].wrapping_mul(N_INV), u32::MAX);
        assert_eq!(Fe::one().to_limbs(), [1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(Fe::from_limbs(&P).is_none());
    }
}
