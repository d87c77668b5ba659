//! A deliberately raw HTTP/1.1 client: tests must be able to send what real clients should
//! not (two Authorization headers, tabs, non-ASCII bytes), so requests are written byte for
//! byte. HTTP/2 requests ([`request_h2`]) go through `curl --http2-prior-knowledge` (h2c).

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({}): {}", e, self.body))
    }

    /// For echo-upstream responses: the value of a header the upstream received.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        let json = self.json();
        json["headers"].as_array()?.iter().find_map(|pair| {
            let pair = pair.as_array()?;
            if pair.first()?.as_str()?.eq_ignore_ascii_case(name) {
                Some(pair.get(1)?.as_str()?.to_owned())
            } else {
                None
            }
        })
    }

    /// Whether the upstream (the echo upstream or the WSGI upstream) answered the request.
    pub fn reached_upstream(&self) -> bool {
        self.status == 200 && self.from_upstream()
    }

    /// Whether the response came from a test upstream (echo or WSGI), whatever its status.
    pub fn from_upstream(&self) -> bool {
        self.header("x-echo-upstream").is_some()
            || self.header(crate::wsgi::MARKER_HEADER).is_some()
    }
}

/// Sends raw request bytes to 127.0.0.1:port and reads one response. The body is read by
/// its length (or chunks), not to EOF: Envoy keeps a connection open for a while after a
/// local reply (delayed close), and waiting for EOF would stall every refusal by a second.
pub fn send_raw(port: u16, request: &[u8]) -> Response {
    try_send_raw(port, request).unwrap_or_else(|e| panic!("request to 127.0.0.1:{}: {}", port, e))
}

/// As [`send_raw`], with I/O errors returned instead of panicking.
pub fn try_send_raw(port: u16, request: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(total) = complete_length(&raw) {
            raw.truncate(total);
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // Envoy may reset a connection it refused; keep what arrived.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    if raw.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no response",
        ));
    }
    Ok(parse_response(&raw))
}

/// The full length of the response in `raw` once it has all arrived.
fn complete_length(raw: &[u8]) -> Option<usize> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    for line in head.split("\r\n") {
        if let Some(len) = line.strip_prefix("content-length:") {
            let len: usize = len.trim().parse().ok()?;
            return (raw.len() >= head_end + len).then_some(head_end + len);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            let body = &raw[head_end..];
            return body
                .windows(5)
                .position(|w| w == b"0\r\n\r\n")
                .map(|p| head_end + p + 5);
        }
    }
    // No length: 1xx/204/304 have no body; anything else runs to EOF.
    None
}

/// A GET with the given extra header lines (each `name: value`, sent as given).
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    request(port, "GET", path, headers)
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let req = request_bytes(method, path, headers);
    send_raw(port, &req)
}

/// The bytes of a request with `connection: close` and a default `host`.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("{} {} HTTP/1.1\r\n", method, path).into_bytes();
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.extend_from_slice(b"host: test.local\r\n");
    }
    for (name, value) in headers {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(value.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"connection: close\r\n\r\n");
    req
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no header end in response: {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {:?}", status_line));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// How long one HTTP/2 request may take in all (`curl --max-time`).
pub const H2_MAX_TIME: Duration = Duration::from_secs(10);

/// Why an HTTP/2 request got no response (curl's exit status and message), e.g. Envoy reset
/// the stream (curl exit 92) instead of answering.
#[derive(Debug, Clone)]
pub struct H2Failure {
    pub exit: Option<i32>,
    pub stderr: String,
    /// Whatever curl wrote to stdout before failing.
    pub stdout: String,
}

impl std::fmt::Display for H2Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "curl exit {:?}: {}",
            self.exit,
            self.stderr.trim().replace('\n', " | ")
        )
    }
}

/// An HTTP/2 request over cleartext with prior knowledge (h2c) to 127.0.0.1:port, sent by
/// curl: the method exactly as given (`post` stays lower case), the headers in order
/// (repeated names are all sent; curl lower-cases names; an empty value is sent empty), a
/// `host` of `test.local` unless one is given (curl sends it as `:authority`), no
/// `user-agent` or `accept` unless given. The path is sent as is (`--path-as-is`, no
/// globbing); curl refuses characters a URL cannot hold (spaces, control bytes). Panics when
/// no response arrives (see [`try_request_h2`]).
pub fn request_h2(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    try_request_h2(port, method, path, headers)
        .unwrap_or_else(|e| panic!("HTTP/2 {} {} to 127.0.0.1:{}: {}", method, path, port, e))
}

/// As [`request_h2`], with the failure (e.g. a stream reset) returned.
pub fn try_request_h2(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, H2Failure> {
    curl_h2(port, method, path, headers, None)
}

/// As [`request_h2`], with a request body (curl adds `content-length`).
pub fn request_h2_with_body(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    curl_h2(port, method, path, headers, Some(body))
        .unwrap_or_else(|e| panic!("HTTP/2 {} {} to 127.0.0.1:{}: {}", method, path, port, e))
}

fn curl_h2(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, H2Failure> {
    let fail = |exit: Option<i32>, stderr: String| H2Failure {
        exit,
        stderr,
        stdout: String::new(),
    };
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["--http2-prior-knowledge", "-sS", "-i", "--path-as-is", "-g"])
        .args(["--max-time", &H2_MAX_TIME.as_secs().to_string()])
        .args(["--connect-timeout", "5"])
        .args(["-X", method]);
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !given("host") {
        cmd.args(["-H", "host: test.local"]);
    }
    for (name, default) in [("user-agent", "User-Agent:"), ("accept", "Accept:")] {
        if !given(name) {
            // An empty `Name:` tells curl not to send its own.
            cmd.args(["-H", default]);
        }
    }
    for (name, value) in headers {
        if value.is_empty() {
            // `Name;` is curl's spelling of a header with an empty value.
            cmd.arg("-H").arg(format!("{};", name));
        } else {
            cmd.arg("-H").arg(format!("{}: {}", name, value));
        }
    }
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    cmd.arg(format!("http://127.0.0.1:{}{}", port, path))
        .stdin(if body.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(None, format!("cannot run curl: {}", e)))?;
    if let (Some(body), Some(mut stdin)) = (body, child.stdin.take()) {
        stdin
            .write_all(body)
            .map_err(|e| fail(None, format!("writing the body to curl: {}", e)))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(None, format!("waiting for curl: {}", e)))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || !out.stdout.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(H2Failure {
            exit: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            stdout,
        });
    }
    Ok(parse_response(&out.stdout))
}
