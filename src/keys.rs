//! Remote key sets on the host side: the shared-data record every worker reads on its tick,
//! the fetch lease, the callouts, and the per-provider metrics. The decisions (is a fetch due,
//! what does an answer mean) are `tokengate_core::{keys::keysync, keys::remote}`.

use crate::callout::CalloutAnswer;
use crate::entropy::random_u64;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};
use std::rc::Rc;
use std::time::Duration;
use tokengate_core::config::settings::{KeySource, Settings};
use tokengate_core::engine::gate::KeyView;
use tokengate_core::keys::jwks::{self, KeyPolicy, KeySet, ParsedKeys};
use tokengate_core::keys::keysync::{self, SyncRecord};
use tokengate_core::keys::remote::{self, Callout, FetchError, FetchKind, RemoteJwks, Url};
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

struct KeyMetrics {
    success: Option<u32>,
    failure: Vec<(&'static str, Option<u32>)>,
    unknown_kid: Option<u32>,
    age: Option<u32>,
    /// JWKs not read because the set had `max_keys` usable keys before them.
    over_max_keys: Option<u32>,
    /// Key material of this provider, summed over the VMs (each adds its own change).
    memory: Option<u32>,
}

impl KeyMetrics {
    fn define(provider: &str) -> KeyMetrics {
        let name = |what: &str| format!("tokengate.jwks.{}.{}", provider, what);
        KeyMetrics {
            success: counter(&name("fetch_success")),
            failure: FetchError::CAUSES
                .iter()
                .map(|c| (*c, counter(&name(&format!("fetch_failure.{}", c)))))
                .collect(),
            unknown_kid: counter(&name("refetch_unknown_kid")),
            age: hostcalls::define_metric(MetricType::Gauge, &name("age_seconds")).ok(),
            over_max_keys: counter(&name("keys_over_max")),
            memory: hostcalls::define_metric(MetricType::Gauge, &name("key_memory_bytes")).ok(),
        }
    }
}

/// One remote provider's key sync in this VM.
pub struct ProviderSync {
    pub provider: ProviderId,
    name: String,
    issuer: Option<String>,
    remote: RemoteJwks,
    policy: KeyPolicy,
    record_key: String,
    body_key: String,
    /// Version of the key set loaded into this VM's gate.
    pub loaded_version: u64,
    keys: Option<Rc<KeySet>>,
    /// SHA-256 of the body this VM fetched last: the same body is not parsed again.
    fetched_digest: Option<[u8; 32]>,
    /// The key material this VM last added to the memory gauge.
    reported_memory: i64,
    inflight: Option<(u32, FetchKind)>,
    /// A parked request waits for an unknown `kid`.
    pub wants_kid_refetch: bool,
    metrics: KeyMetrics,
}

/// Where an FNV-1a hash keeps providers of different plugins apart in the shared namespace
/// (Istio gives every WasmPlugin the same empty vm_id).
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl ProviderSync {
    pub fn for_settings(settings: &Settings) -> Vec<ProviderSync> {
        settings
            .providers_by_id()
            .filter_map(|(index, p)| match &p.keys {
                KeySource::Remote(remote) => {
                    let uri = remote.jwks_uri.as_ref().map_or("", |u| u.path.as_str());
                    let host = remote
                        .jwks_uri
                        .as_ref()
                        .or(remote.discovery.as_ref())
                        .map_or("", |u| u.authority.as_str());
                    // The hosts discovery may name are part of the identity: a record written
                    // under other trust rules is not read. v2: records hold only URLs that
                    // passed those rules (earlier modules checked none).
                    let allowed = remote.allowed_hosts.join(",");
                    let id = fnv(&[
                        p.issuer.as_deref().unwrap_or(""),
                        host,
                        uri,
                        &remote.cluster,
                        remote.authority.as_deref().unwrap_or(""),
                        &allowed,
                    ]);
                    let ns = format!("tokengate.v2/{}/{:016x}", p.name, id);
                    Some(ProviderSync {
                        provider: index,
                        name: p.name.clone(),
                        issuer: p.issuer.clone(),
                        remote: (**remote).clone(),
                        policy: p.key_policy,
                        record_key: format!("{}/record", ns),
                        body_key: format!("{}/keys", ns),
                        loaded_version: 0,
                        keys: None,
                        fetched_digest: None,
                        reported_memory: 0,
                        inflight: None,
                        wants_kid_refetch: false,
                        metrics: KeyMetrics::define(&p.name),
                    })
                }
                KeySource::Inline(_) | KeySource::None => None,
            })
            .collect()
    }

    pub fn owns(&self, token: u32) -> bool {
        self.inflight.is_some_and(|(t, _)| t == token)
    }

    /// Creates the shared record if no worker has yet. Called from `on_configure`, which
    /// Envoy runs on the main thread before the workers' VMs start, so that workers never
    /// race to create it.
    pub fn ensure_record(&self) {
        if let Ok((None, _)) = hostcalls::get_shared_data(&self.record_key) {
            let _ = hostcalls::set_shared_data(
                &self.record_key,
                Some(&SyncRecord::default().to_bytes()),
                None,
            );
        }
    }

    fn read_record(&self) -> (SyncRecord, Option<u32>) {
        match hostcalls::get_shared_data(&self.record_key) {
            Ok((Some(bytes), cas)) => (SyncRecord::from_bytes(&bytes), cas),
            _ => {
                self.ensure_record();
                match hostcalls::get_shared_data(&self.record_key) {
                    Ok((Some(bytes), cas)) => (SyncRecord::from_bytes(&bytes), cas),
                    _ => (SyncRecord::default(), None),
                }
            }
        }
    }

    /// Applies `change` to the shared record with compare-and-swap, retrying on conflicts.
    fn update_record(&self, change: impl Fn(&SyncRecord) -> SyncRecord) -> Option<SyncRecord> {
        for _ in 0..8 {
            let (rec, cas) = self.read_record();
            let next = change(&rec);
            match hostcalls::set_shared_data(&self.record_key, Some(&next.to_bytes()), cas) {
                Ok(()) => return Some(next),
                Err(Status::CasMismatch) => continue,
                Err(status) => {
                    log::warn!(
                        "tokengate: provider {}: cannot write shared key state: {:?}",
                        self.name,
                        status
                    );
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
    fn load_published(&mut self, rec: &SyncRecord) {
        if rec.version <= self.loaded_version {
            return;
        }
        let Ok((Some(bytes), _)) = hostcalls::get_shared_data(&self.body_key) else {
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
        let started = Stopwatch::start();
        match remote::parse_jwks_body(body, &self.policy, self.keys.as_deref()) {
            Ok(parsed) => {
                let count = parsed.keys.len();
                self.keys = Some(Rc::new(parsed.keys));
                self.loaded_version = version;
                // These keys came from another worker's body, not from the last one fetched
                // here: a refetch of that one must be read again.
                self.fetched_digest = None;
                self.report_memory();
                log::info!(
                    "tokengate: provider {}: loaded {} published key(s), version {}, read in {} us, {} bytes of key material in this VM",
                    self.name,
                    count,
                    version,
                    started.micros(),
                    self.reported_memory
                );
            }
            Err(e) => log::warn!(
                "tokengate: provider {}: published key set is unusable: {}",
                self.name,
                e
            ),
        }
    }

    /// Drops the keys and takes their material out of the gauge (the configuration is gone).
    pub fn retire(&mut self) {
        self.keys = None;
        self.report_memory();
    }

    /// Adds this VM's change of key material to the provider's gauge.
    fn report_memory(&mut self) {
        let now = self
            .keys
            .as_ref()
            .map_or(0, |k| i64::try_from(k.memory_bytes()).unwrap_or(i64::MAX));
        if let Some(id) = self.metrics.memory {
            if now != self.reported_memory
                && hostcalls::increment_metric(id, now - self.reported_memory).is_ok()
            {
                self.reported_memory = now;
            }
        }
    }

    /// The gate's view of these keys at `now`. The shared record keeps its times as Unix
    /// milliseconds.
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

    /// The tick: load what other workers published, then start a fetch if one is due and
    /// this worker wins the lease. Returns the view for the gate.
    pub fn tick(&mut self, me: u64, at: UnixMillis) -> KeyView {
        let now = at.0;
        let (rec, cas) = self.read_record();
        self.load_published(&rec);
        if self.inflight.is_none() {
            if let Some(next) =
                keysync::try_begin(&rec, me, now, self.wants_kid_refetch, &self.remote.refresh)
            {
                let for_kid = next.kid_refetch_at != rec.kid_refetch_at;
                if hostcalls::set_shared_data(&self.record_key, Some(&next.to_bytes()), cas).is_ok()
                {
                    if for_kid {
                        bump(self.metrics.unknown_kid);
                    }
                    self.wants_kid_refetch = false;
                    self.start_fetch(&next, now);
                }
            }
        }
        // Tables are built as keys verify tokens (KeySet::after_valid_signature).
        self.report_memory();
        if let Some(age) = self.metrics.age {
            if rec.version > 0 {
                let _ = hostcalls::record_metric(age, now.saturating_sub(rec.fetched_at) / 1000);
            }
        }
        self.current_view(at)
    }

    /// Dispatches discovery or the key fetch, whichever is next.
    fn start_fetch(&mut self, rec: &SyncRecord, now: u64) {
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
                return self.fail(now, &FetchError::Malformed("no jwks_uri".into()))
            }
        };
        self.dispatch(Callout::get(kind, &self.remote, &url), now);
    }

    fn dispatch(&mut self, callout: Callout, now: u64) {
        let headers = callout.headers();
        let result = hostcalls::dispatch_http_call(
            &callout.cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(callout.timeout_ms),
        );
        match result {
            Ok(token) => self.inflight = Some((token, callout.kind)),
            Err(status) => {
                log::error!(
                    "tokengate: provider {}: cannot call cluster {:?} ({:?}); is it defined in Envoy?",
                    self.name,
                    callout.cluster,
                    status
                );
                self.fail(now, &FetchError::Unreachable);
            }
        }
    }

    fn fail(&mut self, now: u64, error: &FetchError) {
        self.inflight = None;
        let text = error.to_string();
        log::warn!(
            "tokengate: provider {}: key fetch failed: {}; keeping the last good keys",
            self.name,
            text
        );
        if let Some((_, id)) = self
            .metrics
            .failure
            .iter()
            .find(|(c, _)| *c == error.cause())
        {
            bump(*id);
        }
        let jitter = (random_u64() % 1_000_000) as f64 / 1_000_000.0;
        let policy = self.remote.refresh;
        self.update_record(|rec| keysync::failed(rec, now, &text, jitter, &policy));
    }

    /// Handles the answer to this provider's callout.
    pub fn on_response(&mut self, num_headers: usize, body_size: usize, at: UnixMillis) {
        let now = at.0;
        let Some((_, kind)) = self.inflight.take() else {
            return;
        };
        let max = self.remote.max_bytes;
        let read = CalloutAnswer::read(num_headers, body_size, max);
        let answer = read.answer();
        match kind {
            FetchKind::Discovery => {
                match remote::read_discovery(&answer, max, self.issuer.as_deref(), &self.remote) {
                    Ok(found) => {
                        log::info!(
                            "tokengate: provider {}: discovery found jwks_uri {}",
                            self.name,
                            found.jwks_uri
                        );
                        let lease = now + self.remote.refresh.lease_ms;
                        self.update_record(|rec| SyncRecord {
                            jwks_uri: Some(found.jwks_uri.clone()),
                            introspection_endpoint: found.introspection_endpoint.clone(),
                            lease_until: lease,
                            ..rec.clone()
                        });
                        match Url::parse(&found.jwks_uri) {
                            Ok(url) => self
                                .dispatch(Callout::get(FetchKind::Jwks, &self.remote, &url), now),
                            Err(e) => self.fail(now, &FetchError::Malformed(e)),
                        }
                    }
                    Err(e) => self.fail(now, &e),
                }
            }
            FetchKind::Jwks => {
                let started = Stopwatch::start();
                let read = remote::read_jwks(
                    &answer,
                    max,
                    &self.policy,
                    self.keys.as_deref(),
                    self.fetched_digest.as_ref(),
                );
                match read {
                    Ok(fetched) => {
                        self.fetched_digest = Some(fetched.body_digest);
                        if let Some(parsed) = fetched.keys {
                            self.take_fetched(parsed, started);
                        }
                        let policy = self.remote.refresh;
                        let max_age = fetched.max_age_s;
                        let done = self
                            .update_record(|rec| keysync::succeeded(rec, now, max_age, &policy));
                        // This VM holds what it just fetched: current as of that version.
                        if let (Some(done), true) = (done, self.keys.is_some()) {
                            self.loaded_version = self.loaded_version.max(done.version);
                        }
                        bump(self.metrics.success);
                    }
                    Err(e) => self.fail(now, &e),
                }
            }
        }
    }

    /// Uses freshly fetched keys and publishes them to the other workers, unless they are
    /// the keys already in use.
    fn take_fetched(&mut self, parsed: ParsedKeys, started: Stopwatch) {
        for w in &parsed.warnings {
            log::warn!(
                "tokengate: provider {}: fetched key {} (skipped)",
                self.name,
                w
            );
        }
        if parsed.more_warnings > 0 {
            log::warn!(
                "tokengate: provider {}: {} more fetched key(s) skipped",
                self.name,
                parsed.more_warnings
            );
        }
        if parsed.over_max_keys > 0 {
            log::warn!(
                "tokengate: provider {}: the key set has {} more key(s) after the first {} usable ones: not read (max_keys)",
                self.name,
                parsed.over_max_keys,
                self.policy.max_keys
            );
            if let Some(id) = self.metrics.over_max_keys {
                let n = i64::try_from(parsed.over_max_keys).unwrap_or(i64::MAX);
                let _ = hostcalls::increment_metric(id, n);
            }
        }
        if self
            .keys
            .as_ref()
            .is_some_and(|k| k.digest() == parsed.keys.digest())
        {
            log::debug!(
                "tokengate: provider {}: fetched keys unchanged, version {}",
                self.name,
                self.loaded_version
            );
            return;
        }
        let (rec, _) = self.read_record();
        let version = rec.version + 1;
        let _ = hostcalls::set_shared_data(
            &self.body_key,
            Some(&keysync::encode_body(version, parsed.text.as_bytes())),
            None,
        );
        let count = parsed.keys.len();
        self.keys = Some(Rc::new(parsed.keys));
        self.loaded_version = version;
        self.report_memory();
        log::info!(
            "tokengate: provider {}: fetched {} key(s), version {}, read in {} us, {} bytes of key material in this VM",
            self.name,
            count,
            version,
            started.micros(),
            self.reported_memory
        );
    }

    /// The introspection endpoint discovery found, if any, and whether discovery is how this
    /// provider finds its endpoints and has not answered yet. One read of the shared record
    /// for both.
    pub fn discovered_introspection_endpoint(&self) -> (Option<Url>, bool) {
        let (rec, _) = self.read_record();
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
    pub fn first_view(&self, now: UnixMillis) -> KeyView {
        let (rec, _) = self.read_record();
        self.view(&rec, now)
    }

    /// The gate's view as the shared record stands now, with the keys it describes: what
    /// another worker published since this VM last looked is loaded first, so that the view
    /// never shows a newer version than the keys it carries.
    pub fn current_view(&mut self, now: UnixMillis) -> KeyView {
        let (rec, _) = self.read_record();
        self.load_published(&rec);
        self.view(&rec, now)
    }
}

/// Wall time of a key set's reading, for the log (the host's clock; none on a host without).
#[derive(Clone, Copy)]
struct Stopwatch(Option<std::time::SystemTime>);

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch(hostcalls::get_current_time().ok())
    }

    fn micros(self) -> u128 {
        match (self.0, hostcalls::get_current_time().ok()) {
            (Some(from), Some(to)) => to.duration_since(from).map_or(0, |d| d.as_micros()),
            _ => 0,
        }
    }
}
