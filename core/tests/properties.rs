#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Property tests of the parsers that see untrusted input: whatever the bytes, they return a
//! value or an error, never panic; and a few invariants (cache bounds, round trips).

use proptest::prelude::*;
use serde_json::{json, Value};
use tokengate_core::introspection::read_answer;
use tokengate_core::keys::jwks::{self, KeyPolicy};
use tokengate_core::keys::remote::Answer;
use tokengate_core::request::headers::HeaderMap;
use tokengate_core::support::b64;
use tokengate_core::support::cache::{BoundedCache, CacheLimits};
use tokengate_core::token::extract::{self, TokenSource};
use tokengate_core::{config::pbstruct, config::settings, token::jwt};

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-z0-9_.:/ -]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON objects whose keys are drawn from the configuration's own vocabulary, so that the
/// compiler gets past the first unknown field now and then.
fn config_like() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "providers",
        "issuer",
        "audiences",
        "jwks",
        "keys",
        "kty",
        "crv",
        "x",
        "y",
        "n",
        "e",
        "rules",
        "match",
        "path",
        "prefix",
        "roles",
        "any_of",
        "all_of",
        "default",
        "remote_jwks",
        "cluster",
        "introspection",
        "forward",
        "claims",
        "header",
        "token_sources",
        "zitadel",
        "project_id",
        "algorithms",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0u64..5000).prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "RS256",
            "EC",
            "P-256",
            "AQAB",
            "/",
            "deny",
            "allow",
            "https://i",
            "x"
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(5, 64, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..5).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn token_parsing_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = jwt::parse(&text);
    }

    #[test]
    fn token_parsing_never_panics_on_arbitrary_segments(header in json_value(), payload in json_value(), sig in prop::collection::vec(any::<u8>(), 0..80)) {
        let token = format!("{}.{}.{}", b64::encode(header.to_string().as_bytes()), b64::encode(payload.to_string().as_bytes()), b64::encode(&sig));
        let _ = jwt::parse(&token);
    }

    #[test]
    fn registered_claims_survive_a_round_trip(iss in "[a-z:/.]{1,20}", aud in prop::collection::vec("[a-z0-9]{1,10}", 0..4), exp in 0u64..4_000_000_000) {
        let payload = json!({"iss": iss, "aud": aud, "exp": exp});
        let token = format!("{}.{}.{}", b64::encode(br#"{"alg":"RS256"}"#), b64::encode(payload.to_string().as_bytes()), b64::encode(b"s"));
        let parsed = jwt::parse(&token).unwrap();
        prop_assert_eq!(parsed.claims.iss.as_deref(), Some(iss.as_str()));
        prop_assert_eq!(parsed.claims.aud, aud);
        prop_assert_eq!(parsed.claims.exp, Some(exp));
    }

    #[test]
    fn jwks_parsing_never_panics(value in json_value()) {
        let _ = jwks::parse_jwks(&value, &KeyPolicy::default());
        let wrapped = json!({"keys": [value]});
        let _ = jwks::parse_jwks(&wrapped, &KeyPolicy { allow_hmac: true, ..KeyPolicy::default() });
    }

    #[test]
    fn jwks_parsing_never_panics_on_key_shaped_members(kty in prop::sample::select(vec!["RSA", "EC", "OKP", "oct"]), crv in prop::sample::select(vec!["P-256", "P-384", "P-521", "Ed25519", "X"]), x in prop::collection::vec(any::<u8>(), 0..140), y in prop::collection::vec(any::<u8>(), 0..140)) {
        let key = json!({"kty": kty, "crv": crv, "x": b64::encode(&x), "y": b64::encode(&y), "n": b64::encode(&x), "e": b64::encode(&y), "k": b64::encode(&x)});
        let _ = jwks::parse_jwks(&json!({"keys": [key]}), &KeyPolicy { allow_hmac: true, min_rsa_bits: 0, ..KeyPolicy::default() });
    }

    #[test]
    fn configuration_compiling_never_panics(value in config_like()) {
        let _ = settings::compile_str(&value.to_string());
        let _ = settings::compile_str(&json!({"providers": value}).to_string());
    }

    #[test]
    fn configuration_text_never_panics(text in ".{0,300}") {
        let _ = settings::compile_bytes(text.as_bytes(), &settings::no_env);
    }

    #[test]
    fn protobuf_struct_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = pbstruct::decode_struct(&bytes);
        let _ = settings::compile_bytes(&bytes, &settings::no_env);
    }

    #[test]
    fn introspection_answers_never_panic(status in prop::option::of(100u16..600), body in prop::collection::vec(any::<u8>(), 0..300), value in json_value()) {
        let _ = read_answer(&Answer { status, cache_control: None, body: &body, body_size: body.len() }, 1024);
        let text = value.to_string();
        let _ = read_answer(&Answer { status: Some(200), cache_control: None, body: text.as_bytes(), body_size: text.len() }, 1 << 20);
    }

    #[test]
    fn header_map_buffers_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(map) = HeaderMap::from_serialized(data.clone()) {
            prop_assert!(map.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() <= data.len());
        }
    }

    #[test]
    fn token_extraction_never_panics(value in prop::collection::vec(any::<u8>(), 0..200), path in ".{0,100}") {
        let headers = HeaderMap::from_pairs([
            ("authorization", &value),
            ("cookie", &value),
            ("x-token", &value),
        ]);
        let sources = [
            TokenSource::bearer(),
            TokenSource::Header { name: "x-token".into(), prefix: Some("Token ".into()) },
            TokenSource::Cookie("at".into()),
            TokenSource::Query("access_token".into()),
        ];
        let _ = extract::extract(&sources, &headers, &path);
    }

    #[test]
    fn the_cache_never_exceeds_its_bounds(ops in prop::collection::vec((0u8..40, 0usize..400, 0u64..50, any::<bool>()), 1..300)) {
        let limits = CacheLimits { max_entries: 16, max_bytes: 4000 };
        let mut cache = BoundedCache::new(limits);
        let mut now = 0;
        for (key, size, ttl, read) in ops {
            now += 1;
            let key = format!("k{}", key);
            if read {
                let _ = cache.get(&key, now);
            } else {
                cache.insert(&key, (), size, now + ttl);
            }
            prop_assert!(cache.len() <= limits.max_entries);
            prop_assert!(cache.bytes() <= limits.max_bytes);
        }
    }
}
