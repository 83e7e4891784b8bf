//! `tidegate-bench slack [CLICKS]`: a Slack Approve click to the grant applied in the tailnet.
//! The emulator answers with 50 ms of injected latency; a Slack Web API stand-in accepts what
//! tidegate posts; each round a member's request is approved by a signed `block_actions`
//! payload to `/slack/interactions`, and the time until the login is in the policy group (as
//! the emulator's state shows it) is recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tailnet::{Clock, SystemClock};
use tidegate_core::access::Via;
use tidegate_core::config::Config;
use tidegate_core::reconciler::Reconciler;
use tidegate_core::service::{NewRequest, Service};

use crate::grants::{GROUP, login};
use crate::{ms, percentile};

const SECRET: &str = "bench-signing-secret";

/// Slack's Web API, answering every call with `ok` (users by their e-mail's local part).
async fn slack_stand_in() -> Result<String> {
    let app = axum::Router::new().route(
        "/api/{method}",
        axum::routing::any(|axum::extract::Path(method): axum::extract::Path<String>| async move {
            axum::Json(match method.as_str() {
                "users.lookupByEmail" => json!({"ok": true, "user": {"id": "U1"}}),
                "users.info" => json!({"ok": true, "user": {"id": "U1", "profile": {"email": "alice@example.com"}}}),
                "conversations.open" => json!({"ok": true, "channel": {"id": "D1"}}),
                "chat.postMessage" => json!({"ok": true, "channel": "D1", "ts": "1.1"}),
                _ => json!({"ok": true}),
            })
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

fn sign(ts: i64, body: &str) -> Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    Ok(format!("v0={}", hex::encode(mac.finalize().into_bytes())))
}

pub async fn run(clicks: usize) -> Result<Value> {
    let emu = crate::grants::emulator(clicks, Duration::from_millis(50)).await?;
    let slack = slack_stand_in().await?;
    let dir = std::env::temp_dir().join(format!("tidegate-bench-slack-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}", dir.join("slack.db").display());
    let text = format!(
        "{}\n[slack]\nbot_token = \"xoxb-bench\"\nsigning_secret = \"{SECRET}\"\napi_url = \"{slack}\"\nverify_identity = false\n",
        crate::grants::config(&db, emu.url(), false)
    );
    let config = Config::parse(&text, "bench config")?;
    let store = tidegate_store::open(&config.database).await?;
    let outbound = tidegate_server::outbound::Outbound::new(&config, Arc::new(SystemClock))
        .map_err(anyhow::Error::msg)?;
    let service = Arc::new(Service::new(
        Arc::new(config),
        store,
        crate::grants::client(emu.url())?,
        Arc::new(SystemClock),
    ));
    let sender = Arc::new(outbound.with_slack(service.clone()));
    let reconciler = Arc::new(Reconciler::new(service.clone()).notifying(sender));
    let stop = Arc::new(tokio::sync::Notify::new());
    let leader = {
        let (r, s) = (reconciler.clone(), stop.clone());
        tokio::spawn(async move { r.run(Duration::from_secs(1), s).await })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    crate::serve(service.clone(), listener, Vec::new());
    let http = reqwest::Client::new();
    let state_url = format!("{}/emulator/state", emu.url());
    let mut lags = Vec::new();
    for i in 0..clicks {
        let who = login(i);
        let actor = service.actor(&who, Via::ApiToken).await?;
        let r = service
            .create(
                &actor,
                NewRequest {
                    entitlement: "prod-ssh".into(),
                    reason: format!("bench {i}"),
                    ..NewRequest::default()
                },
            )
            .await?;
        let payload = json!({
            "type": "block_actions",
            "action_ts": format!("{i}"),
            "user": {"id": "U1"},
            "channel": {"id": "D1"},
            "actions": [{"action_id": "tidegate_approve", "value": r.id}],
        });
        let body = format!(
            "payload={}",
            payload
                .to_string()
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' =>
                        (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        );
        let ts = SystemClock.now().unix_timestamp();
        let started = Instant::now();
        let answer = http
            .post(format!("{url}/slack/interactions"))
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sign(ts, &body)?)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "click refused: {}",
            answer.status()
        );
        let acknowledged = started.elapsed();
        let deadline = started + Duration::from_secs(20);
        loop {
            let state: Value = http.get(&state_url).send().await?.json().await?;
            let policy = state["policy"].as_str().context("no policy")?;
            let doc = hujson::Document::parse(policy)?;
            let members = doc
                .strings(&[hujson::Seg::Key("groups"), hujson::Seg::Key(GROUP)])
                .unwrap_or_default();
            if members.contains(&who) {
                lags.push((started.elapsed(), acknowledged));
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "click {i} not applied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop.notify_waiters();
    leader.abort();
    let mut applied: Vec<Duration> = lags.iter().map(|(a, _)| *a).collect();
    let mut acks: Vec<Duration> = lags.iter().map(|(_, a)| *a).collect();
    applied.sort();
    acks.sort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "bench": "slack",
        "clicks": clicks,
        "tailnet_latency_ms": 50,
        "click_to_applied_p50_ms": ms(percentile(&applied, 0.5)).round(),
        "click_to_applied_p99_ms": ms(percentile(&applied, 0.99)).round(),
        "click_acknowledged_p50_ms": ms(percentile(&acks, 0.5)),
        "click_acknowledged_p99_ms": ms(percentile(&acks, 0.99)),
    }))
}
