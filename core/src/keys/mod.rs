//! Signing keys: reading a JWK Set within its bounds ([`jwks`]), what a fetch answer or a
//! discovery document means ([`remote`]), the one record per provider that makes a process
//! fetch once per refresh ([`keysync`]), and one provider's keys in one VM, from the fetch
//! lease to the view the gate decides with ([`sync`]). The host makes the callouts and the
//! shared-data calls; these modules decide.

pub mod jwks;
pub mod keysync;
pub mod remote;
pub mod sync;
