//! A deliberately raw HTTP/1.1 client: tests must be able to send what real clients should
//! not (two Authorization headers, tabs, non-ASCII bytes), so requests are written byte for
//! byte.

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

    /// For echo-upstream responses: whether the upstream saw the request at all.
    pub fn reached_upstream(&self) -> bool {
        self.status == 200 && self.header("x-echo-upstream").is_some()
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
