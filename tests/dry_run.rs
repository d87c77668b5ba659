#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Dry-run mode in a real Envoy: decide, log and count, but let requests through with the
//! decision in a header; for the whole filter or for one rule.

use serde_json::json;
use tokengate_testkit::mint::{self, claims};
use tokengate_testkit::{expect, Envoy, SigningKey};

const ISS: &str = "https://issuer.test";

#[test]
fn whole_filter_dry_run_lets_refusals_through_and_reports_them() {
    let key = SigningKey::es256("k");
    let envoy = Envoy::start(&json!({
        "dry_run": true,
        "providers": {"main": {"issuer": ISS, "audiences": ["api"], "jwks": mint::jwks(&[&key])}},
        "rules": [{"name": "admin", "match": {"path": {"prefix": "/admin"}}, "scopes": {"any_of": ["admin"]}}],
        "default": "deny",
        "forward": {"claims": [{"claim": "sub", "header": "x-sub"}]}
    }));

    let r = envoy.get("/admin", &[]);
    expect::passed(&r);
    assert_eq!(
        r.upstream_header("x-tokengate-dry-run").as_deref(),
        Some("deny; status=401; reason=missing; rule=admin")
    );

    let user = key.sign(&claims(ISS, &["api"], json!({"scope": "read"})));
    let r = envoy.get_with_token("/admin", &user);
    expect::passed(&r);
    assert_eq!(
        r.upstream_header("x-tokengate-dry-run").as_deref(),
        Some("deny; status=403; reason=forbidden; rule=admin")
    );
    assert_eq!(
        r.upstream_header("x-sub"),
        None,
        "no claims are forwarded for a request that would be refused"
    );

    let r = envoy.get_with_token("/elsewhere", &user);
    assert_eq!(
        r.upstream_header("x-tokengate-dry-run").as_deref(),
        Some("deny; status=403; reason=forbidden; rule=default")
    );

    let admin = key.sign(&claims(ISS, &["api"], json!({"scope": "admin"})));
    let r = envoy.get_with_token("/admin", &admin);
    expect::passed(&r);
    assert_eq!(
        r.upstream_header("x-tokengate-dry-run").as_deref(),
        Some("allow; rule=admin")
    );
    assert_eq!(r.upstream_header("x-sub").as_deref(), Some("user-1"));

    assert_eq!(
        envoy.counter("wasmcustom.tokengate.dry_run.would_deny.missing"),
        1
    );
    assert_eq!(
        envoy.counter("wasmcustom.tokengate.dry_run.would_deny.forbidden"),
        2
    );
    assert_eq!(envoy.counter("wasmcustom.tokengate.denied.forbidden"), 0);
    assert_eq!(envoy.counter("wasmcustom.tokengate.allowed"), 4);
    let log = envoy.log();
    assert!(
        log.contains("dry_run is on"),
        "the mode is announced at configure"
    );
    assert!(
        log.contains("dry-run, would deny 403 (rule admin)"),
        "would-be refusals are logged"
    );
}

#[test]
fn a_single_rule_can_be_in_dry_run() {
    let key = SigningKey::es256("k");
    let envoy = Envoy::start(&json!({
        "providers": {"main": {"issuer": ISS, "audiences": ["api"], "jwks": mint::jwks(&[&key])}},
        "rules": [
            {"name": "trial", "match": {"path": {"prefix": "/new"}}, "roles": {"any_of": ["beta"]}, "dry_run": true},
            {"name": "enforced", "match": {"path": {"prefix": "/old"}}, "roles": {"any_of": ["beta"]}}
        ]
    }));
    let token = key.sign(&claims(ISS, &["api"], json!({})));
    let r = envoy.get_with_token("/new", &token);
    expect::passed(&r);
    assert_eq!(
        r.upstream_header("x-tokengate-dry-run").as_deref(),
        Some("deny; status=403; reason=forbidden; rule=trial")
    );
    expect::refused(
        &envoy.get_with_token("/old", &token),
        403,
        "insufficient_scope",
        "lacks the roles",
    );
}
