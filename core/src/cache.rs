//! A bounded cache (by entry count and by bytes) with per-entry expiry, for verified tokens
//! and, later, introspection answers. Eviction is oldest-inserted first, which under a TTL is
//! also the soonest to expire; expired entries are dropped when met.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Bounds of one cache. A zero `max_entries` disables the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// Bookkeeping cost of one entry beyond its key and value, for the byte bound.
const ENTRY_OVERHEAD: usize = 96;

struct Slot<V> {
    value: Rc<V>,
    expires_at: u64,
    size: usize,
    seq: u64,
}

pub struct BoundedCache<V> {
    map: HashMap<Rc<str>, Slot<V>>,
    order: VecDeque<(Rc<str>, u64)>,
    limits: CacheLimits,
    bytes: usize,
    next_seq: u64,
}

impl<V> BoundedCache<V> {
    pub fn new(limits: CacheLimits) -> Self {
        BoundedCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            limits,
            bytes: 0,
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes accounted to the live entries.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The entry for `key` if it has not expired at `now` (an expired one is removed).
    pub fn get(&mut self, key: &str, now: u64) -> Option<Rc<V>> {
        let slot = self.map.get(key)?;
        if now < slot.expires_at {
            return Some(Rc::clone(&slot.value));
        }
        self.remove(key);
        None
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(slot) = self.map.remove(key) {
            self.bytes -= slot.size;
        }
    }

    /// Stores `value` until `expires_at`; `value_bytes` is its approximate heap size.
    /// Entries too large for the byte bound are not stored. Returns the value either way.
    pub fn insert(&mut self, key: &str, value: V, value_bytes: usize, expires_at: u64) -> Rc<V> {
        let value = Rc::new(value);
        let size = key.len() + value_bytes + ENTRY_OVERHEAD;
        if self.limits.max_entries == 0 || size > self.limits.max_bytes {
            return value;
        }
        self.remove(key);
        while self.map.len() >= self.limits.max_entries || self.bytes + size > self.limits.max_bytes
        {
            if !self.evict_oldest() {
                break;
            }
        }
        let key: Rc<str> = Rc::from(key);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((Rc::clone(&key), seq));
        self.bytes += size;
        self.map.insert(
            key,
            Slot {
                value: Rc::clone(&value),
                expires_at,
                size,
                seq,
            },
        );
        // Replaced and expired keys leave stale queue entries behind; keep the queue bounded.
        if self.order.len() > 2 * self.limits.max_entries + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, seq)| map.get(k).is_some_and(|slot| slot.seq == *seq));
        }
        value
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|slot| slot.seq == seq) {
                self.remove(&key);
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
        assert_eq!(c.bytes(), 0);
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
        let entry = 1 + 100 + ENTRY_OVERHEAD;
        let mut c = cache(100, entry * 3);
        for k in ["a", "b", "c", "d", "e"] {
            c.insert(k, 0, 100, 100);
        }
        assert_eq!(c.len(), 3);
        assert!(c.bytes() <= entry * 3);
        assert!(c.get("e", 0).is_some());
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
        assert_eq!(c.bytes(), 4 + 10 + ENTRY_OVERHEAD);
        assert!(c.order.len() <= 2 * 2 + 16 + 1);
        c.insert("other", 1, 10, 100);
        c.insert("third", 1, 10, 100);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("same", 0), None);
    }
}
