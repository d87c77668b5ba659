//! Counters, defined through proxy-wasm metrics. Envoy shows them in `/stats` and
//! `/stats/prometheus` under the names below.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use tokengate_core::policy::decision::{CacheUse, Decision, DenyReason, Outcome};

/// Ids of the counters of one VM.
#[derive(Debug, Default)]
pub struct Metrics {
    allowed: Option<u32>,
    denied: Vec<(DenyReason, Option<u32>)>,
    dry_run_denied: Vec<(DenyReason, Option<u32>)>,
    cache_hits: Option<u32>,
    cache_misses: Option<u32>,
    introspection_hits: Option<u32>,
    introspection_misses: Option<u32>,
    /// Gauges, summed over the workers: each VM adds what changed since it last reported.
    waiting: Option<u32>,
    sizes: [(Option<u32>, std::cell::Cell<i64>); 4],
}

/// Defines a metric; `None` (and a warning) when the host refuses, and the metric is then
/// never counted: a metric must never fail a request.
fn define(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("tokengate: cannot define metric {}: {:?}", name, status);
            None
        }
    }
}

pub fn gauge(name: &str) -> Option<u32> {
    define(MetricType::Gauge, name)
}

pub fn counter(name: &str) -> Option<u32> {
    define(MetricType::Counter, name)
}

/// Adds `delta` to a counter or gauge (a failed increment loses the change, never fails
/// the request).
pub fn add(id: Option<u32>, delta: i64) {
    if let (Some(id), true) = (id, delta != 0) {
        let _ = hostcalls::increment_metric(id, delta);
    }
}

pub fn bump(id: Option<u32>) {
    add(id, 1);
}

/// Sets a gauge.
pub fn set(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = hostcalls::record_metric(id, value);
    }
}

impl Metrics {
    pub fn define() -> Metrics {
        Metrics {
            allowed: counter("tokengate.allowed"),
            denied: DenyReason::ALL
                .iter()
                .map(|r| (*r, counter(&format!("tokengate.denied.{}", r.label()))))
                .collect(),
            dry_run_denied: DenyReason::ALL
                .iter()
                .map(|r| {
                    (
                        *r,
                        counter(&format!("tokengate.dry_run.would_deny.{}", r.label())),
                    )
                })
                .collect(),
            cache_hits: counter("tokengate.jwt_cache.hits"),
            cache_misses: counter("tokengate.jwt_cache.misses"),
            introspection_hits: counter("tokengate.introspection.cache_hits"),
            introspection_misses: counter("tokengate.introspection.cache_misses"),
            waiting: gauge("tokengate.requests_waiting"),
            sizes: [
                (
                    gauge("tokengate.jwt_cache.entries"),
                    std::cell::Cell::new(0),
                ),
                (gauge("tokengate.jwt_cache.bytes"), std::cell::Cell::new(0)),
                (
                    gauge("tokengate.introspection.cache_entries"),
                    std::cell::Cell::new(0),
                ),
                (
                    gauge("tokengate.introspection.cache_bytes"),
                    std::cell::Cell::new(0),
                ),
            ],
        }
    }

    /// A request starts (+1) or stops (-1) waiting for keys or introspection.
    pub fn waiting(&self, delta: i64) {
        add(self.waiting, delta);
    }

    /// Reports this VM's cache sizes (the gauges hold the sum over all VMs).
    pub fn cache_sizes(&self, sizes: (usize, usize, usize, usize)) {
        let now = [sizes.0, sizes.1, sizes.2, sizes.3];
        for ((id, last), value) in self.sizes.iter().zip(now) {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            add(*id, value - last.get());
            last.set(value);
        }
    }

    /// Takes this VM's share out of the gauges (its configuration is being replaced).
    pub fn retire(&self) {
        self.cache_sizes((0, 0, 0, 0));
    }

    /// A request waits for an introspection answer that is not cached.
    pub fn introspection_miss(&self) {
        bump(self.introspection_misses);
    }

    /// Counts one decision; a `resumed` request had its cache use counted when it parked.
    pub fn record(&self, decision: &Decision, resumed: bool) {
        match decision.outcome {
            Outcome::Allowed => bump(self.allowed),
            Outcome::Denied(reason) => {
                let table = if decision.enforced {
                    &self.denied
                } else {
                    bump(self.allowed);
                    &self.dry_run_denied
                };
                if let Some((_, id)) = table.iter().find(|(r, _)| *r == reason) {
                    bump(*id);
                }
            }
        }
        match decision.cache {
            CacheUse::Hit => bump(self.cache_hits),
            CacheUse::Miss => bump(self.cache_misses),
            CacheUse::NotUsed => {}
        }
        // A request that waited for an answer was counted as a miss when it began to wait.
        match (decision.introspection_cache, resumed) {
            (CacheUse::Hit, false) => bump(self.introspection_hits),
            (CacheUse::Miss, false) => bump(self.introspection_misses),
            _ => {}
        }
    }
}
