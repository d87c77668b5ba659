//! Token minting for tests: the dev IdP's JOSE signing, plus claim builders.

pub use devidp::jose::*;
use serde_json::{json, Value};

/// Standard claims valid for an hour from now, merged with `extra` (null removes a claim).
pub fn claims(iss: &str, aud: &[&str], extra: Value) -> Value {
    let now = crate::now();
    let mut c = json!({
        "iss": iss,
        "sub": "user-1",
        "aud": aud,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    });
    if let (Some(base), Value::Object(extra)) = (c.as_object_mut(), extra) {
        for (k, v) in extra {
            if v.is_null() {
                base.remove(&k);
            } else {
                base.insert(k, v);
            }
        }
    }
    c
}
