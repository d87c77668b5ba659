//! RSA signature verification: RS256/384/512 (PKCS#1 v1.5) and PS256/384/512 (PSS), on
//! [`crate::montgomery`].
//!
//! jwt-simple's RSA (arbitrary-precision integers with 64-bit limbs, a key copy per call)
//! cost about 0.9 ms per check in V8, twenty times Envoy's BoringSSL. Verification is only
//! `s^e mod n` for a small public exponent and a byte comparison: with the modulus prepared
//! once per key, e = 65537 is 16 squarings and one multiplication.

use crate::montgomery::Modulus;

/// The RSA signature schemes of JWS (RFC 7518): PKCS#1 v1.5 (RS*) and PSS (PS*), each with
/// SHA-256, SHA-384 or SHA-512.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaAlg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
}

/// Longest public exponent accepted, in bits: BoringSSL's limit (Envoy refuses longer ones
/// too), which also bounds the work an exponent can ask for.
pub const MAX_EXPONENT_BITS: usize = 33;

/// A public key prepared for verification.
#[derive(Clone)]
pub struct RsaVerifier {
    modulus: Modulus,
    /// Big-endian, no leading zeros.
    e: Vec<u8>,
    /// Bit length of the modulus.
    bits: usize,
}

impl std::fmt::Debug for RsaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaVerifier({} bits)", self.bits)
    }
}

/// The hash an algorithm signs with.
#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// The hash of `alg`, and whether it pads with PSS.
    fn of(alg: RsaAlg) -> (Hash, bool) {
        match alg {
            RsaAlg::Rs256 => (Hash::Sha256, false),
            RsaAlg::Rs384 => (Hash::Sha384, false),
            RsaAlg::Rs512 => (Hash::Sha512, false),
            RsaAlg::Ps256 => (Hash::Sha256, true),
            RsaAlg::Ps384 => (Hash::Sha384, true),
            RsaAlg::Ps512 => (Hash::Sha512, true),
        }
    }

    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// The digest of the concatenation of `parts`.
    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut h = hmac_sha256::Hash::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
            Hash::Sha384 => {
                let mut h = hmac_sha512::sha384::Hash::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
            Hash::Sha512 => {
                let mut h = hmac_sha512::Hash::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
        }
    }

    /// DigestInfo prefix for PKCS#1 v1.5 (RFC 8017 section 9.2, note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &SHA256_PREFIX,
            Hash::Sha384 => &SHA384_PREFIX,
            Hash::Sha512 => &SHA512_PREFIX,
        }
    }
}

impl RsaVerifier {
    /// Prepares `n`, `e` (big-endian). `None` for an even or longer than 4096-bit modulus, or
    /// an exponent longer than [`MAX_EXPONENT_BITS`].
    pub fn new(n: &[u8], e: &[u8]) -> Option<RsaVerifier> {
        let e_start = e.iter().position(|b| *b != 0)?;
        let e = &e[e_start..];
        let e_bits = e.len() * 8 - e[0].leading_zeros() as usize;
        if e_bits > MAX_EXPONENT_BITS {
            return None;
        }
        let n_start = n.iter().position(|b| *b != 0)?;
        let n = &n[n_start..];
        let bits = n.len() * 8 - n[0].leading_zeros() as usize;
        if bits > 4096 {
            return None;
        }
        Some(RsaVerifier {
            modulus: Modulus::new(n)?,
            e: e.to_vec(),
            bits,
        })
    }

    /// Bit length of the modulus.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Bytes this verifier takes: its own size and its heap (the prepared modulus and the
    /// exponent): 1,035 bytes for a 2048-bit key with e = 65537, 1,947 for 4096 bits (on
    /// 64-bit targets; less in wasm32, where the vectors' headers are smaller).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.modulus.heap_bytes() + self.e.capacity()
    }

    /// Verifies `signature` over `message` with the padding and hash of `alg`.
    pub fn verify(&self, alg: RsaAlg, message: &[u8], signature: &[u8]) -> bool {
        let (hash, pss) = Hash::of(alg);
        if signature.len() != self.modulus.byte_len() {
            return false;
        }
        let Some(em) = self.modulus.pow(signature, &self.e) else {
            return false;
        };
        if pss {
            pss_ok(&em, self.bits, hash, message)
        } else {
            pkcs1_ok(&em, hash, message)
        }
    }
}

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

/// EMSA-PKCS1-v1_5 (RFC 8017 9.2): `em` (k bytes) must be exactly
/// `00 01 FF..FF 00 || DigestInfo prefix || H(message)`, with at least 8 bytes of FF.
fn pkcs1_ok(em: &[u8], hash: Hash, message: &[u8]) -> bool {
    let prefix = hash.digest_info_prefix();
    let t_len = prefix.len() + hash.len();
    let k = em.len();
    if k < t_len + 11 {
        return false;
    }
    let ps_end = k - t_len - 1;
    let digest = hash.digest(&[message]);
    em[0] == 0
        && em[1] == 1
        && em[2..ps_end].iter().all(|b| *b == 0xff)
        && em[ps_end] == 0
        && em[ps_end + 1..ps_end + 1 + prefix.len()] == *prefix
        && em[ps_end + 1 + prefix.len()..] == digest[..]
}

/// EMSA-PSS-VERIFY (RFC 8017 9.1.2) with MGF1 over the same hash and a salt as long as the
/// hash (RFC 7518 3.5). `m` is the k-byte result of the exponentiation.
fn pss_ok(m: &[u8], mod_bits: usize, hash: Hash, message: &[u8]) -> bool {
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    let h_len = hash.len();
    let s_len = h_len;
    // m has k = ceil(mod_bits / 8) bytes; EM is its last em_len bytes, the rest zero.
    let Some(lead) = m.len().checked_sub(em_len) else {
        return false;
    };
    if m[..lead].iter().any(|b| *b != 0) {
        return false;
    }
    let em = &m[lead..];
    if em_len < h_len + s_len + 2 || em[em_len - 1] != 0xbc {
        return false;
    }
    let db_len = em_len - h_len - 1;
    let (masked_db, rest) = em.split_at(db_len);
    let h = &rest[..h_len];
    let unused_bits = 8 * em_len - em_bits;
    let top_mask = 0xffu8 >> unused_bits;
    if masked_db[0] & !top_mask != 0 {
        return false;
    }
    // DB = maskedDB xor MGF1(H, db_len)
    let mut db = masked_db.to_vec();
    let mut counter = 0u32;
    let mut offset = 0;
    while offset < db_len {
        let block = hash.digest(&[h, &counter.to_be_bytes()]);
        for (d, m) in db[offset..].iter_mut().zip(&block) {
            *d ^= m;
        }
        offset += h_len;
        counter += 1;
    }
    db[0] &= top_mask;
    let ps_len = em_len - h_len - s_len - 2;
    if db[..ps_len].iter().any(|b| *b != 0) || db[ps_len] != 1 {
        return false;
    }
    let salt = &db[ps_len + 1..];
    let m_hash = hash.digest(&[message]);
    hash.digest(&[&[0u8; 8], &m_hash, salt])[..] == *h
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
        (
            input,
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap(),
        )
    }

    #[test]
    fn verifies_what_jwt_simple_signs_at_every_size() {
        for bits in [2048, 3072, 4096] {
            let (key, token) = key_and_token(bits);
            let (input, sig) = split(&token);
            assert!(
                verifier(&key).verify(RsaAlg::Rs256, input.as_bytes(), &sig),
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
        assert!(!v.verify(RsaAlg::Rs256, input.as_bytes(), &bad));
        assert!(!v.verify(RsaAlg::Rs256, b"other input", &sig));
        assert!(
            !v.verify(RsaAlg::Rs384, input.as_bytes(), &sig),
            "another hash"
        );
        assert!(
            !v.verify(RsaAlg::Rs256, input.as_bytes(), &sig[1..]),
            "short"
        );
        assert!(
            !v.verify(RsaAlg::Rs256, input.as_bytes(), &[0xff; 256]),
            "not below n"
        );
        assert!(!v.verify(RsaAlg::Rs256, input.as_bytes(), &[0; 256]));
    }

    #[test]
    fn refuses_keys_it_cannot_serve() {
        assert!(
            RsaVerifier::new(&[0xc4; 256], &[1, 0, 1]).is_none(),
            "an even modulus"
        );
        assert!(
            RsaVerifier::new(&[0xc5; 513], &[1, 0, 1]).is_none(),
            "over 4096 bits"
        );
        assert!(
            RsaVerifier::new(&[0xc5; 256], &[2, 0, 0, 0, 1]).is_none(),
            "e over 33 bits"
        );
        assert!(
            RsaVerifier::new(&[0xc5; 256], &[1, 0, 0, 0, 1]).is_some(),
            "e of 33 bits"
        );
        assert!(RsaVerifier::new(&[0xc5; 256], &[0]).is_none(), "e zero");
        assert!(RsaVerifier::new(&[0xc5; 256], &[3]).is_some());
        assert!(
            RsaVerifier::new(&[0xc5; 128], &[1, 0, 1]).is_some(),
            "the policy sets the minimum size"
        );
    }

    #[test]
    fn memory_bytes_count_the_prepared_modulus_and_the_exponent() {
        // n, its limbs reversed and R^2 mod n: three vectors of 27-bit limbs in u32s.
        for (bytes, limbs) in [(256, 76), (512, 152)] {
            let v = RsaVerifier::new(&vec![0xc5; bytes], &[1, 0, 1]).unwrap();
            assert_eq!(
                v.memory_bytes(),
                std::mem::size_of::<RsaVerifier>() + 3 * 4 * limbs + 3,
                "{} bits",
                v.bits()
            );
        }
    }

    #[test]
    fn pss_at_every_hash() {
        fn check<K: RSAKeyPairLike>(key: K, alg: RsaAlg) {
            let token = key.sign(Claims::create(Duration::from_hours(1))).unwrap();
            let c = key.key_pair().public_key().to_components();
            let v = RsaVerifier::new(&c.n, &c.e).unwrap();
            let (input, sig) = split(&token);
            assert!(v.verify(alg, input.as_bytes(), &sig), "{:?}", alg);
            assert!(!v.verify(alg, b"other input", &sig), "{:?}", alg);
            let other = if alg == RsaAlg::Ps256 {
                RsaAlg::Ps384
            } else {
                RsaAlg::Ps256
            };
            assert!(!v.verify(other, input.as_bytes(), &sig), "{:?}", alg);
            let pkcs1 = match alg {
                RsaAlg::Ps256 => RsaAlg::Rs256,
                RsaAlg::Ps384 => RsaAlg::Rs384,
                _ => RsaAlg::Rs512,
            };
            assert!(!v.verify(pkcs1, input.as_bytes(), &sig), "{:?}", alg);
        }
        check(PS256KeyPair::generate(2048).unwrap(), RsaAlg::Ps256);
        check(PS384KeyPair::generate(3072).unwrap(), RsaAlg::Ps384);
        check(PS512KeyPair::generate(2048).unwrap(), RsaAlg::Ps512);
    }

    #[test]
    fn pss_with_a_modulus_of_one_bit_past_a_byte() {
        // emLen is one byte shorter than the modulus when its length is 8k + 1 bits.
        use rsa::signature::{RandomizedSigner, SignatureEncoding};
        use rsa::traits::PublicKeyParts;
        let mut rng = rand::thread_rng();
        let key = rsa::RsaPrivateKey::new(&mut rng, 2049).unwrap();
        let signer = rsa::pss::SigningKey::<rsa::sha2::Sha256>::new(key.clone());
        let sig = signer.sign_with_rng(&mut rng, b"header.payload").to_vec();
        let v = RsaVerifier::new(&key.n().to_bytes_be(), &key.e().to_bytes_be()).unwrap();
        assert_eq!(v.bits(), 2049);
        assert!(v.verify(RsaAlg::Ps256, b"header.payload", &sig));
        assert!(!v.verify(RsaAlg::Ps256, b"header.payloaD", &sig));
    }

    #[test]
    fn rs384_and_rs512() {
        let key = RS384KeyPair::generate(2048).unwrap();
        let token = key.sign(Claims::create(Duration::from_hours(1))).unwrap();
        let c = key.public_key().to_components();
        let (input, sig) = split(&token);
        assert!(RsaVerifier::new(&c.n, &c.e).unwrap().verify(
            RsaAlg::Rs384,
            input.as_bytes(),
            &sig
        ));
        let key = RS512KeyPair::generate(2048).unwrap();
        let token = key.sign(Claims::create(Duration::from_hours(1))).unwrap();
        let c = key.public_key().to_components();
        let (input, sig) = split(&token);
        assert!(RsaVerifier::new(&c.n, &c.e).unwrap().verify(
            RsaAlg::Rs512,
            input.as_bytes(),
            &sig
        ));
    }
}
