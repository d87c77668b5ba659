//! Route rules: which requests a rule covers, and what a token must grant there.

use crate::policy::audience::AudienceSet;
use crate::provider::ProviderId;
use crate::token::principal::{ClaimPath, Principal};
use regex_lite::Regex;
use serde_json::{Map, Value};

/// The parts of a request that rules match on.
#[derive(Debug, Clone, Copy)]
pub struct RouteKey<'a> {
    pub method: &'a str,
    /// `:path` without the query string.
    pub path: &'a str,
    /// `:authority` in canonical form ([`crate::request::edge::canonical_host`]).
    pub host: &'a str,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// A plain string prefix, as Envoy's route `prefix`.
    Prefix(String),
    /// Must match the whole path.
    Regex(Regex),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

/// A host pattern: exact (case-insensitive) or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches any non-empty label run before it.
    Suffix(String),
}

impl HostMatch {
    pub fn parse(pattern: &str) -> HostMatch {
        let lower = pattern.to_ascii_lowercase();
        match lower.strip_prefix('*') {
            Some(rest) => HostMatch::Suffix(rest.to_owned()),
            None => HostMatch::Exact(lower),
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// What a rule matches; an absent part matches everything.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    /// Upper-case method names, compared case-insensitively (frameworks upper-case the
    /// method: `post` over HTTP/2 is served as `POST`).
    pub methods: Vec<String>,
    pub hosts: Vec<HostMatch>,
}

impl RouteMatch {
    pub fn matches(&self, key: &RouteKey<'_>) -> bool {
        self.path.as_ref().is_none_or(|p| p.matches(key.path))
            && (self.methods.is_empty()
                || self
                    .methods
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(key.method)))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(key.host)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    AnyOf,
    AllOf,
}

/// "any of" / "all of" a list of names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRequirement {
    pub mode: SetMode,
    pub names: Vec<String>,
}

impl NameRequirement {
    pub fn satisfied_by(&self, has: impl Fn(&str) -> bool) -> bool {
        match self.mode {
            SetMode::AnyOf => self.names.iter().any(|n| has(n)),
            SetMode::AllOf => self.names.iter().all(|n| has(n)),
        }
    }
}

/// Where the organisation a role must be granted in comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgSource {
    Fixed(String),
    /// The organisation id the request names in this header (lower-case name).
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRequirement {
    pub roles: NameRequirement,
    pub org: Option<OrgSource>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClaimTest {
    /// The claim equals this JSON value.
    Equals(Value),
    /// The claim is an array with this element, a space-separated string with this word,
    /// or an object with this key.
    Contains(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequirement {
    pub path: ClaimPath,
    pub test: ClaimTest,
}

impl ClaimRequirement {
    pub fn satisfied_by(&self, claims: &Map<String, Value>) -> bool {
        let Some(value) = self.path.lookup(claims) else {
            return false;
        };
        match &self.test {
            ClaimTest::Equals(want) => value == want,
            ClaimTest::Contains(want) => match value {
                Value::Array(items) => items.contains(want),
                Value::String(s) => want
                    .as_str()
                    .is_some_and(|w| s.split_ascii_whitespace().any(|word| word == w)),
                Value::Object(map) => want.as_str().is_some_and(|w| map.contains_key(w)),
                _ => false,
            },
        }
    }
}

/// What a valid token must also grant on a route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requirements {
    /// Replaces the provider's audiences on this route.
    pub audiences: Option<AudienceSet>,
    pub roles: Option<RoleRequirement>,
    pub permissions: Option<NameRequirement>,
    pub scopes: Option<NameRequirement>,
    pub claims: Vec<ClaimRequirement>,
}

/// Why an authenticated request was refused on a route (403 `insufficient_scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortfall {
    Roles,
    RolesNoOrg(String),
    Permissions,
    Scopes,
    Claim(String),
}

impl Requirements {
    /// Checks everything but the audience (checked with the token's validity, 401).
    /// `header` looks up a request header by lower-case name.
    pub fn check(
        &self,
        principal: &Principal,
        claims: &Map<String, Value>,
        header: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), Shortfall> {
        if let Some(req) = &self.roles {
            let org = match &req.org {
                None => None,
                Some(OrgSource::Fixed(id)) => Some(id.clone()),
                Some(OrgSource::Header(name)) => match header(name) {
                    Some(id) if !id.is_empty() => Some(id),
                    _ => return Err(Shortfall::RolesNoOrg(name.clone())),
                },
            };
            if !req
                .roles
                .satisfied_by(|r| principal.has_role(r, org.as_deref()))
            {
                return Err(Shortfall::Roles);
            }
        }
        if let Some(req) = &self.permissions {
            if !req.satisfied_by(|p| principal.permissions.iter().any(|x| x == p)) {
                return Err(Shortfall::Permissions);
            }
        }
        if let Some(req) = &self.scopes {
            if !req.satisfied_by(|s| principal.scopes.iter().any(|x| x == s)) {
                return Err(Shortfall::Scopes);
            }
        }
        for claim in &self.claims {
            if !claim.satisfied_by(claims) {
                return Err(Shortfall::Claim(claim.path.to_string()));
            }
        }
        Ok(())
    }

    /// The names a client would need, for the RFC 6750 `scope` attribute of a 403.
    pub fn required_names(&self, shortfall: &Shortfall) -> Vec<String> {
        match shortfall {
            Shortfall::Roles | Shortfall::RolesNoOrg(_) => self
                .roles
                .as_ref()
                .map(|r| r.roles.names.clone())
                .unwrap_or_default(),
            Shortfall::Permissions => self
                .permissions
                .as_ref()
                .map(|p| p.names.clone())
                .unwrap_or_default(),
            Shortfall::Scopes => self
                .scopes
                .as_ref()
                .map(|s| s.names.clone())
                .unwrap_or_default(),
            Shortfall::Claim(_) => Vec::new(),
        }
    }
}

/// What a route demands.
#[derive(Debug, Clone)]
pub enum Access {
    /// No token needed; a token that is present is still verified (an invalid one is a 401),
    /// and a valid one's claims are forwarded.
    Anonymous,
    /// A valid token of one of the rule's providers, granting the requirements.
    Token(Requirements),
    /// Always refused (403): the configured default for unmatched requests.
    Deny,
}

/// One entry of the ordered route table. The first rule that matches decides.
#[derive(Debug, Clone)]
pub struct RouteRule {
    pub name: String,
    pub route: RouteMatch,
    pub access: Access,
    /// The providers whose tokens count here; empty means all.
    pub providers: Vec<ProviderId>,
    pub dry_run: bool,
}

/// The ordered rules plus the rule for requests no rule matches.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub rules: Vec<RouteRule>,
    pub default: RouteRule,
}

/// Methods that change state (RFC 9110 9.2.1: not safe).
pub const UNSAFE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

impl RouteTable {
    pub fn select(&self, key: &RouteKey<'_>) -> &RouteRule {
        self.rules
            .iter()
            .find(|r| r.route.matches(key))
            .unwrap_or(&self.default)
    }

    /// Write holes: a rule that guards some unsafe methods of its paths but not all of them,
    /// while a later rule (or the default) takes one of the others on the same paths with
    /// other requirements. `methods: [POST, PUT, DELETE]` above a plain read rule lets a
    /// `PATCH` through with the read rule's requirements.
    pub fn unsafe_method_gaps(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let listed = |m: &&str| rule.route.methods.iter().any(|r| r.eq_ignore_ascii_case(m));
            if rule.route.methods.is_empty() || !UNSAFE_METHODS.iter().any(&listed) {
                continue;
            }
            let unlisted: Vec<&str> = UNSAFE_METHODS
                .iter()
                .filter(|m| !listed(m))
                .copied()
                .collect();
            let later = self
                .rules
                .iter()
                .skip(i + 1)
                .chain(std::iter::once(&self.default));
            for other in later {
                let takes: Vec<&str> = unlisted
                    .iter()
                    .filter(|m| other.route.accepts_method(m))
                    .copied()
                    .collect();
                if takes.is_empty()
                    || !rule.route.may_overlap(&other.route)
                    || !other.access.may_be_weaker_than(&rule.access)
                {
                    continue;
                }
                warnings.push(format!(
                    "rule {:?} requires more for {} than rule {:?}, which takes {} on paths both match: list {} in {:?} too, or limit {:?} to safe methods (GET, HEAD, OPTIONS)",
                    rule.name,
                    rule.route.methods.join(", "),
                    other.name,
                    takes.join(", "),
                    takes.join(", "),
                    rule.name,
                    other.name
                ));
                break;
            }
        }
        warnings
    }
}

impl RouteMatch {
    fn accepts_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }

    /// Whether some request could match both (conservative: true when unsure).
    fn may_overlap(&self, other: &RouteMatch) -> bool {
        let paths = match (&self.path, &other.path) {
            (None, _) | (_, None) => true,
            (Some(PathMatch::Exact(a)), Some(PathMatch::Exact(b))) => a == b,
            (Some(PathMatch::Exact(x)), Some(p)) | (Some(p), Some(PathMatch::Exact(x))) => {
                p.matches(x)
            }
            (Some(PathMatch::Prefix(a)), Some(PathMatch::Prefix(b))) => {
                a.starts_with(b.as_str()) || b.starts_with(a.as_str())
            }
            _ => true,
        };
        let hosts = self.hosts.is_empty()
            || other.hosts.is_empty()
            || self.hosts.iter().any(|a| {
                other.hosts.iter().any(|b| {
                    a == b || matches!(a, HostMatch::Suffix(_)) || matches!(b, HostMatch::Suffix(_))
                })
            });
        paths && hosts
    }
}

impl Access {
    /// Whether a request this access lets through might not pass `than` (conservative).
    fn may_be_weaker_than(&self, than: &Access) -> bool {
        match (self, than) {
            (Access::Deny, _) => false,
            (_, Access::Deny) => true,
            (Access::Anonymous, Access::Token(_)) => true,
            (Access::Token(a), Access::Token(b)) => a != b,
            (_, Access::Anonymous) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::principal::Grant;
    use serde_json::json;

    fn gaps(config: serde_json::Value) -> Vec<String> {
        let mut config = config;
        config["providers"] = json!({"p": {"issuer": "https://i", "jwks": {"keys": [
            {"kty": "oct", "kid": "k", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMy"}]}}});
        let (settings, _) = crate::config::settings::compile_str(&config.to_string()).unwrap();
        settings.routes.unsafe_method_gaps()
    }

    #[test]
    fn a_rule_guarding_some_unsafe_methods_above_a_weaker_rule_is_a_write_hole() {
        let hole = gaps(json!({"rules": [
            {"name": "write", "match": {"path": {"prefix": "/orders"}, "methods": ["POST", "PUT", "DELETE"]},
             "permissions": {"all_of": ["orders:write"]}},
            {"name": "read", "match": {"path": {"prefix": "/orders"}}}
        ], "default": "deny"}));
        assert_eq!(hole.len(), 1, "{:?}", hole);
        assert!(
            hole[0].contains("PATCH") && hole[0].contains("\"read\""),
            "{}",
            hole[0]
        );
        // The default counts as a later rule.
        let default = gaps(json!({"rules": [
            {"name": "write", "match": {"path": {"prefix": "/orders"}, "methods": ["POST"]},
             "permissions": {"all_of": ["orders:write"]}}
        ], "default": "authenticated"}));
        assert_eq!(default.len(), 1, "{:?}", default);
    }

    #[test]
    fn safe_read_rules_and_full_write_rules_are_no_hole() {
        for config in [
            json!({"rules": [
                {"name": "read", "match": {"path": {"prefix": "/orders"}, "methods": ["GET", "HEAD", "OPTIONS"]}},
                {"name": "write", "match": {"path": {"prefix": "/orders"}}, "permissions": {"all_of": ["w"]}}
            ], "default": "deny"}),
            json!({"rules": [
                {"name": "write", "match": {"path": {"prefix": "/orders"}, "methods": ["POST", "PUT", "PATCH", "DELETE"]},
                 "permissions": {"all_of": ["w"]}},
                {"name": "read", "match": {"path": {"prefix": "/orders"}}}
            ], "default": "deny"}),
            json!({"rules": [
                {"name": "write", "match": {"path": {"prefix": "/orders"}, "methods": ["POST"]},
                 "permissions": {"all_of": ["w"]}},
                {"name": "other", "match": {"path": {"prefix": "/users"}}}
            ], "default": "deny"}),
        ] {
            assert_eq!(gaps(config.clone()), Vec::<String>::new(), "{}", config);
        }
    }

    fn key<'a>(method: &'a str, path: &'a str, host: &'a str) -> RouteKey<'a> {
        RouteKey { method, path, host }
    }

    #[test]
    fn path_matchers() {
        assert!(PathMatch::Exact("/a".into()).matches("/a"));
        assert!(!PathMatch::Exact("/a".into()).matches("/a/"));
        assert!(PathMatch::Prefix("/api/".into()).matches("/api/x"));
        assert!(!PathMatch::Prefix("/api/".into()).matches("/api"));
        let re = PathMatch::Regex(Regex::new("^(?:/orders/[0-9]+)$").unwrap());
        assert!(re.matches("/orders/12"));
        assert!(!re.matches("/orders/12/x"));
    }

    #[test]
    fn host_patterns_are_case_insensitive_and_support_wildcards() {
        assert!(HostMatch::parse("API.example.com").matches("api.EXAMPLE.com"));
        let wild = HostMatch::parse("*.example.com");
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.Example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches(".example.com"));
        assert!(!wild.matches("aexample.com"));
    }

    #[test]
    fn an_empty_match_covers_everything_and_parts_are_anded() {
        assert!(RouteMatch::default().matches(&key("GET", "/", "h")));
        let m = RouteMatch {
            path: Some(PathMatch::Prefix("/admin".into())),
            methods: vec!["POST".into()],
            hosts: vec![HostMatch::parse("h")],
        };
        assert!(m.matches(&key("POST", "/admin/x", "h")));
        assert!(!m.matches(&key("GET", "/admin/x", "h")));
        assert!(!m.matches(&key("POST", "/other", "h")));
        assert!(!m.matches(&key("POST", "/admin", "other")));
    }

    fn principal() -> Principal {
        Principal {
            roles: vec![
                Grant {
                    role: "reader".into(),
                    orgs: vec!["org1".into()],
                },
                Grant {
                    role: "writer".into(),
                    orgs: vec!["org2".into()],
                },
            ],
            permissions: vec!["posts:read".into()],
            scopes: vec!["openid".into(), "orders:read".into()],
            misshapen: Vec::new(),
        }
    }

    fn names(mode: SetMode, n: &[&str]) -> NameRequirement {
        NameRequirement {
            mode,
            names: n.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn roles_any_of_and_all_of() {
        let no_headers = |_: &str| None;
        let p = principal();
        let any = Requirements {
            roles: Some(RoleRequirement {
                roles: names(SetMode::AnyOf, &["admin", "reader"]),
                org: None,
            }),
            ..Default::default()
        };
        assert_eq!(any.check(&p, &Map::new(), &no_headers), Ok(()));
        let all = Requirements {
            roles: Some(RoleRequirement {
                roles: names(SetMode::AllOf, &["admin", "reader"]),
                org: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            all.check(&p, &Map::new(), &no_headers),
            Err(Shortfall::Roles)
        );
    }

    #[test]
    fn role_must_be_granted_in_the_organisation_the_request_names() {
        let p = principal();
        let req = Requirements {
            roles: Some(RoleRequirement {
                roles: names(SetMode::AnyOf, &["reader"]),
                org: Some(OrgSource::Header("x-org".into())),
            }),
            ..Default::default()
        };
        let org1 = |_: &str| Some("org1".to_string());
        let org2 = |_: &str| Some("org2".to_string());
        let none = |_: &str| None;
        assert_eq!(req.check(&p, &Map::new(), &org1), Ok(()));
        assert_eq!(req.check(&p, &Map::new(), &org2), Err(Shortfall::Roles));
        assert_eq!(
            req.check(&p, &Map::new(), &none),
            Err(Shortfall::RolesNoOrg("x-org".into()))
        );
    }

    #[test]
    fn claim_equals_and_contains() {
        let claims = match json!({"a": {"b": "x"}, "groups": ["g1", "g2"], "tier": 3, "scope": "s1 s2", "m": {"k": 1}})
        {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let req = |path: &str, test: ClaimTest| ClaimRequirement {
            path: ClaimPath::dotted(path).unwrap(),
            test,
        };
        assert!(req("a.b", ClaimTest::Equals(json!("x"))).satisfied_by(&claims));
        assert!(!req("a.b", ClaimTest::Equals(json!("y"))).satisfied_by(&claims));
        assert!(req("tier", ClaimTest::Equals(json!(3))).satisfied_by(&claims));
        assert!(req("groups", ClaimTest::Contains(json!("g2"))).satisfied_by(&claims));
        assert!(!req("groups", ClaimTest::Contains(json!("g3"))).satisfied_by(&claims));
        assert!(req("scope", ClaimTest::Contains(json!("s2"))).satisfied_by(&claims));
        assert!(req("m", ClaimTest::Contains(json!("k"))).satisfied_by(&claims));
        assert!(!req("missing", ClaimTest::Equals(Value::Null)).satisfied_by(&claims));
    }
}
