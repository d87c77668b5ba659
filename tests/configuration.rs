#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! How the configuration reaches the filter (a JSON string as Istio sends it, or a protobuf
//! Struct written as YAML in an Envoy config), and how an invalid one is refused: Envoy does
//! not start with it, and the log names the field and what is wrong.

use serde_json::json;
use tokengate_testkit::envoy::{expect_refused, EnvoyOptions};
use tokengate_testkit::mint::claims;
use tokengate_testkit::{expect, mint, Envoy, SigningKey};

#[test]
fn configuration_may_be_a_protobuf_struct() {
    let key = SigningKey::es256("k");
    let config = json!({
        "providers": {"main": {"issuer": "https://i.test", "jwks": mint::jwks(&[&key]), "clock_skew_seconds": 30}},
        "token_cache": {"max_entries": 100, "ttl_seconds": 60},
        "default": "authenticated"
    });
    let mut options = EnvoyOptions::new(&config);
    options.as_struct = true;
    let envoy = Envoy::start_with(options);
    expect::passed(
        &envoy.get_with_token("/", &key.sign(&claims("https://i.test", &[], json!({})))),
    );
    expect::refused(&envoy.get("/", &[]), 401, "missing_token", "");
}

#[test]
fn an_invalid_protobuf_struct_configuration_is_refused_with_the_field_named() {
    let config = json!({"providers": {"main": {"jwks": jwks(), "clock_skew_seconds": "soon"}}});
    let mut options = EnvoyOptions::new(&config);
    options.as_struct = true;
    let log = expect_refused(options);
    assert!(
        log.contains("tokengate: invalid configuration: providers.main.clock_skew_seconds: invalid type: string"),
        "{}",
        tokengate_testkit::envoy::tail(&log, 15)
    );
}

#[track_caller]
fn refused_with(config: &str, expected_line: &str) {
    let log = expect_refused(EnvoyOptions::raw(config));
    assert!(
        log.contains(&format!(
            "tokengate: invalid configuration: {}",
            expected_line
        )),
        "log should contain {:?}:\n{}",
        expected_line,
        tokengate_testkit::envoy::tail(&log, 15)
    );
}

fn jwks() -> serde_json::Value {
    mint::jwks(&[&SigningKey::es256("k")])
}

#[test]
fn text_that_is_not_json_is_refused() {
    refused_with("{providers: {}}", "(top level): key must be a string");
}

#[test]
fn an_empty_configuration_is_refused() {
    let log = expect_refused(EnvoyOptions::raw(""));
    assert!(
        log.contains("the plugin configuration is empty"),
        "{}",
        tokengate_testkit::envoy::tail(&log, 15)
    );
}

#[test]
fn a_field_of_the_wrong_type_is_named() {
    let config = json!({"providers": {"main": {"jwks": jwks(), "audiences": ["a", 7]}}});
    refused_with(
        &config.to_string(),
        "providers.main.audiences[1]: invalid type: integer `7`, expected a string",
    );
}

#[test]
fn an_unknown_field_is_named() {
    let config =
        json!({"providers": {"main": {"jwks": jwks()}}, "rules": [{"match": {"paht": "/"}}]});
    refused_with(
        &config.to_string(),
        "rules[0].match.paht: unknown field `paht`",
    );
}

#[test]
fn a_provider_without_keys_is_refused() {
    let config = json!({"providers": {"main": {"issuer": "https://i"}}});
    refused_with(
        &config.to_string(),
        "providers.main.jwks: the provider needs keys",
    );
}

#[test]
fn a_key_set_without_a_usable_key_is_refused() {
    let config = json!({"providers": {"main": {"jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}}}});
    refused_with(
        &config.to_string(),
        "providers.main.jwks: has no usable key: key 0 RSA modulus has 17 bits",
    );
}

#[test]
fn an_invalid_regex_is_named() {
    let config = json!({"providers": {"main": {"jwks": jwks()}}, "rules": [{"match": {"path": {"regex": "/(a"}}}]});
    refused_with(
        &config.to_string(),
        "rules[0].match.path.regex: is not a valid regex",
    );
}

#[test]
fn a_rule_naming_an_unknown_provider_is_refused() {
    let config =
        json!({"providers": {"main": {"jwks": jwks()}}, "rules": [{"providers": ["mian"]}]});
    refused_with(
        &config.to_string(),
        "rules[0].providers[0]: no provider is named \"mian\" (known: main)",
    );
}

#[test]
fn contradictory_rule_settings_are_refused() {
    let config = json!({"providers": {"main": {"jwks": jwks()}}, "rules": [{"allow_anonymous": true, "roles": {"any_of": ["a"]}}]});
    refused_with(
        &config.to_string(),
        "rules[0]: allow_anonymous cannot be combined",
    );
}

#[test]
fn hmac_algorithm_without_an_oct_key_is_refused() {
    let config = json!({"providers": {"main": {"jwks": jwks(), "algorithms": ["ES256", "HS256"]}}});
    refused_with(
        &config.to_string(),
        "providers.main.algorithms: HS256 needs an oct key",
    );
}
