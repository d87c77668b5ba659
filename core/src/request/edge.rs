//! The request as the upstream will read it. A rule is only as good as the match between the
//! request it decided and the request the application acts on: URL parsers drop userinfo and a
//! trailing dot, frameworks upper-case the method and honour override headers, CGI and WSGI
//! fold `x_user_id` and `x-user-id` into one variable. These checks make what tokengate
//! compares the canonical form, and refuse what has no single reading.

use crate::request::headers::HeaderMap;
use std::fmt;

/// Why a request has no single reading (a 400 `invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeError {
    /// The `:authority` holds userinfo (`user@host`) or several hosts (`a,b`).
    Authority(&'static str),
    /// The path is not in normal form (see [`check_path`]).
    Path(&'static str),
    /// The header naming the organisation a role is checked in is repeated, empty or a list.
    OrgHeader { header: String, why: &'static str },
}

impl fmt::Display for EdgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeError::Authority(why) => write!(f, "the request's host {}", why),
            EdgeError::Path(why) => write!(
                f,
                "the request path is not in normal form: it {} (require_normal_paths)",
                why
            ),
            EdgeError::OrgHeader { header, why } => write!(
                f,
                "the {} header must name exactly one organisation; it {}",
                header, why
            ),
        }
    }
}

/// The host rules compare (case-insensitively): `:authority` without its port and without
/// one trailing dot (`admin.example.com.:443` is `admin.example.com`). An authority with
/// userinfo or a comma (Envoy joins two `Host` lines with one) has no single host and is
/// refused.
pub fn canonical_host(authority: &str) -> Result<&str, EdgeError> {
    if authority.contains('@') {
        return Err(EdgeError::Authority("carries userinfo (user@host)"));
    }
    if authority.contains(',') {
        return Err(EdgeError::Authority("names more than one host"));
    }
    let host = if authority.starts_with('[') {
        // [v6] or [v6]:port
        authority
            .split_once(']')
            .map_or(authority, |(v6, _)| &authority[..v6.len() + 1])
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            Some(_) => return Err(EdgeError::Authority("has a port that is not a number")),
            None => authority,
        }
    };
    Ok(host.strip_suffix('.').unwrap_or(host))
}

/// Accepts a path (without its query) only in normal form, the one form every upstream reads
/// the same way: it starts with `/` (or is `*`), has no empty segment but a trailing one, no
/// `.` or `..` segment, no `\`, `;` (path parameters: `/admin;x`, `..;`) or NUL, no
/// percent-encoded `/`, `\`, `.`, `%` or NUL (`%2F`, `%5C`, `%2E`, `%25`, `%00`), which
/// decoders differ on, and no percent-encoded unreserved character (`%61dmin` is `admin`).
pub fn check_path(path: &str) -> Result<(), EdgeError> {
    if path == "*" {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(EdgeError::Path("does not start with /"));
    };
    let bytes = path.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return Err(EdgeError::Path("has a backslash")),
            b';' => return Err(EdgeError::Path("has a ; (path parameter)")),
            0 => return Err(EdgeError::Path("has a NUL")),
            b'%' => match decoded(bytes.get(i + 1..i + 3)) {
                Some(b'/' | b'\\' | b'.' | b'%' | 0) => {
                    return Err(EdgeError::Path("has an encoded /, \\, ., % or NUL"))
                }
                // RFC 3986 2.3: an encoded unreserved character equals the character itself.
                Some(c) if c.is_ascii_alphanumeric() || b"-_~".contains(&c) => {
                    return Err(EdgeError::Path(
                        "has an encoded letter, digit, -, _ or ~ (write it plainly)",
                    ))
                }
                Some(_) => {}
                None => return Err(EdgeError::Path("has a % not followed by two hex digits")),
            },
            _ => {}
        }
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "" if i < last => return Err(EdgeError::Path("has an empty segment (//)")),
            "." | ".." => return Err(EdgeError::Path("has a . or .. segment")),
            _ => {}
        }
    }
    Ok(())
}

/// The byte a `%XY` escape stands for.
fn decoded(hex: Option<&[u8]>) -> Option<u8> {
    let text = std::str::from_utf8(hex?).ok()?;
    u8::from_str_radix(text, 16).ok()
}

/// A header name as CGI, WSGI, PHP and Rack read it: `x_user_id` and `X-User-Id` are both
/// `HTTP_X_USER_ID` there.
pub fn cgi_name(name: &[u8]) -> Vec<u8> {
    name.iter()
        .map(|b| match b {
            b'_' => b'-',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

/// Headers that many frameworks take as the method.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
];
/// Headers that some frameworks take as the path.
pub const PATH_OVERRIDE_HEADERS: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// The request headers to remove before the request goes on: every spelling of a name in
/// `protected` that an application reads as that name (its CGI name), other than the exact
/// name itself, and every spelling of a name in `removed`, the exact one included.
pub fn headers_to_remove(
    headers: &HeaderMap,
    protected: &[String],
    removed: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (name, _) in headers.iter() {
        if name.first() == Some(&b':') {
            continue;
        }
        let listed = |list: &[String], name: &[u8]| list.iter().any(|n| n.as_bytes() == name);
        // Envoy hands names in lower case: only one with `_` (or upper case) is another
        // spelling, and only then is its CGI name worth building.
        let remove = if name.iter().any(|b| *b == b'_' || b.is_ascii_uppercase()) {
            let cgi = cgi_name(name);
            listed(removed, &cgi) || listed(protected, &cgi)
        } else {
            listed(removed, name)
        };
        if remove {
            if let Ok(name) = std::str::from_utf8(name) {
                if !out.iter().any(|n| n == name) {
                    out.push(name.to_owned());
                }
            }
        }
    }
    out
}

/// The one organisation a request names in `header`: refused when the header is repeated
/// (the upstream may act on another value than the one checked), empty, or a list.
pub fn single_org<'a>(headers: &'a HeaderMap, header: &str) -> Result<Option<&'a [u8]>, EdgeError> {
    let mut values = headers.get_all(header);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let refuse = |why| {
        Err(EdgeError::OrgHeader {
            header: header.to_owned(),
            why,
        })
    };
    if values.next().is_some() {
        return refuse("appears more than once");
    }
    if first.iter().all(u8::is_ascii_whitespace) {
        return refuse("is empty");
    }
    if first.contains(&b',') {
        return refuse("holds a list");
    }
    Ok(Some(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_compared_in_canonical_form() {
        assert_eq!(
            canonical_host("Admin.Example.com").unwrap(),
            "Admin.Example.com"
        );
        assert_eq!(
            canonical_host("admin.example.com.").unwrap(),
            "admin.example.com"
        );
        assert_eq!(
            canonical_host("admin.example.com.:8443").unwrap(),
            "admin.example.com"
        );
        assert_eq!(canonical_host("[::1]:80").unwrap(), "[::1]");
        assert_eq!(canonical_host("[::1]").unwrap(), "[::1]");
        assert_eq!(canonical_host("").unwrap(), "");
    }

    #[test]
    fn authorities_without_a_single_host_are_refused() {
        for authority in [
            "x@admin.example.com",
            "admin.example.com,public.example.com",
            "admin.example.com:x",
        ] {
            assert!(canonical_host(authority).is_err(), "{}", authority);
        }
    }

    #[test]
    fn normal_paths_pass() {
        for path in [
            "/",
            "/admin",
            "/admin/",
            "/a/b.json",
            "/a%20b",
            "/%C3%A9",
            "*",
            "/a..b",
        ] {
            assert_eq!(check_path(path), Ok(()), "{}", path);
        }
    }

    #[test]
    fn paths_not_in_normal_form_are_refused() {
        for path in [
            "",
            "admin",
            "//admin",
            "/public//admin",
            "/./admin",
            "/public/../admin",
            "/admin/.",
            "/admin/..",
            "/%2Fadmin",
            "/public%2fadmin",
            "/public%5Cadmin",
            "/public/%2e%2e/admin",
            "/public/%252e%252e/admin",
            "/admin\\x",
            "/admin;x",
            "/public/..;/admin",
            "/admin\0",
            "/admin%00",
            "/%61dmin",
            "/admin%7e",
            "/admin%2",
        ] {
            assert!(check_path(path).is_err(), "{:?}", path);
        }
    }

    #[test]
    fn underscore_and_case_spellings_of_protected_headers_are_removed() {
        let headers = HeaderMap::from_pairs([
            (":path", "/"),
            ("x-user-id", "exact"),
            ("x_user_id", "alias"),
            ("X_User-Id", "alias"),
            ("x_other", "kept"),
            ("x-http-method-override", "DELETE"),
            ("x_http_method_override", "DELETE"),
        ]);
        let removed = headers_to_remove(
            &headers,
            &["x-user-id".to_owned()],
            &["x-http-method-override".to_owned()],
        );
        assert_eq!(
            removed,
            vec![
                "x_user_id",
                "X_User-Id",
                "x-http-method-override",
                "x_http_method_override"
            ]
        );
    }

    #[test]
    fn the_organisation_header_must_be_single() {
        let one = HeaderMap::from_pairs([("x-org", "org-1")]);
        assert_eq!(single_org(&one, "x-org"), Ok(Some(&b"org-1"[..])));
        assert_eq!(
            single_org(&HeaderMap::from_pairs([("a", "b")]), "x-org"),
            Ok(None)
        );
        for pairs in [
            vec![("x-org", "org-1"), ("x-org", "org-2")],
            vec![("x-org", "org-1,org-2")],
            vec![("x-org", "")],
        ] {
            assert!(single_org(&HeaderMap::from_pairs(pairs), "x-org").is_err());
        }
    }
}
