//! The compiled configuration: everything validated, keys parsed, matchers built, so that
//! the request path only reads.

use crate::config::raw::{
    self, ClaimPathConfig, ClaimSourceConfig, ConfigError, DefaultAction, FilterConfig,
    NamesConfig, OversizedHeaders, ProviderConfig, RuleConfig,
};
use crate::introspection::{self, ClientAuth, IntrospectionSettings, Secret};
use crate::keys::jwks::{self, KeyPolicy, KeySet};
use crate::keys::remote::{RefreshPolicy, RemoteJwks, Url};
use crate::policy::audience::AudienceSet;
use crate::policy::rules::{
    Access, ClaimRequirement, ClaimTest, HostMatch, NameRequirement, OrgSource, PathMatch,
    Requirements, RoleRequirement, RouteMatch, RouteRule, RouteTable, SetMode,
};
use crate::provider::ProviderId;
use crate::request::edge;
use crate::support::cache::CacheLimits;
use crate::token::alg::{Alg, AlgSet};
use crate::token::extract::TokenSource;
use crate::token::principal::{
    zitadel_project_roles_claim, ClaimPath, ClaimSources, NamesClaim, NamesShape, RoleSource,
};
use crate::token::verify::{media_type, JwtRules};
use serde_json::{Map, Value};
use std::rc::Rc;

pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
pub const DEFAULT_REALM: &str = "tokengate";
/// Smallest `max_key_memory_bytes`: room for one large key and one EC table.
pub const MIN_KEY_MEMORY_BYTES: usize = 256 * 1024;
pub const DEFAULT_DRY_RUN_HEADER: &str = "x-tokengate-dry-run";

/// Where a provider's keys come from.
#[derive(Debug)]
pub enum KeySource {
    Inline(Rc<KeySet>),
    Remote(Box<RemoteJwks>),
    /// No keys: the provider only introspects opaque tokens.
    None,
}

/// One identity provider, ready to verify tokens.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub issuer: Option<String>,
    pub audiences: AudienceSet,
    pub algorithms: AlgSet,
    pub keys: KeySource,
    /// What a fetched key set may contain.
    pub key_policy: KeyPolicy,
    pub clock_skew: u64,
    /// What a JWT of this provider must say beyond time and signature.
    pub jwt_rules: JwtRules,
    pub claims: ClaimSources,
    pub introspection: Option<IntrospectionSettings>,
}

impl Provider {
    /// Whether this provider verifies tokens with this `iss`.
    pub fn accepts_issuer(&self, iss: Option<&str>) -> bool {
        match &self.issuer {
            None => true,
            Some(expected) => iss == Some(expected.as_str()),
        }
    }
}

/// A claim copied to a request header.
#[derive(Debug, Clone)]
pub struct ClaimHeader {
    pub claim: ClaimPath,
    pub header: String,
}

#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    pub claims: Vec<ClaimHeader>,
    pub roles_header: Option<String>,
    pub permissions_header: Option<String>,
    pub scopes_header: Option<String>,
    pub provider_header: Option<String>,
    /// Take the token out of the request (header, cookie or query) before the upstream.
    pub remove_token: bool,
    /// Longest value of a forwarded header (upstreams refuse large headers with errors that
    /// point nowhere near tokengate).
    pub max_header_bytes: usize,
    pub oversized_headers: OversizedHeaders,
}

#[derive(Debug, Clone, Copy)]
pub struct TokenCacheSettings {
    pub limits: CacheLimits,
    pub ttl_seconds: u64,
}

/// The ready-to-run configuration.
#[derive(Debug)]
pub struct Settings {
    pub realm: String,
    pub providers: Vec<Provider>,
    pub sources: Vec<TokenSource>,
    pub routes: RouteTable,
    pub forward: Forwarding,
    pub dry_run: bool,
    pub dry_run_header: String,
    pub max_token_bytes: usize,
    pub token_cache: TokenCacheSettings,
    /// Every header this filter writes; removed from each incoming request first, so a client
    /// can never pose as the filter.
    pub managed_headers: Vec<String>,
    /// Headers removed from each request in every spelling an application reads as theirs
    /// (`x_user_id` for `x-user-id`): the managed headers and, unless kept, the method and
    /// path override headers.
    pub removed_headers: Vec<String>,
    /// Headers whose other spellings are removed, the exact name kept: the organisation
    /// headers rules read and the token source headers.
    pub protected_headers: Vec<String>,
    /// Refuse a path that is not in normal form ([`crate::request::edge::check_path`]).
    pub require_normal_paths: bool,
    /// The top-level claims that claim tests and forwarded claim headers read. A verified
    /// token keeps only these besides its principal, `aud`, `exp` and `nbf` (which are kept
    /// apart): the cache then holds what decisions use, not whole payloads.
    pub used_claims: Vec<String>,
}

impl Settings {
    /// The provider `id` names, if it is one of these settings'.
    pub fn provider(&self, id: ProviderId) -> Option<&Provider> {
        self.providers.get(id.index())
    }

    /// The providers with their ids, in configuration order.
    pub fn providers_by_id(&self) -> impl Iterator<Item = (ProviderId, &Provider)> {
        self.providers
            .iter()
            .enumerate()
            .map(|(n, p)| (ProviderId::nth(n), p))
    }

    /// Drops the claims no rule or forwarded header reads. Builds a new map rather than
    /// `retain`ing: an emptied map would keep its node (hundreds of bytes per cached token).
    pub fn keep_used_claims(&self, claims: &mut Map<String, Value>) {
        *claims = std::mem::take(claims)
            .into_iter()
            .filter(|(name, _)| self.used_claims.iter().any(|used| used == name))
            .collect();
    }
}

/// Looks up a VM environment variable (secrets are passed that way, not in the config).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// No environment (tools and tests that need none).
pub fn no_env(_: &str) -> Option<String> {
    None
}

/// Parses and compiles configuration text without an environment. Warnings (skipped keys,
/// risky choices) are returned for the host to log.
pub fn compile_str(text: &str) -> Result<(Settings, Vec<String>), ConfigError> {
    compile(raw::parse(text)?, &no_env)
}

/// Compiles the plugin configuration as the host delivers it: JSON text (Istio, or Envoy with
/// a `StringValue`), or a serialized `google.protobuf.Struct` (Envoy with a `Struct`).
pub fn compile_bytes(bytes: &[u8], env: Env<'_>) -> Result<(Settings, Vec<String>), ConfigError> {
    let as_struct = || crate::config::pbstruct::decode_struct(bytes).map(raw::from_value);
    match std::str::from_utf8(bytes) {
        Ok(text) => match raw::parse(text) {
            Ok(config) => compile(config, env),
            Err(json_error) => match as_struct() {
                Some(Ok(config)) => compile(config, env),
                _ => Err(json_error),
            },
        },
        Err(_) => match as_struct() {
            Some(config) => compile(config?, env),
            None => Err(ConfigError::Syntax {
                field: "(top level)".into(),
                message: "the configuration is neither JSON text nor a google.protobuf.Struct"
                    .into(),
            }),
        },
    }
}

pub fn compile(config: FilterConfig, env: Env<'_>) -> Result<(Settings, Vec<String>), ConfigError> {
    let mut warnings = Vec::new();
    if config.providers.is_empty() {
        return Err(ConfigError::invalid(
            "providers",
            "at least one provider is needed",
        ));
    }
    let mut providers = Vec::with_capacity(config.providers.len());
    for (name, provider) in &config.providers {
        providers.push(compile_provider(name, provider, env, &mut warnings)?);
    }
    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();

    let sources = match &config.token_sources {
        None => vec![TokenSource::bearer()],
        Some(list) if list.is_empty() => {
            return Err(ConfigError::invalid("token_sources", "must not be empty"))
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| compile_source(&format!("token_sources[{}]", i), s))
            .collect::<Result<_, _>>()?,
    };

    let mut rules = Vec::with_capacity(config.rules.len());
    for (i, rule) in config.rules.iter().enumerate() {
        rules.push(compile_rule(&format!("rules[{}]", i), i, rule, &names)?);
    }
    let default = RouteRule {
        name: "default".into(),
        route: RouteMatch::default(),
        access: match config.default {
            DefaultAction::Deny => Access::Deny,
            DefaultAction::Allow => Access::Anonymous,
            DefaultAction::Authenticated => Access::Token(Requirements::default()),
        },
        providers: Vec::new(),
        dry_run: false,
    };

    let forward = compile_forwarding(&config.forward)?;
    let dry_run_header = match &config.dry_run_header {
        Some(h) => header_name("dry_run_header", h)?,
        None => DEFAULT_DRY_RUN_HEADER.to_owned(),
    };
    let mut managed_headers: Vec<String> = forward
        .claims
        .iter()
        .map(|c| c.header.clone())
        .chain(forward.roles_header.clone())
        .chain(forward.permissions_header.clone())
        .chain(forward.scopes_header.clone())
        .chain(forward.provider_header.clone())
        .chain(std::iter::once(dry_run_header.clone()))
        .collect();
    managed_headers.sort();
    managed_headers.dedup();
    for source in &sources {
        if let TokenSource::Header { name, .. } = source {
            if managed_headers.contains(name) {
                return Err(ConfigError::invalid(
                    "forward",
                    format!("header {:?} is also a token source", name),
                ));
            }
        }
    }

    let mut removed_headers = managed_headers.clone();
    if !config.keep_method_override_headers {
        removed_headers.extend(edge::METHOD_OVERRIDE_HEADERS.iter().map(|h| h.to_string()));
    }
    if !config.keep_path_override_headers {
        removed_headers.extend(edge::PATH_OVERRIDE_HEADERS.iter().map(|h| h.to_string()));
    }
    let mut protected_headers: Vec<String> = rules
        .iter()
        .filter_map(|rule| match &rule.access {
            Access::Token(requirements) => match requirements.roles.as_ref()?.org.as_ref()? {
                OrgSource::Header(name) => Some(name.clone()),
                OrgSource::Fixed(_) => None,
            },
            Access::Anonymous | Access::Deny => None,
        })
        .chain(sources.iter().filter_map(|s| match s {
            TokenSource::Header { name, .. } => Some(name.clone()),
            TokenSource::Cookie(_) | TokenSource::Query(_) => None,
        }))
        .collect();
    protected_headers.sort();
    protected_headers.dedup();

    let max_token_bytes = config.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if max_token_bytes == 0 {
        return Err(ConfigError::invalid("max_token_bytes", "must be positive"));
    }
    let cache = &config.token_cache;
    if cache.max_entries > 0 && (cache.ttl_seconds == 0 || cache.max_bytes == 0) {
        return Err(ConfigError::invalid(
            "token_cache",
            "ttl_seconds and max_bytes must be positive (set max_entries to 0 to disable the cache)",
        ));
    }
    let realm = config
        .realm
        .clone()
        .unwrap_or_else(|| DEFAULT_REALM.to_owned());
    if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            "realm",
            "must not contain quotes, backslashes or control characters",
        ));
    }
    if config.dry_run {
        warnings.push("dry_run is on: no request is refused; decisions are only logged, counted and sent upstream in a header".to_owned());
    }

    let mut used_claims: Vec<String> = rules
        .iter()
        .chain(std::iter::once(&default))
        .filter_map(|rule| match &rule.access {
            Access::Token(requirements) => Some(requirements.claims.iter().map(|c| &c.path)),
            Access::Anonymous | Access::Deny => None,
        })
        .flatten()
        .chain(forward.claims.iter().map(|c| &c.claim))
        .map(|path| path.root().to_owned())
        .collect();
    used_claims.sort();
    used_claims.dedup();

    let routes = RouteTable { rules, default };
    warnings.extend(routes.unsafe_method_gaps());

    Ok((
        Settings {
            realm,
            providers,
            sources,
            routes,
            forward,
            dry_run: config.dry_run,
            dry_run_header,
            max_token_bytes,
            token_cache: TokenCacheSettings {
                limits: CacheLimits {
                    max_entries: cache.max_entries,
                    max_bytes: cache.max_bytes,
                },
                ttl_seconds: cache.ttl_seconds,
            },
            managed_headers,
            removed_headers,
            protected_headers,
            require_normal_paths: config.require_normal_paths,
            used_claims,
        },
        warnings,
    ))
}

fn compile_provider(
    name: &str,
    cfg: &ProviderConfig,
    env: Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<Provider, ConfigError> {
    let field = |f: &str| format!("providers.{}.{}", name, f);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ConfigError::invalid(
            format!("providers.{}", name),
            "a provider name must be letters, digits, - and _ (it names metrics)",
        ));
    }
    if let Some(iss) = &cfg.issuer {
        if iss.is_empty() {
            return Err(ConfigError::invalid(
                field("issuer"),
                "must not be empty; leave it out to accept any issuer",
            ));
        }
    } else {
        warnings.push(format!(
            "provider {:?} has no issuer: tokens with any iss are accepted",
            name
        ));
    }

    let explicit_algs = match &cfg.algorithms {
        None => None,
        Some(list) => {
            if list.is_empty() {
                return Err(ConfigError::invalid(
                    field("algorithms"),
                    "must not be empty",
                ));
            }
            let mut set = AlgSet::default();
            for (i, a) in list.iter().enumerate() {
                let alg = Alg::from_name(a).ok_or_else(|| {
                    ConfigError::invalid(
                        format!("{}[{}]", field("algorithms"), i),
                        format!("{:?} is not a supported algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384, HS512)", a),
                    )
                })?;
                set = set.with(alg);
            }
            Some(set)
        }
    };

    let min_rsa_bits = cfg.min_rsa_bits.unwrap_or(2048);
    let max_keys = cfg.max_keys.unwrap_or(jwks::DEFAULT_MAX_KEYS);
    if max_keys == 0 {
        return Err(ConfigError::invalid(
            field("max_keys"),
            "must be at least 1",
        ));
    }
    let max_memory_bytes = cfg
        .max_key_memory_bytes
        .unwrap_or(jwks::DEFAULT_MAX_MEMORY_BYTES);
    if max_memory_bytes < MIN_KEY_MEMORY_BYTES {
        return Err(ConfigError::invalid(
            field("max_key_memory_bytes"),
            format!(
                "must be at least {} (one RSA-4096 key and one EC table)",
                MIN_KEY_MEMORY_BYTES
            ),
        ));
    }
    let (keys, algorithms, key_policy) = match (&cfg.jwks, &cfg.remote_jwks) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                field("jwks"),
                "give either inline jwks or remote_jwks, not both",
            ));
        }
        (None, None) if cfg.introspection.is_some() => {
            let policy = KeyPolicy {
                allowed: AlgSet::asymmetric(),
                allow_hmac: false,
                min_rsa_bits,
                max_keys,
                max_memory_bytes,
            };
            (
                KeySource::None,
                explicit_algs.unwrap_or_else(AlgSet::asymmetric),
                policy,
            )
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                field("jwks"),
                "the provider needs keys: give an inline JWK Set (jwks) or remote_jwks (or introspection, for opaque tokens only)",
            ));
        }
        (Some(jwks_value), None) => {
            let policy = KeyPolicy {
                // Inline keys are the operator's own: HMAC keys may be among them.
                allowed: explicit_algs.unwrap_or_else(|| {
                    AlgSet::asymmetric()
                        .with(Alg::Hs256)
                        .with(Alg::Hs384)
                        .with(Alg::Hs512)
                }),
                allow_hmac: true,
                min_rsa_bits,
                max_keys,
                max_memory_bytes,
            };
            let parsed = match jwks_value {
                Value::String(text) => jwks::parse_jwks_str(text, &policy),
                other => jwks::parse_jwks(other, &policy),
            };
            let (keys, skipped) =
                parsed.map_err(|e| ConfigError::invalid(field("jwks"), e.to_string()))?;
            for w in skipped {
                warnings.push(format!("provider {:?}: jwks {} (skipped)", name, w));
            }
            // Default allow-list: the asymmetric algorithms, plus HMAC only where an oct key
            // was given.
            let algorithms = explicit_algs.unwrap_or_else(|| {
                let hmac: AlgSet = keys.algs().iter().filter(|a| a.is_symmetric()).collect();
                AlgSet::asymmetric().iter().chain(hmac.iter()).collect()
            });
            if let Some(explicit) = explicit_algs {
                if let Some(alg) = explicit
                    .iter()
                    .find(|a| a.is_symmetric() && !keys.algs().contains(*a))
                {
                    return Err(ConfigError::invalid(
                        field("algorithms"),
                        format!("{} needs an oct key in the provider's inline jwks", alg),
                    ));
                }
            }
            (KeySource::Inline(Rc::new(keys)), algorithms, policy)
        }
        (None, Some(remote)) => {
            let algorithms = explicit_algs.unwrap_or_else(AlgSet::asymmetric);
            if let Some(alg) = algorithms.iter().find(|a| a.is_symmetric()) {
                return Err(ConfigError::invalid(
                    field("algorithms"),
                    format!(
                        "{} needs an oct key, which only an inline jwks may hold",
                        alg
                    ),
                ));
            }
            let policy = KeyPolicy {
                allowed: algorithms,
                allow_hmac: false,
                min_rsa_bits,
                max_keys,
                max_memory_bytes,
            };
            let remote = compile_remote(&field("remote_jwks"), cfg.issuer.as_deref(), remote)?;
            (KeySource::Remote(Box::new(remote)), algorithms, policy)
        }
    };

    let introspection = cfg
        .introspection
        .as_ref()
        .map(|i| compile_introspection(&field("introspection"), i, cfg, env))
        .transpose()?;

    let mut audiences = cfg.audiences.clone();
    if audiences.is_empty() {
        if let Some(z) = &cfg.zitadel {
            audiences.push(z.project_id.clone());
        }
    }

    let source = |f: &str, c: &ClaimSourceConfig, default: NamesShape| {
        names_claim(&field(&format!("claims.{}", f)), c, default)
    };
    let roles = match (&cfg.zitadel, &cfg.claims.roles) {
        (_, Some(c)) => RoleSource::Claim(source("roles", c, NamesShape::Array)?),
        (Some(z), None) => {
            if z.project_id.is_empty() || z.project_id.contains(':') {
                return Err(ConfigError::invalid(
                    field("zitadel.project_id"),
                    "must be the numeric id of a ZITADEL project",
                ));
            }
            if z.accept_flat_roles_claim {
                warnings.push(format!("provider {:?} reads the flat ZITADEL roles claim: roles of any project a client belongs to can pass as this project's", name));
            }
            RoleSource::Zitadel {
                project_claim: zitadel_project_roles_claim(&z.project_id),
                accept_flat_claim: z.accept_flat_roles_claim,
            }
        }
        (None, None) => RoleSource::None,
    };
    let defaults = ClaimSources::default();
    let claims = ClaimSources {
        roles,
        permissions: match &cfg.claims.permissions {
            Some(c) => source("permissions", c, NamesShape::Array)?,
            None => defaults.permissions,
        },
        scopes: cfg
            .claims
            .scopes
            .as_ref()
            .map(|c| source("scopes", c, NamesShape::SpaceSeparated))
            .transpose()?,
    };
    let required_claims = match &cfg.required_claims {
        None => vec!["exp".to_owned()],
        Some(names) => {
            if let Some(i) = names.iter().position(String::is_empty) {
                return Err(ConfigError::invalid(
                    format!("{}[{}]", field("required_claims"), i),
                    "a claim name must not be empty",
                ));
            }
            names.clone()
        }
    };
    if cfg.max_token_lifetime_seconds == Some(0) {
        return Err(ConfigError::invalid(
            field("max_token_lifetime_seconds"),
            "must be positive; leave it out for no limit",
        ));
    }
    let token_types = match &cfg.token_types {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(ConfigError::invalid(
                field("token_types"),
                "must not be empty; leave it out to accept any JWT type",
            ))
        }
        Some(list) => Some(list.iter().map(|t| media_type(t)).collect()),
    };

    Ok(Provider {
        name: name.to_owned(),
        issuer: cfg.issuer.clone(),
        audiences: AudienceSet::new(&audiences),
        algorithms,
        keys,
        key_policy,
        clock_skew: cfg.clock_skew_seconds,
        jwt_rules: JwtRules {
            required_claims,
            max_token_lifetime: cfg.max_token_lifetime_seconds,
            token_types,
        },
        claims,
        introspection,
    })
}

fn names_claim(
    field: &str,
    cfg: &ClaimSourceConfig,
    default: NamesShape,
) -> Result<NamesClaim, ConfigError> {
    Ok(match cfg {
        ClaimSourceConfig::Path(path) => NamesClaim {
            path: claim_path(field, path)?,
            shape: default,
        },
        ClaimSourceConfig::Declared(declared) => NamesClaim {
            path: claim_path(&format!("{}.path", field), &declared.path)?,
            shape: declared.shape.unwrap_or(default),
        },
    })
}

fn compile_introspection(
    field: &str,
    cfg: &raw::IntrospectionConfig,
    provider: &ProviderConfig,
    env: Env<'_>,
) -> Result<IntrospectionSettings, ConfigError> {
    let sub = |f: &str| format!("{}.{}", field, f);
    let from_env = |f: &str, var: &str| -> Result<String, ConfigError> {
        match env(var) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ConfigError::invalid(
                sub(f),
                format!("environment variable {} is not set in the VM (Envoy: vm_config.environment_variables; Istio: vmConfig.env)", var),
            )),
        }
    };
    let either = |f: &str,
                  inline: &Option<String>,
                  var: &Option<String>|
     -> Result<Option<String>, ConfigError> {
        match (inline, var) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                sub(f),
                format!("give {} or {}_env, not both", f, f),
            )),
            (Some(v), None) => Ok(Some(v.clone())),
            (None, Some(var)) => from_env(&format!("{}_env", f), var).map(Some),
            (None, None) => Ok(None),
        }
    };
    let remote = provider.remote_jwks.as_ref();
    let endpoint = cfg
        .endpoint
        .as_deref()
        .map(Url::parse)
        .transpose()
        .map_err(|e| ConfigError::invalid(sub("endpoint"), e))?;
    if endpoint.is_none() && remote.is_none_or(|r| r.uri.is_some()) {
        return Err(ConfigError::invalid(
            sub("endpoint"),
            "give the introspection endpoint, or let discovery find it (remote_jwks without uri)",
        ));
    }
    let cluster = cfg
        .cluster
        .clone()
        .or_else(|| remote.map(|r| r.cluster.clone()))
        .filter(|c| !c.is_empty());
    let Some(cluster) = cluster else {
        return Err(ConfigError::invalid(
            sub("cluster"),
            "give the Envoy cluster that reaches the introspection endpoint",
        ));
    };
    let secret = either("client_secret", &cfg.client_secret, &cfg.client_secret_env)?;
    let key_file = match (&cfg.key_file, &cfg.key_file_env) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                sub("key_file"),
                "give key_file or key_file_env, not both",
            ))
        }
        (Some(Value::String(text)), None) => Some(text.clone()),
        (Some(object), None) => Some(object.to_string()),
        (None, Some(var)) => Some(from_env("key_file_env", var)?),
        (None, None) => None,
    };
    let auth = match (secret, key_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(field, "give a client secret (client_secret_basic) or a key file (private_key_jwt), not both"))
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                field,
                "the introspection client needs credentials: client_id with client_secret(_env), or key_file(_env)",
            ))
        }
        (Some(secret), None) => {
            let client_id = either("client_id", &cfg.client_id, &cfg.client_id_env)?
                .ok_or_else(|| ConfigError::invalid(sub("client_id"), "client_secret_basic needs the client id"))?;
            ClientAuth::Basic { client_id, secret: Secret::new(secret) }
        }
        (None, Some(text)) => {
            let (client_id, key_id, key) =
                introspection::parse_key_file(&text).map_err(|e| ConfigError::invalid(sub("key_file"), format!("the key file {}", e)))?;
            let Some(audience) = provider.issuer.clone() else {
                return Err(ConfigError::invalid(sub("key_file"), "private_key_jwt needs the provider's issuer (the assertion's audience)"));
            };
            let key = key.with_key_id(&key_id);
            ClientAuth::PrivateKeyJwt { client_id, key_id, key: Rc::new(key), audience }
        }
    };
    if cfg.timeout_ms == 0 || cfg.max_bytes < 256 {
        return Err(ConfigError::invalid(
            field,
            "timeout_ms must be positive and max_bytes at least 256",
        ));
    }
    Ok(IntrospectionSettings {
        endpoint,
        cluster,
        authority: cfg
            .authority
            .clone()
            .or_else(|| remote.and_then(|r| r.authority.clone())),
        timeout_ms: cfg.timeout_ms,
        auth,
        cache_ttl_s: cfg.cache_ttl_seconds,
        negative_ttl_s: cfg.negative_cache_ttl_seconds,
        cache_max_entries: cfg.cache_max_entries,
        cache_max_bytes: cfg.cache_max_bytes,
        introspect_jwts: cfg.introspect_jwts,
        max_bytes: cfg.max_bytes,
    })
}

fn compile_remote(
    field: &str,
    issuer: Option<&str>,
    cfg: &raw::RemoteJwksConfig,
) -> Result<RemoteJwks, ConfigError> {
    let sub = |f: &str| format!("{}.{}", field, f);
    if cfg.cluster.is_empty() {
        return Err(ConfigError::invalid(
            sub("cluster"),
            "remote keys need the Envoy cluster that reaches the provider (Istio: outbound|443||<host>)",
        ));
    }
    let jwks_uri = cfg
        .uri
        .as_deref()
        .map(Url::parse)
        .transpose()
        .map_err(|e| ConfigError::invalid(sub("uri"), e))?;
    let discovery = match (&jwks_uri, issuer) {
        (Some(_), _) => None,
        (None, Some(iss)) => {
            let base = Url::parse(iss).map_err(|e| {
                ConfigError::invalid(sub("uri"), format!("without a uri the keys are found by discovery from the issuer, but the issuer {}", e))
            })?;
            let path = format!(
                "{}/.well-known/openid-configuration",
                base.path.trim_end_matches('/')
            );
            Some(Url {
                https: base.https,
                authority: base.authority,
                path,
            })
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                sub("uri"),
                "give the JWKS uri, or an issuer to find it by discovery",
            ));
        }
    };
    if let Some(a) = &cfg.authority {
        if a.is_empty() || a.contains(['/', ' ', '@']) {
            return Err(ConfigError::invalid(
                sub("authority"),
                format!("{:?} is not a host[:port]", a),
            ));
        }
    }
    let mut allowed_hosts = Vec::with_capacity(cfg.allowed_hosts.len());
    for (i, host) in cfg.allowed_hosts.iter().enumerate() {
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        {
            return Err(ConfigError::invalid(
                format!("{}[{}]", sub("allowed_hosts"), i),
                format!("{:?} is not a host name (no scheme, port or path)", host),
            ));
        }
        allowed_hosts.push(host.to_ascii_lowercase());
    }
    let positive = |f: &str, v: u64| {
        if v == 0 {
            Err(ConfigError::invalid(sub(f), "must be positive"))
        } else {
            Ok(v)
        }
    };
    positive("timeout_ms", cfg.timeout_ms)?;
    positive("refresh_seconds", cfg.refresh_seconds)?;
    positive("min_refresh_seconds", cfg.min_refresh_seconds)?;
    positive(
        "unknown_kid_refetch_seconds",
        cfg.unknown_kid_refetch_seconds,
    )?;
    positive("max_backoff_seconds", cfg.max_backoff_seconds)?;
    if cfg.min_refresh_seconds > cfg.max_refresh_seconds {
        return Err(ConfigError::invalid(
            sub("min_refresh_seconds"),
            "must not exceed max_refresh_seconds",
        ));
    }
    if cfg.max_bytes < 1024 {
        return Err(ConfigError::invalid(
            sub("max_bytes"),
            "must be at least 1024",
        ));
    }
    Ok(RemoteJwks {
        jwks_uri,
        discovery,
        cluster: cfg.cluster.clone(),
        authority: cfg.authority.clone(),
        timeout_ms: cfg.timeout_ms,
        refresh: RefreshPolicy {
            default_ms: cfg.refresh_seconds.saturating_mul(1000),
            min_ms: cfg.min_refresh_seconds.saturating_mul(1000),
            max_ms: cfg.max_refresh_seconds.saturating_mul(1000),
            unknown_kid_ms: cfg.unknown_kid_refetch_seconds.saturating_mul(1000),
            max_stale_ms: cfg.max_stale_seconds.saturating_mul(1000),
            max_backoff_ms: cfg.max_backoff_seconds.saturating_mul(1000),
            // Discovery and the key fetch, with room to spare.
            lease_ms: cfg.timeout_ms.saturating_mul(2).saturating_add(2000),
        },
        max_bytes: cfg.max_bytes,
        startup_wait_ms: cfg.startup_wait_ms,
        allowed_hosts,
    })
}

fn claim_path(field: &str, cfg: &ClaimPathConfig) -> Result<ClaimPath, ConfigError> {
    let path = match cfg {
        ClaimPathConfig::Dotted(s) => ClaimPath::dotted(s),
        ClaimPathConfig::Keys(keys) => ClaimPath::from_segments(keys.clone()),
    };
    path.ok_or_else(|| ConfigError::invalid(field, "a claim path needs non-empty keys"))
}

fn compile_source(field: &str, cfg: &raw::TokenSourceConfig) -> Result<TokenSource, ConfigError> {
    let given = [
        cfg.header.is_some(),
        cfg.cookie.is_some(),
        cfg.query.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ConfigError::invalid(
            field,
            "give exactly one of header, cookie, query",
        ));
    }
    if cfg.prefix.is_some() && cfg.header.is_none() {
        return Err(ConfigError::invalid(
            format!("{}.prefix", field),
            "only applies to a header",
        ));
    }
    if let Some(h) = &cfg.header {
        let name = header_name(&format!("{}.header", field), h)?;
        if let Some(p) = &cfg.prefix {
            if p.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{}.prefix", field),
                    "must not be blank",
                ));
            }
        }
        return Ok(TokenSource::Header {
            name,
            prefix: cfg.prefix.clone(),
        });
    }
    let nonempty = |f: &str, v: &String| {
        if v.is_empty() || v.contains([';', '=', ' ', '&']) {
            Err(ConfigError::invalid(
                format!("{}.{}", field, f),
                "must be a plain, non-empty name",
            ))
        } else {
            Ok(v.clone())
        }
    };
    if let Some(c) = &cfg.cookie {
        return Ok(TokenSource::Cookie(nonempty("cookie", c)?));
    }
    match &cfg.query {
        Some(q) => Ok(TokenSource::Query(nonempty("query", q)?)),
        None => Err(ConfigError::invalid(
            field,
            "give exactly one of header, cookie, query",
        )),
    }
}

/// A header name this filter reads or writes: lower-cased, HTTP token characters, and not one
/// of the headers that would break the request if written.
fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let lower = name.to_ascii_lowercase();
    let valid = !lower.is_empty()
        && lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return Err(ConfigError::invalid(
            field,
            format!("{:?} is not a valid header name", name),
        ));
    }
    Ok(lower)
}

fn writable_header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let lower = header_name(field, name)?;
    const RESERVED: [&str; 8] = [
        "authorization",
        "cookie",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "te",
    ];
    if RESERVED.contains(&lower.as_str()) {
        return Err(ConfigError::invalid(
            field,
            format!("{:?} cannot be used to forward claims", name),
        ));
    }
    Ok(lower)
}

fn compile_forwarding(cfg: &raw::ForwardConfig) -> Result<Forwarding, ConfigError> {
    if cfg.max_header_bytes < 64 {
        return Err(ConfigError::invalid(
            "forward.max_header_bytes",
            "must be at least 64",
        ));
    }
    let mut claims = Vec::with_capacity(cfg.claims.len());
    for (i, c) in cfg.claims.iter().enumerate() {
        let field = format!("forward.claims[{}]", i);
        claims.push(ClaimHeader {
            claim: claim_path(&format!("{}.claim", field), &c.claim)?,
            header: writable_header_name(&format!("{}.header", field), &c.header)?,
        });
    }
    let opt = |f: &str, h: &Option<String>| {
        h.as_ref()
            .map(|h| writable_header_name(&format!("forward.{}", f), h))
            .transpose()
    };
    Ok(Forwarding {
        claims,
        roles_header: opt("roles_header", &cfg.roles_header)?,
        permissions_header: opt("permissions_header", &cfg.permissions_header)?,
        scopes_header: opt("scopes_header", &cfg.scopes_header)?,
        provider_header: opt("provider_header", &cfg.provider_header)?,
        remove_token: cfg.remove_token,
        max_header_bytes: cfg.max_header_bytes,
        oversized_headers: cfg.oversized_headers,
    })
}

fn compile_rule(
    field: &str,
    index: usize,
    cfg: &RuleConfig,
    providers: &[&str],
) -> Result<RouteRule, ConfigError> {
    let route = compile_match(&format!("{}.match", field), &cfg.route)?;
    let mut provider_ids = Vec::new();
    for (i, name) in cfg.providers.iter().enumerate() {
        let id = providers.iter().position(|p| p == name).ok_or_else(|| {
            ConfigError::invalid(
                format!("{}.providers[{}]", field, i),
                format!(
                    "no provider is named {:?} (known: {})",
                    name,
                    providers.join(", ")
                ),
            )
        })?;
        provider_ids.push(ProviderId::nth(id));
    }
    let has_requirements = cfg.audiences.is_some()
        || cfg.roles.is_some()
        || cfg.permissions.is_some()
        || cfg.scopes.is_some()
        || !cfg.claims.is_empty();
    let access = if cfg.deny {
        if cfg.allow_anonymous || has_requirements || !cfg.providers.is_empty() {
            return Err(ConfigError::invalid(
                field,
                "a deny rule takes no other access settings",
            ));
        }
        Access::Deny
    } else if cfg.allow_anonymous {
        if has_requirements {
            return Err(ConfigError::invalid(field, "allow_anonymous cannot be combined with audiences, roles, permissions, scopes or claims"));
        }
        Access::Anonymous
    } else {
        Access::Token(compile_requirements(field, cfg)?)
    };
    Ok(RouteRule {
        name: cfg
            .name
            .clone()
            .unwrap_or_else(|| format!("rules[{}]", index)),
        route,
        access,
        providers: provider_ids,
        dry_run: cfg.dry_run,
    })
}

fn compile_match(field: &str, cfg: &raw::MatchConfig) -> Result<RouteMatch, ConfigError> {
    let path = match &cfg.path {
        None => None,
        Some(p) => {
            let f = format!("{}.path", field);
            Some(match (&p.exact, &p.prefix, &p.regex) {
                (Some(e), None, None) => PathMatch::Exact(e.clone()),
                (None, Some(pre), None) => PathMatch::Prefix(pre.clone()),
                (None, None, Some(re)) => {
                    let anchored = format!("^(?:{})$", re);
                    PathMatch::Regex(regex_lite::Regex::new(&anchored).map_err(|e| {
                        ConfigError::invalid(
                            format!("{}.regex", f),
                            format!("is not a valid regex: {}", e),
                        )
                    })?)
                }
                _ => {
                    return Err(ConfigError::invalid(
                        f,
                        "give exactly one of exact, prefix, regex",
                    ))
                }
            })
        }
    };
    let mut methods = Vec::with_capacity(cfg.methods.len());
    for (i, m) in cfg.methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ConfigError::invalid(
                format!("{}.methods[{}]", field, i),
                format!("{:?} is not an HTTP method", m),
            ));
        }
        methods.push(m.to_ascii_uppercase());
    }
    let mut hosts = Vec::with_capacity(cfg.hosts.len());
    for (i, h) in cfg.hosts.iter().enumerate() {
        let stars = h.matches('*').count();
        let valid = !h.is_empty() && (stars == 0 || (stars == 1 && h.starts_with("*.")));
        if !valid {
            return Err(ConfigError::invalid(
                format!("{}.hosts[{}]", field, i),
                format!("{:?} is not a host name or *.suffix pattern", h),
            ));
        }
        hosts.push(HostMatch::parse(h));
    }
    Ok(RouteMatch {
        path,
        methods,
        hosts,
    })
}

fn names(
    field: &str,
    any_of: &Option<Vec<String>>,
    all_of: &Option<Vec<String>>,
) -> Result<NameRequirement, ConfigError> {
    let (mode, list) = match (any_of, all_of) {
        (Some(l), None) => (SetMode::AnyOf, l),
        (None, Some(l)) => (SetMode::AllOf, l),
        _ => {
            return Err(ConfigError::invalid(
                field,
                "give exactly one of any_of, all_of",
            ))
        }
    };
    if list.is_empty() || list.iter().any(String::is_empty) {
        return Err(ConfigError::invalid(
            field,
            "needs at least one non-empty name",
        ));
    }
    Ok(NameRequirement {
        mode,
        names: list.clone(),
    })
}

fn name_list(
    field: &str,
    cfg: &Option<NamesConfig>,
) -> Result<Option<NameRequirement>, ConfigError> {
    cfg.as_ref()
        .map(|n| names(field, &n.any_of, &n.all_of))
        .transpose()
}

fn compile_requirements(field: &str, cfg: &RuleConfig) -> Result<Requirements, ConfigError> {
    let audiences = match &cfg.audiences {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(ConfigError::invalid(
                format!("{}.audiences", field),
                "must not be empty",
            ))
        }
        Some(list) => Some(AudienceSet::new(list)),
    };
    let roles = match &cfg.roles {
        None => None,
        Some(r) => {
            let f = format!("{}.roles", field);
            let org = match &r.org {
                None => None,
                Some(o) => Some(match (&o.id, &o.header) {
                    (Some(id), None) if !id.is_empty() => OrgSource::Fixed(id.clone()),
                    (None, Some(h)) => {
                        OrgSource::Header(header_name(&format!("{}.org.header", f), h)?)
                    }
                    _ => {
                        return Err(ConfigError::invalid(
                            format!("{}.org", f),
                            "give exactly one of id, header",
                        ))
                    }
                }),
            };
            Some(RoleRequirement {
                roles: names(&f, &r.any_of, &r.all_of)?,
                org,
            })
        }
    };
    let mut claims = Vec::with_capacity(cfg.claims.len());
    for (i, c) in cfg.claims.iter().enumerate() {
        let f = format!("{}.claims[{}]", field, i);
        let test = match (&c.equals, &c.contains) {
            (Some(v), None) => ClaimTest::Equals(v.clone()),
            (None, Some(v)) => ClaimTest::Contains(v.clone()),
            _ => {
                return Err(ConfigError::invalid(
                    f,
                    "give exactly one of equals, contains",
                ))
            }
        };
        claims.push(ClaimRequirement {
            path: claim_path(&format!("{}.claim", f), &c.claim)?,
            test,
        });
    }
    Ok(Requirements {
        audiences,
        roles,
        permissions: name_list(&format!("{}.permissions", field), &cfg.permissions)?,
        scopes: name_list(&format!("{}.scopes", field), &cfg.scopes)?,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_claims_are_those_of_claim_tests_and_forwarded_headers() {
        let (settings, _) = compile_str(
            r#"{"providers": {"p": {"issuer": "https://i", "audiences": ["a"], "jwks": {"keys": [{"kty": "oct", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVm"}]}}},
                "rules": [{"match": {"path": {"prefix": "/a"}}, "claims": [{"claim": "plan.tier", "equals": "gold"}]},
                          {"match": {"path": {"prefix": "/b"}}, "allow_anonymous": true}],
                "forward": {"claims": [{"claim": "sub", "header": "x-sub"}, {"claim": ["https://e/x"], "header": "x-e"}]},
                "default": "deny"}"#,
        )
        .unwrap();
        assert_eq!(settings.used_claims, ["https://e/x", "plan", "sub"]);
        let mut claims =
            serde_json::json!({"sub": "s", "plan": {"tier": "g"}, "email": "e", "https://e/x": 1})
                .as_object()
                .cloned()
                .unwrap();
        settings.keep_used_claims(&mut claims);
        assert_eq!(claims.len(), 3);
        assert!(!claims.contains_key("email"));
    }
}
