//! Introspection callouts on the host side: one callout per token however many requests
//! wait for it (single flight), dispatched from the root context so that it outlives the
//! request that asked first; answers go into the gate's cache.

use crate::callout::CalloutAnswer;
use crate::entropy::random_u64;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::time::Duration;
use tokengate_core::config::settings::Settings;
use tokengate_core::engine::gate::Gate;
use tokengate_core::engine::introspection_queue::{
    CallId, Endpoint, IntrospectionQueue, Send, Settled,
};
use tokengate_core::introspection::{
    self, ClientAuth, Introspected, IntrospectionClient, IntrospectionError,
};
use tokengate_core::keys::remote::{Answer, Url};
use tokengate_core::provider::ProviderId;
use tokengate_core::time::UnixMillis;

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
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
    pub queue: IntrospectionQueue,
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
                    queue: IntrospectionQueue::default(),
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

    /// Sends what the queue says is to be sent. `endpoint` is the configured one or, failing
    /// that, the one discovery found; `discovering`: discovery has not answered yet.
    pub fn dispatch(
        &mut self,
        endpoint: Option<Url>,
        discovering: bool,
        gate: &mut Gate,
        now_ms: UnixMillis,
    ) {
        let endpoint = self.client.settings().endpoint.clone().or(endpoint);
        let state = match (&endpoint, discovering) {
            (Some(_), _) => Endpoint::Known,
            (None, true) => Endpoint::Discovering,
            (None, false) => Endpoint::Missing,
        };
        for send in self.queue.to_send(state, now_ms) {
            let (key, token) = match send {
                Send::Call { key, token } => (key, token),
                Send::Fail { key, error } => {
                    self.record(gate, &key, Err(error), now_ms);
                    continue;
                }
            };
            let Some(url) = &endpoint else { continue };
            let sent = self
                .client
                .request(&token, url, now_ms.as_secs(), random_u64())
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
                });
            match sent {
                Ok(id) => self.queue.sent(&key, CallId(id)),
                Err(e) => {
                    self.queue.not_sent(&key);
                    self.record(gate, &key, Err(e), now_ms);
                }
            }
        }
    }

    /// Handles the answer to one callout, if it is this provider's.
    pub fn on_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        gate: &mut Gate,
        now_ms: UnixMillis,
    ) -> Option<Answered> {
        let call = CallId(token_id);
        if !self.queue.owns(call) {
            return None;
        }
        let max = self.client.settings().max_bytes;
        let read = CalloutAnswer::read(num_headers, body_size, max);
        // Cache-Control of an introspection answer means nothing to the token's cache.
        let answer = Answer {
            cache_control: None,
            ..read.answer()
        };
        let result = introspection::read_answer(&answer, max);
        let signed_assertion = matches!(
            self.client.settings().auth,
            ClientAuth::PrivateKeyJwt { .. }
        );
        match self.queue.answered(call, result, signed_assertion)? {
            Settled::Retry => {
                log::debug!(
                    "tokengate: provider {}: the introspection endpoint refused the client assertion; retrying once with a new one",
                    self.name
                );
                Some(Answered::Retry)
            }
            Settled::Record { key, result } => {
                self.record(gate, &key, result, now_ms);
                Some(Answered::Recorded)
            }
        }
    }

    fn record(
        &self,
        gate: &mut Gate,
        key: &str,
        result: Result<Introspected, IntrospectionError>,
        now_ms: UnixMillis,
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
