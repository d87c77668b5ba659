//! What the filter decided about one request, and the HTTP answer a refusal gets.

use crate::token::extract::TokenRemoval;
use crate::token::verify::TokenError;

use serde_json::json;

/// Why a request was (or in dry-run would have been) refused. Each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    Missing,
    Malformed,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    Forbidden,
    /// Introspection says the token is not active.
    Inactive,
    /// Not the client's fault: keys or the introspection endpoint cannot be reached (503).
    Unavailable,
    /// The request has no single reading: its host, path or organisation header (400).
    BadRequest,
}

impl From<&TokenError> for DenyReason {
    /// The counter a token's failure counts under.
    fn from(error: &TokenError) -> DenyReason {
        match error {
            TokenError::TooLarge { .. }
            | TokenError::Malformed(_)
            | TokenError::MissingClaim(_)
            | TokenError::LifetimeTooLong { .. }
            | TokenError::TypeNotAccepted { .. } => DenyReason::Malformed,
            TokenError::AlgNotAllowed(_)
            | TokenError::UnknownKid(_)
            | TokenError::NoKeyForAlg(_)
            | TokenError::BadSignature => DenyReason::Signature,
            TokenError::Expired => DenyReason::Expired,
            TokenError::NotYetValid => DenyReason::NotYetValid,
            TokenError::UnknownIssuer(_) => DenyReason::Issuer,
            TokenError::AudienceNotAllowed => DenyReason::Audience,
            TokenError::KeysUnavailable { .. } | TokenError::IntrospectionUnavailable { .. } => {
                DenyReason::Unavailable
            }
            TokenError::Inactive => DenyReason::Inactive,
        }
    }
}

impl DenyReason {
    pub const ALL: [DenyReason; 11] = [
        DenyReason::Missing,
        DenyReason::Malformed,
        DenyReason::Signature,
        DenyReason::Expired,
        DenyReason::NotYetValid,
        DenyReason::Issuer,
        DenyReason::Audience,
        DenyReason::Forbidden,
        DenyReason::Inactive,
        DenyReason::Unavailable,
        DenyReason::BadRequest,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DenyReason::Missing => "missing",
            DenyReason::Malformed => "malformed",
            DenyReason::Signature => "signature",
            DenyReason::Expired => "expired",
            DenyReason::NotYetValid => "not_yet_valid",
            DenyReason::Issuer => "issuer",
            DenyReason::Audience => "audience",
            DenyReason::Forbidden => "forbidden",
            DenyReason::Inactive => "inactive",
            DenyReason::Unavailable => "unavailable",
            DenyReason::BadRequest => "bad_request",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied(DenyReason),
}

/// Whether the verified-token cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    NotUsed,
    Hit,
    Miss,
}

/// The local reply for a refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Denial {
    /// 401 without a token: a bare challenge (RFC 6750 section 3.1: no error code).
    pub fn missing(realm: &str, description: &str) -> Denial {
        Denial::build(401, realm, "missing_token", description, None, None)
    }

    /// 401 for a token that was sent but could not be read from the request.
    pub fn invalid_request(realm: &str, description: &str) -> Denial {
        Denial::build(
            401,
            realm,
            "invalid_request",
            description,
            Some("invalid_request"),
            None,
        )
    }

    /// 401 for a token that is not valid here.
    pub fn invalid_token(realm: &str, description: &str) -> Denial {
        Denial::build(
            401,
            realm,
            "invalid_token",
            description,
            Some("invalid_token"),
            None,
        )
    }

    /// 403 for a valid token that lacks what the route requires; `scope` names it.
    pub fn insufficient_scope(realm: &str, description: &str, required: &[String]) -> Denial {
        let scope = required.join(" ");
        Denial::build(
            403,
            realm,
            "insufficient_scope",
            description,
            Some("insufficient_scope"),
            Some(&scope).filter(|s| !s.is_empty()).map(|s| s.as_str()),
        )
    }

    /// 403 for a route no token can open (a deny rule, or the default deny).
    pub fn access_denied(description: &str) -> Denial {
        Denial {
            status: 403,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body("access_denied", description),
        }
    }

    /// 400 for a request whose host, path or organisation the upstream could read otherwise
    /// than tokengate: not a token problem, so no challenge.
    pub fn bad_request(description: &str) -> Denial {
        Denial {
            status: 400,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body("invalid_request", description),
        }
    }

    /// 503 when the filter cannot decide for reasons outside the client's control.
    pub fn unavailable(description: &str, retry_after_s: u64) -> Denial {
        Denial {
            status: 503,
            headers: vec![
                ("retry-after", retry_after_s.to_string()),
                ("content-type", "application/json".to_owned()),
            ],
            body: body("temporarily_unavailable", description),
        }
    }

    fn build(
        status: u16,
        realm: &str,
        error: &str,
        description: &str,
        challenge_error: Option<&str>,
        scope: Option<&str>,
    ) -> Denial {
        let mut challenge = format!("Bearer realm=\"{}\"", quoted(realm));
        if let Some(code) = challenge_error {
            challenge.push_str(&format!(
                ", error=\"{}\", error_description=\"{}\"",
                code,
                quoted(description)
            ));
        }
        if let Some(scope) = scope {
            challenge.push_str(&format!(", scope=\"{}\"", quoted(scope)));
        }
        Denial {
            status,
            headers: vec![
                ("www-authenticate", challenge),
                ("content-type", "application/json".to_owned()),
            ],
            body: body(error, description),
        }
    }
}

fn body(error: &str, description: &str) -> String {
    json!({ "error": error, "error_description": description }).to_string()
}

/// Text safe inside an RFC 7235 quoted-string (RFC 6750 also forbids `"` and `\` in
/// error_description): anything outside printable ASCII, quotes and backslashes become `?`.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' || c == '\\' || !(' '..='~').contains(&c) {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Everything the host needs to act on one request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    /// False in dry-run: a refusal is only reported, the request goes on.
    pub enforced: bool,
    /// The reply to send when the request is refused and `enforced`.
    pub denial: Option<Denial>,
    /// Headers to set on the request before it goes upstream.
    pub upstream_headers: Vec<(String, String)>,
    /// How to take the token out of the request before the upstream (`forward.remove_token`).
    pub token_removal: Option<TokenRemoval>,
    /// The verified-JWT cache.
    pub cache: CacheUse,
    /// The introspection cache.
    pub introspection_cache: CacheUse,
    /// Name of the rule that decided.
    pub rule: String,
    /// What happened, for the debug log. Never contains the token.
    pub detail: String,
    /// Something the operator should hear about at warn level (said once per rule).
    pub warning: Option<String>,
}

impl Decision {
    /// Whether the request must be answered locally instead of going upstream.
    pub fn refuses(&self) -> Option<&Denial> {
        if self.enforced {
            self.denial.as_ref()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_challenge_has_no_error_code() {
        let d = Denial::missing("api", "no token");
        assert_eq!(d.status, 401);
        assert_eq!(
            d.headers[0],
            ("www-authenticate", "Bearer realm=\"api\"".to_owned())
        );
        assert_eq!(
            d.body,
            r#"{"error":"missing_token","error_description":"no token"}"#
        );
    }

    #[test]
    fn invalid_token_challenge_carries_error_and_description() {
        let d = Denial::invalid_token("api", "the token has expired");
        assert_eq!(
            d.headers[0].1,
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
    }

    #[test]
    fn insufficient_scope_names_what_is_required() {
        let d = Denial::insufficient_scope("api", "lacks roles", &["admin".into(), "ops".into()]);
        assert_eq!(d.status, 403);
        assert!(
            d.headers[0].1.ends_with(", scope=\"admin ops\""),
            "{}",
            d.headers[0].1
        );
    }

    #[test]
    fn challenge_text_is_sanitised() {
        let d = Denial::invalid_token("api", "kid \"x\\y\"\n\u{e9}");
        assert!(
            d.headers[0].1.contains("error_description=\"kid ?x?y???\""),
            "{}",
            d.headers[0].1
        );
        assert!(d.body.contains(r#"kid \"x\\y\"\n"#), "{}", d.body);
    }
}
