//! The one proxy-wasm call made without the SDK's wrapper: reading the request headers.
//!
//! The SDK's `get_map_bytes` copies every header into a `String` and a `Vec` (two
//! allocations per header on every request) and panics on a status it does not expect. Here
//! the host's buffer is kept as it is and indexed in place ([`HeaderMap`]); any failure is an
//! error the request context answers with 503.

use proxy_wasm::types::{MapType, Status};
use tokengate_core::request::headers::HeaderMap;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// The request headers of the current HTTP context.
pub fn request_headers() -> Result<HeaderMap, String> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes either null or a pointer to `size` bytes it obtained from this
    // module's `proxy_on_memory_allocate` (the SDK's allocator: a boxed slice of exactly
    // `size` bytes), and does not touch them afterwards.
    let status =
        unsafe { proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) };
    if status != Status::Ok {
        return Err(format!("cannot read request headers ({:?})", status));
    }
    if data.is_null() {
        return Ok(HeaderMap::default());
    }
    // SAFETY: as above; the buffer is ours now and the Vec frees it (what the SDK does too).
    let buf = unsafe { Vec::from_raw_parts(data, size, size) };
    HeaderMap::from_serialized(buf).map_err(|e| e.to_string())
}
