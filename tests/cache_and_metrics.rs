#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! The verified-token cache and the counters, observed through Envoy's admin endpoints.

use serde_json::json;
use std::time::Duration;
use tokengate_testkit::mint::{self, b64, claims};
use tokengate_testkit::{expect, Envoy, SigningKey};

const ISS: &str = "https://issuer.test";

fn start(key: &SigningKey, cache: serde_json::Value) -> Envoy {
    Envoy::start(&json!({
        "providers": {
            "main": {"issuer": ISS, "audiences": ["api"], "jwks": mint::jwks(&[key]), "clock_skew_seconds": 0}
        },
        "rules": [{"match": {"path": {"prefix": "/admin"}}, "scopes": {"any_of": ["admin"]}}],
        "default": "authenticated",
        "token_cache": cache
    }))
}

#[test]
fn counters_by_outcome_appear_in_stats_and_prometheus() {
    let key = SigningKey::rsa("RS256", "k");
    let envoy = start(&key, json!({}));
    let now = tokengate_testkit::now();
    let send = |t: &str| envoy.get_with_token("/x", t);
    expect::passed(&send(&key.sign(&claims(ISS, &["api"], json!({})))));
    envoy.get("/x", &[]);
    send("garbage");
    let valid = key.sign(&claims(ISS, &["api"], json!({})));
    let (input, _) = valid.rsplit_once('.').unwrap();
    send(&format!("{}.{}", input, b64(&[7u8; 256])));
    send(&key.sign(&claims(
        ISS,
        &["api"],
        json!({"exp": now - 10, "iat": now - 100, "nbf": now - 100}),
    )));
    send(&key.sign(&claims(ISS, &["api"], json!({"nbf": now + 3600}))));
    send(&key.sign(&claims("https://evil.test", &["api"], json!({}))));
    send(&key.sign(&claims(ISS, &["other"], json!({}))));
    envoy.get_with_token("/admin", &valid);

    for (name, want) in [
        ("allowed", 1),
        ("denied.missing", 1),
        ("denied.malformed", 1),
        ("denied.signature", 1),
        ("denied.expired", 1),
        ("denied.not_yet_valid", 1),
        ("denied.issuer", 1),
        ("denied.audience", 1),
        ("denied.forbidden", 1),
    ] {
        assert_eq!(
            envoy.counter(&format!("wasmcustom.tokengate.{}", name)),
            want,
            "/stats tokengate.{}",
            name
        );
    }
    let prometheus = envoy.admin("/stats/prometheus").body;
    for line in [
        "tokengate_allowed{} 1",
        "tokengate_denied_expired{} 1",
        "tokengate_denied_forbidden{} 1",
    ] {
        assert!(
            prometheus.lines().any(|l| l == line),
            "/stats/prometheus lacks {:?}",
            line
        );
    }
}

#[test]
fn a_repeated_token_is_served_from_the_cache() {
    let key = SigningKey::es256("k");
    let envoy = start(&key, json!({}));
    let token = key.sign(&claims(ISS, &["api"], json!({})));
    for _ in 0..5 {
        expect::passed(&envoy.get_with_token("/x", &token));
    }
    assert_eq!(envoy.counter("wasmcustom.tokengate.jwt_cache.misses"), 1);
    assert_eq!(envoy.counter("wasmcustom.tokengate.jwt_cache.hits"), 4);
}

#[test]
fn cached_tokens_still_expire() {
    let key = SigningKey::es256("k");
    let envoy = start(&key, json!({}));
    let now = tokengate_testkit::now();
    let token = key.sign(&claims(ISS, &["api"], json!({"exp": now + 2})));
    expect::passed(&envoy.get_with_token("/x", &token));
    expect::passed(&envoy.get_with_token("/x", &token));
    std::thread::sleep(Duration::from_millis(
        (now + 3 - tokengate_testkit::now()) * 1000 + 1100,
    ));
    expect::invalid_token(&envoy.get_with_token("/x", &token), "has expired");
}

#[test]
fn the_cache_is_bounded_by_entries() {
    let key = SigningKey::es256("k");
    let envoy = start(&key, json!({"max_entries": 2}));
    let tokens: Vec<String> = (0..3)
        .map(|i| key.sign(&claims(ISS, &["api"], json!({"sub": format!("u{}", i)}))))
        .collect();
    for t in &tokens {
        expect::passed(&envoy.get_with_token("/x", t));
    }
    // The oldest entry was evicted for the third; the newest is still there.
    expect::passed(&envoy.get_with_token("/x", &tokens[2]));
    expect::passed(&envoy.get_with_token("/x", &tokens[0]));
    assert_eq!(envoy.counter("wasmcustom.tokengate.jwt_cache.hits"), 1);
    assert_eq!(envoy.counter("wasmcustom.tokengate.jwt_cache.misses"), 4);
}

#[test]
fn cache_entries_live_at_most_the_ttl() {
    let key = SigningKey::es256("k");
    let envoy = start(&key, json!({"ttl_seconds": 1}));
    let token = key.sign(&claims(ISS, &["api"], json!({})));
    expect::passed(&envoy.get_with_token("/x", &token));
    std::thread::sleep(Duration::from_millis(2100));
    expect::passed(&envoy.get_with_token("/x", &token));
    assert_eq!(envoy.counter("wasmcustom.tokengate.jwt_cache.misses"), 2);
    assert_eq!(envoy.counter("wasmcustom.tokengate.jwt_cache.hits"), 0);
}

#[test]
fn a_disabled_cache_verifies_every_time() {
    let key = SigningKey::es256("k");
    let envoy = start(&key, json!({"max_entries": 0}));
    let token = key.sign(&claims(ISS, &["api"], json!({})));
    for _ in 0..3 {
        expect::passed(&envoy.get_with_token("/x", &token));
    }
    assert_eq!(envoy.counter("wasmcustom.tokengate.jwt_cache.misses"), 3);
}

#[test]
fn allowed_requests_are_logged_at_trace_level_with_provider_and_kid() {
    // The filter formats this detail only when Envoy's wasm log level is trace (the tests'
    // default): on a cache miss and on a hit alike.
    let key = SigningKey::rsa("RS256", "trace-kid");
    let envoy = start(&key, json!({}));
    let token = key.sign(&claims(ISS, &["api"], json!({})));
    for _ in 0..2 {
        expect::passed(&envoy.get_with_token("/x", &token));
    }
    assert_eq!(envoy.counter("wasmcustom.tokengate.jwt_cache.hits"), 1);
    let lines = envoy
        .log()
        .lines()
        .filter(|l| l.contains("token of provider main accepted (kid \"trace-kid\")"))
        .count();
    assert_eq!(lines, 2, "one trace line per allowed request");
}

#[test]
fn a_token_that_is_not_a_jwt_is_no_introspection_miss_where_nothing_introspects() {
    let key = SigningKey::es256("k");
    let envoy = Envoy::start(&json!({
        "providers": {"main": {"issuer": ISS, "jwks": mint::jwks(&[&key])}},
        "default": "authenticated"
    }));
    expect::invalid_token(&envoy.get_with_token("/", "not-a-jwt"), "");
    assert_eq!(
        envoy.counter("wasmcustom.tokengate.introspection.cache_misses"),
        0
    );
    assert_eq!(envoy.counter("wasmcustom.tokengate.denied.malformed"), 1);
}
