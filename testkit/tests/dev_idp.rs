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

#[test]
fn introspection_with_private_key_jwt() {
    let dir = std::env::temp_dir().join(format!("devidp-keyfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("key.json");
    let file = devidp::idp::new_key_file("api-jwt", "81693565968962154");
    std::fs::write(&path, file.to_string()).unwrap();
    let mut api = client("api-jwt", "unused");
    api.client_secret = None;
    api.key_file = Some(path.display().to_string());
    let idp = start(vec![client("svc", "a"), api]);
    let token = token_for(&idp, "svc", "a");
    let key = SigningKey::rsa_from_pem("RS256", "81693565968962154", file["key"].as_str().unwrap())
        .unwrap();
    let now = devidp::idp::now();
    let assertion = key.sign(&json!({"iss": "api-jwt", "sub": "api-jwt", "aud": idp.issuer(), "iat": now, "exp": now + 60, "jti": "1"}));
    let form = format!(
        "client_assertion_type={}&client_assertion={}&token={}",
        form_encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        assertion,
        token
    );
    let r = post(&idp, "/oauth/v2/introspect", None, &form);
    assert_eq!(r.json()["active"], true, "{}", r.body);
    let wrong_aud = key.sign(&json!({"iss": "api-jwt", "sub": "api-jwt", "aud": "https://elsewhere", "iat": now, "exp": now + 60}));
    let form = format!(
        "client_assertion_type={}&client_assertion={}&token={}",
        form_encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        wrong_aud,
        token
    );
    assert_eq!(post(&idp, "/oauth/v2/introspect", None, &form).status, 400);
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
