//! The request context: one per HTTP request. It turns the core's decision into host calls.

use crate::root::Shared;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::rc::Rc;
use std::time::UNIX_EPOCH;
use tokengate_core::decision::Outcome;
use tokengate_core::gate::Request;

pub struct RequestFilter {
    shared: Option<Rc<Shared>>,
}

impl RequestFilter {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        RequestFilter { shared }
    }
}

impl Context for RequestFilter {}

/// Refuses the request with 503 when the filter itself cannot work (fail closed).
fn internal_failure(why: &str) -> Action {
    log::error!("tokengate: {}; refusing the request", why);
    let body = format!(
        "{{\"error\":\"temporarily_unavailable\",\"error_description\":\"{}\"}}",
        why.replace(['"', '\\'], "'")
    );
    let _ = hostcalls::send_http_response(
        503,
        vec![("content-type", "application/json")],
        Some(body.as_bytes()),
    );
    Action::Pause
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return internal_failure("tokengate is not configured");
        };
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(status) => {
                return internal_failure(&format!("cannot read request headers ({:?})", status))
            }
        };
        let now = match hostcalls::get_current_time() {
            Ok(t) => t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            Err(status) => {
                return internal_failure(&format!("cannot read the clock ({:?})", status))
            }
        };
        let Ok(mut gate) = shared.gate.try_borrow_mut() else {
            return internal_failure("re-entrant request handling");
        };

        // Headers the filter writes are never taken from the client.
        for name in &gate.settings().managed_headers {
            if headers.iter().any(|(n, _)| n == name) {
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
            }
        }

        let decision = gate.decide(&Request::new(&headers), now);
        drop(gate);
        shared.metrics.record(&decision);
        if let Outcome::Denied(reason) = decision.outcome {
            if log::log_enabled!(log::Level::Debug) {
                let mode = if decision.enforced {
                    "denied"
                } else {
                    "dry-run, would deny"
                };
                let status = decision.denial.as_ref().map_or(0, |d| d.status);
                log::debug!(
                    "tokengate: {} {} (rule {}): {} ({})",
                    mode,
                    status,
                    decision.rule,
                    decision.detail,
                    reason.label()
                );
            }
        } else {
            log::trace!(
                "tokengate: allowed (rule {}): {}",
                decision.rule,
                decision.detail
            );
        }

        if let Some(denial) = decision.refuses() {
            let headers: Vec<(&str, &str)> = denial
                .headers
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            if let Err(status) = hostcalls::send_http_response(
                u32::from(denial.status),
                headers,
                Some(denial.body.as_bytes()),
            ) {
                log::error!(
                    "tokengate: cannot send the {} reply ({:?}); resetting the request",
                    denial.status,
                    status
                );
                let _ = hostcalls::reset_http_request();
            }
            return Action::Pause;
        }
        if let Some(name) = &decision.remove_header {
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
        }
        for (name, value) in &decision.upstream_headers {
            if let Err(status) =
                hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
            {
                log::warn!("tokengate: cannot set header {}: {:?}", name, status);
            }
        }
        Action::Continue
    }
}
