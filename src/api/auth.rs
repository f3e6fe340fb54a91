//! API keys from `Authorization: Bearer <key>`, with a short in-process cache
//! so a busy client costs one lookup per key every few seconds, not per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use sqlx::PgPool;

use super::error::ApiError;
use crate::commands::tenants::{self, Principal};
use crate::domain::hash_api_key;

/// A revoked key keeps working in other processes for at most this long.
const CACHE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Option<Principal>, Instant)>>,
}

impl KeyCache {
    pub async fn authenticate(&self, pool: &PgPool, secret: &str) -> Result<Principal, ApiError> {
        let hash = hash_api_key(secret);
        if let Some((principal, at)) = self.lock().get(&hash).cloned()
            && at.elapsed() < CACHE_TTL
        {
            return principal.ok_or(ApiError::Unauthenticated);
        }
        let principal = tenants::authenticate(pool, secret).await?;
        let mut entries = self.lock();
        if entries.len() >= CACHE_MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, (principal.clone(), Instant::now()));
        principal.ok_or(ApiError::Unauthenticated)
    }

    /// Forgets every key, so a revocation takes effect here at once.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<Principal>, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
