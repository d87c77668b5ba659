//! The decision engine: from a request's headers to a [`Decision`], with the per-VM cache of
//! verified tokens. No I/O: the host hands in the headers and the time, and acts on the result.

use crate::config::raw::OversizedHeaders;
use crate::config::settings::{KeySource, Settings};
use crate::engine::forward::forwarded_headers;
use crate::engine::trace::{note, note_time};
pub use crate::engine::trace::{NoTrace, Trace};
use crate::engine::wording::{
    describe_claims, describe_kid, describe_requirements, describe_shortfall, describe_sources,
};
use crate::introspection::{token_key, Introspected, IntrospectionError};
use crate::keys::jwks::KeySet;
use crate::policy::decision::{CacheUse, Decision, Denial, DenyReason, Outcome};
use crate::policy::rules::{Access, OrgSource, Requirements, RouteKey, RouteRule};
use crate::provider::ProviderId;
use crate::request::edge;
use crate::request::headers::HeaderMap;
use crate::support::cache::BoundedCache;
use crate::support::heap;
use crate::time::UnixMillis;
use crate::token::extract::{self, Extraction};
use crate::token::jwt;
use crate::token::principal::Principal;
use crate::token::verify::{self, TokenError};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::rc::Rc;

/// The request as the filter sees it: all headers, pseudo-headers included.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
}

impl<'a> Request<'a> {
    pub fn new(headers: &'a HeaderMap) -> Self {
        Request { headers }
    }

    /// The first value of a header, lossily decoded.
    pub fn header(&self, name: &str) -> Option<Cow<'a, str>> {
        self.headers
            .get(name)
            .map(|raw| match crate::support::scan::utf8(raw) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(raw),
            })
    }
}

/// A token that passed signature, issuer and time checks for one provider.
#[derive(Debug)]
pub struct VerifiedToken {
    pub provider: ProviderId,
    pub kid: Option<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub aud: Vec<String>,
    pub claims: Map<String, Value>,
    pub principal: Principal,
}

impl VerifiedToken {
    /// What the token owns on the heap ([`crate::support::heap`]), for the caches' byte bounds.
    pub fn heap_size(&self) -> usize {
        self.kid.as_ref().map_or(0, heap::string)
            + heap::strings(&self.aud)
            + heap::map(&self.claims)
            + self.principal.heap_size()
    }
}

pub use crate::keys::sync::KeyView;

/// Why a request waits instead of being decided now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The provider's keys have not been fetched yet.
    FirstKeys,
    /// The token names a `kid` the keys lack; a refetch may bring it.
    UnknownKid,
    /// The token's introspection answer is not cached; a callout will bring it.
    Introspection,
}

/// A token to introspect: its cache key (hex SHA-256) and the token itself, which only the
/// callout body ever carries.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingIntrospection {
    pub key: String,
    pub token: String,
}

impl std::fmt::Debug for PendingIntrospection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingIntrospection({})", self.key)
    }
}

/// A request to park until what it waits for arrives or `deadline` passes; then
/// decide again with waiting disallowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub provider: ProviderId,
    pub reason: WaitReason,
    pub deadline: UnixMillis,
    /// For [`WaitReason::Introspection`].
    pub introspect: Option<PendingIntrospection>,
}

impl Wait {
    /// A wait for `provider`'s keys (first keys, or a refetch for an unknown `kid`).
    fn for_keys(provider: ProviderId, reason: WaitReason, deadline: UnixMillis) -> Wait {
        Wait {
            provider,
            reason,
            deadline,
            introspect: None,
        }
    }
}

/// A cached introspection answer.
#[derive(Debug)]
pub enum IntrospectionEntry {
    Active(Rc<VerifiedToken>),
    Inactive,
    /// A recent failure, answered with 503 for a short while rather than called again at once.
    Failed(IntrospectionError),
}

impl IntrospectionEntry {
    /// What the entry owns on the heap ([`crate::support::heap`]): an active answer's token is in an
    /// `Rc` block of its own.
    pub fn heap_size(&self) -> usize {
        match self {
            IntrospectionEntry::Active(token) => heap::rc::<VerifiedToken>() + token.heap_size(),
            IntrospectionEntry::Inactive => 0,
            IntrospectionEntry::Failed(e) => e.heap_size(),
        }
    }
}

/// The engine's answer: a decision now, or wait for keys or an introspection answer.
#[derive(Debug, Clone)]
pub enum Verdict {
    Decided(Decision),
    Wait(Wait),
}

/// The engine of one filter configuration: its settings, which never change, and what one
/// VM learns while it runs ([`Learned`]).
pub struct Gate {
    settings: Settings,
    learned: Learned,
    /// Whether allowed decisions carry a `detail` (formatting it is a good part of a cache
    /// hit's work, and only a trace log reads it).
    describe_allowed: bool,
    /// Rules whose oversized forwarded headers were already reported.
    oversize_reported: Vec<String>,
}

/// What one VM learns while a configuration runs: verified tokens, introspection answers and
/// its view of remote keys, each per provider where it is a provider's.
struct Learned {
    tokens: BoundedCache<VerifiedToken>,
    /// Per provider; `None` for inline keys.
    views: Vec<Option<KeyView>>,
    /// Per provider with introspection, keyed by the token's hex SHA-256.
    introspected: Vec<Option<BoundedCache<IntrospectionEntry>>>,
}

/// How long a failed introspection (no answer, an error status, an answer that is not RFC
/// 7662) is answered from the cache (503) before a new callout.
const INTROSPECTION_FAILURE_TTL_S: u64 = 2;

impl Gate {
    pub fn new(settings: Settings) -> Gate {
        let cache = BoundedCache::new(settings.token_cache.limits);
        let views = settings
            .providers
            .iter()
            .map(|p| matches!(p.keys, KeySource::Remote(_)).then(KeyView::default))
            .collect();
        let introspected = settings
            .providers
            .iter()
            .map(|p| {
                p.introspection.as_ref().map(|i| {
                    BoundedCache::new(crate::support::cache::CacheLimits {
                        max_entries: i.cache_max_entries,
                        max_bytes: i.cache_max_bytes,
                    })
                })
            })
            .collect();
        Gate {
            settings,
            learned: Learned {
                tokens: cache,
                views,
                introspected,
            },
            describe_allowed: true,
            oversize_reported: Vec::new(),
        }
    }

    /// Whether allowed decisions get a `detail` (on by default; the filter turns it off
    /// unless Envoy logs at trace level).
    pub fn describe_allowed(&mut self, on: bool) {
        self.describe_allowed = on;
    }

    /// Stores an introspection answer (or failure) for the token with this key.
    pub fn record_introspection(
        &mut self,
        provider: ProviderId,
        key: &str,
        answer: Result<Introspected, IntrospectionError>,
        now: UnixMillis,
    ) {
        let now = now.as_secs();
        let Some(p) = self.settings.provider(provider) else {
            return;
        };
        let Some(settings) = &p.introspection else {
            return;
        };
        let Some(Some(cache)) = self.learned.introspected.get_mut(provider.index()) else {
            return;
        };
        // Every entry outlives the answer's arrival, so that the requests waiting for it find
        // it: an entry stored already expired would leave them without an answer and make the
        // next request call again (a callout per request).
        let negative_until = now + settings.negative_ttl_s.max(1);
        let (entry, expires_at) = match answer {
            Ok(Introspected::Inactive) => (IntrospectionEntry::Inactive, negative_until),
            Err(e) => (
                IntrospectionEntry::Failed(e),
                now + INTROSPECTION_FAILURE_TTL_S,
            ),
            Ok(Introspected::Active(members)) => match verified_from_answer(provider, p, members) {
                Ok(mut token) => {
                    self.settings.keep_used_claims(&mut token.claims);
                    // The same time rules as a JWT: usable until `exp` plus the clock skew. An
                    // answer already past that is kept as long as an inactive one, and
                    // refused (expired) from the cache meanwhile.
                    let ttl_end = now + settings.cache_ttl_s;
                    let usable_until = token.exp.map_or(ttl_end, |exp| {
                        ttl_end.min(exp.saturating_add(p.clock_skew).saturating_add(1))
                    });
                    let expires_at = if usable_until > now {
                        usable_until
                    } else {
                        negative_until
                    };
                    (IntrospectionEntry::Active(Rc::new(token)), expires_at)
                }
                // A well-formed answer whose claims are unusable (another issuer, claims of
                // the wrong type) says the same when asked again at once.
                Err(e) => (IntrospectionEntry::Failed(e), negative_until),
            },
        };
        let size = entry.heap_size();
        cache.insert(key, entry, size, expires_at);
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Sizes of the caches, for gauges: (verified JWTs, their bytes, introspection answers,
    /// their bytes).
    pub fn cache_sizes(&self) -> (usize, usize, usize, usize) {
        let (entries, bytes) = self
            .learned
            .introspected
            .iter()
            .flatten()
            .fold((0, 0), |(e, b), c| (e + c.len(), b + c.bytes()));
        (
            self.learned.tokens.len(),
            self.learned.tokens.bytes(),
            entries,
            bytes,
        )
    }

    /// The host's latest view of a remote provider's keys.
    pub fn set_key_view(&mut self, provider: ProviderId, view: KeyView) {
        if let Some(slot) = self.learned.views.get_mut(provider.index()) {
            *slot = Some(view);
        }
    }

    pub fn key_view(&self, provider: ProviderId) -> Option<&KeyView> {
        self.learned
            .views
            .get(provider.index())
            .and_then(Option::as_ref)
    }

    /// A 400 for a request tokengate cannot read the way the upstream will (see
    /// [`crate::request::edge`]); no rule was chosen for it.
    fn refuse_edge(&self, e: edge::EdgeError) -> Decision {
        let why = e.to_string();
        finish_denied(
            self.blank_decision("(request)"),
            &self.settings,
            DenyReason::BadRequest,
            Denial::bad_request(&why),
            why,
        )
    }

    fn blank_decision(&self, rule: &str) -> Decision {
        Decision {
            outcome: Outcome::Allowed,
            enforced: !self.settings.dry_run,
            denial: None,
            upstream_headers: Vec::new(),
            token_removal: None,
            cache: CacheUse::NotUsed,
            introspection_cache: CacheUse::NotUsed,
            rule: rule.to_owned(),
            detail: String::new(),
            warning: None,
        }
    }

    /// Decides about one request at `now_ms`. With `may_wait`, a request
    /// whose token needs keys that are on their way gets [`Verdict::Wait`]; the host parks it
    /// and calls again, with `may_wait` false, once the keys change or the wait ends.
    pub fn evaluate(&mut self, req: &Request<'_>, now_ms: UnixMillis, may_wait: bool) -> Verdict {
        self.evaluate_traced(req, now_ms, may_wait, &mut NoTrace)
    }

    /// [`Gate::evaluate`], reporting each check to `trace` as it is taken.
    pub fn evaluate_traced<T: Trace>(
        &mut self,
        req: &Request<'_>,
        now_ms: UnixMillis,
        may_wait: bool,
        trace: &mut T,
    ) -> Verdict {
        let settings = &self.settings;
        let method = req.header(":method").unwrap_or_default();
        let full_path = req.header(":path").unwrap_or_default();
        let path = full_path.split(['?', '#']).next().unwrap_or_default();
        let authority = req.header(":authority").unwrap_or_default();
        let host = match edge::canonical_host(&authority) {
            Ok(host) => host,
            Err(e) => {
                note(trace, "request", Some(false), || e.to_string());
                return Verdict::Decided(self.refuse_edge(e));
            }
        };
        if settings.require_normal_paths {
            if let Err(e) = edge::check_path(path) {
                note(trace, "request", Some(false), || e.to_string());
                return Verdict::Decided(self.refuse_edge(e));
            }
        }
        let rule = settings.routes.select(&RouteKey {
            method: &method,
            path,
            host,
        });
        note(trace, "rule", None, || {
            let access = match &rule.access {
                Access::Deny => "denies every request".to_owned(),
                Access::Anonymous => "lets requests without a token through".to_owned(),
                Access::Token(r) => describe_requirements(r),
            };
            format!(
                "{} {} (host {}) matches rule {}, which {}",
                method, path, host, rule.name, access
            )
        });
        let mut decision = Decision {
            outcome: Outcome::Allowed,
            enforced: !(settings.dry_run || rule.dry_run),
            denial: None,
            upstream_headers: Vec::new(),
            token_removal: None,
            cache: CacheUse::NotUsed,
            introspection_cache: CacheUse::NotUsed,
            rule: rule.name.clone(),
            detail: String::new(),
            warning: None,
        };
        let realm = settings.realm.as_str();

        let requirements = match &rule.access {
            Access::Deny => {
                let why = format!("no rule allows {} {}", method, path);
                let denial = Denial::access_denied(&why);
                return refused(decision, settings, DenyReason::Forbidden, denial, why);
            }
            Access::Anonymous => None,
            Access::Token(requirements) => Some(requirements),
        };
        let org_header = requirements
            .and_then(|r| r.roles.as_ref())
            .and_then(|r| match &r.org {
                Some(OrgSource::Header(name)) => Some(name),
                _ => None,
            });
        if let Some(name) = org_header {
            if let Err(e) = edge::single_org(req.headers, name) {
                let why = e.to_string();
                note(trace, "request", Some(false), || why.clone());
                let denial = Denial::bad_request(&why);
                return refused(decision, settings, DenyReason::BadRequest, denial, why);
            }
        }

        let (token, source) = match extract::extract(&settings.sources, req.headers, &full_path) {
            Extraction::Found { token, source } => {
                note(trace, "token", Some(true), || {
                    let from = settings.sources.get(source).map(ToString::to_string);
                    format!("{} bytes from {}", token.len(), from.unwrap_or_default())
                });
                (token, source)
            }
            Extraction::Missing if requirements.is_none() => {
                note(trace, "token", Some(true), || {
                    "none, and this rule needs none".into()
                });
                decision.detail = "anonymous request allowed".into();
                return Verdict::Decided(finish_allowed(decision, settings));
            }
            Extraction::Missing => {
                let why = format!("no access token in {}", describe_sources(&settings.sources));
                note(trace, "token", Some(false), || why.clone());
                let denial = Denial::missing(realm, &why);
                return refused(decision, settings, DenyReason::Missing, denial, why);
            }
            Extraction::Invalid(e) => {
                let why = e.to_string();
                note(trace, "token", Some(false), || why.clone());
                let denial = Denial::invalid_request(realm, &why);
                return refused(decision, settings, DenyReason::Malformed, denial, why);
            }
        };
        if settings.forward.remove_token {
            if let Some(source) = settings.sources.get(source) {
                decision.token_removal = extract::removal(source, req.headers, &full_path);
            }
        }

        let checked = authenticate(
            settings,
            &mut self.learned,
            &token,
            rule,
            now_ms,
            may_wait,
            trace,
        );
        // For an opaque token the cache that answered is the introspection cache.
        let opaque = !jwt::looks_like_jwt(&token);
        let note_cache = |decision: &mut Decision, cache: CacheUse| {
            if opaque {
                decision.introspection_cache = cache;
            } else {
                decision.cache = cache;
            }
        };
        let verified = match checked {
            Authentication::Verified(verified, cache) => {
                note_cache(&mut decision, cache);
                let jwt_introspected = settings
                    .provider(verified.provider)
                    .and_then(|p| p.introspection.as_ref())
                    .is_some_and(|i| i.introspect_jwts);
                if !opaque && jwt_introspected {
                    decision.introspection_cache = CacheUse::Hit;
                }
                verified
            }
            Authentication::Wait(wait) => return Verdict::Wait(wait),
            Authentication::Failed(error, cache) => {
                note_cache(&mut decision, cache);
                let why = error.to_string();
                let denial = match &error {
                    TokenError::KeysUnavailable { retry_after_s, .. } => {
                        Denial::unavailable(&why, *retry_after_s)
                    }
                    TokenError::IntrospectionUnavailable { .. } => Denial::unavailable(&why, 1),
                    _ => Denial::invalid_token(realm, &why),
                };
                return refused(decision, settings, DenyReason::from(&error), denial, why);
            }
        };
        let Some(provider) = settings.provider(verified.provider) else {
            // A token verified under these settings names one of their providers; anything
            // else is refused rather than checked against another provider's rules.
            let why = TokenError::UnknownIssuer(None).to_string();
            let denial = Denial::invalid_token(realm, &why);
            return refused(decision, settings, DenyReason::Issuer, denial, why);
        };
        let no_requirements = Requirements::default();
        let requirements = requirements.unwrap_or(&no_requirements);
        let audiences = requirements
            .audiences
            .as_ref()
            .unwrap_or(&provider.audiences);
        let audience_ok = audiences.accepts(&verified.aud);
        note(trace, "audience", Some(audience_ok), || {
            if audiences.is_empty() {
                "any (none configured)".into()
            } else if audience_ok {
                format!("one of the accepted: {}", audiences.values().join(", "))
            } else {
                format!(
                    "none of the token's audiences is accepted ({})",
                    audiences.values().join(", ")
                )
            }
        });
        if !audience_ok {
            let why = TokenError::AudienceNotAllowed.to_string();
            let detail = format!(
                "{} (provider {}, {})",
                why,
                provider.name,
                describe_kid(verified.kid.as_deref())
            );
            let denial = Denial::invalid_token(realm, &why);
            return refused(decision, settings, DenyReason::Audience, denial, detail);
        }
        note(trace, "grants", None, || {
            let p = &verified.principal;
            let list = |names: Vec<&str>| {
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            };
            format!(
                "roles: {}; permissions: {}; scopes: {}",
                list(p.role_names().collect()),
                list(p.permissions.iter().map(String::as_str).collect()),
                list(p.scopes.iter().map(String::as_str).collect())
            )
        });
        let header = |name: &str| req.header(name).map(Cow::into_owned);
        let met = requirements.check(&verified.principal, &verified.claims, &header);
        note(trace, "requirements", Some(met.is_ok()), || match &met {
            Ok(()) => describe_requirements(requirements),
            Err(shortfall) => describe_shortfall(requirements, shortfall),
        });
        if let Err(shortfall) = met {
            let why = describe_shortfall(requirements, &shortfall);
            let denial =
                Denial::insufficient_scope(realm, &why, &requirements.required_names(&shortfall));
            let mut detail = format!("{} (provider {})", why, provider.name);
            for list in &verified.principal.misshapen {
                detail.push_str(&format!(
                    "; the token's {} claim is not of the declared shape and granted nothing",
                    list
                ));
            }
            return refused(decision, settings, DenyReason::Forbidden, denial, detail);
        }
        let (headers, oversized) = forwarded_headers(settings, &verified);
        decision.upstream_headers = headers;
        if !oversized.is_empty() {
            let why = format!(
                "the token's {} would make a header longer than forward.max_header_bytes ({} bytes)",
                oversized.join(", "),
                settings.forward.max_header_bytes
            );
            if settings.forward.oversized_headers == OversizedHeaders::Refuse {
                let denial = Denial::access_denied(&why);
                let detail = format!("{} (provider {})", why, provider.name);
                return refused(decision, settings, DenyReason::Forbidden, denial, detail);
            }
            if !self.oversize_reported.contains(&rule.name) {
                self.oversize_reported.push(rule.name.clone());
                decision.warning = Some(format!(
                    "rule {}: {}; the header is left out (forward.oversized_headers: omit; said once per rule)",
                    rule.name, why
                ));
            }
        }
        if self.describe_allowed {
            decision.detail = format!(
                "token of provider {} accepted ({})",
                provider.name,
                describe_kid(verified.kid.as_deref())
            );
        }
        Verdict::Decided(finish_allowed(decision, settings))
    }
}

/// The outcome of authenticating a token for a rule.
enum Authentication {
    Verified(Rc<VerifiedToken>, CacheUse),
    Failed(TokenError, CacheUse),
    Wait(Wait),
}

/// Verifies `token` for the providers `rule` accepts, through the cache.
#[allow(clippy::too_many_arguments)]
fn authenticate<T: Trace>(
    settings: &Settings,
    learned: &mut Learned,
    token: &str,
    rule: &RouteRule,
    now_ms: UnixMillis,
    may_wait: bool,
    trace: &mut T,
) -> Authentication {
    let Learned {
        tokens: cache,
        views,
        introspected,
    } = learned;
    let now = now_ms.as_secs();
    let max = settings.max_token_bytes;
    if token.len() > max {
        note(trace, "size", Some(false), || {
            format!("{} bytes, more than max_token_bytes ({})", token.len(), max)
        });
        return Authentication::Failed(
            TokenError::TooLarge {
                len: token.len(),
                max,
            },
            CacheUse::NotUsed,
        );
    }
    let allowed = |p: ProviderId| rule.providers.is_empty() || rule.providers.contains(&p);

    if let Some(hit) = cache.get(token, now) {
        if allowed(hit.provider) {
            let provider = settings.provider(hit.provider);
            note(trace, "token cache", Some(true), || {
                let name = provider.map_or("", |p| p.name.as_str());
                format!("verified earlier for provider {}", name)
            });
            let skew = provider.map_or(0, |p| p.clock_skew);
            let time = verify::check_time(hit.exp, hit.nbf, now, skew);
            note_time(trace, &time, skew);
            return match time {
                Ok(()) => also_introspect(
                    settings,
                    introspected,
                    hit,
                    token,
                    CacheUse::Hit,
                    now_ms,
                    may_wait,
                    trace,
                ),
                Err(error) => {
                    cache.remove(token);
                    Authentication::Failed(error, CacheUse::Hit)
                }
            };
        }
    }

    if !jwt::looks_like_jwt(token) {
        if let Some((id, _)) = settings
            .providers_by_id()
            .find(|(id, p)| allowed(*id) && p.introspection.is_some())
        {
            return introspect(
                settings,
                introspected,
                id,
                token,
                None,
                now_ms,
                may_wait,
                trace,
            );
        }
    }
    let jwt = match jwt::parse(token) {
        Ok(jwt) => jwt,
        Err(m) => {
            note(trace, "structure", Some(false), || m.to_string());
            if !jwt::looks_like_jwt(token) {
                // A token that is not even shaped like a JWT was in no cache's reach.
                return Authentication::Failed(m.into(), CacheUse::NotUsed);
            }
            return Authentication::Failed(m.into(), CacheUse::Miss);
        }
    };
    note(trace, "structure", Some(true), || {
        format!(
            "a JWT, alg {}, kid {}",
            jwt.alg,
            jwt.kid
                .as_deref()
                .map_or("(none)".into(), |k| format!("{:?}", k))
        )
    });
    note(trace, "claims", None, || describe_claims(&jwt.claims, now));
    let iss = jwt.claims.iss.as_deref();
    let mut first_error = None;
    for (index, provider) in settings.providers_by_id() {
        if !allowed(index) {
            continue;
        }
        if !provider.accepts_issuer(iss) {
            note(trace, "issuer", Some(false), || {
                let expected = provider.issuer.as_deref().unwrap_or("");
                format!("provider {} expects {:?}", provider.name, expected)
            });
            continue;
        }
        note(trace, "issuer", Some(true), || {
            format!("provider {}", provider.name)
        });
        // Time first, as Envoy does: an expired token costs no signature check and no keys.
        let time = verify::check_time(jwt.claims.exp, jwt.claims.nbf, now, provider.clock_skew);
        note_time(trace, &time, provider.clock_skew);
        if let Err(e) = time {
            first_error.get_or_insert(e);
            continue;
        }
        let rules = verify::check_claims(&jwt, &provider.jwt_rules, provider.clock_skew, now);
        note(trace, "claim rules", Some(rules.is_ok()), || match &rules {
            Ok(()) => format!(
                "required claims present ({})",
                provider.jwt_rules.required_claims.join(", ")
            ),
            Err(e) => e.to_string(),
        });
        if let Err(e) = rules {
            first_error.get_or_insert(e);
            continue;
        }
        let view = views.get(index.index()).and_then(Option::as_ref);
        let keys: &KeySet = match (&provider.keys, view) {
            (KeySource::Inline(keys), _) => keys,
            (KeySource::Remote(_), Some(view)) => match view.usable(now_ms) {
                Some(keys) => keys,
                None => {
                    if let (Some(remote), true) = (
                        remote_of(provider),
                        may_wait && view.keys.is_none() && view.coming(now_ms),
                    ) {
                        note(trace, "keys", None, || {
                            "not fetched yet: the filter waits for them".into()
                        });
                        let deadline = now_ms.plus_ms(remote.startup_wait_ms);
                        return Authentication::Wait(Wait::for_keys(
                            index,
                            WaitReason::FirstKeys,
                            deadline,
                        ));
                    }
                    let error = TokenError::KeysUnavailable {
                        provider: provider.name.clone(),
                        retry_after_s: view.retry_after_s(now_ms),
                        detail: view.last_error.clone(),
                    };
                    note(trace, "keys", Some(false), || error.to_string());
                    first_error.get_or_insert(error);
                    continue;
                }
            },
            (KeySource::Remote(_), None) | (KeySource::None, _) => {
                let error = TokenError::NoKeyForAlg(jwt.alg);
                note(trace, "keys", Some(false), || error.to_string());
                first_error.get_or_insert(error);
                continue;
            }
        };
        let signature = verify::verify_signature(&jwt, keys, provider.algorithms);
        note(
            trace,
            "signature",
            Some(signature.is_ok()),
            || match &signature {
                Ok(()) => format!("valid ({} key(s) in the set)", keys.len()),
                Err(e) => e.to_string(),
            },
        );
        match signature {
            Ok(()) => {}
            Err(TokenError::UnknownKid(kid)) => {
                if let (Some(remote), Some(view)) = (remote_of(provider), view) {
                    if may_wait && view.refetch_coming(now_ms) {
                        note(trace, "keys", None, || {
                            "the filter refetches the keys for this kid and waits".into()
                        });
                        let deadline = now_ms
                            .plus_ms(remote.timeout_ms.saturating_mul(2).saturating_add(1000));
                        return Authentication::Wait(Wait::for_keys(
                            index,
                            WaitReason::UnknownKid,
                            deadline,
                        ));
                    }
                }
                first_error.get_or_insert(TokenError::UnknownKid(kid));
                continue;
            }
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        }
        let principal = Principal::from_claims(&jwt.claims.all, &provider.claims);
        let mut claims = jwt.claims.all;
        settings.keep_used_claims(&mut claims);
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
            claims,
            principal,
        };
        let size = verified.heap_size();
        let verified = cache.insert(token, verified, size, expires_at);
        return also_introspect(
            settings,
            introspected,
            verified,
            token,
            CacheUse::Miss,
            now_ms,
            may_wait,
            trace,
        );
    }
    let error = first_error.unwrap_or_else(|| {
        let error = TokenError::UnknownIssuer(iss.map(str::to_owned));
        note(trace, "issuer", Some(false), || error.to_string());
        error
    });
    Authentication::Failed(error, CacheUse::Miss)
}

/// A verified JWT of a provider with `introspect_jwts` is also checked against the
/// introspection answer (revocation before `exp`).
#[allow(clippy::too_many_arguments)]
fn also_introspect<T: Trace>(
    settings: &Settings,
    introspected: &mut [Option<BoundedCache<IntrospectionEntry>>],
    verified: Rc<VerifiedToken>,
    token: &str,
    cache_use: CacheUse,
    now_ms: UnixMillis,
    may_wait: bool,
    trace: &mut T,
) -> Authentication {
    let provider = verified.provider;
    let wanted = settings
        .provider(provider)
        .and_then(|p| p.introspection.as_ref())
        .is_some_and(|i| i.introspect_jwts);
    if !wanted {
        return Authentication::Verified(verified, cache_use);
    }
    match introspect(
        settings,
        introspected,
        provider,
        token,
        Some(verified),
        now_ms,
        may_wait,
        trace,
    ) {
        Authentication::Verified(v, _) => Authentication::Verified(v, cache_use),
        other => other,
    }
}

/// The introspection answer for `token` from the cache, or a wait for the callout. With
/// `jwt`, an active answer confirms that verified JWT instead of replacing its claims.
#[allow(clippy::too_many_arguments)]
fn introspect<T: Trace>(
    settings: &Settings,
    introspected: &mut [Option<BoundedCache<IntrospectionEntry>>],
    provider: ProviderId,
    token: &str,
    jwt: Option<Rc<VerifiedToken>>,
    now_ms: UnixMillis,
    may_wait: bool,
    trace: &mut T,
) -> Authentication {
    let now = now_ms.as_secs();
    let p = settings.provider(provider);
    let (Some(Some(cache)), Some(p), Some(config)) = (
        introspected.get_mut(provider.index()),
        p,
        p.and_then(|p| p.introspection.as_ref()),
    ) else {
        return Authentication::Failed(
            TokenError::NoKeyForAlg(crate::token::alg::Alg::Rs256),
            CacheUse::NotUsed,
        );
    };
    let key = token_key(token);
    let entry = cache.get(&key, now);
    note(
        trace,
        "introspection",
        entry
            .as_deref()
            .map(|e| matches!(e, IntrospectionEntry::Active(_))),
        || {
            let what = if jwt.is_some() {
                "this JWT (introspect_jwts)"
            } else {
                "this opaque token"
            };
            let answer = match entry.as_deref() {
                Some(IntrospectionEntry::Active(_)) => "the cached answer: active",
                Some(IntrospectionEntry::Inactive) => "the cached answer: not active",
                Some(IntrospectionEntry::Failed(_)) => "the last callout failed",
                None if may_wait => "not cached: the filter calls the endpoint and waits",
                None => "not cached, and the endpoint is not called here",
            };
            format!("provider {} introspects {}; {}", p.name, what, answer)
        },
    );
    match entry.as_deref() {
        Some(IntrospectionEntry::Active(answer)) => {
            let answer = jwt.unwrap_or_else(|| Rc::clone(answer));
            let time = verify::check_time(answer.exp, answer.nbf, now, p.clock_skew);
            note_time(trace, &time, p.clock_skew);
            match time {
                Ok(()) => Authentication::Verified(answer, CacheUse::Hit),
                Err(e) => Authentication::Failed(e, CacheUse::Hit),
            }
        }
        Some(IntrospectionEntry::Inactive) => {
            Authentication::Failed(TokenError::Inactive, CacheUse::Hit)
        }
        Some(IntrospectionEntry::Failed(e)) => {
            Authentication::Failed(introspection_unavailable(p, e), CacheUse::Hit)
        }
        None if may_wait => Authentication::Wait(Wait {
            provider,
            reason: WaitReason::Introspection,
            deadline: now_ms.plus_ms(config.timeout_ms.saturating_add(1000)),
            introspect: Some(PendingIntrospection {
                key,
                token: token.to_owned(),
            }),
        }),
        None => Authentication::Failed(
            introspection_unavailable(p, &IntrospectionError::NotSent("no answer in time".into())),
            CacheUse::Miss,
        ),
    }
}

fn introspection_unavailable(
    p: &crate::config::settings::Provider,
    e: &IntrospectionError,
) -> TokenError {
    TokenError::IntrospectionUnavailable {
        provider: p.name.clone(),
        detail: e.to_string(),
    }
}

/// A [`VerifiedToken`] from an active introspection answer, checked like a JWT's claims
/// (issuer, time); audience and requirements are checked per route as for JWTs.
fn verified_from_answer(
    index: ProviderId,
    provider: &crate::config::settings::Provider,
    members: Map<String, Value>,
) -> Result<VerifiedToken, IntrospectionError> {
    let claims =
        jwt::typed_claims(members).map_err(|m| IntrospectionError::Malformed(m.to_string()))?;
    if let (Some(expected), Some(found)) = (&provider.issuer, &claims.iss) {
        if expected != found {
            // The issuer the answer names is not repeated: it is text from the network.
            return Err(IntrospectionError::Malformed(format!(
                "names another issuer than {:?}",
                expected
            )));
        }
    }
    let principal = Principal::from_claims(&claims.all, &provider.claims);
    Ok(VerifiedToken {
        provider: index,
        kid: None,
        exp: claims.exp,
        nbf: claims.nbf,
        aud: claims.aud,
        claims: claims.all,
        principal,
    })
}

fn remote_of(
    provider: &crate::config::settings::Provider,
) -> Option<&crate::keys::remote::RemoteJwks> {
    match &provider.keys {
        KeySource::Remote(r) => Some(r),
        KeySource::Inline(_) | KeySource::None => None,
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

/// A refusal: the decision finished as denied ([`finish_denied`]).
fn refused(
    decision: Decision,
    settings: &Settings,
    reason: DenyReason,
    denial: Denial,
    detail: String,
) -> Verdict {
    Verdict::Decided(finish_denied(decision, settings, reason, denial, detail))
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
        decision.token_removal = None;
    }
    decision.denial = Some(denial);
    decision.detail = detail;
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ProviderId = ProviderId::FIRST;

    const HS256_SECRET: &[u8] = b"a test secret of thirty-two bytes";

    /// A gate with one provider holding an inline HS256 key, and a token it accepts.
    fn hs256_gate_and_token() -> (Gate, String) {
        let token =
            hs256_token(r#"{"iss":"https://issuer.test","aud":"api","sub":"u1","exp":4000000000}"#);
        (hs256_gate(), token)
    }

    /// A gate with one provider holding an inline HS256 key (audience `api`).
    fn hs256_gate() -> Gate {
        let config = format!(
            r#"{{"providers": {{"p": {{"issuer": "https://issuer.test", "audiences": ["api"],
                "jwks": {{"keys": [{{"kty": "oct", "kid": "k1", "alg": "HS256", "k": "{}"}}]}}}}}},
              "default": "authenticated"}}"#,
            crate::support::b64::encode(HS256_SECRET)
        );
        let (settings, _) = crate::config::settings::compile_str(&config).unwrap();
        Gate::new(settings)
    }

    /// A token of `payload` signed with the key of [`hs256_gate`].
    fn hs256_token(payload: &str) -> String {
        let header = crate::support::b64::encode(br#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#);
        let input = format!(
            "{}.{}",
            header,
            crate::support::b64::encode(payload.as_bytes())
        );
        let sig =
            crate::support::b64::encode(&hmac_sha256::HMAC::mac(input.as_bytes(), HS256_SECRET));
        format!("{}.{}", input, sig)
    }

    /// Verifies `token` through the gate (it must be allowed) and returns what was cached.
    fn cached(gate: &mut Gate, token: &str) -> Rc<VerifiedToken> {
        let headers = opaque_request(token);
        match gate.evaluate(&Request::new(&headers), UnixMillis(1_000_000_000), true) {
            Verdict::Decided(d) => assert_eq!(d.outcome, Outcome::Allowed, "{}", d.detail),
            Verdict::Wait(_) => panic!("inline keys never wait"),
        }
        gate.learned.tokens.get(token, 1_000_000).unwrap()
    }

    #[test]
    fn the_token_cache_counts_what_each_entry_owns() {
        let mut gate = hs256_gate();
        let mut expected = 0;
        for (i, aud_count) in [1, 50, 3].into_iter().enumerate() {
            let aud: Vec<String> = std::iter::once("api".to_owned())
                .chain((1..aud_count).map(|k| format!("2834800000000{:05}", k)))
                .collect();
            let payload = serde_json::json!({"iss": "https://issuer.test", "aud": aud,
                "sub": format!("u{}", i), "exp": 4_000_000_000u64, "scope": "a b"});
            let token = hs256_token(&payload.to_string());
            let verified = cached(&mut gate, &token);
            assert_eq!(verified.aud.len(), aud_count);
            expected += BoundedCache::<VerifiedToken>::entry_bytes(&token, verified.heap_size());
            assert_eq!(
                gate.learned.tokens.bytes(),
                expected + gate.learned.tokens.structure_bytes(),
                "the key, the Rc block, the value's heap, the table and the queue"
            );
            assert_eq!(gate.cache_sizes().1, gate.learned.tokens.bytes());
        }
    }

    #[test]
    fn a_verified_tokens_heap_grows_with_its_audiences() {
        let mut gate = hs256_gate();
        let token = |aud_count: usize| {
            let aud: Vec<String> = std::iter::once("api".to_owned())
                .chain((1..aud_count).map(|k| format!("2834800000000{:05}", k)))
                .collect();
            hs256_token(
                &serde_json::json!({"iss": "https://issuer.test", "aud": aud, "sub": "u",
                    "exp": 4_000_000_000u64})
                .to_string(),
            )
        };
        let one = cached(&mut gate, &token(1));
        let fifty = cached(&mut gate, &token(50));
        // Each of the 49 more audiences: its string and its place in the list (by capacity).
        let audiences = 49 * heap::alloc("283480000000000001".len())
            + heap::buffer::<String>(fifty.aud.capacity())
            - heap::buffer::<String>(one.aud.capacity());
        assert!(fifty.heap_size() >= one.heap_size() + audiences);
        assert_eq!(
            fifty.heap_size() - one.heap_size(),
            heap::strings(&fifty.aud) - heap::strings(&one.aud)
        );
        // The key too: the larger token, to within the allocator's rounding.
        let (small, large) = (token(1), token(50));
        assert!(
            BoundedCache::<VerifiedToken>::entry_bytes(&large, fifty.heap_size()) + 15
                >= BoundedCache::<VerifiedToken>::entry_bytes(&small, one.heap_size())
                    + (large.len() - small.len())
                    + audiences
        );
    }

    #[test]
    fn an_introspection_answer_is_counted_with_its_token_block() {
        let mut gate = introspecting_gate();
        let headers = opaque_request("opaque-token-bytes");
        let now_ms = UnixMillis(1_000_000_000);
        let key = awaited_key(&mut gate, &headers, now_ms);
        gate.record_introspection(P, &key, Ok(answer_with_exp(2_000_000)), now_ms);
        let Some(Some(cache)) = gate.learned.introspected.get_mut(0) else {
            panic!("no introspection cache")
        };
        let entry = cache.get(&key, 1_000_000).unwrap();
        let IntrospectionEntry::Active(token) = &*entry else {
            panic!("not active")
        };
        assert_eq!(
            entry.heap_size(),
            heap::rc::<VerifiedToken>() + token.heap_size()
        );
        assert_eq!(
            cache.bytes(),
            BoundedCache::<IntrospectionEntry>::entry_bytes(&key, entry.heap_size())
                + cache.structure_bytes()
        );
    }

    #[test]
    fn allowed_decisions_carry_a_detail_only_when_asked() {
        let (mut gate, token) = hs256_gate_and_token();
        let headers = HeaderMap::from_pairs([
            (":method", "GET".to_string()),
            (":path", "/".to_string()),
            (":authority", "api.test".to_string()),
            ("authorization", format!("Bearer {}", token)),
        ]);
        let decide = |gate: &mut Gate| match gate.evaluate(
            &Request::new(&headers),
            UnixMillis(1_000_000),
            true,
        ) {
            Verdict::Decided(d) => {
                assert_eq!(d.outcome, Outcome::Allowed);
                d.detail
            }
            Verdict::Wait(_) => panic!("inline keys never wait"),
        };
        assert!(
            decide(&mut gate).contains("accepted"),
            "described by default"
        );
        gate.describe_allowed(false);
        assert_eq!(decide(&mut gate), "", "a cache hit, undescribed");
        gate.describe_allowed(true);
        assert!(decide(&mut gate).contains("provider p"));
    }

    /// A gate whose only provider introspects opaque tokens (clock skew 60 s, inactive
    /// answers kept 10 s).
    fn introspecting_gate() -> Gate {
        let config = r#"{"providers": {"p": {"issuer": "https://issuer.test",
            "introspection": {"endpoint": "https://issuer.test/introspect", "cluster": "idp",
                "client_id": "c", "client_secret": "s", "negative_cache_ttl_seconds": 10}}},
            "default": "authenticated"}"#;
        Gate::new(crate::config::settings::compile_str(config).unwrap().0)
    }

    fn opaque_request(token: &str) -> HeaderMap {
        HeaderMap::get_with_bearer(token)
    }

    /// The cache key of the token `headers` carry, from the wait for its introspection.
    fn awaited_key(gate: &mut Gate, headers: &HeaderMap, now_ms: UnixMillis) -> String {
        match gate.evaluate(&Request::new(headers), now_ms, true) {
            Verdict::Wait(wait) => wait.introspect.unwrap().key,
            Verdict::Decided(d) => panic!("decided without an answer: {:?}", d.outcome),
        }
    }

    fn answer_with_exp(exp: u64) -> Introspected {
        let members = serde_json::json!({"iss": "https://issuer.test", "sub": "u", "exp": exp});
        match members {
            Value::Object(m) => Introspected::Active(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn an_introspection_answer_expired_within_the_skew_is_accepted() {
        let mut gate = introspecting_gate();
        let headers = opaque_request("opaque-token-1");
        let now_ms = UnixMillis(1_000_000_000);
        let key = awaited_key(&mut gate, &headers, now_ms);
        gate.record_introspection(P, &key, Ok(answer_with_exp(1_000_000 - 5)), now_ms);
        match gate.evaluate(&Request::new(&headers), now_ms.plus_ms(10), true) {
            Verdict::Decided(d) => assert_eq!(d.outcome, Outcome::Allowed, "{}", d.detail),
            Verdict::Wait(_) => panic!("the answer was stored already expired"),
        }
    }

    #[test]
    fn an_introspection_answer_expired_beyond_the_skew_is_refused_from_the_cache() {
        let mut gate = introspecting_gate();
        let headers = opaque_request("opaque-token-2");
        let now_ms = UnixMillis(1_000_000_000);
        let key = awaited_key(&mut gate, &headers, now_ms);
        gate.record_introspection(P, &key, Ok(answer_with_exp(1_000_000 - 200)), now_ms);
        // Refused as expired for the negative TTL, never a new callout (Wait) meanwhile.
        for later_ms in [0, 5_000, 9_000] {
            match gate.evaluate(&Request::new(&headers), now_ms.plus_ms(later_ms), true) {
                Verdict::Decided(d) => {
                    assert_eq!(d.outcome, Outcome::Denied(DenyReason::Expired));
                    assert_eq!(d.denial.map(|x| x.status), Some(401));
                }
                Verdict::Wait(_) => panic!("a new callout {} ms later", later_ms),
            }
        }
        assert!(matches!(
            gate.evaluate(&Request::new(&headers), now_ms.plus_ms(11_000), true),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn an_unusable_introspection_answer_is_not_asked_again_within_the_negative_ttl() {
        let mut gate = introspecting_gate();
        let headers = opaque_request("opaque-token-3");
        let now_ms = UnixMillis(1_000_000_000);
        let key = awaited_key(&mut gate, &headers, now_ms);
        let members = serde_json::json!({"iss": "https://other.test", "exp": 2_000_000});
        let Value::Object(members) = members else {
            unreachable!()
        };
        gate.record_introspection(P, &key, Ok(Introspected::Active(members)), now_ms);
        match gate.evaluate(&Request::new(&headers), now_ms.plus_ms(9_000), true) {
            Verdict::Decided(d) => {
                assert_eq!(d.denial.as_ref().map(|x| x.status), Some(503));
                assert!(!d.detail.contains("other.test"), "{}", d.detail);
            }
            Verdict::Wait(_) => panic!("a new callout within the negative TTL"),
        }
    }

    #[test]
    fn a_jwt_without_exp_is_refused_naming_the_claim() {
        let secret = b"a test secret of thirty-two bytes";
        let config = format!(
            r#"{{"providers": {{"p": {{"issuer": "https://issuer.test",
                "jwks": {{"keys": [{{"kty": "oct", "kid": "k1", "alg": "HS256", "k": "{}"}}]}}}}}},
              "default": "authenticated"}}"#,
            crate::support::b64::encode(secret)
        );
        let mut gate = Gate::new(crate::config::settings::compile_str(&config).unwrap().0);
        let header = crate::support::b64::encode(br#"{"alg":"HS256","kid":"k1"}"#);
        let payload = crate::support::b64::encode(br#"{"iss":"https://issuer.test","sub":"u1"}"#);
        let input = format!("{}.{}", header, payload);
        let sig = crate::support::b64::encode(&hmac_sha256::HMAC::mac(input.as_bytes(), secret));
        let headers = opaque_request(&format!("{}.{}", input, sig));
        let Verdict::Decided(d) =
            gate.evaluate(&Request::new(&headers), UnixMillis(1_000_000), true)
        else {
            panic!("inline keys never wait");
        };
        assert_eq!(d.denial.as_ref().map(|x| x.status), Some(401));
        assert!(d.detail.contains("\"exp\""), "{}", d.detail);
    }
}
