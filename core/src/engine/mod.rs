//! The engine: one request's decision from headers and time, with the per-VM caches of
//! verified tokens and introspection answers ([`gate`]), how often a VM wakes up ([`tick`]),
//! which requests wait and when their wait is over ([`waiting`]),
//! and the step-by-step account of a decision for the CLI ([`explain`]). It composes the
//! other modules; none of them calls back into it.

pub mod explain;
pub mod gate;
pub mod tick;
pub mod waiting;
