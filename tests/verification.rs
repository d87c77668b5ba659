#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! JWT verification in a real Envoy: algorithms, key selection, issuer, audience, time
//! window, size limit and malformed tokens.

use serde_json::{json, Value};
use std::sync::OnceLock;
use tokengate_testkit::mint::{self, b64, claims};
use tokengate_testkit::{expect, Envoy, SigningKey};

const ISS: &str = "https://issuer.test";

struct Fixture {
    envoy: Envoy,
    keys: Vec<SigningKey>,
    /// RSA key whose JWK has no `alg`: it may verify any RSA algorithm.
    rsa_any: SigningKey,
    hmac: SigningKey,
    limited_rsa: SigningKey,
    limited_es: SigningKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = vec![
            SigningKey::rsa("RS256", "rs256"),
            SigningKey::rsa("RS384", "rs384"),
            SigningKey::rsa("RS512", "rs512"),
            SigningKey::rsa("PS256", "ps256"),
            SigningKey::rsa("PS384", "ps384"),
            SigningKey::rsa("PS512", "ps512"),
            SigningKey::es256("es256"),
            SigningKey::es384("es384"),
            SigningKey::ed25519("eddsa"),
        ];
        let rsa_any = SigningKey::rsa("RS256", "rsa-any");
        let mut any_jwk = rsa_any.jwk();
        any_jwk.as_object_mut().unwrap().remove("alg");
        let mut main_jwks = mint::jwks(&keys.iter().collect::<Vec<_>>());
        main_jwks["keys"].as_array_mut().unwrap().push(any_jwk);
        let hmac = SigningKey::hmac("HS256", "hs", b"a shared secret of thirty-two b.");
        let limited_rsa = SigningKey::rsa("RS256", "limited-rsa");
        let limited_es = SigningKey::es256("limited-es");
        let envoy = Envoy::start(&json!({
            "providers": {
                "main": {"issuer": ISS, "audiences": ["api", "https://api.example.com/"], "jwks": main_jwks},
                "hmac": {"issuer": "https://hmac.test", "jwks": mint::jwks(&[&hmac])},
                "limited": {
                    "issuer": "https://limited.test",
                    "algorithms": ["ES256"],
                    "jwks": mint::jwks(&[&limited_es, &limited_rsa])
                }
            },
            "default": "authenticated"
        }));
        Fixture { envoy, keys, rsa_any, hmac, limited_rsa, limited_es }
    })
}

fn key(alg: &str) -> &'static SigningKey {
    fixture().keys.iter().find(|k| k.alg == alg).unwrap()
}

fn valid_claims() -> Value {
    claims(ISS, &["api"], json!({}))
}

fn send(token: &str) -> tokengate_testkit::Response {
    fixture().envoy.get_with_token("/resource", token)
}

macro_rules! algorithm_is_verified {
    ($($name:ident => $alg:expr),* $(,)?) => {$(
        #[test]
        fn $name() {
            let r = send(&key($alg).sign(&valid_claims()));
            expect::passed(&r);
        }
    )*};
}

algorithm_is_verified! {
    rs256_token_is_accepted => "RS256",
    rs384_token_is_accepted => "RS384",
    rs512_token_is_accepted => "RS512",
    ps256_token_is_accepted => "PS256",
    ps384_token_is_accepted => "PS384",
    ps512_token_is_accepted => "PS512",
    es256_token_is_accepted => "ES256",
    es384_token_is_accepted => "ES384",
    eddsa_token_is_accepted => "EdDSA",
}

#[test]
fn jwk_without_alg_verifies_any_algorithm_of_its_key_type() {
    let f = fixture();
    for alg in ["RS256", "RS512", "PS384"] {
        let token = f.rsa_any.rsa_with_alg(alg).sign(&valid_claims());
        expect::passed(&send(&token));
    }
}

#[test]
fn token_without_kid_tries_the_keys_of_its_alg() {
    let header = json!({"alg": "ES384", "typ": "JWT"}).to_string();
    let token = key("ES384").sign_raw(&header, &valid_claims().to_string());
    expect::passed(&send(&token));
}

#[test]
fn token_naming_an_unknown_kid_is_refused() {
    let header = json!({"alg": "RS256", "kid": "not-there"}).to_string();
    let token = key("RS256").sign_raw(&header, &valid_claims().to_string());
    expect::invalid_token(&send(&token), "no signing key has kid \"not-there\"");
}

#[test]
fn kid_of_another_algorithm_is_not_used() {
    // The header claims ES256 but names the RS256 key: no key fits.
    let header = json!({"alg": "ES256", "kid": "rs256"}).to_string();
    let token = key("ES256").sign_raw(&header, &valid_claims().to_string());
    expect::invalid_token(&send(&token), "no signing key matches alg ES256");
}

#[test]
fn alg_none_is_refused() {
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        let payload = b64(valid_claims().to_string().as_bytes());
        for token in [
            format!("{}.{}.", header, payload),
            format!("{}.{}.c2ln", header, payload),
        ] {
            expect::invalid_token(&send(&token), "alg none");
        }
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // Key confusion: an attacker uses the public RSA key as an HMAC secret.
    let public_jwk = key("RS256").jwk().to_string();
    let forged = SigningKey::hmac("HS256", "rs256", public_jwk.as_bytes()).sign(&valid_claims());
    expect::invalid_token(&send(&forged), "alg HS256 is not allowed");
}

#[test]
fn hmac_needs_an_oct_key_in_the_inline_jwks() {
    let f = fixture();
    let token = f
        .hmac
        .sign(&claims("https://hmac.test", &["api"], json!({})));
    expect::passed(&send(&token));
}

#[test]
fn algorithm_outside_the_providers_list_is_refused() {
    let f = fixture();
    let iss = "https://limited.test";
    expect::passed(&send(&f.limited_es.sign(&claims(iss, &["api"], json!({})))));
    let rsa = f.limited_rsa.sign(&claims(iss, &["api"], json!({})));
    expect::invalid_token(&send(&rsa), "alg RS256 is not allowed");
}

#[test]
fn bad_signature_is_refused() {
    let token = key("RS256").sign(&valid_claims());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut raw = mint::b64_decode(sig).unwrap();
    raw[10] ^= 1;
    expect::invalid_token(
        &send(&format!("{}.{}", input, b64(&raw))),
        "signature is invalid",
    );
}

#[test]
fn token_signed_by_an_unknown_key_with_a_known_kid_is_refused() {
    let stranger = SigningKey::es256("es256");
    expect::invalid_token(
        &send(&stranger.sign(&valid_claims())),
        "signature is invalid",
    );
}

#[test]
fn issuer_must_match_exactly() {
    for iss in [
        "https://issuer.test/",
        "https://ISSUER.test",
        "https://other.test",
    ] {
        let token = key("ES256").sign(&claims(iss, &["api"], json!({})));
        expect::invalid_token(&send(&token), "is not accepted");
    }
    let no_iss = key("ES256").sign(&claims(ISS, &["api"], json!({"iss": null})));
    expect::invalid_token(&send(&no_iss), "has no issuer");
}

#[test]
fn any_configured_audience_is_accepted() {
    for aud in [
        json!(["other", "api"]),
        json!("api"),
        json!(["https://api.example.com/"]),
    ] {
        let token = key("ES256").sign(&claims(ISS, &[], json!({"aud": aud})));
        expect::passed(&send(&token));
    }
}

#[test]
fn token_for_another_audience_is_refused() {
    for aud in [json!(["other"]), json!([]), Value::Null] {
        let token = key("ES256").sign(&claims(ISS, &[], json!({"aud": aud})));
        expect::invalid_token(&send(&token), "audience");
    }
}

#[test]
fn expired_token_is_refused() {
    let now = tokengate_testkit::now();
    let token = key("RS256").sign(&claims(
        ISS,
        &["api"],
        json!({"exp": now - 120, "iat": now - 3600, "nbf": now - 3600}),
    ));
    expect::invalid_token(&send(&token), "has expired");
}

#[test]
fn expiry_within_the_clock_skew_is_tolerated() {
    let now = tokengate_testkit::now();
    let token = key("RS256").sign(&claims(
        ISS,
        &["api"],
        json!({"exp": now - 20, "iat": now - 3600, "nbf": now - 3600}),
    ));
    expect::passed(&send(&token));
}

#[test]
fn token_not_yet_valid_is_refused() {
    let now = tokengate_testkit::now();
    let token = key("RS256").sign(&claims(ISS, &["api"], json!({"nbf": now + 600})));
    expect::invalid_token(&send(&token), "not valid yet");
}

#[test]
fn not_before_within_the_clock_skew_is_tolerated() {
    let now = tokengate_testkit::now();
    let token = key("RS256").sign(&claims(ISS, &["api"], json!({"nbf": now + 20})));
    expect::passed(&send(&token));
}

#[test]
fn token_larger_than_the_limit_is_refused() {
    let padding = "x".repeat(9000);
    let token = key("ES256").sign(&claims(ISS, &["api"], json!({"padding": padding})));
    assert!(token.len() > 8192);
    expect::invalid_token(&send(&token), "more than the limit of 8192");
}

#[test]
fn malformed_base64_is_refused() {
    let token = key("ES256").sign(&valid_claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1].insert(3, '+');
    expect::invalid_token(&send(&parts.join(".")), "payload is not base64url");
}

#[test]
fn malformed_json_is_refused() {
    let token = key("ES256").sign_raw(
        r#"{"alg":"ES256","kid":"es256"}"#,
        r#"{"iss":"https://issuer.test",}"#,
    );
    expect::invalid_token(&send(&token), "payload is not valid JSON");
}

#[test]
fn claims_of_the_wrong_type_are_refused() {
    let token = key("ES256").sign(&claims(ISS, &["api"], json!({"exp": "tomorrow"})));
    expect::invalid_token(&send(&token), "\"exp\" must be a number");
}

#[test]
fn something_that_is_not_a_jwt_is_refused() {
    expect::invalid_token(&send("opaque-token-value"), "three parts");
}

#[test]
fn the_token_is_never_echoed_or_logged() {
    let token = key("RS256").sign(&claims(ISS, &["nope"], json!({})));
    let r = send(&token);
    expect::invalid_token(&r, "audience");
    let signature = token.rsplit_once('.').unwrap().1;
    assert!(!r.body.contains(signature));
    assert!(!r.headers.iter().any(|(_, v)| v.contains(signature)));
    assert!(
        !fixture().envoy.log().contains(signature),
        "the token's signature is in Envoy's log"
    );
}
