//! End-to-end test helpers for tokengate, shared by every test in `tests/`: they start the
//! real Envoy with the built `tokengate.wasm` in front of an echo upstream (or a WSGI
//! application), send requests byte for byte over HTTP/1.1 or through curl over HTTP/2, and
//! mint tokens with keys generated at run time.

pub use devidp;

pub mod envoy;
pub mod expect;
pub mod http;
pub mod idp;
pub mod leaks;
pub mod mint;
pub mod process;
pub mod upstream;
pub mod wsgi;

pub use envoy::{
    Envoy, EnvoyOptions, EscapedSlashes, HeadersWithUnderscores, PathSettings, Upstream,
};
pub use http::Response;
pub use mint::SigningKey;
pub use wsgi::WsgiUpstream;

use std::path::PathBuf;

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Cargo's target directory, where the build outputs are: `$CARGO_TARGET_DIR` when set (a
/// relative one taken from the repository root, where `make` runs cargo), else `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => repo_root().join(dir),
        _ => repo_root().join("target"),
    }
}

/// Current Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
