//! What the engine says in words: the reasons in refusals and logs, and the details of the
//! steps `tokengate explain` prints. Only [`describe_claims`] repeats text from the request
//! (the token's registered claims): it is for explain, never for a log.

use crate::policy::rules::{Requirements, Shortfall};
use crate::token::extract::TokenSource;
use crate::token::jwt;

/// The `kid` of a verified token, for logs. It was signed by a key of the provider's set
/// (a key without `kid` also verifies a token that names one), so it is the issuer's text:
/// still escaped and cut at 64 characters.
pub(crate) fn describe_kid(kid: Option<&str>) -> String {
    match kid {
        None => "no kid".to_owned(),
        Some(kid) => {
            let cut: String = kid.chars().take(64).collect();
            let more = if cut.len() < kid.len() { "..." } else { "" };
            format!("kid {:?}{}", cut, more)
        }
    }
}

/// The places a token is looked for, in order.
pub(crate) fn describe_sources(sources: &[TokenSource]) -> String {
    sources
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The registered claims of a JWT, in words (`now` in Unix seconds). Claim values come from
/// the request: this is for `tokengate explain`, never for a log.
pub(crate) fn describe_claims(c: &jwt::Claims, now: u64) -> String {
    let when = |t: u64| {
        if t >= now {
            format!("{} (in {} s)", t, t - now)
        } else {
            format!("{} ({} s ago)", t, now - t)
        }
    };
    let mut parts = vec![
        format!("iss {:?}", c.iss.as_deref().unwrap_or("")),
        format!("sub {:?}", c.sub.as_deref().unwrap_or("")),
        format!(
            "aud {}",
            if c.aud.is_empty() {
                "(none)".into()
            } else {
                c.aud.join(", ")
            }
        ),
    ];
    if let Some(exp) = c.exp {
        parts.push(format!("exp {}", when(exp)));
    }
    if let Some(nbf) = c.nbf {
        parts.push(format!("nbf {}", when(nbf)));
    }
    parts.join(", ")
}

/// What a route asks of a token, in words.
pub(crate) fn describe_requirements(req: &Requirements) -> String {
    let list = |r: &crate::policy::rules::NameRequirement| {
        let how = match r.mode {
            crate::policy::rules::SetMode::AnyOf => "any of",
            crate::policy::rules::SetMode::AllOf => "all of",
        };
        format!("{} {}", how, r.names.join(", "))
    };
    let mut parts = Vec::new();
    if let Some(a) = &req.audiences {
        parts.push(format!("an audience among {}", a.values().join(", ")));
    }
    if let Some(r) = &req.roles {
        let org = match &r.org {
            Some(crate::policy::rules::OrgSource::Fixed(id)) => format!(" in organisation {}", id),
            Some(crate::policy::rules::OrgSource::Header(h)) => {
                format!(" in the organisation named by the {} header", h)
            }
            None => String::new(),
        };
        parts.push(format!("roles {}{}", list(&r.roles), org));
    }
    if let Some(p) = &req.permissions {
        parts.push(format!("permissions {}", list(p)));
    }
    if let Some(s) = &req.scopes {
        parts.push(format!("scopes {}", list(s)));
    }
    for c in &req.claims {
        parts.push(match &c.test {
            crate::policy::rules::ClaimTest::Equals(v) => {
                format!("claim {} equal to {}", c.path, v)
            }
            crate::policy::rules::ClaimTest::Contains(v) => {
                format!("claim {} containing {}", c.path, v)
            }
        });
    }
    if parts.is_empty() {
        "needs a valid token".into()
    } else {
        format!("needs a valid token with {}", parts.join("; "))
    }
}

pub(crate) fn describe_shortfall(req: &Requirements, shortfall: &Shortfall) -> String {
    let list = |mode: crate::policy::rules::SetMode, names: &[String]| {
        let how = match mode {
            crate::policy::rules::SetMode::AnyOf => "any of",
            crate::policy::rules::SetMode::AllOf => "all of",
        };
        format!("{} {}", how, names.join(", "))
    };
    match shortfall {
        Shortfall::Roles => match &req.roles {
            Some(r) => {
                let org = match &r.org {
                    Some(crate::policy::rules::OrgSource::Fixed(id)) => {
                        format!(" in organisation {}", id)
                    }
                    Some(crate::policy::rules::OrgSource::Header(h)) => {
                        format!(" in the organisation named by {}", h)
                    }
                    None => String::new(),
                };
                format!(
                    "the token lacks the roles this route requires ({}{})",
                    list(r.roles.mode, &r.roles.names),
                    org
                )
            }
            None => "the token lacks the required roles".into(),
        },
        Shortfall::RolesNoOrg(header) => {
            format!("this route checks roles in the organisation named by the {} header, and the request has none", header)
        }
        Shortfall::Permissions => match &req.permissions {
            Some(p) => format!(
                "the token lacks the permissions this route requires ({})",
                list(p.mode, &p.names)
            ),
            None => "the token lacks the required permissions".into(),
        },
        Shortfall::Scopes => match &req.scopes {
            Some(s) => format!(
                "the token lacks the scopes this route requires ({})",
                list(s.mode, &s.names)
            ),
            None => "the token lacks the required scopes".into(),
        },
        Shortfall::Claim(path) => format!("the token's {} claim does not satisfy this route", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kid_is_said_escaped_and_cut_and_its_absence_in_words() {
        assert_eq!(describe_kid(None), "no kid");
        assert_eq!(describe_kid(Some("k1")), "kid \"k1\"");
        assert_eq!(describe_kid(Some("a\nb")), "kid \"a\\nb\"");
        let long = "x".repeat(100);
        assert_eq!(
            describe_kid(Some(&long)),
            format!("kid \"{}\"...", "x".repeat(64))
        );
    }
}
