//! Introspection answers: any status, any body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tokengate_core::introspection::read_answer;
use tokengate_core::keys::remote::Answer;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (Some(u16::from(*s) * 3), rest),
        None => (None, data),
    };
    let _ = read_answer(
        &Answer {
            status,
            cache_control: None,
            body,
            body_size: body.len(),
        },
        65536,
    );
    let _ = read_answer(
        &Answer {
            status: Some(200),
            cache_control: None,
            body: data,
            body_size: data.len(),
        },
        65536,
    );
});
