#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Failing dependencies and floods, against a real Envoy and the dev IdP: the IdP dies under
//! traffic, introspection is slower than its timeout under load, floods of unique valid and
//! invalid tokens, and a hot restart under traffic. Loops are bounded.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokengate_testkit::devidp::{ClientConfig, Endpoint, Fault, RunningIdp};
use tokengate_testkit::envoy::EnvoyOptions;
use tokengate_testkit::idp::{self, PROJECT};
use tokengate_testkit::mint::{self, claims, SigningKey};
use tokengate_testkit::{expect, Envoy};

const SECRET: &str = "tokengate-fault-test-secret";

fn start_idp() -> RunningIdp {
    let mut clients = idp::default_clients();
    let extra: Vec<ClientConfig> = serde_json::from_value(json!([
        {"client_id": "svc-opaque", "client_secret": "o", "token_type": "opaque", "roles": {"reader": ["org-1"]}},
        {"client_id": "tokengate", "client_secret": SECRET}
    ]))
    .unwrap();
    clients.extend(extra);
    tokengate_testkit::leaks::register_secret(SECRET);
    RunningIdp::start(idp::config(clients, 300), "127.0.0.1:0").unwrap()
}

fn config(idp: &RunningIdp, introspection: Value) -> Value {
    let mut section = json!({
        "endpoint": format!("{}/oauth/v2/introspect", idp.issuer()),
        "client_id": "tokengate",
        "client_secret_env": "TOKENGATE_INTROSPECTION_SECRET",
        "timeout_ms": 500
    });
    for (k, v) in introspection.as_object().unwrap() {
        section[k] = v.clone();
    }
    json!({
        "providers": {"zitadel": {
            "issuer": idp.issuer(),
            "zitadel": {"project_id": PROJECT},
            "remote_jwks": {"cluster": "idp", "uri": format!("{}/oauth/v2/keys", idp.issuer()), "max_backoff_seconds": 1},
            "introspection": section
        }},
        "default": "authenticated"
    })
}

fn options(idp: &RunningIdp, config: &Value) -> EnvoyOptions {
    EnvoyOptions::new(config)
        .cluster("idp", idp.port())
        .vm_env("TOKENGATE_INTROSPECTION_SECRET", SECRET)
}

#[test]
fn the_idp_is_killed_during_steady_traffic() {
    let idp = start_idp();
    let envoy = Envoy::start_with(options(&idp, &config(&idp, json!({}))));
    let cached_jwt = idp::token(&idp, "svc-reader");
    let cached_opaque = idp::token(&idp, "svc-opaque");
    expect::passed(&envoy.get_with_token("/", &cached_jwt));
    expect::passed(&envoy.get_with_token("/", &cached_opaque));
    let new_jwt = idp::token(&idp, "svc-admin");
    let new_opaque = idp::token(&idp, "svc-opaque");

    idp.down();
    // Cached tokens keep working; a new JWT verifies with the keys already fetched; a new
    // opaque token cannot be introspected: 503.
    for _ in 0..50 {
        expect::passed(&envoy.get_with_token("/", &cached_jwt));
        expect::passed(&envoy.get_with_token("/", &cached_opaque));
    }
    expect::passed(&envoy.get_with_token("/", &new_jwt));
    let r = envoy.get_with_token("/", &new_opaque);
    expect::refused(
        &r,
        503,
        "temporarily_unavailable",
        "cannot be introspected now",
    );
    assert!(r.header("retry-after").is_some());

    idp.up().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !envoy.get_with_token("/", &new_opaque).reached_upstream() {
        assert!(
            Instant::now() < deadline,
            "no recovery after the IdP came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn introspection_slower_than_its_timeout_under_concurrent_load() {
    let idp = start_idp();
    idp.idp()
        .set_fault(Endpoint::Introspect, Some(Fault::Slow(3000)));
    let envoy = Envoy::start_with(options(&idp, &config(&idp, json!({"timeout_ms": 400}))));
    let tokens: Vec<String> = (0..20).map(|_| idp::token(&idp, "svc-opaque")).collect();
    let started = Instant::now();
    let results: Vec<(u16, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let (envoy, token) = (&envoy, &tokens[i % tokens.len()]);
                s.spawn(move || {
                    let t = Instant::now();
                    (envoy.get_with_token("/", token).status, t.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        results.iter().all(|(status, _)| *status == 503),
        "{:?}",
        results
    );
    let slowest = results.iter().map(|(_, d)| *d).max().unwrap();
    assert!(
        slowest < Duration::from_millis(2500),
        "a request took {:?} with a 400 ms timeout",
        slowest
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(envoy.upstream.hits(), 0, "nothing reached the upstream");
    // No request is left waiting.
    assert_eq!(envoy.stat("wasmcustom.tokengate.requests_waiting"), 0);
    idp.idp().set_fault(Endpoint::Introspect, None);
}

#[test]
fn a_flood_of_unique_valid_tokens_stays_within_the_memory_bound() {
    let key = SigningKey::es256("flood");
    let envoy = Envoy::start(&json!({
        "providers": {"main": {"issuer": "https://i.test", "jwks": mint::jwks(&[&key])}},
        "default": "authenticated",
        "token_cache": {"max_entries": 500, "max_bytes": 1048576}
    }));
    let warmup = key.sign(&claims("https://i.test", &[], json!({"sub": "warm"})));
    expect::passed(&envoy.get_with_token("/", &warmup));
    let before = envoy.rss_kib();
    let errors = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (envoy, key, errors) = (&envoy, &key, &errors);
            s.spawn(move || {
                for i in 0..750 {
                    let token = key.sign(&claims(
                        "https://i.test",
                        &[],
                        json!({"sub": format!("u-{}-{}", t, i), "pad": "x".repeat(300)}),
                    ));
                    if !envoy.get_with_token("/", &token).reached_upstream() {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "every valid token passes; no 5xx"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let after = envoy.rss_kib();
    let entries = envoy.stat("wasmcustom.tokengate.jwt_cache.entries");
    let bytes = envoy.stat("wasmcustom.tokengate.jwt_cache.bytes");
    assert!(entries <= 500, "the cache evicts: {} entries", entries);
    assert!(
        bytes <= 1_048_576,
        "the cache respects its byte bound: {}",
        bytes
    );
    // README, "Limits": the caches' bounds plus a few MiB of allocator slack per worker.
    let growth_mib = after.saturating_sub(before) / 1024;
    eprintln!(
        "flood: RSS {} -> {} KiB, cache {} entries / {} bytes",
        before, after, entries, bytes
    );
    assert!(
        growth_mib <= 24,
        "Envoy grew by {} MiB for 3000 unique tokens",
        growth_mib
    );
}

#[test]
fn a_flood_of_invalid_tokens_and_random_opaque_strings_is_bounded() {
    let idp = start_idp();
    let envoy = Envoy::start_with(options(
        &idp,
        &config(
            &idp,
            json!({"cache_max_entries": 2000, "negative_cache_ttl_seconds": 60}),
        ),
    ));
    let valid = idp::token(&idp, "svc-reader");
    expect::passed(&envoy.get_with_token("/", &valid));
    let keys_before = idp.idp().hits(Endpoint::Keys);
    // Invalid JWTs (known kid, broken signature) never call the IdP.
    let (input, _) = valid.rsplit_once('.').unwrap();
    for i in 0..500 {
        let forged = format!(
            "{}.{}",
            input,
            mint::b64(format!("forged-signature-{:04}-padding-padding", i).as_bytes())
        );
        assert_eq!(envoy.get_with_token("/", &forged).status, 401);
    }
    assert_eq!(
        idp.idp().hits(Endpoint::Keys),
        keys_before,
        "no key fetches for bad signatures"
    );
    assert_eq!(idp.idp().hits(Endpoint::Introspect), 0);
    // Random opaque strings: one introspection each, then the negative cache answers.
    let randoms: Vec<String> = (0..300)
        .map(|i| format!("random-opaque-{:05}-{}", i, "z".repeat(20)))
        .collect();
    for round in 0..2 {
        for r in &randoms {
            assert_eq!(envoy.get_with_token("/", r).status, 401, "round {}", round);
        }
    }
    assert_eq!(
        idp.idp().hits(Endpoint::Introspect),
        300,
        "one call per distinct token"
    );
    let cached = envoy.stat("wasmcustom.tokengate.introspection.cache_entries");
    assert!(cached <= 2000, "{}", cached);
    assert_eq!(envoy.stat("wasmcustom.tokengate.requests_waiting"), 0);
}

#[test]
fn a_hot_restart_under_traffic_fails_no_request() {
    let idp = start_idp();
    let mut opts = options(&idp, &config(&idp, json!({})));
    opts.hot_restart = true;
    let mut old = Envoy::start_with(opts);
    let token = idp::token(&idp, "svc-reader");
    expect::passed(&old.get_with_token("/", &token));
    let stop = AtomicBool::new(false);
    let (sent, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let port = old.port;
    let new = std::thread::scope(|s| {
        let traffic = s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let value = format!("Bearer {}", token);
                let r = tokengate_testkit::http::try_send_raw(
                    port,
                    &tokengate_testkit::http::request_bytes(
                        "GET",
                        "/",
                        &[("authorization", &value)],
                    ),
                );
                sent.fetch_add(1, Ordering::SeqCst);
                if !r.is_ok_and(|r| r.reached_upstream()) {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let new = old.hot_restart();
        // The new process has fetched its own keys and serves; the old one drains and exits.
        let deadline = Instant::now() + Duration::from_secs(15);
        while old.running() {
            assert!(Instant::now() < deadline, "the old epoch did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        traffic.join().unwrap();
        new
    });
    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("hot restart: {} requests, {} failed", sent, failed);
    assert!(
        sent > 100,
        "traffic ran through the restart: {} requests",
        sent
    );
    assert_eq!(
        failed, 0,
        "{} of {} requests failed during the hot restart",
        failed, sent
    );
    expect::passed(&new.get_with_token("/", &token));
    assert!(
        new.counter("wasmcustom.tokengate.jwks.zitadel.fetch_success") >= 1,
        "the new process fetched its keys"
    );
}
