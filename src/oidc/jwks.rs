//! The IdP's signing keys (SPEC §3.4): fetched at start-up, refreshed at least every 24 h, and
//! refetched on an unknown `kid` at most once per 30 s, concurrent misses sharing one fetch.
//! A failed fetch keeps the old set.

use super::http::{IdpHttp, IdpHttpError};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::Jwk;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use url::Url;

pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct VerifyingKey {
    pub jwk: Jwk,
    pub key: DecodingKey,
}

#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// Keys that are unusable (unknown `kty`, encryption keys) are skipped, not fatal: an IdP
    /// may publish keys we never need.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
        let keys = raw
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter(|jwk| !matches!(jwk.common.public_key_use, Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)))
            .filter_map(|jwk| DecodingKey::from_jwk(&jwk).ok().map(|key| VerifyingKey { jwk, key }))
            .collect();
        Ok(Self { keys })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.jwk.common.key_id.as_deref() == Some(kid))
    }
}

pub struct Jwks {
    uri: Url,
    current: RwLock<(Arc<KeySet>, Instant)>,
    /// Held while refetching so that concurrent misses wait for one fetch; holds the time of
    /// the last on-demand refetch.
    refetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    pub async fn load(http: &IdpHttp, uri: Url) -> Result<Self, String> {
        let set = fetch(http, &uri).await?;
        Ok(Self { uri, current: RwLock::new((Arc::new(set), Instant::now())), refetch: tokio::sync::Mutex::new(None) })
    }

    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(p) => p.into_inner().0.clone(),
        }
    }

    fn fetched_at(&self) -> Instant {
        match self.current.read() {
            Ok(g) => g.1,
            Err(p) => p.into_inner().1,
        }
    }

    fn replace(&self, set: KeySet) {
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = (Arc::new(set), Instant::now());
    }

    /// The key set to verify a token whose `kid` is `kid`: refetched first when the kid is
    /// unknown (rate-limited) or the set is older than 24 h. Returns an error only when a
    /// needed refetch failed.
    pub async fn for_kid(&self, http: &IdpHttp, kid: Option<&str>) -> Result<Arc<KeySet>, IdpHttpError> {
        let set = self.current();
        let stale = self.fetched_at().elapsed() > MAX_AGE;
        let miss = kid.is_some_and(|k| !set.has_kid(k));
        if !stale && !miss {
            return Ok(set);
        }
        let mut last = self.refetch.lock().await;
        // Someone else may have refetched while we waited.
        let set = self.current();
        let stale = self.fetched_at().elapsed() > MAX_AGE;
        let miss = kid.is_some_and(|k| !set.has_kid(k));
        if !stale && !miss {
            return Ok(set);
        }
        // The 30 s limit holds for the 24 h refresh too: a slow or down JWKS endpoint must not
        // be hit by every login; the old set keeps serving meanwhile.
        if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
            return Ok(set);
        }
        *last = Some(Instant::now());
        match fetch(http, &self.uri).await {
            Ok(new) => {
                tracing::info!(keys = new.keys.len(), "JWKS refetched");
                self.replace(new);
                Ok(self.current())
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refetch failed; keeping the previous key set");
                if miss { Err(IdpHttpError::Unavailable("JWKS refetch failed")) } else { Ok(set) }
            }
        }
    }
}

async fn fetch(http: &IdpHttp, uri: &Url) -> Result<KeySet, String> {
    let resp = http.get("idp jwks", uri).await.map_err(|e| e.to_string())?;
    if !resp.status.is_success() {
        return Err(format!("JWKS answered HTTP {}", resp.status.as_u16()));
    }
    KeySet::parse(&resp.body)
}
