//! Remote key sets: where to fetch them (a `jwks_uri`, or OIDC discovery from the issuer),
//! the callout requests to make, and what their answers mean. The host dispatches the
//! requests and hands the answers back; nothing here does I/O.

use crate::keys::jwks::{self, JwksError, KeyPolicy, KeySet, ParsedKeys};
use serde_json::Value;
use std::fmt;

/// A URL split the way a callout needs it. The scheme decides the default port and whether
/// URLs that discovery names must be `https`; TLS itself is the business of the Envoy
/// cluster the callout goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// `host` or `host:port`, as written.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Url {
    /// Parses an absolute `http(s)` URL of visible ASCII (RFC 3986), without userinfo or
    /// fragment.
    pub fn parse(text: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("is not an http(s) URL".to_owned());
        };
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("has spaces, control characters or non-ASCII text".to_owned());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains(['@', '?', '#']) {
            return Err("has no usable host".to_owned());
        }
        if path.contains('#') {
            return Err("has a fragment".to_owned());
        }
        Ok(Url {
            https,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The host without the port (`[v6]` keeps its brackets).
    pub fn host(&self) -> &str {
        let a = self.authority.as_str();
        if a.starts_with('[') {
            return a.split_once(']').map_or(a, |(h, _)| &a[..h.len() + 1]);
        }
        a.rsplit_once(':').map_or(a, |(h, _)| h)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{}://{}{}", scheme, self.authority, self.path)
    }
}

/// How a provider fetches its keys, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// Given in the configuration; `None` means discovery from the issuer.
    pub jwks_uri: Option<Url>,
    /// Where discovery looks (`<issuer>/.well-known/openid-configuration`).
    pub discovery: Option<Url>,
    /// The Envoy cluster all callouts of this provider go to.
    pub cluster: String,
    /// `:authority` of every callout; default: the host of the URL called.
    pub authority: Option<String>,
    pub timeout_ms: u64,
    pub refresh: RefreshPolicy,
    pub max_bytes: usize,
    pub startup_wait_ms: u64,
    /// Hosts besides the issuer's that discovery may name (lower case).
    pub allowed_hosts: Vec<String>,
}

impl RemoteJwks {
    /// Whether a URL that discovery names may be called: `https` unless the issuer itself is
    /// `http` (loopback tests), and on the issuer's host or one of `allowed_hosts`. A
    /// discovery document is not to move the keys, or the tokens sent for introspection, to
    /// a host the operator never named.
    /// A URL from the shared record (written by discovery, possibly by an earlier
    /// configuration of this process) if it is still one this configuration trusts.
    pub fn trusted_url(&self, text: &str) -> Option<Url> {
        Url::parse(text).ok().filter(|url| self.trusts(url).is_ok())
    }

    pub fn trusts(&self, url: &Url) -> Result<(), String> {
        let issuer = self.discovery.as_ref();
        if issuer.is_none_or(|i| i.https) && !url.https {
            return Err("is not https".to_owned());
        }
        let host = url.host();
        let known = issuer.is_some_and(|i| i.host().eq_ignore_ascii_case(host))
            || self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host));
        if known {
            Ok(())
        } else {
            Err(format!(
                "is on host {}, neither the issuer's nor one of remote_jwks.allowed_hosts",
                host
            ))
        }
    }
}

/// Timing of fetches, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Refresh interval when the answer carries no `max-age`.
    pub default_ms: u64,
    pub min_ms: u64,
    pub max_ms: u64,
    /// At most one refetch per this interval for tokens with an unknown `kid`.
    pub unknown_kid_ms: u64,
    /// Keys older than this are no longer used (503 instead).
    pub max_stale_ms: u64,
    /// Backoff after failed fetches doubles from 1 s up to this.
    pub max_backoff_ms: u64,
    /// How long a worker may hold the fetch lease before others may take over.
    pub lease_ms: u64,
}

impl RefreshPolicy {
    /// The refresh interval for an answer with this `max-age` (seconds), clamped.
    pub fn interval_ms(&self, max_age_s: Option<u64>) -> u64 {
        match max_age_s {
            Some(s) => s.saturating_mul(1000).clamp(self.min_ms, self.max_ms),
            None => self.default_ms,
        }
    }

    /// Backoff after the `failures`-th failure in a row; `jitter` in [0, 1) spreads it
    /// by +-25 % so that a fleet does not retry in step.
    pub fn backoff_ms(&self, failures: u32, jitter: f64) -> u64 {
        let base = 1000u64.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
        let capped = base.min(self.max_backoff_ms) as f64;
        (capped * (0.75 + 0.5 * jitter.clamp(0.0, 1.0))) as u64
    }
}

/// What a callout fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchKind {
    Discovery,
    Jwks,
}

/// A GET the host should dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub kind: FetchKind,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
}

impl Callout {
    pub fn get(kind: FetchKind, remote: &RemoteJwks, url: &Url) -> Callout {
        Callout {
            kind,
            cluster: remote.cluster.clone(),
            authority: remote
                .authority
                .clone()
                .unwrap_or_else(|| url.authority.clone()),
            path: url.path.clone(),
            timeout_ms: remote.timeout_ms,
        }
    }

    /// The request headers of the callout.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            (":method", "GET"),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
            ("accept", "application/json"),
            ("user-agent", "tokengate"),
        ]
    }
}

/// Why a fetch did not produce keys. Each cause has a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No answer: connection refused or reset, timeout, unknown cluster.
    Unreachable,
    Status(u16),
    TooLarge {
        max: usize,
    },
    /// The key set's material passes `max_key_memory_bytes`.
    KeyMemory {
        max: usize,
    },
    Malformed(String),
}

impl FetchError {
    pub const CAUSES: [&'static str; 4] = ["unreachable", "status", "oversized", "malformed"];

    pub fn cause(&self) -> &'static str {
        match self {
            FetchError::Unreachable => "unreachable",
            FetchError::Status(_) => "status",
            FetchError::TooLarge { .. } | FetchError::KeyMemory { .. } => "oversized",
            FetchError::Malformed(_) => "malformed",
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Unreachable => write!(f, "no answer (connection failed or timed out)"),
            FetchError::Status(s) => write!(f, "HTTP status {}", s),
            FetchError::TooLarge { max } => {
                write!(f, "the answer is larger than {} bytes (max_bytes)", max)
            }
            FetchError::KeyMemory { max } => write!(
                f,
                "the key set holds more key material than {} bytes (max_key_memory_bytes)",
                max
            ),
            FetchError::Malformed(why) => write!(f, "the answer {}", why),
        }
    }
}

/// The answer to a callout, as the host read it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// `None` when the call failed without a response.
    pub status: Option<u16>,
    pub cache_control: Option<&'a str>,
    pub body: &'a [u8],
    /// The size the host reported, which may exceed what it handed over in `body`.
    pub body_size: usize,
}

/// Envoy answers a callout it could not deliver with its own 503/504 and one of these texts.
const ENVOY_LOCAL_FAILURES: [&[u8]; 3] = [
    b"upstream connect error",
    b"no healthy upstream",
    b"upstream request timeout",
];

fn check_answer(answer: &Answer<'_>, max_bytes: usize) -> Result<(), FetchError> {
    match answer.status {
        None => Err(FetchError::Unreachable),
        Some(503 | 504)
            if ENVOY_LOCAL_FAILURES
                .iter()
                .any(|t| answer.body.starts_with(t)) =>
        {
            Err(FetchError::Unreachable)
        }
        Some(200) => {
            if answer.body_size > max_bytes || answer.body.len() > max_bytes {
                Err(FetchError::TooLarge { max: max_bytes })
            } else {
                Ok(())
            }
        }
        Some(s) => Err(FetchError::Status(s)),
    }
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub jwks_uri: String,
    pub introspection_endpoint: Option<String>,
}

/// Reads an OpenID Provider Configuration document. The `jwks_uri` and the
/// `introspection_endpoint` it names must be URLs `remote` trusts; otherwise the whole
/// document is refused (the last good keys stay).
pub fn read_discovery(
    answer: &Answer<'_>,
    max_bytes: usize,
    issuer: Option<&str>,
    remote: &RemoteJwks,
) -> Result<Discovered, FetchError> {
    check_answer(answer, max_bytes)?;
    let doc: Value = serde_json::from_slice(answer.body)
        .map_err(|e| FetchError::Malformed(format!("is not JSON ({})", e)))?;
    if let (Some(expected), Some(found)) = (issuer, doc.get("issuer").and_then(Value::as_str)) {
        if expected != found {
            // The issuer it names is not repeated: it is text from the network.
            return Err(FetchError::Malformed(format!(
                "names another issuer than {:?}",
                expected
            )));
        }
    }
    let trusted = |member: &str| -> Result<Option<String>, FetchError> {
        let Some(value) = doc.get(member) else {
            return Ok(None);
        };
        let url = value
            .as_str()
            .ok_or_else(|| FetchError::Malformed(format!("has a {} that is not a string", member)))
            .and_then(|text| {
                Url::parse(text)
                    .map_err(|why| FetchError::Malformed(format!("has a {} that {}", member, why)))
            })?;
        remote
            .trusts(&url)
            .map_err(|why| FetchError::Malformed(format!("names a {} that {}", member, why)))?;
        Ok(Some(url.to_string()))
    };
    let jwks_uri =
        trusted("jwks_uri")?.ok_or_else(|| FetchError::Malformed("has no jwks_uri".into()))?;
    let introspection_endpoint = trusted("introspection_endpoint")?;
    Ok(Discovered {
        jwks_uri,
        introspection_endpoint,
    })
}

/// A fetched key set and the refresh hint that came with it.
#[derive(Debug)]
pub struct FetchedKeys {
    /// SHA-256 of the body as fetched.
    pub body_digest: [u8; 32],
    /// `None`: the body is the one read last time (`last_body`), not parsed again.
    pub keys: Option<ParsedKeys>,
    pub max_age_s: Option<u64>,
}

/// Reads a JWKS answer. A set without a usable key is a failure: the last good keys stay.
/// A body equal to `last_body` is not parsed again; JWKs unchanged from `previous` are
/// taken over with their tables.
pub fn read_jwks(
    answer: &Answer<'_>,
    max_bytes: usize,
    policy: &KeyPolicy,
    previous: Option<&KeySet>,
    last_body: Option<&[u8; 32]>,
) -> Result<FetchedKeys, FetchError> {
    check_answer(answer, max_bytes)?;
    let body_digest = jwks::digest(answer.body);
    let keys = if previous.is_some() && last_body == Some(&body_digest) {
        None
    } else {
        Some(parse_jwks_body(answer.body, policy, previous)?)
    };
    Ok(FetchedKeys {
        body_digest,
        keys,
        max_age_s: answer.cache_control.and_then(max_age),
    })
}

/// Parses a JWKS body (also used for bodies shared between workers).
pub fn parse_jwks_body(
    body: &[u8],
    policy: &KeyPolicy,
    previous: Option<&KeySet>,
) -> Result<ParsedKeys, FetchError> {
    let text =
        std::str::from_utf8(body).map_err(|_| FetchError::Malformed("is not UTF-8 text".into()))?;
    jwks::read_jwks(text, policy, previous).map_err(|e| match e {
        JwksError::Oversized { max } => FetchError::KeyMemory { max },
        JwksError::NotJson(why) => FetchError::Malformed(format!("is not JSON ({})", why)),
        other => FetchError::Malformed(other.to_string()),
    })
}

/// `max-age` of a Cache-Control header; `no-cache`/`no-store` count as 0.
pub fn max_age(cache_control: &str) -> Option<u64> {
    let mut result = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-cache" || directive == "no-store" {
            return Some(0);
        }
        if let Some(v) = directive.strip_prefix("max-age=") {
            result = v.trim_matches('"').parse().ok();
        }
    }
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            Url::parse("https://auth.example.com/oauth/v2/keys").unwrap(),
            Url {
                https: true,
                authority: "auth.example.com".into(),
                path: "/oauth/v2/keys".into()
            }
        );
        assert_eq!(Url::parse("http://127.0.0.1:9000").unwrap().path, "/");
        assert!(Url::parse("ftp://x/y").is_err());
        assert!(Url::parse("https:///keys").is_err());
        assert!(Url::parse("https://user@host/").is_err());
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(max_age("max-age=300, must-revalidate"), Some(300));
        assert_eq!(max_age("public, Max-Age=60"), Some(60));
        assert_eq!(max_age("no-store"), Some(0));
        assert_eq!(max_age("private"), None);
    }

    /// The refresh policy the key tests start from.
    pub(crate) fn policy() -> RefreshPolicy {
        RefreshPolicy {
            default_ms: 300_000,
            min_ms: 30_000,
            max_ms: 3_600_000,
            unknown_kid_ms: 30_000,
            max_stale_ms: 86_400_000,
            max_backoff_ms: 60_000,
            lease_ms: 10_000,
        }
    }

    #[test]
    fn refresh_interval_is_clamped() {
        let p = policy();
        assert_eq!(p.interval_ms(Some(300)), 300_000);
        assert_eq!(p.interval_ms(Some(1)), 30_000);
        assert_eq!(p.interval_ms(Some(86_400)), 3_600_000);
        assert_eq!(p.interval_ms(None), 300_000);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let p = policy();
        assert_eq!(p.backoff_ms(1, 0.5), 1000);
        assert_eq!(p.backoff_ms(2, 0.5), 2000);
        assert_eq!(p.backoff_ms(3, 0.0), 3000);
        assert_eq!(p.backoff_ms(30, 0.5), 60_000);
        assert_eq!(p.backoff_ms(30, 0.999_999), 74_999);
    }

    #[test]
    fn answers_are_checked_before_parsing() {
        let answer = |status, body: &'static [u8]| Answer {
            status,
            cache_control: None,
            body,
            body_size: body.len(),
        };
        let policy = KeyPolicy::default();
        assert_eq!(
            read_jwks(&answer(None, b""), 10, &policy, None, None).unwrap_err(),
            FetchError::Unreachable
        );
        assert_eq!(
            read_jwks(&answer(Some(500), b"{}"), 10, &policy, None, None).unwrap_err(),
            FetchError::Status(500)
        );
        assert_eq!(
            read_jwks(
                &answer(Some(200), b"{\"keys\": []}"),
                5,
                &policy,
                None,
                None
            )
            .unwrap_err()
            .cause(),
            "oversized"
        );
        assert_eq!(
            read_jwks(&answer(Some(200), b"<html>"), 100, &policy, None, None)
                .unwrap_err()
                .cause(),
            "malformed"
        );
        assert_eq!(
            read_jwks(
                &answer(Some(200), b"{\"keys\": []}"),
                100,
                &policy,
                None,
                None
            )
            .unwrap_err()
            .cause(),
            "malformed"
        );
    }

    #[test]
    fn an_unchanged_body_is_not_parsed_again_and_a_changed_one_is() {
        let key = |x: &str| {
            format!(
                r#"{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{}"}}"#,
                crate::support::b64::encode(x.as_bytes())
            )
        };
        let body = format!(
            r#"{{"keys":[{}]}}"#,
            key("0123456789abcdef0123456789abcdef")
        );
        let changed = format!(
            r#"{{"keys":[{}]}}"#,
            key("fedcba9876543210fedcba9876543210")
        );
        fn answer(body: &str) -> Answer<'_> {
            Answer {
                status: Some(200),
                cache_control: None,
                body: body.as_bytes(),
                body_size: body.len(),
            }
        }
        let policy = KeyPolicy::default();
        let first = read_jwks(&answer(&body), 10_000, &policy, None, None).unwrap();
        let keys = first.keys.expect("a first body is parsed").keys;
        let again = read_jwks(
            &answer(&body),
            10_000,
            &policy,
            Some(&keys),
            Some(&first.body_digest),
        )
        .unwrap();
        assert!(again.keys.is_none(), "the same body is not parsed again");
        assert_eq!(again.body_digest, first.body_digest);
        let next = read_jwks(
            &answer(&changed),
            10_000,
            &policy,
            Some(&keys),
            Some(&first.body_digest),
        )
        .unwrap();
        assert_eq!(next.keys.expect("a changed body is parsed").keys.len(), 1);
    }

    /// Remote keys found by discovery from `issuer`, with `allowed` extra hosts.
    fn discovered_from(issuer: &str, allowed: &[&str]) -> RemoteJwks {
        let (settings, _) = crate::config::settings::compile_str(
            &serde_json::json!({"providers": {"p": {
                "issuer": issuer,
                "remote_jwks": {"cluster": "idp", "allowed_hosts": allowed}
            }}})
            .to_string(),
        )
        .unwrap();
        match &settings.providers[0].keys {
            crate::config::settings::KeySource::Remote(r) => (**r).clone(),
            _ => unreachable!(),
        }
    }

    fn discovery_doc(doc: &serde_json::Value) -> Vec<u8> {
        doc.to_string().into_bytes()
    }

    fn read(doc: &[u8], issuer: &str, remote: &RemoteJwks) -> Result<Discovered, FetchError> {
        let answer = Answer {
            status: Some(200),
            cache_control: None,
            body: doc,
            body_size: doc.len(),
        };
        read_discovery(&answer, 10_000, Some(issuer), remote)
    }

    #[test]
    fn discovery_needs_a_jwks_uri_and_the_right_issuer() {
        let remote = discovered_from("https://i", &[]);
        let doc = br#"{"issuer":"https://i","jwks_uri":"https://i/keys","introspection_endpoint":"https://i/introspect"}"#;
        let found = read(doc, "https://i", &remote).unwrap();
        assert_eq!(found.jwks_uri, "https://i/keys");
        assert_eq!(
            found.introspection_endpoint.as_deref(),
            Some("https://i/introspect")
        );
        let wrong = read(doc, "https://other", &remote).unwrap_err();
        assert_eq!(wrong.cause(), "malformed");
        assert!(
            !wrong.to_string().contains("\"https://i\""),
            "the issuer found is not repeated: {}",
            wrong
        );
        let none = br#"{"issuer":"https://i"}"#;
        assert_eq!(
            read(none, "https://i", &remote).unwrap_err().cause(),
            "malformed"
        );
    }

    #[test]
    fn discovered_urls_must_be_on_the_issuers_host_or_a_listed_one() {
        let remote = discovered_from("https://auth.example.com", &["keys.example.net"]);
        let doc = |jwks: &str, introspect: &str| {
            discovery_doc(&serde_json::json!({"issuer": "https://auth.example.com",
                "jwks_uri": jwks, "introspection_endpoint": introspect}))
        };
        let ok = "https://auth.example.com/introspect";
        let read = |d: Vec<u8>| read(&d, "https://auth.example.com", &remote);
        assert!(read(doc("https://AUTH.example.com:8443/keys", ok)).is_ok());
        assert!(read(doc("https://keys.example.net/keys", ok)).is_ok());
        let foreign = read(doc("https://evil.example/keys", ok)).unwrap_err();
        assert_eq!(foreign.cause(), "malformed");
        assert!(foreign.to_string().contains("allowed_hosts"), "{}", foreign);
        let introspect = read(doc(
            "https://auth.example.com/keys",
            "https://evil.example/i",
        ));
        assert!(introspect
            .unwrap_err()
            .to_string()
            .contains("introspection_endpoint"));
        // A look-alike is another host.
        assert!(read(doc("https://auth.example.com.evil.example/keys", ok)).is_err());
        assert!(read(doc("https://evil.example/keys#auth.example.com", ok)).is_err());
    }

    #[test]
    fn a_recorded_url_is_used_only_while_this_configuration_trusts_it() {
        let remote = discovered_from("https://auth.example.com", &[]);
        assert!(remote
            .trusted_url("https://auth.example.com/keys")
            .is_some());
        assert!(remote.trusted_url("https://evil.example/keys").is_none());
        assert!(remote.trusted_url("http://auth.example.com/keys").is_none());
        assert!(remote.trusted_url("not a url").is_none());
    }

    #[test]
    fn discovered_urls_must_be_https_unless_the_issuer_is_http() {
        let remote = discovered_from("https://auth.example.com", &[]);
        let doc = discovery_doc(&serde_json::json!({"issuer": "https://auth.example.com",
            "jwks_uri": "http://auth.example.com/keys"}));
        let err = read(&doc, "https://auth.example.com", &remote).unwrap_err();
        assert!(err.to_string().contains("https"), "{}", err);
        let loopback = discovered_from("http://127.0.0.1:9000", &[]);
        let doc = discovery_doc(&serde_json::json!({"issuer": "http://127.0.0.1:9000",
            "jwks_uri": "http://127.0.0.1:9000/keys"}));
        assert!(read(&doc, "http://127.0.0.1:9000", &loopback).is_ok());
    }

    #[test]
    fn urls_keep_only_visible_ascii() {
        assert!(Url::parse("https://a.example/k\u{7f}").is_err());
        assert!(Url::parse("https://a.example/k\ney").is_err());
        assert!(Url::parse("https://a.example/ké").is_err());
        assert_eq!(Url::parse("https://[::1]:8443/k").unwrap().host(), "[::1]");
        assert_eq!(Url::parse("http://h:80/k").unwrap().host(), "h");
    }
}
