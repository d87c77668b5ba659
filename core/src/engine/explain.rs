//! Why a request gets the answer it gets: the checks the filter makes, one by one, for the
//! `tokengate explain` command. The verdict itself always comes from [`Gate::evaluate`]; the
//! steps re-run the same checks to say which passed and which failed. The token is never
//! part of the output.

use crate::config::settings::KeySource;
use crate::engine::gate::{Gate, Request, Verdict};
use crate::policy::decision::{Decision, Outcome};
use crate::policy::rules::{Access, Requirements, RouteKey};
use crate::provider::ProviderId;
use crate::token::extract::{self, Extraction};
use crate::token::jwt;
use crate::token::principal::Principal;
use crate::token::verify::{self, TokenError};
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

fn step(steps: &mut Vec<Step>, check: &str, passed: Option<bool>, detail: impl Into<String>) {
    steps.push(Step {
        check: check.to_owned(),
        passed,
        detail: detail.into(),
    });
}

fn when(now: u64, t: u64) -> String {
    if t >= now {
        format!("{} (in {} s)", t, t - now)
    } else {
        format!("{} ({} s ago)", t, now - t)
    }
}

/// Explains the decision for `req` at `now_ms`.
pub fn explain(gate: &mut Gate, req: &Request<'_>, now_ms: u64) -> Explanation {
    let now = now_ms / 1000;
    let mut steps = Vec::new();
    let mut claims_out = None;
    let settings = gate.settings();
    let method = req.header(":method").unwrap_or_default();
    let full_path = req.header(":path").unwrap_or_default();
    let path = full_path.split(['?', '#']).next().unwrap_or_default();
    let authority = req.header(":authority").unwrap_or_default();
    let host = match crate::request::edge::canonical_host(&authority) {
        Ok(host) => host,
        Err(e) => {
            step(&mut steps, "request", Some(false), e.to_string());
            ""
        }
    };
    if settings.require_normal_paths {
        if let Err(e) = crate::request::edge::check_path(path) {
            step(&mut steps, "request", Some(false), e.to_string());
        }
    }
    let rule = settings.routes.select(&RouteKey {
        method: &method,
        path,
        host,
    });
    let access = match &rule.access {
        Access::Deny => "deny".to_owned(),
        Access::Anonymous => "anonymous allowed".to_owned(),
        Access::Token(_) => "a valid token".to_owned(),
    };
    step(
        &mut steps,
        "rule",
        None,
        format!(
            "{} {} (host {}) matches rule {:?}: {}",
            method, path, host, rule.name, access
        ),
    );

    let requirements = match &rule.access {
        Access::Token(r) => Some(r.clone()),
        _ => None,
    };
    if !matches!(rule.access, Access::Deny) {
        match extract::extract(&settings.sources, req.headers, &full_path) {
            Extraction::Missing => step(
                &mut steps,
                "token",
                Some(requirements.is_none()),
                "no token in the request",
            ),
            Extraction::Invalid(e) => step(&mut steps, "token", Some(false), e.to_string()),
            Extraction::Found { token, source } => {
                let from = settings
                    .sources
                    .get(source)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                step(
                    &mut steps,
                    "token",
                    Some(true),
                    format!("{} bytes from {}", token.len(), from),
                );
                if token.len() > settings.max_token_bytes {
                    step(
                        &mut steps,
                        "size",
                        Some(false),
                        format!("more than max_token_bytes ({})", settings.max_token_bytes),
                    );
                } else if !jwt::looks_like_jwt(&token) {
                    let introspector = settings.providers_by_id().find(|(id, p)| {
                        (rule.providers.is_empty() || rule.providers.contains(id))
                            && p.introspection.is_some()
                    });
                    match introspector {
                        Some((_, p)) => step(
                            &mut steps,
                            "introspection",
                            None,
                            format!("an opaque token: provider {} introspects it (explain does not call the endpoint)", p.name),
                        ),
                        None => step(&mut steps, "structure", Some(false), "not a JWT, and no provider of this rule introspects opaque tokens"),
                    }
                } else {
                    jwt_steps(
                        gate,
                        &mut steps,
                        &mut claims_out,
                        rule.providers.clone(),
                        requirements.as_ref(),
                        req,
                        &token,
                        now,
                    );
                }
            }
        }
    }

    let decision = match gate.evaluate(req, now_ms, false) {
        Verdict::Decided(d) => Some(d),
        Verdict::Wait(_) => None,
    };
    match &decision {
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
            step(
                &mut steps,
                "decision",
                Some(d.outcome == Outcome::Allowed),
                format!("{}{}", status, mode),
            );
        }
        None => step(
            &mut steps,
            "decision",
            None,
            "the filter would wait for keys or an introspection answer",
        ),
    }
    Explanation {
        steps,
        claims: claims_out,
        decision,
    }
}

#[allow(clippy::too_many_arguments)]
fn jwt_steps(
    gate: &Gate,
    steps: &mut Vec<Step>,
    claims_out: &mut Option<Map<String, Value>>,
    rule_providers: Vec<ProviderId>,
    requirements: Option<&Requirements>,
    req: &Request<'_>,
    token: &str,
    now: u64,
) {
    let settings = gate.settings();
    let parsed = match jwt::parse(token) {
        Ok(p) => p,
        Err(m) => return step(steps, "structure", Some(false), m.to_string()),
    };
    step(
        steps,
        "structure",
        Some(true),
        format!(
            "JWT, alg {}, kid {}",
            parsed.alg,
            parsed.kid.as_deref().unwrap_or("(none)")
        ),
    );
    *claims_out = Some(parsed.claims.all.clone());
    let c = &parsed.claims;
    let times = [("exp", c.exp), ("nbf", c.nbf)]
        .iter()
        .filter_map(|(n, t)| t.map(|t| format!("{} {}", n, when(now, t))))
        .collect::<Vec<_>>()
        .join(", ");
    step(
        steps,
        "claims",
        None,
        format!(
            "iss {:?}, sub {:?}, aud {:?}{}",
            c.iss.as_deref().unwrap_or(""),
            c.sub.as_deref().unwrap_or(""),
            c.aud,
            if times.is_empty() {
                String::new()
            } else {
                format!(", {}", times)
            }
        ),
    );
    let mut any = false;
    for (index, provider) in settings.providers_by_id() {
        if !(rule_providers.is_empty() || rule_providers.contains(&index)) {
            continue;
        }
        let name = format!("provider {}", provider.name);
        if !provider.accepts_issuer(c.iss.as_deref()) {
            step(
                steps,
                &name,
                Some(false),
                format!(
                    "expects issuer {:?}",
                    provider.issuer.as_deref().unwrap_or("")
                ),
            );
            continue;
        }
        any = true;
        step(steps, &name, Some(true), "issuer matches");
        let time = verify::check_time(c.exp, c.nbf, now, provider.clock_skew);
        step(
            steps,
            "time",
            Some(time.is_ok()),
            match &time {
                Ok(()) => format!("within exp/nbf (clock skew {} s)", provider.clock_skew),
                Err(e) => e.to_string(),
            },
        );
        let rules = verify::check_claims(&parsed, &provider.jwt_rules, provider.clock_skew, now);
        step(
            steps,
            "claim rules",
            Some(rules.is_ok()),
            match &rules {
                Ok(()) => format!(
                    "required claims present ({})",
                    provider.jwt_rules.required_claims.join(", ")
                ),
                Err(e) => e.to_string(),
            },
        );
        let keys = match &provider.keys {
            KeySource::Inline(k) => Some(std::rc::Rc::clone(k)),
            KeySource::Remote(_) => gate.key_view(index).and_then(|v| v.keys.clone()),
            KeySource::None => None,
        };
        let Some(keys) = keys else {
            step(
                steps,
                "signature",
                Some(false),
                "no keys for this provider (remote keys not fetched)",
            );
            continue;
        };
        let sig = verify::verify_signature(&parsed, &keys, provider.algorithms);
        step(
            steps,
            "signature",
            Some(sig.is_ok()),
            match &sig {
                Ok(()) => format!("valid ({} key(s) in the set)", keys.len()),
                Err(e) => e.to_string(),
            },
        );
        if sig.is_err() || time.is_err() || rules.is_err() {
            continue;
        }
        let audiences = requirements
            .and_then(|r| r.audiences.as_ref())
            .unwrap_or(&provider.audiences);
        let aud_ok = audiences.accepts(&c.aud);
        step(
            steps,
            "audience",
            Some(aud_ok),
            if audiences.is_empty() {
                "no audience configured: any".to_owned()
            } else {
                format!(
                    "accepted: {:?}{}",
                    audiences.values(),
                    if aud_ok {
                        ""
                    } else {
                        "; the token has none of them"
                    }
                )
            },
        );
        let principal = Principal::from_claims(&c.all, &provider.claims);
        step(
            steps,
            "grants",
            None,
            format!(
                "roles {:?}, permissions {:?}, scopes {:?}",
                principal.role_names().collect::<Vec<_>>(),
                principal.permissions,
                principal.scopes
            ),
        );
        if let Some(r) = requirements {
            requirement_steps(steps, r, &principal, &c.all, req);
        }
    }
    if !any {
        step(
            steps,
            "provider",
            Some(false),
            TokenError::UnknownIssuer(c.iss.clone()).to_string(),
        );
    }
}

fn requirement_steps(
    steps: &mut Vec<Step>,
    r: &Requirements,
    principal: &Principal,
    claims: &Map<String, Value>,
    req: &Request<'_>,
) {
    let header = |name: &str| req.header(name).map(|v| v.into_owned());
    let mut check = |name: &str, part: Requirements, what: String| {
        let result = part.check(principal, claims, &header);
        step(
            steps,
            name,
            Some(result.is_ok()),
            match result {
                Ok(()) => what,
                Err(shortfall) => format!("{}: not met ({:?})", what, shortfall),
            },
        );
    };
    if let Some(roles) = &r.roles {
        let what = format!(
            "roles {:?} {:?}{}",
            roles.roles.mode,
            roles.roles.names,
            roles
                .org
                .as_ref()
                .map(|o| format!(" in {:?}", o))
                .unwrap_or_default()
        );
        check(
            "roles",
            Requirements {
                roles: Some(roles.clone()),
                ..Requirements::default()
            },
            what,
        );
    }
    if let Some(p) = &r.permissions {
        check(
            "permissions",
            Requirements {
                permissions: Some(p.clone()),
                ..Requirements::default()
            },
            format!("permissions {:?} {:?}", p.mode, p.names),
        );
    }
    if let Some(s) = &r.scopes {
        check(
            "scopes",
            Requirements {
                scopes: Some(s.clone()),
                ..Requirements::default()
            },
            format!("scopes {:?} {:?}", s.mode, s.names),
        );
    }
    for c in &r.claims {
        check(
            "claim",
            Requirements {
                claims: vec![c.clone()],
                ..Requirements::default()
            },
            format!("{} {:?}", c.path, c.test),
        );
    }
}
