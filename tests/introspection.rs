#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Opaque tokens in a real Envoy against the dev IdP: RFC 7662 introspection with
//! client_secret_basic or private_key_jwt (credentials from the VM environment), cached
//! answers, one callout per token however many requests wait, revocation of JWTs, and
//! failures answered with 503.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokengate_testkit::devidp::{ClientConfig, Endpoint, Fault, RunningIdp};
use tokengate_testkit::envoy::EnvoyOptions;
use tokengate_testkit::idp::{self, PROJECT};
use tokengate_testkit::{expect, Envoy, Response};

const SECRET: &str = "Zk9wQ2x3b3RxeW1hbGZ0eHc0b3R5d2p1";
const KEY_ID: &str = "81693565968962154";

struct Setup {
    idp: RunningIdp,
    key_file: String,
}

/// The dev IdP with opaque-token clients and two introspection clients: `tokengate-basic`
/// (secret) and `tokengate-jwt` (key file).
fn start_idp() -> Setup {
    let dir = tokengate_testkit::repo_root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("key-{}-{}.json", std::process::id(), rand_suffix()));
    let key_file_json = devidp::idp::new_key_file("tokengate-jwt", KEY_ID);
    for line in key_file_json["key"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
    {
        tokengate_testkit::leaks::register_secret(line);
    }
    tokengate_testkit::leaks::register_secret(SECRET);
    let key_file = key_file_json.to_string();
    std::fs::write(&path, &key_file).unwrap();
    let clients: Vec<ClientConfig> = serde_json::from_value(json!([
        {"client_id": "opaque-admin", "client_secret": "a", "token_type": "opaque",
         "roles": {"admin": ["org-1"]}, "permissions": ["posts:write"], "scope": "openid orders:read"},
        {"client_id": "opaque-reader", "client_secret": "r", "token_type": "opaque", "roles": {"reader": ["org-1"]}},
        {"client_id": "jwt-admin", "client_secret": "j", "roles": {"admin": ["org-1"]}},
        {"client_id": "tokengate-basic", "client_secret": SECRET},
        {"client_id": "tokengate-jwt", "key_file": path.display().to_string()}
    ]))
    .unwrap();
    Setup {
        idp: RunningIdp::start(idp::config(clients, 300), "127.0.0.1:0").unwrap(),
        key_file,
    }
}

use tokengate_testkit::devidp;

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// tokengate's configuration: keys by JWKS uri, introspection with Basic credentials from
/// the VM environment unless `introspection` overrides fields.
fn config(idp: &RunningIdp, introspection: Value) -> Value {
    let mut section = json!({
        "endpoint": format!("{}/oauth/v2/introspect", idp.issuer()),
        "client_id": "tokengate-basic",
        "client_secret_env": "TOKENGATE_INTROSPECTION_SECRET",
        "timeout_ms": 700,
    });
    for (k, v) in introspection.as_object().unwrap() {
        if v.is_null() {
            section.as_object_mut().unwrap().remove(k);
        } else {
            section[k] = v.clone();
        }
    }
    json!({
        "providers": {"zitadel": {
            "issuer": idp.issuer(),
            "zitadel": {"project_id": PROJECT},
            "remote_jwks": {"cluster": "idp", "uri": format!("{}/oauth/v2/keys", idp.issuer())},
            "introspection": section
        }},
        "rules": [{"match": {"path": {"prefix": "/admin"}}, "roles": {"any_of": ["admin"]}}],
        "default": "authenticated",
        "forward": {"roles_header": "x-roles", "permissions_header": "x-permissions", "scopes_header": "x-scopes",
                    "claims": [{"claim": "sub", "header": "x-sub"}]}
    })
}

fn start_envoy(setup: &Setup, introspection: Value, secret: &str) -> Envoy {
    let options = EnvoyOptions::new(&config(&setup.idp, introspection))
        .cluster("idp", setup.idp.port())
        .vm_env("TOKENGATE_INTROSPECTION_SECRET", secret)
        .vm_env("TOKENGATE_KEY_FILE", &setup.key_file);
    Envoy::start_with(options)
}

fn token(setup: &Setup, client: &str) -> String {
    idp::token(&setup.idp, client)
}

fn introspections(setup: &Setup) -> u64 {
    setup.idp.idp().hits(Endpoint::Introspect)
}

#[track_caller]
fn unavailable(r: &Response) {
    expect::refused(
        r,
        503,
        "temporarily_unavailable",
        "cannot be introspected now",
    );
    assert!(r.header("retry-after").is_some(), "Retry-After");
}

#[test]
fn opaque_token_with_the_role_is_admitted_and_its_claims_reach_the_policy() {
    let setup = start_idp();
    let envoy = start_envoy(&setup, json!({}), SECRET);
    let admin = token(&setup, "opaque-admin");
    assert!(!admin.contains('.'), "an opaque token");
    let r = envoy.get_with_token("/admin/users", &admin);
    expect::passed(&r);
    assert_eq!(r.upstream_header("x-roles").as_deref(), Some("admin"));
    assert_eq!(
        r.upstream_header("x-permissions").as_deref(),
        Some("posts:write")
    );
    assert_eq!(
        r.upstream_header("x-scopes").as_deref(),
        Some("openid,orders:read")
    );
    assert!(r.upstream_header("x-sub").is_some());
    assert_eq!(
        envoy.counter("wasmcustom.tokengate.introspection.zitadel.active"),
        1
    );
}

#[test]
fn opaque_token_without_the_role_is_forbidden() {
    let setup = start_idp();
    let envoy = start_envoy(&setup, json!({}), SECRET);
    let r = envoy.get_with_token("/admin/users", &token(&setup, "opaque-reader"));
    expect::refused(&r, 403, "insufficient_scope", "lacks the roles");
}

#[test]
fn inactive_expired_and_revoked_opaque_tokens_are_refused() {
    let setup = start_idp();
    let envoy = start_envoy(&setup, json!({}), SECRET);
    expect::invalid_token(
        &envoy.get_with_token("/", "made-up-opaque-token"),
        "not active",
    );
    let expired = setup
        .idp
        .idp()
        .mint(
            "opaque-admin",
            &json!({"exp": devidp::idp::now() - 5}),
            None,
        )
        .unwrap();
    expect::invalid_token(&envoy.get_with_token("/", &expired), "not active");
    let revoked = token(&setup, "opaque-admin");
    setup.idp.idp().revoke_token(&revoked);
    expect::invalid_token(&envoy.get_with_token("/", &revoked), "not active");
    assert_eq!(envoy.counter("wasmcustom.tokengate.denied.inactive"), 3);
    assert_eq!(
        envoy.counter("wasmcustom.tokengate.introspection.zitadel.inactive"),
        3
    );
}

#[test]
fn one_call_serves_many_sequential_requests_until_the_ttl_ends() {
    let setup = start_idp();
    let envoy = start_envoy(&setup, json!({"cache_ttl_seconds": 2}), SECRET);
    let t = token(&setup, "opaque-admin");
    let started = Instant::now();
    for _ in 0..100 {
        expect::passed(&envoy.get_with_token("/", &t));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the loop must finish within the TTL"
    );
    assert_eq!(introspections(&setup), 1);
    assert_eq!(
        envoy.counter("wasmcustom.tokengate.introspection.cache_misses"),
        1
    );
    assert_eq!(
        envoy.counter("wasmcustom.tokengate.introspection.cache_hits"),
        99
    );
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(started.elapsed()));
    expect::passed(&envoy.get_with_token("/", &t));
    assert_eq!(introspections(&setup), 2, "one more call after the TTL");
}

#[test]
fn concurrent_requests_with_a_new_token_share_one_call() {
    let setup = start_idp();
    setup
        .idp
        .idp()
        .set_fault(Endpoint::Introspect, Some(Fault::Slow(300)));
    let envoy = start_envoy(&setup, json!({}), SECRET);
    let t = token(&setup, "opaque-admin");
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| s.spawn(|| envoy.get_with_token("/", &t).status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", statuses);
    assert_eq!(introspections(&setup), 1);
}

#[test]
fn a_revoked_jwt_is_refused_within_the_cache_ttl() {
    let setup = start_idp();
    let envoy = start_envoy(
        &setup,
        json!({"introspect_jwts": true, "cache_ttl_seconds": 1}),
        SECRET,
    );
    let jwt = token(&setup, "jwt-admin");
    assert_eq!(jwt.matches('.').count(), 2);
    expect::passed(&envoy.get_with_token("/admin", &jwt));
    setup.idp.idp().revoke_token(&jwt);
    let revoked_at = Instant::now();
    let mut refused_after = None;
    while revoked_at.elapsed() < Duration::from_secs(5) {
        if envoy.get_with_token("/admin", &jwt).status == 401 {
            refused_after = Some(revoked_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = refused_after.expect("the revoked JWT was still accepted after 5 s");
    assert!(
        after <= Duration::from_millis(2000),
        "refused only after {:?} with a 1 s TTL",
        after
    );
    expect::invalid_token(&envoy.get_with_token("/admin", &jwt), "not active");
}

#[test]
fn private_key_jwt_with_the_key_file_from_the_vm_environment() {
    let setup = start_idp();
    let auth =
        json!({"client_id": null, "client_secret_env": null, "key_file_env": "TOKENGATE_KEY_FILE"});
    let envoy = start_envoy(&setup, auth, SECRET);
    expect::passed(&envoy.get_with_token("/admin", &token(&setup, "opaque-admin")));
    assert!(
        !envoy.log().contains("BEGIN RSA PRIVATE KEY"),
        "the private key must never be logged"
    );
}

#[test]
fn wrong_client_credentials_give_503_and_a_misconfiguration_log_without_secrets() {
    let setup = start_idp();
    let wrong = "not-the-secret-5d1e";
    tokengate_testkit::leaks::register_secret(wrong);
    let envoy = start_envoy(&setup, json!({}), wrong);
    let t = token(&setup, "opaque-admin");
    unavailable(&envoy.get_with_token("/", &t));
    let log = envoy.log();
    assert!(
        log.contains("introspection client is misconfigured"),
        "the log names the problem"
    );
    assert!(
        log.contains("unauthorized_client"),
        "the log says what the IdP answered"
    );
    for secret in [wrong, SECRET, t.as_str()] {
        assert!(!log.contains(secret), "a secret or the token is in the log");
    }
    assert_eq!(
        envoy.counter("wasmcustom.tokengate.introspection.zitadel.failure.client_rejected"),
        1
    );
}

#[test]
fn a_missing_environment_variable_is_a_configuration_error() {
    let setup = start_idp();
    let options =
        EnvoyOptions::new(&config(&setup.idp, json!({}))).cluster("idp", setup.idp.port());
    let log = tokengate_testkit::envoy::expect_refused(options);
    assert!(log.contains(
        "providers.zitadel.introspection.client_secret_env: environment variable TOKENGATE_INTROSPECTION_SECRET is not set"
    ));
}

/// The IdP misbehaves at the introspection endpoint: 503 with Retry-After, then recovery
/// without a restart once it is healthy.
fn introspection_failure_then_recovery(fault: Fault) {
    let setup = start_idp();
    let envoy = start_envoy(&setup, json!({}), SECRET);
    setup.idp.idp().set_fault(Endpoint::Introspect, Some(fault));
    let t = token(&setup, "opaque-admin");
    let started = Instant::now();
    unavailable(&envoy.get_with_token("/", &t));
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "answered within the timeout"
    );
    setup.idp.idp().set_fault(Endpoint::Introspect, None);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut recovered = false;
    while Instant::now() < deadline {
        if envoy.get_with_token("/", &t).reached_upstream() {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(recovered, "no recovery after the IdP healed");
}

#[test]
fn introspection_endpoint_down() {
    introspection_failure_then_recovery(Fault::Down);
}

#[test]
fn introspection_slower_than_the_timeout() {
    introspection_failure_then_recovery(Fault::Slow(1500));
}

#[test]
fn introspection_answering_500() {
    introspection_failure_then_recovery(Fault::ServerError);
}

#[test]
fn introspection_answering_garbage() {
    introspection_failure_then_recovery(Fault::Garbage);
}

/// Keys and the introspection endpoint both found by discovery.
fn start_envoy_with_discovery(setup: &Setup) -> Envoy {
    let mut cfg = config(&setup.idp, json!({"endpoint": null}));
    cfg["providers"]["zitadel"]["remote_jwks"] = json!({"cluster": "idp"});
    let options = EnvoyOptions::new(&cfg)
        .cluster("idp", setup.idp.port())
        .vm_env("TOKENGATE_INTROSPECTION_SECRET", SECRET);
    Envoy::start_with(options)
}

#[test]
fn introspection_endpoint_found_by_discovery() {
    let setup = start_idp();
    // Discovery answers slowly: a request that arrives first waits for it (as requests wait
    // for the first keys) instead of failing at start-up.
    setup
        .idp
        .idp()
        .set_fault(Endpoint::Discovery, Some(Fault::Slow(600)));
    let envoy = start_envoy_with_discovery(&setup);
    let t = token(&setup, "opaque-admin");
    let r = envoy.get_with_token("/admin", &t);
    assert!(
        r.reached_upstream(),
        "the first request should wait for discovery: {} {}",
        r.status,
        r.body
    );
    assert_eq!(setup.idp.idp().hits(Endpoint::Discovery), 1);
    assert_eq!(setup.idp.idp().hits(Endpoint::Introspect), 1);
}

#[test]
fn an_opaque_token_gets_503_when_discovery_never_answers() {
    let setup = start_idp();
    setup
        .idp
        .idp()
        .set_fault(Endpoint::Discovery, Some(Fault::Down));
    let envoy = start_envoy_with_discovery(&setup);
    let started = Instant::now();
    unavailable(&envoy.get_with_token("/admin", &token(&setup, "opaque-admin")));
    assert!(
        started.elapsed() < Duration::from_millis(4000),
        "the wait is bounded by the introspection timeout"
    );
}

// Issue 12, defect 1: private_key_jwt signs a fresh client assertion for every callout, as
// OIDC Core 9 requires; the dev IdP refuses a replayed assertion jti (RFC 7523 3).

fn private_key_jwt() -> Value {
    json!({"client_id": null, "client_secret_env": null, "key_file_env": "TOKENGATE_KEY_FILE"})
}

#[test]
fn private_key_jwt_signs_a_fresh_assertion_for_every_callout() {
    let setup = start_idp();
    let envoy = start_envoy(&setup, private_key_jwt(), SECRET);
    for (i, t) in (0..3).map(|_| token(&setup, "opaque-admin")).enumerate() {
        let r = envoy.get_with_token("/admin", &t);
        assert!(
            r.reached_upstream(),
            "opaque token {} of 3 (a callout each): {} {}",
            i + 1,
            r.status,
            r.body
        );
    }
    assert_eq!(introspections(&setup), 3, "one callout per new token");
    assert_eq!(
        envoy.counter("wasmcustom.tokengate.introspection.zitadel.failure.client_rejected"),
        0
    );
}

#[test]
fn private_key_jwt_retries_once_with_a_new_assertion_when_refused() {
    let setup = start_idp();
    let envoy = start_envoy(&setup, private_key_jwt(), SECRET);
    // The next introspection is refused (400 unauthorized_client) after its assertion's jti
    // is spent: only a retry with a new assertion can pass.
    setup
        .idp
        .idp()
        .set_fault(Endpoint::Introspect, Some(Fault::RejectOnce));
    let r = envoy.get_with_token("/admin", &token(&setup, "opaque-admin"));
    expect::passed(&r);
    assert_eq!(introspections(&setup), 2, "the refused call and one retry");
    assert_eq!(
        envoy.counter("wasmcustom.tokengate.introspection.zitadel.failure.client_rejected"),
        0,
        "one refusal is not a misconfiguration"
    );
}

// Issue 12, defect 2: an active introspection answer is judged by the same time rules as a
// JWT (clock skew, default 60 s), and an unusable answer makes no new callout for the token.

/// An opaque token of `opaque-admin` whose `exp` passed `seconds` ago.
fn opaque_admin_expired_ago(setup: &Setup, seconds: u64) -> String {
    let exp = devidp::idp::now() - seconds;
    let t = setup
        .idp
        .idp()
        .mint("opaque-admin", &json!({ "exp": exp }), None)
        .unwrap();
    tokengate_testkit::leaks::register_secret(&t);
    t
}

#[test]
fn introspection_answer_expired_within_the_clock_skew_is_accepted() {
    let setup = start_idp();
    // The IdP's clock runs 30 s behind ours: it still calls a token active that expired 5 s ago.
    setup.idp.idp().set_clock_lag(30);
    let envoy = start_envoy(&setup, json!({}), SECRET);
    let t = opaque_admin_expired_ago(&setup, 5);
    expect::passed(&envoy.get_with_token("/admin", &t));
    expect::passed(&envoy.get_with_token("/admin", &t));
    assert_eq!(introspections(&setup), 1, "the answer is reused");
}

#[test]
fn introspection_answer_expired_beyond_the_clock_skew_is_refused_and_not_asked_again() {
    let setup = start_idp();
    setup.idp.idp().set_clock_lag(300);
    let envoy = start_envoy(&setup, json!({"negative_cache_ttl_seconds": 10}), SECRET);
    let t = opaque_admin_expired_ago(&setup, 200);
    expect::invalid_token(&envoy.get_with_token("/admin", &t), "expired");
    assert_eq!(introspections(&setup), 1);
    expect::invalid_token(&envoy.get_with_token("/admin", &t), "expired");
    assert_eq!(
        introspections(&setup),
        1,
        "no new callout for the token within the negative-cache TTL"
    );
}

// Issue 12, defect 7: the error text of a 400/401 from the introspection endpoint is network
// input; only its status and a known error code reach the log and the 503 body.

#[test]
fn introspection_endpoint_error_text_never_reaches_the_log_or_the_reply() {
    let setup = start_idp();
    let envoy = start_envoy(&setup, json!({}), SECRET);
    setup
        .idp
        .idp()
        .set_fault(Endpoint::Introspect, Some(Fault::EchoError));
    // Registered as a secret: the leak check when Envoy stops fails on any log line with it.
    let t = token(&setup, "opaque-admin");
    let r = envoy.get_with_token("/admin", &t);
    assert!(
        !r.body.contains(&t),
        "the token came back in the reply: {}",
        r.body
    );
    assert!(
        !r.body.contains("token="),
        "IdP text in the reply: {}",
        r.body
    );
    unavailable(&r);
    let description = r.json()["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The echoed `error` ("invalid_request token=...") is not itself a known code: reduced
    // to its leading code or to `other`, both bounded (spec: "a known ... error code or other").
    assert!(
        description.contains("HTTP 400")
            && (description.contains("invalid_request") || description.contains("other")),
        "the reply names the status and a bounded error code: {:?}",
        description
    );
    let log = envoy.log();
    assert!(!log.contains(&t), "the token is in the log");
    tokengate_testkit::leaks::check(&log).unwrap();
}

// Introspection cache misses are counted once per request that had to wait for an answer.

const MISSES: &str = "wasmcustom.tokengate.introspection.cache_misses";

#[test]
fn a_request_that_waits_for_introspection_in_vain_counts_one_miss() {
    let setup = start_idp();
    setup
        .idp
        .idp()
        .set_fault(Endpoint::Discovery, Some(Fault::Down));
    let envoy = start_envoy_with_discovery(&setup);
    unavailable(&envoy.get_with_token("/admin", &token(&setup, "opaque-admin")));
    assert_eq!(envoy.counter(MISSES), 1);
    assert_eq!(envoy.stat("wasmcustom.tokengate.requests_waiting"), 0);
}

#[test]
fn a_jwt_that_waits_for_keys_and_then_for_introspection_counts_one_miss_and_stops_waiting() {
    let setup = start_idp();
    // The first keys come late: the request waits for them, then for the introspection of
    // its JWT.
    setup
        .idp
        .idp()
        .set_fault(Endpoint::Keys, Some(Fault::Slow(600)));
    let envoy = start_envoy(&setup, json!({"introspect_jwts": true}), SECRET);
    expect::passed(&envoy.get_with_token("/admin", &token(&setup, "jwt-admin")));
    assert_eq!(introspections(&setup), 1);
    assert_eq!(envoy.counter(MISSES), 1);
    assert_eq!(envoy.stat("wasmcustom.tokengate.requests_waiting"), 0);
}
