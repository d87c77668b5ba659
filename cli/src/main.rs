//! `tokengate`: the filter's configuration check and decisions, on the command line.
//!
//!   tokengate validate FILE
//!       checks a tokengate configuration (JSON) exactly as the filter does when Envoy loads it
//!
//!   tokengate explain --config FILE (--token TOKEN | --token-file FILE)
//!                     [--method GET] [--path /] [--host HOST] [--header NAME=VALUE]...
//!                     [--jwks PROVIDER=FILE]... [--at UNIX_SECONDS]
//!       prints what the filter would decide for that request, and why; remote keys are
//!       fetched from their URL (or discovery) unless --jwks gives them
//!
//! Exit status: 0 valid / allowed, 1 invalid / refused, 2 usage or I/O errors.

use std::process::ExitCode;
use std::rc::Rc;
use tokengate_core::config::settings::{self, KeySource, Provider, Settings};
use tokengate_core::engine::explain::explain;
use tokengate_core::engine::gate::{Gate, KeyView, Request};
use tokengate_core::keys::jwks::KeySet;
use tokengate_core::keys::remote;
use tokengate_core::time::UnixMillis;

const USAGE: &str = "usage: tokengate validate FILE
       tokengate explain --config FILE (--token TOKEN | --token-file FILE) [--method GET] [--path /]
                         [--host HOST] [--header NAME=VALUE]... [--jwks PROVIDER=FILE]... [--at UNIX_SECONDS]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("validate") if args.len() == 2 => validate(&args[1]),
        Some("explain") => explain_cmd(&args[1..]),
        _ => Err(Failure::Usage(USAGE.to_owned())),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure::Usage(e)) => {
            eprintln!("tokengate: {}", e);
            ExitCode::from(2)
        }
    }
}

enum Failure {
    Usage(String),
}

fn read(path: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{}: {}", path, e)))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn compile(path: &str) -> Result<Result<(Settings, Vec<String>), String>, Failure> {
    let text = read(path)?;
    Ok(settings::compile_bytes(text.as_bytes(), &env).map_err(|e| e.to_string()))
}

fn validate(path: &str) -> Result<bool, Failure> {
    match compile(path)? {
        Ok((settings, warnings)) => {
            for w in &warnings {
                println!("warning: {}", w);
            }
            println!(
                "{}: valid ({} provider(s), {} rule(s))",
                path,
                settings.providers.len(),
                settings.routes.rules.len()
            );
            Ok(true)
        }
        Err(e) => {
            println!("{}: invalid configuration: {}", path, e);
            Ok(false)
        }
    }
}

struct ExplainArgs {
    config: String,
    token: Option<String>,
    method: String,
    path: String,
    host: String,
    headers: Vec<(String, String)>,
    jwks: Vec<(String, String)>,
    at: Option<u64>,
}

fn parse_args(args: &[String]) -> Result<ExplainArgs, Failure> {
    let mut out = ExplainArgs {
        config: String::new(),
        token: None,
        method: "GET".into(),
        path: "/".into(),
        host: "localhost".into(),
        headers: Vec::new(),
        jwks: Vec::new(),
        at: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| Failure::Usage(format!("{} needs a value\n{}", flag, USAGE)))
        };
        match flag.as_str() {
            "--config" => out.config = value()?,
            "--token" => out.token = Some(value()?),
            "--token-file" => out.token = Some(read(&value()?)?.trim().to_owned()),
            "--method" => out.method = value()?.to_ascii_uppercase(),
            "--path" => out.path = value()?,
            "--host" => out.host = value()?,
            "--header" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| Failure::Usage("--header takes NAME=VALUE".into()))?;
                out.headers.push((k.to_ascii_lowercase(), val.to_owned()));
            }
            "--jwks" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| Failure::Usage("--jwks takes PROVIDER=FILE".into()))?;
                out.jwks.push((k.to_owned(), val.to_owned()));
            }
            "--at" => {
                out.at = Some(
                    value()?
                        .parse()
                        .map_err(|_| Failure::Usage("--at takes Unix seconds".into()))?,
                )
            }
            other => {
                return Err(Failure::Usage(format!(
                    "unknown option {}\n{}",
                    other, USAGE
                )))
            }
        }
    }
    if out.config.is_empty() {
        return Err(Failure::Usage(format!("--config is needed\n{}", USAGE)));
    }
    Ok(out)
}

/// Keys for a remote provider: `--jwks PROVIDER=FILE`, else fetched from its URL (following
/// discovery when it has no uri).
fn remote_keys(p: &Provider, args: &ExplainArgs) -> Result<KeySet, String> {
    let text = match args.jwks.iter().find(|(name, _)| *name == p.name) {
        Some((_, file)) => std::fs::read_to_string(file).map_err(|e| format!("{}: {}", file, e))?,
        None => {
            let KeySource::Remote(remote) = &p.keys else {
                return Err("not a remote provider".into());
            };
            let url = match &remote.jwks_uri {
                Some(u) => url_text(p.issuer.as_deref(), u),
                None => {
                    let issuer = p.issuer.clone().unwrap_or_default();
                    let doc = get(&format!(
                        "{}/.well-known/openid-configuration",
                        issuer.trim_end_matches('/')
                    ))?;
                    let doc: serde_json::Value =
                        serde_json::from_str(&doc).map_err(|e| format!("discovery: {}", e))?;
                    doc["jwks_uri"]
                        .as_str()
                        .ok_or("discovery has no jwks_uri")?
                        .to_owned()
                }
            };
            get(&url)?
        }
    };
    remote::parse_jwks_body(text.as_bytes(), &p.key_policy, None)
        .map(|parsed| parsed.keys)
        .map_err(|e| e.to_string())
}

/// The URL to fetch a configured `uri` from (scheme from the issuer, https by default).
fn url_text(issuer: Option<&str>, url: &remote::Url) -> String {
    let scheme = if issuer.is_some_and(|i| i.starts_with("http://")) {
        "http"
    } else {
        "https"
    };
    format!("{}://{}{}", scheme, url.authority, url.path)
}

fn get(url: &str) -> Result<String, String> {
    ureq::get(url)
        .timeout(std::time::Duration::from_secs(10))
        .call()
        .map_err(|e| format!("GET {}: {}", url, e))?
        .into_string()
        .map_err(|e| format!("GET {}: {}", url, e))
}

fn explain_cmd(args: &[String]) -> Result<bool, Failure> {
    let args = parse_args(args)?;
    let (settings, _) = match compile(&args.config)? {
        Ok(s) => s,
        Err(e) => {
            println!("{}: invalid configuration: {}", args.config, e);
            return Ok(false);
        }
    };
    let mut loaded = Vec::new();
    for (id, p) in settings.providers_by_id() {
        if !matches!(p.keys, KeySource::Remote(_)) {
            continue;
        }
        match remote_keys(p, &args) {
            Ok(keys) => loaded.push((id, keys)),
            Err(e) => println!("[info] provider {}: no keys: {}", p.name, e),
        }
    }
    let mut gate = Gate::new(settings);
    for (index, keys) in loaded {
        gate.set_key_view(
            index,
            KeyView {
                keys: Some(Rc::new(keys)),
                version: 1,
                usable_until: UnixMillis::MAX,
                ..KeyView::default()
            },
        );
    }

    let mut headers: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), args.method.clone().into_bytes()),
        (":path".into(), args.path.clone().into_bytes()),
        (":authority".into(), args.host.clone().into_bytes()),
    ];
    if let Some(token) = &args.token {
        headers.push((
            "authorization".into(),
            format!("Bearer {}", token).into_bytes(),
        ));
    }
    headers.extend(
        args.headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
    );
    let now_ms = match args.at {
        Some(s) => s.saturating_mul(1000),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    let headers = tokengate_core::request::headers::HeaderMap::from_pairs(headers);
    let explanation = explain(&mut gate, &Request::new(&headers), UnixMillis(now_ms));
    for s in &explanation.steps {
        let mark = match s.passed {
            Some(true) => "[ok]  ",
            Some(false) => "[FAIL]",
            None => "[info]",
        };
        println!("{} {:<13} {}", mark, s.check, s.detail);
    }
    if let Some(claims) = &explanation.claims {
        println!("claims used:");
        println!(
            "{}",
            serde_json::to_string_pretty(claims).unwrap_or_default()
        );
    }
    Ok(explanation
        .decision
        .is_some_and(|d| d.outcome == tokengate_core::policy::decision::Outcome::Allowed))
}
