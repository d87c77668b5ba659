//! The dev IdP for end-to-end tests: started in this test process on a free loopback port,
//! steered through its methods (the same ones behind its `/control/` API).

use devidp::{ClientConfig, IdpConfig, RunningIdp};
use serde_json::json;

pub const PROJECT: &str = "283480000000000001";

/// The clients every test IdP knows: `svc-reader` (JWT, role `reader` in `org-1`,
/// permission `orders:read`) and `svc-admin` (JWT, role `admin` in `org-1`).
pub fn default_clients() -> Vec<ClientConfig> {
    serde_json::from_value(json!([
        {"client_id": "svc-reader", "client_secret": "reader-secret", "roles": {"reader": ["org-1"]}, "permissions": ["orders:read"]},
        {"client_id": "svc-admin", "client_secret": "admin-secret", "roles": {"admin": ["org-1"]}}
    ]))
    .unwrap()
}

pub fn config(clients: Vec<ClientConfig>, jwks_max_age_seconds: u64) -> IdpConfig {
    IdpConfig {
        issuer: None,
        project_id: PROJECT.into(),
        token_lifetime_seconds: 3600,
        jwks_max_age_seconds,
        clients,
    }
}

/// A dev IdP serving on a free port, with the default clients and `max-age=300` keys.
pub fn start() -> RunningIdp {
    RunningIdp::start(config(default_clients(), 300), "127.0.0.1:0").unwrap()
}

/// A dev IdP that is down: nothing listens on its port until `up()`.
pub fn start_down() -> RunningIdp {
    let port = crate::process::free_port();
    RunningIdp::start_down(config(default_clients(), 300), port).unwrap()
}

/// A token for `client` from the IdP (as its token endpoint would issue it). Opaque tokens are
/// registered as secrets that no log may show.
pub fn token(idp: &RunningIdp, client: &str) -> String {
    let token = idp.idp().mint(client, &json!({}), None).unwrap();
    crate::leaks::register_secret(&token);
    token
}
