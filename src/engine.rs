//! The VM's engine state on the host side: the gate, the parked requests and the key and
//! introspection syncs one worker shares between its root and request contexts, and
//! carrying out a decision with host calls.

use crate::introspection::IntrospectionSync;
use crate::keys::ProviderSync;
use crate::metrics::Metrics;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType};
use std::cell::{Cell, RefCell};
use std::time::{Duration, UNIX_EPOCH};
use tokengate_core::engine::gate::{Gate, Wait, WaitReason};
use tokengate_core::engine::waiting::{Arrange, WaitCounts, WaitingRoom};
use tokengate_core::policy::decision::{Decision, Outcome};
use tokengate_core::provider::ProviderId;
use tokengate_core::time::UnixMillis;
use tokengate_core::token::extract::TokenRemoval;

/// The host clock's reading.
pub fn now_ms() -> Option<UnixMillis> {
    let t = hostcalls::get_current_time().ok()?;
    let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis();
    Some(UnixMillis(u64::try_from(ms).unwrap_or(u64::MAX)))
}

/// State shared by the root context and the request contexts of one VM (one worker).
pub struct Shared {
    pub gate: RefCell<Gate>,
    pub metrics: Metrics,
    pub waiting: RefCell<WaitingRoom>,
    pub syncs: RefCell<Vec<ProviderSync>>,
    pub introspections: RefCell<Vec<IntrospectionSync>>,
    /// The tick's backoff while requests are parked ([`tick::plan`]).
    pub tick_backoff: Cell<Duration>,
}

/// A configuration's state leaves the gauges with it, which sum over VMs and configurations:
/// when Envoy replaces a configuration it deletes the root context (`proxy_on_delete`), and
/// the last request still holding the state drops it.
impl Drop for Shared {
    fn drop(&mut self) {
        self.metrics.retire();
        for sync in self.syncs.get_mut().iter_mut() {
            sync.retire();
        }
    }
}

impl Shared {
    /// Counts what a waiting-room event changed.
    pub fn count(&self, counts: &WaitCounts) {
        for _ in 0..counts.introspection_misses {
            self.metrics.introspection_miss();
        }
        if counts.waiting != 0 {
            self.metrics.waiting(counts.waiting);
        }
    }
}

/// What the waiting room asks of the host: the key syncs and introspection queues.
pub struct Arrangements<'a>(pub &'a Shared);

impl Arrange for Arrangements<'_> {
    /// A refetch for an unknown `kid` (its sync's lease decides when), or a queued
    /// introspection (false when too many are queued).
    fn arrange(&mut self, wait: &Wait) -> bool {
        match (&wait.reason, &wait.introspect) {
            (WaitReason::UnknownKid, _) => {
                for sync in self.0.syncs.borrow_mut().iter_mut() {
                    if sync.provider == wait.provider {
                        sync.want_kid_refetch();
                    }
                }
                true
            }
            (WaitReason::Introspection, Some(pending)) => self
                .0
                .introspections
                .borrow_mut()
                .iter_mut()
                .find(|s| s.provider == wait.provider)
                .is_some_and(|s| s.queue_mut().enqueue(pending, wait.deadline)),
            (WaitReason::Introspection, None) => false,
            (WaitReason::FirstKeys, _) => true,
        }
    }

    fn introspection_pending(&self, provider: ProviderId, key: &str) -> bool {
        self.0
            .introspections
            .borrow()
            .iter()
            .any(|s| s.provider == provider && s.queue().is_pending(key))
    }
}

/// Acts on a decision for the current (effective) request: count, log, then reply or
/// forward. `resumed`: the request waited (its cache use was counted then). Returns what the
/// request context must return to Envoy.
pub fn apply(shared: &Shared, decision: &Decision, resumed: bool) -> Action {
    shared.metrics.record(decision, resumed);
    if let Some(warning) = &decision.warning {
        log::warn!("tokengate: {}", warning);
    }
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
    match &decision.token_removal {
        Some(TokenRemoval::Header(name)) => {
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
        }
        Some(TokenRemoval::Cookies(Some(rest))) => {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "cookie", Some(rest));
        }
        Some(TokenRemoval::Cookies(None)) => {
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "cookie");
        }
        Some(TokenRemoval::Path(path)) => {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(path));
        }
        None => {}
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

/// Refuses the request with 503 when the filter itself cannot work (fail closed).
pub fn refuse_unavailable(why: &str) -> Action {
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
