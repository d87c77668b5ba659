//! Where the engine reports each check as it takes it: nothing in the filter, the steps of
//! `tokengate explain`.

use crate::token::verify::TokenError;

/// Where the engine reports each check as it takes it. The filter passes [`NoTrace`], whose
/// steps compile to nothing; `tokengate explain` records them ([`crate::engine::explain`]), so
/// that what it prints is what the filter does.
pub trait Trace {
    /// Whether steps are recorded at all: their details are only formatted when they are.
    const ON: bool;
    /// One check: its name, whether it passed (`None`: information), and what was found.
    fn step(&mut self, check: &'static str, passed: Option<bool>, detail: String);
}

/// The filter's trace: nothing recorded.
pub struct NoTrace;

impl Trace for NoTrace {
    const ON: bool = false;
    fn step(&mut self, _check: &'static str, _passed: Option<bool>, _detail: String) {}
}

/// Reports a step, formatting its detail only when the trace records.
pub(crate) fn note<T: Trace>(
    trace: &mut T,
    check: &'static str,
    passed: Option<bool>,
    detail: impl FnOnce() -> String,
) {
    if T::ON {
        trace.step(check, passed, detail());
    }
}

/// Reports a token's time check.
pub(crate) fn note_time<T: Trace>(trace: &mut T, time: &Result<(), TokenError>, skew: u64) {
    note(trace, "time", Some(time.is_ok()), || match time {
        Ok(()) => format!("within exp and nbf (clock skew {} s)", skew),
        Err(e) => e.to_string(),
    });
}
