//! Requests that wait: for a provider's first keys, for a refetch after an unknown `kid`, or
//! for an introspection answer. The waiting room decides when a request may wait, when its
//! wait is over (what it waited for arrived, is no longer coming, or its deadline passed),
//! and what it gets then; a request waits at most once for each reason. It holds no I/O:
//! the host hands in the time and the gate, arranges what a wait needs through [`Arrange`]
//! (a key refetch, a queued introspection) and carries out the decisions it returns.

use crate::engine::gate::{Gate, KeyView, Request, Verdict, Wait, WaitReason};
use crate::policy::decision::Decision;
use crate::provider::ProviderId;
use crate::request::headers::HeaderMap;
use crate::time::UnixMillis;

/// At most this many requests wait per worker by default; more are decided at once.
pub const MAX_PARKED: usize = 10_000;

/// The host's handle on one request (its proxy-wasm context id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u32);

/// What the host arranges for a waiting request, and what it knows of introspections.
pub trait Arrange {
    /// Arranges what `wait` waits for: a refetch for an unknown `kid`, a queued
    /// introspection. False when it cannot be arranged (too much queued already).
    fn arrange(&mut self, wait: &Wait) -> bool;
    /// Whether the introspection of the token with cache key `key` is still queued or in
    /// flight for `provider`.
    fn introspection_pending(&self, provider: ProviderId, key: &str) -> bool;
}

/// What a request does next: go on with a decision, wait, or (a broken promise of the
/// gate's) neither.
#[derive(Debug)]
pub enum Next {
    Decided(Decision),
    /// The request waits; the host looks again soon (how soon depends on the reason).
    Waits(WaitReason),
    /// The gate asked a request to wait after waiting was refused: the host answers 503.
    Undecidable,
}

/// The changes of the waiting metrics an event caused, counted where it happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitCounts {
    /// Requests that began to wait for an introspection answer (introspection cache misses).
    pub introspection_misses: u32,
    /// Change of the number of waiting requests.
    pub waiting: i64,
}

struct Parked {
    id: RequestId,
    headers: HeaderMap,
    wait: Wait,
    /// The key version the request saw when it began to wait.
    key_version: u64,
    /// What it has waited for so far.
    waited: Vec<WaitReason>,
}

/// The requests of one worker that wait.
pub struct WaitingRoom {
    parked: Vec<Parked>,
    max: usize,
}

impl Default for WaitingRoom {
    fn default() -> Self {
        WaitingRoom::new(MAX_PARKED)
    }
}

impl WaitingRoom {
    /// A room for at most `max` waiting requests.
    pub fn new(max: usize) -> WaitingRoom {
        WaitingRoom {
            parked: Vec::new(),
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.parked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    /// The earliest deadline of the waiting requests.
    pub fn earliest_deadline(&self) -> Option<UnixMillis> {
        self.parked.iter().map(|p| p.wait.deadline).min()
    }

    /// A new request's headers at `now`: decided at once, or waiting.
    pub fn admit(
        &mut self,
        gate: &mut Gate,
        id: RequestId,
        headers: HeaderMap,
        now: UnixMillis,
        host: &mut dyn Arrange,
        counts: &mut WaitCounts,
    ) -> Next {
        let may_wait = self.parked.len() < self.max;
        let wait = match gate.evaluate(&Request::new(&headers), now, may_wait) {
            Verdict::Decided(decision) => return Next::Decided(decision),
            Verdict::Wait(wait) => wait,
        };
        if !host.arrange(&wait) {
            // Too much is queued already: decided without waiting (503 for introspection).
            return decide_now(gate, &headers, now);
        }
        let reason = wait.reason;
        self.park(
            gate,
            Parked {
                id,
                headers,
                wait,
                key_version: 0,
                waited: Vec::new(),
            },
            counts,
        );
        Next::Waits(reason)
    }

    /// Decides the waiting requests whose wait is over at `now`: what they waited for
    /// changed (new keys, an introspection answer), is no longer coming, or their deadline
    /// passed. A request that next needs something else may wait again, once per reason.
    /// Returns the requests decided, in the order they waited.
    pub fn release(
        &mut self,
        gate: &mut Gate,
        now: UnixMillis,
        host: &mut dyn Arrange,
        counts: &mut WaitCounts,
    ) -> Vec<(RequestId, Next)> {
        let (ready, waiting): (Vec<Parked>, Vec<Parked>) = self
            .parked
            .drain(..)
            .partition(|p| !still_waiting(gate, &*host, p, now));
        self.parked = waiting;
        counts.waiting -= len_i64(&ready);
        let mut decided = Vec::with_capacity(ready.len());
        for mut p in ready {
            match gate.evaluate(&Request::new(&p.headers), now, true) {
                Verdict::Decided(decision) => decided.push((p.id, Next::Decided(decision))),
                Verdict::Wait(wait) if !p.waited.contains(&wait.reason) && host.arrange(&wait) => {
                    p.wait = wait;
                    self.park(gate, p, counts);
                }
                Verdict::Wait(_) => decided.push((p.id, decide_now(gate, &p.headers, now))),
            }
        }
        decided
    }

    /// Decides every waiting request without waiting (the configuration is being replaced:
    /// they get its decision, never a wait under the next one).
    pub fn release_all(
        &mut self,
        gate: &mut Gate,
        now: UnixMillis,
        counts: &mut WaitCounts,
    ) -> Vec<(RequestId, Next)> {
        counts.waiting -= len_i64(&self.parked);
        self.parked
            .drain(..)
            .map(|p| (p.id, decide_now(gate, &p.headers, now)))
            .collect()
    }

    /// A request ended while it waited (the client went away): it is never decided.
    pub fn leave(&mut self, id: RequestId, counts: &mut WaitCounts) {
        let before = self.parked.len();
        self.parked.retain(|p| p.id != id);
        counts.waiting -= i64::try_from(before - self.parked.len()).unwrap_or(0);
    }

    fn park(&mut self, gate: &Gate, mut p: Parked, counts: &mut WaitCounts) {
        if p.wait.reason == WaitReason::Introspection {
            counts.introspection_misses += 1;
        }
        p.waited.push(p.wait.reason);
        p.key_version = gate.key_view(p.wait.provider).map_or(0, |v| v.version);
        counts.waiting += 1;
        self.parked.push(p);
    }
}

fn len_i64<T>(v: &[T]) -> i64 {
    i64::try_from(v.len()).unwrap_or(i64::MAX)
}

/// The gate's decision with waiting refused.
fn decide_now(gate: &mut Gate, headers: &HeaderMap, now: UnixMillis) -> Next {
    match gate.evaluate(&Request::new(headers), now, false) {
        Verdict::Decided(decision) => Next::Decided(decision),
        Verdict::Wait(_) => Next::Undecidable,
    }
}

fn still_waiting(gate: &Gate, host: &dyn Arrange, p: &Parked, now: UnixMillis) -> bool {
    if now >= p.wait.deadline {
        return false;
    }
    if let (WaitReason::Introspection, Some(pending)) = (&p.wait.reason, &p.wait.introspect) {
        return host.introspection_pending(p.wait.provider, &pending.key);
    }
    let Some(view) = gate.key_view(p.wait.provider) else {
        return false;
    };
    keys_still_coming(view, p, now)
}

/// A request waiting for keys waits while its provider's key version is the one it saw and
/// newer keys are published but not loaded here, or a fetch is under way or due.
fn keys_still_coming(view: &KeyView, p: &Parked, now: UnixMillis) -> bool {
    if view.version != p.key_version {
        return false;
    }
    match p.wait.reason {
        WaitReason::FirstKeys => view.coming(now),
        WaitReason::UnknownKid => view.refetch_coming(now),
        // Waits for an introspection answer carry the token (see still_waiting).
        WaitReason::Introspection => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ProviderId = ProviderId::FIRST;
    use crate::engine::gate::KeyView;
    use crate::keys::jwks::{parse_jwks_str, KeyPolicy};
    use crate::policy::decision::Outcome;
    use crate::support::b64;
    use ed25519_compact::{KeyPair, Seed};
    use std::collections::HashSet;
    use std::rc::Rc;

    const NOW: UnixMillis = UnixMillis(1_700_000_000_000);
    const ISSUER: &str = "https://issuer.test";

    fn key_pair() -> KeyPair {
        KeyPair::from_seed(Seed::new([7; 32]))
    }

    /// A gate with one remote provider `p` (no keys yet) and, when `introspects`, a second
    /// one `q` that introspects opaque tokens.
    fn request(token: &str) -> HeaderMap {
        HeaderMap::get_with_bearer(token)
    }

    fn gate(introspects: bool) -> Gate {
        let mut providers = serde_json::json!({
            "p": {"issuer": ISSUER, "audiences": ["api"],
                  "remote_jwks": {"cluster": "idp", "uri": "http://idp.test/keys"}}
        });
        if introspects {
            providers["q"] = serde_json::json!({
                "issuer": "https://opaque.test",
                "introspection": {"cluster": "idp", "endpoint": "http://idp.test/introspect",
                                  "client_id": "gate", "client_secret": "s3cret"}
            });
        }
        let config = serde_json::json!({"providers": providers, "default": "authenticated"});
        let (settings, _) = crate::config::settings::compile_str(&config.to_string()).unwrap();
        Gate::new(settings)
    }

    /// The view of provider `p` with no keys and a first fetch under way.
    fn fetching() -> KeyView {
        KeyView {
            fetching: true,
            ..KeyView::default()
        }
    }

    /// The view of provider `p` once version `version` of its keys (kid `k1`) arrived.
    fn keys_arrived(version: u64) -> KeyView {
        let x = b64::encode(key_pair().pk.as_ref());
        let text = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","alg":"EdDSA","x":"{}"}}]}}"#,
            x
        );
        let (keys, _) = parse_jwks_str(&text, &KeyPolicy::default()).unwrap();
        KeyView {
            keys: Some(Rc::new(keys)),
            version,
            usable_until: NOW.plus_ms(3_600_000),
            next_fetch_at: NOW.plus_ms(300_000),
            kid_refetch_from: NOW.plus_ms(30_000),
            ..KeyView::default()
        }
    }

    fn token(kid: &str, jti: &str) -> String {
        let header = b64::encode(format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, kid).as_bytes());
        let claims = format!(
            r#"{{"iss":"{}","aud":"api","sub":"u1","exp":{},"jti":"{}"}}"#,
            ISSUER,
            NOW.as_secs() + 600,
            jti
        );
        let input = format!("{}.{}", header, b64::encode(claims.as_bytes()));
        let signature = key_pair().sk.sign(input.as_bytes(), None);
        format!("{}.{}", input, b64::encode(signature.as_ref()))
    }

    /// The host side: what was arranged, and which introspections are in flight.
    #[derive(Default)]
    struct Host {
        kid_refetches: usize,
        introspections: HashSet<String>,
        /// At most this many introspections queued; `None`: no limit.
        queue_bound: Option<usize>,
    }

    impl Arrange for Host {
        fn arrange(&mut self, wait: &Wait) -> bool {
            match (&wait.reason, &wait.introspect) {
                (WaitReason::UnknownKid, _) => {
                    self.kid_refetches += 1;
                    true
                }
                (WaitReason::Introspection, Some(pending)) => {
                    if self
                        .queue_bound
                        .is_some_and(|bound| self.introspections.len() >= bound)
                        && !self.introspections.contains(&pending.key)
                    {
                        return false;
                    }
                    self.introspections.insert(pending.key.clone());
                    true
                }
                (WaitReason::Introspection, None) => false,
                (WaitReason::FirstKeys, _) => true,
            }
        }

        fn introspection_pending(&self, _provider: ProviderId, key: &str) -> bool {
            self.introspections.contains(key)
        }
    }

    fn status(next: &Next) -> u16 {
        match next {
            Next::Decided(d) => match d.outcome {
                Outcome::Allowed => 200,
                Outcome::Denied(_) => d.denial.as_ref().map_or(0, |r| r.status),
            },
            Next::Waits(_) => 0,
            Next::Undecidable => 1,
        }
    }

    /// A worker's engine state and its host, driven by the tests.
    struct World {
        gate: Gate,
        host: Host,
        room: WaitingRoom,
        counts: WaitCounts,
    }

    impl World {
        /// Provider `p` (and `q` for opaque tokens when `introspects`), with `view` as
        /// `p`'s keys and a room of `max` places.
        fn new(introspects: bool, view: KeyView, max: usize) -> World {
            let mut gate = gate(introspects);
            gate.set_key_view(P, view);
            World {
                gate,
                host: Host::default(),
                room: WaitingRoom::new(max),
                counts: WaitCounts::default(),
            }
        }

        /// Keys of `p` on their way, nothing else.
        fn keys_coming() -> World {
            World::new(false, fetching(), MAX_PARKED)
        }

        fn admit(&mut self, id: u32, headers: HeaderMap) -> Next {
            let (gate, host, counts) = (&mut self.gate, &mut self.host, &mut self.counts);
            self.room
                .admit(gate, RequestId(id), headers, NOW, host, counts)
        }

        /// Admits request `id`, expecting it to wait.
        fn admit_waiting(&mut self, id: u32, headers: HeaderMap) -> WaitReason {
            match self.admit(id, headers) {
                Next::Waits(reason) => reason,
                other => panic!("request {} did not wait: {:?}", id, other),
            }
        }

        fn release(&mut self, at: UnixMillis) -> Vec<(RequestId, Next)> {
            let (gate, host, counts) = (&mut self.gate, &mut self.host, &mut self.counts);
            self.room.release(gate, at, host, counts)
        }

        fn deadline(&self) -> UnixMillis {
            self.room.earliest_deadline().unwrap()
        }
    }

    #[test]
    fn a_request_waiting_for_the_first_keys_is_allowed_when_they_land() {
        let mut world = World::keys_coming();
        let reason = world.admit_waiting(1, request(&token("k1", "a")));
        assert_eq!(reason, WaitReason::FirstKeys);
        assert!(world.release(NOW.plus_ms(20)).is_empty());
        world.gate.set_key_view(P, keys_arrived(1));
        let decided = world.release(NOW.plus_ms(40));
        assert_eq!(decided.len(), 1);
        assert_eq!(decided[0].0, RequestId(1));
        assert_eq!(status(&decided[0].1), 200);
        assert!(world.room.is_empty());
        assert_eq!(world.counts.waiting, 0);
    }

    /// The view of a VM that has not loaded keys another worker published already: no
    /// fetch under way or due (the next refresh is minutes away).
    fn published_elsewhere() -> KeyView {
        KeyView {
            published_version: 1,
            next_fetch_at: NOW.plus_ms(300_000),
            ..KeyView::default()
        }
    }

    #[test]
    fn a_request_waits_for_keys_another_worker_published_and_this_one_has_not_loaded() {
        let mut world = World::new(false, published_elsewhere(), MAX_PARKED);
        let reason = world.admit_waiting(1, request(&token("k1", "a")));
        assert_eq!(reason, WaitReason::FirstKeys);
        assert!(world.release(NOW.plus_ms(20)).is_empty(), "still coming");
        world.gate.set_key_view(P, keys_arrived(1));
        let decided = world.release(NOW.plus_ms(40));
        assert_eq!(status(&decided[0].1), 200);
    }

    #[test]
    fn without_keys_published_fetched_or_due_a_request_gets_503_at_once() {
        let view = KeyView {
            next_fetch_at: NOW.plus_ms(300_000),
            ..KeyView::default()
        };
        let mut world = World::new(false, view, MAX_PARKED);
        assert_eq!(status(&world.admit(1, request(&token("k1", "a")))), 503);
    }

    #[test]
    fn a_request_waiting_for_an_unknown_kid_waits_for_keys_published_elsewhere() {
        let view = KeyView {
            published_version: 2,
            kid_refetch_from: NOW.plus_ms(30_000),
            ..keys_arrived(1)
        };
        let mut world = World::new(false, view, MAX_PARKED);
        assert_eq!(
            world.admit_waiting(1, request(&token("k2", "a"))),
            WaitReason::UnknownKid
        );
        assert!(world.release(NOW.plus_ms(20)).is_empty(), "still coming");
    }

    #[test]
    fn a_request_waiting_for_keys_gets_503_at_its_deadline() {
        let mut world = World::keys_coming();
        world.admit_waiting(1, request(&token("k1", "a")));
        let deadline = world.deadline();
        assert!(world.release(UnixMillis(deadline.0 - 1)).is_empty());
        let decided = world.release(deadline);
        assert_eq!(status(&decided[0].1), 503);
        assert_eq!(world.counts.waiting, 0);
    }

    #[test]
    fn keys_landing_at_the_deadline_win_over_it() {
        let mut world = World::keys_coming();
        world.admit_waiting(1, request(&token("k1", "a")));
        let deadline = world.deadline();
        world.gate.set_key_view(P, keys_arrived(1));
        let decided = world.release(deadline);
        assert_eq!(status(&decided[0].1), 200);
    }

    #[test]
    fn a_full_room_decides_new_requests_at_once() {
        let mut world = World::new(false, fetching(), 2);
        world.admit_waiting(1, request(&token("k1", "a")));
        world.admit_waiting(2, request(&token("k1", "b")));
        let third = world.admit(3, request(&token("k1", "c")));
        assert_eq!(status(&third), 503);
        assert_eq!(world.room.len(), 2);
        assert_eq!(world.counts.waiting, 2);
    }

    #[test]
    fn a_replaced_configuration_decides_every_waiting_request_with_the_old_one() {
        let mut world = World::keys_coming();
        for id in 1..=3 {
            world.admit_waiting(id, request(&token("k1", &id.to_string())));
        }
        let decided = world
            .room
            .release_all(&mut world.gate, NOW.plus_ms(10), &mut world.counts);
        let ids: Vec<RequestId> = decided.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [RequestId(1), RequestId(2), RequestId(3)]);
        assert!(decided.iter().all(|(_, next)| status(next) == 503));
        assert!(world.room.is_empty());
        assert_eq!(world.counts.waiting, 0);
    }

    #[test]
    fn an_unknown_kid_arranges_a_refetch_that_releases_every_request_waiting_for_it() {
        let mut stale = keys_arrived(1);
        stale.kid_refetch_from = NOW;
        let mut world = World::new(false, stale, MAX_PARKED);
        for id in 1..=5 {
            let reason = world.admit_waiting(id, request(&token("k2", &id.to_string())));
            assert_eq!(reason, WaitReason::UnknownKid);
        }
        assert_eq!(
            world.host.kid_refetches, 5,
            "each asks; the key sync's lease fetches once"
        );
        assert!(
            world.release(NOW.plus_ms(50)).is_empty(),
            "nothing changed yet"
        );
        // The refetch brings a new version, still without k2. A refetch would be allowed
        // again at once, but a request waits once per reason: every request is refused.
        let mut refetched = keys_arrived(2);
        refetched.kid_refetch_from = NOW;
        world.gate.set_key_view(P, refetched);
        let decided = world.release(NOW.plus_ms(100));
        assert_eq!(decided.len(), 5);
        assert!(decided.iter().all(|(_, next)| status(next) == 401));
        assert_eq!(world.counts.waiting, 0);
    }

    #[test]
    fn a_request_that_left_while_waiting_is_never_decided() {
        let mut world = World::keys_coming();
        world.admit_waiting(1, request(&token("k1", "a")));
        world.admit_waiting(2, request(&token("k1", "b")));
        world.room.leave(RequestId(1), &mut world.counts);
        assert_eq!(world.counts.waiting, 1);
        world.gate.set_key_view(P, keys_arrived(1));
        let decided = world.release(NOW.plus_ms(10));
        let ids: Vec<RequestId> = decided.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [RequestId(2)]);
        assert_eq!(world.counts.waiting, 0);
    }

    #[test]
    fn requests_for_one_opaque_token_wait_for_one_introspection() {
        let mut world = World::new(true, keys_arrived(1), MAX_PARKED);
        for id in 1..=3 {
            let reason = world.admit_waiting(id, request("opaque-token-1"));
            assert_eq!(reason, WaitReason::Introspection);
        }
        assert_eq!(
            world.host.introspections.len(),
            1,
            "one callout for the token"
        );
        assert_eq!(world.counts.introspection_misses, 3);
        assert_eq!(world.counts.waiting, 3);
        // Still in flight: nobody is released before the deadline.
        assert!(world.release(NOW.plus_ms(100)).is_empty());
    }

    #[test]
    fn an_introspection_that_never_answers_ends_in_503_at_the_deadline() {
        let mut world = World::new(true, keys_arrived(1), MAX_PARKED);
        world.admit_waiting(1, request("opaque-token-1"));
        let decided = world.release(world.deadline());
        assert_eq!(status(&decided[0].1), 503);
        assert_eq!(world.counts.waiting, 0);
        assert_eq!(
            world.counts.introspection_misses, 1,
            "the wait counted one miss, the deadline none"
        );
    }

    #[test]
    fn a_full_introspection_queue_answers_503_without_waiting() {
        let mut world = World::new(true, keys_arrived(1), MAX_PARKED);
        world.host.queue_bound = Some(1);
        world.admit_waiting(1, request("opaque-token-1"));
        let second = world.admit(2, request("opaque-token-2"));
        assert_eq!(status(&second), 503);
        assert_eq!(world.counts.introspection_misses, 1);
        assert_eq!(world.counts.waiting, 1);
    }
}
