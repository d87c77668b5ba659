//! ES256 (ECDSA over P-256 with SHA-256) verification, built for V8.
//!
//! The RustCrypto p256 crate computes its 32-bit field arithmetic through 64-bit limbs
//! (every product an emulated 128-bit multiply in wasm) and multiplies both points by
//! doubling: ~0.85 ms per check in V8, eleven times Envoy's BoringSSL. Here the field uses
//! 32-bit limbs, and both u1*G and u2*Q come from precomputed comb tables ([`CombTable`]): a
//! key's table is built once when the key is loaded, since a key verifies many tokens, and
//! G's once per VM. A check is then about 74 point additions and no doublings.
//!
//! Only public values are handled (keys, signatures, messages): the code is not constant
//! time and must not be used with secrets.

mod field;
mod point;

use field::{from_be_bytes, is_zero, lt, scalar, Fe, N, P};
use point::{double_scalar_mul, Affine, CombTable};
use std::sync::OnceLock;

/// G's comb table, built on first use.
fn generator_table() -> Option<&'static CombTable> {
    static TABLE: OnceLock<Option<CombTable>> = OnceLock::new();
    TABLE
        .get_or_init(|| Affine::generator().map(|g| CombTable::new(&g)))
        .as_ref()
}

/// A P-256 public key prepared for ES256 verification.
pub struct P256Verifier {
    table: CombTable,
}

impl std::fmt::Debug for P256Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P256Verifier")
    }
}

impl P256Verifier {
    /// The key with these big-endian affine coordinates; `None` if it is not a point of the
    /// curve. Builds the key's table (a few milliseconds).
    pub fn new(x: &[u8; 32], y: &[u8; 32]) -> Option<P256Verifier> {
        let q = Affine::from_coordinates(x, y)?;
        // Build G's table now too, not on the first token.
        generator_table()?;
        Some(P256Verifier {
            table: CombTable::new(&q),
        })
    }

    /// Verifies a JOSE ES256 signature (r || s, 32 bytes each) of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some(g) = generator_table() else {
            return false;
        };
        let (Ok(r_bytes), Ok(s_bytes)) = (
            <&[u8; 32]>::try_from(signature.get(..32).unwrap_or_default()),
            <&[u8; 32]>::try_from(signature.get(32..).unwrap_or_default()),
        ) else {
            return false;
        };
        let r = from_be_bytes(r_bytes);
        let s = from_be_bytes(s_bytes);
        if is_zero(&r) || is_zero(&s) || !lt(&r, &N) || !lt(&s, &N) {
            return false;
        }
        let e = scalar::reduce(&from_be_bytes(&hmac_sha256::Hash::hash(message)));
        let Some(w) = scalar::invert(&s) else {
            return false;
        };
        let u1 = scalar::mul(&e, &w);
        let u2 = scalar::mul(&r, &w);
        let sum = double_scalar_mul(g, &u1, &self.table, &u2);
        if sum.is_infinity() {
            return false;
        }
        // x(sum) mod n == r, without an inversion: x = X / Z^2 with x in [0, p), and
        // x mod n is x or x - n. So X == r * Z^2, or X == (r + n) * Z^2 when r + n < p.
        let z2 = sum.z.square();
        let matches = |candidate: &field::Limbs| {
            Fe::from_limbs(candidate).is_some_and(|c| c.mul(&z2) == sum.x)
        };
        if matches(&r) {
            return true;
        }
        let (r_plus_n, carry) = field::add(&r, &N);
        !carry && lt(&r_plus_n, &P) && matches(&r_plus_n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use proptest::prelude::*;

    fn verifier_for(key: &p256::ecdsa::SigningKey) -> P256Verifier {
        let point = key.verifying_key().to_encoded_point(false);
        let x: [u8; 32] = (*point.x().unwrap()).into();
        let y: [u8; 32] = (*point.y().unwrap()).into();
        P256Verifier::new(&x, &y).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn verifies_what_p256_signs_and_nothing_else(seed in any::<[u8; 32]>(), message in prop::collection::vec(any::<u8>(), 0..200), flip in 0usize..64) {
            let Ok(key) = p256::ecdsa::SigningKey::from_bytes(&seed.into()) else { return Ok(()) };
            let v = verifier_for(&key);
            let signature: p256::ecdsa::Signature = key.sign(&message);
            let bytes = signature.to_bytes();
            prop_assert!(v.verify(&message, &bytes));
            let mut bad = bytes.to_vec();
            bad[flip] ^= 1;
            prop_assert!(!v.verify(&message, &bad));
            let mut other = message.clone();
            other.push(0);
            prop_assert!(!v.verify(&other, &bytes));
        }
    }

    #[test]
    fn high_s_is_accepted_as_by_envoy() {
        // ECDSA signatures are malleable: (r, n - s) verifies too; BoringSSL and the JOSE
        // specifications do not require low s.
        let key = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).unwrap();
        let v = verifier_for(&key);
        let signature: p256::ecdsa::Signature = key.sign(b"m");
        let (r, s) = signature.split_bytes();
        let s = field::from_be_bytes(&s.into());
        let high = field::sub(&N, &s).0;
        let mut bytes = r.to_vec();
        for limb in high.iter().rev() {
            bytes.extend(limb.to_be_bytes());
        }
        assert!(v.verify(b"m", &bytes));
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let key = p256::ecdsa::SigningKey::from_bytes(&[9u8; 32].into()).unwrap();
        let v = verifier_for(&key);
        let signature: p256::ecdsa::Signature = key.sign(b"m");
        let bytes = signature.to_bytes();
        assert!(!v.verify(b"m", &bytes[..63]));
        assert!(!v.verify(b"m", &[&bytes[..], &[0]].concat()));
        assert!(!v.verify(b"m", &[0u8; 64]));
        assert!(!v.verify(b"m", &[0xff; 64]), "r, s >= n");
    }
}
