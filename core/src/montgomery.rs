//! Modular exponentiation with a public modulus and a public exponent, for RSA signature
//! verification: Montgomery multiplication on 32-bit limbs.
//!
//! Why our own: the filter runs in V8, where wasm multiplies 32-bit numbers into 64 bits
//! natively but has no 64x64->128 multiply; generic big-integer crates either use 64-bit
//! limbs (every product emulated) or generic code with copies of the operands per call.
//! These loops keep the operands in place, unroll the inner loop and square with half the
//! cross products. Nothing here is
//! secret (modulus, exponent and signature are all public), so the code may branch on values.

/// Most limbs a modulus may have: 4096 bits.
pub const MAX_LIMBS: usize = 128;

/// A public odd modulus prepared for Montgomery arithmetic (R = 2^(32 * limbs)).
#[derive(Clone)]
pub struct Modulus {
    /// Little-endian limbs, the top one non-zero.
    n: Vec<u32>,
    /// -n^-1 mod 2^32.
    n0inv: u32,
    /// R^2 mod n, to bring numbers into Montgomery form.
    r2: Vec<u32>,
}

/// Big-endian bytes to little-endian limbs (`limbs` of them; the value must fit).
fn limbs_from_be(bytes: &[u8], limbs: usize) -> Option<Vec<u32>> {
    let mut out = vec![0u32; limbs];
    for (i, chunk) in bytes.rchunks(4).enumerate() {
        let mut word = 0u32;
        for b in chunk {
            word = (word << 8) | u32::from(*b);
        }
        *out.get_mut(i)? = word;
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

/// `a -= b` (equal lengths); returns the borrow.
fn sub_in_place(a: &mut [u32], b: &[u32]) -> bool {
    let mut borrow = 0u64;
    for (x, y) in a.iter_mut().zip(b) {
        let d = u64::from(*x)
            .wrapping_sub(u64::from(*y))
            .wrapping_sub(borrow);
        *x = d as u32;
        borrow = (d >> 63) & 1;
    }
    borrow != 0
}

impl Modulus {
    /// Prepares `n` (big-endian). `None` for an even, zero or too long modulus.
    pub fn new(n_be: &[u8]) -> Option<Modulus> {
        let start = n_be.iter().position(|b| *b != 0)?;
        let n_be = &n_be[start..];
        let limbs = n_be.len().div_ceil(4);
        if limbs > MAX_LIMBS || n_be.last().is_none_or(|b| b & 1 == 0) {
            return None;
        }
        let n = limbs_from_be(n_be, limbs)?;
        // Newton iteration for n^-1 mod 2^32 (each step doubles the correct low bits).
        let n0 = n[0];
        let mut inv: u32 = 1;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let mut m = Modulus {
            n,
            n0inv: inv.wrapping_neg(),
            r2: Vec::new(),
        };
        // R^2 mod n by doubling 1 modulo n, 2 * 32 * limbs times (once per key).
        let mut x = vec![0u32; limbs];
        x[0] = 1;
        for _ in 0..(64 * limbs) {
            let carry = x.iter_mut().fold(0u32, |carry, limb| {
                let top = *limb >> 31;
                *limb = (*limb << 1) | carry;
                top
            });
            if carry != 0 || ge(&x, &m.n) {
                sub_in_place(&mut x, &m.n);
            }
        }
        m.r2 = x;
        Some(m)
    }

    /// Number of bytes of the modulus (a signature's length).
    pub fn byte_len(&self) -> usize {
        let top = self.n.last().copied().unwrap_or(0);
        (self.n.len() - 1) * 4 + (4 - top.leading_zeros() as usize / 8)
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

        let mut scratch = Scratch::default();
        let mut x = vec![0u32; limbs];
        self.mul(&base, &self.r2, &mut x, &mut scratch); // base * R
        let mut acc = x.clone();
        let mut tmp = vec![0u32; limbs];
        // Left to right over the bits after the leading one.
        let top_bit = 7 - exp[0].leading_zeros();
        let bits = exp.iter().enumerate().flat_map(|(i, byte)| {
            let from = if i == 0 { top_bit } else { 8 };
            (0..from).rev().map(move |b| (byte >> b) & 1 == 1)
        });
        for bit in bits {
            self.square(&acc, &mut tmp, &mut scratch);
            if bit {
                self.mul(&tmp, &x, &mut acc, &mut scratch);
            } else {
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        // Out of Montgomery form: acc / R, a reduction of acc alone.
        let wide = &mut scratch.wide[..2 * limbs];
        wide.fill(0);
        wide[..limbs].copy_from_slice(&acc);
        self.reduce(wide, &mut tmp);

        let len = self.byte_len();
        let mut out = vec![0u8; len];
        for (i, byte) in out.iter_mut().rev().enumerate() {
            *byte = (tmp[i / 4] >> (8 * (i % 4))) as u8;
        }
        Some(out)
    }

    /// `out = a * b / R mod n`: the full product, then a reduction.
    fn mul(&self, a: &[u32], b: &[u32], out: &mut [u32], s: &mut Scratch) {
        let len = self.n.len();
        let p = &mut s.wide[..2 * len];
        p.fill(0);
        let mut i = 0;
        while i + 1 < len {
            let carry = mac_pair(
                &mut p[i..i + len + 1],
                a,
                u64::from(b[i]),
                u64::from(b[i + 1]),
                0,
            );
            p[i + len + 1] = carry as u32;
            i += 2;
        }
        if i < len {
            p[i + len] = mac_row(&mut p[i..i + len], a, u64::from(b[i])) as u32;
        }
        self.reduce(p, out);
    }

    /// `out = a^2 / R mod n`: the square with each cross product once, then a reduction.
    fn square(&self, a: &[u32], out: &mut [u32], s: &mut Scratch) {
        let len = self.n.len();
        let p = &mut s.wide[..2 * len];
        p.fill(0);
        // Cross products a[i] * a[j], i < j: rows i and i + 1 in one pass where possible.
        let rows = len.saturating_sub(1);
        let mut i = 0;
        while i + 1 < rows {
            // Row i starts alone at 2i + 1 (row i + 1 starts two words later).
            let (b0, b1) = (u64::from(a[i]), u64::from(a[i + 1]));
            let x = u64::from(p[2 * i + 1]) + u64::from(a[i + 1]) * b0;
            p[2 * i + 1] = x as u32;
            let carry = mac_pair(&mut p[2 * i + 2..i + len + 1], &a[i + 2..], b0, b1, x >> 32);
            p[i + len + 1] = carry as u32;
            i += 2;
        }
        if i < rows {
            p[i + len] = mac_row(&mut p[2 * i + 1..i + len], &a[i + 1..], u64::from(a[i])) as u32;
        }
        // Double them, then add the squares a[i]^2.
        let mut shifted = 0u32;
        for word in p.iter_mut() {
            let top = *word >> 31;
            *word = (*word << 1) | shifted;
            shifted = top;
        }
        let mut carry = 0u64;
        for (i, &ai) in a.iter().enumerate().take(len) {
            let ai = u64::from(ai);
            let x = u64::from(p[2 * i]) + ai * ai + carry;
            p[2 * i] = x as u32;
            let y = u64::from(p[2 * i + 1]) + (x >> 32);
            p[2 * i + 1] = y as u32;
            carry = y >> 32;
        }
        self.reduce(p, out);
    }

    /// Montgomery reduction: `out = p / R mod n` for `p < n * R` (2 * len words).
    fn reduce(&self, p: &mut [u32], out: &mut [u32]) {
        let n = &self.n[..];
        let len = n.len();
        let mut top = 0u64;
        let mut i = 0;
        // Two rows per pass: each word of p is loaded and stored once for both.
        while i + 1 < len {
            top = self.reduce_two_rows(&mut p[i..], top);
            i += 2;
        }
        if i < len {
            let m = u64::from(p[i].wrapping_mul(self.n0inv));
            let carry = mac_row(&mut p[i..i + len], n, m);
            let x = u64::from(p[i + len]) + carry + top;
            p[i + len] = x as u32;
            top = x >> 32;
        }
        out.copy_from_slice(&p[len..]);
        if top != 0 || ge(out, n) {
            sub_in_place(out, n);
        }
    }
}

impl Modulus {
    /// Two steps of the reduction at once on `p` (starting at the current row): adds
    /// q0 * n and q1 * n * 2^32, which clear p[0] and p[1]. `top` is the carry into p[len]
    /// from the previous rows; returns the carry into p[len + 2].
    #[inline(always)]
    fn reduce_two_rows(&self, p: &mut [u32], top: u64) -> u64 {
        let n = &self.n[..];
        let len = n.len();
        let q0 = u64::from(p[0].wrapping_mul(self.n0inv));
        let mut c0 = (u64::from(p[0]) + q0 * u64::from(n[0])) >> 32;
        let x = u64::from(p[1]) + q0 * u64::from(n[1]) + c0;
        c0 = x >> 32;
        let t = x as u32;
        let q1 = u64::from(t.wrapping_mul(self.n0inv));
        let mut c1 = (u64::from(t) + q1 * u64::from(n[0])) >> 32;
        // Column 1 + j gets q0 * n[j + 1] and q1 * n[j].
        let cols = &mut p[2..len];
        let (n_hi, n_lo) = (&n[2..], &n[1..len - 1]);
        for ((word, &a), &b) in cols.iter_mut().zip(n_hi).zip(n_lo) {
            let x = u64::from(*word) + q0 * u64::from(a) + c0;
            c0 = x >> 32;
            let y = (x & 0xffff_ffff) + q1 * u64::from(b) + c1;
            c1 = y >> 32;
            *word = y as u32;
        }
        let x = u64::from(p[len]) + c0 + top;
        let y = (x & 0xffff_ffff) + q1 * u64::from(n[len - 1]) + c1;
        p[len] = y as u32;
        let z = u64::from(p[len + 1]) + (x >> 32) + (y >> 32);
        p[len + 1] = z as u32;
        z >> 32
    }
}

/// Two rows at once: `acc[..=L] += a * b0 + a * b1 * 2^32 + carry_in` for `a` of length L
/// (`acc` has L + 1 words); returns the carry into `acc[L + 1]`. Each word of `acc` is
/// loaded and stored once for both products.
#[inline(always)]
fn mac_pair(acc: &mut [u32], a: &[u32], b0: u64, b1: u64, carry_in: u64) -> u64 {
    let l = a.len();
    let Some((first, rest)) = a.split_first() else {
        let x = u64::from(acc[0]) + carry_in;
        acc[0] = x as u32;
        return x >> 32;
    };
    let x = u64::from(acc[0]) + u64::from(*first) * b0 + carry_in;
    acc[0] = x as u32;
    let mut c0 = x >> 32;
    let mut c1 = 0u64;
    // acc[k] gets a[k] * b0 and a[k - 1] * b1.
    for ((word, &hi), &lo) in acc[1..l].iter_mut().zip(rest).zip(a) {
        let x = u64::from(*word) + u64::from(hi) * b0 + c0;
        c0 = x >> 32;
        let y = (x & 0xffff_ffff) + u64::from(lo) * b1 + c1;
        c1 = y >> 32;
        *word = y as u32;
    }
    let x = u64::from(acc[l]) + c0;
    let y = (x & 0xffff_ffff) + u64::from(a[l - 1]) * b1 + c1;
    acc[l] = y as u32;
    (x >> 32) + (y >> 32)
}

/// `acc += a * b` over the shorter of the two lengths; returns the carry out. The inner
/// loop of every multiplication, unrolled by four (V8 does not unroll wasm loops).
#[inline(always)]
fn mac_row(acc: &mut [u32], a: &[u32], b: u64) -> u64 {
    let len = acc.len().min(a.len());
    let (acc, a) = (&mut acc[..len], &a[..len]);
    let mut carry = 0u64;
    let mut acc_chunks = acc.chunks_exact_mut(4);
    let mut a_chunks = a.chunks_exact(4);
    for (t, x) in (&mut acc_chunks).zip(&mut a_chunks) {
        let v = u64::from(t[0]) + u64::from(x[0]) * b + carry;
        t[0] = v as u32;
        let v = u64::from(t[1]) + u64::from(x[1]) * b + (v >> 32);
        t[1] = v as u32;
        let v = u64::from(t[2]) + u64::from(x[2]) * b + (v >> 32);
        t[2] = v as u32;
        let v = u64::from(t[3]) + u64::from(x[3]) * b + (v >> 32);
        t[3] = v as u32;
        carry = v >> 32;
    }
    for (t, x) in acc_chunks
        .into_remainder()
        .iter_mut()
        .zip(a_chunks.remainder())
    {
        let v = u64::from(*t) + u64::from(*x) * b + carry;
        *t = v as u32;
        carry = v >> 32;
    }
    carry
}

/// Working space of one exponentiation, on the stack (no allocation per multiply).
struct Scratch {
    wide: [u32; 2 * MAX_LIMBS],
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            wide: [0; 2 * MAX_LIMBS],
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
