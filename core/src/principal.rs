//! What a verified token grants: roles (with the organisations they were granted in),
//! permissions and scopes, read from the claim shapes providers use.
//!
//! ZITADEL puts project roles in `urn:zitadel:iam:org:project:{projectId}:roles` as an object
//! `{role: {orgId: orgDomain}}`. The flat `urn:zitadel:iam:org:project:roles` describes the
//! project of the client that *requested* the token. A client of another project can have our
//! project id added to `aud` (scope `urn:zitadel:iam:org:project:id:{id}:aud`, which ZITADEL
//! grants without a check), so trusting the flat claim would let that project's roles pass as
//! ours. It is read only when a provider opts in.

use serde_json::{Map, Value};
use std::fmt;

/// A path into the claims: `["realm_access", "roles"]`. Written in config as a dotted string
/// (`"realm_access.roles"`) or, for keys that contain dots, as an array of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    pub fn from_segments(segments: Vec<String>) -> Option<ClaimPath> {
        if segments.is_empty() || segments.iter().any(String::is_empty) {
            None
        } else {
            Some(ClaimPath(segments))
        }
    }

    pub fn dotted(path: &str) -> Option<ClaimPath> {
        ClaimPath::from_segments(path.split('.').map(str::to_owned).collect())
    }

    /// A path of one key, taken literally (dots included).
    pub fn key(key: &str) -> ClaimPath {
        ClaimPath(vec![key.to_owned()])
    }

    /// The top-level claim the path starts at.
    pub fn root(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }

    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.0.split_first()?;
        let mut value = claims.get(first)?;
        for key in rest {
            value = value.as_object()?.get(key)?;
        }
        Some(value)
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Where a provider's tokens carry roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleSource {
    /// ZITADEL's project roles claim for our project, optionally falling back to the flat
    /// claim of the requesting client's project.
    Zitadel {
        project_claim: String,
        accept_flat_claim: bool,
    },
    /// Any claim: an array of names, a space-separated string, or an object keyed by role.
    Claim(ClaimPath),
    /// The provider has no roles.
    None,
}

pub const ZITADEL_FLAT_ROLES_CLAIM: &str = "urn:zitadel:iam:org:project:roles";

pub fn zitadel_project_roles_claim(project_id: &str) -> String {
    format!("urn:zitadel:iam:org:project:{}:roles", project_id)
}

/// Where a provider's tokens carry roles, permissions and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSources {
    pub roles: RoleSource,
    pub permissions: ClaimPath,
    /// `None`: the standard places, a space-separated `scope` string or an `scp` array.
    pub scopes: Option<ClaimPath>,
}

impl Default for ClaimSources {
    fn default() -> Self {
        ClaimSources {
            roles: RoleSource::None,
            permissions: ClaimPath::key("permissions"),
            scopes: None,
        }
    }
}

/// A role and the organisations it was granted in (empty when the claim does not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: String,
    pub orgs: Vec<String>,
}

/// The authorisation facts of one verified token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    pub roles: Vec<Grant>,
    pub permissions: Vec<String>,
    pub scopes: Vec<String>,
}

impl Principal {
    pub fn from_claims(claims: &Map<String, Value>, sources: &ClaimSources) -> Principal {
        let roles = match &sources.roles {
            RoleSource::None => Vec::new(),
            RoleSource::Claim(path) => path.lookup(claims).map(grants).unwrap_or_default(),
            RoleSource::Zitadel {
                project_claim,
                accept_flat_claim,
            } => match claims.get(project_claim.as_str()) {
                Some(v) => grants(v),
                None if *accept_flat_claim => claims
                    .get(ZITADEL_FLAT_ROLES_CLAIM)
                    .map(grants)
                    .unwrap_or_default(),
                None => Vec::new(),
            },
        };
        let permissions = sources
            .permissions
            .lookup(claims)
            .map(names)
            .unwrap_or_default();
        let scopes = match &sources.scopes {
            Some(path) => path.lookup(claims).map(names).unwrap_or_default(),
            None => {
                let mut scopes = claims.get("scope").map(names).unwrap_or_default();
                if let Some(scp) = claims.get("scp") {
                    for s in names(scp) {
                        if !scopes.contains(&s) {
                            scopes.push(s);
                        }
                    }
                }
                scopes
            }
        };
        Principal {
            roles,
            permissions,
            scopes,
        }
    }

    pub fn has_role(&self, role: &str, org: Option<&str>) -> bool {
        self.roles
            .iter()
            .any(|g| g.role == role && org.is_none_or(|org| g.orgs.iter().any(|o| o == org)))
    }

    pub fn role_names(&self) -> impl Iterator<Item = &str> {
        self.roles.iter().map(|g| g.role.as_str())
    }

    /// Approximate heap size, for the cache's byte bound.
    pub fn heap_size(&self) -> usize {
        let strings = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
        self.roles
            .iter()
            .map(|g| g.role.len() + 48 + strings(&g.orgs))
            .sum::<usize>()
            + strings(&self.permissions)
            + strings(&self.scopes)
    }
}

/// Names from a claim value: array elements that are strings, the words of a string, or the
/// keys of an object. Anything else grants nothing.
pub fn names(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => s.split_ascii_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn grants(value: &Value) -> Vec<Grant> {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(role, orgs)| Grant {
                role: role.clone(),
                orgs: match orgs {
                    Value::Object(orgs) => orgs.keys().cloned().collect(),
                    _ => Vec::new(),
                },
            })
            .collect(),
        other => names(other)
            .into_iter()
            .map(|role| Grant {
                role,
                orgs: Vec::new(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn zitadel(project: &str, flat: bool) -> ClaimSources {
        ClaimSources {
            roles: RoleSource::Zitadel {
                project_claim: zitadel_project_roles_claim(project),
                accept_flat_claim: flat,
            },
            ..ClaimSources::default()
        }
    }

    #[test]
    fn zitadel_project_roles_carry_their_organisations() {
        let claims = obj(json!({
            "urn:zitadel:iam:org:project:283480000000000001:roles": {
                "api.read": {"283400000000000001": "acme.auth.example.com"},
                "api.write": {"283400000000000001": "acme.auth.example.com", "999": "other"}
            },
            "permissions": ["posts:read", "posts:write"]
        }));
        let p = Principal::from_claims(&claims, &zitadel("283480000000000001", false));
        assert!(p.has_role("api.read", None));
        assert!(p.has_role("api.write", Some("999")));
        assert!(!p.has_role("api.read", Some("999")));
        assert_eq!(p.permissions, vec!["posts:read", "posts:write"]);
    }

    #[test]
    fn flat_zitadel_roles_claim_is_ignored_by_default() {
        let claims = obj(json!({
            "urn:zitadel:iam:org:project:roles": {"admin": {"1": "evil.example.com"}}
        }));
        let p = Principal::from_claims(&claims, &zitadel("42", false));
        assert!(!p.has_role("admin", None));
        let p = Principal::from_claims(&claims, &zitadel("42", true));
        assert!(p.has_role("admin", None));
    }

    #[test]
    fn roles_of_another_project_do_not_count() {
        let claims = obj(json!({
            "urn:zitadel:iam:org:project:7:roles": {"admin": {"1": "x"}}
        }));
        assert!(!Principal::from_claims(&claims, &zitadel("42", true)).has_role("admin", None));
    }

    #[test]
    fn generic_roles_claim_may_be_nested_array_string_or_object() {
        let sources = |path: &str| ClaimSources {
            roles: RoleSource::Claim(ClaimPath::dotted(path).unwrap()),
            ..ClaimSources::default()
        };
        let keycloak = obj(json!({"realm_access": {"roles": ["admin", "user"]}}));
        assert!(
            Principal::from_claims(&keycloak, &sources("realm_access.roles"))
                .has_role("admin", None)
        );
        let spaced = obj(json!({"roles": "a b  c"}));
        let p = Principal::from_claims(&spaced, &sources("roles"));
        assert_eq!(p.role_names().collect::<Vec<_>>(), vec!["a", "b", "c"]);
        let keyed = obj(json!({"roles": {"x": true}}));
        assert!(Principal::from_claims(&keyed, &sources("roles")).has_role("x", None));
    }

    #[test]
    fn scopes_come_from_scope_string_and_scp_array() {
        let claims = obj(json!({"scope": "openid orders:read", "scp": ["orders:write", "openid"]}));
        let p = Principal::from_claims(&claims, &ClaimSources::default());
        assert_eq!(p.scopes, vec!["openid", "orders:read", "orders:write"]);
    }

    #[test]
    fn claim_paths_reject_empty_segments() {
        assert!(ClaimPath::dotted("a..b").is_none());
        assert!(ClaimPath::dotted("").is_none());
        assert_eq!(ClaimPath::dotted("a.b").unwrap().to_string(), "a.b");
    }
}
