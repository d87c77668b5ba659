//! One remote provider's keys in one VM: loading what other workers published, taking the
//! fetch lease when a fetch is due, discovery chained to the key fetch, reading the answers,
//! publishing what was fetched, and the view the gate decides with.
//!
//! Every worker runs its own VM; they share one [`SyncRecord`] and one published body per
//! provider ([`keysync`]). This machine does no I/O: the host hands in the time with each
//! event and lends its shared data, callouts and randomness through [`KeyHost`]; what
//! happened comes back as [`SyncEvent`]s, which the host logs and counts.

use crate::keys::jwks::{self, KeyPolicy, KeySet, ParsedKeys};
use crate::keys::keysync::{self, SyncRecord};
use crate::keys::remote::{self, Answer, Callout, FetchError, FetchKind, RemoteJwks, Url};
use crate::provider::ProviderId;
use crate::time::UnixMillis;
use std::rc::Rc;

/// What one VM knows about a remote provider's keys; refreshed on every tick from the shared
/// [`SyncRecord`], handed to the gate.
#[derive(Debug, Clone, Default)]
pub struct KeyView {
    /// The last good key set loaded into this VM.
    pub keys: Option<Rc<KeySet>>,
    /// The version of `keys` (0: none loaded yet).
    pub version: u64,
    /// The newest version some worker has published. Newer than `version` means keys exist
    /// that this VM has not loaded yet (it loads them on its next tick): they are coming.
    pub published_version: u64,
    /// The keys are used until then (fetched_at + max staleness).
    pub usable_until: UnixMillis,
    /// Some worker is fetching right now.
    pub fetching: bool,
    /// When the next fetch can start (for waiting and for Retry-After).
    pub next_fetch_at: UnixMillis,
    /// Earliest time an unknown `kid` may trigger a refetch.
    pub kid_refetch_from: UnixMillis,
    pub last_error: Option<String>,
}

impl KeyView {
    pub(crate) fn usable(&self, now: UnixMillis) -> Option<&KeySet> {
        self.keys.as_deref().filter(|_| now < self.usable_until)
    }

    /// Whether new keys can come soon enough to make a request wait for them: published
    /// already and not loaded here, being fetched, or due to be.
    pub fn coming(&self, now: UnixMillis) -> bool {
        self.newer_published() || self.fetching || now >= self.next_fetch_at
    }

    /// Whether keys that may hold an unknown `kid` can come soon enough to wait for them:
    /// published already and not loaded here, being fetched, or a refetch is allowed.
    pub fn refetch_coming(&self, now: UnixMillis) -> bool {
        self.newer_published() || self.fetching || now >= self.kid_refetch_from
    }

    fn newer_published(&self) -> bool {
        self.published_version > self.version
    }

    pub(crate) fn retry_after_s(&self, now: UnixMillis) -> u64 {
        if self.fetching {
            1
        } else {
            let wait = now.until(self.next_fetch_at).as_millis();
            u64::try_from(wait.div_ceil(1000)).map_or(300, |s| s.clamp(1, 300))
        }
    }
}

/// A shared-data write that did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Another VM wrote the value since it was read (compare-and-swap).
    Conflict,
    /// Any other refusal, in the host's words.
    Failed(String),
}

/// A shared-data value and its compare-and-swap token.
pub type Stored = (Vec<u8>, Option<u32>);

/// What the machine needs of the host: its shared data (values with a compare-and-swap
/// token), its callouts, a random number and a stopwatch for how long a read took.
pub trait KeyHost {
    /// The value at `key` and its compare-and-swap token (`Ok(None)`: absent); an error
    /// when the host cannot read it.
    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError>;
    /// Writes `value` at `key`, if `cas` (when given) still matches.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
    /// Sends `callout`: its token, or why it could not be sent.
    fn dispatch(&mut self, callout: &Callout) -> Result<u32, String>;
    fn random(&mut self) -> u64;
    /// Microseconds on some clock of the host's, only ever subtracted (0 without one).
    fn stopwatch_us(&self) -> u64;
}

/// What happened, for the host to log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// Discovery answered with this `jwks_uri`.
    Discovered { jwks_uri: String },
    /// The callout could not be sent to `cluster` (not defined in Envoy?).
    CannotCall { cluster: String, why: String },
    /// A fetch failed; the last good keys stay.
    FetchFailed(FetchError),
    /// A key set came back good (changed or not).
    FetchSucceeded,
    /// This VM fetched, read and published a new key set.
    Fetched(KeysRead),
    /// This VM loaded a key set another worker published.
    Loaded(KeysRead),
    /// The fetched keys are the ones in use.
    Unchanged { version: u64 },
    /// A fetched JWK was skipped, and why.
    KeySkipped(String),
    /// More skipped JWKs than were reported one by one.
    MoreKeysSkipped(usize),
    /// JWKs not read because the set had `max` usable keys before them.
    OverMaxKeys { count: usize, max: usize },
    /// The body another worker published does not read in this VM.
    PublishedUnusable(FetchError),
    /// The shared record could not be written.
    RecordNotWritten(String),
    /// A refetch for an unknown `kid` started.
    KidRefetch,
}

/// A key set read into this VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysRead {
    pub count: usize,
    pub version: u64,
    pub read_us: u64,
}

/// One remote provider's key sync in one VM.
pub struct KeySync {
    pub provider: ProviderId,
    issuer: Option<String>,
    remote: RemoteJwks,
    policy: KeyPolicy,
    record_key: String,
    body_key: String,
    /// Version of the key set loaded into this VM.
    loaded_version: u64,
    keys: Option<Rc<KeySet>>,
    /// SHA-256 of the body this VM fetched last: the same body is not parsed again.
    fetched_digest: Option<[u8; 32]>,
    inflight: Option<(u32, FetchKind)>,
    /// A waiting request needs a refetch for an unknown `kid`.
    wants_kid_refetch: bool,
    /// Who this VM is in fetch leases.
    me: u64,
}

impl KeySync {
    /// The sync of `provider`, whose record and body live at `namespace` + `/record` and
    /// `/keys` in the shared data; `me` names this VM in fetch leases.
    pub fn new(
        provider: ProviderId,
        issuer: Option<String>,
        remote: RemoteJwks,
        policy: KeyPolicy,
        namespace: &str,
        me: u64,
    ) -> KeySync {
        KeySync {
            provider,
            issuer,
            remote,
            policy,
            record_key: format!("{}/record", namespace),
            body_key: format!("{}/keys", namespace),
            loaded_version: 0,
            keys: None,
            fetched_digest: None,
            inflight: None,
            wants_kid_refetch: false,
            me,
        }
    }

    /// Whether the callout with this token is this sync's.
    pub fn owns(&self, token: u32) -> bool {
        self.inflight.is_some_and(|(t, _)| t == token)
    }

    /// The most an answer may be: a longer body is not read.
    pub fn max_answer_bytes(&self) -> usize {
        self.remote.max_bytes
    }

    /// The keys this VM holds, for the memory gauge.
    pub fn memory_bytes(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.memory_bytes())
    }

    /// Drops the keys (the configuration is gone).
    pub fn retire(&mut self) {
        self.keys = None;
    }

    /// A waiting request needs a refetch for an unknown `kid`; the next tick asks for one.
    pub fn want_kid_refetch(&mut self) {
        self.wants_kid_refetch = true;
    }

    /// Creates the shared record if no worker has yet. Called when a configuration starts,
    /// which Envoy does on the main thread before the workers' VMs, so that workers never
    /// race to create it.
    pub fn ensure_record(&self, host: &mut dyn KeyHost) {
        // Only a record the host says is absent: an unreadable one is never overwritten.
        if let Ok(None) = host.get(&self.record_key) {
            let _ = host.set(&self.record_key, &SyncRecord::default().to_bytes(), None);
        }
    }

    fn read_record(&self, host: &mut dyn KeyHost) -> (SyncRecord, Option<u32>) {
        if let Ok(Some((bytes, cas))) = host.get(&self.record_key) {
            return (SyncRecord::from_bytes(&bytes), cas);
        }
        self.ensure_record(host);
        match host.get(&self.record_key) {
            Ok(Some((bytes, cas))) => (SyncRecord::from_bytes(&bytes), cas),
            _ => (SyncRecord::default(), None),
        }
    }

    /// Applies `change` to the shared record with compare-and-swap, retrying on conflicts.
    fn update_record(
        &self,
        host: &mut dyn KeyHost,
        events: &mut Vec<SyncEvent>,
        change: impl Fn(&SyncRecord) -> SyncRecord,
    ) -> Option<SyncRecord> {
        for _ in 0..8 {
            let (rec, cas) = self.read_record(host);
            let next = change(&rec);
            match host.set(&self.record_key, &next.to_bytes(), cas) {
                Ok(()) => return Some(next),
                Err(StoreError::Conflict) => continue,
                Err(StoreError::Failed(why)) => {
                    events.push(SyncEvent::RecordNotWritten(why));
                    return None;
                }
            }
        }
        None
    }

    /// Loads a newer published key set, if any. The published text holds only the keys the
    /// fetching worker kept; the same text as the loaded keys is not parsed again. A fetch
    /// that found the keys unchanged bumps the record's version but publishes no body: the
    /// keys loaded here are then current as of that version (so the view does not report
    /// newer keys coming, and the body is not read again on every tick).
    fn load_published(
        &mut self,
        rec: &SyncRecord,
        host: &mut dyn KeyHost,
        events: &mut Vec<SyncEvent>,
    ) {
        if rec.version <= self.loaded_version {
            return;
        }
        let Ok(Some((bytes, _))) = host.get(&self.body_key) else {
            return;
        };
        let Some((version, body)) = keysync::decode_body(&bytes) else {
            return;
        };
        if version <= self.loaded_version {
            if self.keys.is_some() {
                self.loaded_version = rec.version;
            }
            return;
        }
        if let Some(keys) = &self.keys {
            if keys.digest() == jwks::digest(body) {
                self.loaded_version = version.max(rec.version);
                return;
            }
        }
        let started = host.stopwatch_us();
        match remote::parse_jwks_body(body, &self.policy, self.keys.as_deref()) {
            Ok(parsed) => {
                let count = parsed.keys.len();
                self.keys = Some(Rc::new(parsed.keys));
                self.loaded_version = version;
                // These keys came from another worker's body, not from the last one fetched
                // here: a refetch of that one must be read again.
                self.fetched_digest = None;
                events.push(SyncEvent::Loaded(KeysRead {
                    count,
                    version,
                    read_us: host.stopwatch_us().saturating_sub(started),
                }));
            }
            Err(e) => events.push(SyncEvent::PublishedUnusable(e)),
        }
    }

    /// The view `rec` gives at `now`. The shared record keeps its times as Unix milliseconds.
    fn view(&self, rec: &SyncRecord, now: UnixMillis) -> KeyView {
        KeyView {
            keys: self.keys.clone(),
            version: self.loaded_version,
            published_version: rec.version,
            usable_until: if self.keys.is_some() {
                UnixMillis(rec.fetched_at).plus_ms(self.remote.refresh.max_stale_ms)
            } else {
                UnixMillis(0)
            },
            fetching: self.inflight.is_some() || rec.lease_held(now.0),
            next_fetch_at: UnixMillis(rec.next_fetch_at()),
            kid_refetch_from: UnixMillis(rec.kid_refetch_from(&self.remote.refresh)),
            last_error: rec.last_error.clone(),
        }
    }

    /// The tick at `now`: load what other workers published, then start a fetch if one is
    /// due and this VM wins the lease. Returns the view for the gate and, once keys were
    /// fetched by some worker, their age in seconds (for its gauge).
    pub fn tick(
        &mut self,
        now: UnixMillis,
        host: &mut dyn KeyHost,
        events: &mut Vec<SyncEvent>,
    ) -> (KeyView, Option<u64>) {
        let (rec, cas) = self.read_record(host);
        self.load_published(&rec, host, events);
        if self.inflight.is_none() {
            let policy = self.remote.refresh;
            if let Some(next) =
                keysync::try_begin(&rec, self.me, now.0, self.wants_kid_refetch, &policy)
            {
                let for_kid = next.kid_refetch_at != rec.kid_refetch_at;
                if host.set(&self.record_key, &next.to_bytes(), cas).is_ok() {
                    if for_kid {
                        events.push(SyncEvent::KidRefetch);
                    }
                    self.wants_kid_refetch = false;
                    self.start_fetch(&next, now, host, events);
                }
            }
        }
        let age = (rec.version > 0).then(|| now.0.saturating_sub(rec.fetched_at) / 1000);
        (self.current_view(now, host, events), age)
    }

    /// Dispatches discovery or the key fetch, whichever is next.
    fn start_fetch(
        &mut self,
        rec: &SyncRecord,
        now: UnixMillis,
        host: &mut dyn KeyHost,
        events: &mut Vec<SyncEvent>,
    ) {
        // A jwks_uri in the record was found by discovery, maybe under an earlier
        // configuration of this process: used only while this one trusts it, else discovery
        // runs again.
        let found = rec
            .jwks_uri
            .as_deref()
            .and_then(|found| self.remote.trusted_url(found));
        let (kind, url) = match (&self.remote.jwks_uri, found, &self.remote.discovery) {
            (Some(configured), _, _) => (FetchKind::Jwks, configured.clone()),
            (None, Some(found), _) => (FetchKind::Jwks, found),
            (None, None, Some(discovery)) => (FetchKind::Discovery, discovery.clone()),
            (None, None, None) => {
                let error = FetchError::Malformed("no jwks_uri".into());
                return self.fail(now, &error, host, events);
            }
        };
        self.dispatch(Callout::get(kind, &self.remote, &url), now, host, events);
    }

    fn dispatch(
        &mut self,
        callout: Callout,
        now: UnixMillis,
        host: &mut dyn KeyHost,
        events: &mut Vec<SyncEvent>,
    ) {
        match host.dispatch(&callout) {
            Ok(token) => self.inflight = Some((token, callout.kind)),
            Err(why) => {
                events.push(SyncEvent::CannotCall {
                    cluster: callout.cluster.clone(),
                    why,
                });
                self.fail(now, &FetchError::Unreachable, host, events);
            }
        }
    }

    /// A failed fetch: the last good keys stay, the next try backs off.
    fn fail(
        &mut self,
        now: UnixMillis,
        error: &FetchError,
        host: &mut dyn KeyHost,
        events: &mut Vec<SyncEvent>,
    ) {
        self.inflight = None;
        events.push(SyncEvent::FetchFailed(error.clone()));
        let text = error.to_string();
        let jitter = (host.random() % 1_000_000) as f64 / 1_000_000.0;
        let policy = self.remote.refresh;
        self.update_record(host, events, |rec| {
            keysync::failed(rec, now.0, &text, jitter, &policy)
        });
    }

    /// The answer to this sync's callout (the host checked [`KeySync::owns`]): discovery
    /// chains to the key fetch, a key set is read and published. Returns the view after it.
    pub fn answered(
        &mut self,
        answer: &Answer<'_>,
        now: UnixMillis,
        host: &mut dyn KeyHost,
        events: &mut Vec<SyncEvent>,
    ) -> KeyView {
        if let Some((_, kind)) = self.inflight.take() {
            match kind {
                FetchKind::Discovery => self.discovery_answered(answer, now, host, events),
                FetchKind::Jwks => self.keys_answered(answer, now, host, events),
            }
        }
        self.current_view(now, host, events)
    }

    fn discovery_answered(
        &mut self,
        answer: &Answer<'_>,
        now: UnixMillis,
        host: &mut dyn KeyHost,
        events: &mut Vec<SyncEvent>,
    ) {
        let max = self.remote.max_bytes;
        let found = match remote::read_discovery(answer, max, self.issuer.as_deref(), &self.remote)
        {
            Ok(found) => found,
            Err(e) => return self.fail(now, &e, host, events),
        };
        events.push(SyncEvent::Discovered {
            jwks_uri: found.jwks_uri.clone(),
        });
        let lease = now.0 + self.remote.refresh.lease_ms;
        self.update_record(host, events, |rec| SyncRecord {
            jwks_uri: Some(found.jwks_uri.clone()),
            introspection_endpoint: found.introspection_endpoint.clone(),
            lease_until: lease,
            ..rec.clone()
        });
        match Url::parse(&found.jwks_uri) {
            Ok(url) => {
                let callout = Callout::get(FetchKind::Jwks, &self.remote, &url);
                self.dispatch(callout, now, host, events);
            }
            Err(e) => self.fail(now, &FetchError::Malformed(e), host, events),
        }
    }

    fn keys_answered(
        &mut self,
        answer: &Answer<'_>,
        now: UnixMillis,
        host: &mut dyn KeyHost,
        events: &mut Vec<SyncEvent>,
    ) {
        let started = host.stopwatch_us();
        let read = remote::read_jwks(
            answer,
            self.remote.max_bytes,
            &self.policy,
            self.keys.as_deref(),
            self.fetched_digest.as_ref(),
        );
        let fetched = match read {
            Ok(fetched) => fetched,
            Err(e) => return self.fail(now, &e, host, events),
        };
        self.fetched_digest = Some(fetched.body_digest);
        if let Some(parsed) = fetched.keys {
            self.take_fetched(parsed, started, host, events);
        }
        let policy = self.remote.refresh;
        let max_age = fetched.max_age_s;
        let done = self.update_record(host, events, |rec| {
            keysync::succeeded(rec, now.0, max_age, &policy)
        });
        // This VM holds what it just fetched: current as of that version.
        if let (Some(done), true) = (done, self.keys.is_some()) {
            self.loaded_version = self.loaded_version.max(done.version);
        }
        events.push(SyncEvent::FetchSucceeded);
    }

    /// Uses freshly fetched keys and publishes them to the other workers, unless they are
    /// the keys already in use.
    fn take_fetched(
        &mut self,
        parsed: ParsedKeys,
        started: u64,
        host: &mut dyn KeyHost,
        events: &mut Vec<SyncEvent>,
    ) {
        events.extend(
            parsed
                .warnings
                .iter()
                .map(|w| SyncEvent::KeySkipped(w.to_string())),
        );
        if parsed.more_warnings > 0 {
            events.push(SyncEvent::MoreKeysSkipped(parsed.more_warnings));
        }
        if parsed.over_max_keys > 0 {
            events.push(SyncEvent::OverMaxKeys {
                count: parsed.over_max_keys,
                max: self.policy.max_keys,
            });
        }
        if self
            .keys
            .as_ref()
            .is_some_and(|k| k.digest() == parsed.keys.digest())
        {
            events.push(SyncEvent::Unchanged {
                version: self.loaded_version,
            });
            return;
        }
        let (rec, _) = self.read_record(host);
        let version = rec.version + 1;
        let body = keysync::encode_body(version, parsed.text.as_bytes());
        let _ = host.set(&self.body_key, &body, None);
        let count = parsed.keys.len();
        self.keys = Some(Rc::new(parsed.keys));
        self.loaded_version = version;
        events.push(SyncEvent::Fetched(KeysRead {
            count,
            version,
            read_us: host.stopwatch_us().saturating_sub(started),
        }));
    }

    /// The introspection endpoint discovery found, if any, and whether discovery is how this
    /// provider finds its endpoints and has not answered yet. One read of the shared record
    /// for both.
    pub fn discovered_introspection_endpoint(&self, host: &mut dyn KeyHost) -> (Option<Url>, bool) {
        let (rec, _) = self.read_record(host);
        let discovering = self.remote.jwks_uri.is_none()
            && self.remote.discovery.is_some()
            && rec.jwks_uri.is_none();
        let endpoint = rec
            .introspection_endpoint
            .as_deref()
            .and_then(|e| self.remote.trusted_url(e));
        (endpoint, discovering)
    }

    /// The view when a configuration starts: what the shared record says, with no keys
    /// loaded yet. They load on the first tick: a root context that Envoy configures but never
    /// ticks (and may never delete) must hold no key material. A request meanwhile waits for
    /// the keys the record says are published.
    pub fn first_view(&self, now: UnixMillis, host: &mut dyn KeyHost) -> KeyView {
        let (rec, _) = self.read_record(host);
        self.view(&rec, now)
    }

    /// The gate's view as the shared record stands now, with the keys it describes: what
    /// another worker published since this VM last looked is loaded first, so that the view
    /// never shows a newer version than the keys it carries.
    pub fn current_view(
        &mut self,
        now: UnixMillis,
        host: &mut dyn KeyHost,
        events: &mut Vec<SyncEvent>,
    ) -> KeyView {
        let (rec, _) = self.read_record(host);
        self.load_published(&rec, host, events);
        self.view(&rec, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::{compile_str, KeySource};
    use crate::support::b64;
    use std::cell::RefCell;
    use std::collections::HashMap;

    const ISSUER: &str = "https://idp.test";
    const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

    /// Shared data as proxy-wasm keeps it: values with a version for compare-and-swap.
    #[derive(Default)]
    struct Store {
        values: HashMap<String, (Vec<u8>, u32)>,
        writes: Vec<String>,
    }

    /// One VM's host: the process's shared store, its own callouts.
    struct MockHost<'a> {
        store: &'a RefCell<Store>,
        sent: Vec<(u32, Callout)>,
        next_token: u32,
        refuse_dispatch: bool,
    }

    impl<'a> MockHost<'a> {
        fn new(store: &'a RefCell<Store>) -> MockHost<'a> {
            MockHost {
                store,
                sent: Vec::new(),
                next_token: 1,
                refuse_dispatch: false,
            }
        }

        /// The path of the last callout and its token.
        fn last_sent(&self) -> (u32, String) {
            let (token, callout) = self.sent.last().expect("a callout was sent");
            (*token, callout.path.clone())
        }
    }

    impl KeyHost for MockHost<'_> {
        fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
            let store = self.store.borrow();
            Ok(store
                .values
                .get(key)
                .map(|(v, cas)| (v.clone(), Some(*cas))))
        }

        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let mut store = self.store.borrow_mut();
            let current = store.values.get(key).map_or(0, |(_, c)| *c);
            if cas.is_some_and(|cas| cas != current) {
                return Err(StoreError::Conflict);
            }
            store
                .values
                .insert(key.to_owned(), (value.to_vec(), current + 1));
            store.writes.push(key.to_owned());
            Ok(())
        }

        fn dispatch(&mut self, callout: &Callout) -> Result<u32, String> {
            if self.refuse_dispatch {
                return Err("BadArgument".into());
            }
            let token = self.next_token;
            self.next_token += 1;
            self.sent.push((token, callout.clone()));
            Ok(token)
        }

        fn random(&mut self) -> u64 {
            500_000
        }

        fn stopwatch_us(&self) -> u64 {
            0
        }
    }

    /// A provider of `ISSUER` whose `remote_jwks` is `remote`.
    fn remote(remote: serde_json::Value) -> RemoteJwks {
        let config =
            serde_json::json!({"providers": {"p": {"issuer": ISSUER, "remote_jwks": remote}}});
        let (settings, _) = compile_str(&config.to_string()).unwrap();
        match &settings.providers[0].keys {
            KeySource::Remote(r) => (**r).clone(),
            _ => unreachable!(),
        }
    }

    fn sync(remote: RemoteJwks, me: u64) -> KeySync {
        let issuer = Some(ISSUER.to_owned());
        KeySync::new(
            ProviderId::FIRST,
            issuer,
            remote,
            KeyPolicy::default(),
            "ns",
            me,
        )
    }

    fn discovered() -> RemoteJwks {
        remote(serde_json::json!({"cluster": "idp"}))
    }

    fn configured() -> RemoteJwks {
        remote(serde_json::json!({"cluster": "idp", "uri": "https://idp.test/keys"}))
    }

    fn jwks(x_seed: u8) -> String {
        let x = b64::encode(&[x_seed; 32]);
        format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k{}","x":"{}"}}]}}"#,
            x_seed, x
        )
    }

    fn ok(body: &str) -> Answer<'_> {
        Answer {
            status: Some(200),
            cache_control: Some("max-age=300"),
            body: body.as_bytes(),
            body_size: body.len(),
        }
    }

    fn record(store: &RefCell<Store>) -> SyncRecord {
        SyncRecord::from_bytes(&store.borrow().values["ns/record"].0)
    }

    #[test]
    fn discovery_answers_then_the_keys_are_fetched_from_the_jwks_uri_it_names() {
        let store = RefCell::new(Store::default());
        let mut host = MockHost::new(&store);
        let mut vm = sync(discovered(), 1);
        let mut events = Vec::new();
        vm.ensure_record(&mut host);
        let (view, _) = vm.tick(NOW, &mut host, &mut events);
        assert!(view.fetching && view.keys.is_none());
        let (token, path) = host.last_sent();
        assert_eq!(path, "/.well-known/openid-configuration");
        assert!(vm.owns(token));
        let doc =
            serde_json::json!({"issuer": ISSUER, "jwks_uri": "https://idp.test/oauth/v2/keys"})
                .to_string();
        let view = vm.answered(&ok(&doc), NOW.plus_ms(5), &mut host, &mut events);
        assert!(events.contains(&SyncEvent::Discovered {
            jwks_uri: "https://idp.test/oauth/v2/keys".into()
        }));
        assert!(view.fetching, "the key fetch follows at once");
        let (token, path) = host.last_sent();
        assert_eq!(path, "/oauth/v2/keys");
        assert!(vm.owns(token));
        assert_eq!(
            record(&store).jwks_uri.as_deref(),
            Some("https://idp.test/oauth/v2/keys")
        );
        let view = vm.answered(&ok(&jwks(1)), NOW.plus_ms(9), &mut host, &mut events);
        assert_eq!((view.version, view.published_version), (1, 1));
        assert_eq!(view.keys.map(|k| k.len()), Some(1));
        assert!(!view.fetching);
        assert!(events.contains(&SyncEvent::FetchSucceeded));
        assert_eq!(record(&store).lease_owner, 0, "the lease is released");
    }

    #[test]
    fn one_vm_takes_the_lease_and_the_others_load_what_it_published() {
        let store = RefCell::new(Store::default());
        let (mut host_a, mut host_b) = (MockHost::new(&store), MockHost::new(&store));
        let (mut a, mut b) = (sync(configured(), 1), sync(configured(), 2));
        let mut events = Vec::new();
        a.ensure_record(&mut host_a);
        a.tick(NOW, &mut host_a, &mut events);
        let (view, _) = b.tick(NOW, &mut host_b, &mut events);
        assert!(host_b.sent.is_empty(), "only the lease holder fetches");
        assert!(view.fetching, "the other VM sees the fetch under way");
        a.answered(&ok(&jwks(1)), NOW.plus_ms(5), &mut host_a, &mut events);
        let mut loaded = Vec::new();
        let (view, age) = b.tick(NOW.plus_ms(20), &mut host_b, &mut loaded);
        assert!(matches!(
            loaded.as_slice(),
            [SyncEvent::Loaded(KeysRead {
                count: 1,
                version: 1,
                ..
            })]
        ));
        assert_eq!((view.version, view.published_version), (1, 1));
        assert!(view.keys.is_some());
        assert_eq!(age, Some(0));
    }

    #[test]
    fn an_answer_for_a_callout_nobody_owns_changes_nothing() {
        let store = RefCell::new(Store::default());
        let mut host = MockHost::new(&store);
        let mut vm = sync(configured(), 1);
        let mut events = Vec::new();
        vm.tick(NOW, &mut host, &mut events);
        let (token, _) = host.last_sent();
        assert!(!vm.owns(token + 1));
        let mut idle = sync(configured(), 2);
        let before = store.borrow().writes.len();
        let view = idle.answered(&ok(&jwks(1)), NOW, &mut host, &mut events);
        assert!(view.keys.is_none());
        assert_eq!(store.borrow().writes.len(), before, "nothing was written");
    }

    #[test]
    fn a_callout_that_cannot_be_sent_counts_as_a_failure_and_backs_off() {
        let store = RefCell::new(Store::default());
        let mut host = MockHost::new(&store);
        host.refuse_dispatch = true;
        let mut vm = sync(configured(), 1);
        let mut events = Vec::new();
        let (view, _) = vm.tick(NOW, &mut host, &mut events);
        assert!(
            matches!(events.first(), Some(SyncEvent::CannotCall { cluster, .. }) if cluster == "idp")
        );
        assert!(events.contains(&SyncEvent::FetchFailed(FetchError::Unreachable)));
        assert!(!view.fetching);
        assert!(view.next_fetch_at > NOW, "the retry backs off");
        assert_eq!(record(&store).failures, 1);
        host.refuse_dispatch = false;
        vm.tick(NOW.plus_ms(100), &mut host, &mut events);
        assert!(host.sent.is_empty(), "no retry before the backoff");
    }

    /// Two VMs sharing `store`: A fetched version 1 of the keys at `NOW`, B loaded it.
    fn fetched_by_a_and_loaded_by_b(
        store: &RefCell<Store>,
    ) -> ((KeySync, MockHost<'_>), (KeySync, MockHost<'_>)) {
        let (mut host_a, mut host_b) = (MockHost::new(store), MockHost::new(store));
        let (mut a, mut b) = (sync(configured(), 1), sync(configured(), 2));
        let mut events = Vec::new();
        a.tick(NOW, &mut host_a, &mut events);
        a.answered(&ok(&jwks(1)), NOW, &mut host_a, &mut events);
        b.tick(NOW, &mut host_b, &mut events);
        ((a, host_a), (b, host_b))
    }

    #[test]
    fn an_unchanged_refetch_publishes_nothing_and_other_vms_stay_current() {
        let store = RefCell::new(Store::default());
        let (mut vm_a, mut vm_b) = fetched_by_a_and_loaded_by_b(&store);
        let ((a, host_a), (b, host_b)) = (&mut vm_a, &mut vm_b);
        let mut events = Vec::new();
        // The refresh is due after max-age (300 s).
        let later = NOW.plus_ms(300_000);
        a.tick(later, host_a, &mut events);
        let bodies = || {
            store
                .borrow()
                .writes
                .iter()
                .filter(|k| *k == "ns/keys")
                .count()
        };
        assert_eq!(bodies(), 1);
        let mut refetch = Vec::new();
        let view = a.answered(&ok(&jwks(1)), later, host_a, &mut refetch);
        assert!(refetch.contains(&SyncEvent::FetchSucceeded));
        assert_eq!(bodies(), 1, "the same body is not published again");
        assert_eq!(record(&store).version, 2);
        assert_eq!((view.version, view.published_version), (2, 2));
        let mut loaded = Vec::new();
        let (view, _) = b.tick(later.plus_ms(20), host_b, &mut loaded);
        assert!(loaded.is_empty(), "nothing new to load");
        assert_eq!(
            (view.version, view.published_version),
            (2, 2),
            "no newer keys coming"
        );
    }

    #[test]
    fn a_changed_refetch_is_published_and_loaded_elsewhere() {
        let store = RefCell::new(Store::default());
        let (mut vm_a, mut vm_b) = fetched_by_a_and_loaded_by_b(&store);
        let ((a, host_a), (b, host_b)) = (&mut vm_a, &mut vm_b);
        let mut events = Vec::new();
        let later = NOW.plus_ms(300_000);
        a.tick(later, host_a, &mut events);
        a.answered(&ok(&jwks(2)), later, host_a, &mut events);
        let (view, _) = b.tick(later.plus_ms(20), host_b, &mut events);
        assert_eq!(view.version, 2);
        assert!(view.keys.unwrap().has_kid("k2"));
    }

    #[test]
    fn a_waiting_unknown_kid_asks_for_a_refetch_on_the_next_tick() {
        let store = RefCell::new(Store::default());
        let mut host = MockHost::new(&store);
        let mut vm = sync(configured(), 1);
        let mut events = Vec::new();
        vm.tick(NOW, &mut host, &mut events);
        vm.answered(&ok(&jwks(1)), NOW, &mut host, &mut events);
        vm.tick(NOW.plus_ms(1_000), &mut host, &mut events);
        assert_eq!(host.sent.len(), 1, "no refetch without a reason");
        vm.want_kid_refetch();
        let mut refetch = Vec::new();
        let (view, _) = vm.tick(NOW.plus_ms(2_000), &mut host, &mut refetch);
        assert_eq!(refetch, vec![SyncEvent::KidRefetch]);
        assert_eq!(host.sent.len(), 2);
        assert!(view.fetching);
    }
}
