//! Assertions shared by the end-to-end tests, with messages that show what Envoy answered.

use crate::http::Response;

/// The request went through tokengate to the upstream (echo or WSGI).
#[track_caller]
pub fn passed(r: &Response) {
    assert!(
        r.reached_upstream(),
        "expected the request to reach the upstream; got {} {}",
        r.status,
        r.body
    );
}

/// Tokengate refused the request itself with `status`, body `{"error": error, ...}` and an
/// `error_description` containing `description`.
#[track_caller]
pub fn refused(r: &Response, status: u16, error: &str, description: &str) {
    assert!(
        !r.from_upstream(),
        "expected a refusal, but the upstream answered: {}",
        r.body
    );
    assert_eq!(r.status, status, "status; body: {}", r.body);
    let body = r.json();
    assert_eq!(body["error"], error, "error code; body: {}", r.body);
    let text = body["error_description"].as_str().unwrap_or_default();
    assert!(
        text.contains(description),
        "error_description {:?} should contain {:?}",
        text,
        description
    );
}

/// 401 `invalid_token` whose description contains `description`.
#[track_caller]
pub fn invalid_token(r: &Response, description: &str) {
    refused(r, 401, "invalid_token", description);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=") && challenge.contains("error=\"invalid_token\""),
        "WWW-Authenticate: {:?}",
        challenge
    );
}
