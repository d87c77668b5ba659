//! How often a VM's root context wakes up (its tick), a pure function of what it waits for.
//!
//! The tick loads keys other workers published, starts fetches that are due and decides
//! parked requests whose wait is over. Ticking fast costs CPU in every VM, so it is fast only
//! while it shortens a wait: while requests are parked it starts fast (keys may arrive from
//! another worker any moment) and backs off, never past the earliest request's deadline;
//! with nothing parked it wakes when the next fetch is due, at most once a second.

use crate::engine::gate::WaitReason;
use crate::time::UnixMillis;
use std::time::Duration;

/// Period right after a request parks, and the shortest regular period.
pub const FAST: Duration = Duration::from_millis(20);
/// Longest period while requests are parked: the most a request waits for keys another
/// worker already published.
pub const MAX_WHILE_PARKED: Duration = Duration::from_millis(160);
/// Period with nothing to wait for: gauges, the log level and the regular refresh.
pub const IDLE: Duration = Duration::from_millis(1000);

/// What the root waits for at one tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct Waiting {
    /// Introspections queued and not sent yet.
    pub introspections_queued: bool,
    /// The earliest deadline of the parked requests, if any are parked.
    pub parked_deadline: Option<UnixMillis>,
    /// The earliest time a key fetch (discovery, refresh or retry) of a provider this VM is
    /// not already fetching may start.
    pub next_fetch_at: Option<UnixMillis>,
}

/// The next tick's period, and the backoff to keep for the tick after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickPlan {
    pub period: Duration,
    pub backoff: Duration,
}

/// Plans the next tick at `now`, given the backoff the previous plan kept.
pub fn plan(now: UnixMillis, waiting: &Waiting, backoff: Duration) -> TickPlan {
    let until = |at: UnixMillis| now.until(at);
    let fetch = waiting.next_fetch_at.map(until);
    if waiting.introspections_queued {
        return TickPlan {
            period: FAST,
            backoff: FAST,
        };
    }
    if let Some(deadline) = waiting.parked_deadline {
        let step = backoff.clamp(FAST, MAX_WHILE_PARKED);
        let period = [Some(step), Some(until(deadline)), fetch]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(step)
            .max(Duration::from_millis(1));
        return TickPlan {
            period,
            backoff: (step * 2).min(MAX_WHILE_PARKED),
        };
    }
    TickPlan {
        period: fetch.map_or(IDLE, |d| d.clamp(FAST, IDLE)),
        backoff: FAST,
    }
}

/// The tick right after a request began to wait for `reason`, and the backoff to keep
/// (`None`: keep the current one). An introspection goes out from the root context, so its
/// tick comes at once; keys may come from another worker any moment, so the VM looks soon
/// and then backs off.
pub fn after_wait(reason: WaitReason) -> (Duration, Option<Duration>) {
    match reason {
        WaitReason::Introspection => (Duration::from_millis(1), None),
        WaitReason::FirstKeys | WaitReason::UnknownKid => (FAST, Some(FAST)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_000_000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn parked_until(deadline: UnixMillis) -> Waiting {
        Waiting {
            parked_deadline: Some(deadline),
            ..Waiting::default()
        }
    }

    #[test]
    fn with_nothing_to_wait_for_the_tick_is_idle() {
        let p = plan(NOW, &Waiting::default(), FAST);
        assert_eq!(p.period, IDLE);
    }

    #[test]
    fn a_provider_without_keys_ticks_when_its_next_fetch_is_due_not_faster() {
        let retry_in_5s = Waiting {
            next_fetch_at: Some(NOW.plus_ms(5_000)),
            ..Waiting::default()
        };
        assert_eq!(plan(NOW, &retry_in_5s, FAST).period, IDLE);
        let retry_in_300ms = Waiting {
            next_fetch_at: Some(NOW.plus_ms(300)),
            ..Waiting::default()
        };
        assert_eq!(plan(NOW, &retry_in_300ms, FAST).period, ms(300));
        let overdue = Waiting {
            next_fetch_at: Some(UnixMillis(NOW.0 - 50)),
            ..Waiting::default()
        };
        assert_eq!(plan(NOW, &overdue, FAST).period, FAST);
    }

    #[test]
    fn parked_requests_start_fast_and_back_off() {
        let waiting = parked_until(NOW.plus_ms(10_000));
        let mut backoff = FAST;
        let mut periods = Vec::new();
        for _ in 0..6 {
            let p = plan(NOW, &waiting, backoff);
            periods.push(p.period.as_millis());
            backoff = p.backoff;
        }
        assert_eq!(periods, [20, 40, 80, 160, 160, 160]);
    }

    #[test]
    fn the_backoff_never_passes_the_earliest_deadline() {
        let p = plan(NOW, &parked_until(NOW.plus_ms(70)), MAX_WHILE_PARKED);
        assert_eq!(p.period, ms(70));
        let overdue = plan(NOW, &parked_until(UnixMillis(NOW.0 - 5)), MAX_WHILE_PARKED);
        assert_eq!(overdue.period, ms(1));
    }

    #[test]
    fn a_fetch_due_while_requests_wait_is_started_on_time() {
        let waiting = Waiting {
            parked_deadline: Some(NOW.plus_ms(5_000)),
            next_fetch_at: Some(NOW.plus_ms(30)),
            ..Waiting::default()
        };
        assert_eq!(plan(NOW, &waiting, MAX_WHILE_PARKED).period, ms(30));
    }

    #[test]
    fn queued_introspections_tick_fast() {
        let waiting = Waiting {
            introspections_queued: true,
            parked_deadline: Some(NOW.plus_ms(5_000)),
            ..Waiting::default()
        };
        assert_eq!(plan(NOW, &waiting, MAX_WHILE_PARKED).period, FAST);
    }

    #[test]
    fn a_new_wait_ticks_at_once_for_an_introspection_and_fast_for_keys() {
        assert_eq!(
            after_wait(WaitReason::Introspection),
            (Duration::from_millis(1), None)
        );
        assert_eq!(after_wait(WaitReason::FirstKeys), (FAST, Some(FAST)));
        assert_eq!(after_wait(WaitReason::UnknownKid), (FAST, Some(FAST)));
    }

    #[test]
    fn the_backoff_starts_over_once_nothing_is_parked() {
        let p = plan(NOW, &Waiting::default(), MAX_WHILE_PARKED);
        assert_eq!(p.backoff, FAST);
    }
}
