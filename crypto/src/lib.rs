//! tokengate-crypto: the arithmetic of signature verification, built for the Wasm the filter
//! runs in (V8): RSA on 27-bit limbs summed with Wasm SIMD ([`montgomery`], [`rsa`]) and ECDSA
//! with comb tables for G and, when the caller builds one, for a key ([`ecdsa`]).
//!
//! It knows nothing of tokens: `tokengate-core` parses a JWS and hands in the signed bytes, the
//! signature and a prepared key. Only public values pass through here (keys, signatures,
//! messages); nothing is constant time. It is a crate of its own so that the release build can
//! optimise it for speed while the rest of the module is optimised for size.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod ecdsa;
pub mod montgomery;
pub mod rsa;

/// Elliptic curves of the ES* algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// Size in bytes of one coordinate (and of `r` and `s` in a JOSE signature).
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    pub fn from_name(name: &str) -> Option<Curve> {
        match name {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }
}
