//! HTTP callouts on the host: sending one, and reading its answer once for the core to
//! interpret.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use std::time::Duration;
use tokengate_core::keys::remote::Answer;

/// Sends a callout to `cluster`: its token, or the host's refusal in words (for a key fetch
/// or an introspection the core then counts as not sent).
pub fn dispatch(
    cluster: &str,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
    timeout_ms: u64,
) -> Result<u32, String> {
    hostcalls::dispatch_http_call(
        cluster,
        headers,
        body,
        vec![],
        Duration::from_millis(timeout_ms),
    )
    .map_err(|status| format!("{:?}", status))
}

pub struct CalloutAnswer {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    body_size: usize,
}

impl CalloutAnswer {
    /// Reads the answer's headers and, when it is at most `max` bytes long, its body (a
    /// longer one is left unread: the core refuses it by its size).
    pub fn read(num_headers: usize, body_size: usize, max: usize) -> CalloutAnswer {
        let headers = if num_headers == 0 {
            Vec::new()
        } else {
            hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default()
        };
        let body = if body_size > 0 && body_size <= max {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        CalloutAnswer {
            headers,
            body,
            body_size,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The answer as the core reads it.
    pub fn answer(&self) -> Answer<'_> {
        Answer {
            status: self.header(":status").and_then(|s| s.parse().ok()),
            cache_control: self.header("cache-control"),
            body: &self.body,
            body_size: self.body_size,
        }
    }
}
