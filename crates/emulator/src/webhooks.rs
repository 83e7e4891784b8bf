//! Webhook delivery: events batched per endpoint into JSON arrays, signed with
//! `Tailscale-Webhook-Signature: t=<unix>,v1=<hex hmac-sha256(secret, "<t>.<body>")>`, and
//! retried with backoff until the endpoint answers 2xx.

use std::collections::BTreeMap;
use std::sync::Weak;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tailnet::clock::rfc3339;
use tailnet::{Clock, WebhookEvent};
use tokio::sync::{mpsc, watch};

use crate::server::App;

/// One event for one endpoint.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub endpoint_id: String,
    pub event: WebhookEvent,
}

/// One delivery attempt, as `GET /emulator/webhook-deliveries` lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub endpoint_id: String,
    pub endpoint_url: String,
    /// 1 for the first try.
    pub attempt: usize,
    pub time: String,
    pub event_types: Vec<String>,
    pub body: String,
    pub signature: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub delivered: bool,
}

/// `t=<unix>,v1=<hex>` for `body` signed with `secret` at `t`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) async fn dispatcher(
    app: Weak<App>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            o = rx.recv() => o,
            _ = shutdown.changed() => return,
        };
        let Some(first) = first else { return };
        let window = match app.upgrade() {
            Some(app) => app.options.webhook_batch_window,
            None => return,
        };
        tokio::time::sleep(window).await;
        let mut batches: BTreeMap<String, Vec<tailnet::WebhookEvent>> = BTreeMap::new();
        batches
            .entry(first.endpoint_id)
            .or_default()
            .push(first.event);
        while let Ok(more) = rx.try_recv() {
            batches
                .entry(more.endpoint_id)
                .or_default()
                .push(more.event);
        }
        for (endpoint_id, events) in batches {
            let app = app.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(deliver(app, endpoint_id, events, shutdown));
        }
    }
}

async fn deliver(
    app: Weak<App>,
    endpoint_id: String,
    events: Vec<WebhookEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(body) = serde_json::to_vec(&events) else {
        return;
    };
    let event_types: Vec<String> = events.iter().map(|e| e.kind.clone()).collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(strong) = app.upgrade() else { return };
        // The endpoint's current URL and secret: a rotation between attempts signs retries
        // with the new secret, a deletion stops them.
        let endpoint = strong
            .lock()
            .webhooks
            .iter()
            .find(|w| w.endpoint_id == endpoint_id)
            .map(|w| (w.endpoint_url.clone(), w.secret.clone().unwrap_or_default()));
        let Some((url, secret)) = endpoint else {
            return;
        };
        let now = strong.clock.now();
        let sig = signature(&secret, now.unix_timestamp(), &body);
        let http = strong.http.clone();
        let retries = strong.options.webhook_retries.clone();
        drop(strong);
        let result = http
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Tailscale-Webhook-Signature", &sig)
            .header("User-Agent", "Tailscale-Webhook/emulator")
            .body(body.clone())
            .send()
            .await;
        let (status, error) = match &result {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        let Some(strong) = app.upgrade() else { return };
        strong.deliveries().push(Delivery {
            endpoint_id: endpoint_id.clone(),
            endpoint_url: url,
            attempt,
            time: rfc3339(now),
            event_types: event_types.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            signature: sig,
            status,
            error,
            delivered,
        });
        drop(strong);
        if delivered {
            return;
        }
        let Some(pause) = retries.get(attempt - 1) else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(*pause) => {}
            _ = shutdown.changed() => return,
        }
    }
}
