//! RFC 7662 token introspection: the request (with `client_secret_basic` or `private_key_jwt`
//! client authentication, RFC 6749 2.3.1 and RFC 7523) and what the answer means. The host
//! dispatches the callout; the gate caches the answers.

use crate::keys::remote::{Answer, Url};
use jwt_simple::prelude::{JWTClaims, NoCustomClaims, RS256KeyPair, RSAKeyPairLike, UnixTimeStamp};
use serde_json::{Map, Value};
use std::fmt;
use std::rc::Rc;

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the filter authenticates to the introspection endpoint.
#[derive(Clone)]
pub enum ClientAuth {
    /// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`.
    Basic { client_id: String, secret: Secret },
    /// A JWT assertion signed with the key of a ZITADEL application key file.
    PrivateKeyJwt {
        client_id: String,
        key_id: String,
        key: Rc<RS256KeyPair>,
        /// The issuer: ZITADEL requires it as the assertion's `aud`.
        audience: String,
    },
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::Basic { client_id, .. } => write!(f, "Basic({}, ***)", client_id),
            ClientAuth::PrivateKeyJwt {
                client_id, key_id, ..
            } => {
                write!(f, "PrivateKeyJwt({}, kid {}, ***)", client_id, key_id)
            }
        }
    }
}

impl ClientAuth {
    pub fn client_id(&self) -> &str {
        match self {
            ClientAuth::Basic { client_id, .. } | ClientAuth::PrivateKeyJwt { client_id, .. } => {
                client_id
            }
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            ClientAuth::Basic { .. } => "client_secret_basic",
            ClientAuth::PrivateKeyJwt { .. } => "private_key_jwt",
        }
    }
}

/// A ZITADEL application key file:
/// `{"type":"application","keyId":"…","key":"-----BEGIN RSA PRIVATE KEY-----…","appId":"…","clientId":"…"}`.
pub fn parse_key_file(text: &str) -> Result<(String, String, RS256KeyPair), String> {
    let file: Value = serde_json::from_str(text).map_err(|_| "is not JSON".to_string())?;
    let field = |name: &str| {
        file.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("has no \"{}\"", name))
    };
    let client_id = field("clientId")?.to_owned();
    let key_id = field("keyId")?.to_owned();
    let key = RS256KeyPair::from_pem(field("key")?)
        .map_err(|_| "\"key\" is not an RSA private key in PEM (PKCS#1 or PKCS#8)".to_string())?;
    Ok((client_id, key_id, key))
}

/// Validated introspection settings of one provider.
#[derive(Debug, Clone)]
pub struct IntrospectionSettings {
    /// `None`: the endpoint comes from discovery.
    pub endpoint: Option<Url>,
    pub cluster: String,
    pub authority: Option<String>,
    pub timeout_ms: u64,
    pub auth: ClientAuth,
    /// Longest an active answer is reused (the token's `exp` may end it sooner).
    pub cache_ttl_s: u64,
    /// How long an inactive answer is reused.
    pub negative_ttl_s: u64,
    pub cache_max_entries: usize,
    pub cache_max_bytes: usize,
    /// Also introspect valid JWTs (catches revocation before `exp`).
    pub introspect_jwts: bool,
    pub max_bytes: usize,
}

/// Lifetime of a client assertion. Each callout gets a fresh one (OpenID Connect Core 9: an
/// assertion is used once; RFC 7523 3 lets the server refuse a replayed `jti`), so it only
/// needs to outlive the callout and the clock difference with the provider.
const ASSERTION_LIFETIME_S: u64 = 60;

/// Builds introspection requests for one provider.
#[derive(Debug)]
pub struct IntrospectionClient {
    settings: IntrospectionSettings,
}

/// An introspection callout for the host to dispatch.
#[derive(Debug, Clone)]
pub struct IntrospectionCall {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

impl IntrospectionClient {
    pub fn new(settings: IntrospectionSettings) -> Self {
        IntrospectionClient { settings }
    }

    pub fn settings(&self) -> &IntrospectionSettings {
        &self.settings
    }

    /// The request that introspects `token` at `endpoint`. `jti` is a fresh random value:
    /// with private_key_jwt, every request carries a newly signed assertion.
    pub fn request(
        &self,
        token: &str,
        endpoint: &Url,
        now_s: u64,
        jti: u64,
    ) -> Result<IntrospectionCall, String> {
        let authority = self
            .settings
            .authority
            .clone()
            .unwrap_or_else(|| endpoint.authority.clone());
        let mut headers = vec![
            (":method".to_owned(), "POST".to_owned()),
            (":path".to_owned(), endpoint.path.clone()),
            (":authority".to_owned(), authority),
            (
                "content-type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("accept".to_owned(), "application/json".to_owned()),
            ("user-agent".to_owned(), "tokengate".to_owned()),
        ];
        let mut body = format!("token={}&token_type_hint=access_token", form_encode(token));
        match &self.settings.auth {
            ClientAuth::Basic { client_id, secret } => {
                let pair = format!(
                    "{}:{}",
                    form_encode(client_id),
                    form_encode(secret.expose())
                );
                headers.push((
                    "authorization".to_owned(),
                    format!("Basic {}", base64_std(pair.as_bytes())),
                ));
            }
            ClientAuth::PrivateKeyJwt { .. } => {
                let assertion = self.sign_assertion(now_s, jti)?;
                body.push_str("&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer");
                body.push_str("&client_assertion=");
                body.push_str(&assertion);
            }
        }
        Ok(IntrospectionCall {
            cluster: self.settings.cluster.clone(),
            headers,
            body: body.into_bytes(),
            timeout_ms: self.settings.timeout_ms,
        })
    }

    /// A client assertion for one callout (RFC 7523 3): `iss` and `sub` the client, `aud` the
    /// issuer (as ZITADEL requires), a fresh `jti`, valid for [`ASSERTION_LIFETIME_S`].
    fn sign_assertion(&self, now_s: u64, jti: u64) -> Result<String, String> {
        let ClientAuth::PrivateKeyJwt {
            client_id,
            key,
            audience,
            ..
        } = &self.settings.auth
        else {
            return Err("not a private_key_jwt client".into());
        };
        let mut claims: JWTClaims<NoCustomClaims> = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(now_s)),
            expires_at: Some(UnixTimeStamp::from_secs(now_s + ASSERTION_LIFETIME_S)),
            invalid_before: None,
            issuer: Some(client_id.clone()),
            subject: Some(client_id.clone()),
            audiences: None,
            jwt_id: Some(format!("{:016x}", jti)),
            nonce: None,
            custom: NoCustomClaims {},
        };
        claims = claims.with_audience(audience.clone());
        key.sign(claims)
            .map_err(|e| format!("cannot sign the client assertion: {}", e))
    }
}

/// What went wrong with an introspection call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionError {
    Unreachable,
    /// 400/401: the endpoint refused our client credentials (ZITADEL answers
    /// `400 unauthorized_client`): a configuration problem, not the token's. `error` is the
    /// answer's OAuth error code when it is a known one (never the answer's own text).
    ClientRejected {
        status: u16,
        error: Option<&'static str>,
    },
    Status(u16),
    TooLarge {
        max: usize,
    },
    Malformed(String),
    /// The filter could not build the request (e.g. signing failed, no endpoint yet).
    NotSent(String),
}

impl IntrospectionError {
    /// What the error owns on the heap ([`crate::support::heap`]), for the cache's byte bound.
    pub fn heap_size(&self) -> usize {
        match self {
            IntrospectionError::Malformed(text) | IntrospectionError::NotSent(text) => {
                crate::support::heap::string(text)
            }
            IntrospectionError::Unreachable
            | IntrospectionError::ClientRejected { .. }
            | IntrospectionError::Status(_)
            | IntrospectionError::TooLarge { .. } => 0,
        }
    }

    pub const CAUSES: [&'static str; 6] = [
        "unreachable",
        "client_rejected",
        "status",
        "oversized",
        "malformed",
        "not_sent",
    ];

    pub fn cause(&self) -> &'static str {
        match self {
            IntrospectionError::Unreachable => "unreachable",
            IntrospectionError::ClientRejected { .. } => "client_rejected",
            IntrospectionError::Status(_) => "status",
            IntrospectionError::TooLarge { .. } => "oversized",
            IntrospectionError::Malformed(_) => "malformed",
            IntrospectionError::NotSent(_) => "not_sent",
        }
    }
}

impl fmt::Display for IntrospectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntrospectionError::Unreachable => write!(f, "no answer (connection failed or timed out)"),
            IntrospectionError::ClientRejected { status, error } => write!(
                f,
                "the endpoint refused the introspection client's credentials (HTTP {}{}): the introspection client is misconfigured",
                status,
                error.map(|e| format!(", error {}", e)).unwrap_or_default()
            ),
            IntrospectionError::Status(s) => write!(f, "HTTP status {}", s),
            IntrospectionError::TooLarge { max } => write!(f, "the answer is larger than {} bytes", max),
            IntrospectionError::Malformed(why) => write!(f, "the answer {}", why),
            IntrospectionError::NotSent(why) => write!(f, "the request could not be sent: {}", why),
        }
    }
}

/// What an introspection answer says about the token.
#[derive(Debug, Clone, PartialEq)]
pub enum Introspected {
    /// `active: true`, with the answer's members (the token's claims).
    Active(Map<String, Value>),
    Inactive,
}

/// Reads an RFC 7662 answer.
pub fn read_answer(
    answer: &Answer<'_>,
    max_bytes: usize,
) -> Result<Introspected, IntrospectionError> {
    let status = answer.status.ok_or(IntrospectionError::Unreachable)?;
    if answer.body_size > max_bytes || answer.body.len() > max_bytes {
        return Err(IntrospectionError::TooLarge { max: max_bytes });
    }
    let json = || serde_json::from_slice::<Value>(answer.body).ok();
    match status {
        200 => {}
        400 | 401 => {
            let error = json().and_then(|v| v.get("error").and_then(Value::as_str).map(error_code));
            return Err(IntrospectionError::ClientRejected { status, error });
        }
        503 | 504
            if [
                &b"upstream connect error"[..],
                b"no healthy upstream",
                b"upstream request timeout",
            ]
            .iter()
            .any(|t| answer.body.starts_with(t)) =>
        {
            return Err(IntrospectionError::Unreachable)
        }
        other => return Err(IntrospectionError::Status(other)),
    }
    let Some(Value::Object(mut members)) = json() else {
        return Err(IntrospectionError::Malformed("is not a JSON object".into()));
    };
    match members.remove("active") {
        Some(Value::Bool(true)) => Ok(Introspected::Active(members)),
        Some(Value::Bool(false)) => Ok(Introspected::Inactive),
        _ => Err(IntrospectionError::Malformed(
            "has no boolean \"active\"".into(),
        )),
    }
}

/// The OAuth error codes an endpoint may answer with (RFC 6749 5.2 and 4.1.2.1, RFC 6750 3.1,
/// RFC 7662 2.3 through them).
const ERROR_CODES: [&str; 12] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_token",
    "insufficient_scope",
    "access_denied",
    "server_error",
    "temporarily_unavailable",
    "unsupported_token_type",
];

/// An error code from the network as one of [`ERROR_CODES`], or `other`: an endpoint that
/// echoes what it was sent could otherwise put a token into the log and the reply.
pub fn error_code(text: &str) -> &'static str {
    ERROR_CODES
        .iter()
        .find(|code| **code == text)
        .copied()
        .unwrap_or("other")
}

/// The cache key of a token: hex SHA-256, so the raw token is never kept.
pub fn token_key(token: &str) -> String {
    let digest = hmac_sha256::Hash::hash(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{:02X}", b)),
        }
    }
    out
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::RSAPublicKeyLike;

    fn settings(auth: ClientAuth) -> IntrospectionSettings {
        IntrospectionSettings {
            endpoint: None,
            cluster: "idp".into(),
            authority: None,
            timeout_ms: 1000,
            auth,
            cache_ttl_s: 60,
            negative_ttl_s: 10,
            cache_max_entries: 100,
            cache_max_bytes: 1 << 20,
            introspect_jwts: false,
            max_bytes: 65536,
        }
    }

    fn endpoint() -> Url {
        Url::parse("https://auth.example.com/oauth/v2/introspect").unwrap()
    }

    fn header<'a>(call: &'a IntrospectionCall, name: &str) -> Option<&'a str> {
        call.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn basic_auth_form_encodes_id_and_secret_before_base64() {
        let auth = ClientAuth::Basic {
            client_id: "78366401571920522@acme".into(),
            secret: Secret::new("veryweaksecret!".into()),
        };
        let client = IntrospectionClient::new(settings(auth));
        let call = client.request("tok en", &endpoint(), 1000, 1).unwrap();
        // RFC 6749 2.3.1, the example from ZITADEL's docs.
        assert_eq!(
            header(&call, "authorization"),
            Some(&*format!(
                "Basic {}",
                base64_std(b"78366401571920522%40acme:veryweaksecret%21")
            ))
        );
        assert_eq!(header(&call, ":path"), Some("/oauth/v2/introspect"));
        assert_eq!(header(&call, ":authority"), Some("auth.example.com"));
        assert_eq!(
            String::from_utf8(call.body).unwrap(),
            "token=tok+en&token_type_hint=access_token"
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let auth = ClientAuth::Basic {
            client_id: "c".into(),
            secret: Secret::new("hunter2".into()),
        };
        assert!(!format!("{:?}", settings(auth)).contains("hunter2"));
    }

    #[test]
    fn private_key_jwt_assertion_follows_zitadel_rules_and_is_fresh_for_every_call() {
        let key = RS256KeyPair::generate(2048).unwrap();
        let public = key.public_key();
        let auth = ClientAuth::PrivateKeyJwt {
            client_id: "api@acme".into(),
            key_id: "81693565968962154".into(),
            key: Rc::new(key.with_key_id("81693565968962154")),
            audience: "https://auth.example.com".into(),
        };
        let client = IntrospectionClient::new(settings(auth));
        let body = |call: IntrospectionCall| String::from_utf8(call.body).unwrap();
        let first = body(client.request("t", &endpoint(), 1_700_000_000, 7).unwrap());
        assert!(first.contains("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"));
        let assertion = first.split("client_assertion=").nth(1).unwrap().to_owned();
        let options_at = |t: u64| jwt_simple::prelude::VerificationOptions {
            artificial_time: Some(UnixTimeStamp::from_secs(t)),
            ..Default::default()
        };
        let claims = public
            .verify_token::<NoCustomClaims>(&assertion, Some(options_at(1_700_000_010)))
            .unwrap();
        assert_eq!(claims.issuer.as_deref(), Some("api@acme"));
        assert_eq!(claims.subject.as_deref(), Some("api@acme"));
        assert_eq!(
            claims.audiences.unwrap().into_string().unwrap(),
            "https://auth.example.com"
        );
        assert_eq!(
            claims.expires_at.unwrap().as_secs() - claims.issued_at.unwrap().as_secs(),
            ASSERTION_LIFETIME_S
        );
        let header: Value = serde_json::from_slice(
            &crate::support::b64::decode(assertion.split('.').next().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], "81693565968962154");
        assert_eq!(header["alg"], "RS256");
        assert_eq!(claims.jwt_id.as_deref(), Some("0000000000000007"));
        // The next call, even in the same second, carries a new assertion with a new jti.
        let again = body(client.request("t", &endpoint(), 1_700_000_000, 8).unwrap());
        let second = again.split("client_assertion=").nth(1).unwrap();
        assert_ne!(second, assertion);
        let claims = public
            .verify_token::<NoCustomClaims>(second, Some(options_at(1_700_000_010)))
            .unwrap();
        assert_eq!(claims.jwt_id.as_deref(), Some("0000000000000008"));
    }

    fn answer(status: Option<u16>, body: &[u8]) -> Answer<'_> {
        Answer {
            status,
            cache_control: None,
            body,
            body_size: body.len(),
        }
    }

    #[test]
    fn answers() {
        let active = read_answer(
            &answer(Some(200), br#"{"active":true,"sub":"1","scope":"a b"}"#),
            1000,
        )
        .unwrap();
        let Introspected::Active(members) = active else {
            panic!()
        };
        assert_eq!(members["scope"], "a b");
        assert!(!members.contains_key("active"));
        assert_eq!(
            read_answer(&answer(Some(200), br#"{"active":false}"#), 1000).unwrap(),
            Introspected::Inactive
        );
        assert_eq!(
            read_answer(&answer(Some(200), br#"{"active":"yes"}"#), 1000)
                .unwrap_err()
                .cause(),
            "malformed"
        );
        assert_eq!(
            read_answer(&answer(Some(200), b"<html>"), 1000)
                .unwrap_err()
                .cause(),
            "malformed"
        );
        assert_eq!(
            read_answer(&answer(Some(500), b""), 1000).unwrap_err(),
            IntrospectionError::Status(500)
        );
        assert_eq!(
            read_answer(&answer(None, b""), 1000).unwrap_err(),
            IntrospectionError::Unreachable
        );
        assert_eq!(
            read_answer(&answer(Some(200), br#"{"active":false}"#), 5)
                .unwrap_err()
                .cause(),
            "oversized"
        );
        let rejected = read_answer(
            &answer(Some(400), br#"{"error":"unauthorized_client"}"#),
            1000,
        )
        .unwrap_err();
        assert_eq!(
            rejected,
            IntrospectionError::ClientRejected {
                status: 400,
                error: Some("unauthorized_client")
            }
        );
        assert!(rejected.to_string().contains("misconfigured"));
        assert_eq!(
            read_answer(&answer(Some(401), b""), 1000)
                .unwrap_err()
                .cause(),
            "client_rejected"
        );
    }

    #[test]
    fn an_endpoints_error_text_is_kept_only_as_a_known_error_code() {
        let echoed = read_answer(
            &answer(
                Some(400),
                br#"{"error":"bad token eyJhbGciOi.secret","error_description":"secret"}"#,
            ),
            1000,
        )
        .unwrap_err();
        assert_eq!(
            echoed,
            IntrospectionError::ClientRejected {
                status: 400,
                error: Some("other")
            }
        );
        assert!(!echoed.to_string().contains("secret"));
        assert_eq!(error_code("invalid_client"), "invalid_client");
        assert_eq!(error_code("INVALID_CLIENT"), "other");
    }

    #[test]
    fn token_keys_are_sha256_hex() {
        assert_eq!(
            token_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn key_files_are_read() {
        let key = RS256KeyPair::generate(2048).unwrap();
        let pem = key.to_pem().unwrap();
        let file = serde_json::json!({"type": "application", "keyId": "k1", "key": pem, "appId": "a", "clientId": "c@acme"});
        let (client, kid, _) = parse_key_file(&file.to_string()).unwrap();
        assert_eq!((client.as_str(), kid.as_str()), ("c@acme", "k1"));
        assert!(parse_key_file("{}").unwrap_err().contains("clientId"));
        assert!(
            parse_key_file(r#"{"clientId":"c","keyId":"k","key":"nope"}"#)
                .unwrap_err()
                .contains("PEM")
        );
    }
}
