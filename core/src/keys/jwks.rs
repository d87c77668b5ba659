//! JSON Web Key Sets (RFC 7517): parsed once into ready-to-verify keys.
//!
//! Keys that cannot be used (unknown `kty`, encryption keys, weak RSA, points off the curve,
//! an `alg` that does not fit the key) are skipped with a [`KeyWarning`] the host logs, the way
//! Envoy's jwt_verify_lib skips them; a set with no usable key at all is an error.
//!
//! A key set may be large (an IdP that never prunes, an aggregated set, a hostile key host),
//! so what it costs is bounded before it is paid: only the first [`KeyPolicy::max_keys`]
//! usable keys are read (the rest are not even parsed), the key material is counted as it is
//! built and a set that passes [`KeyPolicy::max_memory_bytes`] is refused whole, and an EC
//! key's precomputed table (152-228 KB) is built only once the key has verified
//! [`TABLE_AFTER_VALID_SIGNATURES`] tokens (a key used rarely verifies without one), and only
//! while the set stays within that bound ([`KeySet::after_valid_signature`]). A JWK whose
//! text is unchanged from the previous version of the set is taken over with its table.

use crate::support::b64;
use crate::support::heap;
use crate::token::alg::{Alg, AlgSet, Curve, KeyFamily};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::cell::Cell;
use std::collections::HashMap;
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
    /// Usable keys read from one set; the JWKs after them are not parsed.
    pub max_keys: usize,
    /// Bound on the key material of one set in one VM, tables included: a set whose keys
    /// pass it is refused (the previous keys stay), and no table is built beyond it.
    pub max_memory_bytes: usize,
}

/// Default of [`KeyPolicy::max_keys`]: IdPs publish a handful of keys; 100 leaves room for
/// aggregated sets.
pub const DEFAULT_MAX_KEYS: usize = 100;
/// Default of [`KeyPolicy::max_memory_bytes`]: `max_keys` keys of any kind (100 RSA-4096 keys
/// hold about 180 KB) with a table for each of about 20 EC keys (152-228 KB each).
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 4 * 1024 * 1024;

/// An EC key gets its precomputed table once it has verified this many tokens in a VM: a
/// P-256 table takes 152 KB and as long to build as about 14 table-free checks, and saves
/// about 70 % of each later one (natively, release build: 4.7 ms to build, 0.33 ms a check
/// without, 0.10 ms with), so it pays back its time after about 20 checks. A key that signs
/// fewer tokens (each then cached) verifies without one.
pub const TABLE_AFTER_VALID_SIGNATURES: u32 = 20;

/// An EC key and the valid signatures it has verified in this VM (which decide when it
/// gets its table).
pub struct EcKey {
    verifier: EcdsaVerifier,
    valid_signatures: Cell<u32>,
}

impl EcKey {
    fn new(verifier: EcdsaVerifier) -> EcKey {
        EcKey {
            verifier,
            valid_signatures: Cell::new(0),
        }
    }

    /// Counts one more valid signature; true when the key has verified enough tokens to
    /// be worth a table.
    fn worth_a_table(&self) -> bool {
        let n = self.valid_signatures.get().saturating_add(1);
        self.valid_signatures.set(n);
        n >= TABLE_AFTER_VALID_SIGNATURES
    }
}

impl std::ops::Deref for EcKey {
    type Target = EcdsaVerifier;
    fn deref(&self) -> &EcdsaVerifier {
        &self.verifier
    }
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            allowed: AlgSet::asymmetric(),
            allow_hmac: false,
            min_rsa_bits: 2048,
            max_keys: DEFAULT_MAX_KEYS,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
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
    /// ES256/384/512 (by the key's curve); its precomputed table (152-228 KB) is built once
    /// it has verified a few tokens ([`KeySet::after_valid_signature`]).
    Ecdsa(Rc<EcKey>),
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
    /// SHA-256 of the JWK's JSON text: an unchanged JWK in a later version of the set is
    /// this same key, table and all.
    source: [u8; 32],
}

impl Jwk {
    /// Bytes this key holds on the heap (its `Rc` block, the `kid`, the prepared keys),
    /// tables included; an RSA modulus shared by the key's algorithms is counted once. The
    /// pointer to it is its set's ([`KeySet::memory_bytes`]). The crypto values' own buffers
    /// are counted by their capacity, without the allocator's few bytes per block.
    pub fn memory_bytes(&self) -> usize {
        let mut bytes = heap::rc::<Jwk>()
            + self.kid.as_ref().map_or(0, heap::string)
            + heap::buffer::<VerifyKey>(self.keys.capacity());
        let mut rsa_counted = false;
        for key in &self.keys {
            bytes += match key {
                VerifyKey::Rsa { key, .. } if !rsa_counted => {
                    rsa_counted = true;
                    heap::rc::<RsaVerifier>() + key.memory_bytes()
                        - std::mem::size_of::<RsaVerifier>()
                }
                VerifyKey::Rsa { .. } => 0,
                VerifyKey::Ecdsa(k) => {
                    heap::rc::<EcKey>() + k.memory_bytes() - std::mem::size_of::<EcdsaVerifier>()
                }
                VerifyKey::EdDsa(_) => 0,
                VerifyKey::Hmac { secret, .. } => heap::buffer::<u8>(secret.capacity()),
            };
        }
        bytes
    }

    /// Bytes of the precomputed tables among [`Jwk::memory_bytes`].
    pub fn table_bytes(&self) -> usize {
        self.keys
            .iter()
            .map(|key| match key {
                VerifyKey::Ecdsa(k) if k.has_table() => EcdsaVerifier::table_bytes(k.curve()),
                _ => 0,
            })
            .sum()
    }

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
    keys: Vec<Rc<Jwk>>,
    /// SHA-256 of [`ParsedKeys::text`]: the same keys again need not be parsed.
    digest: [u8; 32],
    max_memory_bytes: usize,
    /// [`KeySet::memory_bytes`] as of the last table this set built: the bound's check on a
    /// verification must not sum the whole set each time.
    memory_so_far: Cell<usize>,
}

impl KeySet {
    fn new(keys: Vec<Rc<Jwk>>, digest: [u8; 32], max_memory_bytes: usize) -> KeySet {
        let set = KeySet {
            keys,
            digest,
            max_memory_bytes,
            memory_so_far: Cell::new(0),
        };
        set.memory_so_far.set(set.memory_bytes());
        set
    }

    pub fn keys(&self) -> &[Rc<Jwk>] {
        &self.keys
    }

    /// SHA-256 of the text the set was read from (its usable keys only).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Bytes of key material this set holds in this VM, tables included.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<KeySet>()
            + heap::buffer::<Rc<Jwk>>(self.keys.capacity())
            + self.keys.iter().map(|k| k.memory_bytes()).sum::<usize>()
    }

    /// Called when `key` has verified a valid signature: an EC key that has now verified
    /// [`TABLE_AFTER_VALID_SIGNATURES`] tokens gets its precomputed table, if the set stays
    /// within its memory bound with it. Only keys that sign real tokens, and more than a
    /// few, pay for a table; a forged token (a wrong signature) never counts, and keys used
    /// rarely or beyond the bound verify without a table (a few times slower).
    pub fn after_valid_signature(&self, key: &VerifyKey) {
        if let VerifyKey::Ecdsa(k) = key {
            if k.has_table() || !k.worth_a_table() {
                return;
            }
            let with_table = self.memory_so_far.get() + EcdsaVerifier::table_bytes(k.curve());
            if with_table <= self.max_memory_bytes {
                k.build_table();
                self.memory_so_far.set(with_table);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Union of the algorithms the keys can verify.
    pub fn algs(&self) -> AlgSet {
        self.keys.iter().flat_map(|k| k.algs()).collect()
    }

    /// Keys that may verify a token with this `alg` and `kid`, following jwt_verify_lib:
    /// when both the token and the JWK carry a `kid` they must be equal; a JWK `alg`, when
    /// present, must equal the token's; a token without `kid` is tried against every key of
    /// its algorithm. Keys named by the token's `kid` come first, and at most
    /// [`MAX_KEYS_TRIED`] are tried: a set of many keys without `kid` must not make one
    /// forged token cost a signature check per key.
    pub fn candidates<'a>(
        &'a self,
        alg: Alg,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        let named = self
            .keys
            .iter()
            .filter(move |jwk| kid.is_some() && jwk.kid.as_deref() == kid);
        let unnamed = self
            .keys
            .iter()
            .filter(move |jwk| kid.is_none() || jwk.kid.is_none());
        named
            .chain(unnamed)
            .filter(move |jwk| jwk.alg.is_none_or(|a| a == alg))
            .filter_map(move |jwk| jwk.key_for(alg))
            .take(MAX_KEYS_TRIED)
    }

    /// Whether some key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    fn by_source(&self) -> HashMap<[u8; 32], Rc<Jwk>> {
        self.keys.iter().map(|k| (k.source, Rc::clone(k))).collect()
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
    /// The first [`MAX_WARNINGS`] reasons.
    NoUsableKey(Vec<KeyWarning>),
    /// The keys read so far already pass [`KeyPolicy::max_memory_bytes`].
    Oversized {
        max: usize,
    },
}

/// Keys one token is tried against at most (see [`KeySet::candidates`]).
pub const MAX_KEYS_TRIED: usize = 16;

/// Skipped keys reported one by one; beyond these only counted.
pub const MAX_WARNINGS: usize = 16;

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
                if warnings.len() >= MAX_WARNINGS {
                    write!(f, "; (only the first {} reasons shown)", MAX_WARNINGS)?;
                }
                Ok(())
            }
            JwksError::Oversized { max } => write!(
                f,
                "holds more key material than {} bytes (max_key_memory_bytes): refused whole",
                max
            ),
        }
    }
}

impl std::error::Error for JwksError {}

/// A key set read from its text.
#[derive(Debug)]
pub struct ParsedKeys {
    pub keys: KeySet,
    /// The first [`MAX_WARNINGS`] skipped keys, with why.
    pub warnings: Vec<KeyWarning>,
    /// Skipped keys beyond those.
    pub more_warnings: usize,
    /// JWKs after the first `max_keys` usable ones: not read.
    pub over_max_keys: usize,
    /// `{"keys":[...]}` of the usable keys' own JSON text, in order: what other VMs parse.
    pub text: String,
}

/// SHA-256 of a key set's text, to tell an unchanged set without parsing it.
pub fn digest(text: &[u8]) -> [u8; 32] {
    hmac_sha256::Hash::hash(text)
}

/// The top level of a JWK Set, with each JWK left as text until it is needed.
#[derive(Deserialize)]
struct RawSet<'a> {
    #[serde(borrow)]
    keys: Vec<&'a RawValue>,
}

/// Parses a JWK Set given as JSON text.
pub fn parse_jwks_str(
    text: &str,
    policy: &KeyPolicy,
) -> Result<(KeySet, Vec<KeyWarning>), JwksError> {
    read_jwks(text, policy, None).map(|p| (p.keys, p.warnings))
}

/// Parses a JWK Set given as a JSON value.
pub fn parse_jwks(
    value: &Value,
    policy: &KeyPolicy,
) -> Result<(KeySet, Vec<KeyWarning>), JwksError> {
    let text = serde_json::to_string(value).map_err(|e| JwksError::NotJson(e.to_string()))?;
    parse_jwks_str(&text, policy)
}

/// Reads a JWK Set: the first `max_keys` usable keys, within `max_memory_bytes`. A JWK whose
/// text equals one of `previous` is that key (its table kept), not parsed again.
pub fn read_jwks(
    text: &str,
    policy: &KeyPolicy,
    previous: Option<&KeySet>,
) -> Result<ParsedKeys, JwksError> {
    let set: RawSet<'_> = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => JwksError::NoKeysArray,
        _ => JwksError::NotJson(e.to_string()),
    })?;
    let known = previous.map(KeySet::by_source).unwrap_or_default();
    let mut keys: Vec<Rc<Jwk>> = Vec::new();
    let mut warnings = Vec::new();
    let mut more_warnings = 0;
    let mut bytes = std::mem::size_of::<KeySet>();
    let mut over_max_keys = 0;
    let mut out = String::from("{\"keys\":[");
    for (index, raw) in set.keys.iter().enumerate() {
        if keys.len() >= policy.max_keys {
            over_max_keys = set.keys.len() - index;
            break;
        }
        let source = digest(raw.get().as_bytes());
        let jwk = match known.get(&source) {
            Some(jwk) => Rc::clone(jwk),
            None => {
                let entry: Value = serde_json::from_str(raw.get())
                    .map_err(|e| JwksError::NotJson(e.to_string()))?;
                match parse_jwk(&entry, policy, source) {
                    Ok(jwk) => Rc::new(jwk),
                    Err(problem) => {
                        if warnings.len() < MAX_WARNINGS {
                            let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
                            warnings.push(KeyWarning {
                                index,
                                kid,
                                problem,
                            });
                        } else {
                            more_warnings += 1;
                        }
                        continue;
                    }
                }
            }
        };
        // Tables a kept key brings along do not count here: they are what the bound leaves
        // room for, and a rotation must not be refused because keys were used.
        bytes += std::mem::size_of::<Rc<Jwk>>() + jwk.memory_bytes() - jwk.table_bytes();
        if bytes > policy.max_memory_bytes {
            return Err(JwksError::Oversized {
                max: policy.max_memory_bytes,
            });
        }
        if !keys.is_empty() {
            out.push(',');
        }
        out.push_str(raw.get());
        keys.push(jwk);
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey(warnings));
    }
    out.push_str("]}");
    keys.shrink_to_fit();
    Ok(ParsedKeys {
        keys: KeySet::new(keys, digest(out.as_bytes()), policy.max_memory_bytes),
        warnings,
        more_warnings,
        over_max_keys,
        text: out,
    })
}

fn parse_jwk(entry: &Value, policy: &KeyPolicy, source: [u8; 32]) -> Result<Jwk, KeyProblem> {
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
    Ok(Jwk {
        kid,
        alg,
        keys,
        source,
    })
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
        None => Alg::ALL.into_iter().filter(|a| a.rsa().is_some()).collect(),
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
    Ok(VerifyKey::Ecdsa(Rc::new(EcKey::new(key))))
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
        let n = crate::support::b64::encode(&[0x80; 128]);
        let set = json!({"keys": [{"kty": "RSA", "n": n, "e": "AQAB"}]});
        let err = parse_jwks(&set, &KeyPolicy::default()).unwrap_err();
        assert!(err.to_string().contains("1024 bits"), "{}", err);
    }

    #[test]
    fn ec_coordinates_shorter_than_the_field_are_left_padded() {
        // A P-256 point given with a 31-byte x would be rejected if not padded; this one is off
        // the curve after padding, which is reported as such rather than as a length error.
        let set = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": crate::support::b64::encode(&[1; 31]), "y": crate::support::b64::encode(&[2; 32])}]});
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

    /// P-256 key pairs and their public JWKs, for the size and table tests.
    mod ec {
        use jwt_simple::prelude::*;

        pub fn pairs(n: usize) -> Vec<ES256KeyPair> {
            (0..n)
                .map(|i| ES256KeyPair::generate().with_key_id(&format!("k{}", i)))
                .collect()
        }

        pub fn jwk(pair: &ES256KeyPair) -> serde_json::Value {
            let point = pair.public_key().public_key().to_bytes_uncompressed();
            serde_json::json!({
                "kty": "EC",
                "crv": "P-256",
                "kid": pair.key_id().clone().unwrap_or_default(),
                "x": crate::support::b64::encode(&point[1..33]),
                "y": crate::support::b64::encode(&point[33..65]),
            })
        }

        pub fn set(pairs: &[ES256KeyPair]) -> String {
            serde_json::json!({"keys": pairs.iter().map(jwk).collect::<Vec<_>>()}).to_string()
        }

        pub fn token(pair: &ES256KeyPair) -> String {
            pair.sign(Claims::create(Duration::from_mins(5))).unwrap()
        }
    }

    fn verify(token: &str, keys: &KeySet) -> Result<(), crate::token::verify::TokenError> {
        let jwt = crate::token::jwt::parse(token).unwrap();
        crate::token::verify::verify_signature(&jwt, keys, AlgSet::asymmetric())
    }

    /// Verifies a token of `pair` as often as a key must verify to be worth a table.
    fn use_key(pair: &jwt_simple::prelude::ES256KeyPair, keys: &KeySet) {
        for _ in 0..TABLE_AFTER_VALID_SIGNATURES {
            assert!(verify(&ec::token(pair), keys).is_ok());
        }
    }

    fn policy(max_keys: usize, max_memory_bytes: usize) -> KeyPolicy {
        KeyPolicy {
            max_keys,
            max_memory_bytes,
            ..KeyPolicy::default()
        }
    }

    #[test]
    fn only_the_first_max_keys_usable_keys_are_read() {
        let pairs = ec::pairs(5);
        let mut set: Value = serde_json::from_str(&ec::set(&pairs)).unwrap();
        // Unusable keys before the cap do not count towards it; those after it are not read.
        set["keys"].as_array_mut().unwrap().insert(
            1,
            json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
        );
        set["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kty": "nonsense"}));
        let parsed = read_jwks(&set.to_string(), &policy(2, 1 << 20), None).unwrap();
        let kids: Vec<_> = parsed.keys.keys().iter().map(|k| k.kid.clone()).collect();
        assert_eq!(kids, [Some("k0".to_owned()), Some("k1".to_owned())]);
        assert_eq!(
            parsed.over_max_keys, 4,
            "k2, k3, k4 and the bad key after them"
        );
        assert_eq!(parsed.warnings.len(), 1, "only the bad key before the cap");
        let text: Value = serde_json::from_str(&parsed.text).unwrap();
        assert_eq!(text["keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_set_whose_key_material_passes_the_bound_is_refused_whole() {
        let set = ec::set(&ec::pairs(20));
        let one = read_jwks(&set, &policy(1, 1 << 20), None).unwrap();
        let bound = one.keys.memory_bytes() * 5;
        assert_eq!(
            read_jwks(&set, &policy(100, bound), None).unwrap_err(),
            JwksError::Oversized { max: bound }
        );
        assert_eq!(
            read_jwks(&set, &policy(100, 1 << 20), None)
                .unwrap()
                .keys
                .len(),
            20
        );
    }

    #[test]
    fn skipped_keys_are_reported_up_to_a_limit_and_then_counted() {
        let bad: Vec<Value> = (0..40).map(|_| json!({"kty": "nonsense"})).collect();
        let mut keys = bad;
        keys.push(ec::jwk(&ec::pairs(1)[0]));
        let parsed = read_jwks(
            &json!({ "keys": keys }).to_string(),
            &KeyPolicy::default(),
            None,
        )
        .unwrap();
        assert_eq!(parsed.warnings.len(), MAX_WARNINGS);
        assert_eq!(parsed.more_warnings, 40 - MAX_WARNINGS);
    }

    #[test]
    fn an_unchanged_jwk_is_the_previous_key_with_its_table() {
        let pairs = ec::pairs(3);
        let first = read_jwks(&ec::set(&pairs[..2]), &KeyPolicy::default(), None).unwrap();
        use_key(&pairs[0], &first.keys);
        let rotated = read_jwks(
            &ec::set(&pairs[..3]),
            &KeyPolicy::default(),
            Some(&first.keys),
        )
        .unwrap();
        for i in 0..2 {
            assert!(Rc::ptr_eq(&first.keys.keys()[i], &rotated.keys.keys()[i]));
        }
        assert!(
            rotated.keys.keys()[0].table_bytes() > 0,
            "k0's table came along"
        );
        assert_eq!(rotated.keys.keys()[1].table_bytes(), 0);
        assert_ne!(first.keys.digest(), rotated.keys.digest());
    }

    #[test]
    fn the_same_usable_keys_have_the_same_digest() {
        let pairs = ec::pairs(2);
        let plain = read_jwks(&ec::set(&pairs), &KeyPolicy::default(), None).unwrap();
        let mut noisy: Value = serde_json::from_str(&ec::set(&pairs)).unwrap();
        noisy["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kty": "oct", "k": "c2VjcmV0"}));
        noisy["extra"] = json!("ignored");
        let noisy = read_jwks(&noisy.to_string(), &KeyPolicy::default(), None).unwrap();
        assert_eq!(plain.keys.digest(), noisy.keys.digest());
        assert_eq!(
            plain.text, noisy.text,
            "what other VMs parse holds the usable keys only"
        );
        assert_eq!(plain.keys.digest(), digest(plain.text.as_bytes()));
    }

    #[test]
    fn an_ec_key_gets_its_table_only_once_it_has_verified_enough_valid_signatures() {
        let pairs = ec::pairs(2);
        let keys = read_jwks(&ec::set(&pairs), &KeyPolicy::default(), None)
            .unwrap()
            .keys;
        let before = keys.memory_bytes();
        assert!(keys.keys().iter().all(|k| k.table_bytes() == 0));
        // k1's kid on a token k0 signed: a forged signature for k1.
        let forged = {
            let token = ec::token(&pairs[0]);
            let (_, rest) = token.split_once('.').unwrap();
            let header = crate::support::b64::encode(br#"{"alg":"ES256","kid":"k1"}"#);
            format!("{}.{}", header, rest)
        };
        for _ in 0..TABLE_AFTER_VALID_SIGNATURES {
            assert!(verify(&forged, &keys).is_err());
        }
        assert_eq!(keys.memory_bytes(), before, "forged tokens build no table");
        for _ in 1..TABLE_AFTER_VALID_SIGNATURES {
            assert!(verify(&ec::token(&pairs[1]), &keys).is_ok());
        }
        assert_eq!(
            keys.memory_bytes(),
            before,
            "a key used rarely verifies without a table"
        );
        assert!(verify(&ec::token(&pairs[1]), &keys).is_ok());
        assert_eq!(keys.keys()[0].table_bytes(), 0);
        let table = keys.keys()[1].table_bytes();
        assert_eq!(table, EcdsaVerifier::table_bytes(Curve::P256));
        assert_eq!(keys.memory_bytes(), before + table);
        // The table verifies the same tokens.
        assert!(verify(&ec::token(&pairs[1]), &keys).is_ok());
    }

    /// Key material of a set of these keys before any table is built.
    fn bare_bytes(pairs: &[jwt_simple::prelude::ES256KeyPair]) -> usize {
        read_jwks(&ec::set(pairs), &KeyPolicy::default(), None)
            .unwrap()
            .keys
            .memory_bytes()
    }

    #[test]
    fn keys_beyond_the_memory_bound_verify_without_a_table() {
        let pairs = ec::pairs(3);
        let bare = bare_bytes(&pairs);
        let room_for_one = bare + EcdsaVerifier::table_bytes(Curve::P256) + 1;
        let keys = read_jwks(&ec::set(&pairs), &policy(100, room_for_one), None)
            .unwrap()
            .keys;
        for pair in &pairs {
            use_key(pair, &keys);
        }
        let tables = keys.keys().iter().filter(|k| k.table_bytes() > 0).count();
        assert_eq!(tables, 1);
        assert!(keys.memory_bytes() <= room_for_one);
    }

    #[test]
    fn a_rotation_is_not_refused_for_the_tables_its_kept_keys_built() {
        let pairs = ec::pairs(2);
        let bare = bare_bytes(&pairs);
        let bound = bare + EcdsaVerifier::table_bytes(Curve::P256);
        let first = read_jwks(&ec::set(&pairs), &policy(100, bound), None).unwrap();
        use_key(&pairs[0], &first.keys);
        assert!(first.keys.memory_bytes() > bare);
        let again = read_jwks(&ec::set(&pairs), &policy(100, bound), Some(&first.keys));
        assert!(again.is_ok());
    }

    #[test]
    fn the_key_a_tokens_kid_names_is_tried_before_keys_without_kid() {
        let mut pairs = ec::pairs(MAX_KEYS_TRIED + 4);
        let named = pairs.pop().unwrap();
        let mut set: Value = serde_json::from_str(&ec::set(&pairs)).unwrap();
        for jwk in set["keys"].as_array_mut().unwrap() {
            jwk.as_object_mut().unwrap().remove("kid");
        }
        set["keys"].as_array_mut().unwrap().push(ec::jwk(&named));
        let keys = read_jwks(&set.to_string(), &KeyPolicy::default(), None)
            .unwrap()
            .keys;
        assert!(verify(&ec::token(&named), &keys).is_ok());
    }

    #[test]
    fn a_token_is_tried_against_at_most_max_keys_tried_keys() {
        // Keys and tokens without kid.
        let pairs: Vec<_> = (0..=MAX_KEYS_TRIED)
            .map(|_| jwt_simple::prelude::ES256KeyPair::generate())
            .collect();
        let mut set: Value = serde_json::from_str(&ec::set(&pairs)).unwrap();
        for jwk in set["keys"].as_array_mut().unwrap() {
            jwk.as_object_mut().unwrap().remove("kid");
        }
        let keys = read_jwks(&set.to_string(), &KeyPolicy::default(), None)
            .unwrap()
            .keys;
        assert_eq!(
            keys.candidates(Alg::Es256, Some("forged")).count(),
            MAX_KEYS_TRIED
        );
        assert_eq!(keys.candidates(Alg::Es256, None).count(), MAX_KEYS_TRIED);
        assert!(verify(&ec::token(&pairs[MAX_KEYS_TRIED - 1]), &keys).is_ok());
        assert_eq!(
            verify(&ec::token(&pairs[MAX_KEYS_TRIED]), &keys).unwrap_err(),
            crate::token::verify::TokenError::BadSignature
        );
    }
}
