//! One provider's introspection callouts in one VM: what its queue says is to be sent goes
//! out signed (a fresh client assertion each time), answers are read and recorded in the
//! gate's cache, and a refused assertion is retried once with a new one. No I/O: the host
//! sends through [`IntrospectionHost`], and logs and counts the [`IntrospectionEvent`]s.

use crate::engine::gate::Gate;
use crate::engine::introspection_queue::{CallId, Endpoint, IntrospectionQueue, Send, Settled};
use crate::introspection::{
    self, ClientAuth, Introspected, IntrospectionCall, IntrospectionClient, IntrospectionError,
    IntrospectionSettings,
};
use crate::keys::remote::{Answer, Url};
use crate::provider::ProviderId;
use crate::time::UnixMillis;

/// What the calls need of the host.
pub trait IntrospectionHost {
    /// Sends `call`: its token, or why it could not be sent.
    fn dispatch(&mut self, call: &IntrospectionCall) -> Result<u32, String>;
    /// A random number (a client assertion's `jti`).
    fn random(&mut self) -> u64;
}

/// What happened, for the host to log and count.
#[derive(Debug, PartialEq)]
pub enum IntrospectionEvent {
    /// An answer went into the gate's cache: the token is active.
    Active,
    /// An answer went into the gate's cache: the token is not active.
    Inactive,
    /// A failure went into the gate's cache (the waiting requests get 503).
    Failed(IntrospectionError),
    /// The endpoint refused the client assertion; the token goes out again with a new one.
    RetryingWithNewAssertion,
}

/// What became of a callout's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answered {
    /// The answer (or failure) is in the gate's cache: the requests waiting for it go on.
    Recorded,
    /// The token is queued again, to go out with a newly signed assertion.
    Retry,
}

/// One provider's introspection callouts in one VM.
pub struct IntrospectionCalls {
    pub provider: ProviderId,
    client: IntrospectionClient,
    pub queue: IntrospectionQueue,
}

impl IntrospectionCalls {
    pub fn new(provider: ProviderId, settings: IntrospectionSettings) -> IntrospectionCalls {
        IntrospectionCalls {
            provider,
            client: IntrospectionClient::new(settings),
            queue: IntrospectionQueue::default(),
        }
    }

    pub fn settings(&self) -> &IntrospectionSettings {
        self.client.settings()
    }

    /// Whether the callout with this token is one of these.
    pub fn owns(&self, token: u32) -> bool {
        self.queue.owns(CallId(token))
    }

    /// Sends what the queue says is to be sent. `discovered` is the endpoint discovery
    /// found (a configured one comes first); `discovering`: discovery has not answered yet.
    pub fn dispatch(
        &mut self,
        discovered: Option<Url>,
        discovering: bool,
        gate: &mut Gate,
        now: UnixMillis,
        host: &mut dyn IntrospectionHost,
        events: &mut Vec<IntrospectionEvent>,
    ) {
        let endpoint = self.client.settings().endpoint.clone().or(discovered);
        let state = match (&endpoint, discovering) {
            (Some(_), _) => Endpoint::Known,
            (None, true) => Endpoint::Discovering,
            (None, false) => Endpoint::Missing,
        };
        for send in self.queue.to_send(state, now) {
            let (key, token) = match send {
                Send::Call { key, token } => (key, token),
                Send::Fail { key, error } => {
                    self.record(gate, &key, Err(error), now, events);
                    continue;
                }
            };
            let Some(url) = &endpoint else { continue };
            let sent = self
                .client
                .request(&token, url, now.as_secs(), host.random())
                .map_err(IntrospectionError::NotSent)
                .and_then(|call| {
                    host.dispatch(&call).map_err(|why| {
                        IntrospectionError::NotSent(format!(
                            "cannot call cluster {:?} ({}); is it defined in Envoy?",
                            call.cluster, why
                        ))
                    })
                });
            match sent {
                Ok(id) => self.queue.sent(&key, CallId(id)),
                Err(e) => {
                    self.queue.not_sent(&key);
                    self.record(gate, &key, Err(e), now, events);
                }
            }
        }
    }

    /// The most an answer may be: a longer body is not read.
    pub fn max_answer_bytes(&self) -> usize {
        self.client.settings().max_bytes
    }

    /// The answer to callout `token`; `None` when it is not one of these.
    pub fn answered(
        &mut self,
        token: u32,
        answer: &Answer<'_>,
        gate: &mut Gate,
        now: UnixMillis,
        events: &mut Vec<IntrospectionEvent>,
    ) -> Option<Answered> {
        let call = CallId(token);
        if !self.queue.owns(call) {
            return None;
        }
        // Cache-Control of an introspection answer means nothing to the token's cache.
        let answer = Answer {
            cache_control: None,
            ..*answer
        };
        let result = introspection::read_answer(&answer, self.max_answer_bytes());
        let signed_assertion = matches!(
            self.client.settings().auth,
            ClientAuth::PrivateKeyJwt { .. }
        );
        match self.queue.answered(call, result, signed_assertion)? {
            Settled::Retry => {
                events.push(IntrospectionEvent::RetryingWithNewAssertion);
                Some(Answered::Retry)
            }
            Settled::Record { key, result } => {
                self.record(gate, &key, result, now, events);
                Some(Answered::Recorded)
            }
        }
    }

    fn record(
        &self,
        gate: &mut Gate,
        key: &str,
        result: Result<Introspected, IntrospectionError>,
        now: UnixMillis,
        events: &mut Vec<IntrospectionEvent>,
    ) {
        events.push(match &result {
            Ok(Introspected::Active(_)) => IntrospectionEvent::Active,
            Ok(Introspected::Inactive) => IntrospectionEvent::Inactive,
            Err(e) => IntrospectionEvent::Failed(e.clone()),
        });
        gate.record_introspection(self.provider, key, result, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gate::{Request, Verdict};
    use crate::policy::decision::Outcome;
    use crate::request::headers::HeaderMap;

    const NOW: UnixMillis = UnixMillis(1_700_000_000_000);
    const OPAQUE_ISSUER: &str = "https://opaque.test";

    /// A gate with one introspecting provider, and that provider's calls.
    fn world() -> (Gate, IntrospectionCalls) {
        let config = serde_json::json!({
            "providers": {"q": {
                "issuer": OPAQUE_ISSUER,
                "introspection": {"cluster": "idp", "endpoint": "http://idp.test/introspect",
                                  "client_id": "gate", "client_secret": "s3cret"}
            }},
            "default": "authenticated"
        });
        let (settings, _) = crate::config::settings::compile_str(&config.to_string()).unwrap();
        let (id, provider) = settings.providers_by_id().next().unwrap();
        let calls = IntrospectionCalls::new(id, provider.introspection.clone().unwrap());
        (Gate::new(settings), calls)
    }

    fn request(token: &str) -> HeaderMap {
        HeaderMap::get_with_bearer(token)
    }

    /// Asks the gate about `token`; it must wait for an introspection, which is queued.
    fn queue_for(gate: &mut Gate, calls: &mut IntrospectionCalls, token: &str) {
        let headers = request(token);
        match gate.evaluate(&Request::new(&headers), NOW, true) {
            Verdict::Wait(wait) => {
                let pending = wait.introspect.expect("an introspection");
                assert!(calls.queue.enqueue(&pending, wait.deadline));
            }
            Verdict::Decided(d) => panic!("decided without introspection: {:?}", d.outcome),
        }
    }

    #[derive(Default)]
    struct MockHost {
        sent: Vec<IntrospectionCall>,
        refuse: bool,
    }

    impl IntrospectionHost for MockHost {
        fn dispatch(&mut self, call: &IntrospectionCall) -> Result<u32, String> {
            if self.refuse {
                return Err("BadArgument".into());
            }
            self.sent.push(call.clone());
            Ok(u32::try_from(self.sent.len()).unwrap())
        }

        fn random(&mut self) -> u64 {
            7
        }
    }

    fn answer(body: &str) -> Answer<'_> {
        Answer {
            status: Some(200),
            cache_control: Some("max-age=0"),
            body: body.as_bytes(),
            body_size: body.len(),
        }
    }

    #[test]
    fn a_queued_token_is_sent_and_its_answer_decides_the_next_request() {
        let (mut gate, mut calls) = world();
        let mut host = MockHost::default();
        let mut events = Vec::new();
        queue_for(&mut gate, &mut calls, "opaque-1");
        calls.dispatch(None, false, &mut gate, NOW, &mut host, &mut events);
        assert_eq!(host.sent.len(), 1);
        let body = String::from_utf8(host.sent[0].body.clone()).unwrap();
        assert!(body.contains("token=opaque-1"), "{}", body);
        let active = serde_json::json!({"active": true, "iss": OPAQUE_ISSUER, "sub": "u1",
                                        "exp": NOW.as_secs() + 600})
        .to_string();
        let answered = calls.answered(1, &answer(&active), &mut gate, NOW, &mut events);
        assert_eq!(answered, Some(Answered::Recorded));
        assert_eq!(events, vec![IntrospectionEvent::Active]);
        let headers = request("opaque-1");
        match gate.evaluate(&Request::new(&headers), NOW, true) {
            Verdict::Decided(d) => assert_eq!(d.outcome, Outcome::Allowed),
            Verdict::Wait(_) => panic!("the answer was not recorded"),
        }
    }

    #[test]
    fn a_callout_that_cannot_be_sent_is_recorded_as_a_failure() {
        let (mut gate, mut calls) = world();
        let mut host = MockHost {
            refuse: true,
            ..MockHost::default()
        };
        let mut events = Vec::new();
        queue_for(&mut gate, &mut calls, "opaque-1");
        calls.dispatch(None, false, &mut gate, NOW, &mut host, &mut events);
        assert!(matches!(
            events.as_slice(),
            [IntrospectionEvent::Failed(IntrospectionError::NotSent(why))] if why.contains("cannot call cluster \"idp\"")
        ));
        assert!(!calls.queue.has_work());
    }

    #[test]
    fn an_answer_to_another_callout_is_not_these_calls_business() {
        let (mut gate, mut calls) = world();
        let mut events = Vec::new();
        let none = calls.answered(9, &answer("{}"), &mut gate, NOW, &mut events);
        assert_eq!(none, None);
        assert!(events.is_empty());
    }
}
