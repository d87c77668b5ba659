//! RSASSA-PKCS1-v1_5 verification (RS256/384/512) on fixed-width integers.
//!
//! jwt-simple's RSA (arbitrary-precision big integers, a key copy per call) costs about
//! 0.9 ms per verification in V8, twenty times Envoy's BoringSSL. Verification only needs
//! `s^e mod n` for a small public exponent: with the modulus's Montgomery parameters
//! computed once per key and crypto-bigint's fixed-width arithmetic (the version the
//! elliptic-curve crates already link) (32-bit limbs on wasm32,
//! which V8 multiplies natively), e = 65537 is 16 squarings and one multiplication.
//! Keys this path does not cover (exponents other than 65537, moduli outside 2048..=4096
//! bits) keep using jwt-simple.

use crate::alg::Alg;
use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Encoding, Uint, U2048, U3072, U4096};

/// A public key prepared for fast PKCS#1 v1.5 verification.
#[derive(Clone)]
pub struct RsaVerifier {
    /// Length of the modulus in bytes: the length of every signature.
    k: usize,
    modulus: Modulus,
}

#[derive(Clone)]
enum Modulus {
    W2048(Box<DynResidueParams<{ U2048::LIMBS }>>),
    W3072(Box<DynResidueParams<{ U3072::LIMBS }>>),
    W4096(Box<DynResidueParams<{ U4096::LIMBS }>>),
}

impl std::fmt::Debug for RsaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaVerifier({} bits)", self.k * 8)
    }
}

/// `bytes` (big-endian, at most N bytes) left-padded into an N-byte array.
fn padded<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let start = N.checked_sub(bytes.len())?;
    out[start..].copy_from_slice(bytes);
    Some(out)
}

fn params<const LIMBS: usize, const BYTES: usize>(n: &[u8]) -> Option<DynResidueParams<LIMBS>>
where
    Uint<LIMBS>: Encoding<Repr = [u8; BYTES]>,
{
    // `new` panics on an even modulus; checked here first (a modulus is odd in every real key).
    if n.last().is_none_or(|low| low & 1 == 0) {
        return None;
    }
    let n = Uint::<LIMBS>::from_be_bytes(padded::<BYTES>(n)?);
    Some(DynResidueParams::new(&n))
}

/// `s^65537 mod n` as big-endian bytes, or `None` when `s >= n`.
fn pow_65537<const LIMBS: usize, const BYTES: usize>(
    params: &DynResidueParams<LIMBS>,
    signature: &[u8],
) -> Option<[u8; BYTES]>
where
    Uint<LIMBS>: Encoding<Repr = [u8; BYTES]>,
{
    let s = Uint::<LIMBS>::from_be_bytes(padded::<BYTES>(signature)?);
    if s >= *params.modulus() {
        return None;
    }
    let x = DynResidue::new(&s, *params);
    let mut r = x;
    for _ in 0..16 {
        r = r.square();
    }
    Some(r.mul(&x).retrieve().to_be_bytes())
}

impl RsaVerifier {
    /// Prepares `n`, `e` (big-endian, no leading zeros); `None` when this fast path does not
    /// apply to the key.
    pub fn new(n: &[u8], e: &[u8]) -> Option<RsaVerifier> {
        if e != [1, 0, 1] || n.first().is_none_or(|b| *b == 0) {
            return None;
        }
        let k = n.len();
        let modulus = match k {
            256 => Modulus::W2048(Box::new(params::<{ U2048::LIMBS }, 256>(n)?)),
            257..=384 => Modulus::W3072(Box::new(params::<{ U3072::LIMBS }, 384>(n)?)),
            385..=512 => Modulus::W4096(Box::new(params::<{ U4096::LIMBS }, 512>(n)?)),
            _ => return None,
        };
        Some(RsaVerifier { k, modulus })
    }

    /// Verifies a PKCS#1 v1.5 signature of `message` with the hash of `alg` (RS256/384/512).
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if signature.len() != self.k {
            return false;
        }
        let (prefix, digest): (&[u8], Vec<u8>) = match alg {
            Alg::Rs256 => (&SHA256_PREFIX, hmac_sha256::Hash::hash(message).to_vec()),
            Alg::Rs384 => (
                &SHA384_PREFIX,
                hmac_sha512::sha384::Hash::hash(message).to_vec(),
            ),
            Alg::Rs512 => (&SHA512_PREFIX, hmac_sha512::Hash::hash(message).to_vec()),
            _ => return false,
        };
        match &self.modulus {
            Modulus::W2048(p) => pow_65537::<{ U2048::LIMBS }, 256>(p, signature)
                .is_some_and(|m| encoded_ok(&m, self.k, prefix, &digest)),
            Modulus::W3072(p) => pow_65537::<{ U3072::LIMBS }, 384>(p, signature)
                .is_some_and(|m| encoded_ok(&m, self.k, prefix, &digest)),
            Modulus::W4096(p) => pow_65537::<{ U4096::LIMBS }, 512>(p, signature)
                .is_some_and(|m| encoded_ok(&m, self.k, prefix, &digest)),
        }
    }
}

/// DigestInfo prefixes (RFC 8017 section 9.2, note 1).
const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA384_PREFIX: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const SHA512_PREFIX: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// Whether `m` (the full-width result, the last `k` bytes being the encoded message) is
/// `00 01 FF..FF 00 || prefix || digest`, with at least 8 bytes of FF (RFC 8017 9.2).
fn encoded_ok(m: &[u8], k: usize, prefix: &[u8], digest: &[u8]) -> bool {
    let Some(lead) = m.len().checked_sub(k) else {
        return false;
    };
    if m[..lead].iter().any(|b| *b != 0) {
        return false;
    }
    let em = &m[lead..];
    let t_len = prefix.len() + digest.len();
    if k < t_len + 11 {
        return false;
    }
    let ps_end = k - t_len - 1;
    em[0] == 0
        && em[1] == 1
        && em[2..ps_end].iter().all(|b| *b == 0xff)
        && em[ps_end] == 0
        && &em[ps_end + 1..ps_end + 1 + prefix.len()] == prefix
        && &em[ps_end + 1 + prefix.len()..] == digest
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::*;

    fn key_and_token(bits: usize) -> (RS256KeyPair, String) {
        let key = RS256KeyPair::generate(bits).unwrap();
        let token = key.sign(Claims::create(Duration::from_hours(1))).unwrap();
        (key, token)
    }

    fn verifier(key: &RS256KeyPair) -> RsaVerifier {
        let c = key.public_key().to_components();
        RsaVerifier::new(&c.n, &c.e).unwrap()
    }

    fn split(token: &str) -> (&str, Vec<u8>) {
        let (input, sig) = token.rsplit_once('.').unwrap();
        (input, crate::b64::decode(sig).unwrap())
    }

    #[test]
    fn verifies_what_jwt_simple_signs_at_every_size() {
        for bits in [2048, 3072, 4096] {
            let (key, token) = key_and_token(bits);
            let (input, sig) = split(&token);
            assert!(
                verifier(&key).verify(Alg::Rs256, input.as_bytes(), &sig),
                "{} bits",
                bits
            );
        }
    }

    #[test]
    fn refuses_tampering() {
        let (key, token) = key_and_token(2048);
        let v = verifier(&key);
        let (input, sig) = split(&token);
        let mut bad = sig.clone();
        bad[100] ^= 1;
        assert!(!v.verify(Alg::Rs256, input.as_bytes(), &bad));
        assert!(!v.verify(Alg::Rs256, b"other input", &sig));
        assert!(
            !v.verify(Alg::Rs384, input.as_bytes(), &sig),
            "another hash"
        );
        assert!(!v.verify(Alg::Rs256, input.as_bytes(), &sig[1..]), "short");
        assert!(
            !v.verify(Alg::Rs256, input.as_bytes(), &[0xff; 256]),
            "not below n"
        );
        assert!(!v.verify(Alg::Rs256, input.as_bytes(), &[0; 256]));
    }

    #[test]
    fn other_exponents_and_sizes_are_left_to_jwt_simple() {
        assert!(RsaVerifier::new(&[0xc5; 256], &[3]).is_none());
        assert!(RsaVerifier::new(&[0xc5; 128], &[1, 0, 1]).is_none());
        assert!(
            RsaVerifier::new(&[0xc4; 256], &[1, 0, 1]).is_none(),
            "an even modulus"
        );
    }

    #[test]
    fn rs384_and_rs512() {
        let key = RS384KeyPair::generate(2048).unwrap();
        let token = key.sign(Claims::create(Duration::from_hours(1))).unwrap();
        let c = key.public_key().to_components();
        let (input, sig) = split(&token);
        assert!(RsaVerifier::new(&c.n, &c.e)
            .unwrap()
            .verify(Alg::Rs384, input.as_bytes(), &sig));
        let key = RS512KeyPair::generate(2048).unwrap();
        let token = key.sign(Claims::create(Duration::from_hours(1))).unwrap();
        let c = key.public_key().to_components();
        let (input, sig) = split(&token);
        assert!(RsaVerifier::new(&c.n, &c.e)
            .unwrap()
            .verify(Alg::Rs512, input.as_bytes(), &sig));
    }
}
