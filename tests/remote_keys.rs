#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Remote keys in a real Envoy against the dev IdP: fetched before traffic needs them,
//! refetched on an unknown `kid` (rate-limited), kept through IdP failures up to a maximum
//! staleness, refreshed as Cache-Control says, found by discovery, and fetched once per
//! refresh for the whole process.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokengate_testkit::devidp::{Endpoint, Fault, RunningIdp};
use tokengate_testkit::envoy::EnvoyOptions;
use tokengate_testkit::idp::{self, PROJECT};
use tokengate_testkit::mint::{claims, SigningKey};
use tokengate_testkit::{expect, Envoy, Response};

/// tokengate's configuration for one ZITADEL-like provider served by `idp`; `tuning` is
/// merged into `remote_jwks`.
fn config(idp: &RunningIdp, tuning: Value) -> Value {
    let mut remote = json!({"cluster": "idp", "uri": format!("{}/oauth/v2/keys", idp.issuer())});
    for (k, v) in tuning.as_object().unwrap() {
        if v.is_null() {
            remote.as_object_mut().unwrap().remove(k);
        } else {
            remote[k] = v.clone();
        }
    }
    json!({
        "providers": {"zitadel": {"issuer": idp.issuer(), "zitadel": {"project_id": PROJECT}, "remote_jwks": remote}},
        "default": "authenticated"
    })
}

fn start_envoy(idp: &RunningIdp, tuning: Value) -> Envoy {
    Envoy::start_with(EnvoyOptions::new(&config(idp, tuning)).cluster("idp", idp.port()))
}

/// A token of `svc-reader` with a unique `jti`, so that it is never a cache hit.
fn fresh_token(idp: &RunningIdp) -> String {
    idp::token(idp, "svc-reader")
}

/// Polls until `check` holds, for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[track_caller]
fn unavailable(r: &Response) {
    expect::refused(
        r,
        503,
        "temporarily_unavailable",
        "signing keys of provider zitadel are not available",
    );
    let retry_after: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        (1..=300).contains(&retry_after),
        "Retry-After {}",
        retry_after
    );
}

#[test]
fn the_very_first_request_succeeds_when_the_idp_is_up() {
    let idp = idp::start();
    let envoy = start_envoy(&idp, json!({}));
    expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
    assert_eq!(idp.idp().hits(Endpoint::Keys), 1);
    assert_eq!(
        envoy.counter("wasmcustom.tokengate.jwks.zitadel.fetch_success"),
        1
    );
}

#[test]
fn idp_down_at_start_gives_503_then_recovers_without_restart() {
    let idp = idp::start_down();
    let envoy = start_envoy(
        &idp,
        json!({"max_backoff_seconds": 1, "startup_wait_ms": 500}),
    );
    let token = fresh_token(&idp);
    unavailable(&envoy.get_with_token("/", &token));
    idp.up().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || envoy
            .get_with_token("/", &token)
            .reached_upstream()),
        "requests still fail after the IdP came back"
    );
    assert!(envoy.counter("wasmcustom.tokengate.jwks.zitadel.fetch_failure.unreachable") >= 1);
    assert!(envoy.counter("wasmcustom.tokengate.denied.unavailable") >= 1);
}

#[test]
fn rotation_under_traffic_causes_no_401_and_one_extra_fetch() {
    let idp = idp::start();
    let envoy = start_envoy(&idp, json!({}));
    expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
    let fetches_before = idp.idp().hits(Endpoint::Keys);
    let mut statuses = Vec::new();
    for i in 0..200 {
        if i == 50 {
            idp.idp().rotate(false);
        }
        statuses.push(envoy.get_with_token("/", &fresh_token(&idp)).status);
    }
    let refused = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(
        refused,
        0,
        "statuses other than 200: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    assert_eq!(
        idp.idp().hits(Endpoint::Keys) - fetches_before,
        1,
        "exactly one extra key fetch"
    );
    assert_eq!(
        envoy.counter("wasmcustom.tokengate.jwks.zitadel.refetch_unknown_kid"),
        1
    );
}

#[test]
fn a_flood_of_unknown_kids_causes_at_most_one_fetch_per_window() {
    let idp = idp::start();
    let envoy = start_envoy(&idp, json!({}));
    expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
    let fetches_before = idp.idp().hits(Endpoint::Keys);
    let attacker = SigningKey::es256("x");
    let started = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (envoy, attacker, idp) = (&envoy, &attacker, &idp);
                s.spawn(move || {
                    (0..250)
                        .map(|i| {
                            let header =
                                json!({"alg": "ES256", "kid": format!("random-{}-{}", t, i)})
                                    .to_string();
                            let token = attacker.sign_raw(
                                &header,
                                &claims(idp.issuer(), &[PROJECT], json!({})).to_string(),
                            );
                            envoy.get_with_token("/", &token).status
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let windows = started.elapsed().as_secs() / 30 + 1;
    assert_eq!(statuses.len(), 1000);
    assert!(
        statuses.iter().all(|s| *s == 401),
        "every random kid is refused"
    );
    let extra = idp.idp().hits(Endpoint::Keys) - fetches_before;
    assert!(
        extra <= windows,
        "{} fetches for {} window(s)",
        extra,
        windows
    );
}

/// The IdP misbehaves: old keys keep working until they are `max_stale_seconds` old, then 503;
/// once the IdP is healthy again, requests succeed without a restart.
fn stale_keys_survive(fault: Fault) {
    let idp = RunningIdp::start(idp::config(idp::default_clients(), 1), "127.0.0.1:0").unwrap();
    let envoy = start_envoy(
        &idp,
        json!({"min_refresh_seconds": 1, "max_stale_seconds": 5, "max_backoff_seconds": 1, "timeout_ms": 500}),
    );
    expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
    idp.idp().set_fault(Endpoint::Keys, Some(fault));
    let faulted_at = Instant::now();
    // Inside the staleness window, fresh tokens (no cache hits) verify with the old keys.
    while faulted_at.elapsed() < Duration::from_secs(2) {
        expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        eventually(Duration::from_secs(10), || envoy
            .get_with_token("/", &fresh_token(&idp))
            .status
            == 503),
        "keys older than max_stale_seconds must not be used"
    );
    unavailable(&envoy.get_with_token("/", &fresh_token(&idp)));
    idp.idp().set_fault(Endpoint::Keys, None);
    assert!(
        eventually(Duration::from_secs(10), || envoy
            .get_with_token("/", &fresh_token(&idp))
            .reached_upstream()),
        "no recovery after the IdP healed"
    );
}

#[test]
fn keys_survive_an_idp_answering_500() {
    stale_keys_survive(Fault::ServerError);
}

#[test]
fn keys_survive_an_idp_answering_garbage() {
    stale_keys_survive(Fault::Garbage);
}

#[test]
fn keys_survive_an_oversized_key_set() {
    stale_keys_survive(Fault::Oversized);
}

#[test]
fn keys_survive_an_idp_slower_than_the_timeout() {
    stale_keys_survive(Fault::Slow(1500));
}

#[test]
fn cache_control_max_age_sets_the_refresh_interval() {
    let idp = RunningIdp::start(idp::config(idp::default_clients(), 3), "127.0.0.1:0").unwrap();
    let envoy = start_envoy(&idp, json!({"min_refresh_seconds": 1}));
    expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
    let first = Instant::now();
    assert_eq!(idp.idp().hits(Endpoint::Keys), 1);
    // The IdP shortens max-age; the current key set keeps its 3 s, the next ones get 1 s.
    idp.idp().set_jwks_max_age(1);
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(first.elapsed()));
    assert_eq!(
        idp.idp().hits(Endpoint::Keys),
        1,
        "no refresh before max-age=3 ran out"
    );
    std::thread::sleep(Duration::from_millis(6500).saturating_sub(first.elapsed()));
    let fetches = idp.idp().hits(Endpoint::Keys);
    // At about 3 s, then every second: 4 to 5 fetches in 6.5 s.
    assert!((3..=6).contains(&fetches), "{} fetches in 6.5 s", fetches);
    let stats = envoy.stats();
    assert!(
        stats.contains("wasmcustom.tokengate.jwks.zitadel.age_seconds"),
        "the key age gauge is published"
    );
}

#[test]
fn max_age_is_clamped_to_the_configured_bounds() {
    // max-age=0 is raised to the minimum...
    let idp = RunningIdp::start(idp::config(idp::default_clients(), 0), "127.0.0.1:0").unwrap();
    let envoy = start_envoy(&idp, json!({"min_refresh_seconds": 2}));
    expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
    idp.idp().reset_hits();
    std::thread::sleep(Duration::from_millis(5000));
    let fetches = idp.idp().hits(Endpoint::Keys);
    assert!(
        (1..=4).contains(&fetches),
        "max-age=0, minimum 2 s: {} fetches in 5 s",
        fetches
    );
    drop(envoy);

    // ...and a day is lowered to the maximum.
    idp.idp().set_jwks_max_age(86_400);
    let envoy = start_envoy(
        &idp,
        json!({"min_refresh_seconds": 1, "max_refresh_seconds": 2}),
    );
    expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
    idp.idp().reset_hits();
    std::thread::sleep(Duration::from_millis(5000));
    let fetches = idp.idp().hits(Endpoint::Keys);
    assert!(
        (1..=4).contains(&fetches),
        "max-age=86400, maximum 2 s: {} fetches in 5 s",
        fetches
    );
}

#[test]
fn requests_before_the_first_keys_wait_for_them() {
    let idp = idp::start();
    idp.idp().set_fault(Endpoint::Keys, Some(Fault::Slow(2500)));
    let envoy = start_envoy(&idp, json!({"timeout_ms": 5000, "startup_wait_ms": 6000}));
    let started = Instant::now();
    expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the request waited for the keys"
    );
    assert_eq!(idp.idp().hits(Endpoint::Keys), 1);
}

#[test]
fn waiting_for_the_first_keys_is_bounded() {
    let idp = idp::start();
    idp.idp().set_fault(Endpoint::Keys, Some(Fault::Slow(6000)));
    let envoy = start_envoy(&idp, json!({"timeout_ms": 8000, "startup_wait_ms": 700}));
    let started = Instant::now();
    unavailable(&envoy.get_with_token("/", &fresh_token(&idp)));
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "answered after the startup wait, not the fetch timeout"
    );
    idp.idp().set_fault(Endpoint::Keys, None);
}

#[test]
fn discovery_from_the_issuer_finds_the_keys() {
    let idp = idp::start();
    let envoy = start_envoy(&idp, json!({"uri": null}));
    expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
    assert_eq!(idp.idp().hits(Endpoint::Discovery), 1);
    assert_eq!(idp.idp().hits(Endpoint::Keys), 1);
}

#[test]
fn several_workers_fetch_once_per_refresh() {
    let idp = RunningIdp::start(idp::config(idp::default_clients(), 2), "127.0.0.1:0").unwrap();
    let options = EnvoyOptions::new(&config(&idp, json!({"min_refresh_seconds": 2})))
        .cluster("idp", idp.port())
        .concurrency(2);
    let envoy = Envoy::start_with(options);
    let started = Instant::now();
    // Spread requests over both workers (new connections are balanced between them).
    for _ in 0..40 {
        expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = idp.idp().hits(Endpoint::Keys) as f64;
    // One initial fetch plus one per 2 s refresh; three VMs fetching on their own would make
    // about three times as many.
    let expected = 1.0 + elapsed / 2.0;
    assert!(
        fetches <= expected + 1.0,
        "{} fetches in {:.1} s, expected about {:.1}",
        fetches,
        elapsed,
        expected
    );
    assert!(fetches >= 2.0, "refreshes happened: {}", fetches);
}

#[test]
fn several_workers_share_the_first_fetch() {
    let idp = idp::start();
    // A slow answer keeps the fetch in flight while every VM ticks: only the lease holder
    // may fetch.
    idp.idp().set_fault(Endpoint::Keys, Some(Fault::Slow(800)));
    let options = EnvoyOptions::new(&config(&idp, json!({})))
        .cluster("idp", idp.port())
        .concurrency(2);
    let envoy = Envoy::start_with(options);
    for _ in 0..10 {
        expect::passed(&envoy.get_with_token("/", &fresh_token(&idp)));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        idp.idp().hits(Endpoint::Keys),
        1,
        "one fetch for the whole process"
    );
}

#[test]
fn an_unknown_cluster_is_reported_and_answered_with_503() {
    let idp = idp::start();
    let mut cfg = config(&idp, json!({"startup_wait_ms": 200}));
    cfg["providers"]["zitadel"]["remote_jwks"]["cluster"] = json!("no-such-cluster");
    let envoy = Envoy::start_with(EnvoyOptions::new(&cfg).cluster("idp", idp.port()));
    unavailable(&envoy.get_with_token("/", &fresh_token(&idp)));
    assert!(envoy
        .log()
        .contains("cannot call cluster \"no-such-cluster\""));
}
