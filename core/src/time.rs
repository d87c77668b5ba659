//! Times that carry their unit. The host reads its clock once per event and hands the
//! engine a [`UnixMillis`]; JWT and introspection times are whole seconds
//! ([`UnixMillis::as_secs`]).

use std::time::Duration;

/// A point in time: milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// Later than any clock reading ("never", "for good").
    pub const MAX: UnixMillis = UnixMillis(u64::MAX);

    /// Whole seconds since the epoch, the unit of JWT `exp`, `nbf` and `iat`.
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// `ms` milliseconds later (saturating).
    pub fn plus_ms(self, ms: u64) -> UnixMillis {
        UnixMillis(self.0.saturating_add(ms))
    }

    /// How long from `self` until `later`; zero when `later` is not later.
    pub fn until(self, later: UnixMillis) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_whole_seconds() {
        assert_eq!(UnixMillis(1_999).as_secs(), 1);
        assert_eq!(UnixMillis(2_000).as_secs(), 2);
    }

    #[test]
    fn durations_never_run_backwards() {
        let t = UnixMillis(5_000);
        assert_eq!(t.until(t.plus_ms(250)), Duration::from_millis(250));
        assert_eq!(t.until(UnixMillis(4_000)), Duration::ZERO);
        assert_eq!(UnixMillis::MAX.plus_ms(1), UnixMillis::MAX);
    }
}
