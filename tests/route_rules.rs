#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Per-route rules in a real Envoy: matching on path, method and host, first match wins,
//! and what each rule requires (roles, permissions, scopes, audiences, claims).

use serde_json::{json, Value};
use std::sync::OnceLock;
use tokengate_testkit::mint::{self, claims, zitadel_roles};
use tokengate_testkit::{expect, Envoy, Response, SigningKey};

const ZITADEL: &str = "https://zitadel.test";
const GENERIC: &str = "https://generic.test";
const PROJECT: &str = "283480000000000001";

struct Fixture {
    envoy: Envoy,
    zitadel_key: SigningKey,
    generic_key: SigningKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let zitadel_key = SigningKey::rsa("RS256", "280543383892525058");
        let generic_key = SigningKey::es256("generic-1");
        let envoy = Envoy::start(&json!({
            "providers": {
                "zitadel": {"issuer": ZITADEL, "zitadel": {"project_id": PROJECT}, "jwks": mint::jwks(&[&zitadel_key])},
                "generic": {
                    "issuer": GENERIC,
                    "audiences": ["api"],
                    "jwks": mint::jwks(&[&generic_key]),
                    "claims": {"roles": "realm_access.roles"}
                }
            },
            "rules": [
                {"name": "health", "match": {"path": {"exact": "/healthz"}}, "allow_anonymous": true},
                {"name": "first", "match": {"path": {"prefix": "/first"}}, "allow_anonymous": true},
                {"name": "first-secret", "match": {"path": {"prefix": "/first/secret"}}, "deny": true},
                {"name": "internal", "match": {"path": {"prefix": "/internal/"}}, "deny": true},
                {"name": "orders-read", "match": {"path": {"regex": "/orders/[0-9]+"}, "methods": ["GET"]},
                 "scopes": {"any_of": ["orders:read", "orders:admin"]}},
                {"name": "orders-write", "match": {"path": {"prefix": "/orders"}, "methods": ["post", "PUT"]},
                 "scopes": {"all_of": ["orders:write", "orders:read"]}},
                {"name": "admin", "match": {"path": {"prefix": "/admin"}}, "providers": ["zitadel"], "roles": {"any_of": ["admin"]}},
                {"name": "reports", "match": {"path": {"prefix": "/reports"}}, "roles": {"all_of": ["reader", "auditor"]}},
                {"name": "org", "match": {"path": {"prefix": "/org"}}, "roles": {"any_of": ["editor"], "org": {"header": "X-Org-Id"}}},
                {"name": "acme", "match": {"path": {"prefix": "/acme"}}, "roles": {"any_of": ["editor"], "org": {"id": "acme-org"}}},
                {"name": "posts", "match": {"path": {"prefix": "/posts"}}, "permissions": {"any_of": ["posts:read"]}},
                {"name": "manage", "match": {"path": {"prefix": "/manage"}}, "permissions": {"all_of": ["posts:read", "posts:write"]}},
                {"name": "partner", "match": {"path": {"prefix": "/partner"}}, "audiences": ["partner-api"]},
                {"name": "verified", "match": {"path": {"prefix": "/verified"}},
                 "claims": [{"claim": "email_verified", "equals": true}, {"claim": "groups", "contains": "staff"}]},
                {"name": "tier", "match": {"path": {"prefix": "/tier"}}, "claims": [{"claim": "plan.tier", "equals": "gold"}]},
                {"name": "dotted", "match": {"path": {"prefix": "/dotted"}}, "claims": [{"claim": ["https://example.com/plan"], "equals": "gold"}]},
                {"name": "admin-host", "match": {"hosts": ["*.admin.test"]}, "roles": {"any_of": ["admin"]}},
                {"name": "generic-only", "match": {"path": {"prefix": "/generic"}}, "providers": ["generic"], "roles": {"any_of": ["admin"]}},
                {"name": "authenticated", "match": {"path": {"prefix": "/any"}}}
            ],
            "default": "deny"
        }));
        Fixture { envoy, zitadel_key, generic_key }
    })
}

/// A ZITADEL token for our project with these role grants and extra claims.
fn zitadel_token(grants: &[(&str, &[&str])], extra: Value) -> String {
    let (roles_claim, roles) = zitadel_roles(PROJECT, grants);
    let mut extra = extra;
    extra[roles_claim] = roles;
    fixture()
        .zitadel_key
        .sign(&claims(ZITADEL, &["client-1", PROJECT], extra))
}

fn generic_token(extra: Value) -> String {
    fixture()
        .generic_key
        .sign(&claims(GENERIC, &["api"], extra))
}

fn get(path: &str, token: Option<&str>) -> Response {
    match token {
        Some(t) => fixture().envoy.get_with_token(path, t),
        None => fixture().envoy.get(path, &[]),
    }
}

fn send(method: &str, path: &str, token: &str, extra: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {}", token);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    fixture().envoy.request(method, path, &headers)
}

#[track_caller]
fn insufficient(r: &Response, description: &str, scope: &str) {
    expect::refused(r, 403, "insufficient_scope", description);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{}",
        challenge
    );
    if scope.is_empty() {
        assert!(!challenge.contains("scope="), "{}", challenge);
    } else {
        assert!(
            challenge.contains(&format!("scope=\"{}\"", scope)),
            "{}",
            challenge
        );
    }
}

#[test]
fn anonymous_route_needs_no_token() {
    expect::passed(&get("/healthz", None));
}

#[test]
fn anonymous_route_still_refuses_an_invalid_token() {
    expect::invalid_token(&get("/healthz", Some("not.a.jwt")), "");
}

#[test]
fn anonymous_route_accepts_a_valid_token() {
    expect::passed(&get("/healthz", Some(&generic_token(json!({})))));
}

#[test]
fn first_matching_rule_wins() {
    // "/first" (anonymous) is listed before "/first/secret" (deny).
    expect::passed(&get("/first/secret", None));
}

#[test]
fn deny_rule_refuses_even_a_valid_token() {
    let r = get(
        "/internal/metrics",
        Some(&zitadel_token(&[("admin", &["o1"])], json!({}))),
    );
    expect::refused(
        &r,
        403,
        "access_denied",
        "no rule allows GET /internal/metrics",
    );
}

#[test]
fn unmatched_request_is_denied_by_default() {
    let r = get("/nowhere", Some(&generic_token(json!({}))));
    expect::refused(&r, 403, "access_denied", "no rule allows GET /nowhere");
    assert!(
        r.header("www-authenticate").is_none(),
        "no token would help, so no challenge"
    );
}

#[test]
fn any_valid_token_opens_a_rule_without_requirements() {
    expect::passed(&get("/any/thing", Some(&generic_token(json!({})))));
    expect::passed(&get("/any/thing", Some(&zitadel_token(&[], json!({})))));
    expect::refused(
        &get("/any/thing", None),
        401,
        "missing_token",
        "no access token",
    );
}

#[test]
fn regex_must_match_the_whole_path() {
    let token = generic_token(json!({"scope": "orders:read"}));
    expect::passed(&get("/orders/42", Some(&token)));
    expect::passed(&get("/orders/42?expand=items", Some(&token)));
    // Not a number: no rule matches GET, the default denies.
    expect::refused(
        &get("/orders/42abc", Some(&token)),
        403,
        "access_denied",
        "",
    );
}

#[test]
fn methods_select_the_rule() {
    let token = generic_token(json!({"scope": "orders:read"}));
    expect::passed(&send("GET", "/orders/7", &token, &[]));
    // POST /orders/7 falls to "orders-write", which needs more scopes.
    insufficient(
        &send("POST", "/orders/7", &token, &[]),
        "scopes",
        "orders:write orders:read",
    );
    expect::refused(
        &send("DELETE", "/orders/7", &token, &[]),
        403,
        "access_denied",
        "no rule allows DELETE",
    );
}

#[test]
fn scopes_any_of_from_a_space_separated_scope_claim() {
    expect::passed(&get(
        "/orders/1",
        Some(&generic_token(json!({"scope": "openid orders:admin"}))),
    ));
    insufficient(
        &get(
            "/orders/1",
            Some(&generic_token(json!({"scope": "openid"}))),
        ),
        "lacks the scopes",
        "orders:read orders:admin",
    );
}

#[test]
fn scopes_from_an_scp_array() {
    expect::passed(&get(
        "/orders/1",
        Some(&generic_token(json!({"scp": ["orders:read"]}))),
    ));
}

#[test]
fn scopes_all_of() {
    let both = generic_token(json!({"scope": "orders:read orders:write"}));
    expect::passed(&send("PUT", "/orders/1", &both, &[]));
    let one = generic_token(json!({"scope": "orders:write"}));
    insufficient(
        &send("PUT", "/orders/1", &one, &[]),
        "all of orders:write, orders:read",
        "orders:write orders:read",
    );
}

#[test]
fn roles_any_of_from_the_zitadel_project_claim() {
    expect::passed(&get(
        "/admin/users",
        Some(&zitadel_token(&[("admin", &["o1"])], json!({}))),
    ));
    insufficient(
        &get(
            "/admin/users",
            Some(&zitadel_token(&[("viewer", &["o1"])], json!({}))),
        ),
        "lacks the roles",
        "admin",
    );
}

#[test]
fn roles_any_of_from_a_nested_generic_claim() {
    let token = generic_token(json!({"realm_access": {"roles": ["user", "admin"]}}));
    expect::passed(&get("/generic/x", Some(&token)));
    let token = generic_token(json!({"realm_access": {"roles": ["user"]}}));
    insufficient(&get("/generic/x", Some(&token)), "lacks the roles", "admin");
}

#[test]
fn roles_all_of() {
    let both = zitadel_token(&[("reader", &["o1"]), ("auditor", &["o1"])], json!({}));
    expect::passed(&get("/reports/q3", Some(&both)));
    let one = zitadel_token(&[("reader", &["o1"])], json!({}));
    insufficient(
        &get("/reports/q3", Some(&one)),
        "all of reader, auditor",
        "reader auditor",
    );
}

#[test]
fn role_must_be_granted_in_the_organisation_the_request_names() {
    let token = zitadel_token(&[("editor", &["org-a"])], json!({}));
    expect::passed(&send("GET", "/org/docs", &token, &[("x-org-id", "org-a")]));
    insufficient(
        &send("GET", "/org/docs", &token, &[("x-org-id", "org-b")]),
        "in the organisation named by x-org-id",
        "editor",
    );
    insufficient(
        &send("GET", "/org/docs", &token, &[]),
        "the request has none",
        "editor",
    );
}

#[test]
fn role_must_be_granted_in_a_fixed_organisation() {
    expect::passed(&get(
        "/acme/x",
        Some(&zitadel_token(&[("editor", &["acme-org"])], json!({}))),
    ));
    insufficient(
        &get(
            "/acme/x",
            Some(&zitadel_token(&[("editor", &["other-org"])], json!({}))),
        ),
        "in organisation acme-org",
        "editor",
    );
}

#[test]
fn permissions_any_of() {
    expect::passed(&get(
        "/posts/1",
        Some(&zitadel_token(&[], json!({"permissions": ["posts:read"]}))),
    ));
    insufficient(
        &get(
            "/posts/1",
            Some(&zitadel_token(&[], json!({"permissions": ["users:read"]}))),
        ),
        "lacks the permissions",
        "posts:read",
    );
}

#[test]
fn permissions_all_of() {
    let both = zitadel_token(&[], json!({"permissions": ["posts:read", "posts:write"]}));
    expect::passed(&get("/manage/1", Some(&both)));
    let one = zitadel_token(&[], json!({"permissions": ["posts:read"]}));
    insufficient(
        &get("/manage/1", Some(&one)),
        "all of posts:read, posts:write",
        "posts:read posts:write",
    );
}

#[test]
fn audience_override_replaces_the_providers_audiences() {
    let f = fixture();
    let partner = f
        .zitadel_key
        .sign(&claims(ZITADEL, &["partner-api"], json!({})));
    expect::passed(&get("/partner/feed", Some(&partner)));
    // The provider's own audience (the project id) does not open the partner route...
    expect::invalid_token(
        &get("/partner/feed", Some(&zitadel_token(&[], json!({})))),
        "audience",
    );
    // ...and the partner audience does not open the provider's other routes.
    expect::invalid_token(&get("/any/x", Some(&partner)), "audience");
}

#[test]
fn claim_must_equal_or_contain_a_value() {
    let ok = generic_token(json!({"email_verified": true, "groups": ["staff", "dev"]}));
    expect::passed(&get("/verified/x", Some(&ok)));
    let unverified = generic_token(json!({"email_verified": false, "groups": ["staff"]}));
    insufficient(
        &get("/verified/x", Some(&unverified)),
        "email_verified claim",
        "",
    );
    let outsider = generic_token(json!({"email_verified": true, "groups": ["dev"]}));
    insufficient(&get("/verified/x", Some(&outsider)), "groups claim", "");
}

#[test]
fn claim_rules_hold_for_tokens_served_from_the_cache() {
    // Cached tokens keep only the claims some rule or forwarded header reads: each rule's
    // claims must still be there when the token comes from the cache for another route.
    let both = generic_token(
        json!({"email_verified": true, "groups": ["staff"], "plan": {"tier": "gold"}, "unused": "x"}),
    );
    for _ in 0..2 {
        expect::passed(&get("/verified/x", Some(&both)));
        expect::passed(&get("/tier/x", Some(&both)));
    }
    let verified_only = generic_token(json!({"email_verified": true, "groups": ["staff"]}));
    expect::passed(&get("/verified/x", Some(&verified_only)));
    insufficient(&get("/tier/x", Some(&verified_only)), "plan.tier", "");
}

#[test]
fn claim_path_may_be_nested() {
    expect::passed(&get(
        "/tier/x",
        Some(&generic_token(json!({"plan": {"tier": "gold"}}))),
    ));
    insufficient(
        &get(
            "/tier/x",
            Some(&generic_token(json!({"plan": {"tier": "free"}}))),
        ),
        "plan.tier",
        "",
    );
}

#[test]
fn claim_path_may_name_a_key_with_dots() {
    expect::passed(&get(
        "/dotted/x",
        Some(&generic_token(json!({"https://example.com/plan": "gold"}))),
    ));
}

#[test]
fn host_pattern_selects_the_rule() {
    let viewer = zitadel_token(&[("viewer", &["o1"])], json!({}));
    let admin = zitadel_token(&[("admin", &["o1"])], json!({}));
    let on_host = |token: &str| {
        send(
            "GET",
            "/somewhere",
            token,
            &[("host", "eu.Admin.test:8443")],
        )
    };
    insufficient(&on_host(&viewer), "lacks the roles", "admin");
    expect::passed(&on_host(&admin));
}

#[test]
fn rule_limited_to_a_provider_refuses_other_providers_tokens() {
    let zitadel_admin = zitadel_token(
        &[("admin", &["o1"])],
        json!({"realm_access": {"roles": ["admin"]}}),
    );
    expect::invalid_token(
        &get("/generic/x", Some(&zitadel_admin)),
        "issuer \"https://zitadel.test\" is not accepted",
    );
    let generic_admin = generic_token(json!({"realm_access": {"roles": ["admin"]}}));
    expect::invalid_token(
        &get("/admin/x", Some(&generic_admin)),
        "issuer \"https://generic.test\" is not accepted",
    );
}
