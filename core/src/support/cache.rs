//! A bounded cache (by entry count and by bytes) with per-entry expiry, for verified tokens
//! and introspection answers. Eviction is oldest-inserted first, which under a TTL is also
//! the soonest to expire; expired entries are dropped when met.
//!
//! Entries are found by a keyed digest (SipHash with a per-cache random key) of the key's
//! length and last [`DIGEST_TAIL`] bytes, then compared in full with [`crate::support::scan::same`]:
//! a map keyed by the token itself hashed all of it and compared it byte by byte, most of a
//! cache hit's work. The tail is enough: keys are tokens that passed their signature check
//! (the tail is the signature) or SHA-256 digests (introspection), so nobody can make two keys
//! share a tail without the signing key. And two keys that do share a digest only take each
//! other's place (one entry per digest, compared in full): never a chain to walk.
//!
//! The byte count is what the cache holds on the heap (see [`crate::support::heap`]): each entry's key,
//! its value's `Rc` block and what the value owns (the caller says), and the map's table and
//! the insertion queue, which grow with the entries and are kept when entries go.

use crate::support::heap;
use crate::support::scan;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::rc::Rc;

/// Bounds of one cache. A zero `max_entries` disables the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// How many bytes at the end of a key the digest covers, with the key's length.
pub const DIGEST_TAIL: usize = 48;

struct Slot<V> {
    key: Box<str>,
    value: Rc<V>,
    expires_at: u64,
    size: usize,
    seq: u64,
}

/// The map's own hasher for keys that are digests already: it passes them through.
#[derive(Default)]
struct Digest(u64);

impl Hasher for Digest {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 digests are hashed (write_u64); fold anything else in all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub struct BoundedCache<V> {
    map: HashMap<u64, Slot<V>, BuildHasherDefault<Digest>>,
    /// Digest and sequence number of each insertion, oldest first.
    order: VecDeque<(u64, u64)>,
    keyed: RandomState,
    limits: CacheLimits,
    /// Bytes of the live entries.
    bytes: usize,
    /// The map's capacity when its table was last allocated: `capacity()` falls below it as
    /// removals leave tombstones, the table stays.
    table_capacity: usize,
    next_seq: u64,
}

impl<V> BoundedCache<V> {
    pub fn new(limits: CacheLimits) -> Self {
        BoundedCache {
            map: HashMap::default(),
            order: VecDeque::new(),
            keyed: RandomState::new(),
            limits,
            bytes: 0,
            table_capacity: 0,
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes the cache holds: its entries, the map's table and the insertion queue.
    pub fn bytes(&self) -> usize {
        self.bytes + self.structure_bytes()
    }

    /// Bytes one entry holds: its key, its value's `Rc` block and `value_bytes`.
    pub fn entry_bytes(key: &str, value_bytes: usize) -> usize {
        heap::alloc(key.len()) + heap::rc::<V>() + value_bytes
    }

    /// The map's table (a slot and a control byte per bucket; 8 buckets per 7 of capacity,
    /// a power of two) and the queue's buffer.
    pub(crate) fn structure_bytes(&self) -> usize {
        let buckets = match self.table_capacity {
            0 => 0,
            c if c < 8 => c + 1,
            c => c / 7 * 8,
        };
        let slot = std::mem::size_of::<(u64, Slot<V>)>();
        let table = heap::alloc(buckets * (slot + 1) + 16);
        table + heap::buffer::<(u64, u64)>(self.order.capacity())
    }

    fn digest(&self, key: &str) -> u64 {
        let bytes = key.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(DIGEST_TAIL)..];
        let mut hasher = self.keyed.build_hasher();
        hasher.write_usize(bytes.len());
        hasher.write(tail);
        hasher.finish()
    }

    /// The slot holding exactly `key`, with its digest.
    fn lookup(&self, key: &str) -> Option<(u64, &Slot<V>)> {
        let digest = self.digest(key);
        self.map
            .get(&digest)
            .filter(|slot| scan::same(slot.key.as_bytes(), key.as_bytes()))
            .map(|slot| (digest, slot))
    }

    /// The entry for `key` if it has not expired at `now` (an expired one is removed).
    pub fn get(&mut self, key: &str, now: u64) -> Option<Rc<V>> {
        let (digest, slot) = self.lookup(key)?;
        if now < slot.expires_at {
            return Some(Rc::clone(&slot.value));
        }
        self.remove_digest(digest);
        None
    }

    pub fn remove(&mut self, key: &str) {
        if let Some((digest, _)) = self.lookup(key) {
            self.remove_digest(digest);
        }
    }

    fn remove_digest(&mut self, digest: u64) {
        if let Some(slot) = self.map.remove(&digest) {
            self.bytes -= slot.size;
        }
    }

    /// Stores `value` until `expires_at`; `value_bytes` is what it owns on the heap
    /// ([`crate::support::heap`]). Entries too large for the byte bound are not stored. Returns the
    /// value either way.
    pub fn insert(&mut self, key: &str, value: V, value_bytes: usize, expires_at: u64) -> Rc<V> {
        let value = Rc::new(value);
        let size = Self::entry_bytes(key, value_bytes);
        if self.limits.max_entries == 0 || size > self.limits.max_bytes {
            return value;
        }
        // The same token again, or (never seen in practice: a 64-bit keyed digest) another
        // token with the same digest: either way the new entry takes the place.
        let digest = self.digest(key);
        self.remove_digest(digest);
        while self.map.len() >= self.limits.max_entries
            || self.bytes() + size > self.limits.max_bytes
        {
            if !self.evict_oldest() {
                break;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((digest, seq));
        self.bytes += size;
        self.map.insert(
            digest,
            Slot {
                key: key.into(),
                value: Rc::clone(&value),
                expires_at,
                size,
                seq,
            },
        );
        self.table_capacity = self.table_capacity.max(self.map.capacity());
        // Replaced and expired keys leave stale queue entries behind; keep the queue bounded.
        if self.order.len() > 2 * self.limits.max_entries + 16 {
            let map = &self.map;
            self.order
                .retain(|(d, seq)| map.get(d).is_some_and(|slot| slot.seq == *seq));
        }
        // The table or the queue may have grown: make room again, sparing the new entry.
        while self.bytes() > self.limits.max_bytes && self.map.len() > 1 {
            if !self.evict_oldest() {
                break;
            }
        }
        value
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((digest, seq)) = self.order.pop_front() {
            if self.map.get(&digest).is_some_and(|slot| slot.seq == seq) {
                self.remove_digest(digest);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_entries: usize, max_bytes: usize) -> BoundedCache<u32> {
        BoundedCache::new(CacheLimits {
            max_entries,
            max_bytes,
        })
    }

    #[test]
    fn entries_expire() {
        let mut c = cache(10, 10_000);
        c.insert("a", 1, 0, 100);
        assert_eq!(c.get("a", 99).as_deref(), Some(&1));
        assert_eq!(c.get("a", 100), None);
        assert!(c.is_empty());
        assert_eq!(c.bytes(), c.structure_bytes(), "the entry's bytes are gone");
    }

    #[test]
    fn count_bound_evicts_oldest_first() {
        let mut c = cache(2, 10_000);
        c.insert("a", 1, 0, 100);
        c.insert("b", 2, 0, 100);
        c.insert("c", 3, 0, 100);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a", 0), None);
        assert!(c.get("b", 0).is_some() && c.get("c", 0).is_some());
    }

    #[test]
    fn byte_bound_evicts_until_it_fits() {
        let entry = BoundedCache::<u32>::entry_bytes("a", 1000);
        let mut c = cache(100, entry * 3 + 1000);
        for k in ["a", "b", "c", "d", "e"] {
            c.insert(k, 0, 1000, 100);
        }
        assert_eq!(c.len(), 3);
        assert!(c.bytes() <= entry * 3 + 1000);
        assert!(c.get("e", 0).is_some());
    }

    #[test]
    fn an_entry_counts_its_key_its_rc_block_and_its_value() {
        assert_eq!(
            BoundedCache::<u32>::entry_bytes(&"k".repeat(300), 50),
            heap::alloc(300) + heap::rc::<u32>() + 50
        );
    }

    #[test]
    fn the_table_and_the_queue_count_and_stay_when_the_entries_go() {
        let mut c = cache(1000, 1 << 20);
        let empty = c.bytes();
        let keys: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        for k in &keys {
            c.insert(k, 0, 0, 100);
        }
        let slot = std::mem::size_of::<(u64, Slot<u32>)>();
        assert!(c.structure_bytes() >= 100 * (slot + 1) + 100 * 16);
        for k in &keys {
            c.remove(k);
        }
        assert!(c.is_empty());
        assert!(c.bytes() > empty);
        assert_eq!(c.bytes(), c.structure_bytes());
    }

    #[test]
    fn the_byte_bound_holds_when_the_table_grows() {
        // Entries of a few hundred bytes, as tokens are: the table and the queue take their
        // share of the bound.
        let entry = BoundedCache::<u32>::entry_bytes("0000", 400);
        let max_bytes = 64 * entry;
        let mut c = cache(10_000, max_bytes);
        for i in 0..1000 {
            c.insert(&format!("{:04}", i), 0, 400, 100);
            assert!(c.bytes() <= max_bytes, "{} > {}", c.bytes(), max_bytes);
        }
        assert!(c.len() > 32, "{} entries", c.len());
        assert!(c.len() < 64, "the table and the queue are counted");
    }

    #[test]
    fn oversized_entries_and_disabled_caches_store_nothing() {
        let mut c = cache(10, 50);
        c.insert("a", 1, 1000, 100);
        assert!(c.is_empty());
        let mut off = cache(0, 10_000);
        off.insert("a", 1, 0, 100);
        assert!(off.is_empty());
    }

    #[test]
    fn reinserting_a_key_keeps_accounting_exact() {
        let mut c = cache(2, 10_000);
        for i in 0..1000 {
            c.insert("same", i, 10, 100);
        }
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.bytes(),
            BoundedCache::<u32>::entry_bytes("same", 10) + c.structure_bytes()
        );
        assert!(c.order.len() <= 2 * 2 + 16 + 1);
        c.insert("other", 1, 10, 100);
        c.insert("third", 1, 10, 100);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("same", 0), None);
    }

    #[test]
    fn a_token_is_found_only_by_the_same_bytes() {
        let mut c = cache(10, 100_000);
        let token = "a".repeat(300);
        c.insert(&token, 7, 0, 100);
        assert_eq!(c.get(&token.clone(), 0).as_deref(), Some(&7));
        let mut other = token.clone();
        other.replace_range(299.., "b");
        assert_eq!(c.get(&other, 0), None);
        assert_eq!(c.get(&token[..299], 0), None);
        c.remove(&other);
        assert_eq!(c.len(), 1, "removing another token leaves the entry");
    }

    #[test]
    fn keys_that_share_a_digest_replace_each_other() {
        // Same length and tail, different start: the same digest, and never confused.
        let tail = "t".repeat(DIGEST_TAIL);
        let (a, b) = (format!("a{}", tail), format!("b{}", tail));
        let mut c = cache(10, 100_000);
        c.insert(&a, 1, 0, 100);
        assert_eq!(c.get(&b, 0), None);
        c.insert(&b, 2, 0, 100);
        assert_eq!(c.get(&a, 0), None);
        assert_eq!(c.get(&b, 0).as_deref(), Some(&2));
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.bytes(),
            BoundedCache::<u32>::entry_bytes(&b, 0) + c.structure_bytes()
        );
    }
}
