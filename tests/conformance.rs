#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! The JWT conformance corpus (`tests/conformance/jwt_cases.json`, from Envoy's and
//! jwt_verify_lib's own test suites) run end to end through Envoy on the wall clock.
//!
//! Every case whose key set tokengate can take runs; each case gets its own provider and a
//! route `/case/<n>` that requires it, all in one Envoy. A case whose key set tokengate refuses
//! at configuration time runs in an Envoy of its own, which must refuse the configuration
//! (that counts as a reject). Skipped cases are listed, with their reason, in
//! `tests/conformance/skipped.md`; the run fails if that list is not exactly what was skipped.
//! Cases where tokengate's stricter defaults give the opposite verdict on purpose (no `exp`,
//! audiences compared exactly) are listed, with their reason, in
//! `tests/conformance/deviations.md`: the harness expects the opposite verdict for exactly
//! those, and the run fails if that list is not exactly the set of cases that deviated.
//! Only accept vs reject is compared: tokengate answers 401 where Envoy answers 403 for a
//! foreign audience (see README, "Differences from Envoy's jwt_authn").

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use tokengate_testkit::envoy::{expect_refused, EnvoyOptions};
use tokengate_testkit::{http, Envoy};

const CORPUS: &str = include_str!("conformance/jwt_cases.json");
const SKIPPED: &str = include_str!("conformance/skipped.md");
const DEVIATIONS: &str = include_str!("conformance/deviations.md");

enum Plan {
    Run { provider: Value },
    ConfigRefused { provider: Value },
    Skip(&'static str),
}

/// The key set to configure, following the corpus README: `jwks_normalized` when present,
/// `jwks_converted` for PEM cases, the key set as given otherwise.
fn plan(case: &Value) -> Plan {
    let keys = match case["key_format"].as_str().unwrap() {
        "x509_map" => {
            return Plan::Skip(
                "X.509 certificate maps are not a key format tokengate takes (JWK Sets only)",
            )
        }
        "pem" => case["jwks_converted"].clone(),
        "jwks" | "invalid" => {
            if case.get("jwks_normalized").is_some() {
                case["jwks_normalized"].clone()
            } else {
                case["jwks"].clone()
            }
        }
        other => panic!("unknown key_format {}", other),
    };
    let mut provider = Map::new();
    provider.insert("jwks".into(), keys);
    if let Some(iss) = case.get("issuer").and_then(Value::as_str) {
        provider.insert("issuer".into(), json!(iss));
    }
    if let Some(auds) = case.get("audiences").and_then(Value::as_array) {
        if !auds.is_empty() {
            provider.insert("audiences".into(), json!(auds));
        }
    }
    // Envoy treats a skew of 0 as unset (60 s).
    let skew = case
        .get("clock_skew_seconds")
        .and_then(Value::as_u64)
        .filter(|s| *s != 0)
        .unwrap_or(60);
    provider.insert("clock_skew_seconds".into(), json!(skew));
    let provider = Value::Object(provider);
    let alone = config(vec![("p".to_string(), provider.clone())], vec![]);
    match tokengate_core::config::settings::compile_str(&alone.to_string()) {
        Ok(_) => Plan::Run { provider },
        Err(_) => Plan::ConfigRefused { provider },
    }
}

fn config(providers: Vec<(String, Value)>, rules: Vec<Value>) -> Value {
    json!({
        "providers": providers.into_iter().collect::<Map<String, Value>>(),
        "rules": rules,
        "default": "deny",
        // Verdicts must come from verification, not from tokengate's own size cap.
        "max_token_bytes": 65536,
    })
}

fn authorization(case: &Value) -> Option<String> {
    match case.get("authorization_header") {
        Some(Value::Null) => None,
        Some(Value::String(h)) => Some(h.clone()),
        Some(other) => panic!("bad authorization_header {}", other),
        None => Some(format!("Bearer {}", case["token"].as_str().unwrap())),
    }
}

#[test]
fn conformance_corpus_agrees_with_envoy() {
    let cases: Vec<Value> = serde_json::from_str(CORPUS).unwrap();
    let mut providers = Vec::new();
    let mut rules = Vec::new();
    let mut running = Vec::new();
    let mut refused_config = Vec::new();
    let mut skipped: BTreeMap<String, &str> = BTreeMap::new();
    for (n, case) in cases.iter().enumerate() {
        let id = case["id"].as_str().unwrap().to_owned();
        match plan(case) {
            Plan::Skip(reason) => {
                skipped.insert(id, reason);
            }
            Plan::ConfigRefused { provider } => refused_config.push((n, provider)),
            Plan::Run { provider } => {
                let name = format!("c{}", n);
                rules.push(json!({"match": {"path": {"exact": format!("/case/{}", n)}}, "providers": [name]}));
                providers.push((name, provider));
                running.push(n);
            }
        }
    }

    let refused_count = refused_config.len();
    let documented = listed(DEVIATIONS);
    let mut tally = Tally {
        documented: &documented,
        agree: 0,
        as_documented: 0,
        deviated: BTreeMap::new(),
        disagreements: Vec::new(),
    };
    let envoy = Envoy::start(&config(providers, rules));
    for n in running {
        let case = &cases[n];
        let auth = authorization(case);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = http::get(envoy.port, &format!("/case/{}", n), &headers);
        let accepted = r.reached_upstream();
        assert!(
            accepted || r.status == 401 || r.status == 403,
            "case {}: unexpected {} {}",
            case["id"],
            r.status,
            r.body
        );
        tally.record(case, accepted, &format!("{} {}", r.status, r.body));
    }
    drop(envoy);

    for (n, provider) in refused_config {
        let case = &cases[n];
        let rule = json!({"match": {"path": {"exact": "/"}}, "providers": ["p"]});
        let log = expect_refused(EnvoyOptions::new(&config(
            vec![("p".into(), provider)],
            vec![rule],
        )));
        assert!(
            log.contains("tokengate: invalid configuration: providers.p.jwks"),
            "case {}: {}",
            case["id"],
            log
        );
        tally.record(case, false, "configuration refused");
    }

    let Tally {
        agree,
        as_documented,
        deviated,
        disagreements,
        ..
    } = tally;
    let listed_skips = listed(SKIPPED);
    let actual: Vec<String> = skipped.keys().cloned().collect();
    println!(
        "conformance: {} agree, {} deviate as documented, {} disagree, {} skipped ({} of the agreeing cases ran as refused configurations)",
        agree,
        as_documented,
        disagreements.len(),
        skipped.len(),
        refused_count
    );
    for (id, reason) in &skipped {
        println!("  skipped {}: {}", id, reason);
    }
    for (id, got) in &deviated {
        println!("  deviates {}: tokengate answered {}", id, got);
    }
    for d in &disagreements {
        println!("  DISAGREE {}", d);
    }
    assert_eq!(
        listed_skips, actual,
        "tests/conformance/skipped.md must list exactly the skipped cases"
    );
    let deviated_ids: Vec<String> = deviated.keys().cloned().collect();
    assert_eq!(
        documented, deviated_ids,
        "tests/conformance/deviations.md must list exactly the cases whose verdict differs from the corpus"
    );
    assert!(
        disagreements.is_empty(),
        "{} disagreement(s) with the corpus and deviations.md",
        disagreements.len()
    );
    assert_eq!(agree + as_documented + skipped.len(), cases.len());
}

/// The verdicts so far, against the corpus and the documented deviations.
struct Tally<'a> {
    documented: &'a [String],
    /// Cases with the corpus's verdict, as expected.
    agree: usize,
    /// Listed cases with the opposite verdict, refused as expected.
    as_documented: usize,
    /// Every case with the opposite verdict (listed or not): id -> tokengate's answer.
    deviated: BTreeMap<String, String>,
    disagreements: Vec<String>,
}

impl Tally<'_> {
    fn record(&mut self, case: &Value, accepted: bool, got: &str) {
        let id = case["id"].as_str().unwrap();
        let corpus = case["expect_wallclock"].as_str().unwrap() == "accept";
        let documented = self.documented.iter().any(|d| d == id);
        if accepted != corpus {
            self.deviated.insert(id.to_owned(), got.to_owned());
        }
        // A documented deviation is always the stricter verdict: the corpus accepts the token
        // and tokengate refuses it with 401 invalid_token.
        let as_expected = if documented {
            corpus && !accepted && got.starts_with("401 ") && got.contains("invalid_token")
        } else {
            accepted == corpus
        };
        if as_expected && documented {
            self.as_documented += 1;
        } else if as_expected {
            self.agree += 1;
        } else {
            self.disagreements.push(format!(
                "{}: the corpus expects {} ({}){}, tokengate answered {}",
                id,
                case["expect_wallclock"],
                case["reason_wallclock"],
                if documented {
                    "; deviations.md lists the case, so a 401 invalid_token was expected"
                } else {
                    ""
                },
                got
            ));
        }
    }
}

/// Case ids listed in a markdown list of the form "- `id`: reason", sorted (a duplicate stays).
fn listed(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split_once('`').map(|(id, _)| id.to_owned()))
        .collect();
    ids.sort();
    ids
}
