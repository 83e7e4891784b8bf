//! A JWT's header or payload as JSON, read without checking anything: to name a subject, pick
//! a key or read claims whose source is already trusted. Signatures are checked where tokens
//! are trusted for them (`machine`); the OIDC sign-in trusts its ID token for coming from the
//! issuer over TLS (`web::oidc`).

use base64::Engine as _;
use serde_json::Value;

/// Part `index` of `token` (0: the header, 1: the payload), decoded.
pub(crate) fn part(token: &str, index: usize) -> Result<Value, String> {
    let text = token
        .split('.')
        .nth(index)
        .filter(|_| token.split('.').count() == 3)
        .ok_or("it is not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("its part {index} is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("its part {index} is not JSON: {e}"))
}
