//! The header map buffer the host hands over, read in place: any bytes must give either an
//! error or a map whose every entry can be read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tokengate_core::request::headers::HeaderMap;

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = HeaderMap::from_serialized(data.to_vec()) {
        let total: usize = map.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(total <= data.len());
        let _ = map.get("authorization");
        let _ = map.get_all("cookie").count();
    }
});
