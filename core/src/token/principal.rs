//! What a verified token grants: roles (with the organisations they were granted in),
//! permissions and scopes, read from the claim shapes providers use.
//!
//! ZITADEL puts project roles in `urn:zitadel:iam:org:project:{projectId}:roles` as an object
//! `{role: {orgId: orgDomain}}`. The flat `urn:zitadel:iam:org:project:roles` describes the
//! project of the client that *requested* the token. A client of another project can have our
//! project id added to `aud` (scope `urn:zitadel:iam:org:project:id:{id}:aud`, which ZITADEL
//! grants without a check), so trusting the flat claim would let that project's roles pass as
//! ours. It is read only when a provider opts in.

use crate::support::heap;
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

/// How a claim holds a list of names. Declared per list, never guessed: a value of another
/// shape grants nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamesShape {
    /// A JSON array of strings: `["a", "b"]`.
    Array,
    /// One string of names separated by spaces: `"a b"` (OAuth's `scope`).
    SpaceSeparated,
    /// An object whose keys are the names: `{"a": …, "b": …}`.
    ObjectKeys,
}

impl NamesShape {
    pub fn name(self) -> &'static str {
        match self {
            NamesShape::Array => "array",
            NamesShape::SpaceSeparated => "space_separated",
            NamesShape::ObjectKeys => "object_keys",
        }
    }

    /// The names in `value`, or `None` when it is not of this shape.
    fn names(self, value: &Value) -> Option<Vec<String>> {
        match (self, value) {
            (NamesShape::Array, Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect(),
            (NamesShape::SpaceSeparated, Value::String(s)) => {
                Some(s.split_ascii_whitespace().map(str::to_owned).collect())
            }
            (NamesShape::ObjectKeys, Value::Object(map)) => Some(map.keys().cloned().collect()),
            _ => None,
        }
    }
}

/// A claim that holds a list of names, and its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamesClaim {
    pub path: ClaimPath,
    pub shape: NamesShape,
}

/// Where a provider's tokens carry roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleSource {
    /// ZITADEL's project roles claim for our project, optionally falling back to the flat
    /// claim of the requesting client's project. Both are `{role: {orgId: orgDomain}}`.
    Zitadel {
        project_claim: String,
        accept_flat_claim: bool,
    },
    /// Any claim, of its declared shape.
    Claim(NamesClaim),
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
    pub permissions: NamesClaim,
    /// `None`: the standard places, a space-separated `scope` string (RFC 9068 2.2.3) and an
    /// `scp` array or space-separated string (Okta's and Microsoft's spellings).
    pub scopes: Option<NamesClaim>,
}

impl Default for ClaimSources {
    fn default() -> Self {
        ClaimSources {
            roles: RoleSource::None,
            permissions: NamesClaim {
                path: ClaimPath::key("permissions"),
                shape: NamesShape::Array,
            },
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
    /// The lists ("roles", "permissions", "scopes") whose claim was present but not of the
    /// declared shape, wholly or in part: they granted nothing (said when a route refuses).
    pub misshapen: Vec<&'static str>,
}

impl Principal {
    pub fn from_claims(claims: &Map<String, Value>, sources: &ClaimSources) -> Principal {
        let mut misshapen = Vec::new();
        let roles = match &sources.roles {
            RoleSource::None => Vec::new(),
            RoleSource::Claim(c) => match (c.shape, c.path.lookup(claims)) {
                // An object keyed by role may say the organisations, as ZITADEL's does.
                (NamesShape::ObjectKeys, Some(Value::Object(map))) => map
                    .iter()
                    .map(|(role, orgs)| Grant {
                        role: role.clone(),
                        orgs: orgs
                            .as_object()
                            .map(|o| o.keys().cloned().collect())
                            .unwrap_or_default(),
                    })
                    .collect(),
                (shape, value) => read(&mut misshapen, "roles", value, shape)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|role| Grant {
                        role,
                        orgs: Vec::new(),
                    })
                    .collect(),
            },
            RoleSource::Zitadel {
                project_claim,
                accept_flat_claim,
            } => {
                let claim = match claims.get(project_claim.as_str()) {
                    Some(v) => Some(v),
                    None if *accept_flat_claim => claims.get(ZITADEL_FLAT_ROLES_CLAIM),
                    None => None,
                };
                match claim.map(zitadel_grants) {
                    Some((grants, false)) => {
                        note(&mut misshapen, "roles");
                        grants
                    }
                    Some((grants, true)) => grants,
                    None => Vec::new(),
                }
            }
        };
        let permissions = read(
            &mut misshapen,
            "permissions",
            sources.permissions.path.lookup(claims),
            sources.permissions.shape,
        )
        .unwrap_or_default();
        let scopes = match &sources.scopes {
            Some(c) => {
                read(&mut misshapen, "scopes", c.path.lookup(claims), c.shape).unwrap_or_default()
            }
            None => {
                let mut scopes = read(
                    &mut misshapen,
                    "scopes",
                    claims.get("scope"),
                    NamesShape::SpaceSeparated,
                )
                .unwrap_or_default();
                let scp = claims.get("scp");
                let scp = match scp {
                    Some(Value::String(_)) => {
                        read(&mut misshapen, "scopes", scp, NamesShape::SpaceSeparated)
                    }
                    _ => read(&mut misshapen, "scopes", scp, NamesShape::Array),
                };
                for s in scp.unwrap_or_default() {
                    if !scopes.contains(&s) {
                        scopes.push(s);
                    }
                }
                scopes
            }
        };
        Principal {
            roles,
            permissions,
            scopes,
            misshapen,
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

    /// What the principal owns on the heap ([`crate::support::heap`]), for the caches' byte bounds.
    pub fn heap_size(&self) -> usize {
        heap::buffer::<Grant>(self.roles.capacity())
            + self
                .roles
                .iter()
                .map(|g| heap::string(&g.role) + heap::strings(&g.orgs))
                .sum::<usize>()
            + heap::strings(&self.permissions)
            + heap::strings(&self.scopes)
            + heap::buffer::<&'static str>(self.misshapen.capacity())
    }
}

/// The names in `value`, if present; a value not of `shape` grants none and is noted.
fn read(
    misshapen: &mut Vec<&'static str>,
    list: &'static str,
    value: Option<&Value>,
    shape: NamesShape,
) -> Option<Vec<String>> {
    let names = shape.names(value?);
    if names.is_none() {
        note(misshapen, list);
    }
    names
}

fn note(misshapen: &mut Vec<&'static str>, list: &'static str) {
    if !misshapen.contains(&list) {
        misshapen.push(list);
    }
}

/// The grants of a ZITADEL roles claim: an object `{role: {orgId: orgDomain, …}}`, the only
/// shape ZITADEL issues. A role whose value is not a non-empty object is left out (it would
/// be a role granted in no organisation); anything but an object grants nothing. The flag
/// says whether the whole claim had that shape.
fn zitadel_grants(value: &Value) -> (Vec<Grant>, bool) {
    let Value::Object(map) = value else {
        return (Vec::new(), false);
    };
    let mut whole = true;
    let grants = map
        .iter()
        .filter_map(|(role, orgs)| match orgs {
            Value::Object(orgs) if !orgs.is_empty() => Some(Grant {
                role: role.clone(),
                orgs: orgs.keys().cloned().collect(),
            }),
            _ => {
                whole = false;
                None
            }
        })
        .collect();
    (grants, whole)
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
    fn the_heap_size_counts_every_list_and_string_by_capacity() {
        let claims = obj(json!({
            "urn:zitadel:iam:org:project:283480000000000001:roles": {
                "api.read": {"283400000000000001": "acme", "283400000000000002": "globex"},
                "api.write": {"283400000000000001": "acme"}
            },
            "scope": "openid orders:read"
        }));
        let mut p = Principal::from_claims(&claims, &zitadel("283480000000000001", false));
        let grants = heap::buffer::<Grant>(p.roles.capacity())
            + p.roles
                .iter()
                .map(|g| heap::alloc(g.role.capacity()) + heap::strings(&g.orgs))
                .sum::<usize>();
        assert_eq!(p.roles.len(), 2);
        let expected = grants + heap::strings(&p.permissions) + heap::strings(&p.scopes);
        assert_eq!(p.heap_size(), expected);
        assert!(expected >= 2 * heap::alloc(8) + 3 * heap::alloc(18) + 2 * heap::alloc(9));
        p.scopes.reserve(100);
        assert_eq!(
            p.heap_size(),
            grants + heap::strings(&p.permissions) + heap::strings(&p.scopes),
            "by capacity"
        );
        assert!(p.heap_size() >= expected + 90 * std::mem::size_of::<String>());
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

    fn declared(path: &str, shape: NamesShape) -> ClaimSources {
        ClaimSources {
            roles: RoleSource::Claim(NamesClaim {
                path: ClaimPath::dotted(path).unwrap(),
                shape,
            }),
            ..ClaimSources::default()
        }
    }

    #[test]
    fn a_roles_claim_grants_only_in_its_declared_shape() {
        let keycloak = obj(json!({"realm_access": {"roles": ["admin", "user"]}}));
        let p = Principal::from_claims(
            &keycloak,
            &declared("realm_access.roles", NamesShape::Array),
        );
        assert!(p.has_role("admin", None));
        assert!(p.misshapen.is_empty());
        let spaced = obj(json!({"roles": "a b  c"}));
        let p = Principal::from_claims(&spaced, &declared("roles", NamesShape::SpaceSeparated));
        assert_eq!(p.role_names().collect::<Vec<_>>(), vec!["a", "b", "c"]);
        let keyed = obj(json!({"roles": {"x": true}}));
        let p = Principal::from_claims(&keyed, &declared("roles", NamesShape::ObjectKeys));
        assert!(p.has_role("x", None));
        // Another shape grants nothing, and says so.
        for (claims, shape) in [
            (&spaced, NamesShape::Array),
            (&keyed, NamesShape::Array),
            (&keycloak, NamesShape::ObjectKeys),
        ] {
            let path = if shape == NamesShape::ObjectKeys {
                "realm_access.roles"
            } else {
                "roles"
            };
            let p = Principal::from_claims(claims, &declared(path, shape));
            assert!(p.roles.is_empty(), "{:?}", shape);
            assert_eq!(p.misshapen, vec!["roles"]);
        }
        let mixed = obj(json!({"roles": ["admin", 1]}));
        assert!(
            Principal::from_claims(&mixed, &declared("roles", NamesShape::Array))
                .roles
                .is_empty()
        );
    }

    #[test]
    fn zitadel_roles_must_be_an_object_of_non_empty_organisation_objects() {
        let claim = "urn:zitadel:iam:org:project:42:roles";
        let roles = |value: Value| {
            let claims = obj(json!({ claim: value }));
            Principal::from_claims(&claims, &zitadel("42", false))
        };
        for value in [
            json!(["admin"]),
            json!("admin"),
            json!({"admin": {}}),
            json!({"admin": "org-1"}),
            json!({"admin": ["org-1"]}),
            json!({"admin": true}),
        ] {
            let p = roles(value.clone());
            assert!(!p.has_role("admin", None), "{}", value);
            assert_eq!(p.misshapen, vec!["roles"], "{}", value);
        }
        let p = roles(json!({"admin": {}, "reader": {"org-1": "acme.example"}}));
        assert!(!p.has_role("admin", None));
        assert!(p.has_role("reader", Some("org-1")));
        let p = roles(json!({"admin": {"org-1": "acme.example"}}));
        assert!(p.has_role("admin", Some("org-1")));
        assert!(p.misshapen.is_empty());
    }

    #[test]
    fn permissions_are_an_array_by_default() {
        let listed = obj(json!({"permissions": ["orders:read"]}));
        let p = Principal::from_claims(&listed, &ClaimSources::default());
        assert_eq!(p.permissions, vec!["orders:read"]);
        let spaced = obj(json!({"permissions": "orders:read"}));
        let p = Principal::from_claims(&spaced, &ClaimSources::default());
        assert!(p.permissions.is_empty());
        assert_eq!(p.misshapen, vec!["permissions"]);
    }

    #[test]
    fn default_scopes_are_a_scope_string_and_an_scp_array_or_string() {
        let claims = obj(json!({"scope": ["orders:read"], "scp": "a b"}));
        let p = Principal::from_claims(&claims, &ClaimSources::default());
        assert_eq!(p.scopes, vec!["a", "b"]);
        assert_eq!(p.misshapen, vec!["scopes"]);
    }

    #[test]
    fn claim_paths_reject_empty_segments() {
        assert!(ClaimPath::dotted("a..b").is_none());
        assert!(ClaimPath::dotted("").is_none());
        assert_eq!(ClaimPath::dotted("a.b").unwrap().to_string(), "a.b");
    }
}
