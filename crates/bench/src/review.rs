//! `tidegate-bench review [USERS]`: an access review over 50,000 items. A generated tailnet
//! (50,000 users in 200 teams, a 2,000-rule policy) whose every team reaches a critical system;
//! a campaign with scope `critical:` started through the API (a fresh sync and the frozen
//! population), 50,000 decisions recorded through the API in batches, and the export.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tailnet::{ApiClient, ApiConfig, Clock, Credentials, Secret, SystemClock};
use tidegate_core::config::Config;
use tidegate_core::service::Service;

use crate::sync::{TOKEN, spawn_emulator};

/// Decisions per API call.
const BATCH: usize = 500;

pub async fn run(users: usize) -> Result<Value> {
    let (_child, emu) = spawn_emulator(users, 5_000, 2_000)?;
    let dir = std::env::temp_dir().join(format!("tidegate-bench-review-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Every service tag: every team reaches the critical system through its grants.
    let tags: Vec<String> = (0..100).map(|t| format!("\"tag:svc{t}\"")).collect();
    let config = Config::parse(
        &format!(
            r#"
[server]
database = "sqlite://{}"
[tailnet]
api_url = "{emu}"
api_token = "{TOKEN}"
[inventory]
sync_interval = "1d"
[roles]
admins = ["user0@example.com", "user1@example.com"]
[[critical]]
name = "everything"
tags = [{}]
"#,
            dir.join("review.db").display(),
            tags.join(", ")
        ),
        "bench config",
    )?;
    let store = tidegate_store::open(&config.database).await?;
    let tailnet = Arc::new(ApiClient::new(ApiConfig::new(
        &emu,
        Credentials::ApiToken(Secret::new(TOKEN)),
    ))?);
    let service = Arc::new(Service::new(
        Arc::new(config),
        store.clone(),
        tailnet,
        Arc::new(SystemClock),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    crate::serve(service.clone(), listener, Vec::new());
    let token = |login: &'static str| {
        let store = store.clone();
        async move {
            tidegate_server::tokens::create(
                store.as_ref(),
                login,
                tidegate_core::store::TokenKind::Api,
                None,
                "bench",
                SystemClock.now(),
            )
            .await
        }
    };
    let (admin, second) = (
        token("user0@example.com").await?,
        token("user1@example.com").await?,
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let rss_before = crate::peak_rss_mb()?;

    let started = Instant::now();
    let campaign: Value = http
        .post(format!("{url}/api/reviews"))
        .bearer_auth(&admin)
        .json(&json!({"name": "bench", "scopes": ["critical:everything"], "due": "14d"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let create_ms = crate::round(started.elapsed().as_secs_f64() * 1e3, 1);
    let rss_after_create = crate::peak_rss_mb()?;
    let id = campaign["id"]
        .as_str()
        .context("no campaign id")?
        .to_owned();
    let items: Vec<(String, String)> = campaign["items"]
        .as_array()
        .context("no items")?
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap_or_default().to_owned(),
                i["subject"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let item_count = items.len();
    drop(campaign);

    // Every item kept, in batches: the admin's own items by the second admin.
    let (own, others): (Vec<_>, Vec<_>) = items
        .into_iter()
        .partition(|(_, subject)| subject == "user0@example.com");
    let started = Instant::now();
    let mut batch_times = Vec::new();
    for (token, list) in [(&admin, &others), (&second, &own)] {
        for chunk in list.chunks(BATCH) {
            let t = Instant::now();
            let ids: Vec<&str> = chunk.iter().map(|(i, _)| i.as_str()).collect();
            http.post(format!("{url}/api/reviews/{id}/decisions"))
                .bearer_auth(token)
                .json(&json!({"items": ids, "decision": "keep", "reason": "still on the team"}))
                .send()
                .await?
                .error_for_status()?;
            batch_times.push(t.elapsed());
        }
    }
    let decide_ms = crate::round(started.elapsed().as_secs_f64() * 1e3, 1);
    batch_times.sort();
    let get = |path: String| {
        let (http, url, admin) = (http.clone(), url.clone(), admin.clone());
        async move {
            let started = Instant::now();
            let value: Value = http
                .get(format!("{url}{path}"))
                .bearer_auth(&admin)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Ok::<_, anyhow::Error>((
                value,
                crate::round(started.elapsed().as_secs_f64() * 1e3, 1),
            ))
        }
    };
    let (listed, list_ms) = get("/api/reviews".into()).await?;
    anyhow::ensure!(listed["campaigns"].as_array().is_some_and(|c| c.len() == 1));
    let (shown, show_ms) = get(format!("/api/reviews/{id}")).await?;

    let (export, export_ms) = get(format!("/api/reviews/{id}/export?format=all")).await?;
    let sizes: serde_json::Map<String, Value> = export["files"]
        .as_object()
        .context("no files")?
        .iter()
        .map(|(name, text)| (name.clone(), json!(text.as_str().map_or(0, str::len))))
        .collect();
    let export_bytes: u64 = sizes.values().filter_map(Value::as_u64).sum();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "bench": "review",
        "users": users,
        "items": item_count,
        "create_ms": create_ms,
        "rss_before_create_mb": crate::round(rss_before, 1),
        "peak_rss_after_create_mb": crate::round(rss_after_create, 1),
        "decisions": item_count,
        "decide_ms": decide_ms,
        "decisions_per_second": crate::round(item_count as f64 / (decide_ms / 1e3), 0),
        "batch": BATCH,
        "batch_p50_ms": crate::ms(crate::percentile(&batch_times, 0.5)),
        "batch_p99_ms": crate::ms(crate::percentile(&batch_times, 0.99)),
        "state_after": shown["state"],
        "list_ms": list_ms,
        "show_ms": show_ms,
        "export_ms": export_ms,
        "export_bytes": export_bytes,
        "export_files": sizes,
        "peak_rss_mb": crate::round(crate::peak_rss_mb()?, 1),
    }))
}
