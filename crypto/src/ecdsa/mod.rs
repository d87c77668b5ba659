//! ECDSA verification over the NIST curves JOSE uses (ES256: P-256 with SHA-256, ES384:
//! P-384 with SHA-384, ES512: P-521 with SHA-512), built for V8.
//!
//! The RustCrypto p256/p384/p521 crates compute through 64-bit limbs (every product an
//! emulated 128-bit multiply in wasm) and multiply both points by doubling: ~0.85 ms per
//! ES256 check in V8, eleven times Envoy's BoringSSL, and ~180 KB of module for the three.
//! Here the field uses 32-bit limbs, one generic implementation serves the three curves, and
//! both u1*G and u2*Q come from precomputed comb tables ([`point::CombTable`]): a key's table
//! is built once when the key is loaded, since a key verifies many tokens, and G's once per
//! VM. An ES256 check is then about 74 point additions and no doublings.
//!
//! Only public values are handled (keys, signatures, messages): the code is not constant
//! time and must not be used with secrets.

mod curves;
mod field;
mod point;

use crate::Curve;
use curves::{CurveParams, P256, P384, P521};
use field::{from_be_bytes, is_zero, lt, scalar, Fe, Limbs};
use point::{double_scalar_mul, Affine, CombTable};

/// A public key prepared for verification: its point's comb table.
struct Key<C: CurveParams<L>, const L: usize> {
    table: CombTable<C, L>,
}

impl<C: CurveParams<L>, const L: usize> Key<C, L> {
    fn new(x: &[u8], y: &[u8]) -> Option<Self> {
        let q = Affine::<C, L>::from_coordinates(x, y)?;
        // Build G's table now too, not on the first token.
        C::generator_table()?;
        Some(Key {
            table: CombTable::new(&q),
        })
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
        let sum = double_scalar_mul(g, &u1, &self.table, &u2);
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

/// A P-256, P-384 or P-521 public key prepared for JOSE ECDSA verification.
pub struct EcdsaVerifier {
    key: Prepared,
}

impl std::fmt::Debug for EcdsaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcdsaVerifier({:?})", self.curve())
    }
}

impl EcdsaVerifier {
    /// The key with these big-endian affine coordinates (`curve.coordinate_len()` bytes
    /// each); `None` if they are not a point of the curve. Builds the key's table (a few
    /// milliseconds in V8).
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
    /// with the curve's JOSE hash (SHA-256, SHA-384, SHA-512).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            Prepared::P256(k) => k.verify(message, signature),
            Prepared::P384(k) => k.verify(message, signature),
            Prepared::P521(k) => k.verify(message, signature),
        }
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

    fn verifies_only_what_was_signed(reference: Option<Reference>, message: &[u8], flip: usize) {
        let Some(r) = reference else { return };
        let v = EcdsaVerifier::new(r.curve, &r.x, &r.y).unwrap();
        assert_eq!(v.curve(), r.curve);
        let signature = (r.sign)(message);
        assert_eq!(signature.len(), 2 * r.curve.coordinate_len());
        assert!(v.verify(message, &signature));
        let mut bad = signature.clone();
        let at = flip % bad.len();
        bad[at] ^= 1;
        assert!(!v.verify(message, &bad), "flipped bit at byte {at}");
        let mut other = message.to_vec();
        other.push(0);
        assert!(!v.verify(&other, &signature));
        assert!(!v.verify(message, &signature[1..]), "short signature");
        assert!(
            !v.verify(message, &[&signature[..], &[0]].concat()),
            "long signature"
        );
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
        assert!(v.verify(b"m", &bytes));
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
            assert!(!v.verify(b"m", &vec![0u8; len]), "r = s = 0");
            assert!(!v.verify(b"m", &vec![0xff; len]), "r, s >= n");
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
