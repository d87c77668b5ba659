//! ECDSA verification over the NIST curves JOSE uses (ES256: P-256 with SHA-256, ES384:
//! P-384 with SHA-384, ES512: P-521 with SHA-512), built for V8.
//!
//! The RustCrypto p256/p384/p521 crates compute through 64-bit limbs (every product an
//! emulated 128-bit multiply in wasm) and multiply both points by doubling: ~0.85 ms per
//! ES256 check in V8, eleven times Envoy's BoringSSL, and ~180 KB of module for the three.
//! Here the field uses 32-bit limbs, one generic implementation serves the three curves, and
//! u1*G comes from G's precomputed comb table ([`point::CombTable`]), built once per curve
//! and process, when the first key of the curve is loaded.
//!
//! u2*Q comes from the key's own comb table once it has one: an ES256 check is then about
//! 74 point additions and no doublings. But a key's table takes 151,552 (P-256), 199,680
//! (P-384) or 228,480 (P-521) bytes ([`EcdsaVerifier::table_bytes`]) and milliseconds to
//! build, too much for every key of a large key set, so [`EcdsaVerifier::new`] only checks
//! the point: tables are built on request by the caller ([`EcdsaVerifier::build_table`]),
//! e.g. once the key has verified a few valid signatures, and [`EcdsaVerifier::memory_bytes`] lets it
//! account for them. Until then u2*Q is computed without a table: width-5 non-adjacent form
//! over Q, 3Q, ..., 15Q, one doubling per bit (an ES256 check: about 37 + 43 additions and
//! 256 doublings). Measured natively (x86-64, release build), that table-free check costs
//! about 3.6 times the table one for P-256 (0.24 ms against 0.066 ms) and P-384 (0.74
//! against 0.21 ms), and 3.0 times for P-521 (2.2 against 0.73 ms). Both paths compute the
//! same point and give the same answer on every input.
//!
//! Only public values are handled (keys, signatures, messages): the code is not constant
//! time and must not be used with secrets.

mod curves;
mod field;
mod point;

use crate::Curve;
use curves::{CurveParams, P256, P384, P521};
use field::{from_be_bytes, is_zero, lt, scalar, Fe, Limbs};
use point::{double_scalar_mul, windowed_mul, Affine, CombTable};
use std::cell::OnceCell;

/// A public key prepared for verification: its point, and its comb table once built.
struct Key<C: CurveParams<L>, const L: usize> {
    point: Affine<C, L>,
    table: OnceCell<CombTable<C, L>>,
}

impl<C: CurveParams<L>, const L: usize> Key<C, L> {
    fn new(x: &[u8], y: &[u8]) -> Option<Self> {
        let point = Affine::<C, L>::from_coordinates(x, y)?;
        // Build G's table now (once per process), not on the first token.
        C::generator_table()?;
        Some(Key {
            point,
            table: OnceCell::new(),
        })
    }

    fn build_table(&self) {
        self.table.get_or_init(|| CombTable::new(&self.point));
    }

    fn has_table(&self) -> bool {
        self.table.get().is_some()
    }

    fn table_heap_bytes(&self) -> usize {
        self.table.get().map_or(0, CombTable::heap_bytes)
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some(g) = C::generator_table() else {
            return false;
        };
        if signature.len() != 2 * C::BYTES {
            return false;
        }
        let (r_bytes, s_bytes) = signature.split_at(C::BYTES);
        let (Some(r), Some(s)) = (from_be_bytes::<L>(r_bytes), from_be_bytes::<L>(s_bytes)) else {
            return false;
        };
        if is_zero(&r) || is_zero(&s) || !lt(&r, &C::N) || !lt(&s, &C::N) {
            return false;
        }
        let e = scalar::reduce::<C, L>(&C::digest(message));
        let Some(w) = scalar::invert::<C, L>(&s) else {
            return false;
        };
        let u1 = scalar::mul::<C, L>(&e, &w);
        let u2 = scalar::mul::<C, L>(&r, &w);
        // The same point either way; only the work differs.
        let sum = match self.table.get() {
            Some(table) => double_scalar_mul(g, &u1, table, &u2),
            None => match windowed_mul(&self.point, &u2) {
                Some(u2_q) => g.add_multiple(&u2_q, &u1),
                None => return false,
            },
        };
        if sum.is_infinity() {
            return false;
        }
        // x(sum) mod n == r, without an inversion: x = X / Z^2 with x in [0, p), and
        // x mod n is x or x - n. So X == r * Z^2, or X == (r + n) * Z^2 when r + n < p.
        let z2 = sum.z.square();
        let matches = |candidate: &Limbs<L>| {
            Fe::<C, L>::from_limbs(candidate).is_some_and(|c| c.mul(&z2) == sum.x)
        };
        if matches(&r) {
            return true;
        }
        let (r_plus_n, carry) = field::add(&r, &C::N);
        !carry && lt(&r_plus_n, &C::P) && matches(&r_plus_n)
    }
}

enum Prepared {
    P256(Key<P256, 8>),
    P384(Key<P384, 12>),
    P521(Key<P521, 17>),
}

/// A P-256, P-384 or P-521 public key prepared for JOSE ECDSA verification. Not `Sync`: the
/// key's table is built in place ([`EcdsaVerifier::build_table`]), for use within one thread
/// (a Wasm VM).
pub struct EcdsaVerifier {
    key: Prepared,
}

impl std::fmt::Debug for EcdsaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EcdsaVerifier({:?}, table: {})",
            self.curve(),
            self.has_table()
        )
    }
}

impl EcdsaVerifier {
    /// The key with these big-endian affine coordinates (`curve.coordinate_len()` bytes
    /// each); `None` if they are not a point of the curve. Checks the point only: the key's
    /// table is not built (see [`EcdsaVerifier::build_table`]). The first key of a curve also
    /// builds G's table, once per process.
    pub fn new(curve: Curve, x: &[u8], y: &[u8]) -> Option<EcdsaVerifier> {
        let key = match curve {
            Curve::P256 => Prepared::P256(Key::new(x, y)?),
            Curve::P384 => Prepared::P384(Key::new(x, y)?),
            Curve::P521 => Prepared::P521(Key::new(x, y)?),
        };
        Some(EcdsaVerifier { key })
    }

    pub fn curve(&self) -> Curve {
        match self.key {
            Prepared::P256(_) => Curve::P256,
            Prepared::P384(_) => Curve::P384,
            Prepared::P521(_) => Curve::P521,
        }
    }

    /// Verifies a JOSE signature (r || s, each `coordinate_len()` bytes) of `message`, hashed
    /// with the curve's JOSE hash (SHA-256, SHA-384, SHA-512). With the key's table if it has
    /// been built, else without (the same answer, several times the work: see the module
    /// docs).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            Prepared::P256(k) => k.verify(message, signature),
            Prepared::P384(k) => k.verify(message, signature),
            Prepared::P521(k) => k.verify(message, signature),
        }
    }

    /// Builds the key's comb table ([`EcdsaVerifier::table_bytes`] of heap, a few
    /// milliseconds in V8), which later verifications use; does nothing if it is built.
    pub fn build_table(&self) {
        match &self.key {
            Prepared::P256(k) => k.build_table(),
            Prepared::P384(k) => k.build_table(),
            Prepared::P521(k) => k.build_table(),
        }
    }

    /// Whether the key's table has been built.
    pub fn has_table(&self) -> bool {
        match &self.key {
            Prepared::P256(k) => k.has_table(),
            Prepared::P384(k) => k.has_table(),
            Prepared::P521(k) => k.has_table(),
        }
    }

    /// Heap bytes of one key table of `curve`: 151,552 for P-256, 199,680 for P-384,
    /// 228,480 for P-521.
    pub fn table_bytes(curve: Curve) -> usize {
        match curve {
            Curve::P256 => point::table_bytes::<P256, 8>(),
            Curve::P384 => point::table_bytes::<P384, 12>(),
            Curve::P521 => point::table_bytes::<P521, 17>(),
        }
    }

    /// Bytes this verifier takes: its own size, plus its table's heap once built. (Not G's
    /// tables, which all keys of a curve share.)
    pub fn memory_bytes(&self) -> usize {
        let table = match &self.key {
            Prepared::P256(k) => k.table_heap_bytes(),
            Prepared::P384(k) => k.table_heap_bytes(),
            Prepared::P521(k) => k.table_heap_bytes(),
        };
        std::mem::size_of::<Self>() + table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Signer = Box<dyn Fn(&[u8]) -> Vec<u8>>;

    /// One curve's reference: a key from the RustCrypto crate, its coordinates, a signer.
    struct Reference {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
        sign: Signer,
    }

    fn p256_reference(seed: &[u8]) -> Option<Reference> {
        use p256::ecdsa::{signature::Signer, Signature, SigningKey};
        let key = SigningKey::from_slice(seed).ok()?;
        let point = key.verifying_key().to_encoded_point(false);
        Some(Reference {
            curve: Curve::P256,
            x: point.x()?.to_vec(),
            y: point.y()?.to_vec(),
            sign: Box::new(move |m| Signer::<Signature>::sign(&key, m).to_vec()),
        })
    }

    fn p384_reference(seed: &[u8]) -> Option<Reference> {
        use p384::ecdsa::{signature::Signer, Signature, SigningKey};
        let key = SigningKey::from_slice(seed).ok()?;
        let point = key.verifying_key().to_encoded_point(false);
        Some(Reference {
            curve: Curve::P384,
            x: point.x()?.to_vec(),
            y: point.y()?.to_vec(),
            sign: Box::new(move |m| Signer::<Signature>::sign(&key, m).to_vec()),
        })
    }

    fn p521_reference(seed: &[u8]) -> Option<Reference> {
        use p521::ecdsa::{signature::Signer, Signature, SigningKey, VerifyingKey};
        let key = SigningKey::from_slice(seed).ok()?;
        let point = VerifyingKey::from(&key).to_encoded_point(false);
        Some(Reference {
            curve: Curve::P521,
            x: point.x()?.to_vec(),
            y: point.y()?.to_vec(),
            sign: Box::new(move |m| Signer::<Signature>::sign(&key, m).to_vec()),
        })
    }

    /// Every answer of `v` to these inputs, with its name.
    fn answers(
        v: &EcdsaVerifier,
        message: &[u8],
        signature: &[u8],
        flip: usize,
    ) -> Vec<(String, bool)> {
        let mut bad = signature.to_vec();
        let at = flip % bad.len();
        bad[at] ^= 1;
        let mut other = message.to_vec();
        other.push(0);
        vec![
            ("signed".into(), v.verify(message, signature)),
            (format!("flipped bit at byte {at}"), v.verify(message, &bad)),
            ("other message".into(), v.verify(&other, signature)),
            ("short signature".into(), v.verify(message, &signature[1..])),
            (
                "long signature".into(),
                v.verify(message, &[signature, &[0]].concat()),
            ),
        ]
    }

    /// Verifies without the key's table, then with it: the answers must be the same, and
    /// true only for the signed message and its signature.
    fn verifies_only_what_was_signed(reference: Option<Reference>, message: &[u8], flip: usize) {
        let Some(r) = reference else { return };
        let v = EcdsaVerifier::new(r.curve, &r.x, &r.y).unwrap();
        assert_eq!(v.curve(), r.curve);
        let signature = (r.sign)(message);
        assert_eq!(signature.len(), 2 * r.curve.coordinate_len());
        assert!(!v.has_table());
        let without_table = answers(&v, message, &signature, flip);
        v.build_table();
        assert!(v.has_table());
        let with_table = answers(&v, message, &signature, flip);
        assert_eq!(without_table, with_table);
        for (i, (name, ok)) in with_table.iter().enumerate() {
            assert_eq!(*ok, i == 0, "{name}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn es256_verifies_what_p256_signs_and_nothing_else(seed in any::<[u8; 32]>(), message in prop::collection::vec(any::<u8>(), 0..200), flip in 0usize..200) {
            verifies_only_what_was_signed(p256_reference(&seed), &message, flip);
        }

        #[test]
        fn es384_verifies_what_p384_signs_and_nothing_else(seed in prop::collection::vec(any::<u8>(), 48), message in prop::collection::vec(any::<u8>(), 0..200), flip in 0usize..200) {
            verifies_only_what_was_signed(p384_reference(&seed), &message, flip);
        }

        #[test]
        fn es512_verifies_what_p521_signs_and_nothing_else(mut seed in prop::collection::vec(any::<u8>(), 66), message in prop::collection::vec(any::<u8>(), 0..200), flip in 0usize..200) {
            seed[0] &= 1;
            verifies_only_what_was_signed(p521_reference(&seed), &message, flip);
        }
    }

    #[test]
    fn curve_sizes_agree_with_the_jose_names() {
        assert_eq!(Curve::P256.coordinate_len(), P256::BYTES);
        assert_eq!(Curve::P384.coordinate_len(), P384::BYTES);
        assert_eq!(Curve::P521.coordinate_len(), P521::BYTES);
    }

    #[test]
    fn high_s_is_accepted_as_by_envoy() {
        // ECDSA signatures are malleable: (r, n - s) verifies too; BoringSSL and the JOSE
        // specifications do not require low s.
        let r = p256_reference(&[7u8; 32]).unwrap();
        let v = EcdsaVerifier::new(r.curve, &r.x, &r.y).unwrap();
        let signature = (r.sign)(b"m");
        let s: Limbs<8> = from_be_bytes(&signature[32..]).unwrap();
        let high = field::sub(&P256::N, &s).0;
        let mut bytes = signature[..32].to_vec();
        for limb in high.iter().rev() {
            bytes.extend(limb.to_be_bytes());
        }
        assert!(v.verify(b"m", &bytes), "without the key's table");
        v.build_table();
        assert!(v.verify(b"m", &bytes), "with the key's table");
    }

    #[test]
    fn out_of_range_signatures_are_refused() {
        for r in [
            p256_reference(&[9u8; 32]),
            p384_reference(&[9u8; 48]),
            p521_reference(&[[1u8].as_slice(), &[9u8; 65]].concat()),
        ] {
            let r = r.unwrap();
            let v = EcdsaVerifier::new(r.curve, &r.x, &r.y).unwrap();
            let len = 2 * r.curve.coordinate_len();
            for _ in 0..2 {
                assert!(!v.verify(b"m", &vec![0u8; len]), "r = s = 0");
                assert!(!v.verify(b"m", &vec![0xff; len]), "r, s >= n");
                v.build_table();
            }
        }
    }

    fn all_references() -> [Reference; 3] {
        [
            p256_reference(&[3u8; 32]).unwrap(),
            p384_reference(&[3u8; 48]).unwrap(),
            p521_reference(&[[1u8].as_slice(), &[3u8; 65]].concat()).unwrap(),
        ]
    }

    #[test]
    fn a_sum_at_infinity_is_refused_with_and_without_the_table() {
        // With r = -e / d (d the private key), u1 * G + u2 * Q = w (e + r d) G is the point
        // at infinity for every s: the table-free path meets u2 * Q = -(u1 * G).
        let d = [3u8; 32];
        let r = p256_reference(&d).unwrap();
        let v = EcdsaVerifier::new(r.curve, &r.x, &r.y).unwrap();
        let d: Limbs<8> = from_be_bytes(&d).unwrap();
        let e = scalar::reduce::<P256, 8>(&P256::digest(b"m"));
        let e_over_d = scalar::mul::<P256, 8>(&e, &scalar::invert::<P256, 8>(&d).unwrap());
        let r_limbs = field::sub(&P256::N, &e_over_d).0;
        let be = |x: &Limbs<8>| {
            x.iter()
                .rev()
                .flat_map(|l| l.to_be_bytes())
                .collect::<Vec<u8>>()
        };
        let signature = [be(&r_limbs), be(&[5, 0, 0, 0, 0, 0, 0, 0])].concat();
        assert!(!v.verify(b"m", &signature), "without the key's table");
        v.build_table();
        assert!(!v.verify(b"m", &signature), "with the key's table");
    }

    #[test]
    fn a_new_verifier_has_no_table() {
        for r in all_references() {
            let v = EcdsaVerifier::new(r.curve, &r.x, &r.y).unwrap();
            assert!(!v.has_table(), "{:?}", r.curve);
            assert_eq!(v.memory_bytes(), std::mem::size_of::<EcdsaVerifier>());
        }
    }

    #[test]
    fn memory_grows_by_table_bytes_once_the_table_is_built() {
        for r in all_references() {
            let v = EcdsaVerifier::new(r.curve, &r.x, &r.y).unwrap();
            let before = v.memory_bytes();
            v.build_table();
            assert!(v.has_table());
            let table = EcdsaVerifier::table_bytes(r.curve);
            assert_eq!(v.memory_bytes(), before + table, "{:?}", r.curve);
            v.build_table();
            assert_eq!(v.memory_bytes(), before + table, "built once");
        }
    }

    #[test]
    fn table_bytes_are_the_points_of_each_curve() {
        assert_eq!(EcdsaVerifier::table_bytes(Curve::P256), 37 * 64 * 2 * 32);
        assert_eq!(EcdsaVerifier::table_bytes(Curve::P384), 65 * 32 * 2 * 48);
        assert_eq!(EcdsaVerifier::table_bytes(Curve::P521), 105 * 16 * 2 * 68);
    }

    /// Prints the native cost of a verification without and with the key's table, for the
    /// ratio the module docs give. Run by hand:
    /// `cargo test -p tokengate-crypto --release -- --ignored --nocapture costs`.
    #[test]
    #[ignore = "a timing to read, not a check"]
    fn costs_of_verification_without_and_with_the_table() {
        use std::time::Instant;
        for r in all_references() {
            let v = EcdsaVerifier::new(r.curve, &r.x, &r.y).unwrap();
            let signature = (r.sign)(b"header.payload");
            // The best of ten batches: the machine may be shared.
            let rounds = 100;
            let time = |v: &EcdsaVerifier| {
                (0..10)
                    .map(|_| {
                        let start = Instant::now();
                        for _ in 0..rounds {
                            assert!(v.verify(std::hint::black_box(b"header.payload"), &signature));
                        }
                        start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
                    })
                    .fold(f64::INFINITY, f64::min)
            };
            time(&v);
            let without = time(&v);
            let start = Instant::now();
            v.build_table();
            let build = start.elapsed().as_secs_f64() * 1e6;
            let with = time(&v);
            println!(
                "{:?}: {without:.1} us without the table, {with:.1} us with it ({:.2}x); \
                 table built in {build:.0} us, {} bytes; verifier {} bytes",
                r.curve,
                without / with,
                EcdsaVerifier::table_bytes(r.curve),
                v.memory_bytes()
            );
        }
    }

    #[test]
    fn points_off_the_curve_make_no_verifier() {
        let r = p384_reference(&[5u8; 48]).unwrap();
        let mut y = r.y.clone();
        y[47] ^= 1;
        assert!(EcdsaVerifier::new(Curve::P384, &r.x, &y).is_none());
        assert!(
            EcdsaVerifier::new(Curve::P256, &r.x, &r.y).is_none(),
            "wrong curve"
        );
    }
}
