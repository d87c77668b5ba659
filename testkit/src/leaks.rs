//! Every Envoy the tests start runs with tokengate's log at trace level; when it stops (and,
//! for Envoys kept for a whole test binary, when the binary exits) its log is searched for
//! anything that must never be logged: tokens (any JWT, and every opaque token and secret the
//! tests registered) and private keys. A leak fails the test run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Mutex, Once};

static SECRETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static LOGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A value that must never appear in a log (an opaque token, a client secret).
pub fn register_secret(secret: &str) {
    if secret.len() >= 8 {
        lock(&SECRETS).insert(secret.to_owned());
    }
}

/// Lines of tokengate's log output that give away a token, a secret or a private key.
pub fn leaks(log: &str) -> Vec<String> {
    let secrets = lock(&SECRETS).clone();
    log.lines()
        .filter(|line| line.contains("wasm log"))
        .filter(|line| {
            looks_like_jwt(line)
                || line.contains("PRIVATE KEY")
                || secrets.iter().any(|s| line.contains(s.as_str()))
        })
        .map(str::to_owned)
        .collect()
}

/// Whether the text holds something shaped like a compact JWS: `eyJ…` base64url, a dot, more
/// base64url, a dot.
fn looks_like_jwt(text: &str) -> bool {
    text.match_indices("eyJ").any(|(i, _)| {
        let rest = &text[i..];
        let segment = |s: &str| {
            s.bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
                .count()
        };
        let first = segment(rest);
        if first < 10 || rest.as_bytes().get(first) != Some(&b'.') {
            return false;
        }
        let second = segment(&rest[first + 1..]);
        second >= 10 && rest.as_bytes().get(first + 1 + second) == Some(&b'.')
    })
}

/// Remembers a log to search when the test binary exits.
pub fn watch(log: PathBuf) {
    static AT_EXIT: Once = Once::new();
    lock(&LOGS).push(log);
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(check_at_exit);
    });
}

/// Searches a log now; `Err` lists the leaking lines.
pub fn check(log: &str) -> Result<(), String> {
    let found = leaks(log);
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} log line(s) give away a token, a secret or a key:\n{}",
            found.len(),
            found.join("\n")
        ))
    }
}

extern "C" fn check_at_exit() {
    let logs = std::mem::take(&mut *lock(&LOGS));
    for path in logs {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Err(e) = check(&text) {
            eprintln!("LEAK in {}: {}", path.display(), e);
            unsafe { libc::_exit(101) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwts_keys_and_registered_secrets_are_found_in_tokengate_lines_only() {
        register_secret("s3cret-value-123");
        let log =
            "[wasm] wasm log tokengate: denied eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig\n\
                   [wasm] wasm log tokengate: fine line\n\
                   [wasm] wasm log tokengate: secret s3cret-value-123\n\
                   [router] authorization: Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig\n\
                   [wasm] wasm log tokengate: -----BEGIN RSA PRIVATE KEY-----";
        assert_eq!(leaks(log).len(), 3);
        assert!(check("[wasm] wasm log tokengate: kid \"eyJabc\"").is_ok());
    }
}
