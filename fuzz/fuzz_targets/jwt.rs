//! Token parsing and signature checks on arbitrary tokens, against a fixed key set with one key
//! of every family.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use tokengate_core::keys::jwks::{parse_jwks_str, KeyPolicy, KeySet};
use tokengate_core::token::alg::AlgSet;
use tokengate_core::{token::jwt, token::verify};

thread_local! {
    static KEYS: RefCell<Option<KeySet>> = const { RefCell::new(None) };
}

const JWKS: &str = include_str!("../seeds/jwks.json");

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(parsed) = jwt::parse(&text) else {
        return;
    };
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        let policy = KeyPolicy {
            allow_hmac: true,
            allowed: AlgSet::asymmetric()
                .iter()
                .chain(tokengate_core::token::alg::Alg::ALL)
                .collect(),
            min_rsa_bits: 2048,
            ..KeyPolicy::default()
        };
        let set = keys.get_or_insert_with(|| {
            parse_jwks_str(JWKS, &policy)
                .map(|(k, _)| k)
                .unwrap_or_default()
        });
        let _ = verify::verify_signature(&parsed, set, policy.allowed);
    });
    let _ = verify::check_time(parsed.claims.exp, parsed.claims.nbf, 1_800_000_000, 60);
});
