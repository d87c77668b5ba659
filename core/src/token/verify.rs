//! Token verification: signature, time window, issuer and audience.

use crate::keys::jwks::{KeySet, VerifyKey};
use crate::token::alg::{Alg, AlgSet};
use crate::token::jwt::{Jwt, Malformed};
use std::fmt;

/// Why a token was not accepted as a valid token of a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    TooLarge {
        len: usize,
        max: usize,
    },
    Malformed(Malformed),
    AlgNotAllowed(Alg),
    /// The token names a `kid` no key in the set carries.
    UnknownKid(String),
    /// No key in the set can verify this `alg` (and `kid`, if any).
    NoKeyForAlg(Alg),
    BadSignature,
    Expired,
    NotYetValid,
    /// A claim the provider requires (`required_claims`) is absent.
    MissingClaim(String),
    /// `exp` lies further ahead than `max_token_lifetime_seconds` (plus the skew).
    LifetimeTooLong {
        max: u64,
    },
    /// The header's `typ` is absent or not one of `token_types`.
    TypeNotAccepted {
        accepted: String,
    },
    /// No provider accepts the token's `iss` (or the token has none and every provider
    /// requires one).
    UnknownIssuer(Option<String>),
    AudienceNotAllowed,
    /// The provider's keys cannot be had now (not fetched yet, or too stale): not the
    /// client's fault, a 503.
    KeysUnavailable {
        provider: String,
        retry_after_s: u64,
        detail: Option<String>,
    },
    /// Introspection says the token is not active (revoked, expired, unknown, foreign).
    Inactive,
    /// The introspection endpoint could not answer (503).
    IntrospectionUnavailable {
        provider: String,
        detail: String,
    },
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::TooLarge { len, max } => write!(
                f,
                "the token has {} bytes, more than the limit of {} (max_token_bytes)",
                len, max
            ),
            TokenError::Malformed(m) => m.fmt(f),
            TokenError::AlgNotAllowed(alg) => {
                write!(f, "alg {} is not allowed for this issuer", alg)
            }
            TokenError::UnknownKid(kid) => write!(f, "no signing key has kid {:?}", kid),
            TokenError::NoKeyForAlg(alg) => write!(f, "no signing key matches alg {}", alg),
            TokenError::BadSignature => write!(f, "the signature is invalid"),
            TokenError::Expired => write!(f, "the token has expired"),
            TokenError::NotYetValid => write!(f, "the token is not valid yet (nbf)"),
            TokenError::MissingClaim(name) => write!(
                f,
                "the token lacks the required claim {:?} (required_claims)",
                name
            ),
            TokenError::LifetimeTooLong { max } => write!(
                f,
                "the token's exp lies more than {} seconds ahead (max_token_lifetime_seconds)",
                max
            ),
            TokenError::TypeNotAccepted { accepted } => write!(
                f,
                "the token's type (typ) is not one of {} (token_types)",
                accepted
            ),
            TokenError::UnknownIssuer(Some(iss)) => write!(f, "issuer {:?} is not accepted", iss),
            TokenError::UnknownIssuer(None) => write!(f, "the token has no issuer (iss)"),
            TokenError::AudienceNotAllowed => {
                write!(f, "the token's audience (aud) is not accepted here")
            }
            TokenError::Inactive => write!(
                f,
                "the token is not active (revoked, expired or unknown to the provider)"
            ),
            TokenError::IntrospectionUnavailable { provider, detail } => write!(
                f,
                "the token of provider {} cannot be introspected now: {}",
                provider, detail
            ),
            TokenError::KeysUnavailable {
                provider, detail, ..
            } => {
                write!(
                    f,
                    "the signing keys of provider {} are not available",
                    provider
                )?;
                match detail {
                    Some(d) => write!(f, " (last fetch: {})", d),
                    None => write!(f, " yet"),
                }
            }
        }
    }
}

impl From<Malformed> for TokenError {
    fn from(m: Malformed) -> Self {
        TokenError::Malformed(m)
    }
}

/// Checks the signature of `jwt` against the candidate keys of `keys`.
pub fn verify_signature(jwt: &Jwt<'_>, keys: &KeySet, allowed: AlgSet) -> Result<(), TokenError> {
    if !allowed.contains(jwt.alg) {
        return Err(TokenError::AlgNotAllowed(jwt.alg));
    }
    let mut tried = false;
    for key in keys.candidates(jwt.alg, jwt.kid.as_deref()) {
        tried = true;
        if signature_matches(key, jwt) {
            keys.after_valid_signature(key);
            return Ok(());
        }
    }
    if tried {
        return Err(TokenError::BadSignature);
    }
    match &jwt.kid {
        Some(kid) if !keys.has_kid(kid) => Err(TokenError::UnknownKid(kid.clone())),
        _ => Err(TokenError::NoKeyForAlg(jwt.alg)),
    }
}

fn signature_matches(key: &VerifyKey, jwt: &Jwt<'_>) -> bool {
    let input = jwt.signing_input.as_bytes();
    let sig = jwt.signature.as_slice();
    match key {
        VerifyKey::Rsa { alg, key } => alg.rsa().is_some_and(|a| key.verify(a, input, sig)),
        VerifyKey::Ecdsa(k) => k.verify(input, sig),
        VerifyKey::EdDsa(k) => {
            ed25519_compact::Signature::from_slice(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
        }
        VerifyKey::Hmac { alg, secret } => hmac_matches(*alg, secret, input, sig),
    }
}

/// HMAC of `input` compared with `sig` in constant time (no early exit on the first
/// differing byte, so the comparison leaks no prefix of the expected MAC).
fn hmac_matches(alg: Alg, secret: &[u8], input: &[u8], sig: &[u8]) -> bool {
    let expected: Vec<u8> = match alg {
        Alg::Hs256 => hmac_sha256::HMAC::mac(input, secret).to_vec(),
        Alg::Hs384 => hmac_sha512::sha384::HMAC::mac(input, secret).to_vec(),
        Alg::Hs512 => hmac_sha512::HMAC::mac(input, secret).to_vec(),
        _ => return false,
    };
    expected.len() == sig.len()
        && expected
            .iter()
            .zip(sig)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `exp`/`nbf` with skew, as Envoy: expired only when `now > exp + skew`, not yet valid only
/// when `now + skew < nbf`; absent claims impose no limit.
pub fn check_time(
    exp: Option<u64>,
    nbf: Option<u64>,
    now: u64,
    skew: u64,
) -> Result<(), TokenError> {
    if let Some(exp) = exp {
        if now > exp.saturating_add(skew) {
            return Err(TokenError::Expired);
        }
    }
    if let Some(nbf) = nbf {
        if now.saturating_add(skew) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    Ok(())
}

/// A provider's rules for a JWT's claims beyond time and signature.
#[derive(Debug, Clone, Default)]
pub struct JwtRules {
    /// Claims every JWT must carry (RFC 9068 2.2).
    pub required_claims: Vec<String>,
    /// Longest accepted distance from now to a JWT's `exp`, in seconds (plus the skew).
    pub max_token_lifetime: Option<u64>,
    /// Accepted `typ` values as [`media_type`] writes them; `None`: any JWT type.
    pub token_types: Option<Vec<String>>,
}

/// A JOSE `typ` as compared: lower case, without the `application/` prefix that RFC 7515
/// 4.1.9 lets a sender leave out.
pub fn media_type(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

/// Checks a JWT against its provider's [`JwtRules`]: required claims (RFC 9068 2.2), the
/// longest lifetime left (`skew` seconds of leeway), and the accepted `typ` values (RFC 9068 4).
pub fn check_claims(
    jwt: &Jwt<'_>,
    rules: &JwtRules,
    skew: u64,
    now: u64,
) -> Result<(), TokenError> {
    if let Some(missing) = rules
        .required_claims
        .iter()
        .find(|name| !jwt.claims.all.contains_key(name.as_str()))
    {
        return Err(TokenError::MissingClaim(missing.clone()));
    }
    if let (Some(max), Some(exp)) = (rules.max_token_lifetime, jwt.claims.exp) {
        if exp > now.saturating_add(max).saturating_add(skew) {
            return Err(TokenError::LifetimeTooLong { max });
        }
    }
    if let Some(types) = &rules.token_types {
        let typ = jwt.typ.as_deref().map(media_type);
        if !typ.is_some_and(|t| types.contains(&t)) {
            return Err(TokenError::TypeNotAccepted {
                accepted: types.join(", "),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_uses_skew_inclusively() {
        assert_eq!(check_time(Some(100), None, 160, 60), Ok(()));
        assert_eq!(
            check_time(Some(100), None, 161, 60),
            Err(TokenError::Expired)
        );
        assert_eq!(check_time(Some(u64::MAX), None, 161, 60), Ok(()));
    }

    #[test]
    fn not_before_uses_skew_inclusively() {
        assert_eq!(check_time(None, Some(200), 140, 60), Ok(()));
        assert_eq!(
            check_time(None, Some(200), 139, 60),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn missing_time_claims_impose_no_limit() {
        assert_eq!(check_time(None, None, u64::MAX, 0), Ok(()));
    }
}
