//! The dev IdP: what a proxy sees of ZITADEL (discovery, JWKS, client_credentials tokens,
//! introspection, revocation), plus a control API for tests: key rotation, fault modes per
//! endpoint, hit counters, a lagging introspection clock and discovery overrides. Like a
//! certified provider it refuses a replayed private_key_jwt client assertion (`jti`).

use crate::httpd::{self, Reply, Request, Response};
use crate::jose::{self, b64, SigningKey};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The configuration file of the dev IdP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    /// Default: `http://<listen address>`.
    pub issuer: Option<String>,
    /// The API project whose id goes into `aud` and names the roles claim.
    pub project_id: String,
    #[serde(default = "default_lifetime")]
    pub token_lifetime_seconds: u64,
    #[serde(default = "default_max_age")]
    pub jwks_max_age_seconds: u64,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
}

fn default_lifetime() -> u64 {
    3600
}

fn default_max_age() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    #[default]
    Jwt,
    Opaque,
}

/// A client: a service user that gets tokens (client_credentials), and/or an API app that
/// introspects (Basic with its secret, or private_key_jwt with its key file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    pub client_secret: Option<String>,
    /// A ZITADEL application key file (`{"type":"application","keyId","key","appId","clientId"}`)
    /// whose public key authenticates this client's assertions.
    pub key_file: Option<String>,
    #[serde(default)]
    pub token_type: TokenType,
    /// `sub` of its tokens. Default: a numeric id derived from the client id.
    pub user_id: Option<String>,
    /// The project its tokens are for. Default: the IdP's project.
    pub project_id: Option<String>,
    /// Role -> organisation ids it is granted in.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// A `permissions` claim, as a ZITADEL Action would add.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// `scope` of its tokens (introspection answers carry it).
    #[serde(default)]
    pub scope: Option<String>,
    /// Claims added to its JWTs as they are.
    #[serde(default)]
    pub extra_claims: Map<String, Value>,
}

/// The endpoints that faults and hit counters apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Discovery,
    Keys,
    Token,
    Introspect,
    Revoke,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] = [
        Endpoint::Discovery,
        Endpoint::Keys,
        Endpoint::Token,
        Endpoint::Introspect,
        Endpoint::Revoke,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Discovery => "discovery",
            Endpoint::Keys => "keys",
            Endpoint::Token => "token",
            Endpoint::Introspect => "introspect",
            Endpoint::Revoke => "revoke",
        }
    }

    pub fn from_name(name: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Discovery => "/.well-known/openid-configuration",
            Endpoint::Keys => "/oauth/v2/keys",
            Endpoint::Token => "/oauth/v2/token",
            Endpoint::Introspect => "/oauth/v2/introspect",
            Endpoint::Revoke => "/oauth/v2/revoke",
        }
    }
}

/// How an endpoint misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection is closed without an answer.
    Down,
    /// HTTP 500.
    ServerError,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with a body of about 300 KiB.
    Oversized,
    /// The right answer, this many milliseconds late.
    Slow(u64),
    /// Once: the client is authenticated as usual (a private_key_jwt assertion's `jti` is
    /// spent), then the request is answered 400 `unauthorized_client`; the fault then clears
    /// itself.
    RejectOnce,
    /// 400 whose `error` and `error_description` echo the `token` form field that was sent,
    /// as an IdP that puts what it got into its error text.
    EchoError,
}

impl Fault {
    pub fn parse(mode: &str, delay_ms: u64) -> Option<Fault> {
        Some(match mode {
            "down" => Fault::Down,
            "500" => Fault::ServerError,
            "garbage" => Fault::Garbage,
            "oversized" => Fault::Oversized,
            "slow" => Fault::Slow(delay_ms),
            "reject_once" => Fault::RejectOnce,
            "echo_error" => Fault::EchoError,
            _ => return None,
        })
    }
}

struct KeyEntry {
    key: SigningKey,
    active: bool,
}

/// A token this IdP issued (JWT or opaque), kept for introspection and revocation.
struct Issued {
    claims: Value,
    /// The `kid` that signed a JWT; `None` for opaque tokens.
    kid: Option<String>,
    revoked: bool,
}

struct State {
    keys: Vec<KeyEntry>,
    /// Public JWKs published after the IdP's own keys, of keys that sign nothing (an IdP
    /// that never prunes rotated keys, an aggregated key set).
    retired: Vec<Value>,
    next_kid: u64,
    faults: HashMap<Endpoint, Fault>,
    hits: HashMap<Endpoint, u64>,
    jwks_max_age: u64,
    issued: HashMap<String, Issued>,
    next_jti: u64,
    /// `(client_id, jti)` of every accepted client assertion -> its `exp`; a second use
    /// before then is a replay.
    spent_assertions: HashMap<(String, String), u64>,
    /// How many seconds the IdP's clock runs behind: introspection judges expiry by
    /// `now() - clock_lag`.
    clock_lag: u64,
    /// Discovery members replaced by tests.
    discovery_overrides: BTreeMap<String, String>,
}

/// The IdP's state and request handling. Cheap to share (`Arc`).
pub struct Idp {
    config: IdpConfig,
    issuer: String,
    client_keys: HashMap<String, rsa::RsaPublicKey>,
    state: Mutex<State>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    b64(&bytes)
}

/// A ZITADEL roles claim value: `{role: {orgId: orgDomain}}`.
pub fn roles_object(roles: &BTreeMap<String, Vec<String>>) -> Value {
    let mut out = Map::new();
    for (role, orgs) in roles {
        let orgs: Map<String, Value> = orgs
            .iter()
            .map(|o| (o.clone(), json!(format!("{}.localhost", o))))
            .collect();
        out.insert(role.clone(), Value::Object(orgs));
    }
    Value::Object(out)
}

/// A ZITADEL application key file for `client_id`, with a fresh RSA-2048 key.
pub fn new_key_file(client_id: &str, key_id: &str) -> Value {
    let key = SigningKey::rsa("RS256", key_id);
    let pem = key
        .rsa_key()
        .map(jose::rsa_private_key_to_pkcs1_pem)
        .unwrap_or_default();
    json!({"type": "application", "keyId": key_id, "key": pem, "appId": format!("app-{}", client_id), "clientId": client_id})
}

impl Idp {
    /// Builds the IdP; `issuer` is used when the config names none. Reads client key files.
    pub fn new(config: IdpConfig, issuer: &str) -> Result<Idp, String> {
        let issuer = config.issuer.clone().unwrap_or_else(|| issuer.to_owned());
        let mut client_keys = HashMap::new();
        for client in &config.clients {
            if let Some(path) = &client.key_file {
                let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {}", path, e))?;
                let file: Value =
                    serde_json::from_str(&text).map_err(|e| format!("{}: {}", path, e))?;
                let pem = file["key"]
                    .as_str()
                    .ok_or(format!("{}: no \"key\"", path))?;
                let key = jose::rsa_private_key_from_pem(pem)?;
                client_keys.insert(client.client_id.clone(), key.to_public_key());
            }
        }
        let state = State {
            keys: Vec::new(),
            retired: Vec::new(),
            next_kid: 280_543_383_892_525_058,
            faults: HashMap::new(),
            hits: HashMap::new(),
            jwks_max_age: config.jwks_max_age_seconds,
            issued: HashMap::new(),
            next_jti: 283_500_000_000_000_000,
            spent_assertions: HashMap::new(),
            clock_lag: 0,
            discovery_overrides: BTreeMap::new(),
        };
        let idp = Idp {
            config,
            issuer,
            client_keys,
            state: Mutex::new(state),
        };
        idp.rotate(false);
        Ok(idp)
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn project_id(&self) -> &str {
        &self.config.project_id
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_kid(state: &mut State) -> String {
        state.next_kid += 1;
        state.next_kid.to_string()
    }

    /// A new RSA signing key becomes the active one; the old keys stay published when
    /// `keep_old`, else they are dropped. Returns the new `kid`.
    pub fn rotate(&self, keep_old: bool) -> String {
        let mut st = self.state();
        let kid = Idp::next_kid(&mut st);
        let key = SigningKey::rsa("RS256", &kid);
        if !keep_old {
            st.keys.clear();
        }
        for k in &mut st.keys {
            k.active = false;
        }
        st.keys.push(KeyEntry { key, active: true });
        kid
    }

    /// Adds an ES256 key; it signs new tokens when `activate`. Returns its `kid`.
    pub fn add_es256(&self, activate: bool) -> String {
        let mut st = self.state();
        let kid = Idp::next_kid(&mut st);
        if activate {
            for k in &mut st.keys {
                k.active = false;
            }
        }
        st.keys.push(KeyEntry {
            key: SigningKey::es256(&kid),
            active: activate,
        });
        kid
    }

    /// The `kid` of the key that signs new tokens.
    pub fn active_kid(&self) -> String {
        let st = self.state();
        st.keys
            .iter()
            .find(|k| k.active)
            .and_then(|k| k.key.kid.clone())
            .unwrap_or_default()
    }

    pub fn set_fault(&self, endpoint: Endpoint, fault: Option<Fault>) {
        let mut st = self.state();
        match fault {
            Some(f) => st.faults.insert(endpoint, f),
            None => st.faults.remove(&endpoint),
        };
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    pub fn hits(&self, endpoint: Endpoint) -> u64 {
        self.state().hits.get(&endpoint).copied().unwrap_or(0)
    }

    pub fn reset_hits(&self) {
        self.state().hits.clear();
    }

    pub fn set_jwks_max_age(&self, seconds: u64) {
        self.state().jwks_max_age = seconds;
    }

    /// The IdP's clock runs `seconds` behind: introspection answers a token active until its
    /// `exp` has passed on that lagging clock (a token that expired a few seconds ago by the
    /// proxy's clock is still active). Minting and client assertions keep the true time.
    pub fn set_clock_lag(&self, seconds: u64) {
        self.state().clock_lag = seconds;
    }

    pub fn clock_lag(&self) -> u64 {
        self.state().clock_lag
    }

    /// Replaces the discovery member `field` (e.g. `jwks_uri`, `introspection_endpoint`) with
    /// `value`, or adds it; `None` puts the normal value back.
    pub fn set_discovery_override(&self, field: &str, value: Option<String>) {
        let mut st = self.state();
        match value {
            Some(v) => st.discovery_overrides.insert(field.to_owned(), v),
            None => st.discovery_overrides.remove(field),
        };
    }

    pub fn clear_discovery_overrides(&self) {
        self.state().discovery_overrides.clear();
    }

    pub fn jwks(&self) -> Value {
        let st = self.state();
        let mut set = jose::jwks(&st.keys.iter().map(|k| &k.key).collect::<Vec<_>>());
        if let Some(keys) = set["keys"].as_array_mut() {
            keys.extend(st.retired.iter().cloned());
        }
        set
    }

    /// Publishes `count` more P-256 keys after the IdP's own, none of which signs anything
    /// (an IdP that never prunes rotated keys). Their JWKs are minimal (`kty`, `crv`, `x`,
    /// `y`, and a short `kid` when `with_kids`); their private halves are dropped at once.
    pub fn publish_retired_es256(&self, count: usize, with_kids: bool) {
        let jwks: Vec<Value> = (0..count)
            .map(|i| {
                let full = SigningKey::es256("retired").jwk();
                let mut jwk = json!({"kty": "EC", "crv": "P-256", "x": full["x"], "y": full["y"]});
                if with_kids {
                    jwk["kid"] = json!(format!("r{}", i));
                }
                jwk
            })
            .collect();
        self.state().retired.extend(jwks);
    }

    /// Publishes `jwk` (a key whose private half the caller keeps) among the retired keys,
    /// as the `index`-th of them (or last): a token it signs names a key deep in a large set.
    pub fn publish_among_retired(&self, index: usize, jwk: Value) {
        let mut st = self.state();
        let at = index.min(st.retired.len());
        st.retired.insert(at, jwk);
    }

    /// Publishes only the IdP's own keys again.
    pub fn prune_retired(&self) {
        self.state().retired.clear();
    }

    fn client(&self, client_id: &str) -> Option<&ClientConfig> {
        self.config
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
    }

    /// The claims of a token for `client`, as ZITADEL puts them in a JWT access token.
    fn claims_for(&self, client: &ClientConfig, jti: &str) -> Value {
        let now = now();
        let project = client
            .project_id
            .clone()
            .unwrap_or_else(|| self.config.project_id.clone());
        let user_id = client.user_id.clone().unwrap_or_else(|| {
            let n = client
                .client_id
                .bytes()
                .fold(283_472_283_374_567_890u64, |a, b| {
                    a.wrapping_mul(31).wrapping_add(u64::from(b))
                });
            (n % 900_000_000_000_000_000 + 100_000_000_000_000_000).to_string()
        });
        let mut c = json!({
            "iss": self.issuer,
            "sub": user_id,
            "aud": [client.client_id, project],
            "exp": now + self.config.token_lifetime_seconds,
            "iat": now,
            "nbf": now,
            "client_id": client.client_id,
            "jti": jti,
        });
        if !client.roles.is_empty() {
            c[format!("urn:zitadel:iam:org:project:{}:roles", project)] =
                roles_object(&client.roles);
        }
        if !client.permissions.is_empty() {
            c["permissions"] = json!(client.permissions);
        }
        for (k, v) in &client.extra_claims {
            c[k] = v.clone();
        }
        c
    }

    /// Issues an access token for a configured client, of its token type unless `opaque`
    /// says otherwise; `overrides` replace claims (null removes one).
    pub fn mint(
        &self,
        client_id: &str,
        overrides: &Value,
        opaque: Option<bool>,
    ) -> Result<String, String> {
        let client = self
            .client(client_id)
            .ok_or(format!("no client {:?}", client_id))?;
        let jti = {
            let mut st = self.state();
            st.next_jti += 2;
            format!("V2_{}-at_{}", st.next_jti - 1, st.next_jti)
        };
        let mut claims = self.claims_for(client, &jti);
        if let (Some(base), Some(extra)) = (claims.as_object_mut(), overrides.as_object()) {
            for (k, v) in extra {
                if v.is_null() {
                    base.remove(k);
                } else {
                    base.insert(k.clone(), v.clone());
                }
            }
        }
        let opaque = opaque.unwrap_or(client.token_type == TokenType::Opaque);
        let mut st = self.state();
        if st.issued.len() > 50_000 {
            let now = now();
            st.issued
                .retain(|_, t| t.claims["exp"].as_u64().unwrap_or(0) > now);
        }
        let (token, kid) = if opaque {
            (random_token(), None)
        } else {
            let key = st
                .keys
                .iter()
                .find(|k| k.active)
                .ok_or("no active signing key")?;
            (key.key.sign(&claims), key.key.kid.clone())
        };
        st.issued.insert(
            token.clone(),
            Issued {
                claims,
                kid,
                revoked: false,
            },
        );
        Ok(token)
    }

    /// The claims of a token this IdP issued and still considers active: not revoked, not
    /// expired, and (for a JWT) its signing key still published.
    fn active_claims(&self, token: &str) -> Option<Value> {
        let st = self.state();
        let issued = st.issued.get(token)?;
        let idp_now = now().saturating_sub(st.clock_lag);
        if issued.revoked || issued.claims["exp"].as_u64().unwrap_or(0) <= idp_now {
            return None;
        }
        if let Some(kid) = &issued.kid {
            if !st.keys.iter().any(|k| k.key.kid.as_ref() == Some(kid)) {
                return None;
            }
        }
        Some(issued.claims.clone())
    }

    /// Serves one request: faults and counters first, then the endpoint.
    pub fn handle(&self, req: &Request) -> Reply {
        if let Some(rest) = req.path.strip_prefix("/control/") {
            return Reply::Respond(self.control(rest, req));
        }
        let Some(endpoint) = Endpoint::ALL.into_iter().find(|e| e.path() == req.path) else {
            return Reply::Respond(Response::json(404, &json!({"error": "not_found"})));
        };
        let fault = {
            let mut st = self.state();
            *st.hits.entry(endpoint).or_insert(0) += 1;
            st.faults.get(&endpoint).copied()
        };
        let mut response = match fault {
            Some(Fault::Down) => return Reply::Reset,
            Some(Fault::ServerError) => {
                return Reply::Respond(Response::json(500, &json!({"error": "server_error"})))
            }
            Some(Fault::Garbage) => {
                return Reply::Respond(Response::new(
                    200,
                    "application/json",
                    "<html>this is not JSON",
                ))
            }
            Some(Fault::Oversized) => {
                let padding = "x".repeat(300 * 1024);
                let mut body = self.jwks();
                body["padding"] = json!(padding);
                return Reply::Respond(Response::json(200, &body));
            }
            Some(Fault::RejectOnce) => {
                self.set_fault(endpoint, None);
                // Spends the assertion's jti like a real refusal after authentication would.
                let _ = self.authenticate_client(req);
                return Reply::Respond(Response::json(
                    400,
                    &json!({"error": "unauthorized_client", "error_description": "client assertion refused (fault reject_once)"}),
                ));
            }
            Some(Fault::EchoError) => {
                let token = req.form().get("token").cloned().unwrap_or_default();
                return Reply::Respond(Response::json(
                    400,
                    &json!({"error": format!("invalid_request token={}", token), "error_description": token}),
                ));
            }
            _ => self.endpoint(endpoint, req),
        };
        if let Some(Fault::Slow(ms)) = fault {
            response.delay = Duration::from_millis(ms);
        }
        Reply::Respond(response)
    }

    fn endpoint(&self, endpoint: Endpoint, req: &Request) -> Response {
        match endpoint {
            Endpoint::Discovery => Response::json(200, &self.discovery()),
            Endpoint::Keys => {
                let max_age = self.state().jwks_max_age;
                Response::json(200, &self.jwks()).with_header(
                    "cache-control",
                    &format!("max-age={}, must-revalidate", max_age),
                )
            }
            Endpoint::Token => self.token(req),
            Endpoint::Introspect => self.introspect(req),
            Endpoint::Revoke => self.revoke(req),
        }
    }

    pub fn discovery(&self) -> Value {
        let url = |e: Endpoint| format!("{}{}", self.issuer, e.path());
        let mut document = json!({
            "issuer": self.issuer,
            "authorization_endpoint": format!("{}/oauth/v2/authorize", self.issuer),
            "token_endpoint": url(Endpoint::Token),
            "introspection_endpoint": url(Endpoint::Introspect),
            "userinfo_endpoint": format!("{}/oidc/v1/userinfo", self.issuer),
            "revocation_endpoint": url(Endpoint::Revoke),
            "end_session_endpoint": format!("{}/oidc/v1/end_session", self.issuer),
            "jwks_uri": url(Endpoint::Keys),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "grant_types_supported": ["client_credentials"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            "introspection_endpoint_auth_signing_alg_values_supported": ["RS256"],
        });
        for (field, value) in &self.state().discovery_overrides {
            document[field.as_str()] = json!(value);
        }
        document
    }

    /// Client authentication as ZITADEL does it: Basic (form-urlencoded id and secret) or a
    /// private_key_jwt assertion; both at once is an error.
    fn authenticate_client(&self, req: &Request) -> Result<&ClientConfig, Response> {
        let form = req.form();
        let basic = req.header("authorization").and_then(|h| {
            h.strip_prefix("Basic ")
                .or_else(|| h.strip_prefix("basic "))
        });
        let assertion = form.get("client_assertion");
        let bad = |error: &str, description: &str| {
            Response::json(
                400,
                &json!({"error": error, "error_description": description}),
            )
        };
        match (basic, assertion) {
            (Some(_), Some(_)) => Err(bad(
                "invalid_request",
                "client authentication must not use more than one method",
            )),
            (None, None) => Err(bad("invalid_client", "client must be authenticated")),
            (Some(encoded), None) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| bad("unauthorized_client", ""))?;
                let text =
                    String::from_utf8(decoded).map_err(|_| bad("unauthorized_client", ""))?;
                let (id, secret) = text.split_once(':').ok_or(bad("unauthorized_client", ""))?;
                let (id, secret) = (httpd::percent_decode(id), httpd::percent_decode(secret));
                match self.client(&id) {
                    Some(c) if c.client_secret.as_deref() == Some(secret.as_str()) => Ok(c),
                    _ => Err(bad("unauthorized_client", "")),
                }
            }
            (None, Some(jwt)) => {
                if form.get("client_assertion_type").map(String::as_str)
                    != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                {
                    return Err(bad("invalid_request", "client_assertion_type"));
                }
                let payload =
                    jose::unverified_payload(jwt).ok_or(bad("unauthorized_client", ""))?;
                let id = payload["iss"].as_str().unwrap_or_default();
                let client = self.client(id).ok_or(bad("unauthorized_client", ""))?;
                let key = self
                    .client_keys
                    .get(id)
                    .ok_or(bad("unauthorized_client", ""))?;
                let (_, claims) =
                    jose::verify_rs256(jwt, key).ok_or(bad("unauthorized_client", ""))?;
                let now = now();
                let aud_ok = match &claims["aud"] {
                    Value::String(a) => a == &self.issuer,
                    Value::Array(a) => a.iter().any(|x| x == &json!(self.issuer)),
                    _ => false,
                };
                let iat = claims["iat"].as_u64().unwrap_or(0);
                let valid = claims["sub"] == json!(id)
                    && aud_ok
                    && claims["exp"].as_u64().unwrap_or(0) > now + 1
                    && iat <= now + 1
                    && iat + 3600 >= now;
                if !valid {
                    return Err(bad("unauthorized_client", ""));
                }
                // RFC 7523 3 (7): a jti is used once; OIDC Core 9: an assertion is single-use.
                let Some(jti) = claims["jti"].as_str().filter(|j| !j.is_empty()) else {
                    return Err(bad(
                        "unauthorized_client",
                        "the client assertion has no jti",
                    ));
                };
                let exp = claims["exp"].as_u64().unwrap_or(0);
                let mut st = self.state();
                st.spent_assertions.retain(|_, until| *until >= now);
                let key = (id.to_owned(), jti.to_owned());
                if st.spent_assertions.contains_key(&key) {
                    return Err(bad(
                        "unauthorized_client",
                        "the client assertion was already used (jti replayed)",
                    ));
                }
                st.spent_assertions.insert(key, exp);
                Ok(client)
            }
        }
    }

    fn token(&self, req: &Request) -> Response {
        if req.method != "POST" {
            return Response::json(405, &json!({"error": "invalid_request"}));
        }
        let form = req.form();
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return Response::json(400, &json!({"error": "unsupported_grant_type"}));
        }
        let client = match self.authenticate_client(req) {
            Ok(c) => c,
            Err(_) => return Response::json(401, &json!({"error": "invalid_client"})),
        };
        match self.mint(&client.client_id, &json!({}), None) {
            Ok(token) => Response::json(
                200,
                &json!({"access_token": token, "token_type": "Bearer", "expires_in": self.config.token_lifetime_seconds}),
            ),
            Err(e) => Response::json(
                500,
                &json!({"error": "server_error", "error_description": e}),
            ),
        }
    }

    fn introspect(&self, req: &Request) -> Response {
        let client = match self.authenticate_client(req) {
            Ok(c) => c,
            Err(response) => return response,
        };
        let Some(token) = req.form().get("token").cloned() else {
            return Response::json(
                400,
                &json!({"error": "invalid_request", "error_description": "token missing"}),
            );
        };
        let inactive = Response::json(200, &json!({"active": false}));
        let Some(claims) = self.active_claims(&token) else {
            return inactive;
        };
        let project = client
            .project_id
            .clone()
            .unwrap_or_else(|| self.config.project_id.clone());
        let aud: Vec<String> = match &claims["aud"] {
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        };
        if !aud.iter().any(|a| *a == client.client_id || *a == project) {
            return inactive;
        }
        let owner = claims["client_id"].as_str().and_then(|id| self.client(id));
        let mut answer = json!({
            "active": true,
            "scope": owner.and_then(|o| o.scope.clone()).unwrap_or_else(|| "openid".into()),
            "client_id": claims["client_id"],
            "token_type": "Bearer",
            "exp": claims["exp"], "iat": claims["iat"], "nbf": claims["nbf"],
            "sub": claims["sub"], "aud": claims["aud"], "iss": claims["iss"], "jti": claims["jti"],
        });
        // Roles are recomputed for the introspecting client's project (flat and specific).
        if let Some(owner) = owner {
            if !owner.roles.is_empty()
                && owner
                    .project_id
                    .clone()
                    .unwrap_or_else(|| self.config.project_id.clone())
                    == project
            {
                let roles = roles_object(&owner.roles);
                answer["urn:zitadel:iam:org:project:roles"] = roles.clone();
                answer[format!("urn:zitadel:iam:org:project:{}:roles", project)] = roles;
            }
            if !owner.permissions.is_empty() {
                answer["permissions"] = json!(owner.permissions);
            }
        }
        Response::json(200, &answer)
    }

    fn revoke(&self, req: &Request) -> Response {
        if let Err(response) = self.authenticate_client(req) {
            return response;
        }
        if let Some(token) = req.form().get("token") {
            self.revoke_token(token);
        }
        Response::new(200, "application/json", "")
    }

    pub fn revoke_token(&self, token: &str) {
        if let Some(issued) = self.state().issued.get_mut(token) {
            issued.revoked = true;
        }
    }

    /// `/control/...`: what tests and `make demo` use to steer the IdP.
    ///
    /// - `POST rotate?keep_old=BOOL`, `POST keys/es256?activate=BOOL` -> `{"kid"}`
    /// - `POST keys/retired?count=N&kids=BOOL`: N more P-256 keys, signing nothing, after the
    ///   IdP's own;
    ///   `POST keys/prune`: only the IdP's own keys again
    /// - `POST fault {"endpoint", "mode": down|500|garbage|oversized|slow|reject_once|echo_error|none, "delay_ms"}`
    /// - `GET hits`, `POST hits/reset`
    /// - `POST jwks-max-age?seconds=N`
    /// - `POST clock-lag?seconds=N`: the IdP's clock runs N s behind for introspection
    /// - `POST discovery {"field", "value": STRING or null}`, `POST discovery/reset`
    /// - `POST mint {"client_id", "claims", "opaque"}` -> `{"access_token"}`, `POST revoke {"token"}`
    fn control(&self, what: &str, req: &Request) -> Response {
        let q = req.query_params();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let flag = |name: &str| q.get(name).is_some_and(|v| v == "true" || v == "1");
        match (req.method.as_str(), what) {
            ("POST", "rotate") => {
                Response::json(200, &json!({"kid": self.rotate(flag("keep_old"))}))
            }
            ("POST", "keys/es256") => {
                Response::json(200, &json!({"kid": self.add_es256(flag("activate"))}))
            }
            ("POST", "keys/retired") => match q.get("count").and_then(|s| s.parse().ok()) {
                Some(n) if n <= 100_000 => {
                    self.publish_retired_es256(n, flag("kids"));
                    Response::json(200, &json!({}))
                }
                _ => Response::json(400, &json!({"error": "count=N (at most 100000) needed"})),
            },
            ("POST", "keys/prune") => {
                self.prune_retired();
                Response::json(200, &json!({}))
            }
            ("POST", "fault") => {
                let endpoint = body["endpoint"].as_str().and_then(Endpoint::from_name);
                let mode = body["mode"].as_str().unwrap_or("none");
                match endpoint {
                    None => Response::json(
                        400,
                        &json!({"error": "endpoint must be one of discovery, keys, token, introspect, revoke"}),
                    ),
                    Some(e) if mode == "none" => {
                        self.set_fault(e, None);
                        Response::json(200, &json!({}))
                    }
                    Some(e) => {
                        match Fault::parse(mode, body["delay_ms"].as_u64().unwrap_or(1000)) {
                            Some(f) => {
                                self.set_fault(e, Some(f));
                                Response::json(200, &json!({}))
                            }
                            None => Response::json(
                                400,
                                &json!({"error": "mode must be down, 500, garbage, oversized, slow, reject_once, echo_error or none"}),
                            ),
                        }
                    }
                }
            }
            ("GET", "hits") => {
                let hits: Map<String, Value> = Endpoint::ALL
                    .iter()
                    .map(|e| (e.name().to_owned(), json!(self.hits(*e))))
                    .collect();
                Response::json(200, &Value::Object(hits))
            }
            ("POST", "hits/reset") => {
                self.reset_hits();
                Response::json(200, &json!({}))
            }
            ("POST", "clock-lag") => match q.get("seconds").and_then(|s| s.parse().ok()) {
                Some(s) => {
                    self.set_clock_lag(s);
                    Response::json(200, &json!({}))
                }
                None => Response::json(400, &json!({"error": "seconds=N needed"})),
            },
            ("POST", "discovery") => match body["field"].as_str() {
                Some(field) if body["value"].is_string() || body["value"].is_null() => {
                    self.set_discovery_override(field, body["value"].as_str().map(str::to_owned));
                    Response::json(200, &json!({}))
                }
                _ => Response::json(
                    400,
                    &json!({"error": "{\"field\": NAME, \"value\": STRING or null} needed"}),
                ),
            },
            ("POST", "discovery/reset") => {
                self.clear_discovery_overrides();
                Response::json(200, &json!({}))
            }
            ("POST", "jwks-max-age") => match q.get("seconds").and_then(|s| s.parse().ok()) {
                Some(s) => {
                    self.set_jwks_max_age(s);
                    Response::json(200, &json!({}))
                }
                None => Response::json(400, &json!({"error": "seconds=N needed"})),
            },
            ("POST", "mint") => {
                let client = body["client_id"].as_str().unwrap_or_default();
                match self.mint(client, &body["claims"], body["opaque"].as_bool()) {
                    Ok(token) => Response::json(200, &json!({"access_token": token})),
                    Err(e) => Response::json(400, &json!({"error": e})),
                }
            }
            ("POST", "revoke") => {
                self.revoke_token(body["token"].as_str().unwrap_or_default());
                Response::json(200, &json!({}))
            }
            _ => Response::json(404, &json!({"error": "unknown control call"})),
        }
    }
}

/// A dev IdP serving on a loopback port, which can be stopped and started again on the same
/// port (how tests take it down).
pub struct RunningIdp {
    idp: Arc<Idp>,
    port: u16,
    server: Mutex<Option<httpd::Server>>,
}

impl RunningIdp {
    /// Starts on `addr` (e.g. `127.0.0.1:0`). The issuer defaults to `http://127.0.0.1:<port>`.
    pub fn start(config: IdpConfig, addr: &str) -> Result<RunningIdp, String> {
        // Bind first to learn the port, which the default issuer contains.
        let probe = std::net::TcpListener::bind(addr).map_err(|e| format!("{}: {}", addr, e))?;
        let local = probe.local_addr().map_err(|e| e.to_string())?;
        drop(probe);
        let idp = Arc::new(Idp::new(config, &format!("http://{}", local))?);
        let running = RunningIdp {
            idp,
            port: local.port(),
            server: Mutex::new(None),
        };
        running.up()?;
        Ok(running)
    }

    /// Starts an IdP that is down: nothing listens until `up()`.
    pub fn start_down(config: IdpConfig, port: u16) -> Result<RunningIdp, String> {
        let idp = Arc::new(Idp::new(config, &format!("http://127.0.0.1:{}", port))?);
        Ok(RunningIdp {
            idp,
            port,
            server: Mutex::new(None),
        })
    }

    pub fn idp(&self) -> &Idp {
        &self.idp
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn issuer(&self) -> &str {
        self.idp.issuer()
    }

    /// (Re)starts serving on the same port.
    pub fn up(&self) -> Result<(), String> {
        let mut server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        if server.is_some() {
            return Ok(());
        }
        let idp = Arc::clone(&self.idp);
        let handler: httpd::Handler = Arc::new(move |req: &Request| idp.handle(req));
        let addr = format!("127.0.0.1:{}", self.port);
        let mut last = String::new();
        for _ in 0..50 {
            match httpd::Server::start(&addr, Arc::clone(&handler)) {
                Ok(s) => {
                    *server = Some(s);
                    return Ok(());
                }
                Err(e) => {
                    last = e.to_string();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(format!("{}: {}", addr, last))
    }

    /// Stops serving: connections are refused until `up()`.
    pub fn down(&self) {
        if let Some(server) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            server.stop();
        }
    }
}
