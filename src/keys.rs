//! Remote key sets on the host side: carrying out what `tokengate_core::keys::sync` decides
//! with proxy-wasm's shared data and callouts, and logging and counting what it reports.

use crate::callout::{self, CalloutAnswer};
use crate::entropy::random_u64;
use crate::metrics::{add, bump, counter, gauge, set};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;
use tokengate_core::config::settings::{KeySource, Settings};
use tokengate_core::keys::remote::{Callout, FetchError, Url};
use tokengate_core::keys::sync::{
    KeyHost, KeySync, KeyView, KeysRead, StoreError, Stored, SyncEvent,
};
use tokengate_core::provider::ProviderId;
use tokengate_core::time::UnixMillis;

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
            age: gauge(&name("age_seconds")),
            over_max_keys: counter(&name("keys_over_max")),
            memory: gauge(&name("key_memory_bytes")),
        }
    }
}

/// The proxy-wasm host as the key sync sees it.
struct Host;

impl KeyHost for Host {
    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(bytes), cas)) => Ok(Some((bytes, cas))),
            Ok((None, _)) => Ok(None),
            Err(status) => Err(StoreError::Failed(format!("{:?}", status))),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::Conflict),
            Err(status) => Err(StoreError::Failed(format!("{:?}", status))),
        }
    }

    fn dispatch(&mut self, callout: &Callout) -> Result<u32, String> {
        callout::dispatch(
            &callout.cluster,
            callout.headers(),
            None,
            callout.timeout_ms,
        )
    }

    fn random(&mut self) -> u64 {
        random_u64()
    }

    fn stopwatch_us(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
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

/// One remote provider's key sync in this VM, with its metrics.
pub struct ProviderSync {
    pub provider: ProviderId,
    name: String,
    sync: KeySync,
    /// The key material this VM last added to the memory gauge.
    reported_memory: i64,
    metrics: KeyMetrics,
}

impl ProviderSync {
    /// A sync per remote provider; `me` names this VM in fetch leases.
    pub fn for_settings(settings: &Settings, me: u64) -> Vec<ProviderSync> {
        settings
            .providers_by_id()
            .filter_map(|(id, p)| match &p.keys {
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
                    let hash = fnv(&[
                        p.issuer.as_deref().unwrap_or(""),
                        host,
                        uri,
                        &remote.cluster,
                        remote.authority.as_deref().unwrap_or(""),
                        &allowed,
                    ]);
                    let namespace = format!("tokengate.v2/{}/{:016x}", p.name, hash);
                    let sync = KeySync::new(
                        id,
                        p.issuer.clone(),
                        (**remote).clone(),
                        p.key_policy,
                        &namespace,
                        me,
                    );
                    Some(ProviderSync {
                        provider: id,
                        name: p.name.clone(),
                        sync,
                        reported_memory: 0,
                        metrics: KeyMetrics::define(&p.name),
                    })
                }
                KeySource::Inline(_) | KeySource::None => None,
            })
            .collect()
    }

    pub fn owns(&self, token: u32) -> bool {
        self.sync.owns(token)
    }

    /// Creates the shared record if no worker has yet (see [`KeySync::ensure_record`]).
    pub fn ensure_record(&self) {
        self.sync.ensure_record(&mut Host);
    }

    /// A waiting request needs a refetch for an unknown `kid`.
    pub fn want_kid_refetch(&mut self) {
        self.sync.want_kid_refetch();
    }

    /// Drops the keys and takes their material out of the gauge (the configuration is gone).
    pub fn retire(&mut self) {
        self.sync.retire();
        self.report_memory();
    }

    /// The tick: load what other workers published, start a fetch if one is due. Returns the
    /// view for the gate.
    pub fn tick(&mut self, at: UnixMillis) -> KeyView {
        let mut events = Vec::new();
        let (view, age) = self.sync.tick(at, &mut Host, &mut events);
        self.carry_out(&events);
        if let Some(age) = age {
            set(self.metrics.age, age);
        }
        view
    }

    /// Handles the answer to this provider's callout. Returns the view after it.
    pub fn on_response(&mut self, num_headers: usize, body_size: usize, at: UnixMillis) -> KeyView {
        let read = CalloutAnswer::read(num_headers, body_size, self.sync.max_answer_bytes());
        let mut events = Vec::new();
        let view = self
            .sync
            .answered(&read.answer(), at, &mut Host, &mut events);
        self.carry_out(&events);
        view
    }

    /// See [`KeySync::discovered_introspection_endpoint`].
    pub fn discovered_introspection_endpoint(&self) -> (Option<Url>, bool) {
        self.sync.discovered_introspection_endpoint(&mut Host)
    }

    /// See [`KeySync::first_view`].
    pub fn first_view(&self, now: UnixMillis) -> KeyView {
        self.sync.first_view(now, &mut Host)
    }

    /// Logs and counts what the sync reports, then the key material's change in the gauge.
    fn carry_out(&mut self, events: &[SyncEvent]) {
        for event in events {
            self.report(event);
        }
        // Tables are built as keys verify tokens (KeySet::after_valid_signature).
        self.report_memory();
    }

    fn report(&mut self, event: &SyncEvent) {
        let name = self.name.as_str();
        match event {
            SyncEvent::Discovered { jwks_uri } => log::info!(
                "tokengate: provider {}: discovery found jwks_uri {}",
                name,
                jwks_uri
            ),
            SyncEvent::CannotCall { cluster, why } => log::error!(
                "tokengate: provider {}: cannot call cluster {:?} ({}); is it defined in Envoy?",
                name,
                cluster,
                why
            ),
            SyncEvent::FetchFailed(error) => {
                log::warn!(
                    "tokengate: provider {}: key fetch failed: {}; keeping the last good keys",
                    name,
                    error
                );
                let cause = error.cause();
                if let Some((_, id)) = self.metrics.failure.iter().find(|(c, _)| *c == cause) {
                    bump(*id);
                }
            }
            SyncEvent::FetchSucceeded => bump(self.metrics.success),
            SyncEvent::Fetched(read) => {
                self.log_read(&format!("fetched {} key(s)", read.count), read)
            }
            SyncEvent::Loaded(read) => {
                self.log_read(&format!("loaded {} published key(s)", read.count), read)
            }
            SyncEvent::Unchanged { version } => log::debug!(
                "tokengate: provider {}: fetched keys unchanged, version {}",
                name,
                version
            ),
            SyncEvent::KeySkipped(why) => log::warn!(
                "tokengate: provider {}: fetched key {} (skipped)",
                name,
                why
            ),
            SyncEvent::MoreKeysSkipped(n) => log::warn!(
                "tokengate: provider {}: {} more fetched key(s) skipped",
                name,
                n
            ),
            SyncEvent::OverMaxKeys { count, max } => {
                log::warn!(
                    "tokengate: provider {}: the key set has {} more key(s) after the first {} usable ones: not read (max_keys)",
                    name,
                    count,
                    max
                );
                add(
                    self.metrics.over_max_keys,
                    i64::try_from(*count).unwrap_or(i64::MAX),
                );
            }
            SyncEvent::PublishedUnusable(e) => log::warn!(
                "tokengate: provider {}: published key set is unusable: {}",
                name,
                e
            ),
            SyncEvent::RecordNotWritten(why) => log::warn!(
                "tokengate: provider {}: cannot write shared key state: {}",
                name,
                why
            ),
            SyncEvent::KidRefetch => bump(self.metrics.unknown_kid),
        }
    }

    /// Logs a key set read into this VM, with the key material it now holds here.
    fn log_read(&mut self, what: &str, read: &KeysRead) {
        self.report_memory();
        log::info!(
            "tokengate: provider {}: {}, version {}, read in {} us, {} bytes of key material in this VM",
            self.name,
            what,
            read.version,
            read.read_us,
            self.reported_memory
        );
    }

    /// Adds this VM's change of key material to the provider's gauge.
    fn report_memory(&mut self) {
        let now = i64::try_from(self.sync.memory_bytes()).unwrap_or(i64::MAX);
        if let Some(id) = self.metrics.memory {
            if now != self.reported_memory
                && hostcalls::increment_metric(id, now - self.reported_memory).is_ok()
            {
                self.reported_memory = now;
            }
        }
    }
}
