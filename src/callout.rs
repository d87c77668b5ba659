//! The answer to an HTTP callout, read from the host once for the core to interpret.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use tokengate_core::keys::remote::Answer;

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
