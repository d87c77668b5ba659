//! The dev IdP behaves like ZITADEL where a proxy can see it; tokengate's tests rely on it.

use base64::Engine;
use devidp::httpd::form_encode;
use devidp::{ClientConfig, Endpoint, Fault, IdpConfig, RunningIdp};
use serde_json::{json, Value};
use tokengate_testkit::http::{self, Response};
use tokengate_testkit::mint::{self, SigningKey};

const PROJECT: &str = "283480000000000001";

fn client(id: &str, secret: &str) -> ClientConfig {
    serde_json::from_value(json!({"client_id": id, "client_secret": secret})).unwrap()
}

fn start(clients: Vec<ClientConfig>) -> RunningIdp {
    let config = IdpConfig {
        issuer: None,
        project_id: PROJECT.into(),
        token_lifetime_seconds: 3600,
        jwks_max_age_seconds: 300,
        clients,
    };
    RunningIdp::start(config, "127.0.0.1:0").unwrap()
}

fn basic(id: &str, secret: &str) -> String {
    let raw = format!("{}:{}", form_encode(id), form_encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn post(idp: &RunningIdp, path: &str, auth: Option<&str>, form: &str) -> Response {
    let mut req = format!("POST {} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n", path, form.len());
    if let Some(a) = auth {
        req.push_str(&format!("authorization: {}\r\n", a));
    }
    req.push_str("connection: close\r\n\r\n");
    req.push_str(form);
    http::send_raw(idp.port(), req.as_bytes())
}

fn token_for(idp: &RunningIdp, id: &str, secret: &str) -> String {
    let r = post(
        idp,
        "/oauth/v2/token",
        Some(&basic(id, secret)),
        "grant_type=client_credentials&scope=openid",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

fn introspect(idp: &RunningIdp, auth: &str, token: &str) -> Response {
    post(
        idp,
        "/oauth/v2/introspect",
        Some(auth),
        &format!("token={}", form_encode(token)),
    )
}

#[test]
fn discovery_names_the_endpoints() {
    let idp = start(vec![]);
    let d = http::get(idp.port(), "/.well-known/openid-configuration", &[]).json();
    assert_eq!(d["issuer"], idp.issuer());
    assert_eq!(d["jwks_uri"], format!("{}/oauth/v2/keys", idp.issuer()));
    assert_eq!(
        d["introspection_endpoint"],
        format!("{}/oauth/v2/introspect", idp.issuer())
    );
}

#[test]
fn keys_carry_cache_control_and_numeric_kids() {
    let idp = start(vec![]);
    let r = http::get(idp.port(), "/oauth/v2/keys", &[]);
    assert_eq!(
        r.header("cache-control"),
        Some("max-age=300, must-revalidate")
    );
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert!(keys[0]["kid"]
        .as_str()
        .unwrap()
        .bytes()
        .all(|b| b.is_ascii_digit()));
    assert_eq!(keys[0]["alg"], "RS256");
}

#[test]
fn client_credentials_gives_a_zitadel_shaped_jwt() {
    let mut c = client("svc-reader", "s3cret&!");
    c.roles.insert("reader".into(), vec!["org-1".into()]);
    c.permissions = vec!["orders:read".into()];
    let idp = start(vec![c]);
    let token = token_for(&idp, "svc-reader", "s3cret&!");
    let header: Value =
        serde_json::from_slice(&mint::b64_decode(token.split('.').next().unwrap()).unwrap())
            .unwrap();
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], idp.idp().active_kid());
    let claims = mint::unverified_payload(&token).unwrap();
    assert_eq!(claims["aud"], json!(["svc-reader", PROJECT]));
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(
        claims[format!("urn:zitadel:iam:org:project:{}:roles", PROJECT)],
        json!({"reader": {"org-1": "org-1.localhost"}})
    );
    assert_eq!(claims["permissions"], json!(["orders:read"]));
}

#[test]
fn wrong_client_secret_gets_no_token() {
    let idp = start(vec![client("svc", "right")]);
    let r = post(
        &idp,
        "/oauth/v2/token",
        Some(&basic("svc", "wrong")),
        "grant_type=client_credentials",
    );
    assert_eq!(r.status, 401);
}

#[test]
fn introspection_with_basic_auth() {
    let mut opaque = client("svc-opaque", "a");
    opaque.token_type = devidp::TokenType::Opaque;
    opaque.roles.insert("admin".into(), vec!["org-1".into()]);
    let idp = start(vec![opaque, client("api", "api-secret")]);
    let token = token_for(&idp, "svc-opaque", "a");
    assert!(!token.contains('.'), "opaque tokens have no dots");
    let answer = introspect(&idp, &basic("api", "api-secret"), &token).json();
    assert_eq!(answer["active"], true);
    assert_eq!(
        answer[format!("urn:zitadel:iam:org:project:{}:roles", PROJECT)]["admin"],
        json!({"org-1": "org-1.localhost"})
    );
    let r = introspect(&idp, &basic("api", "nope"), &token);
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("unauthorized_client"))
    );
}

/// An IdP with `svc` (secret `a`) and `api-jwt` (private_key_jwt with a fresh key file), and
/// the key that signs `api-jwt`'s assertions.
fn start_with_key_client() -> (RunningIdp, SigningKey) {
    let dir = std::env::temp_dir().join(format!(
        "devidp-keyfile-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("key.json");
    let file = devidp::idp::new_key_file("api-jwt", "81693565968962154");
    std::fs::write(&path, file.to_string()).unwrap();
    let mut api = client("api-jwt", "unused");
    api.client_secret = None;
    api.key_file = Some(path.display().to_string());
    let idp = start(vec![client("svc", "a"), api]);
    let _ = std::fs::remove_dir_all(&dir);
    let key = SigningKey::rsa_from_pem("RS256", "81693565968962154", file["key"].as_str().unwrap())
        .unwrap();
    (idp, key)
}

fn assertion_claims(idp: &RunningIdp, jti: Option<&str>) -> Value {
    let now = devidp::idp::now();
    let mut claims = json!({"iss": "api-jwt", "sub": "api-jwt", "aud": idp.issuer(), "iat": now, "exp": now + 60});
    if let Some(jti) = jti {
        claims["jti"] = json!(jti);
    }
    claims
}

fn introspect_with_assertion(idp: &RunningIdp, assertion: &str, token: &str) -> Response {
    let form = format!(
        "client_assertion_type={}&client_assertion={}&token={}",
        form_encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        assertion,
        form_encode(token)
    );
    post(idp, "/oauth/v2/introspect", None, &form)
}

#[test]
fn introspection_with_private_key_jwt() {
    let (idp, key) = start_with_key_client();
    let token = token_for(&idp, "svc", "a");
    let assertion = key.sign(&assertion_claims(&idp, Some("1")));
    let r = introspect_with_assertion(&idp, &assertion, &token);
    assert_eq!(r.json()["active"], true, "{}", r.body);
    let mut wrong_aud = assertion_claims(&idp, Some("2"));
    wrong_aud["aud"] = json!("https://elsewhere");
    let r = introspect_with_assertion(&idp, &key.sign(&wrong_aud), &token);
    assert_eq!(r.status, 400);
}

#[test]
fn a_replayed_client_assertion_jti_is_refused_and_a_fresh_one_accepted() {
    let (idp, key) = start_with_key_client();
    let token = token_for(&idp, "svc", "a");
    let first = key.sign(&assertion_claims(&idp, Some("jti-1")));
    assert_eq!(
        introspect_with_assertion(&idp, &first, &token).json()["active"],
        true
    );
    // The same assertion again, and another assertion with the same jti: both replays.
    for replay in [
        first.clone(),
        key.sign(&assertion_claims(&idp, Some("jti-1"))),
    ] {
        let r = introspect_with_assertion(&idp, &replay, &token);
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.json()["error"], "unauthorized_client");
        assert!(r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"));
    }
    let fresh = key.sign(&assertion_claims(&idp, Some("jti-2")));
    let r = introspect_with_assertion(&idp, &fresh, &token);
    assert_eq!(r.json()["active"], true, "{}", r.body);
    let without_jti = key.sign(&assertion_claims(&idp, None));
    let r = introspect_with_assertion(&idp, &without_jti, &token);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"], "unauthorized_client");
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("no jti"));
}

#[test]
fn a_lagging_clock_answers_a_just_expired_token_active() {
    let idp = start(vec![client("svc", "a"), client("api", "b")]);
    let api = basic("api", "b");
    let exp = devidp::idp::now() - 5;
    let expired = idp.idp().mint("svc", &json!({ "exp": exp }), None).unwrap();
    assert_eq!(introspect(&idp, &api, &expired).json()["active"], false);
    let r = post(&idp, "/control/clock-lag?seconds=30", None, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(idp.idp().clock_lag(), 30);
    let answer = introspect(&idp, &api, &expired).json();
    assert_eq!(answer["active"], true);
    assert_eq!(answer["exp"], exp);
    let long_expired = idp
        .idp()
        .mint("svc", &json!({"exp": devidp::idp::now() - 200}), None)
        .unwrap();
    assert_eq!(
        introspect(&idp, &api, &long_expired).json()["active"],
        false
    );
    idp.idp().set_clock_lag(0);
    assert_eq!(introspect(&idp, &api, &expired).json()["active"], false);
}

#[test]
fn reject_once_refuses_one_introspection_and_spends_its_assertion() {
    let (idp, key) = start_with_key_client();
    let token = token_for(&idp, "svc", "a");
    let r = post(
        &idp,
        "/control/fault",
        None,
        r#"{"endpoint": "introspect", "mode": "reject_once"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let first = key.sign(&assertion_claims(&idp, Some("a-1")));
    let r = introspect_with_assertion(&idp, &first, &token);
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("unauthorized_client"))
    );
    // The refused assertion is spent; a new one passes, the fault having cleared itself.
    let r = introspect_with_assertion(&idp, &first, &token);
    assert_eq!(r.status, 400, "{}", r.body);
    let second = key.sign(&assertion_claims(&idp, Some("a-2")));
    let r = introspect_with_assertion(&idp, &second, &token);
    assert_eq!(r.json()["active"], true, "{}", r.body);
    assert_eq!(idp.idp().hits(Endpoint::Introspect), 3);
}

#[test]
fn echo_error_puts_the_sent_token_into_the_error_text() {
    let idp = start(vec![client("svc", "a"), client("api", "b")]);
    let token = token_for(&idp, "svc", "a");
    idp.idp()
        .set_fault(Endpoint::Introspect, Some(Fault::EchoError));
    let r = introspect(&idp, &basic("api", "b"), &token);
    assert_eq!(r.status, 400);
    let body = r.json();
    assert_eq!(body["error"], format!("invalid_request token={}", token));
    assert_eq!(body["error_description"], token);
    idp.idp().set_fault(Endpoint::Introspect, None);
    assert_eq!(
        introspect(&idp, &basic("api", "b"), &token).json()["active"],
        true
    );
}

#[test]
fn discovery_members_can_be_overridden_and_put_back() {
    let idp = start(vec![]);
    let discovery = || http::get(idp.port(), "/.well-known/openid-configuration", &[]).json();
    idp.idp()
        .set_discovery_override("jwks_uri", Some("https://evil.example/keys".into()));
    let r = post(
        &idp,
        "/control/discovery",
        None,
        r#"{"field": "introspection_endpoint", "value": "http://127.0.0.2:1/introspect"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let d = discovery();
    assert_eq!(d["jwks_uri"], "https://evil.example/keys");
    assert_eq!(d["introspection_endpoint"], "http://127.0.0.2:1/introspect");
    assert_eq!(d["issuer"], idp.issuer());
    idp.idp().set_discovery_override("jwks_uri", None);
    assert_eq!(
        discovery()["jwks_uri"],
        format!("{}/oauth/v2/keys", idp.issuer())
    );
    post(
        &idp,
        "/control/discovery",
        None,
        r#"{"field": "introspection_endpoint", "value": null}"#,
    );
    assert_eq!(
        discovery()["introspection_endpoint"],
        format!("{}/oauth/v2/introspect", idp.issuer())
    );
    assert_eq!(
        post(&idp, "/control/discovery", None, r#"{"value": "x"}"#).status,
        400
    );
}

#[test]
fn revoked_expired_and_foreign_tokens_are_inactive() {
    let mut foreign = client("foreign", "f");
    foreign.project_id = Some("999".into());
    let idp = start(vec![client("svc", "a"), client("api", "b"), foreign]);
    let api = basic("api", "b");
    let token = token_for(&idp, "svc", "a");
    assert_eq!(introspect(&idp, &api, &token).json()["active"], true);
    post(
        &idp,
        "/oauth/v2/revoke",
        Some(&basic("svc", "a")),
        &format!("token={}", token),
    );
    assert_eq!(introspect(&idp, &api, &token).body, r#"{"active":false}"#);
    let expired = idp
        .idp()
        .mint("svc", &json!({"exp": devidp::idp::now() - 1}), None)
        .unwrap();
    assert_eq!(introspect(&idp, &api, &expired).json()["active"], false);
    let foreign_token = token_for(&idp, "foreign", "f");
    assert_eq!(
        introspect(&idp, &api, &foreign_token).json()["active"],
        false
    );
    assert_eq!(introspect(&idp, &api, "made-up").json()["active"], false);
}

#[test]
fn rotation_keeps_or_drops_the_old_key() {
    let idp = start(vec![]);
    let first = idp.idp().active_kid();
    let second = idp.idp().rotate(true);
    let kids = |idp: &RunningIdp| -> Vec<String> {
        idp.idp().jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kids(&idp), vec![first.clone(), second.clone()]);
    let third = idp.idp().rotate(false);
    assert_eq!(kids(&idp), vec![third]);
    let es = idp.idp().add_es256(true);
    assert_eq!(idp.idp().active_kid(), es);
}

#[test]
fn control_api_sets_faults_and_counts_hits() {
    let idp = start(vec![]);
    let control = |method: &str, path: &str, body: &str| {
        let req = format!(
            "{} {} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
            method,
            path,
            body.len(),
            body
        );
        http::send_raw(idp.port(), req.as_bytes())
    };
    control(
        "POST",
        "/control/fault",
        r#"{"endpoint": "keys", "mode": "500"}"#,
    );
    assert_eq!(http::get(idp.port(), "/oauth/v2/keys", &[]).status, 500);
    control(
        "POST",
        "/control/fault",
        r#"{"endpoint": "keys", "mode": "garbage"}"#,
    );
    assert!(http::get(idp.port(), "/oauth/v2/keys", &[])
        .body
        .starts_with("<html>"));
    control(
        "POST",
        "/control/fault",
        r#"{"endpoint": "keys", "mode": "oversized"}"#,
    );
    assert!(http::get(idp.port(), "/oauth/v2/keys", &[]).body.len() > 256 * 1024);
    control(
        "POST",
        "/control/fault",
        r#"{"endpoint": "keys", "mode": "down"}"#,
    );
    assert!(http::try_send_raw(
        idp.port(),
        &http::request_bytes("GET", "/oauth/v2/keys", &[])
    )
    .is_err());
    control(
        "POST",
        "/control/fault",
        r#"{"endpoint": "keys", "mode": "slow", "delay_ms": 300}"#,
    );
    let t = std::time::Instant::now();
    assert_eq!(http::get(idp.port(), "/oauth/v2/keys", &[]).status, 200);
    assert!(t.elapsed().as_millis() >= 300);
    control(
        "POST",
        "/control/fault",
        r#"{"endpoint": "keys", "mode": "none"}"#,
    );
    let hits = control("GET", "/control/hits", "").json();
    assert_eq!(hits["keys"], 5);
    assert_eq!(idp.idp().hits(Endpoint::Keys), 5);
    let rotated = control("POST", "/control/rotate?keep_old=false", "").json();
    assert_eq!(rotated["kid"], idp.idp().active_kid());
    idp.idp()
        .set_fault(Endpoint::Discovery, Some(Fault::ServerError));
    assert_eq!(
        http::get(idp.port(), "/.well-known/openid-configuration", &[]).status,
        500
    );
}

#[test]
fn the_idp_can_go_down_and_come_back_on_the_same_port() {
    let idp = start(vec![]);
    let port = idp.port();
    idp.down();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    idp.up().unwrap();
    assert_eq!(http::get(port, "/oauth/v2/keys", &[]).status, 200);
}
