//! The headers an allowed request carries upstream: configured claims, roles, permissions,
//! scopes and the provider's name, each within `forward.max_header_bytes`.

use crate::config::settings::Settings;
use crate::engine::gate::VerifiedToken;
use serde_json::Value;

/// The claim headers for the upstream, and the names of those left out for being longer
/// than `forward.max_header_bytes`. Values with control characters are dropped rather than
/// forwarded (header injection).
pub(crate) fn forwarded_headers(
    settings: &Settings,
    token: &VerifiedToken,
) -> (Vec<(String, String)>, Vec<String>) {
    let fwd = &settings.forward;
    let mut out = Vec::new();
    let mut oversized = Vec::new();
    let mut push = |header: &String, value: String| {
        if value.len() > fwd.max_header_bytes {
            oversized.push(header.clone());
        } else if !value.is_empty() && !value.chars().any(|c| c.is_control()) {
            out.push((header.clone(), value));
        }
    };
    for c in &fwd.claims {
        if let Some(value) = c.claim.lookup(&token.claims).and_then(header_value) {
            push(&c.header, value);
        }
    }
    if let Some(h) = &fwd.roles_header {
        push(
            h,
            token.principal.role_names().collect::<Vec<_>>().join(","),
        );
    }
    if let Some(h) = &fwd.permissions_header {
        push(h, token.principal.permissions.join(","));
    }
    if let Some(h) = &fwd.scopes_header {
        push(h, token.principal.scopes.join(","));
    }
    if let Some(h) = &fwd.provider_header {
        if let Some(p) = settings.provider(token.provider) {
            push(h, p.name.clone());
        }
    }
    (out, oversized)
}

/// A claim as a header value: strings, numbers and booleans as text; arrays joined with
/// commas; objects as their keys (the ZITADEL roles object becomes its role names).
fn header_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|v| match v {
                    Value::Array(_) | Value::Object(_) | Value::Null => None,
                    other => header_value(other),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Object(map) => Some(map.keys().cloned().collect::<Vec<_>>().join(",")),
        Value::Null => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_values_become_header_text() {
        use serde_json::json;
        assert_eq!(header_value(&json!("a")).as_deref(), Some("a"));
        assert_eq!(header_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(header_value(&json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(header_value(&json!(true)).as_deref(), Some("true"));
        assert_eq!(
            header_value(&json!(["a", 1, {"x": 1}, "b"])).as_deref(),
            Some("a,1,b")
        );
        assert_eq!(
            header_value(&json!({"admin": {}, "user": {}})).as_deref(),
            Some("admin,user")
        );
        assert_eq!(header_value(&Value::Null), None);
    }
}
