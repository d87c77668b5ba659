//! The audiences a provider or a rule accepts.

/// Accepted audiences, compared exactly (RFC 7519 7.3: a plain string comparison). Envoy's
/// jwt_authn ignores a scheme and a trailing `/`; tokengate does not (README, "Differences").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudienceSet(Vec<String>);

impl AudienceSet {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(values: I) -> AudienceSet {
        AudienceSet(values.into_iter().map(|v| v.as_ref().to_owned()).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn values(&self) -> &[String] {
        &self.0
    }

    /// Any token audience equals any accepted one. An empty set accepts everything; a
    /// token without `aud` then fails.
    pub fn accepts(&self, token_aud: &[String]) -> bool {
        self.0.is_empty() || token_aud.iter().any(|a| self.0.iter().any(|ok| ok == a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_compared_exactly() {
        let set = AudienceSet::new(["https://api.example.com/", "project-1"]);
        assert!(set.accepts(&["https://api.example.com/".into()]));
        assert!(!set.accepts(&["api.example.com".into()]));
        assert!(!set.accepts(&["https://api.example.com".into()]));
        assert!(!set.accepts(&["http://api.example.com/".into()]));
        assert!(!set.accepts(&["Project-1".into()]));
        assert!(set.accepts(&["x".into(), "project-1".into()]));
        assert!(!set.accepts(&[]));
    }

    #[test]
    fn empty_audience_set_accepts_any_token() {
        assert!(AudienceSet::default().accepts(&[]));
    }
}
