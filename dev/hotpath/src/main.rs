#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a measuring tool: a failed step should stop it loudly
//! `tokengate-hotpath DIR`: where the time of one request goes, stage by stage, in the runtime the
//! filter runs in. Built for wasm32-wasip1 and run under Node's V8 by `make profile`
//! (`dev/hotpath.mjs`), so the figures are V8's, not the native CPU's.
//!
//! DIR holds `make bench`'s generated material: `jwks-rs256.json`, `jwks-es256.json`,
//! `rs256.txt`, `es256.txt` (one distinct valid token per line).

use std::rc::Rc;
use std::time::Instant;
use tokengate_core::engine::gate::{Gate, Request, Verdict};
use tokengate_core::introspection::{self, ClientAuth, IntrospectionClient, IntrospectionSettings};
use tokengate_core::keys::jwks::{parse_jwks_str, KeyPolicy};
use tokengate_core::keys::remote::Url;
use tokengate_core::request::headers::HeaderMap;
use tokengate_core::time::UnixMillis;
use tokengate_core::token::alg::AlgSet;
use tokengate_core::{config::settings, token::jwt, token::verify};

fn read(dir: &str, name: &str) -> String {
    std::fs::read_to_string(format!("{}/{}", dir, name))
        .unwrap_or_else(|e| panic!("{}/{}: {} (run `make bench` once first)", dir, name, e))
}

/// Runs `f` over `items` (in order, cycling, across batches) in batches of `n` calls: one warm-up batch (V8 tiers up
/// hot functions to optimized code), then `BATCHES` timed ones. Prints the fastest and the
/// median batch in µs per call: the fastest is the least disturbed by other work on the
/// machine, the median shows how noisy it was.
fn time<T>(label: &str, items: &[T], n: usize, mut f: impl FnMut(&T)) {
    const BATCHES: usize = 7;
    let mut next = 0;
    let mut batch = || {
        let start = Instant::now();
        for _ in 0..n {
            f(&items[next % items.len()]);
            next += 1;
        }
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    batch();
    let mut runs: Vec<f64> = (0..BATCHES).map(|_| batch()).collect();
    runs.sort_by(f64::total_cmp);
    println!(
        "{:<44} {:>8.1} µs  (median {:.1})",
        label,
        runs[0],
        runs[BATCHES / 2]
    );
}

fn gate_for(jwks: &str) -> Gate {
    let config = format!(
        r#"{{"providers": {{"bench": {{"issuer": "https://bench.test", "audiences": ["bench"], "jwks": {}}}}}, "default": "authenticated"}}"#,
        jwks
    );
    let (settings, _) = settings::compile_str(&config).expect("bench configuration");
    let mut gate = Gate::new(settings);
    // As in the filter when Envoy does not log at trace level.
    gate.describe_allowed(false);
    gate
}

fn headers(token: &str) -> HeaderMap {
    HeaderMap::from_pairs([
        (":method", "GET"),
        (":path", "/orders/1"),
        (":authority", "bench.local"),
        (":scheme", "http"),
        ("user-agent", "wrk"),
        ("authorization", &format!("Bearer {}", token)),
    ])
}

fn now_ms() -> UnixMillis {
    UnixMillis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

fn profile(dir: &str, alg: &str, jwks_file: &str, tokens_file: &str) {
    let jwks = read(dir, jwks_file);
    let text = read(dir, tokens_file);
    let tokens: Vec<&str> = text.lines().take(2000).collect();
    let (keys, _) = parse_jwks_str(&jwks, &KeyPolicy::default()).expect("bench JWKS");
    let parsed: Vec<jwt::Jwt<'_>> = tokens.iter().filter_map(|t| jwt::parse(t).ok()).collect();
    // 8 batches of 100 distinct tokens: no token is seen twice by the cache-miss stage.
    let n = 100;
    println!("{}:", alg);
    time(
        "  key set parse and preparation (per JWKS)",
        &[&jwks],
        5,
        |text| {
            assert!(parse_jwks_str(text, &KeyPolicy::default()).is_ok());
        },
    );
    time("  jwt::parse (base64 + JSON)", &tokens, n, |t| {
        let _ = jwt::parse(t);
    });
    time("  signature check", &parsed, n, |j| {
        assert!(verify::verify_signature(j, &keys, AlgSet::asymmetric()).is_ok());
    });
    let hs: Vec<_> = tokens.iter().map(|t| headers(t)).collect();
    let now = now_ms();
    let allowed = |v: &Verdict| matches!(v, Verdict::Decided(d) if d.denial.is_none());
    let mut gate = gate_for(&jwks);
    time("  Gate::evaluate, new token (cache miss)", &hs, n, |h| {
        assert!(allowed(&gate.evaluate(&Request::new(h), now, true)));
    });
    time(
        "  Gate::evaluate, same token (cache hit)",
        &hs[..1],
        50 * n,
        |h| {
            assert!(allowed(&gate.evaluate(&Request::new(h), now, true)));
        },
    );
}

/// The work an introspection callout adds with private_key_jwt: signing a fresh client
/// assertion (2048-bit RSA), once per callout.
fn profile_client_assertion(dir: &str) {
    let (client_id, key_id, key) =
        introspection::parse_key_file(&read(dir, "client-key.json")).expect("bench key file");
    let settings = IntrospectionSettings {
        endpoint: None,
        cluster: "idp".into(),
        authority: None,
        timeout_ms: 1000,
        auth: ClientAuth::PrivateKeyJwt {
            client_id,
            key_id: key_id.clone(),
            key: Rc::new(key.with_key_id(&key_id)),
            audience: "https://bench.test".into(),
        },
        cache_ttl_s: 60,
        negative_ttl_s: 10,
        cache_max_entries: 100,
        cache_max_bytes: 1 << 20,
        introspect_jwts: false,
        max_bytes: 65536,
    };
    let client = IntrospectionClient::new(settings);
    let endpoint = Url::parse("https://bench.test/oauth/v2/introspect").expect("bench URL");
    let now = now_ms().as_secs();
    let mut jti = 0;
    println!("introspection:");
    time(
        "  request with a new private_key_jwt assertion",
        &["opaque-token"],
        5,
        |token| {
            jti += 1;
            assert!(client.request(token, &endpoint, now, jti).is_ok());
        },
    );
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/bench".into());
    profile(&dir, "RS256", "jwks-rs256.json", "rs256.txt");
    profile(&dir, "ES256", "jwks-es256.json", "es256.txt");
    profile_client_assertion(&dir);
}
