#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! The attack suite: known JWT attacks against a real Envoy with tokengate, each named for the
//! attack. Every one is refused with 401 unless its name says otherwise. SECURITY.md lists
//! them with the threat they stand for.

use serde_json::{json, Value};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokengate_testkit::mint::{self, b64, b64_decode, claims};
use tokengate_testkit::{expect, http, Envoy, Response, SigningKey};

const ISS: &str = "https://issuer.test";

struct Fixture {
    envoy: Envoy,
    rsa: SigningKey,
    ec: SigningKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rsa = SigningKey::rsa("RS256", "rsa-1");
        let ec = SigningKey::es256("ec-1");
        let envoy = Envoy::start(&json!({
            "providers": {"main": {"issuer": ISS, "audiences": ["api"], "jwks": mint::jwks(&[&rsa, &ec])}},
            "default": "authenticated",
            "forward": {"claims": [{"claim": "sub", "header": "x-user-id"}], "roles_header": "x-user-roles"}
        }));
        Fixture { envoy, rsa, ec }
    })
}

fn valid() -> Value {
    claims(ISS, &["api"], json!({}))
}

fn send(token: &str) -> Response {
    fixture().envoy.get_with_token("/", token)
}

#[track_caller]
fn refused(token: &str) {
    let r = send(token);
    assert_eq!(r.status, 401, "expected 401, got {} {}", r.status, r.body);
    assert!(!r.reached_upstream());
}

/// A token with this header (JSON text) and payload, signed by the fixture's EC key.
fn ec_token(header: &str, payload: &Value) -> String {
    fixture().ec.sign_raw(header, &payload.to_string())
}

fn replace_signature(token: &str, signature: &[u8]) -> String {
    let (input, _) = token.rsplit_once('.').unwrap();
    format!("{}.{}", input, b64(signature))
}

fn signature_of(token: &str) -> Vec<u8> {
    b64_decode(token.rsplit_once('.').unwrap().1).unwrap()
}

// --- algorithm attacks ---------------------------------------------------------------------

#[test]
fn alg_none_in_any_capitalisation() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg}).to_string().as_bytes());
        let payload = b64(valid().to_string().as_bytes());
        refused(&format!("{}.{}.", header, payload));
        refused(&format!("{}.{}.{}", header, payload, b64(b"sig")));
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_as_hmac_secret() {
    let jwk = fixture().rsa.jwk();
    let n = b64_decode(jwk["n"].as_str().unwrap()).unwrap();
    for secret in [jwk.to_string().into_bytes(), n] {
        let forged = SigningKey::hmac("HS256", "rsa-1", &secret).sign(&valid());
        refused(&forged);
        let no_kid = SigningKey::hmac("HS256", "", &secret).sign(&valid());
        refused(&no_kid);
    }
}

#[test]
fn alg_the_keys_type_cannot_have() {
    // ES256 header naming the RSA key, signed with the EC key.
    refused(&ec_token(r#"{"alg":"ES256","kid":"rsa-1"}"#, &valid()));
    // RS256 header naming the EC key.
    let t = fixture()
        .rsa
        .sign_raw(r#"{"alg":"RS256","kid":"ec-1"}"#, &valid().to_string());
    refused(&t);
    // PS256 header on an RS256-only JWK.
    let ps = fixture().rsa.rsa_with_alg("PS256");
    refused(&ps.sign(&valid()));
}

// --- kid attacks ---------------------------------------------------------------------------

#[test]
fn kid_that_is_a_path_sql_very_long_or_empty() {
    for kid in [
        "../../../../etc/passwd",
        "/dev/null",
        "' OR '1'='1' --",
        "x\"; DROP TABLE keys; --",
        &"k".repeat(3000),
        "",
    ] {
        let header = json!({"alg": "ES256", "kid": kid}).to_string();
        refused(&ec_token(&header, &valid()));
    }
}

// --- embedded keys: never used, never fetched ----------------------------------------------

#[test]
fn embedded_jwk_jku_x5u_and_x5c_are_ignored_and_never_fetched() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&connections);
    std::thread::spawn(move || loop {
        if listener.accept().is_ok() {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(10));
    });
    let attacker = SigningKey::es256("attacker");
    let url = format!("http://127.0.0.1:{}/keys", port);
    let headers = [
        json!({"alg": "ES256", "kid": "attacker", "jwk": attacker.jwk()}),
        json!({"alg": "ES256", "kid": "ec-1", "jwk": attacker.jwk()}),
        json!({"alg": "ES256", "kid": "attacker", "jku": url}),
        json!({"alg": "ES256", "kid": "attacker", "x5u": url}),
        json!({"alg": "ES256", "kid": "attacker", "x5c": [b64(b"not a certificate")]}),
        json!({"alg": "ES256", "jwk": attacker.jwk(), "jku": url}),
    ];
    for header in headers {
        let forged = attacker.sign_raw(&header.to_string(), &valid().to_string());
        refused(&forged);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a URL from a token header was fetched"
    );
}

#[test]
fn unknown_crit_entry() {
    refused(&ec_token(
        r#"{"alg":"ES256","kid":"ec-1","crit":["exp"],"exp":1}"#,
        &valid(),
    ));
    refused(&ec_token(
        r#"{"alg":"ES256","kid":"ec-1","crit":["urn:example:unknown"],"urn:example:unknown":1}"#,
        &valid(),
    ));
}

#[test]
fn unencoded_payload_b64_false() {
    refused(&ec_token(
        r#"{"alg":"ES256","kid":"ec-1","b64":false,"crit":["b64"]}"#,
        &valid(),
    ));
    refused(&ec_token(
        r#"{"alg":"ES256","kid":"ec-1","b64":false}"#,
        &valid(),
    ));
}

// --- signature manipulation ----------------------------------------------------------------

/// The order of P-256.
const P256_N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// a - b for 32-byte big-endian numbers (a >= b).
fn sub(a: &[u8; 32], b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = if d < 0 {
            d += 256;
            1
        } else {
            0
        };
        out[i] = d as u8;
    }
    out
}

/// a + b for 32-byte numbers, wrapping.
fn add(a: &[u8; 32], b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in (0..32).rev() {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    out
}

fn der_integer(v: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
    if v.first().is_some_and(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    let mut out = vec![0x02, v.len() as u8];
    out.extend(v);
    out
}

#[test]
fn truncated_extended_and_zeroed_signatures() {
    let t = ec_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &valid());
    let sig = signature_of(&t);
    assert_eq!(sig.len(), 64);
    refused(&replace_signature(&t, &sig[..63]));
    refused(&replace_signature(&t, &sig[..32]));
    let mut longer = sig.clone();
    longer.push(0);
    refused(&replace_signature(&t, &longer));
    refused(&replace_signature(&t, &[0u8; 64]));
    refused(&replace_signature(&t, &[]));
    let rsa = fixture().rsa.sign(&valid());
    let rsa_sig = signature_of(&rsa);
    refused(&replace_signature(&rsa, &rsa_sig[..255]));
    refused(&replace_signature(&rsa, &[0u8; 256]));
}

#[test]
fn der_encoded_ecdsa_signature_instead_of_raw_r_s() {
    let t = ec_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &valid());
    let sig = signature_of(&t);
    let (r, s) = sig.split_at(32);
    let mut body = der_integer(r);
    body.extend(der_integer(s));
    let mut der = vec![0x30, body.len() as u8];
    der.extend(body);
    refused(&replace_signature(&t, &der));
}

#[test]
fn signature_reencoded_with_standard_base64() {
    let t = fixture().rsa.sign(&valid());
    let sig = signature_of(&t);
    let standard = base64_std::encode(&sig);
    let (input, _) = t.rsplit_once('.').unwrap();
    assert!(standard.contains(['+', '/', '=']) || standard.len() % 4 == 0);
    refused(&format!("{}.{}", input, standard));
    refused(&format!("{}.{}==", input, b64(&sig)));
}

#[test]
fn ecdsa_r_or_s_zero_or_not_below_the_group_order() {
    let t = ec_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &valid());
    let sig = signature_of(&t);
    let (r, s) = sig.split_at(32);
    let with = |r: &[u8], s: &[u8]| -> Vec<u8> { [r, s].concat() };
    refused(&replace_signature(&t, &with(&[0u8; 32], s)));
    refused(&replace_signature(&t, &with(r, &[0u8; 32])));
    refused(&replace_signature(&t, &with(&P256_N, s)));
    refused(&replace_signature(&t, &with(r, &P256_N)));
    // s + n is congruent to s but not below n.
    let s_plus_n = add(&P256_N, s);
    if s_plus_n.as_slice() > s {
        refused(&replace_signature(&t, &with(r, &s_plus_n)));
    }
}

#[test]
fn high_s_ecdsa_signature_is_accepted_200() {
    // (r, n - s) is as valid as (r, s): OpenSSL and Go signers emit either.
    let t = ec_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &valid());
    let sig = signature_of(&t);
    let (r, s) = sig.split_at(32);
    let flipped = sub(&P256_N, s);
    let high_s = replace_signature(&t, &[r, &flipped[..]].concat());
    expect::passed(&send(&high_s));
    expect::passed(&send(&t));
}

// --- structure -----------------------------------------------------------------------------

#[test]
fn empty_segments_and_wrong_part_counts() {
    let t = ec_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &valid());
    let parts: Vec<&str> = t.split('.').collect();
    for bad in [
        format!(".{}.{}", parts[1], parts[2]),
        format!("{}..{}", parts[0], parts[2]),
        format!("{}.{}.", parts[0], parts[1]),
        "..".to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
        format!(
            "{}.{}.{}.{}.{}",
            parts[0], parts[1], parts[2], parts[2], parts[2]
        ),
    ] {
        refused(&bad);
    }
}

#[test]
fn whitespace_or_non_ascii_bytes_inside_the_token() {
    let t = ec_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &valid());
    let f = fixture();
    for bad in [
        format!("Bearer {} {}", &t[..10], &t[10..]),
        format!("Bearer {}\t{}", &t[..10], &t[10..]),
    ] {
        let r = f.envoy.get("/", &[("authorization", &bad)]);
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let mut req = b"GET / HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ".to_vec();
    req.extend_from_slice(&t.as_bytes()[..20]);
    req.extend_from_slice("\u{00e9}\u{4e2d}".as_bytes());
    req.extend_from_slice(&t.as_bytes()[20..]);
    req.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    let r = http::send_raw(f.envoy.port, &req);
    assert!(
        r.status == 401 || r.status == 400,
        "{} {}",
        r.status,
        r.body
    );
    assert!(!r.reached_upstream());
}

#[test]
fn token_larger_than_the_cap() {
    let big = claims(ISS, &["api"], json!({"pad": "a".repeat(20_000)}));
    refused(&ec_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &big));
}

#[test]
fn json_that_is_not_strict_json() {
    let header = r#"{"alg":"ES256","kid":"ec-1"}"#;
    let exp = tokengate_testkit::now() + 3600;
    for payload in [
        format!(r#"{{"iss":"{}","aud":["api"],"exp":{},}}"#, ISS, exp),
        format!(r#"{{iss:"{}",aud:["api"],exp:{}}}"#, ISS, exp),
        format!(r#"{{'iss':'{}','aud':['api'],'exp':{}}}"#, ISS, exp),
        format!(
            r#"{{"iss":"{}","aud":["api"],"exp":{}}} trailing"#,
            ISS, exp
        ),
        format!(r#"{{"iss":"{}","aud":["api"],"exp":{},"n":NaN}}"#, ISS, exp),
    ] {
        refused(&fixture().ec.sign_raw(header, &payload));
    }
    refused(
        &fixture()
            .ec
            .sign_raw(r#"{"alg":"ES256","kid":"ec-1",}"#, &valid().to_string()),
    );
}

#[test]
fn duplicate_claim_keys() {
    let header = r#"{"alg":"ES256","kid":"ec-1"}"#;
    let exp = tokengate_testkit::now() + 3600;
    let payload = format!(
        r#"{{"iss":"https://evil.test","aud":["api"],"exp":{},"iss":"{}"}}"#,
        exp, ISS
    );
    refused(&fixture().ec.sign_raw(header, &payload));
    refused(&fixture().ec.sign_raw(
        r#"{"alg":"none","alg":"ES256","kid":"ec-1"}"#,
        &valid().to_string(),
    ));
}

#[test]
fn deeply_nested_json() {
    let mut payload = valid();
    let mut nested = json!(1);
    for _ in 0..200 {
        nested = json!([nested]);
    }
    payload["deep"] = nested;
    refused(&ec_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &payload));
}

// --- claims --------------------------------------------------------------------------------

#[test]
fn aud_as_a_number_or_an_object() {
    for aud in [json!(7), json!({"api": true}), json!([1, 2]), json!(null)] {
        refused(&ec_token(
            r#"{"alg":"ES256","kid":"ec-1"}"#,
            &claims(ISS, &[], json!({"aud": aud})),
        ));
    }
}

#[test]
fn aud_as_a_single_matching_string_is_accepted_200() {
    expect::passed(&send(&ec_token(
        r#"{"alg":"ES256","kid":"ec-1"}"#,
        &claims(ISS, &[], json!({"aud": "api"})),
    )));
}

#[test]
fn exp_or_nbf_as_strings_negative_or_huge() {
    for (k, v) in [
        ("exp", json!("9999999999")),
        ("exp", json!(-1)),
        ("exp", json!(1e30)),
        ("exp", json!(f64::MAX)),
        ("nbf", json!("0")),
        ("nbf", json!(-5)),
        ("nbf", json!(1e300)),
    ] {
        refused(&ec_token(
            r#"{"alg":"ES256","kid":"ec-1"}"#,
            &claims(ISS, &["api"], json!({ k: v })),
        ));
    }
}

#[test]
fn iss_differing_by_a_trailing_slash_or_case() {
    for iss in [
        "https://issuer.test/",
        "https://ISSUER.test",
        "HTTPS://issuer.test",
        "https://issuer.test ",
    ] {
        refused(&ec_token(
            r#"{"alg":"ES256","kid":"ec-1"}"#,
            &claims(iss, &["api"], json!({})),
        ));
    }
}

// --- requests ------------------------------------------------------------------------------

#[test]
fn two_authorization_headers() {
    let t = ec_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &valid());
    let bearer = format!("Bearer {}", t);
    let r = fixture().envoy.get(
        "/",
        &[
            ("authorization", &bearer),
            ("authorization", "Bearer other.token.here"),
        ],
    );
    assert_eq!(r.status, 401);
    let r = fixture().envoy.get(
        "/",
        &[("authorization", &bearer), ("authorization", &bearer)],
    );
    assert_eq!(r.status, 401);
}

#[test]
fn tab_or_no_space_after_bearer_but_several_spaces_are_valid() {
    let t = ec_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &valid());
    for bad in [format!("Bearer\t{}", t), format!("Bearer{}", t)] {
        assert_eq!(
            fixture().envoy.get("/", &[("authorization", &bad)]).status,
            401
        );
    }
    let spaced = format!("Bearer   {}", t);
    expect::passed(&fixture().envoy.get("/", &[("authorization", &spaced)]));
}

#[test]
fn client_sent_claim_headers_never_reach_the_upstream() {
    let t = ec_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &valid());
    let bearer = format!("Bearer {}", t);
    let r = fixture().envoy.get(
        "/",
        &[
            ("x-user-id", "admin"),
            ("X-User-Roles", "admin"),
            ("authorization", &bearer),
        ],
    );
    expect::passed(&r);
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("user-1"));
    assert_eq!(r.upstream_header("x-user-roles"), None);
}

// --- keys ----------------------------------------------------------------------------------

fn jwk_with(mut jwk: Value, field: &str, value: Value) -> Value {
    jwk[field] = value;
    jwk
}

#[test]
fn invalid_curve_weak_rsa_and_exponent_one_keys_are_refused_at_load_with_a_log_line() {
    let good = SigningKey::es256("good");
    let ec = SigningKey::es256("bad-curve");
    let rsa = SigningKey::rsa("RS256", "weak");
    // A point off the curve: y + 1.
    let mut y = b64_decode(ec.jwk()["y"].as_str().unwrap()).unwrap();
    let last = y.len() - 1;
    y[last] ^= 1;
    let off_curve = jwk_with(ec.jwk(), "y", json!(b64(&y)));
    let weak = jwk_with(rsa.jwk(), "n", json!(b64(&[0xC5; 128])));
    let e_one = jwk_with(rsa.jwk(), "e", json!("AQ"));
    let jwks = json!({"keys": [good.jwk(), off_curve, weak, e_one]});
    let envoy = Envoy::start(
        &json!({"providers": {"main": {"issuer": ISS, "jwks": jwks}}, "default": "authenticated"}),
    );
    let log = envoy.log();
    for line in [
        "key 1 (kid \"bad-curve\") x/y is not a valid point on the curve (skipped)",
        "key 2 (kid \"weak\") RSA modulus has 1024 bits, fewer than the minimum 2048",
        "key 3 (kid \"weak\") RSA exponent must be odd and at least 3",
    ] {
        assert!(log.contains(line), "missing log line {:?}", line);
    }
    expect::passed(&envoy.get_with_token("/", &good.sign(&claims(ISS, &[], json!({})))));
    assert_eq!(
        envoy
            .get_with_token("/", &ec.sign(&claims(ISS, &[], json!({}))))
            .status,
        401
    );
    assert_eq!(
        envoy
            .get_with_token("/", &rsa.sign(&claims(ISS, &[], json!({}))))
            .status,
        401
    );
}

mod base64_std {
    pub fn encode(bytes: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
