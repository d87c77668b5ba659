//! `mint`: signing keys and tokens for trying tokengate with inline keys.
//!
//!   mint keygen DIR                  RS256 key: DIR/signing-key.pem and DIR/jwks.json (kid demo-1)
//!   mint token KEY.pem CLAIMS-JSON   a token valid for an hour; CLAIMS-JSON is merged into
//!                                    iat/nbf/exp (null removes a claim)
//!
//! For local tries only: a key in a file next to the config is not how production keys live.

use serde_json::Value;
use std::process::ExitCode;
use tokengate_testkit::mint::{self, SigningKey};

const KID: &str = "demo-1";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["keygen", dir] => keygen(dir),
        ["token", key, claims] => token(key, claims),
        _ => Err("usage: mint keygen DIR | mint token KEY.pem CLAIMS-JSON".to_owned()),
    };
    match result {
        Ok(out) => {
            println!("{}", out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mint: {}", e);
            ExitCode::FAILURE
        }
    }
}

fn keygen(dir: &str) -> Result<String, String> {
    let key = SigningKey::rsa("RS256", KID);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let pem_path = format!("{}/signing-key.pem", dir);
    let jwks_path = format!("{}/jwks.json", dir);
    std::fs::write(&pem_path, key.rsa_pem()).map_err(|e| e.to_string())?;
    let jwks = serde_json::to_string_pretty(&mint::jwks(&[&key])).map_err(|e| e.to_string())?;
    std::fs::write(&jwks_path, jwks + "\n").map_err(|e| e.to_string())?;
    Ok(format!("wrote {} and {}", pem_path, jwks_path))
}

fn token(key_path: &str, claims: &str) -> Result<String, String> {
    let pem = std::fs::read_to_string(key_path).map_err(|e| format!("{}: {}", key_path, e))?;
    let key = SigningKey::rsa_from_pem("RS256", KID, &pem)?;
    let extra: Value = serde_json::from_str(claims).map_err(|e| format!("claims: {}", e))?;
    let mut c = mint::claims("", &[], extra);
    for k in ["iss", "aud", "sub"] {
        if c[k] == Value::String(String::new()) || c[k] == Value::Array(vec![]) {
            c.as_object_mut().map(|o| o.remove(k));
        }
    }
    Ok(key.sign(&c))
}
