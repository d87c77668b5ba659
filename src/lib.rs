//! tokengate: the proxy-wasm host layer. It reads the request from Envoy, asks
//! `tokengate_core` for a decision and turns that into host calls (reply, set headers,
//! count). All policy lives in the core crate.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abi;
mod callout;
mod engine;
mod entropy;
mod introspection;
mod keys;
mod metrics;
mod request;
mod root;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // Envoy filters by its own `wasm` log level; this only sets the SDK's ceiling, which the
    // root context lowers to Envoy's level on configure.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::FilterRoot::new(context_id))
    });
}}
