//! JWS signature algorithms (RFC 7518) that tokengate can verify.

use std::fmt;
use tokengate_crypto::rsa::RsaAlg;

/// A JWS `alg` value tokengate knows how to verify. `none` is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

/// The key type (`kty`) an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    /// An EC key on the named curve.
    Ec(Curve),
    Ed25519,
    Hmac,
}

/// Elliptic curves of the ES* algorithms (defined with the arithmetic that uses them).
pub use tokengate_crypto::Curve;

impl Alg {
    /// The RSA scheme of an RS*/PS* algorithm.
    pub fn rsa(self) -> Option<RsaAlg> {
        Some(match self {
            Alg::Rs256 => RsaAlg::Rs256,
            Alg::Rs384 => RsaAlg::Rs384,
            Alg::Rs512 => RsaAlg::Rs512,
            Alg::Ps256 => RsaAlg::Ps256,
            Alg::Ps384 => RsaAlg::Ps384,
            Alg::Ps512 => RsaAlg::Ps512,
            _ => return None,
        })
    }

    pub const ALL: [Alg; 13] = [
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::Es384,
        Alg::Es512,
        Alg::EdDsa,
        Alg::Hs256,
        Alg::Hs384,
        Alg::Hs512,
    ];

    /// Parses a JWS `alg` name. Names are case-sensitive (RFC 7515 section 4.1.1).
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "ES512" => Alg::Es512,
            "EdDSA" => Alg::EdDsa,
            "HS256" => Alg::Hs256,
            "HS384" => Alg::Hs384,
            "HS512" => Alg::Hs512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::Es512 => "ES512",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512 => {
                KeyFamily::Rsa
            }
            Alg::Es256 => KeyFamily::Ec(Curve::P256),
            Alg::Es384 => KeyFamily::Ec(Curve::P384),
            Alg::Es512 => KeyFamily::Ec(Curve::P521),
            Alg::EdDsa => KeyFamily::Ed25519,
            Alg::Hs256 | Alg::Hs384 | Alg::Hs512 => KeyFamily::Hmac,
        }
    }

    pub fn is_symmetric(self) -> bool {
        self.family() == KeyFamily::Hmac
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A small set of algorithms, as a bit set (one provider's allow-list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlgSet(u16);

impl AlgSet {
    /// The default allow-list: every asymmetric algorithm. HMAC needs an explicit key.
    pub fn asymmetric() -> AlgSet {
        Alg::ALL
            .iter()
            .filter(|a| !a.is_symmetric())
            .fold(AlgSet::default(), |s, a| s.with(*a))
    }

    pub fn with(self, alg: Alg) -> AlgSet {
        AlgSet(self.0 | (1 << alg as u16))
    }

    pub fn contains(self, alg: Alg) -> bool {
        self.0 & (1 << alg as u16) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Alg> {
        Alg::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Alg> for AlgSet {
    fn from_iter<I: IntoIterator<Item = Alg>>(iter: I) -> Self {
        iter.into_iter().fold(AlgSet::default(), |s, a| s.with(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for alg in Alg::ALL {
            assert_eq!(Alg::from_name(alg.name()), Some(alg));
        }
        assert_eq!(Alg::from_name("rs256"), None);
        assert_eq!(Alg::from_name("none"), None);
        assert_eq!(Alg::from_name("None"), None);
    }

    #[test]
    fn default_set_has_no_hmac() {
        let set = AlgSet::asymmetric();
        assert!(set.contains(Alg::Rs256) && set.contains(Alg::EdDsa) && set.contains(Alg::Es512));
        assert!(!set.contains(Alg::Hs256));
        assert_eq!(set.iter().count(), 10);
    }
}
