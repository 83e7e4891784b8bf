//! API tokens: random secrets shown once, stored as SHA-256 hashes.

use axum::http::{HeaderMap, StatusCode};
use rand::Rng;
use sha2::{Digest, Sha256};
use tidegate_core::service::Service;
use tidegate_core::store::{ApiToken, Store, StoreError, TokenKind};

use crate::ApiError;

/// Prefix of tidegate's API tokens, so they are recognisable (and scannable) in leaks.
pub const PREFIX: &str = "tg_";

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a token for `user`, valid for `ttl` if given; returns the secret (never stored).
pub async fn create(
    store: &dyn Store,
    user: &str,
    kind: TokenKind,
    ttl: Option<time::Duration>,
    description: &str,
    now: time::OffsetDateTime,
) -> Result<String, StoreError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    // The thread's RNG is not Send: done with it before the await below.
    let body: String = {
        let mut rng = rand::thread_rng();
        (0..40)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let secret = format!("{PREFIX}{body}");
    store
        .insert_token(&ApiToken {
            hash: hash(&secret),
            user: user.to_owned(),
            description: description.to_owned(),
            created_at: tidegate_core::time_text(now),
            expires_at: ttl.map(|t| tidegate_core::time_text(now + t)),
            kind,
            last_used_at: None,
        })
        .await?;
    Ok(secret)
}

/// The login behind `Authorization: Bearer <token>`.
pub async fn authenticate(headers: &HeaderMap, service: &Service) -> Result<String, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unauthorized(
                "missing Authorization: Bearer <token> (create one with `tidegate token create`)",
            )
        })?;
    let token = value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
    let stored = service
        .store()
        .token(&hash(token))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| unauthorized("unknown token"))?;
    // A web session's secret is the browser's, not an API token.
    if stored.kind != TokenKind::Api {
        return Err(unauthorized("unknown token"));
    }
    if let Some(text) = stored.expires_at.as_deref() {
        // An expiry that does not read counts as passed.
        let expired = tailnet::clock::parse_rfc3339(text).is_none_or(|e| e <= service.now());
        if expired {
            return Err(unauthorized("this token has expired; create a new one"));
        }
    }
    // Last use, to the minute: at most one write per token a minute.
    let now = service.now();
    let _ = service
        .store()
        .touch_token(
            &stored.hash,
            &tidegate_core::time_text(now),
            &tidegate_core::time_text(now - time::Duration::minutes(1)),
        )
        .await;
    Ok(stored.user)
}

/// A token as its owner sees it: never its secret or hash.
pub fn public(token: &ApiToken) -> serde_json::Value {
    serde_json::json!({
        "id": token.id(),
        "kind": token.kind.as_str(),
        "description": token.description,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
        "expires_at": token.expires_at,
    })
}
