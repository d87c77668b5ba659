#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! What clients and upstreams see, in a real Envoy: RFC 6750 challenges and JSON error
//! bodies, claims forwarded as headers, spoofed claim headers removed, and the token header
//! removed on request.

use serde_json::json;
use std::sync::OnceLock;
use tokengate_testkit::mint::{self, claims};
use tokengate_testkit::{expect, Envoy, SigningKey};

const ISS: &str = "https://issuer.test";

struct Fixture {
    envoy: Envoy,
    /// Same provider, with `forward.remove_token`.
    stripping: Envoy,
    key: SigningKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = SigningKey::ed25519("ed");
        let config = |remove_token: bool| {
            json!({
                "realm": "orders-api",
                "providers": {"main": {
                    "issuer": ISS, "audiences": ["api"], "jwks": mint::jwks(&[&key]),
                    "claims": {"roles": "realm_access.roles"}
                }},
                "rules": [
                    {"match": {"path": {"prefix": "/public"}}, "allow_anonymous": true},
                    {"match": {"path": {"prefix": "/admin"}}, "roles": {"any_of": ["admin", "ops"]}}
                ],
                "default": "authenticated",
                "forward": {
                    "claims": [
                        {"claim": "sub", "header": "X-User-Sub"},
                        {"claim": "tier", "header": "x-user-tier"},
                        {"claim": "email_verified", "header": "x-email-verified"},
                        {"claim": "groups", "header": "x-groups"},
                        {"claim": "org.id", "header": "x-org"},
                        {"claim": ["https://example.com/plan"], "header": "x-plan"},
                        {"claim": "missing", "header": "x-missing"}
                    ],
                    "roles_header": "x-roles",
                    "scopes_header": "x-scopes",
                    "provider_header": "x-provider",
                    "remove_token": remove_token
                }
            })
        };
        Fixture {
            envoy: Envoy::start(&config(false)),
            stripping: Envoy::start(&config(true)),
            key,
        }
    })
}

fn token() -> String {
    fixture().key.sign(&claims(
        ISS,
        &["api"],
        json!({
            "sub": "user-42",
            "tier": 3,
            "email_verified": true,
            "groups": ["staff", "dev"],
            "org": {"id": "org-7"},
            "https://example.com/plan": "gold",
            "realm_access": {"roles": ["user", "admin"]},
            "scope": "openid orders:read"
        }),
    ))
}

#[test]
fn missing_token_gets_a_bare_bearer_challenge() {
    let r = fixture().envoy.get("/orders", &[]);
    expect::refused(
        &r,
        401,
        "missing_token",
        "no access token in the authorization header",
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"orders-api\"")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[test]
fn invalid_token_gets_error_and_description() {
    let r = fixture().envoy.get_with_token("/orders", "a.b.c");
    expect::refused(&r, 401, "invalid_token", "the JWT header");
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"orders-api\", error=\"invalid_token\", error_description=\"the JWT header"),
        "{}",
        challenge
    );
}

#[test]
fn forbidden_gets_insufficient_scope_naming_what_is_required() {
    let t = fixture().key.sign(&claims(
        ISS,
        &["api"],
        json!({"realm_access": {"roles": ["user"]}}),
    ));
    let r = fixture().envoy.get_with_token("/admin", &t);
    expect::refused(
        &r,
        403,
        "insufficient_scope",
        "lacks the roles this route requires (any of admin, ops)",
    );
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{}",
        challenge
    );
    assert!(challenge.ends_with("scope=\"admin ops\""), "{}", challenge);
}

#[test]
fn forwarded_claims_are_the_same_when_the_token_comes_from_the_cache() {
    let t = token();
    let first = fixture().envoy.get_with_token("/orders", &t);
    let cached = fixture().envoy.get_with_token("/orders", &t);
    expect::passed(&cached);
    for h in [
        "x-user-sub",
        "x-user-tier",
        "x-email-verified",
        "x-groups",
        "x-org",
        "x-plan",
        "x-roles",
        "x-scopes",
    ] {
        assert!(first.upstream_header(h).is_some(), "{} forwarded", h);
        assert_eq!(cached.upstream_header(h), first.upstream_header(h), "{}", h);
    }
}

#[test]
fn claims_are_forwarded_as_headers() {
    let r = fixture().envoy.get_with_token("/orders", &token());
    expect::passed(&r);
    let seen = |h: &str| r.upstream_header(h);
    assert_eq!(seen("x-user-sub").as_deref(), Some("user-42"));
    assert_eq!(seen("x-user-tier").as_deref(), Some("3"));
    assert_eq!(seen("x-email-verified").as_deref(), Some("true"));
    assert_eq!(seen("x-groups").as_deref(), Some("staff,dev"));
    assert_eq!(seen("x-org").as_deref(), Some("org-7"));
    assert_eq!(seen("x-plan").as_deref(), Some("gold"));
    assert_eq!(seen("x-missing"), None);
    assert_eq!(seen("x-roles").as_deref(), Some("user,admin"));
    assert_eq!(seen("x-scopes").as_deref(), Some("openid,orders:read"));
    assert_eq!(seen("x-provider").as_deref(), Some("main"));
}

#[test]
fn the_authorization_header_is_kept_by_default() {
    let t = token();
    let r = fixture().envoy.get_with_token("/orders", &t);
    assert_eq!(
        r.upstream_header("authorization"),
        Some(format!("Bearer {}", t))
    );
}

#[test]
fn the_token_header_can_be_removed_before_the_upstream() {
    let r = fixture().stripping.get_with_token("/orders", &token());
    expect::passed(&r);
    assert_eq!(r.upstream_header("authorization"), None);
    assert_eq!(r.upstream_header("x-user-sub").as_deref(), Some("user-42"));
}

#[test]
fn client_supplied_claim_headers_never_reach_the_upstream() {
    let spoofed = [
        ("x-user-sub", "admin"),
        ("X-Roles", "admin"),
        ("x-missing", "forged"),
        ("x-provider", "forged"),
        ("x-tokengate-dry-run", "allow"),
    ];
    let auth = format!("Bearer {}", token());
    let mut headers = spoofed.to_vec();
    headers.push(("authorization", &auth));
    let r = fixture().envoy.get("/orders", &headers);
    expect::passed(&r);
    assert_eq!(r.upstream_header("x-user-sub").as_deref(), Some("user-42"));
    assert_eq!(r.upstream_header("x-roles").as_deref(), Some("user,admin"));
    assert_eq!(r.upstream_header("x-missing"), None);
    assert_eq!(r.upstream_header("x-provider").as_deref(), Some("main"));
    assert_eq!(r.upstream_header("x-tokengate-dry-run"), None);

    // Without a token on an anonymous route, none of them survive either.
    let r = fixture().envoy.get("/public", &spoofed);
    expect::passed(&r);
    for (name, _) in spoofed {
        assert_eq!(
            r.upstream_header(name),
            None,
            "{} reached the upstream",
            name
        );
    }
}

/// An Envoy whose tokens carry 1,000 roles: `x-user-roles` would be about 10 KB, more than
/// the default bound of 8 KiB (upstreams with 8-16 KB header limits refuse such requests).
fn oversized_roles_envoy(oversized_headers: Option<&str>) -> (Envoy, String) {
    let key = SigningKey::es256("big");
    let mut config = json!({
        "providers": {"main": {
            "issuer": ISS, "audiences": ["api"], "jwks": mint::jwks(&[&key]),
            "claims": {"roles": "roles"}
        }},
        "rules": [{"name": "everything", "match": {"path": {"prefix": "/"}}}],
        "default": "deny",
        "max_token_bytes": 200_000,
        "forward": {
            "claims": [{"claim": "sub", "header": "x-user-id"}],
            "roles_header": "x-user-roles"
        }
    });
    if let Some(choice) = oversized_headers {
        config["forward"]["oversized_headers"] = json!(choice);
    }
    let envoy = Envoy::start(&config);
    let roles: Vec<String> = (0..1000).map(|i| format!("role-{:04}", i)).collect();
    let token = key.sign(&claims(ISS, &["api"], json!({"roles": roles})));
    (envoy, token)
}

#[test]
fn a_forwarded_header_over_the_bound_is_left_out_with_one_warning_per_rule() {
    // The default: forward.oversized_headers omit, forward.max_header_bytes 8 KiB.
    let (envoy, token) = oversized_roles_envoy(None);
    for _ in 0..3 {
        let r = envoy.get_with_token("/orders", &token);
        expect::passed(&r);
        assert!(r.upstream_header("x-user-roles").is_none(), "left out");
        assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("user-1"));
    }
    let log = envoy.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("max_header_bytes") && l.contains("[warning]"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning for the rule: {:?}",
        warnings
    );
    assert!(warnings[0].contains("rule everything") && warnings[0].contains("x-user-roles"));
}

#[test]
fn a_forwarded_header_over_the_bound_refuses_the_request_when_configured() {
    let (envoy, token) = oversized_roles_envoy(Some("refuse"));
    let r = envoy.get_with_token("/orders", &token);
    expect::refused(&r, 403, "access_denied", "max_header_bytes");
}
