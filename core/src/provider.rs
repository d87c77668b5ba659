//! A provider's identity within one compiled configuration.

/// One provider of one configuration: handed out by [`crate::config::settings::Settings`]
/// as it compiles the providers, and looked up there with
/// [`crate::config::settings::Settings::provider`]. The per-provider state of a VM (key
/// views, introspection caches, callouts) is keyed by it, never by a bare index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId(u32);

impl ProviderId {
    /// The first provider of a configuration (tests name it).
    #[cfg(test)]
    pub(crate) const FIRST: ProviderId = ProviderId(0);

    /// The `n`th provider of a configuration (configurations are far below 2^32 providers).
    pub(crate) fn nth(n: usize) -> ProviderId {
        ProviderId(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Its position among the configuration's providers, for per-provider tables.
    pub(crate) fn index(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}
