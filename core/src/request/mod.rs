//! The request as the host hands it over ([`headers`]) and as the upstream will read it
//! ([`edge`]): header spellings, repeated headers, host and method forms. The rules match
//! the canonical form this produces, and requests without a single reading are refused.

pub mod edge;
pub mod headers;
