#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Strict token defaults in a real Envoy (issue 12): a JWT must carry the required claims
//! (`exp` by default, RFC 9068 2.2), may be held to a longest lifetime and an allow-list of
//! `typ` values (RFC 9068 4), audiences are compared exactly (RFC 7519 7.3), and roles,
//! permissions and scopes are read only in the shape declared for them (ZITADEL's project roles
//! object included); a value of another shape grants nothing.
//!
//! Two Envoys: `defaults()` is configured only with settings every version of the filter
//! takes, so its tests show the new defaults; `settings()` uses the new provider settings
//! (`required_claims`, `max_token_lifetime_seconds`, `token_types`, declared claim shapes).

use serde_json::{json, Value};
use std::sync::OnceLock;
use tokengate_testkit::mint::{self, claims};
use tokengate_testkit::{expect, Envoy, Response, SigningKey};

const PLAIN: &str = "https://plain.test";
const EXACT: &str = "https://exact.test";
const ZITADEL: &str = "https://zitadel.test";
const KEYCLOAK: &str = "https://keycloak.test";
const SCOPED: &str = "https://scoped.test";
const PROJECT: &str = "283480000000000001";
const ROLES_CLAIM: &str = "urn:zitadel:iam:org:project:283480000000000001:roles";

const LENIENT: &str = "https://lenient.test";
const NAMED: &str = "https://named.test";
const LIFETIME: &str = "https://lifetime.test";
const TYPED: &str = "https://typed.test";
const TYPED_PREFIXED: &str = "https://typed-prefixed.test";
const REALM: &str = "https://realm.test";
const SPACED: &str = "https://spaced.test";
const KEYED: &str = "https://keyed.test";
const DECLARED: &str = "https://declared.test";

/// One key signs for every provider (each provider has its own inline copy of its JWK).
fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::es256("strict"))
}

fn provider(issuer: &str, extra: Value) -> Value {
    let mut p = json!({"issuer": issuer, "jwks": mint::jwks(&[key()])});
    if let (Some(p), Value::Object(extra)) = (p.as_object_mut(), extra) {
        p.extend(extra);
    }
    p
}

/// A rule for paths under `prefix` that counts only `provider`'s tokens and requires `what`
/// (e.g. `{"roles": {"any_of": ["admin"]}}`).
fn rule(prefix: &str, provider: &str, what: Value) -> Value {
    let mut r = json!({"match": {"path": {"prefix": prefix}}, "providers": [provider]});
    if let (Some(r), Value::Object(what)) = (r.as_object_mut(), what) {
        r.extend(what);
    }
    r
}

/// Settings every version of the filter takes: what changes here is the default behaviour.
fn defaults() -> &'static Envoy {
    static ENVOY: OnceLock<Envoy> = OnceLock::new();
    ENVOY.get_or_init(|| {
        let admin = json!({"roles": {"any_of": ["admin"]}});
        Envoy::start(&json!({
            "providers": {
                "plain": provider(PLAIN, json!({"audiences": ["api"]})),
                "exact": provider(EXACT, json!({"audiences": ["https://api.example.com/"]})),
                "zitadel": provider(ZITADEL, json!({"zitadel": {"project_id": PROJECT}})),
                "keycloak": provider(KEYCLOAK, json!({"claims": {"roles": "realm_access.roles"}})),
                "scoped": provider(SCOPED, json!({"claims": {"scopes": "authorization.scopes"}})),
            },
            "rules": [
                rule("/zitadel/admin", "zitadel", admin.clone()),
                rule("/keycloak/admin", "keycloak", admin),
                rule("/orders", "plain", json!({"permissions": {"any_of": ["orders:read"]}})),
                rule("/scoped", "plain", json!({"scopes": {"any_of": ["orders:read"]}})),
                rule("/path-scoped", "scoped", json!({"scopes": {"any_of": ["orders:read"]}})),
            ],
            "default": "authenticated",
            "forward": {"roles_header": "x-roles"}
        }))
    })
}

/// The new provider settings.
fn settings() -> &'static Envoy {
    static ENVOY: OnceLock<Envoy> = OnceLock::new();
    ENVOY.get_or_init(|| {
        let admin = json!({"roles": {"any_of": ["admin"]}});
        Envoy::start(&json!({
            "providers": {
                "lenient": provider(LENIENT, json!({"required_claims": []})),
                "named": provider(NAMED, json!({"required_claims": ["exp", "jti"]})),
                "lifetime": provider(LIFETIME, json!({"max_token_lifetime_seconds": 900})),
                "typed": provider(TYPED, json!({"token_types": ["at+jwt"]})),
                "typed_prefixed": provider(TYPED_PREFIXED, json!({"token_types": ["application/at+jwt"]})),
                "realm": provider(REALM, json!({"claims": {
                    "roles": {"path": "realm_access.roles", "shape": "array"}
                }})),
                "spaced": provider(SPACED, json!({"claims": {
                    "roles": {"path": "roles", "shape": "space_separated"}
                }})),
                "keyed": provider(KEYED, json!({"claims": {
                    "roles": {"path": ["https://example.com/roles"], "shape": "object_keys"}
                }})),
                "declared": provider(DECLARED, json!({"claims": {
                    "permissions": {"path": "perms", "shape": "space_separated"},
                    "scopes": {"path": "scp", "shape": "array"}
                }})),
            },
            "rules": [
                rule("/realm/admin", "realm", admin.clone()),
                rule("/spaced/admin", "spaced", admin.clone()),
                rule("/keyed/admin", "keyed", admin),
                rule("/declared/orders", "declared", json!({"permissions": {"any_of": ["orders:read"]}})),
                rule("/declared/scoped", "declared", json!({"scopes": {"any_of": ["orders:read"]}})),
            ],
            "default": "authenticated"
        }))
    })
}

/// A token of `iss` for `aud`: the standard claims (valid for an hour) merged with `extra`
/// (null removes a claim), header `typ: JWT`.
fn token(iss: &str, aud: &[&str], extra: Value) -> String {
    key().sign(&claims(iss, aud, extra))
}

/// A token with this header `typ` (`None`: no `typ`).
fn typed_token(iss: &str, typ: Option<&str>) -> String {
    let mut header = json!({"alg": "ES256", "kid": "strict"});
    if let Some(typ) = typ {
        header["typ"] = json!(typ);
    }
    key().sign_raw(
        &header.to_string(),
        &claims(iss, &[], json!({})).to_string(),
    )
}

fn zitadel_token(roles: Value) -> String {
    token(ZITADEL, &[PROJECT], json!({ ROLES_CLAIM: roles }))
}

fn get(envoy: &Envoy, path: &str, token: &str) -> Response {
    envoy.get_with_token(path, token)
}

#[track_caller]
fn lacks(r: &Response, what: &str) {
    expect::refused(r, 403, "insufficient_scope", &format!("lacks the {}", what));
}

// --- required claims (RFC 9068 2.2) ---

#[test]
fn jwt_without_exp_is_refused_by_default() {
    let t = token(PLAIN, &["api"], json!({"exp": null}));
    expect::invalid_token(
        &get(defaults(), "/resource", &t),
        "lacks the required claim \"exp\"",
    );
}

#[test]
fn jwt_with_exp_passes_by_default() {
    expect::passed(&get(
        defaults(),
        "/resource",
        &token(PLAIN, &["api"], json!({})),
    ));
}

#[test]
fn required_claims_empty_accepts_a_jwt_without_exp() {
    let t = token(LENIENT, &[], json!({"exp": null}));
    expect::passed(&get(settings(), "/resource", &t));
}

#[test]
fn missing_required_claim_is_named_in_the_refusal() {
    let without_jti = token(NAMED, &[], json!({}));
    expect::invalid_token(
        &get(settings(), "/resource", &without_jti),
        "lacks the required claim \"jti\"",
    );
    let without_exp = token(NAMED, &[], json!({"exp": null, "jti": "a-1"}));
    expect::invalid_token(
        &get(settings(), "/resource", &without_exp),
        "lacks the required claim \"exp\"",
    );
}

#[test]
fn token_with_every_required_claim_is_accepted() {
    let t = token(NAMED, &[], json!({"jti": "a-2"}));
    expect::passed(&get(settings(), "/resource", &t));
}

// --- max_token_lifetime_seconds ---

#[test]
fn exp_beyond_max_token_lifetime_is_refused() {
    // The limit is 900 s (+ 60 s skew); this token is valid for an hour.
    let t = token(LIFETIME, &[], json!({}));
    expect::invalid_token(
        &get(settings(), "/resource", &t),
        "max_token_lifetime_seconds",
    );
}

#[test]
fn exp_within_max_token_lifetime_is_accepted() {
    let t = token(
        LIFETIME,
        &[],
        json!({"exp": tokengate_testkit::now() + 600}),
    );
    expect::passed(&get(settings(), "/resource", &t));
}

// --- token_types (RFC 9068 4) ---

#[test]
fn token_types_refuses_a_jwt_typ() {
    for iss in [TYPED, TYPED_PREFIXED] {
        expect::invalid_token(
            &get(settings(), "/resource", &typed_token(iss, Some("JWT"))),
            "typ",
        );
    }
}

#[test]
fn token_types_accepts_at_jwt_with_or_without_application_prefix() {
    for iss in [TYPED, TYPED_PREFIXED] {
        for typ in ["at+jwt", "application/at+jwt"] {
            let r = get(settings(), "/resource", &typed_token(iss, Some(typ)));
            assert!(
                r.reached_upstream(),
                "{} with typ {}: {} {}",
                iss,
                typ,
                r.status,
                r.body
            );
        }
    }
}

#[test]
fn token_types_are_compared_case_insensitively() {
    for typ in ["AT+JWT", "Application/At+Jwt"] {
        expect::passed(&get(
            settings(),
            "/resource",
            &typed_token(TYPED, Some(typ)),
        ));
    }
}

#[test]
fn token_types_refuses_a_token_without_typ() {
    for iss in [TYPED, TYPED_PREFIXED] {
        expect::invalid_token(
            &get(settings(), "/resource", &typed_token(iss, None)),
            "typ",
        );
    }
}

#[test]
fn without_token_types_a_jwt_typ_passes() {
    // ZITADEL signs its access tokens with typ JWT.
    let t = zitadel_token(json!({"admin": {"283400000000000001": "acme.example"}}));
    expect::passed(&get(defaults(), "/resource", &t));
    expect::passed(&get(
        defaults(),
        "/resource",
        &token(PLAIN, &["api"], json!({})),
    ));
}

// --- audiences (RFC 7519 7.3) ---

#[test]
fn audience_is_compared_exactly() {
    for aud in [
        "api.example.com",
        "http://api.example.com",
        "https://api.example.com",
    ] {
        let r = get(defaults(), "/resource", &token(EXACT, &[aud], json!({})));
        expect::invalid_token(&r, "audience");
    }
    let exact = token(EXACT, &["https://api.example.com/"], json!({}));
    expect::passed(&get(defaults(), "/resource", &exact));
}

// --- ZITADEL project roles: {"role": {"orgId": "domain"}} only ---

#[test]
fn zitadel_roles_claim_as_an_array_grants_nothing() {
    lacks(
        &get(
            defaults(),
            "/zitadel/admin",
            &zitadel_token(json!(["admin"])),
        ),
        "roles",
    );
}

#[test]
fn zitadel_roles_claim_as_a_string_grants_nothing() {
    lacks(
        &get(defaults(), "/zitadel/admin", &zitadel_token(json!("admin"))),
        "roles",
    );
}

#[test]
fn zitadel_role_with_an_empty_organisation_map_grants_nothing() {
    lacks(
        &get(
            defaults(),
            "/zitadel/admin",
            &zitadel_token(json!({"admin": {}})),
        ),
        "roles",
    );
}

#[test]
fn zitadel_role_whose_value_is_not_an_object_grants_nothing() {
    for value in [json!("org-1"), json!(["org-1"]), json!(true)] {
        let t = zitadel_token(json!({ "admin": value }));
        lacks(&get(defaults(), "/zitadel/admin", &t), "roles");
    }
}

#[test]
fn zitadel_role_granted_in_an_organisation_passes() {
    let t = zitadel_token(json!({"admin": {"org-1": "acme.example"}}));
    expect::passed(&get(defaults(), "/zitadel/admin", &t));
}

#[test]
fn zitadel_malformed_role_does_not_void_the_well_formed_ones() {
    let t = zitadel_token(json!({
        "admin": {"org-1": "acme.example"},
        "viewer": {},
        "auditor": "org-1"
    }));
    let r = get(defaults(), "/zitadel/admin", &t);
    expect::passed(&r);
    assert_eq!(r.upstream_header("x-roles").as_deref(), Some("admin"));
}

// --- other providers: the default shapes ---

#[test]
fn roles_path_reads_an_array_by_default() {
    let t = token(KEYCLOAK, &[], json!({"realm_access": {"roles": ["admin"]}}));
    expect::passed(&get(defaults(), "/keycloak/admin", &t));
}

#[test]
fn roles_path_given_a_string_grants_nothing_by_default() {
    let t = token(KEYCLOAK, &[], json!({"realm_access": {"roles": "admin"}}));
    lacks(&get(defaults(), "/keycloak/admin", &t), "roles");
}

#[test]
fn roles_path_given_an_object_grants_nothing_by_default() {
    let t = token(
        KEYCLOAK,
        &[],
        json!({"realm_access": {"roles": {"admin": {}}}}),
    );
    lacks(&get(defaults(), "/keycloak/admin", &t), "roles");
}

#[test]
fn permissions_claim_as_an_array_grants_by_default() {
    let t = token(PLAIN, &["api"], json!({"permissions": ["orders:read"]}));
    expect::passed(&get(defaults(), "/orders", &t));
}

#[test]
fn permissions_claim_as_a_string_grants_nothing_by_default() {
    let t = token(PLAIN, &["api"], json!({"permissions": "orders:read"}));
    lacks(&get(defaults(), "/orders", &t), "permissions");
}

#[test]
fn scope_claim_as_a_space_separated_string_grants_scopes() {
    let t = token(PLAIN, &["api"], json!({"scope": "profile orders:read"}));
    expect::passed(&get(defaults(), "/scoped", &t));
}

#[test]
fn scope_claim_as_an_array_grants_nothing() {
    let t = token(
        PLAIN,
        &["api"],
        json!({"scope": ["profile", "orders:read"]}),
    );
    lacks(&get(defaults(), "/scoped", &t), "scopes");
}

#[test]
fn scp_claim_as_an_array_or_a_string_grants_scopes() {
    for scp in [json!(["orders:read"]), json!("profile orders:read")] {
        let t = token(PLAIN, &["api"], json!({ "scp": scp }));
        expect::passed(&get(defaults(), "/scoped", &t));
    }
}

#[test]
fn scopes_path_reads_a_space_separated_string_by_default() {
    let string = token(
        SCOPED,
        &[],
        json!({"authorization": {"scopes": "profile orders:read"}}),
    );
    expect::passed(&get(defaults(), "/path-scoped", &string));
    let array = token(
        SCOPED,
        &[],
        json!({"authorization": {"scopes": ["orders:read"]}}),
    );
    lacks(&get(defaults(), "/path-scoped", &array), "scopes");
}

// --- other providers: declared shapes ---

#[test]
fn declared_array_roles_accept_an_array() {
    let t = token(REALM, &[], json!({"realm_access": {"roles": ["admin"]}}));
    expect::passed(&get(settings(), "/realm/admin", &t));
}

#[test]
fn declared_array_roles_refuse_a_string() {
    let t = token(REALM, &[], json!({"realm_access": {"roles": "admin"}}));
    lacks(&get(settings(), "/realm/admin", &t), "roles");
}

#[test]
fn declared_space_separated_roles_accept_a_string() {
    let t = token(SPACED, &[], json!({"roles": "viewer admin"}));
    expect::passed(&get(settings(), "/spaced/admin", &t));
}

#[test]
fn declared_space_separated_roles_refuse_an_array() {
    let t = token(SPACED, &[], json!({"roles": ["admin"]}));
    lacks(&get(settings(), "/spaced/admin", &t), "roles");
}

#[test]
fn declared_object_keys_roles_accept_an_object() {
    let t = token(
        KEYED,
        &[],
        json!({"https://example.com/roles": {"admin": true}}),
    );
    expect::passed(&get(settings(), "/keyed/admin", &t));
}

#[test]
fn declared_object_keys_roles_refuse_an_array_or_a_string() {
    for roles in [json!(["admin"]), json!("admin")] {
        let t = token(KEYED, &[], json!({ "https://example.com/roles": roles }));
        lacks(&get(settings(), "/keyed/admin", &t), "roles");
    }
}

#[test]
fn declared_space_separated_permissions_refuse_an_array() {
    let string = token(DECLARED, &[], json!({"perms": "orders:read orders:write"}));
    expect::passed(&get(settings(), "/declared/orders", &string));
    let array = token(DECLARED, &[], json!({"perms": ["orders:read"]}));
    lacks(&get(settings(), "/declared/orders", &array), "permissions");
}

#[test]
fn declared_array_scopes_refuse_a_string() {
    let array = token(DECLARED, &[], json!({"scp": ["orders:read"]}));
    expect::passed(&get(settings(), "/declared/scoped", &array));
    let string = token(DECLARED, &[], json!({"scp": "orders:read"}));
    lacks(&get(settings(), "/declared/scoped", &string), "scopes");
}
