//! A ZITADEL-shaped identity provider for tokengate's local cluster and tests.
//!
//! It answers what a proxy sees of ZITADEL: discovery, `/oauth/v2/keys`, client_credentials
//! tokens (JWT or opaque per client), introspection (Basic or private_key_jwt with a ZITADEL
//! application key file; each assertion `jti` once) and revocation; and a `/control/` API to
//! rotate keys, inject faults per endpoint, count hits, set the introspection clock back and
//! override discovery members. It listens on loopback only and is not for production.

pub mod httpd;
pub mod idp;
pub mod jose;

pub use idp::{ClientConfig, Endpoint, Fault, Idp, IdpConfig, RunningIdp, TokenType};
