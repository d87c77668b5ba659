//! Building blocks with no knowledge of tokens or policy: base64url ([`b64`]), byte scans
//! sixteen bytes a step ([`scan`]), JSON with depth limits ([`json`]), the caches bounded by
//! count and bytes ([`cache`]) and what values hold on the heap for those bounds ([`heap`]).

pub mod b64;
pub mod cache;
pub mod heap;
pub mod json;
pub mod scan;
