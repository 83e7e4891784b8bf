//! `POST /webhooks/tailscale`: Tailscale's webhook deliveries, verified and turned into an
//! inventory sync within seconds. A delivery is believed only with a valid
//! `Tailscale-Webhook-Signature` (`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`) made
//! within five minutes of now; anything else is 401 and nothing happens. Written here rather
//! than with a crate: no maintained crate verifies Tailscale's scheme, and it is one HMAC.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::AppState;

/// How far a delivery's time may be from ours.
const WINDOW_SECONDS: i64 = 300;

/// Why a delivery was refused (said in the 401 and the log; never the secret).
fn verify(secret: &str, header: Option<&str>, body: &[u8], now: i64) -> Result<(), &'static str> {
    let header = header.ok_or("no Tailscale-Webhook-Signature header")?;
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1.push(value.to_owned()),
            _ => {}
        }
    }
    let t = t.ok_or("the signature has no time (t=)")?;
    if (now - t).abs() > WINDOW_SECONDS {
        return Err("the signature's time is more than five minutes from now");
    }
    for candidate in &v1 {
        let Ok(expected) = hex::decode(candidate) else {
            continue;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return Err("cannot use the webhook secret");
        };
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // Constant time.
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err("the signature does not match")
}

pub async fn tailscale(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = app.service.config().webhook_secret.as_ref() else {
        tracing::warn!("webhook refused: no [tailnet] webhook_secret is configured");
        return (StatusCode::UNAUTHORIZED, "no webhook secret is configured").into_response();
    };
    let header = headers
        .get("Tailscale-Webhook-Signature")
        .and_then(|v| v.to_str().ok());
    let now = app.service.now().unix_timestamp();
    if let Err(why) = verify(secret.expose(), header, &body, now) {
        tracing::warn!(why, "webhook refused");
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    let events: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap_or_default();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    tracing::info!(events = ?types, "webhook: syncing the inventory");
    app.service.want_inventory_sync();
    (StatusCode::OK, "ok").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_are_checked_with_their_time() {
        let body = br#"[{"type":"nodeCreated"}]"#;
        let good = sign("s3cret", 1_000, body);
        assert_eq!(verify("s3cret", Some(&good), body, 1_100), Ok(()));
        assert_eq!(
            verify("s3cret", Some(&good), b"[]", 1_100),
            Err("the signature does not match")
        );
        assert_eq!(
            verify("other", Some(&good), body, 1_100),
            Err("the signature does not match")
        );
        assert!(
            verify("s3cret", Some(&good), body, 1_000 + 301).is_err(),
            "stale"
        );
        assert!(verify("s3cret", None, body, 1_000).is_err());
        assert!(verify("s3cret", Some("v1=00"), body, 1_000).is_err());
    }
}
