//! Introspection callouts on the host side: carrying out what
//! `tokengate_core::engine::introspection_calls` decides with proxy-wasm callouts (from the
//! root context, so that a callout outlives the request that asked first), and logging and
//! counting what it reports.

use crate::callout::{self, CalloutAnswer};
use crate::entropy::random_u64;
use crate::metrics::{bump, counter};
use tokengate_core::config::settings::Settings;
use tokengate_core::engine::gate::Gate;
use tokengate_core::engine::introspection_calls::{
    Answered, IntrospectionCalls, IntrospectionEvent, IntrospectionHost,
};
use tokengate_core::engine::introspection_queue::IntrospectionQueue;
use tokengate_core::introspection::{IntrospectionCall, IntrospectionError};
use tokengate_core::keys::remote::Url;
use tokengate_core::provider::ProviderId;
use tokengate_core::time::UnixMillis;

/// The proxy-wasm host as the introspection calls see it.
struct Host;

impl IntrospectionHost for Host {
    fn dispatch(&mut self, call: &IntrospectionCall) -> Result<u32, String> {
        let headers: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        callout::dispatch(&call.cluster, headers, Some(&call.body), call.timeout_ms)
    }

    fn random(&mut self) -> u64 {
        random_u64()
    }
}

/// One provider's introspection callouts in this VM, with their metrics.
pub struct IntrospectionSync {
    pub provider: ProviderId,
    name: String,
    calls: IntrospectionCalls,
    active: Option<u32>,
    inactive: Option<u32>,
    failures: Vec<(&'static str, Option<u32>)>,
}

impl IntrospectionSync {
    pub fn for_settings(settings: &Settings) -> Vec<IntrospectionSync> {
        settings
            .providers_by_id()
            .filter_map(|(id, p)| {
                let config = p.introspection.clone()?;
                let name = |what: &str| format!("tokengate.introspection.{}.{}", p.name, what);
                Some(IntrospectionSync {
                    provider: id,
                    name: p.name.clone(),
                    calls: IntrospectionCalls::new(id, config),
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

    pub fn queue(&self) -> &IntrospectionQueue {
        &self.calls.queue
    }

    pub fn queue_mut(&mut self) -> &mut IntrospectionQueue {
        &mut self.calls.queue
    }

    /// Sends what the queue says is to be sent (see [`IntrospectionCalls::dispatch`]).
    pub fn dispatch(
        &mut self,
        discovered: Option<Url>,
        discovering: bool,
        gate: &mut Gate,
        now: UnixMillis,
    ) {
        let mut events = Vec::new();
        self.calls
            .dispatch(discovered, discovering, gate, now, &mut Host, &mut events);
        self.carry_out(&events);
    }

    /// Handles the answer to one callout, if it is this provider's.
    pub fn on_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        gate: &mut Gate,
        now: UnixMillis,
    ) -> Option<Answered> {
        if !self.calls.owns(token_id) {
            return None;
        }
        let read = CalloutAnswer::read(num_headers, body_size, self.calls.max_answer_bytes());
        let mut events = Vec::new();
        let answered = self
            .calls
            .answered(token_id, &read.answer(), gate, now, &mut events);
        self.carry_out(&events);
        answered
    }

    fn carry_out(&self, events: &[IntrospectionEvent]) {
        for event in events {
            match event {
                IntrospectionEvent::Active => bump(self.active),
                IntrospectionEvent::Inactive => bump(self.inactive),
                IntrospectionEvent::RetryingWithNewAssertion => log::debug!(
                    "tokengate: provider {}: the introspection endpoint refused the client assertion; retrying once with a new one",
                    self.name
                ),
                IntrospectionEvent::Failed(e) => {
                    if let Some((_, id)) = self.failures.iter().find(|(c, _)| *c == e.cause()) {
                        bump(*id);
                    }
                    let auth = &self.calls.settings().auth;
                    match e {
                        IntrospectionError::ClientRejected { .. } => log::error!(
                            "tokengate: provider {}: introspection client is misconfigured: {} (client {}, {})",
                            self.name,
                            e,
                            auth.client_id(),
                            auth.method()
                        ),
                        _ => log::warn!(
                            "tokengate: provider {}: introspection failed: {}",
                            self.name,
                            e
                        ),
                    }
                }
            }
        }
    }
}
