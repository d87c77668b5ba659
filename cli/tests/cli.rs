#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! `tokengate validate` and `tokengate explain` say what the filter in Envoy does.

use serde_json::{json, Value};
use std::process::Command;
use tokengate_testkit::devidp::RunningIdp;
use tokengate_testkit::idp;
use tokengate_testkit::mint::{self, claims, SigningKey};
use tokengate_testkit::Envoy;

fn write(name: &str, value: &Value) -> String {
    let dir = tokengate_testkit::repo_root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("cli-{}-{}.json", std::process::id(), name));
    std::fs::write(&path, value.to_string()).unwrap();
    path.display().to_string()
}

fn tokengate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn config(key: &SigningKey) -> Value {
    json!({
        "providers": {"main": {"issuer": "https://i.test", "audiences": ["api"], "jwks": mint::jwks(&[key])}},
        "rules": [{"name": "admin", "match": {"path": {"prefix": "/admin"}}, "scopes": {"any_of": ["admin"]}}],
        "default": "authenticated"
    })
}

#[test]
fn validate_accepts_what_the_filter_accepts_and_names_the_field_otherwise() {
    let key = SigningKey::es256("k");
    let (code, out) = tokengate(&["validate", &write("valid", &config(&key))]);
    assert_eq!(code, 0, "{}", out);
    let broken = json!({"providers": {"main": {"jwks": mint::jwks(&[&key]), "audiences": [1]}}});
    let (code, out) = tokengate(&["validate", &write("broken", &broken)]);
    assert_eq!(code, 1);
    assert!(
        out.contains("providers.main.audiences[0]: invalid type"),
        "{}",
        out
    );
}

#[test]
fn validate_warns_about_a_rule_that_guards_only_some_unsafe_methods() {
    let key = SigningKey::es256("k");
    let mut cfg = config(&key);
    cfg["rules"] = json!([
        {"name": "orders-write", "match": {"path": {"prefix": "/orders"}, "methods": ["POST", "PUT", "DELETE"]},
         "scopes": {"all_of": ["orders:write"]}},
        {"name": "orders-read", "match": {"path": {"prefix": "/orders"}}}
    ]);
    let (code, out) = tokengate(&["validate", &write("write-hole", &cfg)]);
    assert_eq!(code, 0, "a warning, not an error: {}", out);
    let warning = out
        .lines()
        .find(|l| l.starts_with("warning: rule \"orders-write\""))
        .unwrap_or_else(|| panic!("no write-hole warning: {}", out));
    assert!(
        warning.contains("PATCH") && warning.contains("\"orders-read\""),
        "{}",
        warning
    );
    // Reads that list the safe methods above a catch-all write rule: no warning.
    cfg["rules"] = json!([
        {"name": "orders-read", "match": {"path": {"prefix": "/orders"}, "methods": ["GET", "HEAD", "OPTIONS"]}},
        {"name": "orders-write", "match": {"path": {"prefix": "/orders"}}, "scopes": {"all_of": ["orders:write"]}}
    ]);
    let (_, out) = tokengate(&["validate", &write("no-hole", &cfg)]);
    assert!(!out.contains("safe methods"), "{}", out);
}

#[test]
fn explain_agrees_with_envoy_and_never_prints_the_token() {
    let key = SigningKey::es256("k");
    let cfg = config(&key);
    let path = write("agree", &cfg);
    let envoy = Envoy::start(&cfg);
    let user = key.sign(&claims(
        "https://i.test",
        &["api"],
        json!({"scope": "read"}),
    ));
    let admin = key.sign(&claims(
        "https://i.test",
        &["api"],
        json!({"scope": "admin"}),
    ));
    let foreign = key.sign(&claims("https://i.test", &["other"], json!({})));
    for (token, route, allowed, why) in [
        (&user, "/orders", true, "[ok]   signature"),
        (&user, "/admin/x", false, "[FAIL] requirements"),
        (&admin, "/admin/x", true, "[ok]   requirements"),
        (&foreign, "/orders", false, "[FAIL] audience"),
    ] {
        let (code, out) = tokengate(&[
            "explain", "--config", &path, "--token", token, "--path", route,
        ]);
        let in_envoy = envoy.get_with_token(route, token).reached_upstream();
        assert_eq!(in_envoy, allowed, "Envoy on {}", route);
        assert_eq!(code == 0, allowed, "explain on {}: {}", route, out);
        assert!(out.contains(why), "{}", out);
        assert!(
            !out.contains(token.as_str()),
            "the token must not be printed"
        );
    }
}

#[test]
fn explain_fetches_remote_keys() {
    let idp: RunningIdp = idp::start();
    let cfg = json!({
        "providers": {"zitadel": {"issuer": idp.issuer(), "zitadel": {"project_id": idp::PROJECT},
                      "remote_jwks": {"cluster": "idp"}}},
        "default": "authenticated"
    });
    let path = write("remote", &cfg);
    let token = idp::token(&idp, "svc-reader");
    let (code, out) = tokengate(&["explain", "--config", &path, "--token", &token]);
    assert_eq!(code, 0, "{}", out);
    assert!(out.contains("roles: reader;"), "{}", out);
}
