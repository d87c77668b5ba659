#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! ZITADEL's token shapes in a real Envoy: the project roles object, the flat roles claim that
//! must not be trusted by default, the project id as audience, and Action-added permissions.

use serde_json::{json, Value};
use std::sync::OnceLock;
use tokengate_testkit::mint::{self, claims, zitadel_roles};
use tokengate_testkit::{expect, Envoy, Response, SigningKey};

const ISS: &str = "https://auth.example.com";
const OUR_PROJECT: &str = "283480000000000001";
const OTHER_PROJECT: &str = "283469999999999999";

struct Fixture {
    envoy: Envoy,
    key: SigningKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = SigningKey::rsa("RS256", "280543383892525058");
        let jwks = mint::jwks(&[&key]);
        let envoy = Envoy::start(&json!({
            "providers": {
                "zitadel": {"issuer": ISS, "jwks": jwks, "zitadel": {"project_id": OUR_PROJECT}},
            },
            "rules": [
                {"match": {"path": {"prefix": "/admin"}}, "roles": {"any_of": ["admin"]}},
                {"match": {"path": {"prefix": "/posts"}}, "permissions": {"all_of": ["posts:read", "posts:write"]}}
            ],
            "default": "authenticated",
            "forward": {"roles_header": "x-roles", "permissions_header": "x-permissions", "claims": [
                {"claim": "sub", "header": "x-user-id"},
                {"claim": format!("urn:zitadel:iam:org:project:{}:roles", OUR_PROJECT), "header": "x-project-roles"}
            ]}
        }));
        Fixture { envoy, key }
    })
}

/// The shape of a human user's JWT access token from ZITADEL (see the reference notes): an
/// app of another project, our API project added to `aud` by scope.
fn zitadel_access_token(
    ours: &[(&str, &[&str])],
    flat: &[(&str, &[&str])],
    other: &[(&str, &[&str])],
    extra: Value,
) -> String {
    let mut c = claims(
        ISS,
        &["283470001234567891", OTHER_PROJECT, OUR_PROJECT],
        extra,
    );
    c["sub"] = json!("283472283374567890");
    c["client_id"] = json!("283470001234567891");
    c["jti"] = json!("V2_283499999999999999-at_283500000000000000");
    let (name, value) = zitadel_roles(OUR_PROJECT, ours);
    if !ours.is_empty() {
        c[name] = value;
    }
    let (_, value) = zitadel_roles("unused", flat);
    if !flat.is_empty() {
        c["urn:zitadel:iam:org:project:roles"] = value;
    }
    let (name, value) = zitadel_roles(OTHER_PROJECT, other);
    if !other.is_empty() {
        c[name] = value;
    }
    let header = json!({"alg": "RS256", "kid": "280543383892525058", "typ": "JWT"});
    fixture().key.sign_raw(&header.to_string(), &c.to_string())
}

fn get(path: &str, token: &str) -> Response {
    fixture().envoy.get_with_token(path, token)
}

#[test]
fn project_roles_object_grants_roles() {
    let token = zitadel_access_token(&[("admin", &["283400000000000001"])], &[], &[], json!({}));
    expect::passed(&get("/admin/x", &token));
}

#[test]
fn flat_roles_claim_is_not_trusted() {
    // The requesting client's project (another one) says "admin"; our project says nothing.
    let token = zitadel_access_token(&[], &[("admin", &["1"])], &[("admin", &["1"])], json!({}));
    expect::refused(
        &get("/admin/x", &token),
        403,
        "insufficient_scope",
        "lacks the roles",
    );
}

#[test]
fn roles_of_another_project_do_not_count() {
    let token = zitadel_access_token(&[("viewer", &["1"])], &[], &[("admin", &["1"])], json!({}));
    expect::refused(
        &get("/admin/x", &token),
        403,
        "insufficient_scope",
        "lacks the roles",
    );
}

#[test]
fn project_id_is_the_default_audience() {
    let f = fixture();
    let ours = f.key.sign(&claims(
        ISS,
        &["283470001234567891", OUR_PROJECT],
        json!({}),
    ));
    expect::passed(&get("/anything", &ours));
    let foreign = f.key.sign(&claims(
        ISS,
        &["283470001234567891", OTHER_PROJECT],
        json!({}),
    ));
    expect::invalid_token(&get("/anything", &foreign), "audience");
}

#[test]
fn permissions_added_by_an_action_are_checked() {
    let both = zitadel_access_token(
        &[],
        &[],
        &[],
        json!({"permissions": ["posts:read", "posts:write"]}),
    );
    expect::passed(&get("/posts/1", &both));
    let one = zitadel_access_token(&[], &[], &[], json!({"permissions": ["posts:read"]}));
    expect::refused(
        &get("/posts/1", &one),
        403,
        "insufficient_scope",
        "posts:write",
    );
}

#[test]
fn roles_and_permissions_are_forwarded_as_names() {
    let token = zitadel_access_token(
        &[("api.read", &["1"]), ("api.write", &["1", "2"])],
        &[("flat-only", &["1"])],
        &[],
        json!({"permissions": ["posts:read", "posts:write"]}),
    );
    let r = get("/anything", &token);
    expect::passed(&r);
    assert_eq!(
        r.upstream_header("x-roles").as_deref(),
        Some("api.read,api.write")
    );
    assert_eq!(
        r.upstream_header("x-project-roles").as_deref(),
        Some("api.read,api.write")
    );
    assert_eq!(
        r.upstream_header("x-permissions").as_deref(),
        Some("posts:read,posts:write")
    );
    assert_eq!(
        r.upstream_header("x-user-id").as_deref(),
        Some("283472283374567890")
    );
}

#[test]
fn flat_roles_claim_is_read_when_a_provider_opts_in() {
    let key = SigningKey::es256("flat");
    let envoy = Envoy::start(&json!({
        "providers": {"zitadel": {
            "issuer": ISS, "jwks": mint::jwks(&[&key]),
            "zitadel": {"project_id": OUR_PROJECT, "accept_flat_roles_claim": true}
        }},
        "default": "deny",
        "rules": [{"match": {"path": {"prefix": "/admin"}}, "roles": {"any_of": ["admin"]}}]
    }));
    let (_, flat) = zitadel_roles("x", &[("admin", &["1"])]);
    let token = key.sign(&claims(
        ISS,
        &[OUR_PROJECT],
        json!({"urn:zitadel:iam:org:project:roles": flat}),
    ));
    expect::passed(&envoy.get_with_token("/admin", &token));
    assert!(
        envoy.log().contains("reads the flat ZITADEL roles claim"),
        "the risky choice is logged at configure"
    );
}
