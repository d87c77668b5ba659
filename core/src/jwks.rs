//! JSON Web Key Sets (RFC 7517): parsed once into ready-to-verify keys.
//!
//! Keys that cannot be used (unknown `kty`, encryption keys, weak RSA, points off the curve,
//! an `alg` that does not fit the key) are skipped with a [`KeyWarning`] the host logs, the way
//! Envoy's jwt_verify_lib skips them; a set with no usable key at all is an error.

use crate::alg::{Alg, AlgSet, Curve, KeyFamily};
use crate::b64;
use serde_json::{Map, Value};
use std::fmt;
use std::rc::Rc;
use tokengate_crypto::ecdsa::EcdsaVerifier;
use tokengate_crypto::rsa::RsaVerifier;

/// What a key set may contain.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    /// Algorithms the provider accepts; keys are prepared only for these.
    pub allowed: AlgSet,
    /// `oct` (HMAC) keys are taken only from the operator's own inline configuration,
    /// never from a key set fetched over the network.
    pub allow_hmac: bool,
    /// RSA moduli shorter than this are refused.
    pub min_rsa_bits: usize,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            allowed: AlgSet::asymmetric(),
            allow_hmac: false,
            min_rsa_bits: 2048,
        }
    }
}

/// A verification key bound to exactly one algorithm.
///
/// Keys are held in the form the crypto code verifies with directly, so a check is one
/// call on the already-parsed signing input and signature (jwt-simple's `verify_token`
/// would parse the whole token again, header and claims JSON, for every key tried).
pub enum VerifyKey {
    /// RS256/384/512 and PS256/384/512; one prepared modulus shared by the algorithms.
    Rsa {
        alg: Alg,
        key: Rc<RsaVerifier>,
    },
    /// ES256/384/512 (by the key's curve) with the key's precomputed table (114-200 KB),
    /// shared by the sets that hold it.
    Ecdsa(Rc<EcdsaVerifier>),
    EdDsa(ed25519_compact::PublicKey),
    /// HS256/384/512 with the shared secret.
    Hmac {
        alg: Alg,
        secret: Vec<u8>,
    },
}

impl VerifyKey {
    pub fn alg(&self) -> Alg {
        match self {
            VerifyKey::Rsa { alg, .. } | VerifyKey::Hmac { alg, .. } => *alg,
            VerifyKey::Ecdsa(k) => match k.curve() {
                Curve::P256 => Alg::Es256,
                Curve::P384 => Alg::Es384,
                Curve::P521 => Alg::Es512,
            },
            VerifyKey::EdDsa(_) => Alg::EdDsa,
        }
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material (HMAC keys are secrets).
        write!(f, "VerifyKey({})", self.alg())
    }
}

/// One usable JWK: its identifiers and a prepared key per algorithm it may verify.
#[derive(Debug)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The JWK's own `alg`, if it named one.
    pub alg: Option<Alg>,
    keys: Vec<VerifyKey>,
}

impl Jwk {
    /// The prepared key for `alg`, if this JWK can verify it.
    pub fn key_for(&self, alg: Alg) -> Option<&VerifyKey> {
        self.keys.iter().find(|k| k.alg() == alg)
    }

    pub fn algs(&self) -> impl Iterator<Item = Alg> + '_ {
        self.keys.iter().map(VerifyKey::alg)
    }
}

/// A parsed key set, ready for key selection.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Union of the algorithms the keys can verify.
    pub fn algs(&self) -> AlgSet {
        self.keys.iter().flat_map(Jwk::algs).collect()
    }

    /// Keys that may verify a token with this `alg` and `kid`, following jwt_verify_lib:
    /// when both the token and the JWK carry a `kid` they must be equal; a JWK `alg`, when
    /// present, must equal the token's; a token without `kid` is tried against every key of
    /// its algorithm.
    pub fn candidates<'a>(
        &'a self,
        alg: Alg,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter_map(move |jwk| {
            if let (Some(want), Some(have)) = (kid, jwk.kid.as_deref()) {
                if want != have {
                    return None;
                }
            }
            if jwk.alg.is_some_and(|a| a != alg) {
                return None;
            }
            jwk.key_for(alg)
        })
    }

    /// Whether some key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Why one JWK of a set was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    NotAnObject,
    MissingMember(&'static str),
    MemberNotString(&'static str),
    BadBase64(&'static str),
    UnsupportedKeyType(String),
    UnsupportedAlg(String),
    AlgDoesNotFitKey { alg: Alg, kty: &'static str },
    AlgNotAllowed(Alg),
    NotForSignatures(String),
    UnsupportedCurve(String),
    CurveDoesNotFitAlg { alg: Alg, crv: Curve },
    PointNotOnCurve,
    WeakRsa { bits: usize, min: usize },
    BadRsaExponent,
    InvalidRsaKey,
    HmacNotAllowed,
    EmptyHmacKey,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::NotAnObject => write!(f, "is not a JSON object"),
            KeyProblem::MissingMember(m) => write!(f, "has no \"{}\"", m),
            KeyProblem::MemberNotString(m) => write!(f, "\"{}\" is not a string", m),
            KeyProblem::BadBase64(m) => write!(f, "\"{}\" is not base64url", m),
            KeyProblem::UnsupportedKeyType(k) => {
                write!(f, "kty {:?} is not supported (RSA, EC, OKP, oct)", k)
            }
            KeyProblem::UnsupportedAlg(a) => write!(f, "alg {:?} is not supported", a),
            KeyProblem::AlgDoesNotFitKey { alg, kty } => {
                write!(f, "alg {} cannot be used with a {} key", alg, kty)
            }
            KeyProblem::AlgNotAllowed(a) => {
                write!(f, "alg {} is not in the provider's allowed algorithms", a)
            }
            KeyProblem::NotForSignatures(u) => write!(f, "use {:?} is not \"sig\"", u),
            KeyProblem::UnsupportedCurve(c) => {
                write!(
                    f,
                    "crv {:?} is not supported (P-256, P-384, P-521, Ed25519)",
                    c
                )
            }
            KeyProblem::CurveDoesNotFitAlg { alg, crv } => {
                write!(f, "alg {} does not use curve {}", alg, crv.name())
            }
            KeyProblem::PointNotOnCurve => write!(f, "x/y is not a valid point on the curve"),
            KeyProblem::WeakRsa { bits, min } => write!(
                f,
                "RSA modulus has {} bits, fewer than the minimum {} (min_rsa_bits)",
                bits, min
            ),
            KeyProblem::BadRsaExponent => write!(f, "RSA exponent must be odd and at least 3"),
            KeyProblem::InvalidRsaKey => {
                write!(f, "is not a valid RSA public key (an odd modulus of at most 4096 bits and an exponent of at most 33 bits)")
            }
            KeyProblem::HmacNotAllowed => write!(
                f,
                "is an oct (HMAC) key; those are only accepted in a provider's inline jwks"
            ),
            KeyProblem::EmptyHmacKey => write!(f, "oct key \"k\" is empty"),
        }
    }
}

/// A skipped key: its position, its `kid` if any, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWarning {
    pub index: usize,
    pub kid: Option<String>,
    pub problem: KeyProblem,
}

impl fmt::Display for KeyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "key {} (kid {:?}) {}", self.index, kid, self.problem),
            None => write!(f, "key {} {}", self.index, self.problem),
        }
    }
}

/// Why a whole key set was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    NotJson(String),
    NoKeysArray,
    NoUsableKey(Vec<KeyWarning>),
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::NotJson(e) => write!(f, "is not valid JSON ({})", e),
            JwksError::NoKeysArray => {
                write!(
                    f,
                    "is not a JWK Set: expected an object with a \"keys\" array"
                )
            }
            JwksError::NoUsableKey(warnings) if warnings.is_empty() => {
                write!(f, "has no keys")
            }
            JwksError::NoUsableKey(warnings) => {
                write!(f, "has no usable key: ")?;
                for (i, w) in warnings.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{}", w)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for JwksError {}

/// Parses a JWK Set given as JSON text.
pub fn parse_jwks_str(
    text: &str,
    policy: &KeyPolicy,
) -> Result<(KeySet, Vec<KeyWarning>), JwksError> {
    let value: Value = serde_json::from_str(text).map_err(|e| JwksError::NotJson(e.to_string()))?;
    parse_jwks(&value, policy)
}

/// Parses a JWK Set given as a JSON value.
pub fn parse_jwks(
    value: &Value,
    policy: &KeyPolicy,
) -> Result<(KeySet, Vec<KeyWarning>), JwksError> {
    let entries = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NoKeysArray)?;
    let mut keys = Vec::with_capacity(entries.len());
    let mut warnings = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
        match parse_jwk(entry, policy) {
            Ok(jwk) => keys.push(jwk),
            Err(problem) => warnings.push(KeyWarning {
                index,
                kid,
                problem,
            }),
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey(warnings));
    }
    Ok((KeySet { keys }, warnings))
}

fn parse_jwk(entry: &Value, policy: &KeyPolicy) -> Result<Jwk, KeyProblem> {
    let obj = entry.as_object().ok_or(KeyProblem::NotAnObject)?;
    let kty = required_str(obj, "kty")?;
    let kid = optional_str(obj, "kid")?.map(str::to_owned);
    if let Some(usage) = optional_str(obj, "use")? {
        if usage != "sig" {
            return Err(KeyProblem::NotForSignatures(usage.to_owned()));
        }
    }
    let alg = match optional_str(obj, "alg")? {
        Some(name) => {
            Some(Alg::from_name(name).ok_or_else(|| KeyProblem::UnsupportedAlg(name.into()))?)
        }
        None => None,
    };
    let keys = match kty {
        "RSA" => rsa_keys(obj, alg, policy)?,
        "EC" => vec![ec_key(obj, alg)?],
        "OKP" => vec![okp_key(obj, alg)?],
        "oct" => hmac_keys(obj, alg, policy)?,
        other => return Err(KeyProblem::UnsupportedKeyType(other.to_owned())),
    };
    let keys: Vec<VerifyKey> = keys
        .into_iter()
        .filter(|k| policy.allowed.contains(k.alg()))
        .collect();
    if keys.is_empty() {
        // Only reachable when the JWK's algorithm(s) are all outside the allow-list.
        let alg = alg.unwrap_or(match kty {
            "oct" => Alg::Hs256,
            "RSA" => Alg::Rs256,
            "OKP" => Alg::EdDsa,
            _ => Alg::Es256,
        });
        return Err(KeyProblem::AlgNotAllowed(alg));
    }
    Ok(Jwk { kid, alg, keys })
}

fn kty_name(family: KeyFamily) -> &'static str {
    match family {
        KeyFamily::Rsa => "RSA",
        KeyFamily::Ec(_) => "EC",
        KeyFamily::Ed25519 => "OKP",
        KeyFamily::Hmac => "oct",
    }
}

fn check_alg_fits(
    alg: Option<Alg>,
    kty: &'static str,
    fits: impl Fn(KeyFamily) -> bool,
) -> Result<(), KeyProblem> {
    match alg {
        Some(a) if !fits(a.family()) => Err(KeyProblem::AlgDoesNotFitKey { alg: a, kty }),
        _ => Ok(()),
    }
}

fn rsa_keys(
    obj: &Map<String, Value>,
    alg: Option<Alg>,
    policy: &KeyPolicy,
) -> Result<Vec<VerifyKey>, KeyProblem> {
    check_alg_fits(alg, "RSA", |f| f == KeyFamily::Rsa)?;
    let n = strip_leading_zeros(required_b64(obj, "n")?);
    let e = strip_leading_zeros(required_b64(obj, "e")?);
    // n has no leading zero bytes here, so its first byte holds the top bit.
    let bits = match n.first() {
        Some(top) => n.len() * 8 - top.leading_zeros() as usize,
        None => return Err(KeyProblem::InvalidRsaKey),
    };
    if bits < policy.min_rsa_bits {
        return Err(KeyProblem::WeakRsa {
            bits,
            min: policy.min_rsa_bits,
        });
    }
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    if !odd || (e.len() == 1 && e[0] < 3) {
        return Err(KeyProblem::BadRsaExponent);
    }
    let algs: Vec<Alg> = match alg {
        Some(a) => vec![a],
        None => vec![
            Alg::Rs256,
            Alg::Rs384,
            Alg::Rs512,
            Alg::Ps256,
            Alg::Ps384,
            Alg::Ps512,
        ],
    };
    let key = Rc::new(RsaVerifier::new(&n, &e).ok_or(KeyProblem::InvalidRsaKey)?);
    Ok(algs
        .into_iter()
        .filter(|a| policy.allowed.contains(*a))
        .map(|alg| VerifyKey::Rsa {
            alg,
            key: Rc::clone(&key),
        })
        .collect())
}

fn ec_key(obj: &Map<String, Value>, alg: Option<Alg>) -> Result<VerifyKey, KeyProblem> {
    check_alg_fits(alg, "EC", |f| matches!(f, KeyFamily::Ec(_)))?;
    let crv_name = required_str(obj, "crv")?;
    let crv =
        Curve::from_name(crv_name).ok_or_else(|| KeyProblem::UnsupportedCurve(crv_name.into()))?;
    if let Some(a) = alg {
        if a.family() != KeyFamily::Ec(crv) {
            return Err(KeyProblem::CurveDoesNotFitAlg { alg: a, crv });
        }
    }
    let len = crv.coordinate_len();
    let x = required_b64(obj, "x")?;
    let y = required_b64(obj, "y")?;
    if x.len() > len || y.len() > len {
        return Err(KeyProblem::PointNotOnCurve);
    }
    // Coordinates shorter than the field size are left-padded: some encoders drop a leading
    // zero byte (a P-521 `y` of 65 bytes).
    let pad = |c: &[u8]| {
        let mut out = vec![0u8; len - c.len()];
        out.extend_from_slice(c);
        out
    };
    let key = EcdsaVerifier::new(crv, &pad(&x), &pad(&y)).ok_or(KeyProblem::PointNotOnCurve)?;
    Ok(VerifyKey::Ecdsa(Rc::new(key)))
}

fn okp_key(obj: &Map<String, Value>, alg: Option<Alg>) -> Result<VerifyKey, KeyProblem> {
    check_alg_fits(alg, "OKP", |f| f == KeyFamily::Ed25519)?;
    let crv = required_str(obj, "crv")?;
    if crv != "Ed25519" {
        return Err(KeyProblem::UnsupportedCurve(crv.to_owned()));
    }
    let x = required_b64(obj, "x")?;
    let key =
        ed25519_compact::PublicKey::from_slice(&x).map_err(|_| KeyProblem::PointNotOnCurve)?;
    Ok(VerifyKey::EdDsa(key))
}

fn hmac_keys(
    obj: &Map<String, Value>,
    alg: Option<Alg>,
    policy: &KeyPolicy,
) -> Result<Vec<VerifyKey>, KeyProblem> {
    if !policy.allow_hmac {
        return Err(KeyProblem::HmacNotAllowed);
    }
    check_alg_fits(alg, kty_name(KeyFamily::Hmac), |f| f == KeyFamily::Hmac)?;
    let k = required_b64(obj, "k")?;
    if k.is_empty() {
        return Err(KeyProblem::EmptyHmacKey);
    }
    let algs = match alg {
        Some(a) => vec![a],
        None => vec![Alg::Hs256, Alg::Hs384, Alg::Hs512],
    };
    Ok(algs
        .into_iter()
        .map(|alg| VerifyKey::Hmac {
            alg,
            secret: k.clone(),
        })
        .collect())
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    member: &'static str,
) -> Result<&'a str, KeyProblem> {
    optional_str(obj, member)?.ok_or(KeyProblem::MissingMember(member))
}

fn optional_str<'a>(
    obj: &'a Map<String, Value>,
    member: &'static str,
) -> Result<Option<&'a str>, KeyProblem> {
    match obj.get(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KeyProblem::MemberNotString(member)),
    }
}

fn required_b64(obj: &Map<String, Value>, member: &'static str) -> Result<Vec<u8>, KeyProblem> {
    let text = required_str(obj, member)?;
    b64::decode_key_member(text).map_err(|_| KeyProblem::BadBase64(member))
}

fn strip_leading_zeros(bytes: Vec<u8>) -> Vec<u8> {
    match bytes.iter().position(|b| *b != 0) {
        Some(0) => bytes,
        Some(i) => bytes[i..].to_vec(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rsa_key_with_an_empty_or_zero_modulus_is_invalid() {
        let policy = KeyPolicy {
            min_rsa_bits: 0,
            ..KeyPolicy::default()
        };
        for n in ["", "AAAA"] {
            let set = json!({"keys": [{"kty": "RSA", "n": n, "e": "AQAB"}]});
            let err = parse_jwks(&set, &policy).unwrap_err();
            assert_eq!(
                err,
                JwksError::NoUsableKey(vec![KeyWarning {
                    index: 0,
                    kid: None,
                    problem: KeyProblem::InvalidRsaKey
                }])
            );
        }
    }

    #[test]
    fn weak_rsa_keys_are_refused_by_bit_length() {
        let n = crate::b64::encode(&[0x80; 128]);
        let set = json!({"keys": [{"kty": "RSA", "n": n, "e": "AQAB"}]});
        let err = parse_jwks(&set, &KeyPolicy::default()).unwrap_err();
        assert!(err.to_string().contains("1024 bits"), "{}", err);
    }

    #[test]
    fn ec_coordinates_shorter_than_the_field_are_left_padded() {
        // A P-256 point given with a 31-byte x would be rejected if not padded; this one is off
        // the curve after padding, which is reported as such rather than as a length error.
        let set = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": crate::b64::encode(&[1; 31]), "y": crate::b64::encode(&[2; 32])}]});
        let err = parse_jwks(&set, &KeyPolicy::default()).unwrap_err();
        assert!(err.to_string().contains("not a valid point"), "{}", err);
    }

    #[test]
    fn encryption_keys_and_unknown_types_are_skipped_with_a_reason() {
        let set = json!({"keys": [{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}, {"kty": "XYZ"}]});
        let text = parse_jwks(&set, &KeyPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("use \"enc\" is not \"sig\"") && text.contains("kty \"XYZ\""),
            "{}",
            text
        );
    }

    #[test]
    fn hmac_keys_are_refused_unless_allowed() {
        let set = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert!(parse_jwks(&set, &KeyPolicy::default()).is_err());
        let allowed = KeyPolicy {
            allow_hmac: true,
            allowed: AlgSet::asymmetric().with(Alg::Hs256),
            ..KeyPolicy::default()
        };
        let (keys, _) = parse_jwks(&set, &allowed).unwrap();
        assert!(keys.algs().contains(Alg::Hs256));
    }
}
