//! `benchgen DIR RS256_COUNT ES256_COUNT`: keys and tokens for `make bench`.
//!
//! Writes into DIR: `jwks-rs256.json`, `jwks-es256.json` (public key sets), `rs256.txt` and
//! `es256.txt` (one distinct valid token per line: issuer `https://bench.test`, audience `bench`,
//! valid for a day), `forged.txt` (a well-formed RS256 token with a wrong signature) and
//! `client-key.json` (a ZITADEL application key file, for timing private_key_jwt signing).
//!
//! `benchgen cache-memory DIR COUNT`: keys and tokens for the cache memory run of `make bench`.
//! Writes `cache-jwks.json` and COUNT distinct ES256 tokens of each kind: `cache-small.txt`
//! (the claims above), `cache-aud.txt` (50 `aud` entries, ZITADEL project ids), `cache-roles.txt` (ZITADEL roles
//! of project [`CACHE_PROJECT`]: 20 roles, each in 2 organisations).

use serde_json::json;
use std::io::Write;
use std::process::ExitCode;
use tokengate_testkit::mint::{self, SigningKey};

/// The ZITADEL project of the roles-heavy tokens.
const CACHE_PROJECT: &str = "283480000000000001";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("cache-memory") {
        return match (
            args.get(1),
            args.get(2).and_then(|n| n.parse::<usize>().ok()),
        ) {
            (Some(dir), Some(count)) => cache_memory(dir, count),
            _ => {
                eprintln!("usage: benchgen cache-memory DIR COUNT");
                ExitCode::from(2)
            }
        };
    }
    let (Some(dir), Some(rs), Some(es)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<usize>().ok()),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: benchgen DIR RS256_COUNT ES256_COUNT");
        return ExitCode::from(2);
    };
    std::fs::create_dir_all(dir).unwrap();
    let rsa = SigningKey::rsa("RS256", "bench-rsa");
    let ec = SigningKey::es256("bench-es");
    std::fs::write(
        format!("{}/jwks-rs256.json", dir),
        mint::jwks(&[&rsa]).to_string(),
    )
    .unwrap();
    std::fs::write(
        format!("{}/jwks-es256.json", dir),
        mint::jwks(&[&ec]).to_string(),
    )
    .unwrap();
    let now = tokengate_testkit::now();
    let write = |name: &str, key: &SigningKey, count: usize| {
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(format!("{}/{}", dir, name)).unwrap());
        for i in 0..count {
            let claims = bench_claims(now, i, &format!("bench-{}-{}", name, i));
            writeln!(out, "{}", key.sign(&claims)).unwrap();
        }
    };
    write("rs256.txt", &rsa, rs);
    write("es256.txt", &ec, es);
    let valid = rsa.sign(
        &json!({"iss": "https://bench.test", "sub": "x", "aud": ["bench"], "exp": now + 86_400}),
    );
    let (input, sig) = valid.rsplit_once('.').unwrap();
    let mut bytes = mint::b64_decode(sig).unwrap();
    // The last byte: changing the first could lift the signature above the modulus, which
    // verifiers refuse before any arithmetic, and row 7 would then depend on the key drawn.
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(
        format!("{}/forged.txt", dir),
        format!("{}.{}\n", input, mint::b64(&bytes)),
    )
    .unwrap();
    std::fs::write(
        format!("{}/client-key.json", dir),
        devidp::idp::new_key_file("bench-client", "bench-key").to_string(),
    )
    .unwrap();
    println!("benchgen: {} RS256 and {} ES256 tokens in {}", rs, es, dir);
    ExitCode::SUCCESS
}

/// The claims of the `i`-th bench token: valid for a day from `now`, audience `bench`.
fn bench_claims(now: u64, i: usize, jti: &str) -> serde_json::Value {
    json!({
        "iss": "https://bench.test",
        "sub": format!("user-{}", i),
        "aud": ["bench"],
        "iat": now,
        "nbf": now,
        "exp": now + 86_400,
        "jti": jti,
        "scope": "orders:read",
    })
}

fn cache_memory(dir: &str, count: usize) -> ExitCode {
    std::fs::create_dir_all(dir).unwrap();
    let key = SigningKey::es256("bench-cache");
    std::fs::write(
        format!("{}/cache-jwks.json", dir),
        mint::jwks(&[&key]).to_string(),
    )
    .unwrap();
    let now = tokengate_testkit::now();
    let many_aud: Vec<String> = std::iter::once("bench".to_owned())
        .chain((1..50).map(|k| format!("2834800000000{:05}", k)))
        .collect();
    let orgs = ["283480000000000101", "283480000000000102"];
    let role_names: Vec<String> = (0..20).map(|k| format!("orders.role-{:02}", k)).collect();
    let grants: Vec<(&str, &[&str])> = role_names.iter().map(|r| (r.as_str(), &orgs[..])).collect();
    let (roles_claim, roles) = mint::zitadel_roles(CACHE_PROJECT, &grants);
    for kind in ["small", "aud", "roles"] {
        let path = format!("{}/cache-{}.txt", dir, kind);
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for i in 0..count {
            let mut claims = bench_claims(now, i, &format!("cache-{}-{}", kind, i));
            match kind {
                "aud" => claims["aud"] = json!(many_aud),
                "roles" => claims[roles_claim.as_str()] = roles.clone(),
                _ => {}
            }
            writeln!(out, "{}", key.sign(&claims)).unwrap();
        }
    }
    println!("benchgen: {} tokens of each kind in {}", count, dir);
    ExitCode::SUCCESS
}
