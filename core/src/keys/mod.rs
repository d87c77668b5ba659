//! Signing keys: reading a JWK Set within its bounds ([`jwks`]), what a fetch answer or a
//! discovery document means ([`remote`]), and the one record per provider that makes a
//! process fetch once per refresh ([`keysync`]). The host makes the callouts and the
//! shared-data calls; these modules decide.

pub mod jwks;
pub mod keysync;
pub mod remote;
