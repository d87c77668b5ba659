//! tokengate-core: the pure decision logic of the tokengate proxy-wasm filter.
//!
//! Nothing here touches the proxy-wasm ABI or does I/O. The host layer hands in request
//! headers and the time and turns the returned [`policy::decision::Decision`] into host
//! calls, the split rustls and Kuadrant's wasm-shim use.
//!
//! From the bottom up: [`support`] (bytes, bounded caches), [`provider`] (a provider's id), [`time`] (times with their unit), [`request`] (the request's canonical form),
//! [`token`] (finding and verifying a token), [`keys`] (key sets and their sync),
//! [`introspection`] (RFC 7662), [`policy`] (rules and decisions), [`config`] (the
//! configuration compiled into settings), and [`engine`] (a request's decision, its caches,
//! the tick).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod config;
pub mod engine;
pub mod introspection;
pub mod keys;
pub mod policy;
pub mod provider;
pub mod request;
pub mod support;
pub mod time;
pub mod token;
