//! Points of a NIST curve (y^2 = x^3 - 3x + b): affine for table entries, Jacobian
//! (x = X/Z^2, y = Y/Z^3) for sums; the per-base-point comb tables verification adds up
//! (G's, built once per process, and a key's once the caller asks for it), and the
//! multiplication without a table ([`windowed_mul`]) for a key that has none.

use super::curves::CurveParams;
use super::field::{from_be_bytes, Fe, Limbs};

pub struct Affine<C: CurveParams<L>, const L: usize> {
    pub x: Fe<C, L>,
    pub y: Fe<C, L>,
}

impl<C: CurveParams<L>, const L: usize> Clone for Affine<C, L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: CurveParams<L>, const L: usize> Copy for Affine<C, L> {}
impl<C: CurveParams<L>, const L: usize> PartialEq for Affine<C, L> {
    fn eq(&self, other: &Self) -> bool {
        self.x == other.x && self.y == other.y
    }
}
impl<C: CurveParams<L>, const L: usize> std::fmt::Debug for Affine<C, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Affine({:?}, {:?})", self.x, self.y)
    }
}

impl<C: CurveParams<L>, const L: usize> Affine<C, L> {
    /// A point from its big-endian coordinates (`C::BYTES` each), if they are field elements
    /// and the point is on the curve (the NIST curves have cofactor 1: every such point is in
    /// the group).
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Option<Self> {
        if x.len() != C::BYTES || y.len() != C::BYTES {
            return None;
        }
        Self::from_limbs(&from_be_bytes(x)?, &from_be_bytes(y)?)
    }

    fn from_limbs(x: &Limbs<L>, y: &Limbs<L>) -> Option<Self> {
        let x = Fe::from_limbs(x)?;
        let y = Fe::from_limbs(y)?;
        let b = Fe::from_limbs(&C::B)?;
        let x3 = x.square().mul(&x);
        let three_x = x.double().add(&x);
        (y.square() == x3.sub(&three_x).add(&b)).then_some(Affine { x, y })
    }

    pub fn generator() -> Option<Self> {
        Self::from_limbs(&C::GX, &C::GY)
    }

    fn neg(&self) -> Self {
        Affine {
            x: self.x,
            y: self.y.neg(),
        }
    }
}

/// A point in Jacobian coordinates; Z = 0 is the point at infinity.
pub struct Jacobian<C: CurveParams<L>, const L: usize> {
    pub x: Fe<C, L>,
    pub y: Fe<C, L>,
    pub z: Fe<C, L>,
}

impl<C: CurveParams<L>, const L: usize> Clone for Jacobian<C, L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: CurveParams<L>, const L: usize> Copy for Jacobian<C, L> {}

impl<C: CurveParams<L>, const L: usize> Jacobian<C, L> {
    pub const INFINITY: Self = Jacobian {
        x: Fe::ZERO,
        y: Fe::ZERO,
        z: Fe::ZERO,
    };

    pub fn from_affine(p: &Affine<C, L>) -> Self {
        Jacobian {
            x: p.x,
            y: p.y,
            z: Fe::one(),
        }
    }
    pub fn is_infinity(&self) -> bool {
        self.z.is_zero()
    }

    fn neg(&self) -> Self {
        Jacobian {
            x: self.x,
            y: self.y.neg(),
            z: self.z,
        }
    }

    /// 2P ("dbl-2001-b", a = -3).
    pub fn double(&self) -> Self {
        if self.is_infinity() || self.y.is_zero() {
            return Self::INFINITY;
        }
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x.mul(&gamma);
        let t = self.x.sub(&delta).mul(&self.x.add(&delta));
        let alpha = t.double().add(&t);
        let beta4 = beta.double().double();
        let x3 = alpha.square().sub(&beta4.double());
        let z3 = self.y.add(&self.z).square().sub(&gamma).sub(&delta);
        let gamma2 = gamma.square();
        let y3 = alpha
            .mul(&beta4.sub(&x3))
            .sub(&gamma2.double().double().double());
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// P + Q for an affine Q ("madd-2007-bl"), with the cases the formula does not cover:
    /// P at infinity, P = Q (doubling) and P = -Q (infinity).
    pub fn add_affine(&self, q: &Affine<C, L>) -> Self {
        if self.is_infinity() {
            return Self::from_affine(q);
        }
        let z1z1 = self.z.square();
        let u2 = q.x.mul(&z1z1);
        let s2 = q.y.mul(&self.z).mul(&z1z1);
        let h = u2.sub(&self.x);
        let r = s2.sub(&self.y).double();
        if h.is_zero() {
            return if r.is_zero() {
                self.double()
            } else {
                Self::INFINITY
            };
        }
        let hh = h.square();
        let i = hh.double().double();
        let j = h.mul(&i);
        let v = self.x.mul(&i);
        let x3 = r.square().sub(&j).sub(&v.double());
        let y3 = r.mul(&v.sub(&x3)).sub(&self.y.mul(&j).double());
        let z3 = self.z.add(&h).square().sub(&z1z1).sub(&hh);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// P + Q, both Jacobian ("add-2007-bl"), with the special cases.
    pub fn add(&self, q: &Self) -> Self {
        if self.is_infinity() {
            return *q;
        }
        if q.is_infinity() {
            return *self;
        }
        let z1z1 = self.z.square();
        let z2z2 = q.z.square();
        let u1 = self.x.mul(&z2z2);
        let u2 = q.x.mul(&z1z1);
        let s1 = self.y.mul(&q.z).mul(&z2z2);
        let s2 = q.y.mul(&self.z).mul(&z1z1);
        let h = u2.sub(&u1);
        let r = s2.sub(&s1).double();
        if h.is_zero() {
            return if r.is_zero() {
                self.double()
            } else {
                Self::INFINITY
            };
        }
        let i = h.double().square();
        let j = h.mul(&i);
        let v = u1.mul(&i);
        let x3 = r.square().sub(&j).sub(&v.double());
        let y3 = r.mul(&v.sub(&x3)).sub(&s1.mul(&j).double());
        let z3 = self.z.add(&q.z).square().sub(&z1z1).sub(&z2z2).mul(&h);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }
}

/// Converts many points to affine with one field inversion (Montgomery's trick). Points at
/// infinity must not occur (tables never hold them).
fn normalize_all<C: CurveParams<L>, const L: usize>(
    points: &[Jacobian<C, L>],
) -> Vec<Affine<C, L>> {
    let mut prefix = Vec::with_capacity(points.len());
    let mut acc = Fe::one();
    for p in points {
        prefix.push(acc);
        acc = acc.mul(&p.z);
    }
    let mut inv = acc.invert();
    let mut out = Vec::with_capacity(points.len());
    for (p, before) in points.iter().zip(&prefix).rev() {
        let z_inv = inv.mul(before);
        inv = inv.mul(&p.z);
        let z2 = z_inv.square();
        out.push(Affine {
            x: p.x.mul(&z2),
            y: p.y.mul(&z2.mul(&z_inv)),
        });
    }
    out.reverse();
    out
}

/// Most signed digits any curve's scalars need (P-521 in 5-bit windows: 105).
const MAX_WINDOWS: usize = 105;

/// Windows of `C::WINDOW` bits covering a scalar below n, plus the carry out of the top
/// signed digit.
const fn windows<C: CurveParams<L>, const L: usize>() -> usize {
    (C::N_BITS + C::WINDOW) / C::WINDOW
}

const fn per_window<C: CurveParams<L>, const L: usize>() -> usize {
    1 << (C::WINDOW - 1)
}

/// `d * 2^(W i) * P` for every window i and digit d in 1..=2^(W-1), W = `C::WINDOW`: k * P is
/// then one addition per non-zero digit of k, with no doublings. For P-256 (W = 7) that is
/// 37 * 64 affine points of 64 bytes, 151,552 bytes; P-384 (W = 6) 65 * 32 of 96 bytes,
/// 199,680; P-521 (W = 5) 105 * 16 of 136 bytes, 228,480 ([`table_bytes`]). G's table is
/// built once per process; a key's only when its verifier is asked to (see the module docs
/// of `ecdsa`), in milliseconds, and then used for every token the key signs.
pub struct CombTable<C: CurveParams<L>, const L: usize> {
    points: Vec<Affine<C, L>>,
}

impl<C: CurveParams<L>, const L: usize> CombTable<C, L> {
    pub fn new(base: &Affine<C, L>) -> Self {
        let per_window = per_window::<C, L>();
        let mut all = Vec::with_capacity(windows::<C, L>() * per_window);
        let mut row_base = Jacobian::from_affine(base);
        for _ in 0..windows::<C, L>() {
            let mut multiple = row_base;
            all.push(multiple);
            for _ in 1..per_window {
                multiple = multiple.add(&row_base);
                all.push(multiple);
            }
            // 2^(W-1) * base doubled: the next window's 2^W * base.
            row_base = multiple.double();
        }
        CombTable {
            points: normalize_all(&all),
        }
    }

    /// Heap bytes of its points.
    pub fn heap_bytes(&self) -> usize {
        self.points.capacity() * std::mem::size_of::<Affine<C, L>>()
    }

    /// `acc + k * P` for the table's base point P: one mixed addition per non-zero digit.
    pub fn add_multiple(&self, acc: &Jacobian<C, L>, k: &Limbs<L>) -> Jacobian<C, L> {
        let digits = signed_digits::<C, L>(k);
        let mut acc = *acc;
        for (w, digit) in digits.iter().enumerate().take(windows::<C, L>()) {
            if let Some(p) = self.entry(w, *digit) {
                acc = acc.add_affine(&p);
            }
        }
        acc
    }

    /// `d * 2^(W * window) * P` for a signed digit, `None` for 0.
    fn entry(&self, window: usize, digit: i32) -> Option<Affine<C, L>> {
        let index = usize::try_from(digit.unsigned_abs()).ok()?.checked_sub(1)?;
        let p = self.points.get(window * per_window::<C, L>() + index)?;
        Some(if digit < 0 { p.neg() } else { *p })
    }
}

/// Heap bytes of a comb table of curve `C`: exactly what [`CombTable::new`] allocates.
pub const fn table_bytes<C: CurveParams<L>, const L: usize>() -> usize {
    windows::<C, L>() * per_window::<C, L>() * std::mem::size_of::<Affine<C, L>>()
}

/// The scalar as signed base-2^W digits in [-2^(W-1), 2^(W-1)], least significant first:
/// sum d_i 2^(W i) = k. Only the first `windows::<C, L>()` entries are used.
fn signed_digits<C: CurveParams<L>, const L: usize>(k: &Limbs<L>) -> [i32; MAX_WINDOWS] {
    let bit = |i: usize| -> i32 {
        k.get(i / 32)
            .map_or(0, |limb| ((limb >> (i % 32)) & 1) as i32)
    };
    let w_bits = C::WINDOW;
    let half = per_window::<C, L>() as i32;
    let mut out = [0i32; MAX_WINDOWS];
    let mut carry = 0i32;
    for (w, digit) in out.iter_mut().enumerate().take(windows::<C, L>()) {
        let mut value = carry;
        for b in 0..w_bits {
            value += bit(w * w_bits + b) << b;
        }
        // value in 0..=2^W; digits above 2^(W-1) borrow from the next window.
        if value > half {
            *digit = value - (1 << w_bits);
            carry = 1;
        } else {
            *digit = value;
            carry = 0;
        }
    }
    out
}

/// u1 * G + u2 * Q from the two tables.
pub fn double_scalar_mul<C: CurveParams<L>, const L: usize>(
    g: &CombTable<C, L>,
    u1: &Limbs<L>,
    q: &CombTable<C, L>,
    u2: &Limbs<L>,
) -> Jacobian<C, L> {
    let d1 = signed_digits::<C, L>(u1);
    let d2 = signed_digits::<C, L>(u2);
    let mut acc = Jacobian::INFINITY;
    for w in 0..windows::<C, L>() {
        if let Some(p) = g.entry(w, d1[w]) {
            acc = acc.add_affine(&p);
        }
        if let Some(p) = q.entry(w, d2[w]) {
            acc = acc.add_affine(&p);
        }
    }
    acc
}

/// Width of the non-adjacent form used for a point without a table: its digits are zero or
/// odd in -15..=15, so a multiplication first computes P, 3P, ..., 15P.
const WNAF_WIDTH: usize = 5;
const WNAF_MULTIPLES: usize = 1 << (WNAF_WIDTH - 2);
/// Digits of the longest scalar (17 limbs, 544 bits) and one for the last carry.
const MAX_WNAF_DIGITS: usize = 32 * 17 + 1;

/// `k` in width-5 non-adjacent form, least significant digit first: sum d_i 2^i = k, every
/// d_i zero or odd with |d_i| < 16, and a non-zero digit followed by at least four zeros.
/// `None` only for more limbs than P-521's.
fn wnaf<const L: usize>(k: &Limbs<L>) -> Option<[i8; MAX_WNAF_DIGITS]> {
    let bit = |i: usize| -> u32 { k.get(i / 32).map_or(0, |limb| (limb >> (i % 32)) & 1) };
    let mut out = [0i8; MAX_WNAF_DIGITS];
    // The value still to write is (bits of k from position i up) + carry, times 2^i.
    let mut carry = 0u32;
    let mut i = 0;
    while i < 32 * L {
        if bit(i) == carry {
            // Even at this position (0 + 0, or 1 + 1 carrying on): digit 0.
            i += 1;
            continue;
        }
        // Odd: the next WNAF_WIDTH bits plus the carry make an odd number below 2^WIDTH;
        // from 2^(WIDTH-1) on it is written as a negative digit and a carry out of the window.
        let mut word = carry;
        for b in 0..WNAF_WIDTH {
            word += bit(i + b) << b;
        }
        let word = i32::try_from(word).ok()?;
        let digit = if word >= 1 << (WNAF_WIDTH - 1) {
            carry = 1;
            word - (1 << WNAF_WIDTH)
        } else {
            carry = 0;
            word
        };
        *out.get_mut(i)? = i8::try_from(digit).ok()?;
        i += WNAF_WIDTH;
    }
    // A carry can only leave a window that ends at or below bit 32 L (a window reaching past
    // the top bit has a zero top bit), so here i = 32 L.
    if carry == 1 {
        *out.get_mut(i)? = 1;
    }
    Some(out)
}

/// `k * P` without a table: the odd multiples P, 3P, ..., 15P (one doubling and seven
/// additions), then one doubling per bit of k and one addition per non-zero digit of its
/// non-adjacent form (about one in six bits). `None` only for more limbs than P-521's.
pub fn windowed_mul<C: CurveParams<L>, const L: usize>(
    p: &Affine<C, L>,
    k: &Limbs<L>,
) -> Option<Jacobian<C, L>> {
    let digits = wnaf(k)?;
    let base = Jacobian::from_affine(p);
    let twice = base.double();
    let mut odd = [base; WNAF_MULTIPLES];
    let mut last = base;
    for slot in odd.iter_mut().skip(1) {
        last = last.add(&twice);
        *slot = last;
    }
    let mut acc = Jacobian::INFINITY;
    for digit in digits.iter().take(32 * L + 1).rev() {
        // Doubling the point at infinity returns at once: leading zero digits cost nothing.
        acc = acc.double();
        if *digit != 0 {
            let multiple = odd.get(usize::from(digit.unsigned_abs() / 2))?;
            acc = if *digit > 0 {
                acc.add(multiple)
            } else {
                acc.add(&multiple.neg())
            };
        }
    }
    Some(acc)
}

#[cfg(test)]
mod tests {
    use super::super::curves::{P256, P384, P521};
    use super::super::field;
    use super::*;
    use proptest::prelude::*;

    fn to_affine<C: CurveParams<L>, const L: usize>(p: &Jacobian<C, L>) -> Affine<C, L> {
        normalize_all(&[*p])[0]
    }

    /// Big-endian coordinates of `C::BYTES` bytes each.
    fn coordinates<C: CurveParams<L>, const L: usize>(p: &Affine<C, L>) -> (Vec<u8>, Vec<u8>) {
        let be = |fe: &Fe<C, L>| {
            let bytes: Vec<u8> = fe
                .to_limbs()
                .iter()
                .rev()
                .flat_map(|l| l.to_be_bytes())
                .collect();
            bytes[bytes.len() - C::BYTES..].to_vec()
        };
        (be(&p.x), be(&p.y))
    }

    /// k * G by our comb tables, `None` for the point at infinity.
    fn comb_times_g<C: CurveParams<L>, const L: usize>(k: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let g = C::generator_table().unwrap();
        let sum = double_scalar_mul(g, &from_be_bytes(k).unwrap(), g, &[0u32; L]);
        (!sum.is_infinity()).then(|| coordinates(&to_affine(&sum)))
    }

    fn mixed_addition_handles_equal_and_opposite_points<C: CurveParams<L>, const L: usize>() {
        let g = Affine::<C, L>::generator().unwrap();
        let jg = Jacobian::from_affine(&g);
        // Make Z != 1 so the special cases are met in projective form.
        let two_g = jg.double();
        let g_again = two_g.add_affine(&g.neg());
        assert_eq!(to_affine(&g_again), g);
        assert_eq!(
            to_affine(&g_again.add_affine(&g)),
            to_affine(&two_g),
            "P + P doubles"
        );
        assert!(
            g_again.add_affine(&g.neg()).is_infinity(),
            "P + (-P) is infinity"
        );
        assert!(jg.add(&Jacobian::from_affine(&g.neg())).is_infinity());
        assert_eq!(to_affine(&jg.add(&jg)), to_affine(&two_g));
        assert_eq!(to_affine(&Jacobian::INFINITY.add_affine(&g)), g);
    }

    #[test]
    fn special_cases_of_addition_on_every_curve() {
        mixed_addition_handles_equal_and_opposite_points::<P256, 8>();
        mixed_addition_handles_equal_and_opposite_points::<P384, 12>();
        mixed_addition_handles_equal_and_opposite_points::<P521, 17>();
    }

    fn off_curve_points_are_refused<C: CurveParams<L>, const L: usize>() {
        let (gx, gy) = coordinates(&Affine::<C, L>::generator().unwrap());
        assert!(Affine::<C, L>::from_coordinates(&gx, &gy).is_some());
        let mut y = gy.clone();
        *y.last_mut().unwrap() ^= 1;
        assert!(Affine::<C, L>::from_coordinates(&gx, &y).is_none());
        assert!(
            Affine::<C, L>::from_coordinates(&vec![0xff; C::BYTES], &gy).is_none(),
            "x >= p"
        );
        assert!(
            Affine::<C, L>::from_coordinates(&gx[1..], &gy).is_none(),
            "short x"
        );
    }

    #[test]
    fn off_curve_points_are_refused_on_every_curve() {
        off_curve_points_are_refused::<P256, 8>();
        off_curve_points_are_refused::<P384, 12>();
        off_curve_points_are_refused::<P521, 17>();
    }

    fn signed_digits_add_up<C: CurveParams<L>, const L: usize>() {
        assert!(windows::<C, L>() <= MAX_WINDOWS);
        assert!(windows::<C, L>() * C::WINDOW > C::N_BITS);
        let k = [0xffff_ffffu32; L];
        let digits = signed_digits::<C, L>(&k);
        let half = per_window::<C, L>() as i32;
        assert!(digits.iter().all(|d| (-half..=half).contains(d)));
        // Recompose modulo 2^63 from the low windows (enough to catch a wrong carry).
        let low: i128 = digits
            .iter()
            .take(100 / C::WINDOW)
            .enumerate()
            .map(|(i, d)| i128::from(*d) << (C::WINDOW * i))
            .sum();
        assert_eq!(low.rem_euclid(1 << 63), (u64::MAX >> 1) as i128);
    }

    #[test]
    fn signed_digits_add_up_on_every_curve() {
        signed_digits_add_up::<P256, 8>();
        signed_digits_add_up::<P384, 12>();
        signed_digits_add_up::<P521, 17>();
    }

    fn wnaf_is_non_adjacent_and_adds_up<const L: usize>(k: &Limbs<L>) {
        let digits = wnaf(k).unwrap();
        let half = 1i8 << (WNAF_WIDTH - 1);
        let mut last_non_zero: Option<usize> = None;
        for (i, d) in digits.iter().enumerate() {
            if *d == 0 {
                continue;
            }
            assert!(d % 2 != 0 && -half < *d && *d < half, "digit {d} at {i}");
            if let Some(j) = last_non_zero {
                assert!(i - j >= WNAF_WIDTH, "digits at {j} and {i}");
            }
            last_non_zero = Some(i);
        }
        assert!(digits.iter().skip(32 * L + 1).all(|d| *d == 0));
        // The whole value: Horner from the top, as windowed_mul evaluates it, on limbs.
        let mut acc = [0i64; 18];
        for d in digits.iter().take(32 * L + 1).rev() {
            let mut carry = 0i64;
            for limb in acc.iter_mut() {
                let v = *limb * 2 + carry;
                *limb = v.rem_euclid(1 << 32);
                carry = v.div_euclid(1 << 32);
            }
            acc[0] += i64::from(*d);
            let mut carry = 0i64;
            for limb in acc.iter_mut() {
                let v = *limb + carry;
                *limb = v.rem_euclid(1 << 32);
                carry = v.div_euclid(1 << 32);
            }
            assert_eq!(carry, 0, "never negative from the top down");
        }
        for (i, limb) in acc.iter().enumerate() {
            assert_eq!(*limb, i64::from(k.get(i).copied().unwrap_or(0)), "limb {i}");
        }
    }

    #[test]
    fn wnaf_digits_are_non_adjacent_and_add_up() {
        wnaf_is_non_adjacent_and_adds_up(&[0u32; 8]);
        wnaf_is_non_adjacent_and_adds_up(&[1u32; 8]);
        wnaf_is_non_adjacent_and_adds_up(&[u32::MAX; 8]);
        wnaf_is_non_adjacent_and_adds_up(&[u32::MAX; 17]);
        wnaf_is_non_adjacent_and_adds_up(&P256::N);
        wnaf_is_non_adjacent_and_adds_up(&P384::N);
        wnaf_is_non_adjacent_and_adds_up(&P521::N);
        wnaf_is_non_adjacent_and_adds_up(&[0x8000_0000u32; 12]);
        wnaf_is_non_adjacent_and_adds_up(&[0xf7ff_ffefu32; 12]);
    }

    /// `k * G` without a table, as affine coordinates, `None` for the point at infinity.
    fn windowed_times_g<C: CurveParams<L>, const L: usize>(
        k: &Limbs<L>,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let g = Affine::<C, L>::generator().unwrap();
        let p = windowed_mul(&g, k).unwrap();
        (!p.is_infinity()).then(|| coordinates(&to_affine(&p)))
    }

    fn be_bytes<C: CurveParams<L>, const L: usize>(k: &Limbs<L>) -> Vec<u8> {
        let bytes: Vec<u8> = k.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
        bytes[bytes.len() - C::BYTES..].to_vec()
    }

    /// `k * G` by the window and by the comb agree, and `k * G + (n - k) * G` is infinity
    /// when added as verification adds (windowed product first, then the comb's entries).
    fn windowed_and_comb_agree<C: CurveParams<L>, const L: usize>(k: &Limbs<L>) {
        // Below 2^(bits of n), then below n.
        let mut k = *k;
        for (i, limb) in k.iter_mut().enumerate() {
            let keep = C::N_BITS.saturating_sub(32 * i).min(32);
            *limb = if keep == 0 { 0 } else { *limb >> (32 - keep) };
        }
        let k = field::scalar::reduce::<C, L>(&k);
        assert_eq!(
            windowed_times_g::<C, L>(&k),
            comb_times_g::<C, L>(&be_bytes::<C, L>(&k))
        );
        let minus_k = field::sub(&C::N, &k).0;
        let g = C::generator_table().unwrap();
        let k_g = windowed_mul(&Affine::generator().unwrap(), &k).unwrap();
        assert!(g.add_multiple(&k_g, &minus_k).is_infinity());
        let mut two = [0u32; L];
        two[0] = 2;
        let sum = g.add_multiple(&k_g, &k);
        assert_eq!(
            (!sum.is_infinity()).then(|| coordinates(&to_affine(&sum))),
            windowed_times_g::<C, L>(&field::scalar::mul::<C, L>(&k, &two)),
            "k G + k G doubles"
        );
    }

    fn windowed_edge_cases<C: CurveParams<L>, const L: usize>() {
        let g = Affine::<C, L>::generator().unwrap();
        assert!(windowed_mul(&g, &[0u32; L]).unwrap().is_infinity(), "0 G");
        assert!(windowed_mul(&g, &C::N).unwrap().is_infinity(), "n G");
        let mut one = [0u32; L];
        one[0] = 1;
        assert_eq!(to_affine(&windowed_mul(&g, &one).unwrap()), g);
        let n_minus_1 = field::sub(&C::N, &one).0;
        assert_eq!(to_affine(&windowed_mul(&g, &n_minus_1).unwrap()), g.neg());
        let mut n_plus_1 = field::add(&C::N, &one).0;
        assert_eq!(to_affine(&windowed_mul(&g, &n_plus_1).unwrap()), g);
        n_plus_1[0] += 14; // n + 15: the largest odd multiple, 15 G
        let mut fifteen = [0u32; L];
        fifteen[0] = 15;
        assert_eq!(
            to_affine(&windowed_mul(&g, &n_plus_1).unwrap()),
            to_affine(&windowed_mul(&g, &fifteen).unwrap())
        );
        for k in 1..40u32 {
            let mut limbs = [0u32; L];
            limbs[0] = k;
            windowed_and_comb_agree::<C, L>(&limbs);
        }
        windowed_and_comb_agree::<C, L>(&[u32::MAX; L]);
    }

    #[test]
    fn windowed_multiplication_edge_cases_on_every_curve() {
        windowed_edge_cases::<P256, 8>();
        windowed_edge_cases::<P384, 12>();
        windowed_edge_cases::<P521, 17>();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn windowed_and_comb_multiplication_agree_on_every_curve(seed in prop::collection::vec(any::<u32>(), 17)) {
            let mut k8 = [0u32; 8];
            k8.copy_from_slice(&seed[..8]);
            windowed_and_comb_agree::<P256, 8>(&k8);
            let mut k12 = [0u32; 12];
            k12.copy_from_slice(&seed[..12]);
            windowed_and_comb_agree::<P384, 12>(&k12);
            let mut k17 = [0u32; 17];
            k17.copy_from_slice(&seed);
            windowed_and_comb_agree::<P521, 17>(&k17);
            wnaf_is_non_adjacent_and_adds_up(&k17);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn comb_multiplication_matches_p256(k in any::<[u8; 32]>()) {
            use p256::elliptic_curve::{sec1::ToEncodedPoint, PrimeField};
            let Some(s) = Option::<p256::Scalar>::from(p256::Scalar::from_repr(k.into())) else { return Ok(()) };
            let expected = (p256::ProjectivePoint::GENERATOR * s).to_affine().to_encoded_point(false);
            let got = comb_times_g::<P256, 8>(&k);
            prop_assert_eq!(got.is_none(), expected.is_identity());
            if let Some((x, y)) = got {
                prop_assert_eq!(&x[..], &expected.x().unwrap()[..]);
                prop_assert_eq!(&y[..], &expected.y().unwrap()[..]);
            }
        }

        #[test]
        fn comb_multiplication_matches_p384(k in prop::collection::vec(any::<u8>(), 48)) {
            use p384::elliptic_curve::{sec1::ToEncodedPoint, PrimeField};
            let mut repr = p384::FieldBytes::default();
            repr.copy_from_slice(&k);
            let Some(s) = Option::<p384::Scalar>::from(p384::Scalar::from_repr(repr)) else { return Ok(()) };
            let expected = (p384::ProjectivePoint::GENERATOR * s).to_affine().to_encoded_point(false);
            let got = comb_times_g::<P384, 12>(&k);
            prop_assert_eq!(got.is_none(), expected.is_identity());
            if let Some((x, y)) = got {
                prop_assert_eq!(&x[..], &expected.x().unwrap()[..]);
                prop_assert_eq!(&y[..], &expected.y().unwrap()[..]);
            }
        }

        #[test]
        fn comb_multiplication_matches_p521(mut k in prop::collection::vec(any::<u8>(), 66)) {
            use p521::elliptic_curve::{sec1::ToEncodedPoint, PrimeField};
            k[0] &= 1; // 521 bits
            let mut repr = p521::FieldBytes::default();
            repr.copy_from_slice(&k);
            let Some(s) = Option::<p521::Scalar>::from(p521::Scalar::from_repr(repr)) else { return Ok(()) };
            let expected = (p521::ProjectivePoint::GENERATOR * s).to_affine().to_encoded_point(false);
            let got = comb_times_g::<P521, 17>(&k);
            prop_assert_eq!(got.is_none(), expected.is_identity());
            if let Some((x, y)) = got {
                prop_assert_eq!(&x[..], &expected.x().unwrap()[..]);
                prop_assert_eq!(&y[..], &expected.y().unwrap()[..]);
            }
        }
    }
}
