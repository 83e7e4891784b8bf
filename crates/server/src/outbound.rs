//! Outbound deliveries. Webhooks: each delivery POSTed as JSON to its `[[webhook]]` endpoint, signed
//! `Tidegate-Signature: t=UNIX,v1=HEX(HMAC-SHA256(secret, "UNIX.BODY"))` so the receiver can
//! check it came from tidegate and is fresh; `GET /api/webhooks` is each endpoint's delivery
//! log. E-mail goes through [`crate::mail`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tailnet::{Clock, Secret};
use tidegate_core::config::Config;
use tidegate_core::service::ServiceError;

use crate::{ApiResult, AppState, Caller, auditor};

/// How long one delivery may take before it counts as failed (and is retried).
const TIMEOUT: Duration = Duration::from_secs(10);

/// `t=UNIX,v1=HEX`: the signature of `body` sent at `unix`.
pub fn signature(secret: &str, unix: i64, body: &str) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(format!("{unix}.{body}").as_bytes());
    format!("t={unix},v1={}", hex::encode(mac.finalize().into_bytes()))
}

struct Endpoint {
    url: String,
    secret: Secret,
}

/// Sends deliveries: the `webhook:<name>` channels over HTTP, `email` over SMTP.
pub struct Outbound {
    http: reqwest::Client,
    endpoints: BTreeMap<String, Endpoint>,
    mailer: Option<crate::mail::Mailer>,
    slack: Option<crate::slack::SlackSender>,
    clock: Arc<dyn Clock>,
}

impl Outbound {
    /// The senders the config asks for; an `[email]` whose TLS cannot be set up is an error.
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> Result<Outbound, String> {
        let mailer = config
            .email
            .as_ref()
            .map(crate::mail::Mailer::new)
            .transpose()?;
        Ok(Outbound {
            mailer,
            slack: None,
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .user_agent(concat!("tidegate/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            endpoints: config
                .webhooks
                .iter()
                .map(|w| {
                    (
                        format!("webhook:{}", w.name),
                        Endpoint {
                            url: w.url.clone(),
                            secret: w.secret.clone(),
                        },
                    )
                })
                .collect(),
            clock,
        })
    }
}

impl Outbound {
    /// Also sends the `slack` channel (when `[slack]` is configured): it reads requests and
    /// the directory through the service.
    pub fn with_slack(mut self, service: Arc<tidegate_core::service::Service>) -> Outbound {
        self.slack = crate::slack::SlackSender::new(service);
        self
    }
}

#[async_trait::async_trait]
impl tidegate_core::notify::Sender for Outbound {
    async fn send(&self, channel: &str, payload: &str) -> Result<(), String> {
        if channel == "slack" {
            let slack = self
                .slack
                .as_ref()
                .ok_or("[slack] is no longer configured")?;
            return slack.send(payload).await;
        }
        if channel == "email" {
            let mailer = self
                .mailer
                .as_ref()
                .ok_or("[email] is no longer configured")?;
            let mail: tidegate_core::notify::Mail = serde_json::from_str(payload)
                .map_err(|e| format!("a stored mail does not read: {e}"))?;
            return mailer.send(&mail).await;
        }
        let endpoint = self
            .endpoints
            .get(channel)
            .ok_or_else(|| format!("{channel} is no longer configured"))?;
        let unix = self.clock.now().unix_timestamp();
        let response = self
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header(
                "tidegate-signature",
                signature(endpoint.secret.expose(), unix, payload),
            )
            .body(payload.to_owned())
            .send()
            .await
            // Without the URL: an endpoint's URL may carry a token of its own.
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

/// One endpoint and its delivery log.
#[derive(serde::Serialize)]
pub(crate) struct EndpointLog {
    pub name: String,
    /// Without its query (which may carry a token of the receiver's).
    pub url: String,
    pub events: Vec<String>,
    pub pending: u64,
    /// The last deliveries, newest first.
    pub deliveries: Vec<tidegate_core::store::Delivery>,
}

/// The configured endpoints with their pending counts and last deliveries (admins and
/// auditors).
pub(crate) async fn list(
    State(app): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<Json<Value>> {
    auditor(&who)?;
    Ok(Json(json!({ "webhooks": endpoints(&app, 50).await? })))
}

/// Each endpoint (and e-mail, when configured) with its last `limit` deliveries.
pub(crate) async fn endpoints(
    app: &AppState,
    limit: usize,
) -> Result<Vec<EndpointLog>, ServiceError> {
    let pending = app.service.store().pending_deliveries().await?;
    let mut out = Vec::new();
    for w in &app.service.config().webhooks {
        let channel = format!("webhook:{}", w.name);
        out.push(EndpointLog {
            name: w.name.clone(),
            url: w.url.split('?').next().unwrap_or_default().to_owned(),
            events: w.events.clone(),
            pending: pending.get(&channel).copied().unwrap_or(0),
            deliveries: app.service.store().deliveries(&channel, limit).await?,
        });
    }
    if let Some(email) = &app.service.config().email {
        out.push(EndpointLog {
            name: "email".into(),
            url: format!(
                "{}://{}:{}",
                if email.implicit_tls { "smtps" } else { "smtp" },
                email.host,
                email.port
            ),
            events: [
                "request.created",
                "request.approved",
                "request.denied",
                "grant.expiring",
            ]
            .map(String::from)
            .to_vec(),
            pending: pending.get("email").copied().unwrap_or(0),
            deliveries: app.service.store().deliveries("email", limit).await?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_of_time_dot_body() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed with Python's hmac module.
        assert_eq!(
            signature("secret", 1_700_000_000, "{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
