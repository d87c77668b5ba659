//! JWK Set parsing on arbitrary text: alone, with small bounds, and as a new version of the
//! seed set (unchanged JWKs taken over from it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use tokengate_core::keys::jwks::{parse_jwks_str, read_jwks, KeyPolicy, KeySet};

thread_local! {
    static PREVIOUS: RefCell<Option<KeySet>> = const { RefCell::new(None) };
}

const JWKS: &str = include_str!("../seeds/jwks.json");

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_jwks_str(&text, &KeyPolicy::default());
    let lax = KeyPolicy {
        allow_hmac: true,
        min_rsa_bits: 0,
        ..KeyPolicy::default()
    };
    let _ = parse_jwks_str(&text, &lax);
    let tight = KeyPolicy {
        max_keys: 2,
        max_memory_bytes: 4096,
        ..lax
    };
    let _ = read_jwks(&text, &tight, None);
    PREVIOUS.with(|previous| {
        let mut previous = previous.borrow_mut();
        let seed = previous.get_or_insert_with(|| {
            parse_jwks_str(JWKS, &lax)
                .map(|(k, _)| k)
                .unwrap_or_default()
        });
        let _ = read_jwks(&text, &lax, Some(seed));
    });
});
