#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! The route table `make up` runs (`envoy/local.json`), in a real Envoy: reads list the safe
//! methods and every other method needs the write permission, so no unsafe method (a `PATCH`)
//! falls through to the read rule. The provider is swapped for inline keys; the rules, the
//! default and the forwarding are the shipped ones.

use serde_json::{json, Value};
use std::sync::OnceLock;
use tokengate_testkit::mint::{self, claims};
use tokengate_testkit::{expect, Envoy, SigningKey};

const ISS: &str = "https://issuer.test";
const PROJECT: &str = "283480000000000001";

struct Fixture {
    envoy: Envoy,
    key: SigningKey,
}

/// The tokengate configuration inside `envoy/local.json`.
fn shipped_config() -> Value {
    let text =
        std::fs::read_to_string(tokengate_testkit::repo_root().join("envoy/local.json")).unwrap();
    let envoy: Value = serde_json::from_str(&text).unwrap();
    let filter = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]["typed_config"]["config"];
    filter["configuration"]["value"].clone()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = SigningKey::es256("k");
        let mut config = shipped_config();
        assert!(config["rules"].is_array(), "no rules in {}", config);
        config["providers"] = json!({"devidp": {
            "issuer": ISS,
            "zitadel": {"project_id": PROJECT},
            "jwks": mint::jwks(&[&key])
        }});
        Fixture {
            envoy: Envoy::start(&config),
            key,
        }
    })
}

fn token(permissions: &[&str]) -> String {
    fixture().key.sign(&claims(
        ISS,
        &[PROJECT],
        json!({"permissions": permissions}),
    ))
}

#[test]
fn a_readers_unsafe_methods_on_orders_are_refused_by_the_shipped_table() {
    let reader = format!("Bearer {}", token(&["orders:read"]));
    for method in ["PATCH", "POST", "PUT", "DELETE", "PROPFIND"] {
        let r = fixture()
            .envoy
            .request(method, "/orders/7", &[("authorization", &reader)]);
        expect::refused(&r, 403, "insufficient_scope", "permissions");
    }
}

#[test]
fn a_readers_safe_methods_on_orders_pass_the_shipped_table() {
    let reader = format!("Bearer {}", token(&["orders:read"]));
    for method in ["GET", "HEAD", "OPTIONS"] {
        let r = fixture()
            .envoy
            .request(method, "/orders/7", &[("authorization", &reader)]);
        assert!(
            r.status < 300,
            "{} /orders/7: {} {}",
            method,
            r.status,
            r.body
        );
    }
}

#[test]
fn a_writers_patch_on_orders_passes_the_shipped_table() {
    let writer = format!("Bearer {}", token(&["orders:write"]));
    let r = fixture()
        .envoy
        .request("PATCH", "/orders/7", &[("authorization", &writer)]);
    expect::passed(&r);
}
