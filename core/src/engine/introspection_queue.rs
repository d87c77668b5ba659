//! The introspections one worker has queued or in flight for one provider: one callout per
//! token however many requests wait for it (single flight), tokens held back while discovery
//! has not found the endpoint, and one more try with a newly signed client assertion after
//! the endpoint refused one. The host signs, sends and reads the answers; this decides what
//! is sent, when, and what an answer settles.

use crate::engine::gate::PendingIntrospection;
use crate::introspection::{Introspected, IntrospectionError};
use crate::time::UnixMillis;
use std::collections::HashMap;

/// At most this many distinct tokens await introspection per provider and worker by default.
pub const MAX_PENDING: usize = 1000;

/// The host's handle on one callout (proxy-wasm's token id of the HTTP call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId(pub u32);

struct Pending {
    token: String,
    /// The callout, once sent.
    call: Option<CallId>,
    /// While discovery has not found the endpoint, the token stays queued until the last
    /// request waiting for it gives up.
    wait_until: UnixMillis,
    /// The endpoint refused one client assertion already; a second refusal is final.
    retried: bool,
}

/// Where the introspection endpoint stands for the tokens to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Configured, or found by discovery.
    Known,
    /// Discovery is how it is found, and has not answered yet.
    Discovering,
    /// Discovery answered without one.
    Missing,
}

/// What to do with a queued token now.
#[derive(Debug, PartialEq, Eq)]
pub enum Send {
    /// Sign and send a callout for `token`; report it with [`IntrospectionQueue::sent`].
    Call { key: String, token: String },
    /// It cannot be sent: record this failure for it (the queue has dropped it).
    Fail {
        key: String,
        error: IntrospectionError,
    },
}

/// What an answer to a callout settles.
#[derive(Debug, PartialEq)]
pub enum Settled {
    /// Record this result for the token with this key; the requests waiting for it go on.
    Record {
        key: String,
        result: Result<Introspected, IntrospectionError>,
    },
    /// The endpoint refused the client assertion: the token is queued again, to go out with
    /// a newly signed one.
    Retry,
}

/// The introspection queue of one provider in one worker.
pub struct IntrospectionQueue {
    pending: HashMap<String, Pending>,
    max: usize,
}

impl Default for IntrospectionQueue {
    fn default() -> Self {
        IntrospectionQueue::new(MAX_PENDING)
    }
}

impl IntrospectionQueue {
    /// A queue of at most `max` distinct tokens.
    pub fn new(max: usize) -> IntrospectionQueue {
        IntrospectionQueue {
            pending: HashMap::new(),
            max,
        }
    }

    /// Queues a token for requests that wait until `wait_until`; a token already
    /// queued or in flight is not queued twice. False when too many are queued already (the
    /// request is then decided without waiting).
    pub fn enqueue(&mut self, p: &PendingIntrospection, wait_until: UnixMillis) -> bool {
        if let Some(queued) = self.pending.get_mut(&p.key) {
            queued.wait_until = queued.wait_until.max(wait_until);
            return true;
        }
        if self.pending.len() >= self.max {
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

    /// Whether the token with this key is queued or in flight.
    pub fn is_pending(&self, key: &str) -> bool {
        self.pending.contains_key(key)
    }

    pub fn has_work(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether `call` is one of this queue's callouts.
    pub fn owns(&self, call: CallId) -> bool {
        self.pending.values().any(|p| p.call == Some(call))
    }

    /// What to do now with the queued tokens not in flight. While discovery has not answered,
    /// a token waits for it as long as a request waits for the token; tokens that cannot be
    /// sent leave the queue with the failure to record.
    pub fn to_send(&mut self, endpoint: Endpoint, now: UnixMillis) -> Vec<Send> {
        let ready: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.call.is_none())
            .filter(|(_, p)| endpoint != Endpoint::Discovering || now >= p.wait_until)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(ready.len());
        for key in ready {
            let error = match endpoint {
                Endpoint::Known => None,
                Endpoint::Discovering => Some(IntrospectionError::NotSent(
                    "the introspection endpoint is not known yet (discovery has not answered)"
                        .into(),
                )),
                Endpoint::Missing => Some(IntrospectionError::NotSent(
                    "discovery found no introspection_endpoint; set introspection.endpoint".into(),
                )),
            };
            match error {
                None => {
                    if let Some(p) = self.pending.get(&key) {
                        let token = p.token.clone();
                        out.push(Send::Call { key, token });
                    }
                }
                Some(error) => {
                    self.pending.remove(&key);
                    out.push(Send::Fail { key, error });
                }
            }
        }
        out
    }

    /// The callout for `key` went out as `call`.
    pub fn sent(&mut self, key: &str, call: CallId) {
        if let Some(p) = self.pending.get_mut(key) {
            p.call = Some(call);
        }
    }

    /// The callout for `key` could not be sent: it leaves the queue (record `error`).
    pub fn not_sent(&mut self, key: &str) {
        self.pending.remove(key);
    }

    /// The answer to `call`, read as `result`. `signed_assertion`: the client authenticates
    /// with private_key_jwt, whose refused assertion is signed anew and sent once more before
    /// the client counts as misconfigured (a provider may refuse it as a replay, RFC 7523 3).
    /// `None`: no token of this queue waits for that callout.
    pub fn answered(
        &mut self,
        call: CallId,
        result: Result<Introspected, IntrospectionError>,
        signed_assertion: bool,
    ) -> Option<Settled> {
        let key = self
            .pending
            .iter()
            .find(|(_, p)| p.call == Some(call))
            .map(|(k, _)| k.clone())?;
        let pending = self.pending.remove(&key)?;
        if let (Err(IntrospectionError::ClientRejected { .. }), true, false) =
            (&result, signed_assertion, pending.retried)
        {
            self.pending.insert(
                key,
                Pending {
                    call: None,
                    retried: true,
                    ..pending
                },
            );
            return Some(Settled::Retry);
        }
        Some(Settled::Record { key, result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u32) -> PendingIntrospection {
        PendingIntrospection {
            key: format!("key-{}", n),
            token: format!("opaque-{}", n),
        }
    }

    fn calls(sends: &[Send]) -> Vec<&str> {
        sends
            .iter()
            .filter_map(|s| match s {
                Send::Call { key, .. } => Some(key.as_str()),
                Send::Fail { .. } => None,
            })
            .collect()
    }

    fn rejected() -> Result<Introspected, IntrospectionError> {
        Err(IntrospectionError::ClientRejected {
            status: 400,
            error: Some("invalid_client"),
        })
    }

    #[test]
    fn requests_for_one_token_share_one_callout() {
        let mut queue = IntrospectionQueue::default();
        assert!(queue.enqueue(&token(1), UnixMillis(5_000)));
        assert!(queue.enqueue(&token(1), UnixMillis(6_000)));
        let sends = queue.to_send(Endpoint::Known, UnixMillis(1_000));
        assert_eq!(calls(&sends), ["key-1"]);
        queue.sent("key-1", CallId(7));
        assert!(
            queue.to_send(Endpoint::Known, UnixMillis(1_010)).is_empty(),
            "in flight: not sent again"
        );
        assert!(
            queue.enqueue(&token(1), UnixMillis(7_000)),
            "a later request joins the callout"
        );
        assert!(queue.to_send(Endpoint::Known, UnixMillis(1_020)).is_empty());
    }

    #[test]
    fn a_full_queue_refuses_new_tokens_but_not_queued_ones() {
        let mut queue = IntrospectionQueue::new(1);
        assert!(queue.enqueue(&token(1), UnixMillis(5_000)));
        assert!(!queue.enqueue(&token(2), UnixMillis(5_000)));
        assert!(queue.enqueue(&token(1), UnixMillis(5_000)));
    }

    #[test]
    fn an_answer_for_a_callout_nobody_owns_settles_nothing() {
        let mut queue = IntrospectionQueue::default();
        queue.enqueue(&token(1), UnixMillis(5_000));
        queue.to_send(Endpoint::Known, UnixMillis(1_000));
        queue.sent("key-1", CallId(7));
        assert!(!queue.owns(CallId(8)));
        assert_eq!(
            queue.answered(CallId(8), Ok(Introspected::Inactive), false),
            None
        );
        assert!(queue.is_pending("key-1"));
    }

    #[test]
    fn an_answer_settles_its_token_and_empties_the_queue() {
        let mut queue = IntrospectionQueue::default();
        queue.enqueue(&token(1), UnixMillis(5_000));
        queue.to_send(Endpoint::Known, UnixMillis(1_000));
        queue.sent("key-1", CallId(7));
        let settled = queue.answered(CallId(7), Ok(Introspected::Inactive), false);
        assert_eq!(
            settled,
            Some(Settled::Record {
                key: "key-1".into(),
                result: Ok(Introspected::Inactive)
            })
        );
        assert!(!queue.has_work());
    }

    #[test]
    fn a_refused_client_assertion_is_sent_once_more_then_recorded() {
        let mut queue = IntrospectionQueue::default();
        queue.enqueue(&token(1), UnixMillis(5_000));
        queue.to_send(Endpoint::Known, UnixMillis(1_000));
        queue.sent("key-1", CallId(7));
        assert_eq!(
            queue.answered(CallId(7), rejected(), true),
            Some(Settled::Retry)
        );
        let sends = queue.to_send(Endpoint::Known, UnixMillis(1_100));
        assert_eq!(calls(&sends), ["key-1"], "sent again");
        queue.sent("key-1", CallId(8));
        assert!(matches!(
            queue.answered(CallId(8), rejected(), true),
            Some(Settled::Record {
                result: Err(IntrospectionError::ClientRejected { .. }),
                ..
            })
        ));
    }

    #[test]
    fn a_refusal_of_a_client_secret_is_recorded_at_once() {
        let mut queue = IntrospectionQueue::default();
        queue.enqueue(&token(1), UnixMillis(5_000));
        queue.to_send(Endpoint::Known, UnixMillis(1_000));
        queue.sent("key-1", CallId(7));
        assert!(matches!(
            queue.answered(CallId(7), rejected(), false),
            Some(Settled::Record { .. })
        ));
    }

    #[test]
    fn tokens_wait_for_discovery_as_long_as_their_requests_wait() {
        let mut queue = IntrospectionQueue::default();
        queue.enqueue(&token(1), UnixMillis(5_000));
        assert!(queue
            .to_send(Endpoint::Discovering, UnixMillis(4_999))
            .is_empty());
        assert!(queue.is_pending("key-1"));
        let sends = queue.to_send(Endpoint::Discovering, UnixMillis(5_000));
        assert!(matches!(&sends[..], [Send::Fail { key, .. }] if key == "key-1"));
        assert!(!queue.has_work());
    }

    #[test]
    fn tokens_fail_at_once_when_discovery_found_no_endpoint() {
        let mut queue = IntrospectionQueue::default();
        queue.enqueue(&token(1), UnixMillis(5_000));
        let sends = queue.to_send(Endpoint::Missing, UnixMillis(1_000));
        assert!(matches!(&sends[..], [Send::Fail { .. }]));
    }
}
