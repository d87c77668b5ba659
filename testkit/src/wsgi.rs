//! A stock WSGI application upstream (`wsgi_upstream.py`, Python's `wsgiref`): it answers
//! every request with 200 and JSON describing what a WSGI/CGI application sees (the environ:
//! `REQUEST_METHOD`, `PATH_INFO`, `HTTP_*`, ...) next to the raw request line and header
//! lines, so tests can tell what an application acts on, not only what was forwarded.
//!
//! What `wsgiref` (Python 3.11) makes of headers, as its `get_environ` does and the tests in
//! `testkit/tests/wsgi_upstream.rs` observe:
//! - a name is upper-cased, `-` becomes `_` and `HTTP_` is prefixed: `x_user_id`,
//!   `x-user-id` and `X-User-Id` are all `HTTP_X_USER_ID`;
//! - a name seen again (a repeated header, or another spelling of it) is appended after a
//!   comma in arrival order: `x-org: a` then `x-org: b` is `HTTP_X_ORG=a,b`; nothing is
//!   dropped;
//! - `Content-Type`/`Content-Length` become `CONTENT_TYPE`/`CONTENT_LENGTH`; a header whose
//!   mapped name is already a CGI variable (`path-info`, `request-method`) is ignored;
//! - `PATH_INFO` is the percent-decoded path (latin-1), `QUERY_STRING` the raw query.
//!
//! Responses carry `x-wsgi-upstream: 1` ([`Response::reached_upstream`] knows it).

use crate::http::Response;
use crate::process::spawn_tied;
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::channel;
use std::time::Duration;

/// How long a WSGI upstream lives at most (it also exits with the test process).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(900);

/// The header every WSGI upstream response carries.
pub const MARKER_HEADER: &str = "x-wsgi-upstream";

/// The Python script that is the WSGI application.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/wsgi_upstream.py")
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A running `wsgi_upstream.py` on a loopback port, killed on drop (and, through the
/// launcher, when the test process exits; it also exits when its stdin closes or after its
/// lifetime).
pub struct WsgiUpstream {
    child: Child,
    port: u16,
    hits_file: PathBuf,
    // Held open: the script exits when this end closes.
    _stdin: Option<ChildStdin>,
}

impl WsgiUpstream {
    /// Starts the WSGI upstream on a free loopback port; panics when it does not come up.
    pub fn start() -> WsgiUpstream {
        WsgiUpstream::start_for(DEFAULT_LIFETIME)
    }

    /// Starts the WSGI upstream; it exits by itself after `lifetime`.
    pub fn start_for(lifetime: Duration) -> WsgiUpstream {
        WsgiUpstream::try_start(lifetime)
            .unwrap_or_else(|e| panic!("cannot start the WSGI upstream: {}", e))
    }

    /// As [`WsgiUpstream::start_for`], with the failure returned.
    pub fn try_start(lifetime: Duration) -> std::io::Result<WsgiUpstream> {
        let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
        let dir = crate::repo_root().join("target/e2e");
        std::fs::create_dir_all(&dir)?;
        let hits_file = dir.join(format!("wsgi-{}-{}.hits", std::process::id(), n));
        std::fs::write(&hits_file, b"")?;
        let mut cmd = Command::new("python3");
        cmd.arg("-u")
            .arg(script())
            .arg("0")
            .arg(lifetime.as_secs_f64().max(1.0).to_string())
            .arg(&hits_file)
            // Nothing of the test process's environment reaches the application.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = spawn_tied(cmd)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut upstream = WsgiUpstream {
            child,
            port: 0,
            hits_file,
            _stdin: stdin,
        };
        let stdout = stdout.ok_or_else(|| std::io::Error::other("no stdout"))?;
        // The first line is the port; read it on a thread so that a stuck start times out.
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(read) => read?,
            Err(_) => return Err(std::io::Error::other("no port within 10 s")),
        };
        upstream.port = line.trim().parse().map_err(|_| {
            std::io::Error::other(format!("expected a port on stdout, got {:?}", line))
        })?;
        Ok(upstream)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests the application has answered (counted before each answer is sent).
    pub fn hits(&self) -> u64 {
        std::fs::read_to_string(&self.hits_file)
            .map(|s| s.lines().count() as u64)
            .unwrap_or(0)
    }

    /// Sends a GET straight to the application (HTTP/1.1, no Envoy).
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        crate::http::get(self.port, path, headers)
    }
}

impl Drop for WsgiUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.hits_file);
    }
}

/// The WSGI environ the application saw (its text variables), from a WSGI upstream response.
/// Panics when the response did not come from the WSGI upstream.
pub fn environ(r: &Response) -> Map<String, Value> {
    assert!(
        r.header(MARKER_HEADER).is_some(),
        "not a WSGI upstream response: {} {:?} {}",
        r.status,
        r.headers,
        r.body
    );
    match r.json().get("environ") {
        Some(Value::Object(map)) => map.clone(),
        _ => panic!("WSGI upstream response without an environ: {}", r.body),
    }
}

/// One variable of the WSGI environ (`HTTP_X_USER_ID`, `PATH_INFO`, ...), if set.
pub fn var(r: &Response, name: &str) -> Option<String> {
    environ(r)
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The header lines the application received, in order, names as sent.
pub fn raw_headers(r: &Response) -> Vec<(String, String)> {
    let json = r.json();
    json["headers"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|p| {
                    Some((
                        p.get(0)?.as_str()?.to_owned(),
                        p.get(1)?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Response {
    /// For WSGI upstream responses: the WSGI environ the application saw ([`environ`]).
    pub fn wsgi_env(&self) -> Map<String, Value> {
        environ(self)
    }

    /// For WSGI upstream responses: one WSGI environ variable ([`var`]).
    pub fn wsgi_var(&self, name: &str) -> Option<String> {
        var(self, name)
    }
}
