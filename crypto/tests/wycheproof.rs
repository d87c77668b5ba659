#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Project Wycheproof's ECDSA vectors for the JOSE curve/hash pairs (P-256/SHA-256,
//! P-384/SHA-384, P-521/SHA-512; IEEE P1363 signatures, the JOSE encoding) against tokengate's
//! own ES256/ES384/ES512 verifier, each vector both without and with the key's comb table.
//! See tests/data/wycheproof/README.md.

use serde_json::Value;
use tokengate_crypto::ecdsa::EcdsaVerifier;
use tokengate_crypto::Curve;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A coordinate as exactly `len` bytes (the vectors drop or add leading zero bytes).
fn coordinate(s: &str, len: usize) -> Option<Vec<u8>> {
    let bytes = hex(s);
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let mut out = vec![0u8; len.checked_sub(bytes.len())?];
    out.extend_from_slice(bytes);
    Some(out)
}

#[test]
fn every_p256_sha256_vector_gets_the_expected_result() {
    check_file(
        include_str!("data/wycheproof/ecdsa_secp256r1_sha256_p1363_test.json"),
        Curve::P256,
    );
}

#[test]
fn every_p384_sha384_vector_gets_the_expected_result() {
    check_file(
        include_str!("data/wycheproof/ecdsa_secp384r1_sha384_p1363_test.json"),
        Curve::P384,
    );
}

#[test]
fn every_p521_sha512_vector_gets_the_expected_result() {
    check_file(
        include_str!("data/wycheproof/ecdsa_secp521r1_sha512_p1363_test.json"),
        Curve::P521,
    );
}

/// Runs every vector of a file twice, through a verifier without its key's table and then
/// with the table built: both answers must be the same and the expected one.
fn check_file(text: &str, curve: Curve) {
    let len = curve.coordinate_len();
    let file: Value = serde_json::from_str(text).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for group in file["testGroups"].as_array().unwrap() {
        let key = &group["publicKey"];
        let verifier = coordinate(key["wx"].as_str().unwrap(), len)
            .zip(coordinate(key["wy"].as_str().unwrap(), len))
            .and_then(|(x, y)| EcdsaVerifier::new(curve, &x, &y));
        let tests = group["tests"].as_array().unwrap();
        let answers = || -> Vec<bool> {
            tests
                .iter()
                .map(|test| {
                    verifier.as_ref().is_some_and(|v| {
                        v.verify(
                            &hex(test["msg"].as_str().unwrap()),
                            &hex(test["sig"].as_str().unwrap()),
                        )
                    })
                })
                .collect()
        };
        if let Some(v) = &verifier {
            assert!(!v.has_table(), "a new verifier has no table");
        }
        let without_table = answers();
        if let Some(v) = &verifier {
            v.build_table();
            assert!(v.has_table());
        }
        let with_table = answers();
        for ((test, without), with) in tests.iter().zip(without_table).zip(with_table) {
            let id = test["tcId"].as_u64().unwrap();
            let expected = test["result"].as_str().unwrap();
            checked += 1;
            let ok = match expected {
                "valid" => with,
                "invalid" => !with,
                _ => true, // "acceptable": either answer
            };
            if !ok || with != without {
                failures.push(format!(
                    "tcId {} ({}): expected {}, got {} with the key's table, {} without",
                    id,
                    test["comment"].as_str().unwrap_or(""),
                    expected,
                    with,
                    without
                ));
            }
        }
    }
    assert_eq!(checked, file["numberOfTests"].as_u64().unwrap() as usize);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
