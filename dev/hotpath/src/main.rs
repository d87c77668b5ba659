//! `tokengate-hotpath DIR`: where the time of one request goes, stage by stage, in the runtime the
//! filter runs in. Built for wasm32-wasip1 and run under Node's V8 by `make profile`
//! (`dev/hotpath.mjs`), so the figures are V8's, not the native CPU's.
//!
//! DIR holds `make bench`'s generated material: `jwks-rs256.json`, `jwks-es256.json`,
//! `rs256.txt`, `es256.txt` (one distinct valid token per line).

use std::time::Instant;
use tokengate_core::alg::AlgSet;
use tokengate_core::gate::{Gate, Request, Verdict};
use tokengate_core::jwks::{parse_jwks_str, KeyPolicy};
use tokengate_core::{jwt, settings, verify};

fn read(dir: &str, name: &str) -> String {
    std::fs::read_to_string(format!("{}/{}", dir, name))
        .unwrap_or_else(|e| panic!("{}/{}: {} (run `make bench` once first)", dir, name, e))
}

/// Runs `f` over `items` (cycling) `n` times; prints and returns µs per call.
fn time<T>(label: &str, items: &[T], n: usize, mut f: impl FnMut(&T)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(&items[i % items.len()]);
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{:<44} {:>9.1} µs", label, us);
    us
}

fn gate_for(jwks: &str) -> Gate {
    let config = format!(
        r#"{{"providers": {{"bench": {{"issuer": "https://bench.test", "audiences": ["bench"], "jwks": {}}}}}, "default": "authenticated"}}"#,
        jwks
    );
    let (settings, _) = settings::compile_str(&config).expect("bench configuration");
    Gate::new(settings)
}

fn headers(token: &str) -> Vec<(String, Vec<u8>)> {
    [
        (":method", "GET"),
        (":path", "/orders/1"),
        (":authority", "bench.local"),
        (":scheme", "http"),
        ("user-agent", "wrk"),
        ("authorization", &format!("Bearer {}", token)),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
    .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn profile(dir: &str, alg: &str, jwks_file: &str, tokens_file: &str) {
    let jwks = read(dir, jwks_file);
    let text = read(dir, tokens_file);
    let tokens: Vec<&str> = text.lines().take(2000).collect();
    let (keys, _) = parse_jwks_str(&jwks, &KeyPolicy::default()).expect("bench JWKS");
    let parsed: Vec<jwt::Jwt<'_>> = tokens.iter().filter_map(|t| jwt::parse(t).ok()).collect();
    let n = tokens.len().min(1000);
    println!("{}:", alg);
    time("  jwt::parse (base64 + JSON)", &tokens, n, |t| {
        let _ = jwt::parse(t);
    });
    time("  signature check", &parsed, n, |j| {
        assert!(verify::verify_signature(j, &keys, AlgSet::asymmetric()).is_ok());
    });
    let mut gate = gate_for(&jwks);
    let hs: Vec<_> = tokens.iter().map(|t| headers(t)).collect();
    let now = now_ms();
    let allowed = |v: &Verdict| matches!(v, Verdict::Decided(d) if d.denial.is_none());
    time("  Gate::evaluate, new token (cache miss)", &hs, n, |h| {
        assert!(allowed(&gate.evaluate(&Request::new(h), now, true)));
    });
    time("  Gate::evaluate, same token (cache hit)", &hs[..1], 20 * n, |h| {
        assert!(allowed(&gate.evaluate(&Request::new(h), now, true)));
    });
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "target/bench".into());
    profile(&dir, "RS256", "jwks-rs256.json", "rs256.txt");
    profile(&dir, "ES256", "jwks-es256.json", "es256.txt");
}
