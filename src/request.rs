//! The request context: one per HTTP request. It asks the gate, then either acts on the
//! decision or parks the request until what it waits for (keys, an introspection answer)
//! arrives or its deadline passes.

use crate::engine::{apply, now_ms, Parked, Shared, MAX_PARKED};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::rc::Rc;
use std::time::Duration;
use tokengate_core::engine::gate::{Request, Verdict, WaitReason};
use tokengate_core::{engine::tick, request::edge};

pub struct RequestFilter {
    context_id: u32,
    shared: Option<Rc<Shared>>,
}

impl RequestFilter {
    pub fn new(context_id: u32, shared: Option<Rc<Shared>>) -> Self {
        RequestFilter { context_id, shared }
    }
}

impl Context for RequestFilter {}

impl Drop for RequestFilter {
    fn drop(&mut self) {
        // A request that ends while parked (client gone) must not be resumed later.
        if let Some(shared) = &self.shared {
            if let Ok(mut parked) = shared.parked.try_borrow_mut() {
                let before = parked.len();
                parked.retain(|p| p.context_id != self.context_id);
                shared.metrics.waiting(parked.len() as i64 - before as i64);
            }
        }
    }
}

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
        let headers = match crate::abi::request_headers() {
            Ok(h) => h,
            Err(why) => return internal_failure(&why),
        };
        let Some(now) = now_ms() else {
            return internal_failure("cannot read the clock");
        };
        let Ok(mut gate) = shared.gate.try_borrow_mut() else {
            return internal_failure("re-entrant request handling");
        };

        // Headers the filter writes are never taken from the client, in any spelling an
        // application reads as theirs; nor are method and path overrides, or other
        // spellings of the headers rules read.
        let settings = gate.settings();
        for name in edge::headers_to_remove(
            &headers,
            &settings.protected_headers,
            &settings.removed_headers,
        ) {
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, &name);
        }

        let may_wait = shared.parked.borrow().len() < MAX_PARKED;
        let verdict = gate.evaluate(&Request::new(&headers), now, may_wait);
        drop(gate);
        let wait = match verdict {
            Verdict::Decided(decision) => return apply(&shared, &decision, false),
            Verdict::Wait(wait) => wait,
        };
        if !shared.arrange(&wait) {
            // Too much is queued already: decide without waiting (503 for introspection).
            let verdict = shared
                .gate
                .borrow_mut()
                .evaluate(&Request::new(&headers), now, false);
            return match verdict {
                Verdict::Decided(decision) => apply(&shared, &decision, false),
                Verdict::Wait(_) => internal_failure("cannot wait for keys or introspection"),
            };
        }
        log::debug!(
            "tokengate: request waits ({:?}, provider {})",
            wait.reason,
            wait.provider
        );
        if wait.reason == WaitReason::Introspection {
            shared.metrics.introspection_miss();
            // Dispatch from the root context at once (its next tick).
            let _ = hostcalls::set_tick_period(Duration::from_millis(1));
        } else {
            // Keys may come from another worker any moment: look soon, then back off.
            shared.tick_backoff.set(tick::FAST);
            let _ = hostcalls::set_tick_period(tick::FAST);
        }
        let version = shared.key_version(wait.provider);
        let waited = vec![wait.reason];
        shared.metrics.waiting(1);
        shared.parked.borrow_mut().push(Parked {
            context_id: self.context_id,
            headers,
            wait,
            key_version: version,
            waited,
        });
        Action::Pause
    }
}
