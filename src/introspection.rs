//! Introspection callouts on the host side: one callout per token however many requests
//! wait for it (single flight), dispatched from the root context so that it outlives the
//! request that asked first; answers go into the gate's cache.

use crate::entropy::random_u64;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType};
use std::collections::HashMap;
use std::time::Duration;
use tokengate_core::config::settings::Settings;
use tokengate_core::engine::gate::{Gate, PendingIntrospection};
use tokengate_core::introspection::{
    self, ClientAuth, Introspected, IntrospectionClient, IntrospectionError,
};
use tokengate_core::keys::remote::{Answer, Url};
use tokengate_core::provider::ProviderId;

/// At most this many distinct tokens await introspection per provider and worker.
pub const MAX_PENDING: usize = 1000;

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

struct Pending {
    token: String,
    /// The callout, once dispatched.
    call: Option<u32>,
    /// While discovery has not found the endpoint, the token stays queued until the last
    /// request waiting for it gives up (Unix ms).
    wait_until: u64,
    /// The endpoint refused one client assertion already; a second refusal is final.
    retried: bool,
}

/// What became of a callout's answer.
pub enum Answered {
    /// The answer (or failure) is in the gate's cache.
    Recorded,
    /// The endpoint refused the client assertion: the token is queued again, to go out with
    /// a newly signed one.
    Retry,
}

pub struct IntrospectionSync {
    pub provider: ProviderId,
    name: String,
    client: IntrospectionClient,
    pending: HashMap<String, Pending>,
    active: Option<u32>,
    inactive: Option<u32>,
    failures: Vec<(&'static str, Option<u32>)>,
}

impl IntrospectionSync {
    pub fn for_settings(settings: &Settings) -> Vec<IntrospectionSync> {
        settings
            .providers_by_id()
            .filter_map(|(index, p)| {
                let config = p.introspection.clone()?;
                let name = |what: &str| format!("tokengate.introspection.{}.{}", p.name, what);
                Some(IntrospectionSync {
                    provider: index,
                    name: p.name.clone(),
                    client: IntrospectionClient::new(config),
                    pending: HashMap::new(),
                    active: counter(&name("active")),
                    inactive: counter(&name("inactive")),
                    failures: IntrospectionError::CAUSES
                        .iter()
                        .map(|c| (*c, counter(&name(&format!("failure.{}", c)))))
                        .collect(),
                })
            })
            .collect()
    }

    /// Queues a token; false when too many are queued already (the request is then decided
    /// without waiting).
    pub fn enqueue(&mut self, p: &PendingIntrospection, wait_until: u64) -> bool {
        if let Some(queued) = self.pending.get_mut(&p.key) {
            queued.wait_until = queued.wait_until.max(wait_until);
            return true;
        }
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        self.pending.insert(
            p.key.clone(),
            Pending {
                token: p.token.clone(),
                call: None,
                wait_until,
                retried: false,
            },
        );
        true
    }

    pub fn is_pending(&self, key: &str) -> bool {
        self.pending.contains_key(key)
    }

    pub fn has_work(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn owns(&self, token_id: u32) -> bool {
        self.pending.values().any(|p| p.call == Some(token_id))
    }

    /// Dispatches every queued token. `endpoint` is the configured one or, failing that, the
    /// one discovery found; while `discovering` (discovery has not answered yet) tokens wait
    /// for it, as requests wait for the first keys, instead of failing at start-up. Failures
    /// to send are recorded at once.
    pub fn dispatch(
        &mut self,
        endpoint: Option<Url>,
        discovering: bool,
        gate: &mut Gate,
        now_ms: u64,
    ) {
        let endpoint = self.client.settings().endpoint.clone().or(endpoint);
        let queued: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.call.is_none())
            .filter(|(_, p)| endpoint.is_some() || !discovering || now_ms >= p.wait_until)
            .map(|(k, _)| k.clone())
            .collect();
        for key in queued {
            let Some(token) = self.pending.get(&key).map(|p| p.token.clone()) else {
                continue;
            };
            let sent = match &endpoint {
                None if discovering => Err(IntrospectionError::NotSent(
                    "the introspection endpoint is not known yet (discovery has not answered)"
                        .into(),
                )),
                None => Err(IntrospectionError::NotSent(
                    "discovery found no introspection_endpoint; set introspection.endpoint".into(),
                )),
                Some(url) => self
                    .client
                    .request(&token, url, now_ms / 1000, random_u64())
                    .map_err(IntrospectionError::NotSent)
                    .and_then(|call| {
                        let headers: Vec<(&str, &str)> = call
                            .headers
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect();
                        hostcalls::dispatch_http_call(
                            &call.cluster,
                            headers,
                            Some(&call.body),
                            vec![],
                            Duration::from_millis(call.timeout_ms),
                        )
                        .map_err(|status| {
                            IntrospectionError::NotSent(format!(
                                "cannot call cluster {:?} ({:?}); is it defined in Envoy?",
                                call.cluster, status
                            ))
                        })
                    }),
            };
            match sent {
                Ok(id) => {
                    if let Some(p) = self.pending.get_mut(&key) {
                        p.call = Some(id);
                    }
                }
                Err(e) => {
                    self.pending.remove(&key);
                    self.record(gate, &key, Err(e), now_ms);
                }
            }
        }
    }

    /// Handles the answer to one callout. A private_key_jwt assertion the endpoint refuses
    /// is signed anew and sent once more before the client counts as misconfigured (a
    /// provider may have refused it as a replay, RFC 7523 3).
    pub fn on_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        gate: &mut Gate,
        now_ms: u64,
    ) -> Option<Answered> {
        let key = self
            .pending
            .iter()
            .find(|(_, p)| p.call == Some(token_id))
            .map(|(k, _)| k.clone())?;
        let pending = self.pending.remove(&key)?;
        let headers = if num_headers == 0 {
            Vec::new()
        } else {
            hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default()
        };
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse().ok());
        let max = self.client.settings().max_bytes;
        let body = if body_size > 0 && body_size <= max {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let answer = Answer {
            status,
            cache_control: None,
            body: &body,
            body_size,
        };
        let result = introspection::read_answer(&answer, max);
        let assertion = matches!(
            self.client.settings().auth,
            ClientAuth::PrivateKeyJwt { .. }
        );
        if let (Err(IntrospectionError::ClientRejected { status, .. }), true, false) =
            (&result, assertion, pending.retried)
        {
            log::debug!(
                "tokengate: provider {}: the introspection endpoint refused the client assertion (HTTP {}); retrying once with a new one",
                self.name,
                status
            );
            self.pending.insert(
                key,
                Pending {
                    call: None,
                    retried: true,
                    ..pending
                },
            );
            return Some(Answered::Retry);
        }
        self.record(gate, &key, result, now_ms);
        Some(Answered::Recorded)
    }

    fn record(
        &self,
        gate: &mut Gate,
        key: &str,
        result: Result<Introspected, IntrospectionError>,
        now_ms: u64,
    ) {
        match &result {
            Ok(Introspected::Active(_)) => bump(self.active),
            Ok(Introspected::Inactive) => bump(self.inactive),
            Err(e) => {
                if let Some((_, id)) = self.failures.iter().find(|(c, _)| *c == e.cause()) {
                    bump(*id);
                }
                match e {
                    IntrospectionError::ClientRejected { .. } => log::error!(
                        "tokengate: provider {}: introspection client is misconfigured: {} (client {}, {})",
                        self.name,
                        e,
                        self.client.settings().auth.client_id(),
                        self.client.settings().auth.method()
                    ),
                    _ => log::warn!("tokengate: provider {}: introspection failed: {}", self.name, e),
                }
            }
        }
        gate.record_introspection(self.provider, key, result, now_ms);
    }
}
