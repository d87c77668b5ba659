#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! What OIDC discovery may point tokengate at, in a real Envoy against the dev IdP: a
//! `jwks_uri` or `introspection_endpoint` from discovery is used only over `https` (unless the
//! issuer itself is `http`) and on the issuer's host or a host the provider lists in
//! `remote_jwks.allowed_hosts`; anything else is refused (a `malformed` fetch failure, a log
//! line) and never called.
//!
//! The dev IdP's issuer here is `https://idp.test`; Envoy's `idp` cluster reaches it on its
//! loopback port without TLS (the URL's scheme and host only decide what tokengate accepts and
//! the `:authority` it sends), so every URL discovery names is served by the same dev IdP and
//! its hit counters show which were called.

use serde_json::{json, Value};
use tokengate_testkit::devidp::{ClientConfig, Endpoint, RunningIdp};
use tokengate_testkit::envoy::EnvoyOptions;
use tokengate_testkit::idp::{self, PROJECT};
use tokengate_testkit::{expect, Envoy, Response};

const ISSUER: &str = "https://idp.test";
const SECRET: &str = "ZGlzY292ZXJ5LXRydXN0LXNlY3JldC0x";
const MALFORMED: &str = "wasmcustom.tokengate.jwks.zitadel.fetch_failure.malformed";

/// The dev IdP as `https://idp.test`, with a JWT client (`svc-reader`), an opaque-token client
/// (`opaque-reader`) and an introspection client (`tokengate-basic`).
fn start_idp() -> RunningIdp {
    tokengate_testkit::leaks::register_secret(SECRET);
    let mut clients = idp::default_clients();
    clients.extend(
        serde_json::from_value::<Vec<ClientConfig>>(json!([
            {"client_id": "opaque-reader", "client_secret": "r", "token_type": "opaque", "roles": {"reader": ["org-1"]}},
            {"client_id": "tokengate-basic", "client_secret": SECRET}
        ]))
        .unwrap(),
    );
    let mut config = idp::config(clients, 300);
    config.issuer = Some(ISSUER.into());
    RunningIdp::start(config, "127.0.0.1:0").unwrap()
}

/// One ZITADEL-like provider whose keys (and, with `introspection`, introspection endpoint)
/// come from discovery at `https://idp.test`; `remote` is merged into `remote_jwks`.
fn config(remote: Value, introspection: bool) -> Value {
    let mut remote_jwks =
        json!({"cluster": "idp", "startup_wait_ms": 1000, "max_backoff_seconds": 1});
    for (k, v) in remote.as_object().unwrap() {
        remote_jwks[k] = v.clone();
    }
    let mut provider =
        json!({"issuer": ISSUER, "zitadel": {"project_id": PROJECT}, "remote_jwks": remote_jwks});
    if introspection {
        provider["introspection"] = json!({
            "client_id": "tokengate-basic",
            "client_secret_env": "TOKENGATE_INTROSPECTION_SECRET",
            "timeout_ms": 1000
        });
    }
    json!({"providers": {"zitadel": provider}, "default": "authenticated"})
}

fn start_envoy(idp: &RunningIdp, remote: Value, introspection: bool) -> Envoy {
    let options = EnvoyOptions::new(&config(remote, introspection))
        .cluster("idp", idp.port())
        .vm_env("TOKENGATE_INTROSPECTION_SECRET", SECRET);
    Envoy::start_with(options)
}

/// Discovery names `url` as the provider's `jwks_uri`.
fn discovered_jwks_uri(idp: &RunningIdp, url: &str) {
    idp.idp()
        .set_discovery_override("jwks_uri", Some(url.to_owned()));
}

#[track_caller]
fn keys_unavailable(r: &Response) {
    expect::refused(
        r,
        503,
        "temporarily_unavailable",
        "signing keys of provider zitadel are not available",
    );
}

/// A JWT from the IdP gets 503 (no keys), the IdP's keys endpoint was never called, and the
/// refusal was counted as a malformed fetch and logged with its reason (a line naming the
/// `jwks_uri` and containing `why`).
#[track_caller]
fn jwks_uri_refused(idp: &RunningIdp, envoy: &Envoy, why: &str) {
    keys_unavailable(&envoy.get_with_token("/", &idp::token(idp, "svc-reader")));
    assert!(
        idp.idp().hits(Endpoint::Discovery) >= 1,
        "discovery was asked"
    );
    assert_eq!(
        idp.idp().hits(Endpoint::Keys),
        0,
        "keys were fetched from the URL discovery named"
    );
    assert!(envoy.counter(MALFORMED) > 0, "{MALFORMED} did not go up");
    let log = envoy.log();
    assert!(
        log.lines()
            .any(|l| l.contains("tokengate") && l.contains("jwks_uri") && l.contains(why)),
        "no log line says why the jwks_uri was refused ({why})"
    );
}

#[test]
fn discovered_jwks_uri_on_a_foreign_host_is_refused() {
    let idp = start_idp();
    discovered_jwks_uri(&idp, "https://keys.evil.test/oauth/v2/keys");
    let envoy = start_envoy(&idp, json!({}), false);
    jwks_uri_refused(&idp, &envoy, "keys.evil.test");
}

#[test]
fn discovered_jwks_uri_on_a_subdomain_of_the_issuers_host_is_refused() {
    let idp = start_idp();
    discovered_jwks_uri(&idp, "https://keys.idp.test/oauth/v2/keys");
    let envoy = start_envoy(&idp, json!({}), false);
    jwks_uri_refused(&idp, &envoy, "keys.idp.test");
}

#[test]
fn discovered_jwks_uri_over_plain_http_is_refused_for_an_https_issuer() {
    let idp = start_idp();
    discovered_jwks_uri(&idp, "http://idp.test/oauth/v2/keys");
    let envoy = start_envoy(&idp, json!({}), false);
    jwks_uri_refused(&idp, &envoy, "https");
}

#[test]
fn discovered_jwks_uri_on_a_listed_host_is_used() {
    let idp = start_idp();
    discovered_jwks_uri(&idp, "https://keys.idp.test/oauth/v2/keys");
    let envoy = start_envoy(&idp, json!({"allowed_hosts": ["keys.idp.test"]}), false);
    expect::passed(&envoy.get_with_token("/", &idp::token(&idp, "svc-reader")));
    assert_eq!(idp.idp().hits(Endpoint::Keys), 1);
    assert_eq!(envoy.counter(MALFORMED), 0);
}

#[test]
fn discovered_jwks_uri_on_the_issuers_host_is_used() {
    let idp = start_idp();
    assert_eq!(
        idp.idp().discovery()["jwks_uri"],
        "https://idp.test/oauth/v2/keys"
    );
    let envoy = start_envoy(&idp, json!({}), false);
    expect::passed(&envoy.get_with_token("/", &idp::token(&idp, "svc-reader")));
    assert_eq!(idp.idp().hits(Endpoint::Keys), 1);
    assert_eq!(envoy.counter(MALFORMED), 0);
}

#[test]
fn discovered_jwks_uri_on_the_issuers_host_in_another_case_and_port_is_used() {
    let idp = start_idp();
    discovered_jwks_uri(&idp, "https://IDP.Test:8443/oauth/v2/keys");
    let envoy = start_envoy(&idp, json!({}), false);
    expect::passed(&envoy.get_with_token("/", &idp::token(&idp, "svc-reader")));
    assert_eq!(idp.idp().hits(Endpoint::Keys), 1);
    assert_eq!(envoy.counter(MALFORMED), 0);
}

#[test]
fn discovered_introspection_endpoint_on_a_foreign_host_is_refused() {
    let idp = start_idp();
    idp.idp().set_discovery_override(
        "introspection_endpoint",
        Some("https://evil.test/oauth/v2/introspect".into()),
    );
    let envoy = start_envoy(&idp, json!({}), true);
    introspection_endpoint_refused(&idp, &envoy, "evil.test");
}

/// An opaque token of the IdP: refused with 503, never sent to the introspection endpoint
/// discovery named, the refusal counted as a malformed fetch and logged with `why`.
#[track_caller]
fn introspection_endpoint_refused(idp: &RunningIdp, envoy: &Envoy, why: &str) {
    let r = envoy.get_with_token("/", &idp::token(idp, "opaque-reader"));
    assert!(!r.reached_upstream(), "the opaque token was let through");
    assert_eq!(r.status, 503, "status; body: {}", r.body);
    assert_eq!(r.json()["error"], "temporarily_unavailable", "{}", r.body);
    assert_eq!(
        idp.idp().hits(Endpoint::Introspect),
        0,
        "the token was sent to the introspection endpoint discovery named"
    );
    assert!(envoy.counter(MALFORMED) > 0, "{MALFORMED} did not go up");
    assert!(
        envoy.log().lines().any(|l| l.contains("tokengate")
            && l.contains("introspection_endpoint")
            && l.contains(why)),
        "no log line says why the introspection_endpoint was refused ({why})"
    );
}

#[test]
fn discovered_introspection_endpoint_over_plain_http_is_refused_for_an_https_issuer() {
    let idp = start_idp();
    idp.idp().set_discovery_override(
        "introspection_endpoint",
        Some("http://idp.test/oauth/v2/introspect".into()),
    );
    let envoy = start_envoy(&idp, json!({}), true);
    introspection_endpoint_refused(&idp, &envoy, "https");
}

#[test]
fn discovered_introspection_endpoint_on_a_listed_host_is_used() {
    let idp = start_idp();
    idp.idp().set_discovery_override(
        "introspection_endpoint",
        Some("https://introspect.idp.test/oauth/v2/introspect".into()),
    );
    let envoy = start_envoy(
        &idp,
        json!({"allowed_hosts": ["introspect.idp.test"]}),
        true,
    );
    expect::passed(&envoy.get_with_token("/", &idp::token(&idp, "opaque-reader")));
    assert_eq!(idp.idp().hits(Endpoint::Introspect), 1);
    assert_eq!(envoy.counter(MALFORMED), 0);
}
