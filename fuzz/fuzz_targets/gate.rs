//! The whole decision for a request: arbitrary Authorization, cookie and path values against a
//! configuration with rules of every kind.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use tokengate_core::config::settings;
use tokengate_core::engine::gate::{Gate, Request};
use tokengate_core::request::headers::HeaderMap;
use tokengate_core::time::UnixMillis;

thread_local! {
    static GATE: RefCell<Option<Gate>> = const { RefCell::new(None) };
}

const CONFIG: &str = include_str!("../seeds/gate-config.json");

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let auth = parts.next().unwrap_or_default().to_vec();
    let path = String::from_utf8_lossy(parts.next().unwrap_or(b"/")).into_owned();
    let cookie = parts.next().unwrap_or_default().to_vec();
    let headers = HeaderMap::from_pairs([
        (":method".as_bytes(), &b"GET"[..]),
        (b":path", path.as_bytes()),
        (b":authority", b"api.example.com"),
        (b"authorization", &auth),
        (b"cookie", &cookie),
        (b"x-org", b"org-1"),
    ]);
    GATE.with(|gate| {
        let mut gate = gate.borrow_mut();
        if gate.is_none() {
            *gate = settings::compile_str(CONFIG)
                .ok()
                .map(|(s, _)| Gate::new(s));
        }
        let Some(gate) = gate.as_mut() else { return };
        let _ = gate.evaluate(&Request::new(&headers), UnixMillis(1_800_000_000_000), true);
        let _ = gate.evaluate(
            &Request::new(&headers),
            UnixMillis(1_800_000_000_000),
            false,
        );
    });
});
