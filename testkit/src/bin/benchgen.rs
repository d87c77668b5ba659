//! `benchgen DIR RS256_COUNT ES256_COUNT`: keys and tokens for `make bench`.
//!
//! Writes into DIR: `jwks-rs256.json`, `jwks-es256.json` (public key sets), `rs256.txt` and
//! `es256.txt` (one distinct valid token per line: issuer `https://bench.test`, audience `bench`,
//! valid for a day), `forged.txt` (a well-formed RS256 token with a wrong signature) and
//! `client-key.json` (a ZITADEL application key file, for timing private_key_jwt signing).

use serde_json::json;
use std::io::Write;
use std::process::ExitCode;
use tokengate_testkit::mint::{self, SigningKey};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
            let claims = json!({
                "iss": "https://bench.test",
                "sub": format!("user-{}", i),
                "aud": ["bench"],
                "iat": now,
                "nbf": now,
                "exp": now + 86_400,
                "jti": format!("bench-{}-{}", name, i),
                "scope": "orders:read",
            });
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
