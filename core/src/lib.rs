//! tokengate-core: the pure decision logic of the tokengate proxy-wasm filter.
//!
//! Nothing here touches the proxy-wasm ABI or does I/O. The host layer hands in request
//! headers and the time and turns the returned [`decision::Decision`] into host calls, the
//! split rustls and Kuadrant's wasm-shim use.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod alg;
pub mod b64;
pub mod cache;
pub mod config;
pub mod decision;
pub mod edge;
pub mod explain;
pub mod extract;
pub mod gate;
pub mod headers;
pub mod heap;
pub mod introspection;
pub mod json;
pub mod jwks;
pub mod jwt;
pub mod keysync;
pub mod pbstruct;
pub mod policy;
pub mod principal;
pub mod remote;
pub mod scan;
pub mod settings;
pub mod tick;
pub mod verify;
