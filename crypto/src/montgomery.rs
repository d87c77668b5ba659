//! Modular exponentiation with a public modulus and a public exponent, for RSA signature
//! verification: Montgomery multiplication on 27-bit limbs, column by column.
//!
//! Why this shape: the filter runs in V8, where wasm multiplies 32-bit numbers into 64 bits
//! natively but has no 64x64->128 multiply, and where SIMD multiplies two pairs of 32-bit
//! numbers into two 64-bit products in one instruction (`i64x2.extmul_low_i32x4_u`). With
//! 27-bit limbs a product is below 2^54, so a whole column of the product (every a[j] *
//! b[i - j] and m[j] * n[i - j], at most 2 * 152 terms for 4096 bits) adds up in one 64-bit
//! accumulator without carries: each column is two dot products, which [`dot`] computes two
//! lanes at a time, and the carry moves once per column (Montgomery's product-scanning form,
//! "FIPS" in Koç's survey). Nothing here is secret (modulus, exponent and signature are all
//! public), so the code may branch on values.

/// Bits per limb.
const BITS: u32 = 27;
const MASK: u32 = (1 << BITS) - 1;

/// Longest modulus: 4096 bits. This also bounds a column's sum: at most 2 * 152 products
/// below 2^54 each, so below 2^63 with the carry.
const MAX_BYTES: usize = 512;

/// A public odd modulus prepared for Montgomery arithmetic (R = 2^(27 * limbs)).
#[derive(Clone)]
pub struct Modulus {
    /// Little-endian 27-bit limbs, the top one non-zero.
    n: Vec<u32>,
    /// The same limbs in reverse order: column sums read `n[i - j]` for rising j.
    n_rev: Vec<u32>,
    /// -n^-1 mod 2^27.
    n0inv: u32,
    /// R^2 mod n, to bring numbers into Montgomery form.
    r2: Vec<u32>,
    /// Bytes of the modulus.
    byte_len: usize,
}

/// Big-endian bytes to little-endian 27-bit limbs (`limbs` of them; the value must fit).
fn limbs_from_be(bytes: &[u8], limbs: usize) -> Option<Vec<u32>> {
    let mut out = vec![0u32; limbs];
    let mut acc = 0u64;
    let mut have = 0u32;
    let mut i = 0;
    for b in bytes.iter().rev() {
        acc |= u64::from(*b) << have;
        have += 8;
        if have >= BITS {
            *out.get_mut(i)? = acc as u32 & MASK;
            acc >>= BITS;
            have -= BITS;
            i += 1;
        }
    }
    if acc != 0 {
        *out.get_mut(i)? = acc as u32;
    }
    Some(out)
}

/// `a >= b` for equal-length little-endian numbers.
fn ge(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// `a -= b` (equal lengths, 27-bit limbs); returns the borrow.
fn sub_in_place(a: &mut [u32], b: &[u32]) -> bool {
    let mut borrow = 0u32;
    for (x, y) in a.iter_mut().zip(b) {
        let d = x.wrapping_sub(*y).wrapping_sub(borrow);
        *x = d & MASK;
        borrow = d >> 31;
    }
    borrow != 0
}

/// Σ x[k] * y[k] for equal-length slices of 27-bit limbs (at most 2^10 terms).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn dot(x: &[u32], y: &[u32]) -> u64 {
    use core::arch::wasm32::{
        i64x2_add, i64x2_extract_lane, u64x2_extmul_high_u32x4, u64x2_extmul_low_u32x4,
        u64x2_splat, v128, v128_load,
    };
    let len = x.len().min(y.len());
    let (x, y) = (&x[..len], &y[..len]);
    let mut acc0 = u64x2_splat(0);
    let mut acc1 = u64x2_splat(0);
    let mut xs = x.chunks_exact(4);
    let mut ys = y.chunks_exact(4);
    for (a, b) in (&mut xs).zip(&mut ys) {
        // SAFETY: `a` and `b` are 4 u32s (16 bytes) each; v128_load reads 16 bytes and
        // has no alignment requirement.
        let (va, vb) = unsafe {
            (
                v128_load(a.as_ptr().cast::<v128>()),
                v128_load(b.as_ptr().cast::<v128>()),
            )
        };
        acc0 = i64x2_add(acc0, u64x2_extmul_low_u32x4(va, vb));
        acc1 = i64x2_add(acc1, u64x2_extmul_high_u32x4(va, vb));
    }
    let sum = i64x2_add(acc0, acc1);
    let mut total =
        (i64x2_extract_lane::<0>(sum) as u64).wrapping_add(i64x2_extract_lane::<1>(sum) as u64);
    for (a, b) in xs.remainder().iter().zip(ys.remainder()) {
        total += u64::from(*a) * u64::from(*b);
    }
    total
}

/// Σ x[k] * y[k] for equal-length slices of 27-bit limbs (at most 2^10 terms).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn dot(x: &[u32], y: &[u32]) -> u64 {
    x.iter()
        .zip(y)
        .map(|(a, b)| u64::from(*a) * u64::from(*b))
        .sum()
}

impl Modulus {
    /// Prepares `n` (big-endian). `None` for an even, zero or too long modulus.
    pub fn new(n_be: &[u8]) -> Option<Modulus> {
        let start = n_be.iter().position(|b| *b != 0)?;
        let n_be = &n_be[start..];
        if n_be.len() > MAX_BYTES || n_be.last().is_none_or(|b| b & 1 == 0) {
            return None;
        }
        let bits = 8 * n_be.len() - n_be[0].leading_zeros() as usize;
        let limbs = bits.div_ceil(BITS as usize);
        let n = limbs_from_be(n_be, limbs)?;
        // Newton iteration for n^-1 mod 2^32 (each step doubles the correct low bits).
        let n0 = n[0];
        let mut inv: u32 = 1;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let n_rev = n.iter().rev().copied().collect();
        let mut m = Modulus {
            n,
            n_rev,
            n0inv: inv.wrapping_neg() & MASK,
            r2: Vec::new(),
            byte_len: n_be.len(),
        };
        // R^2 mod n by doubling 1 modulo n, 2 * 27 * limbs times (once per key).
        let mut x = vec![0u32; limbs];
        x[0] = 1;
        for _ in 0..(2 * BITS as usize * limbs) {
            let carry = x.iter_mut().fold(0u32, |carry, limb| {
                let doubled = (*limb << 1) | carry;
                *limb = doubled & MASK;
                doubled >> BITS
            });
            if carry != 0 || ge(&x, &m.n) {
                sub_in_place(&mut x, &m.n);
            }
        }
        m.r2 = x;
        Some(m)
    }

    /// Heap bytes it holds: the limbs of n (twice, in both orders) and of R^2 mod n.
    pub fn heap_bytes(&self) -> usize {
        (self.n.capacity() + self.n_rev.capacity() + self.r2.capacity())
            * std::mem::size_of::<u32>()
    }

    /// Number of bytes of the modulus (a signature's length).
    pub fn byte_len(&self) -> usize {
        self.byte_len
    }

    /// `base^exp mod n` as big-endian bytes of [`Modulus::byte_len`]; `None` when
    /// `base >= n` or `exp` is zero.
    pub fn pow(&self, base_be: &[u8], exp_be: &[u8]) -> Option<Vec<u8>> {
        let limbs = self.n.len();
        let start = base_be
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(base_be.len());
        let base = limbs_from_be(&base_be[start..], limbs)?;
        if ge(&base, &self.n) {
            return None;
        }
        let exp_start = exp_be.iter().position(|b| *b != 0)?;
        let exp = &exp_be[exp_start..];

        let mut s = Scratch::new(limbs);
        let mut x = vec![0u32; limbs];
        self.mul(&base, &self.r2, &mut x, &mut s); // base * R
        let mut acc = x.clone();
        let mut tmp = vec![0u32; limbs];
        // Left to right over the bits after the leading one.
        let top_bit = 7 - exp[0].leading_zeros();
        let bits = exp.iter().enumerate().flat_map(|(i, byte)| {
            let from = if i == 0 { top_bit } else { 8 };
            (0..from).rev().map(move |b| (byte >> b) & 1 == 1)
        });
        for bit in bits {
            self.square(&acc, &mut tmp, &mut s);
            if bit {
                self.mul(&tmp, &x, &mut acc, &mut s);
            } else {
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        // Out of Montgomery form: acc * 1 / R.
        let mut one = vec![0u32; limbs];
        one[0] = 1;
        self.mul(&acc, &one, &mut tmp, &mut s);
        Some(self.to_be(&tmp))
    }

    /// `out = a * b / R mod n` for `a, b < n`.
    fn mul(&self, a: &[u32], b: &[u32], out: &mut [u32], s: &mut Scratch) {
        let len = self.n.len();
        for (r, v) in s.rev.iter_mut().zip(b.iter().rev()) {
            *r = *v;
        }
        let b_rev = &s.rev[..len];
        // Column i of a * b: a[j] * b[i - j] for j in lo..=min(i, len - 1).
        let column = |i: usize| {
            let lo = (i + 1).saturating_sub(len);
            let hi = i.min(len - 1);
            dot(&a[lo..=hi], &b_rev[len - 1 + lo - i..])
        };
        self.reduce_columns(column, out, &mut s.m);
    }

    /// `out = a^2 / R mod n` for `a < n`: each cross product once, doubled.
    fn square(&self, a: &[u32], out: &mut [u32], s: &mut Scratch) {
        let len = self.n.len();
        for (r, v) in s.rev.iter_mut().zip(a.iter().rev()) {
            *r = *v;
        }
        let a_rev = &s.rev[..len];
        // Column i of a^2: 2 * a[j] * a[i - j] for lo <= j < i - j, plus a[i / 2]^2.
        let column = |i: usize| {
            let lo = (i + 1).saturating_sub(len);
            let pairs = i.div_ceil(2).saturating_sub(lo);
            let cross = dot(&a[lo..lo + pairs], &a_rev[len - 1 + lo - i..]);
            let diagonal = if i % 2 == 0 {
                a.get(i / 2).map_or(0, |x| u64::from(*x) * u64::from(*x))
            } else {
                0
            };
            2 * cross + diagonal
        };
        self.reduce_columns(column, out, &mut s.m);
    }

    /// Montgomery reduction interleaved with the product, column by column: `column(i)` is
    /// column i of the product (i < 2 * len - 1). Column i < len fixes m[i] so that the
    /// running sum is divisible by 2^27; the columns above give the result.
    #[inline(always)]
    fn reduce_columns(&self, column: impl Fn(usize) -> u64, out: &mut [u32], m: &mut [u32]) {
        let len = self.n.len();
        let (n, n_rev) = (&self.n[..], &self.n_rev[..]);
        let m = &mut m[..len];
        let mut carry = 0u64;
        for i in 0..len {
            // m[j] * n[i - j] for j in 0..i.
            let sum = carry + column(i) + dot(&m[..i], &n_rev[len - 1 - i..]);
            let q = (sum as u32).wrapping_mul(self.n0inv) & MASK;
            m[i] = q;
            carry = (sum + u64::from(q) * u64::from(n[0])) >> BITS;
        }
        for i in len..2 * len - 1 {
            let from = i + 1 - len;
            let sum = carry + column(i) + dot(&m[from..], &n_rev[..len - from]);
            out[i - len] = sum as u32 & MASK;
            carry = sum >> BITS;
        }
        out[len - 1] = carry as u32 & MASK;
        // The result is below 2n < 2R: at most one more R above the limbs.
        if carry >> BITS != 0 || ge(out, n) {
            sub_in_place(out, n);
        }
    }

    /// Limbs (below n) to big-endian bytes of `byte_len`.
    fn to_be(&self, limbs: &[u32]) -> Vec<u8> {
        let mut out = vec![0u8; self.byte_len];
        let mut acc = 0u64;
        let mut have = 0u32;
        let mut bytes = out.iter_mut().rev();
        for limb in limbs {
            acc |= u64::from(*limb) << have;
            have += BITS;
            while have >= 8 {
                if let Some(byte) = bytes.next() {
                    *byte = acc as u8;
                }
                acc >>= 8;
                have -= 8;
            }
        }
        if let Some(byte) = bytes.next() {
            *byte = acc as u8;
        }
        out
    }
}

/// Working space of one exponentiation (allocated once per signature, not per multiply).
struct Scratch {
    /// One operand in reverse order: a column reads it backwards.
    rev: Vec<u32>,
    m: Vec<u32>,
}

impl Scratch {
    fn new(limbs: usize) -> Self {
        Scratch {
            rev: vec![0; limbs],
            m: vec![0; limbs],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
    use crypto_bigint::{Encoding, U4096, U64};
    use proptest::prelude::*;

    /// crypto-bigint's constant-time exponentiation, as the reference.
    fn reference(n: &[u8], base: &[u8], exp: &[u8]) -> Vec<u8> {
        let wide = |b: &[u8]| {
            let mut a = [0u8; 512];
            a[512 - b.len()..].copy_from_slice(b);
            U4096::from_be_bytes(a)
        };
        let mut e = [0u8; 8];
        e[8 - exp.len()..].copy_from_slice(exp);
        let params = DynResidueParams::new(&wide(n));
        let out = DynResidue::new(&wide(base), params)
            .pow(&U64::from_be_bytes(e))
            .retrieve()
            .to_be_bytes();
        out[512 - n.len()..].to_vec()
    }

    /// An odd modulus of `len` bytes with a non-zero top byte.
    fn modulus(len: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), len).prop_map(|mut n| {
            n[0] |= 1;
            if let Some(last) = n.last_mut() {
                *last |= 1;
            }
            n
        })
    }

    fn case() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<u8>)> {
        // Sizes around the limb and key boundaries, including lengths that are not a
        // multiple of four bytes.
        prop_oneof![
            Just(1usize),
            Just(7),
            Just(128),
            Just(255),
            Just(256),
            Just(257),
            Just(384),
            Just(511),
            Just(512),
            2usize..=512
        ]
        .prop_flat_map(|len| {
            (
                modulus(len),
                proptest::collection::vec(any::<u8>(), len),
                proptest::collection::vec(any::<u8>(), 1..=8),
            )
        })
        .prop_map(|(n, mut base, exp)| {
            // base < n: clear the top byte's bits above n's top bit, then one more.
            base[0] &= n[0] >> 1;
            (n, base, exp)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn pow_matches_crypto_bigint((n, base, exp) in case()) {
            let m = Modulus::new(&n).unwrap();
            let got = m.pow(&base, &exp);
            if exp.iter().all(|b| *b == 0) {
                prop_assert!(got.is_none());
            } else {
                prop_assert_eq!(got.unwrap(), reference(&n, &base, &exp));
            }
        }
    }

    #[test]
    fn edge_values_of_the_base() {
        let n = [0xff; 256];
        let m = Modulus::new(&n).unwrap();
        let mut n_minus_1 = n;
        n_minus_1[255] = 0xfe;
        for base in [vec![0u8], vec![1], n_minus_1.to_vec()] {
            assert_eq!(
                m.pow(&base, &[1, 0, 1]).unwrap(),
                reference(&n, &base, &[1, 0, 1])
            );
        }
        assert!(m.pow(&n, &[3]).is_none(), "base = n");
        assert!(m.pow(&[1; 257], &[3]).is_none(), "longer than n");
    }

    #[test]
    fn refuses_even_zero_and_oversized_moduli() {
        assert!(Modulus::new(&[0x80, 0]).is_none());
        assert!(Modulus::new(&[0, 0]).is_none());
        assert!(Modulus::new(&[]).is_none());
        assert!(Modulus::new(&[0xff; 513]).is_none());
        assert_eq!(Modulus::new(&[0, 0, 0x01, 0x01]).unwrap().byte_len(), 2);
    }
}
