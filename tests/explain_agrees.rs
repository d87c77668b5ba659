#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! `tokengate explain` gives the decision the filter gives: for each row of a table of
//! requests, the request is sent through a real Envoy running the built module, and the same
//! request is explained in-process ([`explain`], what the CLI prints) by a `Gate` compiled
//! from the same configuration JSON with the same keys. Both answers are reduced to an HTTP
//! status (200 when the request goes upstream, a dry-run refusal included; else the filter's
//! 400/401/403/503) and must be equal, and equal to the status the row expects.
//!
//! One Envoy per configuration, many rows each: the main route table (inline keys; Envoy's
//! own path settings, so the filter reads the path exactly as sent, as `explain` does), the
//! same table in dry run, and a ZITADEL-like provider whose keys Envoy fetches from the dev
//! IdP (`explain` is handed the same key set through `set_key_view`, as the CLI does).
//!
//! Requests go over HTTP/1.1 byte for byte (any `Host` line, userinfo and trailing dots
//! included); rows that need HTTP/2 (a lower-case method, an `:authority` naming two hosts)
//! go through curl. Rows not sent as intended: two `Host` lines over HTTP/1.1 (Envoy joins
//! them into one `:authority`, which the HTTP/2 row with `a,b` covers directly) and a userinfo
//! `:authority` over HTTP/2 (Envoy's codec refuses it before the filter runs).

use serde_json::{json, Value};
use std::rc::Rc;
use std::sync::OnceLock;
use tokengate_core::config::settings::{compile_str, KeySource};
use tokengate_core::engine::explain::{explain, Explanation};
use tokengate_core::engine::gate::{Gate, KeyView, Request};
use tokengate_core::keys::jwks::parse_jwks_str;
use tokengate_core::policy::decision::Outcome;
use tokengate_core::request::headers::HeaderMap;
use tokengate_core::time::UnixMillis;
use tokengate_testkit::devidp::RunningIdp;
use tokengate_testkit::idp::{self, PROJECT};
use tokengate_testkit::mint::{self, b64, claims, zitadel_roles};
use tokengate_testkit::{now, Envoy, EnvoyOptions, PathSettings, Response, SigningKey};

const ISS: &str = "https://zitadel.test";
const KID: &str = "rsa-1";
const API_HOST: &str = "api.example.com";

// ---- Rows ------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Http1,
    Http2,
}

/// One request, and the status both sides must give it.
struct Row {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    /// `Host` (HTTP/1.1) or `:authority` (HTTP/2); the client's default is `test.local`.
    authority: &'static str,
    headers: Vec<(&'static str, String)>,
    token: Option<String>,
    via: Via,
    expect: u16,
}

/// A GET of `path` at `test.local` without a token, over HTTP/1.1.
fn row(name: &'static str, path: &'static str, expect: u16) -> Row {
    Row {
        name,
        method: "GET",
        path,
        authority: "test.local",
        headers: Vec::new(),
        token: None,
        via: Via::Http1,
        expect,
    }
}

impl Row {
    fn token(mut self, token: &str) -> Row {
        self.token = Some(token.to_owned());
        self
    }
    fn host(mut self, authority: &'static str) -> Row {
        self.authority = authority;
        self
    }
    fn method(mut self, method: &'static str) -> Row {
        self.method = method;
        self
    }
    fn header(mut self, name: &'static str, value: &str) -> Row {
        self.headers.push((name, value.to_owned()));
        self
    }
    fn http2(mut self) -> Row {
        self.via = Via::Http2;
        self
    }

    /// The request's headers, as the client sends them and as `explain` reads them.
    fn header_lines(&self) -> Vec<(&'static str, String)> {
        let mut lines = vec![("host", self.authority.to_owned())];
        if let Some(token) = &self.token {
            lines.push(("authorization", format!("Bearer {}", token)));
        }
        lines.extend(self.headers.iter().cloned());
        lines
    }
}

// ---- Running a table ---------------------------------------------------------------------

/// One configuration: the running Envoy, and what `explain` needs to build the same gate.
struct Group {
    config: Value,
    envoy: Envoy,
    /// The key set text of each remote provider, by provider name (inline keys are in
    /// `config`).
    remote_keys: Vec<(String, String)>,
}

impl Group {
    fn start(config: Value, options: EnvoyOptions, remote_keys: Vec<(String, String)>) -> Group {
        // A configuration the filter refuses would stop Envoy from starting: say why first.
        if let Err(e) = compile_str(&config.to_string()) {
            panic!("the configuration does not compile: {}", e);
        }
        Group {
            envoy: Envoy::start_with(options),
            config,
            remote_keys,
        }
    }

    /// A gate as `tokengate explain` builds it: compiled from the configuration, each remote
    /// provider given its key set as a view that is usable for ever.
    fn gate(&self) -> Gate {
        let (settings, _warnings) = compile_str(&self.config.to_string()).unwrap();
        let mut views = Vec::new();
        for (id, provider) in settings.providers_by_id() {
            if !matches!(provider.keys, KeySource::Remote(_)) {
                continue;
            }
            let (_, text) = self
                .remote_keys
                .iter()
                .find(|(name, _)| *name == provider.name)
                .unwrap_or_else(|| panic!("no key set for remote provider {}", provider.name));
            let (keys, _warnings) = parse_jwks_str(text, &provider.key_policy).unwrap();
            views.push((id, keys));
        }
        let mut gate = Gate::new(settings);
        for (id, keys) in views {
            gate.set_key_view(
                id,
                KeyView {
                    keys: Some(Rc::new(keys)),
                    version: 1,
                    usable_until: UnixMillis::MAX,
                    ..KeyView::default()
                },
            );
        }
        gate
    }

    /// The filter's answer: 200 when the request reached the upstream, else the status of
    /// tokengate's own reply. An answer that is neither (the upstream refusing, Envoy
    /// answering by itself) means the row did not test what it says.
    fn filter_status(&self, row: &Row) -> Result<u16, String> {
        let lines = row.header_lines();
        let headers: Vec<(&str, &str)> = lines.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r: Response = match row.via {
            Via::Http1 => self.envoy.request(row.method, row.path, &headers),
            Via::Http2 => self
                .envoy
                .try_request_h2(row.method, row.path, &headers)
                .map_err(|e| format!("no HTTP/2 answer from Envoy: {}", e))?,
        };
        if r.reached_upstream() {
            return Ok(200);
        }
        if r.from_upstream() {
            return Err(format!("the upstream answered {}", r.status));
        }
        let body: Option<Value> = serde_json::from_str(&r.body).ok();
        match body.as_ref().and_then(|b| b["error"].as_str()) {
            Some(_) => Ok(r.status),
            None => Err(format!(
                "Envoy answered {} by itself, not tokengate: {}",
                r.status, r.body
            )),
        }
    }

    /// What `explain` says about the row, at the current time.
    fn explain(&self, row: &Row) -> Explanation {
        let mut pairs: Vec<(String, String)> = vec![
            (":method".into(), row.method.into()),
            (":path".into(), row.path.into()),
            (":authority".into(), row.authority.into()),
        ];
        pairs.extend(
            row.header_lines()
                .into_iter()
                .filter(|(name, _)| *name != "host")
                .map(|(n, v)| (n.to_owned(), v)),
        );
        let headers = HeaderMap::from_pairs(pairs);
        let mut gate = self.gate();
        explain(&mut gate, &Request::new(&headers), now_ms())
    }

    /// Runs every row; returns one line per row where the two sides disagree, a side gave no
    /// usable answer, or both agree on another status than the row expects.
    fn run(&self, rows: &[Row]) -> Vec<String> {
        let mut failures = Vec::new();
        for row in rows {
            let filter = self.filter_status(row);
            let explained = self.explain(row);
            let said = explain_status(&explained);
            let problem = match (&filter, &said) {
                (Err(e), _) => Some(format!("the filter: {}", e)),
                (_, Err(e)) => Some(format!("explain: {}", e)),
                (Ok(f), Ok(e)) if f != e => {
                    Some(format!("the filter answered {}, explain says {}", f, e))
                }
                (Ok(f), Ok(_)) if *f != row.expect => Some(format!(
                    "both say {}, but the row expects {}",
                    f, row.expect
                )),
                _ => None,
            };
            if let Some(problem) = problem {
                failures.push(format!(
                    "row {:?} ({} {} at {:?}{}): {}; explain's steps:\n{}",
                    row.name,
                    row.method,
                    row.path,
                    row.authority,
                    if row.via == Via::Http2 {
                        ", HTTP/2"
                    } else {
                        ""
                    },
                    problem,
                    steps(&explained)
                ));
            }
        }
        failures
    }
}

/// `explain`'s decision as the status the client would see: 200 when the request goes
/// upstream (allowed, or refused in dry run), else the refusal's status.
fn explain_status(e: &Explanation) -> Result<u16, String> {
    match &e.decision {
        None => Err("no decision: it would wait for keys or an introspection answer".into()),
        Some(d) if d.outcome == Outcome::Allowed || !d.enforced => Ok(200),
        Some(d) => d
            .denial
            .as_ref()
            .map(|denial| denial.status)
            .ok_or_else(|| format!("refused ({:?}) without a reply", d.outcome)),
    }
}

fn steps(e: &Explanation) -> String {
    e.steps
        .iter()
        .map(|s| {
            let mark = match s.passed {
                Some(true) => "[ok]  ",
                Some(false) => "[FAIL]",
                None => "[info]",
            };
            format!("    {} {:<13} {}", mark, s.check, s.detail)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[track_caller]
fn all_agree(group: &Group, rows: &[Row]) {
    let failures = group.run(rows);
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn now_ms() -> UnixMillis {
    UnixMillis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap(),
    )
}

// ---- The main configuration ----------------------------------------------------------------

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::rsa("RS256", KID))
}

/// One ZITADEL provider with an inline RSA key (`sub` required beside `exp`, a longest token
/// lifetime of two hours) and a route table with a rule of each kind; `extra` is merged into
/// the top level.
fn config(extra: Value) -> Value {
    let mut config = json!({
        "providers": {"zitadel": {
            "issuer": ISS,
            "zitadel": {"project_id": PROJECT},
            "jwks": mint::jwks(&[key()]),
            "required_claims": ["exp", "sub"],
            "max_token_lifetime_seconds": 7200
        }},
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "allow_anonymous": true},
            {"name": "internal", "match": {"path": {"prefix": "/internal/"}}, "deny": true},
            {"name": "api-host", "match": {"hosts": [API_HOST, "[::1]"]},
             "roles": {"any_of": ["admin"]}},
            {"name": "org", "match": {"path": {"prefix": "/org"}},
             "roles": {"any_of": ["admin"], "org": {"header": "x-org-id"}}},
            {"name": "admin", "match": {"path": {"prefix": "/admin"}}, "roles": {"any_of": ["admin"]}},
            {"name": "orders", "match": {"path": {"prefix": "/orders"}},
             "permissions": {"all_of": ["orders:read"]}},
            {"name": "reports", "match": {"path": {"prefix": "/reports"}},
             "scopes": {"any_of": ["reports:read"]}},
            {"name": "verified", "match": {"path": {"prefix": "/verified"}},
             "claims": [{"claim": "email_verified", "equals": true}]},
            {"name": "items-read", "match": {"path": {"prefix": "/items"}, "methods": ["GET", "HEAD", "OPTIONS"]},
             "allow_anonymous": true},
            {"name": "items-write", "match": {"path": {"prefix": "/items"}}, "roles": {"any_of": ["admin"]}},
            {"name": "beta", "match": {"path": {"prefix": "/beta"}}, "roles": {"any_of": ["beta"]},
             "dry_run": true},
            {"name": "public", "match": {"path": {"prefix": "/public"}}, "allow_anonymous": true}
        ],
        "default": "authenticated"
    });
    if let (Some(base), Value::Object(extra)) = (config.as_object_mut(), extra) {
        base.extend(extra);
    }
    config
}

/// Envoy with its own path settings: the filter reads the path exactly as sent.
fn start_main(extra: Value) -> Group {
    let config = config(extra);
    let options = EnvoyOptions::new(&config).paths(PathSettings::ENVOY_DEFAULT);
    Group::start(config, options, Vec::new())
}

fn table() -> &'static Group {
    static GROUP: OnceLock<Group> = OnceLock::new();
    GROUP.get_or_init(|| start_main(json!({})))
}

fn dry_run() -> &'static Group {
    static GROUP: OnceLock<Group> = OnceLock::new();
    GROUP.get_or_init(|| start_main(json!({"dry_run": true})))
}

/// A token of the main provider for our project: the standard claims (valid for an hour)
/// merged with `extra` (null removes a claim).
fn token(extra: Value) -> String {
    key().sign(&claims(ISS, &["client-1", PROJECT], extra))
}

/// A token with `role` granted in org-1, merged with `extra`.
fn with_role(role: &str, extra: Value) -> String {
    let (claim, roles) = zitadel_roles(PROJECT, &[(role, &["org-1"])]);
    let mut extra = extra;
    extra[claim] = roles;
    token(extra)
}

fn reader() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| with_role("reader", json!({"permissions": ["orders:read"]})))
}

fn admin() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| with_role("admin", json!({})))
}

fn expired() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    let t = now();
    T.get_or_init(|| token(json!({"iat": t - 7200, "nbf": t - 7200, "exp": t - 3600})))
}

/// The token with the last byte of its signature changed.
fn tampered(token: &str) -> String {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut raw = mint::b64_decode(signature).unwrap();
    *raw.last_mut().unwrap() ^= 0x01;
    format!("{}.{}", input, b64(&raw))
}

/// An unsigned token: `alg: none`, empty signature.
fn alg_none() -> String {
    let header = b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes());
    let payload = b64(claims(ISS, &[PROJECT], json!({})).to_string().as_bytes());
    format!("{}.{}.", header, payload)
}

/// Key confusion: HS256 with the RSA public key's JWK as the HMAC secret, naming its kid.
fn hs256_with_the_rsa_key() -> String {
    let secret = key().jwk().to_string();
    SigningKey::hmac("HS256", KID, secret.as_bytes()).sign(&claims(ISS, &[PROJECT], json!({})))
}

// ---- Main configuration: verification --------------------------------------------------

#[test]
fn explain_agrees_with_the_filter_on_token_verification() {
    let t = now();
    let stranger = SigningKey::es256("not-in-the-key-set");
    all_agree(
        table(),
        &[
            row("valid token", "/anything", 200).token(reader()),
            row("no token on an authenticated route", "/anything", 401),
            row("expired token", "/anything", 401).token(expired()),
            row("not yet valid", "/anything", 401)
                .token(&token(json!({"iat": t, "nbf": t + 3600, "exp": t + 5400}))),
            row("wrong issuer", "/anything", 401).token(&key().sign(&claims(
                "https://other.test",
                &[PROJECT],
                json!({}),
            ))),
            row("wrong audience", "/anything", 401).token(&key().sign(&claims(
                ISS,
                &["another-project"],
                json!({}),
            ))),
            row("bad signature (last byte changed)", "/anything", 401).token(&tampered(reader())),
            row("unknown kid", "/anything", 401).token(&stranger.sign(&claims(
                ISS,
                &[PROJECT],
                json!({}),
            ))),
            row("alg none", "/anything", 401).token(&alg_none()),
            row("HS256 with the RSA public key as secret", "/anything", 401)
                .token(&hs256_with_the_rsa_key()),
            row("required claim sub missing", "/anything", 401).token(&token(json!({"sub": null}))),
            row("max_token_lifetime_seconds exceeded", "/anything", 401)
                .token(&token(json!({"exp": t + 86_400}))),
            row("not a JWT", "/anything", 401).token("not-a-jwt"),
        ],
    );
}

// ---- Main configuration: route rules and requirements ------------------------------------

#[test]
fn explain_agrees_with_the_filter_on_route_rules() {
    all_agree(
        table(),
        &[
            row("anonymous route without a token", "/healthz", 200),
            row("anonymous route with an expired token", "/healthz", 401).token(expired()),
            row("deny rule, even for an admin", "/internal/x", 403).token(admin()),
            row("deny rule without a token", "/internal/x", 403),
            row("role required and granted", "/admin/x", 200).token(admin()),
            row("role required, not granted", "/admin/x", 403).token(reader()),
            row("role required, no token", "/admin/x", 401),
            row("permission granted", "/orders/1", 200).token(reader()),
            row("permission missing", "/orders/1", 403).token(admin()),
            row("scope granted", "/reports", 200)
                .token(&token(json!({"scope": "openid reports:read"}))),
            row("scope missing", "/reports", 403).token(&token(json!({"scope": "openid"}))),
            row("claim test passes", "/verified", 200)
                .token(&token(json!({"email_verified": true}))),
            row("claim test fails", "/verified", 403)
                .token(&token(json!({"email_verified": false}))),
            row("read method on the anonymous read rule", "/items/1", 200),
            row("write method falls to the write rule", "/items/1", 403)
                .method("DELETE")
                .token(reader()),
            row("write method with the role", "/items/1", 200)
                .method("DELETE")
                .token(admin()),
            row("lower-case post over HTTP/2 is a write", "/items/1", 403)
                .method("post")
                .token(reader())
                .http2(),
            row("method override header is not a write", "/items/1", 200)
                .header("x-http-method-override", "DELETE"),
            row("rule in dry run lets a refusal through", "/beta", 200).token(reader()),
            row("role in the organisation named", "/org/docs", 200)
                .token(admin())
                .header("x-org-id", "org-1"),
            row("role not in the organisation named", "/org/docs", 403)
                .token(admin())
                .header("x-org-id", "org-2"),
            row("organisation header listing two", "/org/docs", 400)
                .token(admin())
                .header("x-org-id", "org-1,org-2"),
            row("query string is not part of the path", "/admin?x=1", 403).token(reader()),
            row(
                "a path in the query string does not count",
                "/public?next=/admin",
                200,
            ),
        ],
    );
}

// ---- Main configuration: reading the request ----------------------------------------------

#[test]
fn explain_agrees_with_the_filter_on_hosts_paths_and_authorities() {
    all_agree(
        table(),
        &[
            row("IPv6 authority with a port, host rule", "/public", 403)
                .host("[::1]:8080")
                .token(reader()),
            row("IPv6 authority with a port, role granted", "/public", 200)
                .host("[::1]:8080")
                .token(admin()),
            row("host with a trailing dot", "/public", 403)
                .host("api.example.com.")
                .token(reader()),
            row("host with a trailing dot, no token", "/public", 401).host("api.example.com."),
            row("upper-case host with port 443", "/public", 403)
                .host("API.example.com:443")
                .token(reader()),
            row(
                "upper-case host with port 443, role granted",
                "/public",
                200,
            )
            .host("API.example.com:443")
            .token(admin()),
            row(
                "another host falls through to the path rules",
                "/public",
                200,
            )
            .host("www.example.com"),
            row("userinfo in the authority", "/public", 400).host("x@api.example.com"),
            row("authority naming two hosts (HTTP/2)", "/public", 400)
                .host("www.example.com,api.example.com")
                .http2(),
            row("dot-dot segment", "/a/../admin", 400),
            row("empty segment", "//admin", 400),
            row("dot-dot-semicolon", "/public/..;/admin", 400),
            row("encoded letter", "/%61dmin", 400),
            row("path in normal form with a token", "/public/a.json", 200).token(reader()),
        ],
    );
}

// ---- Dry run ---------------------------------------------------------------------------------

#[test]
fn explain_agrees_with_the_filter_in_dry_run() {
    all_agree(
        dry_run(),
        &[
            row("dry run: no token", "/admin/x", 200),
            row("dry run: role not granted", "/admin/x", 200).token(reader()),
            row("dry run: expired token", "/anything", 200).token(expired()),
            row("dry run: bad signature", "/anything", 200).token(&tampered(admin())),
            row("dry run: deny rule", "/internal/x", 200),
            row("dry run: host rule", "/public", 200)
                .host("API.example.com:443")
                .token(reader()),
            row("dry run: path not in normal form", "//admin", 200),
            row("dry run: userinfo in the authority", "/public", 200).host("x@api.example.com"),
            row("dry run: allowed", "/admin/x", 200).token(admin()),
        ],
    );
}

// ---- Remote keys -----------------------------------------------------------------------------

struct Remote {
    idp: RunningIdp,
    group: Group,
}

/// A ZITADEL-like provider whose keys Envoy fetches from the dev IdP; `explain` gets the key
/// set the IdP serves.
fn remote() -> &'static Remote {
    static REMOTE: OnceLock<Remote> = OnceLock::new();
    REMOTE.get_or_init(|| {
        let idp = idp::start();
        let config = json!({
            "providers": {"zitadel": {
                "issuer": idp.issuer(),
                "zitadel": {"project_id": PROJECT},
                "remote_jwks": {"cluster": "idp", "uri": format!("{}/oauth/v2/keys", idp.issuer())}
            }},
            "rules": [
                {"name": "admin", "match": {"path": {"prefix": "/admin"}}, "roles": {"any_of": ["admin"]}},
                {"name": "orders", "match": {"path": {"prefix": "/orders"}},
                 "permissions": {"any_of": ["orders:read"]}}
            ],
            "default": "authenticated"
        });
        let options = EnvoyOptions::new(&config).cluster("idp", idp.port());
        let keys = vec![("zitadel".to_owned(), idp.idp().jwks().to_string())];
        let group = Group::start(config, options, keys);
        Remote { idp, group }
    })
}

#[test]
fn explain_agrees_with_the_filter_on_remote_keys() {
    let r = remote();
    let reader = idp::token(&r.idp, "svc-reader");
    let admin = idp::token(&r.idp, "svc-admin");
    let stranger =
        SigningKey::es256("never-published").sign(&claims(r.idp.issuer(), &[PROJECT], json!({})));
    all_agree(
        &r.group,
        &[
            row("remote: valid token", "/anything", 200).token(&reader),
            row("remote: role granted", "/admin/x", 200).token(&admin),
            row("remote: role not granted", "/admin/x", 403).token(&reader),
            row("remote: permission granted", "/orders/1", 200).token(&reader),
            row("remote: permission missing", "/orders/1", 403).token(&admin),
            row("remote: bad signature", "/anything", 401).token(&tampered(&reader)),
            row("remote: unknown kid", "/anything", 401).token(&stranger),
            row("remote: no token", "/anything", 401),
        ],
    );
}
