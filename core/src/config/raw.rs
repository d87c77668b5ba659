//! The configuration as users write it: one JSON object, given as Envoy's plugin
//! `configuration` string or as Istio's `pluginConfig`. These serde types only describe the
//! shape; [`crate::config::settings::compile`] validates them into ready-to-run [`crate::config::settings::Settings`].

pub use crate::token::principal::NamesShape;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Parses the configuration text; errors name the field (`providers.main.audiences[1]`).
///
/// The text is read into a JSON value first and typed from there, the same way as a
/// protobuf Struct: one deserialization path instead of two halves the code serde
/// generates for the config types (a quarter of the module's size otherwise).
pub fn parse(text: &str) -> Result<FilterConfig, ConfigError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        field: "(top level)".into(),
        message: e.to_string(),
    })?;
    from_value(value)
}

/// Parses a configuration already decoded into JSON (from a protobuf Struct).
pub fn from_value(value: Value) -> Result<FilterConfig, ConfigError> {
    deserialize(value)
}

fn deserialize<'de, D: serde::Deserializer<'de>>(de: D) -> Result<FilterConfig, ConfigError>
where
    D::Error: fmt::Display,
{
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::Syntax {
            // serde_path_to_error says "." for the root and "?" before the first key is read.
            field: if matches!(field.as_str(), "." | "?" | "") {
                "(top level)".into()
            } else {
                field
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// A configuration the filter refuses; `on_configure` logs it and returns false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Not JSON, or a field of the wrong type, unknown or missing.
    Syntax { field: String, message: String },
    /// Well-formed but unusable.
    Invalid { field: String, message: String },
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn field(&self) -> &str {
        match self {
            ConfigError::Syntax { field, .. } | ConfigError::Invalid { field, .. } => field,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Syntax { field, message } | ConfigError::Invalid { field, message } => {
                write!(f, "{}: {}", field, message)
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// `realm` of the `WWW-Authenticate` challenge.
    pub realm: Option<String>,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Where to look for the token, in order. Default: `Authorization: Bearer`.
    pub token_sources: Option<Vec<TokenSourceConfig>>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// For requests no rule matches.
    #[serde(default)]
    pub default: DefaultAction,
    #[serde(default)]
    pub forward: ForwardConfig,
    /// Decide, log and count, but let every request through with the decision in a header.
    #[serde(default)]
    pub dry_run: bool,
    pub dry_run_header: Option<String>,
    pub max_token_bytes: Option<usize>,
    #[serde(default)]
    pub token_cache: TokenCacheConfig,
    /// Refuse (400) a path not in normal form (`//`, dot segments, encoded `/`, `;`, ...).
    #[serde(default = "yes")]
    pub require_normal_paths: bool,
    /// Let `X-HTTP-Method-Override`, `X-Method-Override` and `X-HTTP-Method` through.
    #[serde(default)]
    pub keep_method_override_headers: bool,
    /// Let `X-Original-URL` and `X-Rewrite-URL` through.
    #[serde(default)]
    pub keep_path_override_headers: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAction {
    /// 403 for requests no rule matches.
    #[default]
    Deny,
    /// Any valid token.
    Authenticated,
    /// Let them through without a token.
    Allow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Expected `iss`, compared exactly. Without it any `iss` is accepted.
    pub issuer: Option<String>,
    /// Accepted `aud` values (any of). Default: the ZITADEL project id, if given; else none
    /// (no audience check).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `alg` values. Default: every asymmetric algorithm, plus HMAC when the inline
    /// key set holds an `oct` key.
    pub algorithms: Option<Vec<String>>,
    /// Inline JWK Set: an object or a string holding one.
    pub jwks: Option<Value>,
    /// Keys fetched from a `jwks_uri`, or found by OIDC discovery from the issuer.
    pub remote_jwks: Option<RemoteJwksConfig>,
    /// RFC 7662 introspection of opaque tokens (and, optionally, of JWTs).
    pub introspection: Option<IntrospectionConfig>,
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Claims a JWT must carry. Default: `["exp"]` (RFC 9068 2.2 requires more; `[]` none).
    pub required_claims: Option<Vec<String>>,
    /// A JWT whose `exp` lies further ahead than this (plus the clock skew) is refused.
    pub max_token_lifetime_seconds: Option<u64>,
    /// Accepted JOSE `typ` values (e.g. `at+jwt`, RFC 9068 4). Default: any JWT type.
    pub token_types: Option<Vec<String>>,
    pub min_rsa_bits: Option<usize>,
    /// Usable keys read from the key set (default 100); the rest are skipped.
    pub max_keys: Option<usize>,
    /// Bound on the key material of the key set in each VM, precomputed tables included
    /// (default 4 MiB); a set beyond it is refused and the previous keys stay.
    pub max_key_memory_bytes: Option<usize>,
    pub zitadel: Option<ZitadelConfig>,
    #[serde(default)]
    pub claims: ClaimNamesConfig,
}

fn default_clock_skew() -> u64 {
    60
}

/// Introspecting tokens at the provider's RFC 7662 endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntrospectionConfig {
    /// The endpoint URL. Without it, discovery (through `remote_jwks` without `uri`) finds it.
    pub endpoint: Option<String>,
    /// Default: `remote_jwks.cluster`.
    pub cluster: Option<String>,
    /// Default: `remote_jwks.authority`, else the endpoint's host.
    pub authority: Option<String>,
    pub timeout_ms: u64,
    /// client_secret_basic: the client id and secret, given here or, better, through VM
    /// environment variables (`*_env`: the variable's name).
    pub client_id: Option<String>,
    pub client_id_env: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    /// private_key_jwt: a ZITADEL application key file (the JSON object or its text), or the
    /// name of a VM environment variable holding its text.
    pub key_file: Option<Value>,
    pub key_file_env: Option<String>,
    /// An active answer is reused until the token expires or this ends.
    pub cache_ttl_seconds: u64,
    /// An inactive answer is reused this long.
    pub negative_cache_ttl_seconds: u64,
    pub cache_max_entries: usize,
    pub cache_max_bytes: usize,
    /// Also introspect valid JWTs, to catch revocation before `exp`.
    pub introspect_jwts: bool,
    /// Larger answers are refused.
    pub max_bytes: usize,
}

impl Default for IntrospectionConfig {
    fn default() -> Self {
        IntrospectionConfig {
            endpoint: None,
            cluster: None,
            authority: None,
            timeout_ms: 2000,
            client_id: None,
            client_id_env: None,
            client_secret: None,
            client_secret_env: None,
            key_file: None,
            key_file_env: None,
            cache_ttl_seconds: 120,
            negative_cache_ttl_seconds: 10,
            cache_max_entries: 10_000,
            cache_max_bytes: 16 * 1024 * 1024,
            introspect_jwts: false,
            max_bytes: 64 * 1024,
        }
    }
}

/// Fetching a provider's keys over HTTP through an Envoy cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteJwksConfig {
    /// The JWKS URL. Without it, `<issuer>/.well-known/openid-configuration` names it.
    pub uri: Option<String>,
    /// The Envoy cluster that reaches the provider (Istio: `outbound|443||<host>`).
    pub cluster: String,
    /// `:authority` of the callouts. Default: the host of the URL called. ZITADEL picks the
    /// instance by host, so this must be its public host when the cluster is internal.
    pub authority: Option<String>,
    pub timeout_ms: u64,
    /// Refresh interval when the answer has no `Cache-Control: max-age`.
    pub refresh_seconds: u64,
    /// Bounds for the interval `max-age` asks for.
    pub min_refresh_seconds: u64,
    pub max_refresh_seconds: u64,
    /// A token with an unknown `kid` refetches the keys at most once per this interval.
    pub unknown_kid_refetch_seconds: u64,
    /// After failed refreshes the last good keys stay in use this long; then 503.
    pub max_stale_seconds: u64,
    /// Larger answers are refused (the last good keys stay).
    pub max_bytes: usize,
    /// Requests that arrive before the first keys wait at most this long; then 503.
    pub startup_wait_ms: u64,
    /// Retries after failures back off from 1 s, doubling up to this.
    pub max_backoff_seconds: u64,
    /// Hosts besides the issuer's that discovery may name for `jwks_uri` and
    /// `introspection_endpoint`.
    pub allowed_hosts: Vec<String>,
}

impl Default for RemoteJwksConfig {
    fn default() -> Self {
        RemoteJwksConfig {
            uri: None,
            cluster: String::new(),
            authority: None,
            timeout_ms: 3000,
            refresh_seconds: 300,
            min_refresh_seconds: 30,
            max_refresh_seconds: 3600,
            unknown_kid_refetch_seconds: 30,
            max_stale_seconds: 86_400,
            max_bytes: 256 * 1024,
            startup_wait_ms: 3000,
            max_backoff_seconds: 60,
            allowed_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZitadelConfig {
    /// The id of the ZITADEL project of the API this filter protects.
    pub project_id: String,
    /// Also read the flat `urn:zitadel:iam:org:project:roles` claim. Unsafe unless every
    /// client that can obtain tokens belongs to this project (see README).
    #[serde(default)]
    pub accept_flat_roles_claim: bool,
}

/// Claims that hold roles, permissions and scopes, for providers other than ZITADEL.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimNamesConfig {
    pub roles: Option<ClaimSourceConfig>,
    pub permissions: Option<ClaimSourceConfig>,
    pub scopes: Option<ClaimSourceConfig>,
}

/// Where a list of names is, and in which shape: a path alone (the shape is then the
/// default for that list), or `{"path": ..., "shape": ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClaimSourceConfig {
    Path(ClaimPathConfig),
    Declared(DeclaredClaimConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredClaimConfig {
    pub path: ClaimPathConfig,
    pub shape: Option<NamesShape>,
}

/// A claim path: `"realm_access.roles"`, or `["https://example.com/roles"]` for keys with dots.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClaimPathConfig {
    Dotted(String),
    Keys(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSourceConfig {
    pub header: Option<String>,
    /// With `header`: a scheme prefix such as `"Bearer "` (compared case-insensitively).
    pub prefix: Option<String>,
    pub cookie: Option<String>,
    pub query: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub route: MatchConfig,
    /// No token needed (a token that is sent must still be valid).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Refuse every request this rule matches (403).
    #[serde(default)]
    pub deny: bool,
    /// Providers whose tokens count on this route. Default: all.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Replaces the providers' audiences on this route.
    pub audiences: Option<Vec<String>>,
    pub roles: Option<RolesConfig>,
    pub permissions: Option<NamesConfig>,
    pub scopes: Option<NamesConfig>,
    #[serde(default)]
    pub claims: Vec<ClaimRuleConfig>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    pub path: Option<PathConfig>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathConfig {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    /// Matched against the whole path (without the query string).
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamesConfig {
    pub any_of: Option<Vec<String>>,
    pub all_of: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    pub any_of: Option<Vec<String>>,
    pub all_of: Option<Vec<String>>,
    /// The organisation the role must be granted in (ZITADEL role grants carry org ids).
    pub org: Option<OrgConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    /// A fixed organisation id.
    pub id: Option<String>,
    /// The header in which the request names the organisation id.
    pub header: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRuleConfig {
    pub claim: ClaimPathConfig,
    pub equals: Option<Value>,
    pub contains: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Claims copied into request headers for the upstream.
    #[serde(default)]
    pub claims: Vec<ForwardClaimConfig>,
    /// Role names (from the provider's roles claim), comma-separated.
    pub roles_header: Option<String>,
    pub permissions_header: Option<String>,
    pub scopes_header: Option<String>,
    /// Name of the provider that verified the token.
    pub provider_header: Option<String>,
    /// Take the token out of the request before the upstream: the header, cookie or query
    /// parameter that carried it. `remove_token_header`, its former name, still works.
    #[serde(default, alias = "remove_token_header")]
    pub remove_token: bool,
    /// A forwarded header longer than this is not sent (see `oversized_headers`).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default)]
    pub oversized_headers: OversizedHeaders,
}

fn default_max_header_bytes() -> usize {
    8 * 1024
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            claims: Vec::new(),
            roles_header: None,
            permissions_header: None,
            scopes_header: None,
            provider_header: None,
            remove_token: false,
            max_header_bytes: default_max_header_bytes(),
            oversized_headers: OversizedHeaders::Omit,
        }
    }
}

/// What happens to a request whose forwarded header would exceed `max_header_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OversizedHeaders {
    /// The header is left out (a warning is logged once per rule); the request goes on.
    #[default]
    Omit,
    /// The request is refused (403).
    Refuse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardClaimConfig {
    pub claim: ClaimPathConfig,
    pub header: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenCacheConfig {
    /// 0 disables the cache.
    pub max_entries: usize,
    pub max_bytes: usize,
    /// An entry lives until the token expires or this many seconds pass, whichever is first.
    pub ttl_seconds: u64,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        TokenCacheConfig {
            max_entries: 10_000,
            max_bytes: 32 * 1024 * 1024,
            ttl_seconds: 300,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_the_field() {
        let err = parse(r#"{"providers":{"main":{"audiences":["a",1]}}}"#).unwrap_err();
        assert_eq!(err.field(), "providers.main.audiences[1]");
        let err = parse(r#"{"providers":{},"rules":[{"match":{"paht":{}}}]}"#).unwrap_err();
        assert_eq!(err.field(), "rules[0].match.paht");
        assert!(err.to_string().contains("unknown field"), "{}", err);
    }

    #[test]
    fn missing_providers_is_named() {
        let err = parse("{}").unwrap_err();
        assert!(err.to_string().contains("providers"), "{}", err);
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(parse(r#"{"providers":{}} x"#).is_err());
        assert!(parse("").is_err());
    }
}
