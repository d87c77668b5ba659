//! JOSE signing for the dev IdP and the tests: keys generated at run time, tokens signed from
//! the raw header and payload text (so tests can mint any token, well-formed or hostile), and
//! the RS256 check of client assertions.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15;
use rsa::pss;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Map, Value};
use sha2::{Sha256, Sha384, Sha512};

enum Secret {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_compact::KeyPair),
    Hmac(Vec<u8>),
}

/// A private key with the `alg` it signs with and an optional `kid`.
pub struct SigningKey {
    pub alg: &'static str,
    pub kid: Option<String>,
    secret: Secret,
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// An RSA key (2048 bits) for RS256/384/512 or PS256/384/512.
    pub fn rsa(alg: &'static str, kid: &str) -> SigningKey {
        assert!(
            alg.starts_with("RS") || alg.starts_with("PS"),
            "{} is not an RSA alg",
            alg
        );
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        SigningKey::with(alg, kid, Secret::Rsa(Box::new(key)))
    }

    /// An RSA key read from PEM text (PKCS#1 or PKCS#8).
    pub fn rsa_from_pem(alg: &'static str, kid: &str, pem: &str) -> Result<SigningKey, String> {
        let key = rsa_private_key_from_pem(pem)?;
        Ok(SigningKey::with(alg, kid, Secret::Rsa(Box::new(key))))
    }

    /// The RSA private key, for RSA signing keys.
    pub fn rsa_key(&self) -> Option<&rsa::RsaPrivateKey> {
        match &self.secret {
            Secret::Rsa(k) => Some(k),
            _ => None,
        }
    }

    /// The RSA private key as PKCS#8 PEM.
    pub fn rsa_pem(&self) -> String {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let Secret::Rsa(key) = &self.secret else {
            panic!("not an RSA key")
        };
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    }

    /// The same RSA key material, signing with another RSA alg.
    pub fn rsa_with_alg(&self, alg: &'static str) -> SigningKey {
        let Secret::Rsa(key) = &self.secret else {
            panic!("not an RSA key")
        };
        SigningKey {
            alg,
            kid: self.kid.clone(),
            secret: Secret::Rsa(key.clone()),
        }
    }

    pub fn es256(kid: &str) -> SigningKey {
        let key = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
        SigningKey::with("ES256", kid, Secret::P256(key))
    }

    pub fn es384(kid: &str) -> SigningKey {
        let key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
        SigningKey::with("ES384", kid, Secret::P384(key))
    }

    pub fn ed25519(kid: &str) -> SigningKey {
        let key = ed25519_compact::KeyPair::generate();
        SigningKey::with("EdDSA", kid, Secret::Ed25519(key))
    }

    pub fn hmac(alg: &'static str, kid: &str, secret: &[u8]) -> SigningKey {
        SigningKey::with(alg, kid, Secret::Hmac(secret.to_vec()))
    }

    fn with(alg: &'static str, kid: &str, secret: Secret) -> SigningKey {
        SigningKey {
            alg,
            kid: if kid.is_empty() {
                None
            } else {
                Some(kid.to_owned())
            },
            secret,
        }
    }

    /// The public JWK (with `kid`, `alg` and `use`), or the `oct` JWK for HMAC keys.
    pub fn jwk(&self) -> Value {
        let mut jwk = match &self.secret {
            Secret::Rsa(k) => {
                json!({"kty": "RSA", "n": b64(&k.n().to_bytes_be()), "e": b64(&k.e().to_bytes_be())})
            }
            Secret::P256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())})
            }
            Secret::P384(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-384", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())})
            }
            Secret::Ed25519(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.pk.as_ref())}),
            Secret::Hmac(s) => json!({"kty": "oct", "k": b64(s)}),
        };
        jwk["alg"] = json!(self.alg);
        jwk["use"] = json!("sig");
        if let Some(kid) = &self.kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }

    /// Signs `claims` with a header of `alg`, `typ: JWT` and this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Map::new();
        header.insert("alg".into(), json!(self.alg));
        header.insert("typ".into(), json!("JWT"));
        if let Some(kid) = &self.kid {
            header.insert("kid".into(), json!(kid));
        }
        self.sign_raw(&Value::Object(header).to_string(), &claims.to_string())
    }

    /// Signs exactly this header and payload text.
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let signature = self.signature(input.as_bytes());
        format!("{}.{}", input, b64(&signature))
    }

    /// The raw JWS signature of `input` with this key and alg.
    pub fn signature(&self, input: &[u8]) -> Vec<u8> {
        let mut rng = rand::thread_rng();
        match (&self.secret, self.alg) {
            (Secret::Rsa(k), "RS256") => pkcs1v15::SigningKey::<Sha256>::new((**k).clone())
                .sign(input)
                .to_vec(),
            (Secret::Rsa(k), "RS384") => pkcs1v15::SigningKey::<Sha384>::new((**k).clone())
                .sign(input)
                .to_vec(),
            (Secret::Rsa(k), "RS512") => pkcs1v15::SigningKey::<Sha512>::new((**k).clone())
                .sign(input)
                .to_vec(),
            (Secret::Rsa(k), "PS256") => pss::BlindedSigningKey::<Sha256>::new((**k).clone())
                .sign_with_rng(&mut rng, input)
                .to_vec(),
            (Secret::Rsa(k), "PS384") => pss::BlindedSigningKey::<Sha384>::new((**k).clone())
                .sign_with_rng(&mut rng, input)
                .to_vec(),
            (Secret::Rsa(k), "PS512") => pss::BlindedSigningKey::<Sha512>::new((**k).clone())
                .sign_with_rng(&mut rng, input)
                .to_vec(),
            (Secret::P256(k), _) => {
                let sig: p256::ecdsa::Signature = k.sign(input);
                sig.to_bytes().to_vec()
            }
            (Secret::P384(k), _) => {
                let sig: p384::ecdsa::Signature = k.sign(input);
                sig.to_bytes().to_vec()
            }
            (Secret::Ed25519(k), _) => k.sk.sign(input, None).to_vec(),
            (Secret::Hmac(s), alg) => hmac_sign(alg, s, input),
            (_, alg) => panic!("cannot sign {} with this key", alg),
        }
    }
}

fn hmac_sign(alg: &str, secret: &[u8], input: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    match alg {
        "HS256" => {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
            mac.update(input);
            mac.finalize().into_bytes().to_vec()
        }
        "HS384" => {
            let mut mac = Hmac::<Sha384>::new_from_slice(secret).unwrap();
            mac.update(input);
            mac.finalize().into_bytes().to_vec()
        }
        "HS512" => {
            let mut mac = Hmac::<Sha512>::new_from_slice(secret).unwrap();
            mac.update(input);
            mac.finalize().into_bytes().to_vec()
        }
        other => panic!("{} is not an HMAC alg", other),
    }
}

/// A JWK Set of the public halves of these keys.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// Decodes unpadded base64url; `None` when it is not.
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// An RSA private key in PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`, the form of ZITADEL key
/// files) or PKCS#8 PEM.
pub fn rsa_private_key_from_pem(pem: &str) -> Result<rsa::RsaPrivateKey, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    rsa::RsaPrivateKey::from_pkcs1_pem(pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(pem))
        .map_err(|e| format!("not an RSA private key in PEM: {}", e))
}

/// PKCS#1 PEM of an RSA private key.
pub fn rsa_private_key_to_pkcs1_pem(key: &rsa::RsaPrivateKey) -> String {
    use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
    key.to_pkcs1_pem(LineEnding::LF)
        .map(|p| p.to_string())
        .unwrap_or_default()
}

/// Verifies an RS256 compact JWS with `key` and returns its header and payload.
pub fn verify_rs256(token: &str, key: &rsa::RsaPublicKey) -> Option<(Value, Value)> {
    use rsa::signature::Verifier;
    let (input, signature) = token.rsplit_once('.')?;
    let (header, payload) = input.split_once('.')?;
    let signature = pkcs1v15::Signature::try_from(b64_decode(signature)?.as_slice()).ok()?;
    pkcs1v15::VerifyingKey::<Sha256>::new(key.clone())
        .verify(input.as_bytes(), &signature)
        .ok()?;
    let header: Value = serde_json::from_slice(&b64_decode(header)?).ok()?;
    let payload: Value = serde_json::from_slice(&b64_decode(payload)?).ok()?;
    (header["alg"] == "RS256").then_some((header, payload))
}

/// Decodes the payload of a compact JWS without verifying it.
pub fn unverified_payload(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let _header = parts.next()?;
    serde_json::from_slice(&b64_decode(parts.next()?)?).ok()
}

/// ZITADEL's project roles claim: `urn:zitadel:iam:org:project:{project}:roles` holding
/// `{role: {orgId: orgDomain}}`.
pub fn zitadel_roles(project: &str, grants: &[(&str, &[&str])]) -> (String, Value) {
    let mut roles = Map::new();
    for (role, orgs) in grants {
        let orgs: Map<String, Value> = orgs
            .iter()
            .map(|o| (o.to_string(), json!(format!("{}.auth.example.com", o))))
            .collect();
        roles.insert(role.to_string(), Value::Object(orgs));
    }
    (
        format!("urn:zitadel:iam:org:project:{}:roles", project),
        Value::Object(roles),
    )
}
