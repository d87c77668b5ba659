//! Finding the access token in a request: headers (with a scheme prefix), cookies, query
//! parameters, tried in the configured order.

use crate::request::headers::HeaderMap;
use std::borrow::Cow;
use std::fmt;

/// One place a token may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A header (lower-case name). With a prefix such as `"Bearer "`, the prefix is matched
    /// case-insensitively and, when it ends in a space, one or more spaces may follow
    /// (RFC 6750 `1*SP`).
    Header {
        name: String,
        prefix: Option<String>,
    },
    Cookie(String),
    Query(String),
}

impl TokenSource {
    pub fn bearer() -> TokenSource {
        TokenSource::Header {
            name: "authorization".into(),
            prefix: Some("Bearer ".into()),
        }
    }
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Header {
                name,
                prefix: Some(p),
            } => {
                write!(f, "the {} header (\"{}<token>\")", name, p)
            }
            TokenSource::Header { name, prefix: None } => write!(f, "the {} header", name),
            TokenSource::Cookie(name) => write!(f, "the {} cookie", name),
            TokenSource::Query(name) => write!(f, "the {} query parameter", name),
        }
    }
}

/// Why the token could not be taken from the request (a 401 `invalid_request`-like refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtractError {
    Repeated(String),
    BadScheme {
        header: String,
        prefix: String,
    },
    NotVisibleAscii(String),
    /// Tokens in more than one configured source.
    SeveralSources,
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtractError::Repeated(what) => {
                write!(f, "the request carries more than one {}", what)
            }
            ExtractError::BadScheme { header, prefix } => write!(
                f,
                "the {} header must be \"{}<token>\" (spaces, not tabs, after the scheme)",
                header, prefix
            ),
            ExtractError::SeveralSources => write!(
                f,
                "the request carries tokens in more than one place; send one, in one place (RFC 6750 2)"
            ),
            ExtractError::NotVisibleAscii(what) => {
                write!(
                    f,
                    "the token in {} has characters a token cannot have",
                    what
                )
            }
        }
    }
}

/// The outcome of looking for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extraction<'a> {
    Found {
        token: Cow<'a, str>,
        /// Index of the source in the configured list.
        source: usize,
    },
    Missing,
    Invalid(ExtractError),
}

/// Looks in every source. A request that carries a token in more than one of them is
/// refused (RFC 6750 2: a client MUST NOT use more than one method): tokengate would check
/// one while the upstream may read another.
pub fn extract<'a>(
    sources: &[TokenSource],
    headers: &'a HeaderMap,
    path: &'a str,
) -> Extraction<'a> {
    let mut found: Option<(Cow<'a, str>, usize)> = None;
    for (index, source) in sources.iter().enumerate() {
        let token = match source {
            TokenSource::Header { name, prefix } => from_header(headers, name, prefix.as_deref()),
            TokenSource::Cookie(name) => from_cookie(headers, name),
            TokenSource::Query(name) => from_query(path, name),
        };
        match token {
            Ok(Some(_)) if found.is_some() => {
                return Extraction::Invalid(ExtractError::SeveralSources)
            }
            Ok(Some(token)) => found = Some((token, index)),
            Ok(None) => {}
            Err(e) => return Extraction::Invalid(e),
        }
    }
    match found {
        Some((token, source)) => Extraction::Found { token, source },
        None => Extraction::Missing,
    }
}

fn is_token_text(s: &str) -> bool {
    !s.is_empty() && crate::support::scan::visible_ascii(s.as_bytes())
}

fn from_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
    prefix: Option<&str>,
) -> Result<Option<Cow<'a, str>>, ExtractError> {
    let mut values = headers.get_all(name);
    let Some(raw) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ExtractError::Repeated(format!("{} header", name)));
    }
    // Envoy folds repeated inline headers (Authorization is one) into a single value joined
    // by commas; no token contains a comma.
    if crate::support::scan::contains(raw, b',') {
        return Err(ExtractError::Repeated(format!("{} header", name)));
    }
    let what = || format!("the {} header", name);
    let value = crate::support::scan::utf8(raw)
        .map_err(|_| ExtractError::NotVisibleAscii(what()))?
        .trim_matches(' ');
    let token = match prefix {
        None => value,
        Some(prefix) => {
            let scheme = prefix.trim_end_matches(' ');
            let wants_space = scheme.len() != prefix.len();
            let head = value.get(..scheme.len());
            if !head.is_some_and(|h| h.eq_ignore_ascii_case(scheme)) {
                // Another scheme (e.g. Basic): not a token for us.
                return Ok(None);
            }
            let rest = &value[scheme.len()..];
            if wants_space {
                let after = rest.trim_start_matches(' ');
                if after.len() == rest.len() || after.is_empty() {
                    return Err(ExtractError::BadScheme {
                        header: name.to_owned(),
                        prefix: prefix.to_owned(),
                    });
                }
                after
            } else {
                rest
            }
        }
    };
    if !is_token_text(token) {
        return Err(ExtractError::NotVisibleAscii(what()));
    }
    Ok(Some(Cow::Borrowed(token)))
}

fn from_cookie<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<Cow<'a, str>>, ExtractError> {
    let what = || format!("the {} cookie", name);
    let mut found: Option<&str> = None;
    for raw in headers.get_all("cookie") {
        // A cookie header with bytes that are not UTF-8 cannot hold our (ASCII) cookie.
        let Ok(text) = std::str::from_utf8(raw) else {
            continue;
        };
        for pair in text.split(';') {
            let Some((k, v)) = pair.trim_matches(' ').split_once('=') else {
                continue;
            };
            if k == name {
                if found.is_some() {
                    return Err(ExtractError::Repeated(format!("{} cookie", name)));
                }
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                found = Some(v);
            }
        }
    }
    match found {
        None => Ok(None),
        Some(v) if is_token_text(v) => Ok(Some(Cow::Borrowed(v))),
        Some(_) => Err(ExtractError::NotVisibleAscii(what())),
    }
}

fn from_query<'a>(path: &'a str, name: &str) -> Result<Option<Cow<'a, str>>, ExtractError> {
    let Some((_, query)) = path.split_once('?') else {
        return Ok(None);
    };
    let query = query.split_once('#').map_or(query, |q| q.0);
    let mut found: Option<&str> = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k).as_deref() == Some(name) {
            if found.is_some() {
                return Err(ExtractError::Repeated(format!("{} query parameter", name)));
            }
            found = Some(v);
        }
    }
    let Some(raw) = found else {
        return Ok(None);
    };
    match percent_decode(raw) {
        Some(v) if is_token_text(&v) => Ok(Some(v)),
        _ => Err(ExtractError::NotVisibleAscii(format!(
            "the {} query parameter",
            name
        ))),
    }
}

/// How to take the token out of a request before it goes upstream (`forward.remove_token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRemoval {
    /// Remove this header.
    Header(String),
    /// Replace the `cookie` headers with this one value, the token cookie left out; `None`:
    /// remove them (the token was the only cookie).
    Cookies(Option<String>),
    /// Replace `:path` with this one, the token parameter left out of the query.
    Path(String),
}

/// What to change so that the upstream never sees the token `source` carried.
pub fn removal(source: &TokenSource, headers: &HeaderMap, path: &str) -> Option<TokenRemoval> {
    match source {
        TokenSource::Header { name, .. } => Some(TokenRemoval::Header(name.clone())),
        TokenSource::Cookie(name) => {
            let kept: Vec<String> = headers
                .get_all("cookie")
                .flat_map(|raw| {
                    String::from_utf8_lossy(raw)
                        .split(';')
                        .map(|pair| pair.trim_matches(' ').to_owned())
                        .collect::<Vec<_>>()
                })
                .filter(|pair| {
                    !pair.is_empty() && pair.split_once('=').is_none_or(|(k, _)| k != name)
                })
                .collect();
            Some(TokenRemoval::Cookies(
                Some(kept.join("; ")).filter(|v| !v.is_empty()),
            ))
        }
        TokenSource::Query(name) => {
            let (base, query) = path.split_once('?')?;
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| {
                    let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
                    percent_decode(key).as_deref() != Some(name.as_str())
                })
                .collect();
            let mut new_path = base.to_owned();
            if !kept.is_empty() {
                new_path.push('?');
                new_path.push_str(&kept.join("&"));
            }
            if let Some(f) = fragment {
                new_path.push('#');
                new_path.push_str(f);
            }
            Some(TokenRemoval::Path(new_path))
        }
    }
}

/// Percent-decoding of a query component; `None` for bad escapes or non-UTF-8 results.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') && !s.contains('+') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        HeaderMap::from_pairs(pairs.iter().copied())
    }

    fn bearer(headers: &[(&str, &str)]) -> Extraction<'static> {
        let headers: &'static HeaderMap = Box::leak(Box::new(h(headers)));
        extract(&[TokenSource::bearer()], headers, "/")
    }

    fn found(token: &str) -> Extraction<'static> {
        Extraction::Found {
            token: Cow::Owned(token.to_string()),
            source: 0,
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer a.b.c", "bearer a.b.c", "BEARER a.b.c"] {
            assert_eq!(bearer(&[("authorization", v)]), found("a.b.c"));
        }
    }

    #[test]
    fn one_or_more_spaces_may_follow_bearer() {
        assert_eq!(
            bearer(&[("authorization", "Bearer    a.b.c")]),
            found("a.b.c")
        );
    }

    #[test]
    fn tab_or_no_space_after_bearer_is_refused() {
        for v in ["Bearer\ta.b.c", "Bearera.b.c", "Bearer", "Bearer   "] {
            assert!(
                matches!(
                    bearer(&[("authorization", v)]),
                    Extraction::Invalid(ExtractError::BadScheme { .. })
                ),
                "{:?}",
                v
            );
        }
    }

    #[test]
    fn other_schemes_are_not_tokens() {
        assert_eq!(
            bearer(&[("authorization", "Basic dXNlcjpwYXNz")]),
            Extraction::Missing
        );
        assert_eq!(bearer(&[]), Extraction::Missing);
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let r = bearer(&[
            ("authorization", "Bearer a.b.c"),
            ("authorization", "Bearer d.e.f"),
        ]);
        assert!(matches!(r, Extraction::Invalid(ExtractError::Repeated(_))));
    }

    #[test]
    fn folded_repeated_headers_are_refused() {
        let r = bearer(&[("authorization", "Bearer a.b.c,Bearer d.e.f")]);
        assert!(matches!(r, Extraction::Invalid(ExtractError::Repeated(_))));
    }

    #[test]
    fn whitespace_or_non_ascii_inside_the_token_is_refused() {
        for v in ["Bearer a.b c", "Bearer a.b.\u{e9}"] {
            assert!(
                matches!(
                    bearer(&[("authorization", v)]),
                    Extraction::Invalid(ExtractError::NotVisibleAscii(_))
                ),
                "{:?}",
                v
            );
        }
        let headers = HeaderMap::from_pairs([("authorization", &b"Bearer a.\xff.c"[..])]);
        assert!(matches!(
            extract(&[TokenSource::bearer()], &headers, "/"),
            Extraction::Invalid(_)
        ));
    }

    #[test]
    fn the_one_source_that_holds_a_token_is_used() {
        let sources = [
            TokenSource::Header {
                name: "x-token".into(),
                prefix: None,
            },
            TokenSource::Cookie("at".into()),
            TokenSource::Query("access_token".into()),
        ];
        let headers = h(&[("cookie", "a=1; at=from-cookie; b=2")]);
        let r = extract(&sources, &headers, "/p");
        assert_eq!(
            r,
            Extraction::Found {
                token: Cow::Borrowed("from-cookie"),
                source: 1
            }
        );
        let none = HeaderMap::default();
        let r = extract(&sources, &none, "/p?x=1&access_token=from%2Dquery");
        assert_eq!(
            r,
            Extraction::Found {
                token: Cow::Owned("from-query".into()),
                source: 2
            }
        );
        let headers = h(&[("x-token", "raw-token")]);
        let r = extract(&sources, &headers, "/p?other=q");
        assert_eq!(
            r,
            Extraction::Found {
                token: Cow::Borrowed("raw-token"),
                source: 0
            }
        );
    }

    #[test]
    fn tokens_in_more_than_one_source_are_refused() {
        let sources = [
            TokenSource::bearer(),
            TokenSource::Cookie("at".into()),
            TokenSource::Query("access_token".into()),
        ];
        let both = h(&[("authorization", "Bearer a"), ("cookie", "at=b")]);
        assert_eq!(
            extract(&sources, &both, "/p"),
            Extraction::Invalid(ExtractError::SeveralSources)
        );
        let header_and_query = h(&[("authorization", "Bearer a")]);
        assert_eq!(
            extract(&sources, &header_and_query, "/p?access_token=c"),
            Extraction::Invalid(ExtractError::SeveralSources)
        );
    }

    #[test]
    fn the_token_is_taken_out_of_its_cookie_or_query_parameter() {
        let cookie = TokenSource::Cookie("at".into());
        let headers = h(&[("cookie", "a=1; at=tok"), ("cookie", "b=2")]);
        assert_eq!(
            removal(&cookie, &headers, "/"),
            Some(TokenRemoval::Cookies(Some("a=1; b=2".into())))
        );
        let only = h(&[("cookie", "at=tok")]);
        assert_eq!(
            removal(&cookie, &only, "/"),
            Some(TokenRemoval::Cookies(None))
        );
        let query = TokenSource::Query("access_token".into());
        let none = HeaderMap::default();
        assert_eq!(
            removal(&query, &none, "/p?x=1&access_token=t&y=2"),
            Some(TokenRemoval::Path("/p?x=1&y=2".into()))
        );
        assert_eq!(
            removal(&query, &none, "/p?access%5Ftoken=t"),
            Some(TokenRemoval::Path("/p".into()))
        );
        assert_eq!(
            removal(&TokenSource::bearer(), &none, "/"),
            Some(TokenRemoval::Header("authorization".into()))
        );
    }

    #[test]
    fn repeated_query_parameter_is_refused() {
        let none = HeaderMap::default();
        let r = extract(&[TokenSource::Query("t".into())], &none, "/?t=a&t=b");
        assert!(matches!(r, Extraction::Invalid(ExtractError::Repeated(_))));
    }

    #[test]
    fn custom_prefix_without_space() {
        let sources = [TokenSource::Header {
            name: "x-auth".into(),
            prefix: Some("Token=".into()),
        }];
        let headers = h(&[("x-auth", "token=abc")]);
        assert_eq!(
            extract(&sources, &headers, "/"),
            Extraction::Found {
                token: Cow::Borrowed("abc"),
                source: 0
            }
        );
    }
}
