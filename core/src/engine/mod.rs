//! The engine: one request's decision from headers and time, with what a VM learns while
//! it runs (verified tokens, introspection answers, key views) ([`gate`]); which requests
//! wait and when their wait is over ([`waiting`]); one introspection callout per token
//! ([`introspection_queue`]), signed, sent through the host and recorded
//! ([`introspection_calls`]); how often a VM wakes up ([`tick`]); and
//! the gate's own steps ([`trace`]) recorded for the CLI ([`explain`]), in words
//! ([`wording`]); the headers an allowed request carries upstream ([`forward`]). It composes the other modules;
//! none of them calls back into it.

pub mod explain;
pub mod forward;
pub mod gate;
pub mod introspection_calls;
pub mod introspection_queue;
pub mod tick;
pub mod trace;
pub mod waiting;
pub mod wording;
