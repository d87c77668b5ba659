//! Compact JWS parsing (RFC 7515/7519) of untrusted tokens, before any signature work.
//!
//! Parsing is strict: three unpadded base64url segments, strict JSON without duplicate keys,
//! a known `alg` (never `none`), typed registered claims. Anything else is [`Malformed`],
//! which the filter answers with 401 `invalid_token`.

use crate::token::alg::Alg;
use crate::{support::b64, support::json};
use serde_json::{Map, Value};
use std::fmt;

/// What is wrong with a token that is not a well-formed JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    NotThreeParts,
    EmptySegment,
    HeaderNotBase64,
    HeaderNotJson(String),
    AlgMissing,
    AlgNone,
    AlgUnsupported(String),
    MemberType {
        part: &'static str,
        member: &'static str,
        expected: &'static str,
    },
    CriticalHeader,
    UnencodedPayload,
    NotAJwtType(String),
    PayloadNotBase64,
    PayloadNotJson(String),
    ClaimOutOfRange(&'static str),
    SignatureNotBase64,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::NotThreeParts => {
                write!(
                    f,
                    "the token is not a JWT: it needs three parts separated by dots"
                )
            }
            Malformed::EmptySegment => write!(f, "the token has an empty header or payload"),
            Malformed::HeaderNotBase64 => write!(f, "the JWT header is not base64url"),
            Malformed::HeaderNotJson(e) => write!(f, "the JWT header {}", e),
            Malformed::AlgMissing => write!(f, "the JWT header has no alg"),
            Malformed::AlgNone => write!(f, "unsigned tokens (alg none) are not accepted"),
            Malformed::AlgUnsupported(alg) => write!(f, "alg {:?} is not supported", alg),
            Malformed::MemberType {
                part,
                member,
                expected,
            } => write!(
                f,
                "the JWT {} member {:?} must be {}",
                part, member, expected
            ),
            Malformed::CriticalHeader => {
                write!(
                    f,
                    "the JWT header lists critical extensions (crit) that are not supported"
                )
            }
            Malformed::UnencodedPayload => {
                write!(f, "unencoded payloads (b64 false) are not supported")
            }
            Malformed::NotAJwtType(typ) => write!(f, "the token type {:?} is not a JWT", typ),
            Malformed::PayloadNotBase64 => write!(f, "the JWT payload is not base64url"),
            Malformed::PayloadNotJson(e) => write!(f, "the JWT payload {}", e),
            Malformed::ClaimOutOfRange(claim) => {
                write!(
                    f,
                    "the {} claim must be a non-negative number of seconds",
                    claim
                )
            }
            Malformed::SignatureNotBase64 => write!(f, "the JWT signature is not base64url"),
        }
    }
}

/// The registered claims, typed, plus the whole payload for policy and forwarding.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub all: Map<String, Value>,
}

/// A parsed, not yet verified, compact JWT.
#[derive(Debug, Clone)]
pub struct Jwt<'t> {
    /// `header.payload`: the bytes the signature covers.
    pub signing_input: &'t str,
    /// The decoded signature.
    pub signature: Vec<u8>,
    pub alg: Alg,
    pub kid: Option<String>,
    /// The header's `typ` (RFC 7515 4.1.9), when present.
    pub typ: Option<String>,
    pub claims: Claims,
}

/// Whether a token looks like a JWT (three dot-separated parts) rather than an opaque token.
pub fn looks_like_jwt(token: &str) -> bool {
    crate::support::scan::count(token.as_bytes(), b'.') == 2
}

/// Parses a compact JWS. No signature, time, issuer or audience check happens here.
pub fn parse(token: &str) -> Result<Jwt<'_>, Malformed> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed::NotThreeParts);
    };
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(Malformed::EmptySegment);
    }
    let header_bytes = b64::decode(header_b64).map_err(|_| Malformed::HeaderNotBase64)?;
    let header = json::object_from_slice_strict(&header_bytes).map_err(Malformed::HeaderNotJson)?;
    let (alg, kid, typ) = parse_header(&header)?;

    let payload_bytes = b64::decode(payload_b64).map_err(|_| Malformed::PayloadNotBase64)?;
    let payload =
        json::object_from_slice_strict(&payload_bytes).map_err(Malformed::PayloadNotJson)?;
    let claims = typed_claims(payload)?;

    let signature = b64::decode(signature_b64).map_err(|_| Malformed::SignatureNotBase64)?;
    // Three parts, so the last dot ends the signing input.
    let signing_input = token.rsplit_once('.').map_or("", |(input, _)| input);
    Ok(Jwt {
        signing_input,
        signature,
        alg,
        kid,
        typ,
        claims,
    })
}

type Header = (Alg, Option<String>, Option<String>);

/// `alg`, `kid` and `typ` of a JOSE header, each checked.
fn parse_header(header: &Map<String, Value>) -> Result<Header, Malformed> {
    let alg = match header.get("alg") {
        None => return Err(Malformed::AlgMissing),
        Some(Value::String(name)) => name,
        Some(_) => return Err(header_type("alg", "a string")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(Malformed::AlgNone);
    }
    let alg = Alg::from_name(alg).ok_or_else(|| Malformed::AlgUnsupported(alg.clone()))?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(header_type("kid", "a string")),
    };
    // We implement no JWS extension, so any critical one must be refused (RFC 7515 4.1.11).
    if header.contains_key("crit") {
        return Err(Malformed::CriticalHeader);
    }
    if header.get("b64") == Some(&Value::Bool(false)) {
        return Err(Malformed::UnencodedPayload);
    }
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(typ)) => {
            let upper = typ.to_ascii_uppercase();
            if upper != "JWT" && !upper.ends_with("+JWT") {
                return Err(Malformed::NotAJwtType(typ.clone()));
            }
            Some(typ.clone())
        }
        Some(_) => return Err(header_type("typ", "a string")),
    };
    Ok((alg, kid, typ))
}

fn header_type(member: &'static str, expected: &'static str) -> Malformed {
    Malformed::MemberType {
        part: "header",
        member,
        expected,
    }
}

fn claim_type(member: &'static str, expected: &'static str) -> Malformed {
    Malformed::MemberType {
        part: "payload",
        member,
        expected,
    }
}

/// Types the registered claims of a JSON object (a JWT payload or an introspection answer).
pub fn typed_claims(all: Map<String, Value>) -> Result<Claims, Malformed> {
    let string = |name: &'static str| -> Result<Option<String>, Malformed> {
        match all.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(claim_type(name, "a string")),
        }
    };
    let iss = string("iss")?;
    let sub = string("sub")?;
    string("jti")?;
    string("nonce")?;
    let aud = match all.get("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(claim_type("aud", "a string or an array of strings"))?,
        Some(_) => return Err(claim_type("aud", "a string or an array of strings")),
    };
    let exp = seconds(&all, "exp")?;
    let nbf = seconds(&all, "nbf")?;
    seconds(&all, "iat")?;
    Ok(Claims {
        iss,
        sub,
        aud,
        exp,
        nbf,
        all,
    })
}

/// A NumericDate: a non-negative JSON number that fits in u64; fractions are truncated
/// (as Envoy's jwt_verify_lib does).
fn seconds(all: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, Malformed> {
    let Some(value) = all.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(claim_type(name, "a number"));
    };
    if let Some(v) = n.as_u64() {
        return Ok(Some(v));
    }
    match n.as_f64() {
        // 2^64 as f64; the comparison also rejects NaN.
        Some(f) if (0.0..18_446_744_073_709_551_616.0).contains(&f) => Ok(Some(f as u64)),
        _ => Err(Malformed::ClaimOutOfRange(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.{}",
            b64::encode(header.as_bytes()),
            b64::encode(payload.as_bytes()),
            b64::encode(b"sig")
        )
    }

    #[test]
    fn parses_a_zitadel_shaped_token() {
        let t = token(
            r#"{"alg":"RS256","kid":"280543383892525058","typ":"JWT"}"#,
            r#"{"iss":"https://auth.example.com","sub":"1","aud":["a","b"],"exp":1760002800,"nbf":1759959600,"iat":1759959600,"client_id":"c"}"#,
        );
        let jwt = parse(&t).unwrap();
        assert_eq!(jwt.alg, Alg::Rs256);
        assert_eq!(jwt.kid.as_deref(), Some("280543383892525058"));
        assert_eq!(jwt.claims.iss.as_deref(), Some("https://auth.example.com"));
        assert_eq!(jwt.claims.aud, vec!["a", "b"]);
        assert_eq!(jwt.claims.exp, Some(1760002800));
        assert_eq!(jwt.claims.all["client_id"], "c");
    }

    #[test]
    fn single_string_audience_becomes_a_list() {
        let jwt_text = token(r#"{"alg":"ES256"}"#, r#"{"aud":"api"}"#);
        assert_eq!(parse(&jwt_text).unwrap().claims.aud, vec!["api"]);
    }

    #[test]
    fn alg_none_is_refused_in_any_capitalisation() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            let t = token(&format!(r#"{{"alg":"{}"}}"#, alg), "{}");
            assert_eq!(parse(&t).unwrap_err(), Malformed::AlgNone);
        }
    }

    #[test]
    fn structure_errors_are_malformed() {
        assert_eq!(parse("a.b").unwrap_err(), Malformed::NotThreeParts);
        assert_eq!(parse("a.b.c.d").unwrap_err(), Malformed::NotThreeParts);
        assert_eq!(parse(".b.c").unwrap_err(), Malformed::EmptySegment);
        assert_eq!(parse("e30..c").unwrap_err(), Malformed::EmptySegment);
        assert_eq!(parse("e3 0.e30.c").unwrap_err(), Malformed::HeaderNotBase64);
    }

    #[test]
    fn registered_claims_are_typed() {
        let cases = [
            (r#"{"iss":1}"#, "iss"),
            (r#"{"sub":true}"#, "sub"),
            (r#"{"jti":{}}"#, "jti"),
            (r#"{"aud":1}"#, "aud"),
            (r#"{"aud":[1]}"#, "aud"),
            (r#"{"aud":{"a":1}}"#, "aud"),
            (r#"{"exp":"1"}"#, "exp"),
            (r#"{"nbf":"1"}"#, "nbf"),
        ];
        for (payload, member) in cases {
            let err = parse(&token(r#"{"alg":"RS256"}"#, payload)).unwrap_err();
            assert!(
                matches!(err, Malformed::MemberType { member: m, .. } if m == member),
                "{} -> {:?}",
                payload,
                err
            );
        }
    }

    #[test]
    fn numeric_dates_must_be_non_negative_u64() {
        let parse_exp = |v: &str| {
            parse(&token(r#"{"alg":"RS256"}"#, &format!(r#"{{"exp":{}}}"#, v)))
                .map(|j| j.claims.exp)
        };
        assert_eq!(parse_exp("1234.5678").unwrap(), Some(1234));
        assert_eq!(parse_exp("18446744073709551615").unwrap(), Some(u64::MAX));
        assert_eq!(
            parse_exp("-1").unwrap_err(),
            Malformed::ClaimOutOfRange("exp")
        );
        assert_eq!(
            parse_exp("2.001e206").unwrap_err(),
            Malformed::ClaimOutOfRange("exp")
        );
    }

    #[test]
    fn header_extensions_we_do_not_implement_are_refused() {
        let crit = token(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, "{}");
        assert_eq!(parse(&crit).unwrap_err(), Malformed::CriticalHeader);
        let b64 = token(r#"{"alg":"RS256","b64":false}"#, "{}");
        assert_eq!(parse(&b64).unwrap_err(), Malformed::UnencodedPayload);
        let typ = token(r#"{"alg":"RS256","typ":"JWE"}"#, "{}");
        assert!(matches!(
            parse(&typ).unwrap_err(),
            Malformed::NotAJwtType(_)
        ));
        let at_jwt = token(r#"{"alg":"RS256","typ":"at+jwt"}"#, "{}");
        assert!(parse(&at_jwt).is_ok());
    }

    #[test]
    fn duplicate_claims_are_refused() {
        let t = token(r#"{"alg":"RS256"}"#, r#"{"iss":"a","iss":"b"}"#);
        assert!(matches!(
            parse(&t).unwrap_err(),
            Malformed::PayloadNotJson(_)
        ));
    }

    #[test]
    fn opaque_tokens_are_told_apart() {
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("V2_abcdef"));
        assert!(!looks_like_jwt("a.b"));
    }
}
