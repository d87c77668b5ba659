//! An echo upstream: answers every request with 200 and a JSON body listing the method, the
//! path and every header it received, so tests see exactly what tokengate forwarded.

use devidp::httpd::{Handler, Reply, Request, Response, Server};
use serde_json::json;
use std::sync::Arc;

pub struct EchoUpstream {
    server: Server,
}

impl EchoUpstream {
    pub fn start() -> EchoUpstream {
        let handler: Handler = Arc::new(|req: &Request| {
            let path = if req.query.is_empty() {
                req.path.clone()
            } else {
                format!("{}?{}", req.path, req.query)
            };
            let headers: Vec<_> = req.headers.iter().map(|(k, v)| json!([k, v])).collect();
            let body = json!({"method": req.method, "path": path, "headers": headers});
            Reply::Respond(Response::json(200, &body).with_header("x-echo-upstream", "1"))
        });
        EchoUpstream {
            server: Server::start("127.0.0.1:0", handler).unwrap(),
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.server.served()
    }
}
