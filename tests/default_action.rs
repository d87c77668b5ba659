#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! What happens to requests no rule matches: deny (the default), allow, or authenticated.

use serde_json::json;
use tokengate_testkit::mint::{self, claims};
use tokengate_testkit::{expect, Envoy, SigningKey};

fn start(default: Option<&str>) -> (Envoy, SigningKey) {
    let key = SigningKey::es256("k");
    let mut config = json!({
        "providers": {"main": {"issuer": "https://i.test", "jwks": mint::jwks(&[&key])}},
        "rules": [{"match": {"path": {"prefix": "/api"}}}]
    });
    if let Some(d) = default {
        config["default"] = json!(d);
    }
    (Envoy::start(&config), key)
}

#[test]
fn unmatched_requests_are_denied_unless_configured_otherwise() {
    let (envoy, key) = start(None);
    let token = key.sign(&claims("https://i.test", &[], json!({})));
    expect::passed(&envoy.get_with_token("/api/x", &token));
    expect::refused(
        &envoy.get_with_token("/other", &token),
        403,
        "access_denied",
        "no rule allows GET /other",
    );
}

#[test]
fn default_allow_lets_unmatched_requests_through_without_a_token() {
    let (envoy, _) = start(Some("allow"));
    expect::passed(&envoy.get("/other", &[]));
    expect::refused(&envoy.get("/api/x", &[]), 401, "missing_token", "");
}

#[test]
fn default_authenticated_needs_any_valid_token() {
    let (envoy, key) = start(Some("authenticated"));
    expect::refused(&envoy.get("/other", &[]), 401, "missing_token", "");
    expect::passed(&envoy.get_with_token(
        "/other",
        &key.sign(&claims("https://i.test", &[], json!({}))),
    ));
}
