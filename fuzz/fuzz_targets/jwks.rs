//! JWK Set parsing on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tokengate_core::jwks::{parse_jwks_str, KeyPolicy};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_jwks_str(&text, &KeyPolicy::default());
    let _ = parse_jwks_str(&text, &KeyPolicy { allow_hmac: true, min_rsa_bits: 0, ..KeyPolicy::default() });
});
