//! Base64url (RFC 4648 section 5) as JOSE uses it.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};

/// Lenient about `=` padding only; used for key material from a JWK Set, where some
/// providers pad their values.
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Strict decoding for token segments: unpadded, canonical, no whitespace (RFC 7515).
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

/// Decoding for JWK members: padding optional, otherwise strict.
pub fn decode_key_member(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_ANY_PAD.decode(text)
}

pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_decoding_is_strict() {
        assert_eq!(decode("eyJh").unwrap(), b"{\"a");
        assert!(decode("eyJ=").is_err(), "padding");
        assert!(decode("ey+/").is_err(), "standard alphabet");
        assert!(decode("ey J").is_err(), "whitespace");
        assert!(decode("eyK").is_err(), "non-canonical trailing bits");
    }

    #[test]
    fn key_members_may_be_padded() {
        assert_eq!(decode_key_member("AQAB").unwrap(), vec![1, 0, 1]);
        assert_eq!(decode_key_member("AQ==").unwrap(), vec![1]);
        assert_eq!(decode_key_member("AQ").unwrap(), vec![1]);
    }
}
