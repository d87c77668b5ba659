//! The decision engine: from a request's headers to a [`Decision`], with the per-VM cache of
//! verified tokens. No I/O: the host hands in the headers and the time, and acts on the result.

use crate::cache::BoundedCache;
use crate::decision::{CacheUse, Decision, Denial, DenyReason, Outcome};
use crate::extract::{self, Extraction, HeaderList, TokenSource};
use crate::jwt;
use crate::policy::{Access, Requirements, RouteKey, RouteRule, Shortfall};
use crate::principal::Principal;
use crate::settings::Settings;
use crate::verify::{self, FailureKind, TokenError};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::rc::Rc;

/// The request as the filter sees it: all headers, pseudo-headers included.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub headers: &'a HeaderList,
}

impl<'a> Request<'a> {
    pub fn new(headers: &'a HeaderList) -> Self {
        Request { headers }
    }

    /// The first value of a header, lossily decoded.
    pub fn header(&self, name: &str) -> Option<Cow<'a, str>> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v))
    }
}

/// A token that passed signature, issuer and time checks for one provider.
#[derive(Debug)]
pub struct VerifiedToken {
    pub provider: usize,
    pub kid: Option<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub aud: Vec<String>,
    pub claims: Map<String, Value>,
    pub principal: Principal,
}

/// The engine of one filter configuration.
pub struct Gate {
    settings: Settings,
    cache: BoundedCache<VerifiedToken>,
}

impl Gate {
    pub fn new(settings: Settings) -> Gate {
        let cache = BoundedCache::new(settings.token_cache.limits);
        Gate { settings, cache }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Number of tokens in the verified-token cache.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Decides about one request at `now` (Unix seconds).
    pub fn decide(&mut self, req: &Request<'_>, now: u64) -> Decision {
        let settings = &self.settings;
        let method = req.header(":method").unwrap_or_default();
        let full_path = req.header(":path").unwrap_or_default();
        let path = full_path.split(['?', '#']).next().unwrap_or_default();
        let authority = req.header(":authority").unwrap_or_default();
        let rule = settings.routes.select(&RouteKey {
            method: &method,
            path,
            host: strip_port(&authority),
        });
        let mut decision = Decision {
            outcome: Outcome::Allowed,
            enforced: !(settings.dry_run || rule.dry_run),
            denial: None,
            upstream_headers: Vec::new(),
            remove_header: None,
            cache: CacheUse::NotUsed,
            rule: rule.name.clone(),
            detail: String::new(),
        };
        let realm = settings.realm.as_str();

        let requirements = match &rule.access {
            Access::Deny => {
                let why = format!("no rule allows {} {}", method, path);
                let denial = Denial::access_denied(&why);
                return finish_denied(decision, settings, DenyReason::Forbidden, denial, why);
            }
            Access::Anonymous => None,
            Access::Token(requirements) => Some(requirements),
        };

        let (token, source) = match extract::extract(&settings.sources, req.headers, &full_path) {
            Extraction::Found { token, source } => (token, source),
            Extraction::Missing if requirements.is_none() => {
                decision.detail = "anonymous request allowed".into();
                return finish_allowed(decision, settings);
            }
            Extraction::Missing => {
                let why = format!("no access token in {}", describe_sources(&settings.sources));
                let denial = Denial::missing(realm, &why);
                return finish_denied(decision, settings, DenyReason::Missing, denial, why);
            }
            Extraction::Invalid(e) => {
                let why = e.to_string();
                let denial = Denial::invalid_request(realm, &why);
                return finish_denied(decision, settings, DenyReason::Malformed, denial, why);
            }
        };
        if settings.forward.remove_token_header {
            if let Some(TokenSource::Header { name, .. }) = settings.sources.get(source) {
                decision.remove_header = Some(name.clone());
            }
        }

        let verified = match authenticate(settings, &mut self.cache, &token, rule, now) {
            Ok((verified, cache)) => {
                decision.cache = cache;
                verified
            }
            Err((error, cache)) => {
                decision.cache = cache;
                let why = error.to_string();
                let denial = Denial::invalid_token(realm, &why);
                return finish_denied(decision, settings, reason_of(error.kind()), denial, why);
            }
        };
        let provider = &settings.providers[verified.provider];
        let no_requirements = Requirements::default();
        let requirements = requirements.unwrap_or(&no_requirements);
        let audiences = requirements
            .audiences
            .as_ref()
            .unwrap_or(&provider.audiences);
        if !audiences.accepts(&verified.aud) {
            let why = TokenError::AudienceNotAllowed.to_string();
            let detail = format!(
                "{} (provider {}, kid {:?})",
                why, provider.name, verified.kid
            );
            let denial = Denial::invalid_token(realm, &why);
            return finish_denied(decision, settings, DenyReason::Audience, denial, detail);
        }
        let header = |name: &str| req.header(name).map(Cow::into_owned);
        if let Err(shortfall) = requirements.check(&verified.principal, &verified.claims, &header) {
            let why = describe_shortfall(requirements, &shortfall);
            let denial =
                Denial::insufficient_scope(realm, &why, &requirements.required_names(&shortfall));
            let detail = format!("{} (provider {})", why, provider.name);
            return finish_denied(decision, settings, DenyReason::Forbidden, denial, detail);
        }
        decision.upstream_headers = forwarded_headers(settings, &verified);
        decision.detail = format!(
            "token of provider {} accepted (kid {:?})",
            provider.name, verified.kid
        );
        finish_allowed(decision, settings)
    }
}

/// Verifies `token` for the providers `rule` accepts, through the cache.
fn authenticate(
    settings: &Settings,
    cache: &mut BoundedCache<VerifiedToken>,
    token: &str,
    rule: &RouteRule,
    now: u64,
) -> Result<(Rc<VerifiedToken>, CacheUse), (TokenError, CacheUse)> {
    let max = settings.max_token_bytes;
    if token.len() > max {
        return Err((
            TokenError::TooLarge {
                len: token.len(),
                max,
            },
            CacheUse::NotUsed,
        ));
    }
    let allowed = |p: usize| rule.providers.is_empty() || rule.providers.contains(&p);

    if let Some(hit) = cache.get(token, now) {
        if allowed(hit.provider) {
            let skew = settings.providers[hit.provider].clock_skew;
            return match verify::check_time(hit.exp, hit.nbf, now, skew) {
                Ok(()) => Ok((hit, CacheUse::Hit)),
                Err(error) => {
                    cache.remove(token);
                    Err((error, CacheUse::Hit))
                }
            };
        }
    }

    let jwt = jwt::parse(token).map_err(|m| (TokenError::from(m), CacheUse::Miss))?;
    let iss = jwt.claims.iss.as_deref();
    let mut first_error = None;
    for (index, provider) in settings.providers.iter().enumerate() {
        if !allowed(index) || !provider.accepts_issuer(iss) {
            continue;
        }
        // Time first, as Envoy does: an expired token costs no signature check.
        let checked = verify::check_time(jwt.claims.exp, jwt.claims.nbf, now, provider.clock_skew)
            .and_then(|()| verify::verify_signature(&jwt, &provider.keys, provider.algorithms));
        if let Err(e) = checked {
            first_error.get_or_insert(e);
            continue;
        }
        let principal = Principal::from_claims(&jwt.claims.all, &provider.claims);
        let size = 2 * jwt.payload_len + principal.heap_size();
        let ttl_end = now.saturating_add(settings.token_cache.ttl_seconds);
        let expires_at = match jwt.claims.exp {
            Some(exp) => ttl_end.min(exp.saturating_add(provider.clock_skew).saturating_add(1)),
            None => ttl_end,
        };
        let verified = VerifiedToken {
            provider: index,
            kid: jwt.kid,
            exp: jwt.claims.exp,
            nbf: jwt.claims.nbf,
            aud: jwt.claims.aud,
            claims: jwt.claims.all,
            principal,
        };
        return Ok((
            cache.insert(token, verified, size, expires_at),
            CacheUse::Miss,
        ));
    }
    let error = first_error.unwrap_or_else(|| TokenError::UnknownIssuer(iss.map(str::to_owned)));
    Err((error, CacheUse::Miss))
}

fn reason_of(kind: FailureKind) -> DenyReason {
    match kind {
        FailureKind::Malformed => DenyReason::Malformed,
        FailureKind::Signature => DenyReason::Signature,
        FailureKind::Expired => DenyReason::Expired,
        FailureKind::NotYetValid => DenyReason::NotYetValid,
        FailureKind::Issuer => DenyReason::Issuer,
        FailureKind::Audience => DenyReason::Audience,
    }
}

fn finish_allowed(mut decision: Decision, settings: &Settings) -> Decision {
    if !decision.enforced {
        decision.upstream_headers.push((
            settings.dry_run_header.clone(),
            format!("allow; rule={}", decision.rule),
        ));
    }
    decision
}

fn finish_denied(
    mut decision: Decision,
    settings: &Settings,
    reason: DenyReason,
    denial: Denial,
    detail: String,
) -> Decision {
    decision.outcome = Outcome::Denied(reason);
    if !decision.enforced {
        // Dry run: the request goes on, without any claim headers, carrying what we would
        // have answered.
        decision.upstream_headers = vec![(
            settings.dry_run_header.clone(),
            format!(
                "deny; status={}; reason={}; rule={}",
                denial.status,
                reason.label(),
                decision.rule
            ),
        )];
        decision.remove_header = None;
    }
    decision.denial = Some(denial);
    decision.detail = detail;
    decision
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // [v6]:port
        return authority
            .split_once(']')
            .map_or(authority, |(host, _)| &authority[..host.len() + 1]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

fn describe_sources(sources: &[TokenSource]) -> String {
    sources
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_shortfall(req: &Requirements, shortfall: &Shortfall) -> String {
    let list = |mode: crate::policy::SetMode, names: &[String]| {
        let how = match mode {
            crate::policy::SetMode::AnyOf => "any of",
            crate::policy::SetMode::AllOf => "all of",
        };
        format!("{} {}", how, names.join(", "))
    };
    match shortfall {
        Shortfall::Roles => match &req.roles {
            Some(r) => {
                let org = match &r.org {
                    Some(crate::policy::OrgSource::Fixed(id)) => format!(" in organisation {}", id),
                    Some(crate::policy::OrgSource::Header(h)) => {
                        format!(" in the organisation named by {}", h)
                    }
                    None => String::new(),
                };
                format!(
                    "the token lacks the roles this route requires ({}{})",
                    list(r.roles.mode, &r.roles.names),
                    org
                )
            }
            None => "the token lacks the required roles".into(),
        },
        Shortfall::RolesNoOrg(header) => {
            format!("this route checks roles in the organisation named by the {} header, and the request has none", header)
        }
        Shortfall::Permissions => match &req.permissions {
            Some(p) => format!(
                "the token lacks the permissions this route requires ({})",
                list(p.mode, &p.names)
            ),
            None => "the token lacks the required permissions".into(),
        },
        Shortfall::Scopes => match &req.scopes {
            Some(s) => format!(
                "the token lacks the scopes this route requires ({})",
                list(s.mode, &s.names)
            ),
            None => "the token lacks the required scopes".into(),
        },
        Shortfall::Claim(path) => format!("the token's {} claim does not satisfy this route", path),
    }
}

/// The claim headers for the upstream. Values with control characters are dropped rather
/// than forwarded (header injection).
fn forwarded_headers(settings: &Settings, token: &VerifiedToken) -> Vec<(String, String)> {
    let fwd = &settings.forward;
    let mut out = Vec::new();
    let mut push = |header: &String, value: String| {
        if !value.is_empty() && !value.chars().any(|c| c.is_control()) {
            out.push((header.clone(), value));
        }
    };
    for c in &fwd.claims {
        if let Some(value) = c.claim.lookup(&token.claims).and_then(header_value) {
            push(&c.header, value);
        }
    }
    if let Some(h) = &fwd.roles_header {
        push(
            h,
            token.principal.role_names().collect::<Vec<_>>().join(","),
        );
    }
    if let Some(h) = &fwd.permissions_header {
        push(h, token.principal.permissions.join(","));
    }
    if let Some(h) = &fwd.scopes_header {
        push(h, token.principal.scopes.join(","));
    }
    if let Some(h) = &fwd.provider_header {
        push(h, settings.providers[token.provider].name.clone());
    }
    out
}

/// A claim as a header value: strings, numbers and booleans as text; arrays joined with
/// commas; objects as their keys (the ZITADEL roles object becomes its role names).
fn header_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|v| match v {
                    Value::Array(_) | Value::Object(_) | Value::Null => None,
                    other => header_value(other),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Object(map) => Some(map.keys().cloned().collect::<Vec<_>>().join(",")),
        Value::Null => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_the_authority() {
        assert_eq!(strip_port("api.example.com:8080"), "api.example.com");
        assert_eq!(strip_port("api.example.com"), "api.example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn claim_values_become_header_text() {
        use serde_json::json;
        assert_eq!(header_value(&json!("a")).as_deref(), Some("a"));
        assert_eq!(header_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(header_value(&json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(header_value(&json!(true)).as_deref(), Some("true"));
        assert_eq!(
            header_value(&json!(["a", 1, {"x": 1}, "b"])).as_deref(),
            Some("a,1,b")
        );
        assert_eq!(
            header_value(&json!({"admin": {}, "user": {}})).as_deref(),
            Some("admin,user")
        );
        assert_eq!(header_value(&Value::Null), None);
    }
}
