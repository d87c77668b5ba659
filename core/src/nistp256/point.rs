//! Points of P-256 (y^2 = x^3 - 3x + b): affine for table entries, Jacobian (x = X/Z^2,
//! y = Y/Z^3) for sums, and the per-base-point comb tables verification adds up.

use super::field::{from_be_bytes, Fe, Limbs};

/// b of the curve equation.
const B: [u8; 32] = [
    0x5a, 0xc6, 0x35, 0xd8, 0xaa, 0x3a, 0x93, 0xe7, 0xb3, 0xeb, 0xbd, 0x55, 0x76, 0x98, 0x86, 0xbc,
    0x65, 0x1d, 0x06, 0xb0, 0xcc, 0x53, 0xb0, 0xf6, 0x3b, 0xce, 0x3c, 0x3e, 0x27, 0xd2, 0x60, 0x4b,
];

/// The base point G.
pub const GX: [u8; 32] = [
    0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2,
    0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96,
];
pub const GY: [u8; 32] = [
    0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16,
    0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Affine {
    pub x: Fe,
    pub y: Fe,
}

impl Affine {
    /// A point from its big-endian coordinates, if they are field elements and the point is
    /// on the curve (P-256 has cofactor 1: every such point is in the group).
    pub fn from_coordinates(x: &[u8; 32], y: &[u8; 32]) -> Option<Affine> {
        let x = Fe::from_limbs(&from_be_bytes(x))?;
        let y = Fe::from_limbs(&from_be_bytes(y))?;
        let b = Fe::from_limbs(&from_be_bytes(&B))?;
        let x3 = x.square().mul(&x);
        let three_x = x.double().add(&x);
        (y.square() == x3.sub(&three_x).add(&b)).then_some(Affine { x, y })
    }

    pub fn generator() -> Option<Affine> {
        Affine::from_coordinates(&GX, &GY)
    }

    fn neg(&self) -> Affine {
        Affine {
            x: self.x,
            y: self.y.neg(),
        }
    }
}

/// A point in Jacobian coordinates; Z = 0 is the point at infinity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Jacobian {
    pub x: Fe,
    pub y: Fe,
    pub z: Fe,
}

impl Jacobian {
    pub const INFINITY: Jacobian = Jacobian {
        x: Fe::ZERO,
        y: Fe::ZERO,
        z: Fe::ZERO,
    };

    pub fn from_affine(p: &Affine) -> Jacobian {
        Jacobian {
            x: p.x,
            y: p.y,
            z: Fe::one(),
        }
    }

    pub fn is_infinity(&self) -> bool {
        self.z.is_zero()
    }

    /// 2P ("dbl-2001-b", a = -3).
    pub fn double(&self) -> Jacobian {
        if self.is_infinity() || self.y.is_zero() {
            return Jacobian::INFINITY;
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
    pub fn add_affine(&self, q: &Affine) -> Jacobian {
        if self.is_infinity() {
            return Jacobian::from_affine(q);
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
                Jacobian::INFINITY
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
    pub fn add(&self, q: &Jacobian) -> Jacobian {
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
                Jacobian::INFINITY
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
fn normalize_all(points: &[Jacobian]) -> Vec<Affine> {
    let mut prefix = Vec::with_capacity(points.len());
    let mut acc = Fe::one();
    for p in points {
        prefix.push(acc);
        acc = acc.mul(&p.z);
    }
    let mut inv = acc.invert();
    let mut out = vec![Affine::default(); points.len()];
    for (i, p) in points.iter().enumerate().rev() {
        let z_inv = inv.mul(&prefix[i]);
        inv = inv.mul(&p.z);
        let z2 = z_inv.square();
        out[i] = Affine {
            x: p.x.mul(&z2),
            y: p.y.mul(&z2.mul(&z_inv)),
        };
    }
    out
}

/// Bits per window of the comb: a scalar is 37 signed digits in [-64, 64].
const WINDOW: usize = 7;
const WINDOWS: usize = 37;
const PER_WINDOW: usize = 1 << (WINDOW - 1);

/// `d * 2^(7i) * P` for every window i and digit d in 1..=64: k * P is then one addition per
/// non-zero digit of k, with no doublings. 37 * 64 affine points, 152 KB; built once per key
/// (a few milliseconds), used for every token the key signs.
pub struct CombTable {
    points: Vec<Affine>,
}

impl CombTable {
    pub fn new(base: &Affine) -> CombTable {
        let mut all = Vec::with_capacity(WINDOWS * PER_WINDOW);
        let mut row_base = Jacobian::from_affine(base);
        for _ in 0..WINDOWS {
            let mut multiple = row_base;
            all.push(multiple);
            for _ in 1..PER_WINDOW {
                multiple = multiple.add(&row_base);
                all.push(multiple);
            }
            // 64 * base doubled: the next window's 2^7 * base.
            row_base = multiple.double();
        }
        CombTable {
            points: normalize_all(&all),
        }
    }

    /// `d * 2^(7 * window) * P` for a digit in -64..=64, `None` for 0.
    fn entry(&self, window: usize, digit: i32) -> Option<Affine> {
        let index = usize::try_from(digit.unsigned_abs()).ok()?.checked_sub(1)?;
        let p = self.points.get(window * PER_WINDOW + index)?;
        Some(if digit < 0 { p.neg() } else { *p })
    }
}

/// The scalar as signed base-128 digits, least significant first: sum d_i 2^(7i) = k.
fn signed_digits(k: &Limbs) -> [i32; WINDOWS] {
    let bit = |i: usize| -> u32 {
        if i >= 256 {
            0
        } else {
            (k[i / 32] >> (i % 32)) & 1
        }
    };
    let mut out = [0i32; WINDOWS];
    let mut carry = 0i32;
    for (w, digit) in out.iter_mut().enumerate() {
        let mut value = carry;
        for b in 0..WINDOW {
            value += (bit(w * WINDOW + b) as i32) << b;
        }
        // value in 0..=128; digits above 64 borrow from the next window.
        if value > PER_WINDOW as i32 {
            *digit = value - (1 << WINDOW);
            carry = 1;
        } else {
            *digit = value;
            carry = 0;
        }
    }
    out
}

/// u1 * G + u2 * Q from the two tables.
pub fn double_scalar_mul(g: &CombTable, u1: &Limbs, q: &CombTable, u2: &Limbs) -> Jacobian {
    let d1 = signed_digits(u1);
    let d2 = signed_digits(u2);
    let mut acc = Jacobian::INFINITY;
    for w in 0..WINDOWS {
        if let Some(p) = g.entry(w, d1[w]) {
            acc = acc.add_affine(&p);
        }
        if let Some(p) = q.entry(w, d2[w]) {
            acc = acc.add_affine(&p);
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::elliptic_curve::PrimeField;
    use proptest::prelude::*;

    fn to_affine(p: &Jacobian) -> Affine {
        normalize_all(&[*p])[0]
    }

    fn coordinates(p: &Affine) -> ([u8; 32], [u8; 32]) {
        let be = |fe: &Fe| {
            let l = fe.to_limbs();
            let mut out = [0u8; 32];
            for i in 0..8 {
                out[28 - 4 * i..32 - 4 * i].copy_from_slice(&l[i].to_be_bytes());
            }
            out
        };
        (be(&p.x), be(&p.y))
    }

    /// k * G by the p256 crate, as big-endian affine coordinates.
    fn reference(k: &[u8; 32]) -> Option<([u8; 32], [u8; 32])> {
        let scalar = Option::<p256::Scalar>::from(p256::Scalar::from_repr((*k).into()))?;
        let point = (p256::ProjectivePoint::GENERATOR * scalar).to_affine();
        let encoded = point.to_encoded_point(false);
        Some(((*encoded.x()?).into(), (*encoded.y()?).into()))
    }

    #[test]
    fn mixed_addition_handles_equal_and_opposite_points() {
        let g = Affine::generator().unwrap();
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
    fn off_curve_points_are_refused() {
        let mut y = GY;
        y[31] ^= 1;
        assert!(Affine::from_coordinates(&GX, &y).is_none());
        assert!(
            Affine::from_coordinates(&[0xff; 32], &GY).is_none(),
            "x >= p"
        );
    }

    #[test]
    fn signed_digits_add_up() {
        let k = [0xffff_ffffu32; 8];
        let digits = signed_digits(&k);
        assert!(digits.iter().all(|d| (-64..=64).contains(d)));
        // Recompose modulo 2^64 from the low windows (enough to catch a wrong carry).
        let low: i128 = digits
            .iter()
            .take(9)
            .enumerate()
            .map(|(i, d)| i128::from(*d) << (7 * i))
            .sum();
        assert_eq!(low.rem_euclid(1 << 63), (u64::MAX >> 1) as i128);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn comb_multiplication_matches_p256(k in any::<[u8; 32]>()) {
            let Some(expected) = reference(&k) else { return Ok(()) };
            let g = generator_table_for_tests();
            let limbs = super::super::field::from_be_bytes(&k);
            let zero = [0u32; 8];
            let sum = double_scalar_mul(g, &limbs, g, &zero);
            prop_assume!(!sum.is_infinity());
            prop_assert_eq!(coordinates(&to_affine(&sum)), expected);
        }
    }

    fn generator_table_for_tests() -> &'static CombTable {
        use std::sync::OnceLock;
        static T: OnceLock<CombTable> = OnceLock::new();
        T.get_or_init(|| CombTable::new(&Affine::generator().unwrap()))
    }
}
