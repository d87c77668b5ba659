//! The configuration compiler on arbitrary bytes (JSON text or a protobuf Struct).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tokengate_core::config::settings;

fuzz_target!(|data: &[u8]| {
    let env = |name: &str| (name == "TOKENGATE_INTROSPECTION_SECRET").then(|| "secret".to_owned());
    let _ = settings::compile_bytes(data, &env);
});
