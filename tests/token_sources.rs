#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Where tokengate finds the token, in a real Envoy: `Authorization: Bearer` (any case), a
//! named header with a prefix, a cookie, a query parameter, one of them at a time; and the
//! forms it refuses.

use serde_json::json;
use std::sync::OnceLock;
use tokengate_testkit::mint::{self, claims};
use tokengate_testkit::{expect, http, Envoy, Response, SigningKey};

const ISS: &str = "https://issuer.test";

struct Fixture {
    /// Sources: Bearer, `x-api-token: Token <t>`, cookie `access_token`, query `access_token`.
    all: Envoy,
    /// The default: `Authorization: Bearer` only.
    bearer_only: Envoy,
    /// The sources of `all`, with `forward.remove_token` (by its former name).
    removing: Envoy,
    key: SigningKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = SigningKey::es256("k");
        let provider = json!({"issuer": ISS, "audiences": ["api"], "jwks": mint::jwks(&[&key])});
        let sources = |remove_token: bool| {
            json!({
                "providers": {"main": provider},
                "token_sources": [
                    {"header": "Authorization", "prefix": "Bearer "},
                    {"header": "x-api-token", "prefix": "Token "},
                    {"cookie": "access_token"},
                    {"query": "access_token"}
                ],
                "default": "authenticated",
                // The former name of forward.remove_token, which still works.
                "forward": {"claims": [{"claim": "sub", "header": "x-sub"}], "remove_token_header": remove_token}
            })
        };
        let all = Envoy::start(&sources(false));
        let removing = Envoy::start(&sources(true));
        let bearer_only =
            Envoy::start(&json!({"providers": {"main": provider}, "default": "authenticated"}));
        Fixture {
            all,
            bearer_only,
            removing,
            key,
        }
    })
}

fn token_for(sub: &str) -> String {
    fixture()
        .key
        .sign(&claims(ISS, &["api"], json!({"sub": sub})))
}

fn sub_seen_upstream(r: &Response) -> String {
    expect::passed(r);
    r.upstream_header("x-sub").unwrap_or_default()
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let t = token_for("u");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{} {}", scheme, t);
        expect::passed(&fixture().bearer_only.get("/", &[("authorization", &value)]));
    }
}

#[test]
fn several_spaces_after_bearer_are_accepted() {
    let value = format!("Bearer    {}", token_for("u"));
    expect::passed(&fixture().bearer_only.get("/", &[("authorization", &value)]));
}

#[test]
fn tab_after_bearer_is_refused() {
    let value = format!("Bearer\t{}", token_for("u"));
    let r = fixture().bearer_only.get("/", &[("authorization", &value)]);
    expect::refused(&r, 401, "invalid_request", "must be \"Bearer <token>\"");
}

#[test]
fn bearer_without_a_space_is_refused() {
    let value = format!("Bearer{}", token_for("u"));
    let r = fixture().bearer_only.get("/", &[("authorization", &value)]);
    expect::refused(&r, 401, "invalid_request", "must be \"Bearer <token>\"");
}

#[test]
fn two_authorization_headers_are_refused() {
    let (a, b) = (
        format!("Bearer {}", token_for("a")),
        format!("Bearer {}", token_for("b")),
    );
    let r = fixture()
        .bearer_only
        .get("/", &[("authorization", &a), ("authorization", &b)]);
    expect::refused(
        &r,
        401,
        "invalid_request",
        "more than one authorization header",
    );
}

#[test]
fn whitespace_inside_the_token_is_refused() {
    let t = token_for("u");
    let value = format!("Bearer {} {}", &t[..20], &t[20..]);
    let r = fixture().bearer_only.get("/", &[("authorization", &value)]);
    expect::refused(&r, 401, "invalid_request", "characters a token cannot have");
}

#[test]
fn non_ascii_bytes_in_the_header_are_refused() {
    let t = token_for("u");
    let mut req = b"GET / HTTP/1.1\r\nhost: test.local\r\nauthorization: Bearer ".to_vec();
    req.extend_from_slice(&t.as_bytes()[..30]);
    req.extend_from_slice(&[0xc3, 0xa9]);
    req.extend_from_slice(&t.as_bytes()[30..]);
    req.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    let r = http::send_raw(fixture().bearer_only.port, &req);
    expect::refused(&r, 401, "invalid_request", "characters a token cannot have");
}

#[test]
fn other_schemes_are_not_taken_for_a_token() {
    let r = fixture()
        .bearer_only
        .get("/", &[("authorization", "Basic dXNlcjpwYXNz")]);
    expect::refused(&r, 401, "missing_token", "no access token");
}

#[test]
fn default_sources_ignore_cookies_and_query_parameters() {
    let t = token_for("u");
    let cookie = format!("access_token={}", t);
    let f = fixture();
    expect::refused(
        &f.bearer_only.get("/", &[("cookie", &cookie)]),
        401,
        "missing_token",
        "",
    );
    expect::refused(
        &f.bearer_only.get(&format!("/?access_token={}", t), &[]),
        401,
        "missing_token",
        "",
    );
}

#[test]
fn named_header_with_a_prefix() {
    let value = format!("token {}", token_for("from-header"));
    assert_eq!(
        sub_seen_upstream(&fixture().all.get("/", &[("x-api-token", &value)])),
        "from-header"
    );
}

#[test]
fn cookie() {
    let cookie = format!(
        "theme=dark; access_token={}; lang=en",
        token_for("from-cookie")
    );
    assert_eq!(
        sub_seen_upstream(&fixture().all.get("/", &[("cookie", &cookie)])),
        "from-cookie"
    );
}

#[test]
fn query_parameter() {
    let path = format!("/items?page=2&access_token={}", token_for("from-query"));
    assert_eq!(
        sub_seen_upstream(&fixture().all.get(&path, &[])),
        "from-query"
    );
}

#[test]
fn each_configured_source_carries_the_token_alone() {
    let f = fixture();
    let bearer = format!("Bearer {}", token_for("from-bearer"));
    let r = f.all.get("/", &[("authorization", &bearer)]);
    assert_eq!(sub_seen_upstream(&r), "from-bearer");
    let cookie = format!("access_token={}", token_for("from-cookie"));
    let r = f.all.get("/", &[("cookie", &cookie)]);
    assert_eq!(sub_seen_upstream(&r), "from-cookie");
    let path = format!("/?access_token={}", token_for("from-query"));
    // A Basic Authorization header is not a token: the query's is the only one.
    let r = f.all.get(&path, &[("authorization", "Basic dXNlcjpwYXNz")]);
    assert_eq!(sub_seen_upstream(&r), "from-query");
}

#[test]
fn tokens_in_more_than_one_source_are_refused() {
    let f = fixture();
    let bearer = format!("Bearer {}", token_for("from-bearer"));
    // A forged cookie or query token beside a valid Authorization header must not reach the
    // upstream, which may read it instead (RFC 6750 2: one method only).
    let forged_cookie = "access_token=forged.cookie.token";
    let forged_query = "/?access_token=forged.query.token";
    for r in [
        f.all.get(
            "/",
            &[("authorization", &bearer), ("cookie", forged_cookie)],
        ),
        f.all.get(forged_query, &[("authorization", &bearer)]),
        f.all.get(
            forged_query,
            &[("cookie", &format!("access_token={}", token_for("c")))],
        ),
    ] {
        expect::refused(&r, 401, "invalid_request", "more than one place");
    }
}

#[test]
fn remove_token_takes_the_token_out_of_its_cookie() {
    let cookie = format!("theme=dark; access_token={}; lang=en", token_for("c"));
    let r = fixture().removing.get("/", &[("cookie", &cookie)]);
    assert_eq!(sub_seen_upstream(&r), "c");
    assert_eq!(
        r.upstream_header("cookie").as_deref(),
        Some("theme=dark; lang=en")
    );
    let alone = format!("access_token={}", token_for("c"));
    let r = fixture().removing.get("/", &[("cookie", &alone)]);
    assert_eq!(sub_seen_upstream(&r), "c");
    assert_eq!(r.upstream_header("cookie"), None);
}

#[test]
fn remove_token_takes_the_token_out_of_the_query() {
    let path = format!("/orders?page=2&access_token={}&sort=asc", token_for("q"));
    let r = fixture().removing.get(&path, &[]);
    assert_eq!(sub_seen_upstream(&r), "q");
    assert_eq!(r.json()["path"], "/orders?page=2&sort=asc");
}

#[test]
fn remove_token_takes_the_token_header_out() {
    let value = format!("Token {}", token_for("h"));
    let r = fixture().removing.get("/", &[("x-api-token", &value)]);
    assert_eq!(sub_seen_upstream(&r), "h");
    assert_eq!(r.upstream_header("x-api-token"), None);
}
