//! Why a request gets the answer it gets, for the `tokengate explain` command: the engine
//! itself ([`Gate::evaluate_traced`]) reports each check as it takes it, so the steps are the
//! filter's own and cannot drift from it. The token is never part of the output.

use crate::engine::gate::{Gate, Request, Trace, Verdict};
use crate::policy::decision::{Decision, Outcome};
use crate::time::UnixMillis;
use crate::token::extract::{self, Extraction};
use crate::token::jwt;
use serde_json::{Map, Value};

/// One check and its result (`None`: information only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub check: String,
    pub passed: Option<bool>,
    pub detail: String,
}

/// The walk through one request.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub steps: Vec<Step>,
    /// The token's claims, when it could be decoded.
    pub claims: Option<Map<String, Value>>,
    /// What the filter decides (`None`: it would wait for keys or an introspection answer).
    pub decision: Option<Decision>,
}

/// Records the engine's steps.
struct Steps(Vec<Step>);

impl Trace for Steps {
    const ON: bool = true;
    fn step(&mut self, check: &'static str, passed: Option<bool>, detail: String) {
        self.0.push(Step {
            check: check.to_owned(),
            passed,
            detail,
        });
    }
}

/// Explains the decision for `req` at `now_ms`. Nothing waits here: keys not fetched and
/// introspection answers not cached are reported as the filter would find them at once.
pub fn explain(gate: &mut Gate, req: &Request<'_>, now_ms: UnixMillis) -> Explanation {
    let mut steps = Steps(Vec::new());
    let decision = match gate.evaluate_traced(req, now_ms, false, &mut steps) {
        Verdict::Decided(d) => Some(d),
        Verdict::Wait(_) => None,
    };
    let mut steps = steps.0;
    let detail = match &decision {
        Some(d) => {
            let status = match (d.outcome, &d.denial) {
                (Outcome::Allowed, _) => "allowed: the request goes upstream".to_owned(),
                (Outcome::Denied(reason), Some(denial)) => {
                    format!("{} ({}): {}", denial.status, reason.label(), d.detail)
                }
                (Outcome::Denied(reason), None) => reason.label().to_owned(),
            };
            let mode = if d.enforced {
                ""
            } else {
                " [dry run: let through anyway]"
            };
            format!("{}{}", status, mode)
        }
        None => "the filter would wait for keys or an introspection answer".to_owned(),
    };
    steps.push(Step {
        check: "decision".into(),
        passed: decision.as_ref().map(|d| d.outcome == Outcome::Allowed),
        detail,
    });
    Explanation {
        steps,
        claims: token_claims(gate, req),
        decision,
    }
}

/// The claims of the request's token, when it is a JWT (shown beside the steps).
fn token_claims(gate: &Gate, req: &Request<'_>) -> Option<Map<String, Value>> {
    let settings = gate.settings();
    let path = req.header(":path").unwrap_or_default();
    match extract::extract(&settings.sources, req.headers, &path) {
        Extraction::Found { token, .. } => jwt::parse(&token).ok().map(|j| j.claims.all),
        Extraction::Missing | Extraction::Invalid(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::headers::HeaderMap;
    use crate::support::b64;

    const SECRET: &[u8] = b"a test secret of thirty-two bytes";
    const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

    /// A gate for one provider with an inline HS256 key; `extra` is merged into the provider.
    fn gate(extra: serde_json::Value, rules: serde_json::Value) -> Gate {
        let mut provider = serde_json::json!({
            "issuer": "https://issuer.test", "audiences": ["api"], "algorithms": ["HS256"],
            "jwks": {"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": b64::encode(SECRET)}]}
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            provider[k] = v.clone();
        }
        let config = serde_json::json!({
            "providers": {"p": provider}, "rules": rules, "default": "authenticated"
        });
        let (settings, _) = crate::config::settings::compile_str(&config.to_string()).unwrap();
        Gate::new(settings)
    }

    fn token() -> String {
        let header = b64::encode(br#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#);
        let claims = format!(
            r#"{{"iss":"https://issuer.test","aud":"api","sub":"u1","exp":{}}}"#,
            NOW.as_secs() + 600
        );
        let input = format!("{}.{}", header, b64::encode(claims.as_bytes()));
        let mac = hmac_sha256::HMAC::mac(input.as_bytes(), SECRET);
        format!("{}.{}", input, b64::encode(&mac))
    }

    fn request(authority: &str) -> HeaderMap {
        HeaderMap::from_pairs([
            (":method", "GET".to_owned()),
            (":path", "/orders".to_owned()),
            (":authority", authority.to_owned()),
            ("authorization", format!("Bearer {}", token())),
        ])
    }

    fn status(decision: &Option<Decision>) -> u16 {
        match decision {
            Some(d) if d.outcome == Outcome::Allowed => 200,
            Some(d) => d.denial.as_ref().map_or(0, |r| r.status),
            None => 0,
        }
    }

    fn filter_status(gate: &mut Gate, headers: &HeaderMap) -> u16 {
        match gate.evaluate(&Request::new(headers), NOW, false) {
            Verdict::Decided(d) => status(&Some(d)),
            Verdict::Wait(_) => 0,
        }
    }

    fn step<'a>(e: &'a Explanation, check: &str) -> &'a Step {
        e.steps
            .iter()
            .find(|s| s.check == check)
            .unwrap_or_else(|| panic!("no {} step in {:?}", check, e.steps))
    }

    #[test]
    fn an_ipv6_authority_with_a_port_selects_the_rule_of_its_host() {
        let rules = serde_json::json!([{"name": "loopback-v6", "match": {"hosts": ["[::1]"]}, "deny": true}]);
        let mut gate = gate(serde_json::json!({}), rules);
        let headers = request("[::1]:8080");
        let explained = explain(&mut gate, &Request::new(&headers), NOW);
        assert!(
            step(&explained, "rule").detail.contains("rule loopback-v6"),
            "{:?}",
            explained.steps
        );
        assert_eq!(status(&explained.decision), 403);
        assert_eq!(filter_status(&mut gate, &headers), 403);
    }

    #[test]
    fn a_provider_that_introspects_jwts_is_reported_as_the_filter_decides() {
        let introspection = serde_json::json!({"introspection": {
            "cluster": "idp", "endpoint": "http://idp.test/introspect",
            "client_id": "gate", "client_secret": "s3cret", "introspect_jwts": true
        }});
        let mut gate = gate(introspection, serde_json::json!([]));
        let headers = request("api.test");
        let explained = explain(&mut gate, &Request::new(&headers), NOW);
        let introspection = step(&explained, "introspection");
        assert_eq!(introspection.passed, None);
        assert!(
            introspection.detail.contains("introspect_jwts"),
            "{}",
            introspection.detail
        );
        assert_eq!(step(&explained, "signature").passed, Some(true));
        assert_eq!(status(&explained.decision), 503);
        assert_eq!(filter_status(&mut gate, &headers), 503);
    }

    #[test]
    fn no_step_repeats_the_token() {
        let mut gate = gate(serde_json::json!({}), serde_json::json!([]));
        let headers = request("api.test");
        let explained = explain(&mut gate, &Request::new(&headers), NOW);
        let signature = token().rsplit('.').next().unwrap_or_default().to_owned();
        for s in &explained.steps {
            assert!(!s.detail.contains(&signature), "{:?}", s);
        }
        assert_eq!(status(&explained.decision), 200);
    }
}
