//! The root context: compiles the configuration once per (re)configure, keeps remote key
//! sets in sync on its tick, answers the key and introspection callouts, and resumes
//! requests that waited for keys or an introspection answer.

use crate::engine::{apply, now_ms, refuse_unavailable, Arrangements, Shared};
use crate::entropy::random_u64;
use crate::introspection::IntrospectionSync;
use crate::keys::ProviderSync;
use crate::metrics::Metrics;
use crate::request::RequestFilter;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use tokengate_core::engine::gate::Gate;
use tokengate_core::engine::introspection_calls::Answered;
use tokengate_core::engine::waiting::{Next, RequestId, WaitCounts, WaitingRoom};
use tokengate_core::keys::sync::KeyView;
use tokengate_core::provider::ProviderId;
use tokengate_core::time::UnixMillis;
use tokengate_core::{config::settings, engine::tick};

pub struct FilterRoot {
    context_id: u32,
    /// This VM's identity in fetch leases.
    me: u64,
    shared: Option<Rc<Shared>>,
}

impl FilterRoot {
    pub fn new(context_id: u32) -> Self {
        FilterRoot {
            context_id,
            me: random_u64() | 1,
            shared: None,
        }
    }

    /// Carries out the waiting room's decisions for requests whose wait is over (or all of
    /// them, `everything`, when the configuration is replaced), then sends the introspections
    /// that requests newly wait for.
    fn release_waiting(&self, shared: &Shared, now: UnixMillis, everything: bool) {
        let mut counts = WaitCounts::default();
        let decided = {
            let mut gate = shared.gate.borrow_mut();
            let mut waiting = shared.waiting.borrow_mut();
            if everything {
                waiting.release_all(&mut gate, now, &mut counts)
            } else {
                waiting.release(&mut gate, now, &mut Arrangements(shared), &mut counts)
            }
        };
        shared.count(&counts);
        for (RequestId(context_id), next) in decided {
            if hostcalls::set_effective_context(context_id).is_err() {
                // The request ended while it waited.
                continue;
            }
            let action = match next {
                Next::Decided(decision) => apply(shared, &decision, true),
                Next::Undecidable | Next::Waits(_) => {
                    refuse_unavailable("cannot wait for keys or introspection")
                }
            };
            if action == Action::Continue {
                let _ = hostcalls::resume_http_request();
            }
        }
        self.dispatch_introspections(shared, now);
        let _ = hostcalls::set_effective_context(self.context_id);
    }

    fn sync_keys(&self, shared: &Shared, now: UnixMillis) {
        let views: Vec<(ProviderId, KeyView)> = shared
            .syncs
            .borrow_mut()
            .iter_mut()
            .map(|s| (s.provider, s.tick(now)))
            .collect();
        let mut gate = shared.gate.borrow_mut();
        for (provider, view) in views {
            gate.set_key_view(provider, view);
        }
    }

    /// Sends the queued introspections.
    fn dispatch_introspections(&self, shared: &Shared, now: UnixMillis) {
        let mut introspections = shared.introspections.borrow_mut();
        for sync in introspections.iter_mut().filter(|s| s.queue().has_work()) {
            let syncs = shared.syncs.borrow();
            let keys = syncs.iter().find(|k| k.provider == sync.provider);
            let (discovered, discovering) = keys
                .map(ProviderSync::discovered_introspection_endpoint)
                .unwrap_or((None, false));
            sync.dispatch(discovered, discovering, &mut shared.gate.borrow_mut(), now);
        }
    }

    /// Sets the next tick from what this VM waits for ([`tick::plan`]).
    fn adjust_tick(&self, shared: &Shared, now: UnixMillis) {
        let parked_deadline = shared.waiting.borrow().earliest_deadline();
        let introspections_queued = shared
            .introspections
            .borrow()
            .iter()
            .any(|s| s.queue().has_work());
        let next_fetch_at = {
            let gate = shared.gate.borrow();
            let syncs = shared.syncs.borrow();
            syncs
                .iter()
                .filter_map(|s| gate.key_view(s.provider))
                .filter(|view| !view.fetching)
                .map(|view| view.next_fetch_at)
                .min()
        };
        let waiting = tick::Waiting {
            introspections_queued,
            parked_deadline,
            next_fetch_at,
        };
        let plan = tick::plan(now, &waiting, shared.tick_backoff.get());
        shared.tick_backoff.set(plan.backoff);
        let _ = hostcalls::set_tick_period(plan.period);
    }
}

impl Context for FilterRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (Some(shared), Some(now)) = (self.shared.clone(), now_ms()) else {
            return;
        };
        let answered = shared.introspections.borrow_mut().iter_mut().find_map(|s| {
            s.on_response(
                token_id,
                num_headers,
                body_size,
                &mut shared.gate.borrow_mut(),
                now,
            )
        });
        match answered {
            Some(Answered::Recorded) => {
                self.release_waiting(&shared, now, false);
                self.adjust_tick(&shared, now);
                return;
            }
            Some(Answered::Retry) => {
                self.dispatch_introspections(&shared, now);
                self.release_waiting(&shared, now, false);
                self.adjust_tick(&shared, now);
                return;
            }
            None => {}
        }
        let view = {
            let mut syncs = shared.syncs.borrow_mut();
            let Some(sync) = syncs.iter_mut().find(|s| s.owns(token_id)) else {
                return;
            };
            (sync.provider, sync.on_response(num_headers, body_size, now))
        };
        shared.gate.borrow_mut().set_key_view(view.0, view.1);
        self.release_waiting(&shared, now, false);
        self.adjust_tick(&shared, now);
    }
}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let tracing = follow_host_log_level();
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) if !bytes.is_empty() => bytes,
            Ok(_) => {
                log::error!("tokengate: invalid configuration: (top level): the plugin configuration is empty; tokengate needs at least \"providers\"");
                return false;
            }
            Err(status) => {
                log::error!(
                    "tokengate: cannot read the plugin configuration: {:?}",
                    status
                );
                return false;
            }
        };
        let env = |name: &str| std::env::var(name).ok();
        let (settings, warnings) = match settings::compile_bytes(&bytes, &env) {
            Ok(compiled) => compiled,
            Err(e) => {
                log::error!("tokengate: invalid configuration: {}", e);
                return false;
            }
        };
        for warning in &warnings {
            log::warn!("tokengate: {}", warning);
        }
        log::info!(
            "tokengate: configured {} provider(s), {} rule(s)",
            settings.providers.len(),
            settings.routes.rules.len()
        );
        // Requests parked under the previous configuration are decided now, with it.
        if let (Some(old), Some(now)) = (self.shared.take(), now_ms()) {
            self.release_waiting(&old, now, true);
        }
        let syncs = ProviderSync::for_settings(&settings, self.me);
        let introspections = IntrospectionSync::for_settings(&settings);
        for sync in &syncs {
            sync.ensure_record();
        }
        let remote = !syncs.is_empty();
        let mut gate = Gate::new(settings);
        gate.describe_allowed(tracing);
        let shared = Rc::new(Shared {
            gate: RefCell::new(gate),
            metrics: Metrics::define(),
            waiting: RefCell::new(WaitingRoom::default()),
            syncs: RefCell::new(syncs),
            introspections: RefCell::new(introspections),
            tick_backoff: Cell::new(tick::FAST),
        });
        if let Some(now) = now_ms() {
            // What another worker (or an earlier configuration) already published: requests
            // wait for it until the first tick loads it.
            for sync in shared.syncs.borrow().iter() {
                let view = sync.first_view(now);
                shared.gate.borrow_mut().set_key_view(sync.provider, view);
            }
        }
        self.shared = Some(shared);
        // Callouts from on_configure are unreliable in Envoy: fetch on the first tick. Without
        // remote keys the tick only reports gauges and follows the log level.
        let first_tick = if remote {
            Duration::from_millis(10)
        } else {
            tick::IDLE
        };
        let _ = hostcalls::set_tick_period(first_tick);
        true
    }

    fn on_tick(&mut self) {
        let (Some(shared), Some(now)) = (self.shared.clone(), now_ms()) else {
            return;
        };
        let tracing = follow_host_log_level();
        shared.gate.borrow_mut().describe_allowed(tracing);
        self.sync_keys(&shared, now);
        self.dispatch_introspections(&shared, now);
        self.release_waiting(&shared, now, false);
        shared
            .metrics
            .cache_sizes(shared.gate.borrow().cache_sizes());
        self.adjust_tick(&shared, now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RequestFilter::new(
            context_id,
            self.shared.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Lowers the SDK's log ceiling to Envoy's `wasm` level, so that debug lines are not even
/// formatted when Envoy would drop them. True when Envoy logs at trace level (where allowed
/// requests are logged too).
fn follow_host_log_level() -> bool {
    let Ok(level) = hostcalls::get_log_level() else {
        return true;
    };
    // Critical maps to "off" in the SDK; keep errors flowing in that case.
    let level = if level == LogLevel::Critical {
        LogLevel::Error
    } else {
        level
    };
    proxy_wasm::set_log_level(level);
    level == LogLevel::Trace
}
