#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Istio-shaped delivery: the filter arrives by extension config discovery (ECDS) from a file,
//! with the pluginConfig JSON as its configuration string and an empty vm_id, as istiod sends a
//! WasmPlugin. A new valid configuration takes effect without restarting Envoy; an invalid one
//! is refused and the previous one keeps serving.

use serde_json::json;
use std::time::{Duration, Instant};
use tokengate_testkit::envoy::{write_ecds, EnvoyOptions};
use tokengate_testkit::mint::{self, claims, SigningKey};
use tokengate_testkit::{expect, Envoy};

#[test]
fn configuration_updates_by_ecds_apply_without_restart_and_bad_ones_are_refused() {
    let key = SigningKey::es256("k");
    let provider = |roles_claim: bool| {
        let mut p = json!({"issuer": "https://i.test", "jwks": mint::jwks(&[&key])});
        if roles_claim {
            p["claims"] = json!({"roles": "roles"});
        }
        p
    };
    let config = |roles_claim: bool| {
        json!({
            "providers": {"main": provider(roles_claim)},
            "rules": [{"match": {"path": {"prefix": "/admin"}}, "roles": {"any_of": ["ops"]}}],
            "default": "authenticated"
        })
        .to_string()
    };
    let dir = tokengate_testkit::repo_root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let ecds = dir.join(format!("ecds-{}.json", std::process::id()));
    // First: the provider has no roles claim, so nobody has "ops".
    write_ecds(&ecds, &config(false));
    let mut options = EnvoyOptions::raw("{}");
    options.ecds = Some(ecds.clone());
    let envoy = Envoy::start_with(options);
    let ops = key.sign(&claims("https://i.test", &[], json!({"roles": ["ops"]})));
    let admin = || envoy.get_with_token("/admin", &ops).status;
    assert_eq!(admin(), 403);
    expect::passed(&envoy.get_with_token("/orders", &ops));

    // A new valid configuration reads the roles claim: it applies without a restart.
    write_ecds(&ecds, &config(true));
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin() != 200 {
        assert!(
            Instant::now() < deadline,
            "the new configuration did not take effect"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(envoy.counter("extension_config_discovery.http_filter.tokengate.config_reload") >= 2);

    // An invalid configuration is refused; the previous one keeps serving.
    write_ecds(
        &ecds,
        r#"{"providers": {"main": {"issuer": "https://i.test"}}}"#,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while envoy.counter("extension_config_discovery.http_filter.tokengate.config_fail") == 0 {
        assert!(
            Instant::now() < deadline,
            "the invalid configuration was not refused"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..5 {
        assert_eq!(admin(), 200, "the previous configuration keeps serving");
    }
    assert!(envoy
        .log()
        .contains("tokengate: invalid configuration: providers.main.jwks"));
    let _ = std::fs::remove_file(&ecds);
}
