#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! The request tokengate decides is the request the application acts on (issue 13), in a real
//! Envoy in front of a WSGI application (Python's `wsgiref`), which reports what an
//! application sees: header spellings that CGI/WSGI fold into a managed header, a repeated or
//! listed organisation header, hosts with a trailing dot, port, userinfo or a second `Host`
//! line, lower-case HTTP/2 methods and method/path override headers, and paths that are not in
//! normal form. Envoy runs with its own defaults (`headers_with_underscores_action: ALLOW`, no
//! path normalisation) unless a test says otherwise, so tokengate is the only guard.

use serde_json::{json, Value};
use std::sync::OnceLock;
use tokengate_testkit::http::Response;
use tokengate_testkit::mint::{self, claims, zitadel_roles};
use tokengate_testkit::{
    expect, wsgi, Envoy, EnvoyOptions, HeadersWithUnderscores, PathSettings, SigningKey,
};

const ISS: &str = "https://zitadel.test";
const PROJECT: &str = "283480000000000001";
const ADMIN_HOST: &str = "admin.example.com";

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::es256("edges"))
}

/// The route table every Envoy here uses, with `extra` top-level settings merged in. Each
/// strict rule is followed by a weaker one that a misread request would fall through to.
fn config(extra: Value) -> Value {
    let mut config = json!({
        "providers": {"zitadel": {
            "issuer": ISS, "zitadel": {"project_id": PROJECT}, "jwks": mint::jwks(&[key()])
        }},
        "rules": [
            {"name": "admin-host", "match": {"hosts": [ADMIN_HOST]}, "roles": {"any_of": ["admin"]}},
            {"name": "org", "match": {"path": {"prefix": "/org"}},
             "roles": {"any_of": ["admin"], "org": {"header": "x-org-id"}}},
            {"name": "admin", "match": {"path": {"prefix": "/admin"}}, "roles": {"any_of": ["admin"]}},
            {"name": "orders-write", "match": {"path": {"prefix": "/orders"}, "methods": ["POST"]},
             "roles": {"any_of": ["admin"]}},
            {"name": "open", "allow_anonymous": true}
        ],
        "default": "deny",
        "forward": {
            "claims": [{"claim": "sub", "header": "x-user-id"}],
            "roles_header": "x-user-roles"
        }
    });
    if let (Some(base), Value::Object(extra)) = (config.as_object_mut(), extra) {
        base.extend(extra);
    }
    config
}

fn start(extra: Value, underscores: HeadersWithUnderscores, paths: PathSettings) -> Envoy {
    Envoy::start_with(
        EnvoyOptions::new(&config(extra))
            .wsgi_upstream()
            .headers_with_underscores(underscores)
            .paths(paths),
    )
}

/// Envoy's own defaults: underscored header names allowed, paths forwarded as received.
fn envoy() -> &'static Envoy {
    static ENVOY: OnceLock<Envoy> = OnceLock::new();
    ENVOY.get_or_init(|| {
        start(
            json!({}),
            HeadersWithUnderscores::Allow,
            PathSettings::ENVOY_DEFAULT,
        )
    })
}

/// As [`envoy`], with tokengate's checks turned off where a setting allows it:
/// `require_normal_paths: false`, `keep_method_override_headers: true`,
/// `keep_path_override_headers: true`.
fn lenient() -> &'static Envoy {
    static ENVOY: OnceLock<Envoy> = OnceLock::new();
    ENVOY.get_or_init(|| {
        start(
            json!({
                "require_normal_paths": false,
                "keep_method_override_headers": true,
                "keep_path_override_headers": true
            }),
            HeadersWithUnderscores::Allow,
            PathSettings::ENVOY_DEFAULT,
        )
    })
}

/// A ZITADEL token for the project with `role` granted in org-1 (subject `user-1`).
fn token(role: &str) -> String {
    let (claim, roles) = zitadel_roles(PROJECT, &[(role, &["org-1"])]);
    let mut extra = json!({});
    extra[claim] = roles;
    key().sign(&claims(ISS, &["client-1", PROJECT], extra))
}

fn reader() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| token("reader"))
}

fn admin() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| token("admin"))
}

fn bearer(token: &str) -> String {
    format!("Bearer {}", token)
}

/// The request over HTTP/1.1 and over HTTP/2, labelled.
fn both(
    envoy: &Envoy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> [(&'static str, Response); 2] {
    [
        ("HTTP/1.1", envoy.request(method, path, headers)),
        ("HTTP/2", envoy.request_h2(method, path, headers)),
    ]
}

/// The WSGI application answered.
#[track_caller]
fn from_app(what: &str, r: &Response) {
    assert!(
        r.reached_upstream() && r.header(wsgi::MARKER_HEADER).is_some(),
        "{}: expected the WSGI application's answer, got {} {}",
        what,
        r.status,
        r.body
    );
}

/// Why `r` is not tokengate's `400 invalid_request` with a description containing
/// `description` (None when it is).
fn not_bad_request(r: &Response, description: &str) -> Option<String> {
    if r.from_upstream() {
        return Some(format!(
            "the application answered {}: PATH_INFO {:?}, HTTP_HOST {:?}, raw headers {:?}",
            r.status,
            r.wsgi_var("PATH_INFO"),
            r.wsgi_var("HTTP_HOST"),
            wsgi::raw_headers(r)
        ));
    }
    let body: Option<Value> = serde_json::from_str(&r.body).ok();
    let error = body.as_ref().and_then(|b| b["error"].as_str());
    let text = body
        .as_ref()
        .and_then(|b| b["error_description"].as_str())
        .unwrap_or_default();
    if r.status != 400 || error != Some("invalid_request") || !text.contains(description) {
        return Some(format!(
            "expected 400 invalid_request ({:?}), got {} {}",
            description, r.status, r.body
        ));
    }
    None
}

/// tokengate refused the request with `400 invalid_request`, the description containing
/// `description`.
#[track_caller]
fn bad_request(what: &str, r: &Response, description: &str) {
    if let Some(why) = not_bad_request(r, description) {
        panic!("{}: {}", what, why);
    }
}

/// Panics listing every failure, one a line.
#[track_caller]
fn none_failed(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Names of the header lines the application received.
fn raw_names(r: &Response) -> Vec<String> {
    wsgi::raw_headers(r)
        .into_iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect()
}

// ---- 1. Underscore spellings of tokengate's headers ------------------------------------

#[test]
fn an_underscored_user_id_from_an_anonymous_client_does_not_reach_the_app() {
    for (proto, r) in both(envoy(), "GET", "/public", &[("x_user_id", "someone")]) {
        from_app(proto, &r);
        assert_eq!(
            r.wsgi_var("HTTP_X_USER_ID"),
            None,
            "{}: the application would take the request as from a user; raw {:?}",
            proto,
            wsgi::raw_headers(&r)
        );
    }
    // Mixed case and dashes, as an HTTP/1.1 client may send them.
    let r = envoy().request("GET", "/public", &[("X_User-Id", "someone")]);
    from_app("HTTP/1.1 X_User-Id", &r);
    assert_eq!(r.wsgi_var("HTTP_X_USER_ID"), None, "{:?}", raw_names(&r));
}

#[test]
fn an_underscored_roles_header_does_not_add_to_the_tokens_roles() {
    let auth = bearer(reader());
    for (proto, r) in both(
        envoy(),
        "GET",
        "/public",
        &[("authorization", &auth), ("x_user_roles", "admin")],
    ) {
        from_app(proto, &r);
        assert_eq!(
            r.wsgi_var("HTTP_X_USER_ROLES").as_deref(),
            Some("reader"),
            "{}: the application must see the token's roles only; raw {:?}",
            proto,
            wsgi::raw_headers(&r)
        );
        assert_eq!(r.wsgi_var("HTTP_X_USER_ID").as_deref(), Some("user-1"));
    }
}

#[test]
fn an_underscored_org_header_does_not_reach_the_app_beside_the_checked_one() {
    let auth = bearer(admin());
    for (proto, r) in both(
        envoy(),
        "GET",
        "/org/docs",
        &[
            ("authorization", &auth),
            ("x-org-id", "org-1"),
            ("x_org_id", "org-2"),
        ],
    ) {
        from_app(proto, &r);
        assert_eq!(
            r.wsgi_var("HTTP_X_ORG_ID").as_deref(),
            Some("org-1"),
            "{}: the application must see only the organisation that was checked; raw {:?}",
            proto,
            wsgi::raw_headers(&r)
        );
    }
}

#[test]
fn the_shipped_reject_request_setting_refuses_underscored_headers_before_tokengate() {
    let envoy = start(
        json!({}),
        HeadersWithUnderscores::RejectRequest,
        PathSettings::SHIPPED,
    );
    let r = envoy.request("GET", "/public", &[("x_user_id", "someone")]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!r.from_upstream(), "{}", r.body);
    // Over HTTP/2 Envoy resets the stream (curl exit 92) instead of answering.
    match envoy.try_request_h2("GET", "/public", &[("x_user_roles", "admin")]) {
        Err(e) => assert_eq!(e.exit, Some(92), "{}", e),
        Ok(r) => panic!(
            "HTTP/2: expected a reset stream, got {} {}",
            r.status, r.body
        ),
    }
    assert_eq!(envoy.wsgi().hits(), 0, "nothing reached the application");
}

// ---- 2. A repeated organisation header --------------------------------------------------

#[test]
fn a_repeated_empty_or_listed_org_header_is_refused_with_400() {
    let auth = bearer(admin());
    let cases: [(&str, &[(&str, &str)]); 5] = [
        (
            "the same org twice",
            &[("x-org-id", "org-1"), ("x-org-id", "org-1")],
        ),
        ("two orgs", &[("x-org-id", "org-1"), ("x-org-id", "org-2")]),
        ("a list", &[("x-org-id", "org-1,org-2")]),
        ("a list with a space", &[("x-org-id", "org-1, org-2")]),
        ("an empty value", &[("x-org-id", "")]),
    ];
    let mut failures = Vec::new();
    for (case, org) in cases {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend_from_slice(org);
        for (proto, r) in both(envoy(), "GET", "/org/docs", &headers) {
            let why = not_bad_request(&r, "the x-org-id header must name exactly one organisation");
            failures.extend(why.map(|why| format!("{} {}: {}", proto, case, why)));
        }
    }
    none_failed(&failures);
}

#[test]
fn a_single_org_header_passes_and_the_app_sees_exactly_that_org() {
    let auth = bearer(admin());
    for (proto, r) in both(
        envoy(),
        "GET",
        "/org/docs",
        &[("authorization", &auth), ("x-org-id", "org-1")],
    ) {
        from_app(proto, &r);
        assert_eq!(
            r.wsgi_var("HTTP_X_ORG_ID").as_deref(),
            Some("org-1"),
            "{}",
            proto
        );
    }
    // The role is checked in the organisation named: admin is granted in org-1 only.
    for (proto, r) in both(
        envoy(),
        "GET",
        "/org/docs",
        &[("authorization", &auth), ("x-org-id", "org-2")],
    ) {
        assert_eq!(r.status, 403, "{}: {}", proto, r.body);
        assert!(!r.from_upstream(), "{}", proto);
    }
}

// ---- 3. Hosts -----------------------------------------------------------------------

/// A request to `host` is held to the admin-host rule: 401 without a token, 403 for a
/// reader, through for an admin.
#[track_caller]
fn held_to_the_admin_host_rule(host: &str) {
    let reader = bearer(reader());
    let admin = bearer(admin());
    for (proto, r) in both(envoy(), "GET", "/public", &[("host", host)]) {
        let what = format!("{} host {:?} without a token", proto, host);
        assert!(!r.from_upstream(), "{}: reached the application", what);
        assert_eq!(r.status, 401, "{}: {}", what, r.body);
    }
    for (proto, r) in both(
        envoy(),
        "GET",
        "/public",
        &[("host", host), ("authorization", &reader)],
    ) {
        let what = format!("{} host {:?} with a reader's token", proto, host);
        assert!(!r.from_upstream(), "{}: reached the application", what);
        expect::refused(&r, 403, "insufficient_scope", "any of admin");
    }
    for (proto, r) in both(
        envoy(),
        "GET",
        "/public",
        &[("host", host), ("authorization", &admin)],
    ) {
        from_app(
            &format!("{} host {:?} with an admin's token", proto, host),
            &r,
        );
    }
}

#[test]
fn a_host_with_a_trailing_dot_is_held_to_its_host_rule() {
    held_to_the_admin_host_rule("admin.example.com.");
    held_to_the_admin_host_rule("admin.example.com.:8080");
}

#[test]
fn a_host_in_upper_case_with_a_port_is_held_to_its_host_rule() {
    held_to_the_admin_host_rule("ADMIN.example.com:8080");
}

#[test]
fn a_host_with_userinfo_is_refused_with_400_and_by_envoy_over_http2() {
    let r = envoy().request("GET", "/public", &[("host", "x@admin.example.com")]);
    bad_request("HTTP/1.1", &r, "userinfo");
    // Over HTTP/2 (curl sends the host as :authority) Envoy's codec refuses such an
    // :authority itself (http2.invalid.header.field) and terminates the connection: no
    // answer (curl reports exit 18 or 56, as the connection ends), and nothing reaches
    // tokengate or the application.
    match envoy().try_request_h2("GET", "/public", &[("host", "x@admin.example.com")]) {
        Ok(r) => panic!(
            "HTTP/2: expected Envoy to refuse the :authority, got {} {}",
            r.status, r.body
        ),
        Err(e) => assert!(e.stdout.is_empty(), "HTTP/2: {} (stdout {:?})", e, e.stdout),
    }
}

#[test]
fn two_host_lines_are_refused_with_400() {
    // Envoy's HTTP/1 codec joins them into one :authority, `a,b`.
    let request = b"GET /public HTTP/1.1\r\n\
        host: admin.example.com\r\n\
        host: public.example.com\r\n\
        connection: close\r\n\r\n";
    let r = envoy().send_raw(request);
    bad_request("two Host lines", &r, "more than one host");
    let request = b"GET /public HTTP/1.1\r\n\
        host: public.example.com\r\n\
        host: admin.example.com\r\n\
        connection: close\r\n\r\n";
    let r = envoy().send_raw(request);
    bad_request("two Host lines, admin second", &r, "more than one host");
}

#[test]
fn an_authority_naming_two_hosts_is_refused_with_400_over_http2() {
    for authority in [
        "admin.example.com,public.example.com",
        "public.example.com,admin.example.com",
    ] {
        let r = envoy().request_h2("GET", "/public", &[("host", authority)]);
        bad_request(&format!("HTTP/2 {:?}", authority), &r, "more than one host");
    }
}

// ---- 4. Methods -----------------------------------------------------------------------

#[test]
fn a_lower_case_http2_method_is_held_to_its_upper_case_rule() {
    let reader = bearer(reader());
    let r = envoy().request_h2("post", "/orders", &[("authorization", &reader)]);
    assert!(
        !r.from_upstream(),
        "a reader's `post` fell through to the open rule and reached the application as {:?}",
        r.wsgi_var("REQUEST_METHOD")
    );
    expect::refused(&r, 403, "insufficient_scope", "any of admin");
    let r = envoy().request_h2("post", "/orders", &[]);
    assert!(!r.from_upstream(), "{}", r.body);
    assert_eq!(r.status, 401, "{}", r.body);
    // An admin's `post` goes through, as sent.
    let admin = bearer(admin());
    let r = envoy().request_h2("post", "/orders", &[("authorization", &admin)]);
    from_app("HTTP/2 admin post", &r);
    assert_eq!(r.wsgi_var("REQUEST_METHOD").as_deref(), Some("post"));
    // Over HTTP/1.1 the upper-case method is held to the rule too.
    let r = envoy().request("POST", "/orders", &[("authorization", &reader)]);
    expect::refused(&r, 403, "insufficient_scope", "any of admin");
}

/// The override headers and the WSGI variables an application reads them from.
const METHOD_OVERRIDES: [(&str, &str); 4] = [
    ("X-HTTP-Method-Override", "HTTP_X_HTTP_METHOD_OVERRIDE"),
    ("x_http_method_override", "HTTP_X_HTTP_METHOD_OVERRIDE"),
    ("X-Method-Override", "HTTP_X_METHOD_OVERRIDE"),
    ("X-HTTP-Method", "HTTP_X_HTTP_METHOD"),
];
const PATH_OVERRIDES: [(&str, &str); 2] = [
    ("X-Original-URL", "HTTP_X_ORIGINAL_URL"),
    ("X-Rewrite-URL", "HTTP_X_REWRITE_URL"),
];

/// Sends each header (with `value`) over HTTP/1.1 and HTTP/2 and checks that the application
/// never sees it.
fn never_reach_the_app(headers: &[(&str, &str)], value: &str) {
    for (header, var) in headers {
        for (proto, r) in both(envoy(), "GET", "/public", &[(header, value)]) {
            from_app(proto, &r);
            assert_eq!(
                r.wsgi_var(var),
                None,
                "{} {}: reached the application; raw {:?}",
                proto,
                header,
                wsgi::raw_headers(&r)
            );
        }
    }
}

#[test]
fn method_override_headers_do_not_reach_the_app_by_default() {
    never_reach_the_app(&METHOD_OVERRIDES, "DELETE");
}

#[test]
fn path_override_headers_do_not_reach_the_app_by_default() {
    never_reach_the_app(&PATH_OVERRIDES, "/admin");
}

#[test]
fn with_keep_override_headers_the_overrides_reach_the_app() {
    for (header, var) in METHOD_OVERRIDES
        .into_iter()
        .filter(|(h, _)| !h.contains('_'))
        .chain(PATH_OVERRIDES)
    {
        for (proto, r) in both(lenient(), "GET", "/public", &[(header, "DELETE")]) {
            from_app(proto, &r);
            assert_eq!(
                r.wsgi_var(var).as_deref(),
                Some("DELETE"),
                "{} {}",
                proto,
                header
            );
        }
    }
}

// ---- 5. Paths -----------------------------------------------------------------------

/// Paths that pass a `/public` rule or the catch-all as sent, while many upstreams serve
/// `/admin` (or that are under `/admin` only in another reading).
const ABNORMAL_PATHS: &[&str] = &[
    "//admin",
    "/public//admin",
    "/%2Fadmin",
    "/public%2F..%2Fadmin",
    "/admin%2F..",
    "/public%5C..%5Cadmin",
    "/public/..;/admin",
    "/public/../admin",
    "/./admin",
    "/public/%2e%2e/admin",
    "/%2e%2e/admin",
    "/%252e%252e/admin",
    "/admin;x",
    "/%61dmin",
    "/admin%2",
    "/admin%00",
    "/public\\..\\admin",
];

#[test]
fn paths_not_in_normal_form_are_refused_with_400() {
    let mut failures = Vec::new();
    for path in ABNORMAL_PATHS {
        let r = envoy().request("GET", path, &[]);
        let why = not_bad_request(&r, "normal form");
        failures.extend(why.map(|why| format!("HTTP/1.1 {:?}: {}", path, why)));
    }
    none_failed(&failures);
}

#[test]
fn paths_not_in_normal_form_are_refused_with_400_over_http2() {
    let mut failures = Vec::new();
    for path in ABNORMAL_PATHS {
        let why = match envoy().try_request_h2("GET", path, &[]) {
            Ok(r) => not_bad_request(&r, "normal form"),
            Err(e) => Some(format!("no answer ({})", e)),
        };
        failures.extend(why.map(|why| format!("HTTP/2 {:?}: {}", path, why)));
    }
    none_failed(&failures);
}

/// Envoy with Istio's default path normalisation (`meshConfig.pathNormalization: BASE`: dot
/// segments resolved, `//`, `%2F` and `%5C` kept).
fn istio_base() -> &'static Envoy {
    static ENVOY: OnceLock<Envoy> = OnceLock::new();
    ENVOY.get_or_init(|| {
        start(
            json!({}),
            HeadersWithUnderscores::Allow,
            PathSettings::ISTIO_BASE,
        )
    })
}

/// Behind Istio's default normalisation no path of [`ABNORMAL_PATHS`] reaches the
/// application without a token: what BASE leaves out of normal form is refused with 400 (by
/// tokengate, or by Envoy itself), and what it resolves to `/admin` is held to the admin rule
/// (401 without a token).
#[test]
fn under_istios_default_path_normalisation_no_abnormal_path_reaches_the_app_anonymously() {
    let mut failures = Vec::new();
    // Envoy's normalisation refuses some (`%00`) with its own 400 before tokengate.
    let held = |r: &Response| match r.status {
        401 if !r.from_upstream() => None,
        400 if !r.from_upstream() && r.body.is_empty() => None,
        _ => not_bad_request(r, "normal form"),
    };
    for path in ABNORMAL_PATHS {
        let h1 = held(&istio_base().request("GET", path, &[]));
        failures.extend(h1.map(|why| format!("HTTP/1.1 {:?}: {}", path, why)));
        let h2 = match istio_base().try_request_h2("GET", path, &[]) {
            Ok(r) => held(&r),
            Err(e) => Some(format!("no answer ({})", e)),
        };
        failures.extend(h2.map(|why| format!("HTTP/2 {:?}: {}", path, why)));
    }
    none_failed(&failures);
}

#[test]
fn paths_in_normal_form_pass_and_are_held_to_their_rules() {
    for path in ["/public", "/public/a.json", "/a%20b", "/%C3%A9", "/a..b/"] {
        for (proto, r) in both(envoy(), "GET", path, &[]) {
            from_app(&format!("{} {}", proto, path), &r);
            assert_eq!(r.json()["path"], path, "{}", proto);
        }
    }
    let reader = bearer(reader());
    let admin = bearer(admin());
    for (proto, r) in both(envoy(), "GET", "/admin/x", &[("authorization", &reader)]) {
        assert!(!r.from_upstream(), "{}", proto);
        expect::refused(&r, 403, "insufficient_scope", "any of admin");
    }
    for (proto, r) in both(envoy(), "GET", "/admin/x", &[("authorization", &admin)]) {
        from_app(proto, &r);
        assert_eq!(r.wsgi_var("PATH_INFO").as_deref(), Some("/admin/x"));
    }
}

/// With `require_normal_paths: false` (and Envoy not normalising) tokengate matches the path
/// as sent: `//admin`, `/%61dmin` and `/public/../admin` are not under the `/admin` prefix,
/// fall to the open rule and reach the application without a token. The application reads
/// `//admin` and `/%61dmin` as `/admin` (Python's `http.server` collapses a leading `//`,
/// WSGI's `PATH_INFO` is percent-decoded). The setting is for upstreams that need such paths,
/// behind Envoy's own normalisation.
#[test]
fn with_require_normal_paths_off_such_paths_are_matched_as_sent() {
    for (path, path_info) in [
        ("//admin", "/admin"),
        ("/%61dmin", "/admin"),
        ("/public/../admin", "/public/../admin"),
        ("/public/..;/admin", "/public/..;/admin"),
    ] {
        for (proto, r) in both(lenient(), "GET", path, &[]) {
            let what = format!("{} {}", proto, path);
            from_app(&what, &r);
            assert_eq!(
                r.json()["request_line"],
                format!("GET {} HTTP/1.1", path),
                "{}: forwarded as sent",
                what
            );
            assert_eq!(
                r.wsgi_var("PATH_INFO").as_deref(),
                Some(path_info),
                "{}",
                what
            );
        }
    }
    // A path under the prefix as sent is still held to its rule.
    for (proto, r) in both(lenient(), "GET", "/admin;x", &[]) {
        assert!(!r.from_upstream(), "{}", proto);
        assert_eq!(r.status, 401, "{}: {}", proto, r.body);
    }
}
