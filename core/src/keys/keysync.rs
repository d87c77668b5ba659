//! One key fetch per refresh for the whole Envoy process.
//!
//! Every worker runs its own VM, so each would fetch on its own. Instead they share one
//! [`SyncRecord`] per provider (proxy-wasm shared data, updated with compare-and-swap): a
//! worker that finds a fetch due takes the record's lease, fetches, publishes the key set and
//! releases the lease; the others load the published set. The decisions are pure functions of
//! the record and the time; the host does the shared-data calls.

use crate::keys::remote::RefreshPolicy;
use serde::{Deserialize, Serialize};

/// The shared state of one provider's keys. Times in Unix milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    /// Bumped by every successful fetch; the published body carries the same number.
    pub version: u64,
    /// When the current key set was fetched.
    pub fetched_at: u64,
    /// When the next regular refresh is due.
    pub refresh_at: u64,
    /// No fetch before this (backoff after failures).
    pub retry_at: u64,
    pub failures: u32,
    /// When the last refetch for an unknown `kid` started.
    pub kid_refetch_at: u64,
    /// The worker holding the fetch lease (0: none) and until when.
    pub lease_owner: u64,
    pub lease_until: u64,
    /// From the configuration or from discovery.
    pub jwks_uri: Option<String>,
    pub introspection_endpoint: Option<String>,
    pub last_error: Option<String>,
}

impl SyncRecord {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A record that does not parse is treated as absent (fail towards fetching).
    pub fn from_bytes(bytes: &[u8]) -> SyncRecord {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    pub fn lease_held(&self, now: u64) -> bool {
        self.lease_owner != 0 && now < self.lease_until
    }

    /// When a regular fetch may start (ignoring leases).
    pub fn next_fetch_at(&self) -> u64 {
        if self.version == 0 {
            self.retry_at
        } else {
            self.refresh_at.max(self.retry_at)
        }
    }

    /// Earliest time an unknown `kid` may trigger a refetch.
    pub fn kid_refetch_from(&self, policy: &RefreshPolicy) -> u64 {
        let window = if self.kid_refetch_at == 0 {
            0
        } else {
            self.kid_refetch_at + policy.unknown_kid_ms
        };
        window.max(self.retry_at)
    }
}

/// Takes the lease if a fetch is due and nobody holds it: returns the record to write back
/// (with compare-and-swap) before fetching. `wants_kid_refetch`: a request is waiting for an
/// unknown `kid`.
pub fn try_begin(
    rec: &SyncRecord,
    me: u64,
    now: u64,
    wants_kid_refetch: bool,
    policy: &RefreshPolicy,
) -> Option<SyncRecord> {
    if rec.lease_held(now) {
        return None;
    }
    let regular = now >= rec.next_fetch_at();
    let for_kid = wants_kid_refetch && now >= rec.kid_refetch_from(policy);
    if !regular && !for_kid {
        return None;
    }
    let mut next = rec.clone();
    next.lease_owner = me;
    next.lease_until = now + policy.lease_ms;
    if for_kid && !regular {
        next.kid_refetch_at = now;
    }
    Some(next)
}

/// The record after this worker fetched a new key set (`max_age_s` from Cache-Control).
pub fn succeeded(
    rec: &SyncRecord,
    now: u64,
    max_age_s: Option<u64>,
    policy: &RefreshPolicy,
) -> SyncRecord {
    SyncRecord {
        version: rec.version + 1,
        fetched_at: now,
        refresh_at: now + policy.interval_ms(max_age_s),
        retry_at: 0,
        failures: 0,
        lease_owner: 0,
        lease_until: 0,
        last_error: None,
        ..rec.clone()
    }
}

/// The record after a failed fetch: the old keys stay, the next try backs off.
pub fn failed(
    rec: &SyncRecord,
    now: u64,
    error: &str,
    jitter: f64,
    policy: &RefreshPolicy,
) -> SyncRecord {
    let failures = rec.failures.saturating_add(1);
    SyncRecord {
        failures,
        retry_at: now + policy.backoff_ms(failures, jitter),
        lease_owner: 0,
        lease_until: 0,
        last_error: Some(error.to_owned()),
        ..rec.clone()
    }
}

/// A published key set: the record version it belongs to, then the JWKS text.
pub fn encode_body(version: u64, jwks: &[u8]) -> Vec<u8> {
    let mut out = version.to_le_bytes().to_vec();
    out.extend_from_slice(jwks);
    out
}

pub fn decode_body(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let version = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    Some((version, &bytes[8..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RefreshPolicy {
        RefreshPolicy {
            min_ms: 1_000,
            ..crate::keys::remote::tests::policy()
        }
    }

    #[test]
    fn the_first_fetch_is_due_at_once_and_only_one_worker_gets_the_lease() {
        let rec = SyncRecord::default();
        let taken = try_begin(&rec, 7, 1_000, false, &policy()).unwrap();
        assert_eq!((taken.lease_owner, taken.lease_until), (7, 11_000));
        assert!(try_begin(&taken, 8, 2_000, true, &policy()).is_none());
        // A lease whose holder vanished expires.
        assert!(try_begin(&taken, 8, 11_000, false, &policy()).is_some());
    }

    #[test]
    fn success_publishes_a_new_version_and_schedules_the_refresh() {
        let taken = try_begin(&SyncRecord::default(), 7, 1_000, false, &policy()).unwrap();
        let done = succeeded(&taken, 1_500, Some(300), &policy());
        assert_eq!(done.version, 1);
        assert_eq!(done.refresh_at, 301_500);
        assert_eq!(done.lease_owner, 0);
        assert!(try_begin(&done, 8, 300_000, false, &policy()).is_none());
        assert!(try_begin(&done, 8, 301_500, false, &policy()).is_some());
    }

    #[test]
    fn unknown_kids_refetch_at_most_once_per_window() {
        let fresh = succeeded(&SyncRecord::default(), 0, Some(300), &policy());
        let first = try_begin(&fresh, 1, 5_000, true, &policy()).unwrap();
        assert_eq!(first.kid_refetch_at, 5_000);
        let after = succeeded(&first, 5_100, Some(300), &policy());
        assert!(
            try_begin(&after, 1, 20_000, true, &policy()).is_none(),
            "inside the 30 s window"
        );
        assert!(try_begin(&after, 1, 35_000, true, &policy()).is_some());
        assert_eq!(after.kid_refetch_from(&policy()), 35_000);
    }

    #[test]
    fn failures_back_off_and_keep_the_old_keys() {
        let fresh = succeeded(&SyncRecord::default(), 0, Some(60), &policy());
        let taken = try_begin(&fresh, 1, 60_000, false, &policy()).unwrap();
        let failed1 = failed(&taken, 60_000, "HTTP status 500", 0.5, &policy());
        assert_eq!(
            (failed1.version, failed1.failures, failed1.retry_at),
            (1, 1, 61_000)
        );
        assert!(
            try_begin(&failed1, 1, 60_500, true, &policy()).is_none(),
            "backoff applies to kid refetches too"
        );
        let taken = try_begin(&failed1, 1, 61_000, false, &policy()).unwrap();
        let failed2 = failed(&taken, 61_000, "x", 0.5, &policy());
        assert_eq!(failed2.retry_at, 63_000);
        let ok = succeeded(
            &try_begin(&failed2, 1, 63_000, false, &policy()).unwrap(),
            63_000,
            None,
            &policy(),
        );
        assert_eq!((ok.failures, ok.retry_at, ok.last_error), (0, 0, None));
    }

    #[test]
    fn records_survive_the_round_trip_and_garbage_reads_as_empty() {
        let rec = SyncRecord {
            version: 3,
            jwks_uri: Some("http://x/keys".into()),
            ..Default::default()
        };
        assert_eq!(SyncRecord::from_bytes(&rec.to_bytes()), rec);
        assert_eq!(
            SyncRecord::from_bytes(b"\x00garbage"),
            SyncRecord::default()
        );
        let body = encode_body(9, b"{\"keys\":[]}");
        assert_eq!(decode_body(&body), Some((9, &b"{\"keys\":[]}"[..])));
        assert_eq!(decode_body(b"short"), None);
    }
}
