//! The token: where it is in a request ([`extract`]), its JOSE parts ([`jwt`], [`alg`]), the
//! checks on its signature, time and claims ([`verify`]), and what a verified token grants
//! ([`principal`]). Which keys verify it is [`crate::keys`]'s; whether what it grants is
//! enough for a route is [`crate::policy`]'s.

pub mod alg;
pub mod extract;
pub mod jwt;
pub mod principal;
pub mod verify;
