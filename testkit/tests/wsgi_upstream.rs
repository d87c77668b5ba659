#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! The test infrastructure for what an *application* behind Envoy sees: the WSGI upstream
//! (Python's `wsgiref`), Envoy's `headers_with_underscores_action` and path settings, and
//! HTTP/2 (h2c) requests through curl. The tokengate configuration here forwards no
//! headers, allows every request and accepts any path, so what the application sees is
//! Envoy's and wsgiref's doing alone.

use serde_json::json;
use std::sync::OnceLock;
use tokengate_testkit::envoy::PathSettings;
use tokengate_testkit::http::{self, Response};
use tokengate_testkit::mint;
use tokengate_testkit::{
    wsgi, Envoy, EnvoyOptions, HeadersWithUnderscores, SigningKey, WsgiUpstream,
};

fn start(underscores: HeadersWithUnderscores, paths: PathSettings) -> Envoy {
    let key = SigningKey::es256("k");
    let config = json!({
        "providers": {"main": {"issuer": "https://i.test", "jwks": mint::jwks(&[&key])}},
        "default": "allow",
        // The filter's own refusal of paths not in normal form is tested in
        // tests/request_edges.rs; here only Envoy's path settings act.
        "require_normal_paths": false
    });
    Envoy::start_with(
        EnvoyOptions::new(&config)
            .wsgi_upstream()
            .headers_with_underscores(underscores)
            .paths(paths),
    )
}

/// One Envoy with Envoy's default ALLOW and the shipped path settings, shared by the tests.
fn allowing() -> &'static Envoy {
    static ENVOY: OnceLock<Envoy> = OnceLock::new();
    ENVOY.get_or_init(|| start(HeadersWithUnderscores::Allow, PathSettings::SHIPPED))
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

#[track_caller]
fn from_app(proto: &str, r: &Response) {
    assert!(
        r.reached_upstream() && r.header(wsgi::MARKER_HEADER).is_some(),
        "{}: expected the WSGI application's answer, got {} {}",
        proto,
        r.status,
        r.body
    );
}

fn raw_names(r: &Response) -> Vec<String> {
    wsgi::raw_headers(r).into_iter().map(|(n, _)| n).collect()
}

#[test]
fn the_wsgi_app_maps_header_spellings_to_one_variable_and_joins_repeats() {
    let app = WsgiUpstream::start();
    let r = app.get(
        "/a%2Fb?x=%2F",
        &[
            ("x_user_id", "a"),
            ("X-User-Id", "b"),
            ("x-org", "a"),
            ("x-org", "b"),
            ("path-info", "/forged"),
            ("content-type", "text/plain"),
        ],
    );
    from_app("direct", &r);
    let env = r.wsgi_env();
    assert_eq!(env["HTTP_X_USER_ID"], "a,b", "{:?}", env);
    assert_eq!(env["HTTP_X_ORG"], "a,b");
    // The path is percent-decoded, the query kept raw; a header cannot set a CGI variable.
    assert_eq!(env["PATH_INFO"], "/a/b");
    assert_eq!(env["QUERY_STRING"], "x=%2F");
    assert_eq!(env["CONTENT_TYPE"], "text/plain");
    assert!(!env.contains_key("HTTP_CONTENT_TYPE") && !env.contains_key("HTTP_PATH_INFO"));
    assert_eq!(env["REQUEST_METHOD"], "GET");
    assert_eq!(env["HTTP_HOST"], "test.local");
    // The raw view keeps every line as sent.
    let raw = wsgi::raw_headers(&r);
    assert!(raw.contains(&("x_user_id".into(), "a".into())), "{:?}", raw);
    assert!(raw.contains(&("X-User-Id".into(), "b".into())), "{:?}", raw);
    assert_eq!(r.json()["request_line"], "GET /a%2Fb?x=%2F HTTP/1.1");
    assert_eq!(app.hits(), 1);
    // Nothing of the test process's environment is in the environ.
    assert!(
        !env.contains_key("PATH") && !env.contains_key("HOME"),
        "{:?}",
        env
    );
}

#[test]
fn with_allow_an_underscored_header_reaches_the_app_as_the_dashed_variable() {
    let envoy = allowing();
    for (proto, r) in both(envoy, "GET", "/p?q=1", &[("x_user_id", "a")]) {
        from_app(proto, &r);
        assert_eq!(
            r.wsgi_var("HTTP_X_USER_ID").as_deref(),
            Some("a"),
            "{}",
            proto
        );
        assert!(raw_names(&r).contains(&"x_user_id".to_owned()), "{}", proto);
        assert_eq!(r.wsgi_var("PATH_INFO").as_deref(), Some("/p"));
        assert_eq!(r.wsgi_var("QUERY_STRING").as_deref(), Some("q=1"));
        assert_eq!(r.wsgi_var("HTTP_HOST").as_deref(), Some("test.local"));
        // Envoy speaks HTTP/1.1 to the application whatever the client spoke.
        assert_eq!(r.wsgi_var("SERVER_PROTOCOL").as_deref(), Some("HTTP/1.1"));
    }
    // Both spellings arrive, and the application sees them joined in arrival order.
    for (proto, r) in both(
        envoy,
        "GET",
        "/p",
        &[("x-user-id", "a"), ("x_user_id", "b")],
    ) {
        from_app(proto, &r);
        assert_eq!(
            r.wsgi_var("HTTP_X_USER_ID").as_deref(),
            Some("a,b"),
            "{}",
            proto
        );
    }
    assert!(envoy.wsgi().hits() >= 4);
    assert_eq!(
        envoy.upstream.hits(),
        0,
        "the echo upstream is not routed to"
    );
}

#[test]
fn with_reject_request_envoy_refuses_underscored_headers() {
    let envoy = &start(HeadersWithUnderscores::RejectRequest, PathSettings::SHIPPED);
    let r = envoy.request("GET", "/p", &[("x_user_id", "a")]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!r.from_upstream());
    // Over HTTP/2 Envoy resets the stream instead of answering (curl: exit 92).
    match envoy.try_request_h2("GET", "/p", &[("x_user_id", "a")]) {
        Err(e) => assert_eq!(e.exit, Some(92), "{}", e),
        Ok(r) => panic!(
            "HTTP/2: expected a reset stream, got {} {}",
            r.status, r.body
        ),
    }
    assert_eq!(envoy.wsgi().hits(), 0, "nothing reached the application");
    // The dashed spelling is an ordinary header.
    for (proto, r) in both(envoy, "GET", "/p", &[("x-user-id", "a")]) {
        from_app(proto, &r);
        assert_eq!(
            r.wsgi_var("HTTP_X_USER_ID").as_deref(),
            Some("a"),
            "{}",
            proto
        );
    }
}

#[test]
fn with_drop_header_envoy_removes_underscored_headers() {
    let envoy = &start(HeadersWithUnderscores::DropHeader, PathSettings::SHIPPED);
    for (proto, r) in both(
        envoy,
        "GET",
        "/p",
        &[("x_user_id", "a"), ("x-user-id", "b")],
    ) {
        from_app(proto, &r);
        assert_eq!(
            r.wsgi_var("HTTP_X_USER_ID").as_deref(),
            Some("b"),
            "{}",
            proto
        );
        assert!(
            !raw_names(&r).contains(&"x_user_id".to_owned()),
            "{}",
            proto
        );
    }
}

#[test]
fn repeated_headers_reach_the_app_as_separate_lines_and_one_joined_variable() {
    let envoy = allowing();
    for (proto, r) in both(envoy, "GET", "/p", &[("x-org", "a"), ("x-org", "b")]) {
        from_app(proto, &r);
        let lines: Vec<_> = wsgi::raw_headers(&r)
            .into_iter()
            .filter(|(n, _)| n == "x-org")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(lines, ["a", "b"], "{}: Envoy forwards both lines", proto);
        assert_eq!(
            r.wsgi_var("HTTP_X_ORG").as_deref(),
            Some("a,b"),
            "{}",
            proto
        );
    }
    // A list in one line and an empty value arrive as sent.
    for (proto, r) in both(envoy, "GET", "/p", &[("x-org", "a, b")]) {
        assert_eq!(
            r.wsgi_var("HTTP_X_ORG").as_deref(),
            Some("a, b"),
            "{}",
            proto
        );
    }
    for (proto, r) in both(envoy, "GET", "/p", &[("x-org", "")]) {
        assert_eq!(r.wsgi_var("HTTP_X_ORG").as_deref(), Some(""), "{}", proto);
    }
}

#[test]
fn http2_sends_a_lower_case_method_that_the_http1_codec_refuses() {
    let envoy = allowing();
    let r = envoy.request_h2("post", "/p", &[]);
    from_app("HTTP/2", &r);
    assert_eq!(r.wsgi_var("REQUEST_METHOD").as_deref(), Some("post"));
    assert_eq!(r.json()["method"], "post");
    // Envoy's HTTP/1 codec answers 400 itself; the filters never see the request.
    let r = envoy.request("post", "/p", &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!r.from_upstream());
    // A body over HTTP/2 arrives with its length.
    let r = http::request_h2_with_body(
        envoy.port,
        "POST",
        "/p",
        &[("content-type", "text/plain")],
        b"hello",
    );
    from_app("HTTP/2", &r);
    assert_eq!(r.json()["body"], "hello");
    assert_eq!(r.wsgi_var("CONTENT_LENGTH").as_deref(), Some("5"));
}

#[test]
fn path_settings_choose_between_the_shipped_normalisation_and_envoys_defaults() {
    let path = "/a//b/../c%2Fd";
    let shipped = allowing();
    for (proto, r) in both(shipped, "GET", path, &[]) {
        // %2F is unescaped with a redirect; the rest is normalised before the filters.
        assert_eq!(r.status, 307, "{}: {} {}", proto, r.status, r.body);
        assert_eq!(r.header("location"), Some("/a/c/d"), "{}", proto);
    }
    for (proto, r) in both(shipped, "GET", "/a//b/../c", &[]) {
        from_app(proto, &r);
        assert_eq!(r.json()["path"], "/a/c", "{}", proto);
    }
    let defaults = &start(HeadersWithUnderscores::Allow, PathSettings::ENVOY_DEFAULT);
    for (proto, r) in both(defaults, "GET", path, &[]) {
        from_app(proto, &r);
        assert_eq!(r.json()["path"], path, "{}: forwarded as received", proto);
        assert_eq!(
            r.wsgi_var("PATH_INFO").as_deref(),
            Some("/a//b/../c/d"),
            "{}",
            proto
        );
    }
}

#[test]
fn by_default_the_route_goes_to_the_echo_upstream_over_both_protocols() {
    let key = SigningKey::es256("k");
    let config = json!({
        "providers": {"main": {"issuer": "https://i.test", "jwks": mint::jwks(&[&key])}},
        "default": "allow"
    });
    let envoy = &Envoy::start(&config);
    assert!(envoy.wsgi.is_none());
    for (proto, r) in both(envoy, "GET", "/p", &[("x-org", "a"), ("x-org", "b")]) {
        tokengate_testkit::expect::passed(&r);
        assert!(r.header("x-echo-upstream").is_some(), "{}", proto);
        assert_eq!(
            r.upstream_header("x-org").as_deref(),
            Some("a"),
            "{}",
            proto
        );
    }
    assert_eq!(envoy.upstream.hits(), 2);
}
