//! API keys from `Authorization: Bearer <key>`, with a short in-process cache
//! so a busy client costs one lookup per key every few seconds, not per request.

use std::time::Duration;

use axum::http::HeaderMap;
use sqlx::PgPool;

use super::error::ApiError;
use crate::commands::Actor;
use crate::commands::tenants::{self, Principal};
use crate::domain::hash_api_key;
use crate::ttl_cache::TtlCache;

/// A revoked key keeps working in other processes for at most this long.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// Principals by key hash (`None`: no such live key).
pub struct KeyCache {
    entries: TtlCache<String, Option<Principal>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            entries: TtlCache::new(CACHE_TTL),
        }
    }
}

impl KeyCache {
    pub async fn authenticate(&self, pool: &PgPool, secret: &str) -> Result<Principal, ApiError> {
        match self.entries.get(&hash_api_key(secret)) {
            Some(principal) => principal.ok_or(ApiError::Unauthenticated),
            None => self.refresh(pool, secret).await,
        }
    }

    /// Looks the key up in the database even when it is cached, and caches
    /// the answer: for a socket, which holds on to its key for hours.
    pub async fn refresh(&self, pool: &PgPool, secret: &str) -> Result<Principal, ApiError> {
        let principal = tenants::authenticate(pool, secret).await?;
        self.entries.insert(hash_api_key(secret), principal.clone());
        principal.ok_or(ApiError::Unauthenticated)
    }

    /// Forgets every key, so a revocation takes effect here at once.
    pub fn clear(&self) {
        self.entries.clear();
    }
}

/// The bearer token, if the header carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Who a key's commands are recorded as.
pub fn actor(principal: &Principal) -> Actor {
    Actor::new(format!("api-key:{}", principal.key_id))
}
