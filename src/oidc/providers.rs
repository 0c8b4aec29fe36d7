//! The configured OpenID Providers (SPEC §3.7): `[oidc]` as "default", then `[[providers]]`.
//! Whatever a login, a session or a logout token belongs to is looked up here by name (or, for a
//! logout token, by its exact `iss`), and only that provider's client, keys and client id are
//! used for it: nothing of one provider is ever tried against another.

use super::Oidc;
use super::http::BuildError;
use crate::settings::{DEFAULT_PROVIDER, OidcSettings};
use std::sync::Arc;

pub struct Providers {
    /// `all[0]` is "default"; names are unique (settings validation).
    all: Vec<Arc<Oidc>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.all.iter()).finish()
    }
}

impl Providers {
    pub fn new(default: OidcSettings, others: Vec<OidcSettings>) -> Result<Self, BuildError> {
        let mut all = Vec::with_capacity(1 + others.len());
        all.push(Arc::new(Oidc::new(default)?));
        for s in others {
            all.push(Arc::new(Oidc::new(s)?));
        }
        Ok(Self { all })
    }

    /// One provider, "default" (tests and single-IdP tools).
    pub fn single(oidc: Arc<Oidc>) -> Self {
        Self { all: vec![oidc] }
    }

    pub fn default_provider(&self) -> &Arc<Oidc> {
        &self.all[0]
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Oidc>> {
        self.all.iter().find(|p| p.name() == name)
    }

    /// The provider a session or transaction names (`None`: "default").
    pub fn of(&self, name: Option<&str>) -> Option<&Arc<Oidc>> {
        self.get(name.unwrap_or(DEFAULT_PROVIDER))
    }

    /// The provider whose configured issuer is exactly `iss`.
    pub fn by_issuer(&self, iss: &str) -> Option<&Arc<Oidc>> {
        self.all.iter().find(|p| p.settings().issuer == iss)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Oidc>> {
        self.all.iter()
    }

    /// More than one provider: callbacks must be told apart (SPEC §3.7).
    pub fn several(&self) -> bool {
        self.all.len() > 1
    }
}
