//! Randomness from the host: a VM's identity in fetch leases and the jitter of retries.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// A random number from the host's entropy (WASI `random_get`, through std's hasher seed).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x746f_6b65_6e67_6174);
    h.finish()
}
