//! The request context: one per HTTP request. It asks the gate, then either acts on the
//! decision or parks the request until what it waits for (keys, an introspection answer)
//! arrives or its deadline passes.

use crate::engine::{apply, now_ms, refuse_unavailable, Arrangements, Shared};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::rc::Rc;
use tokengate_core::engine::waiting::{Next, RequestId, WaitCounts};
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
            if let Ok(mut waiting) = shared.waiting.try_borrow_mut() {
                let mut counts = WaitCounts::default();
                waiting.leave(RequestId(self.context_id), &mut counts);
                shared.count(&counts);
            }
        }
    }
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return refuse_unavailable("tokengate is not configured");
        };
        let headers = match crate::abi::request_headers() {
            Ok(h) => h,
            Err(why) => return refuse_unavailable(&why),
        };
        let Some(now) = now_ms() else {
            return refuse_unavailable("cannot read the clock");
        };
        let Ok(mut gate) = shared.gate.try_borrow_mut() else {
            return refuse_unavailable("re-entrant request handling");
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

        let mut counts = WaitCounts::default();
        let next = match shared.waiting.try_borrow_mut() {
            Ok(mut waiting) => waiting.admit(
                &mut gate,
                RequestId(self.context_id),
                headers,
                now,
                &mut Arrangements(&shared),
                &mut counts,
            ),
            Err(_) => return refuse_unavailable("re-entrant request handling"),
        };
        drop(gate);
        shared.count(&counts);
        match next {
            Next::Decided(decision) => apply(&shared, &decision, false),
            Next::Undecidable => refuse_unavailable("cannot wait for keys or introspection"),
            Next::Waits(reason) => {
                log::debug!("tokengate: request waits ({:?})", reason);
                let (period, backoff) = tick::after_wait(reason);
                if let Some(backoff) = backoff {
                    shared.tick_backoff.set(backoff);
                }
                let _ = hostcalls::set_tick_period(period);
                Action::Pause
            }
        }
    }
}
