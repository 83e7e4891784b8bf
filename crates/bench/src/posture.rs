//! `tidegate-bench posture [COUNT]`: posture grants over tidegate's HTTP API against the
//! emulator with 50 ms of latency on every tailnet call. COUNT users (default 200), each with
//! one device, request and are approved at concurrency 8; then all are revoked at once; then
//! grants are approved one at a time. "Visible" and "gone" are observed from outside: a watcher
//! polls the emulator's state for the attribute on each device.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tailnet::{ApiClient, ApiConfig, Credentials, Secret, SystemClock};
use tidegate_core::config::Config;
use tidegate_core::reconciler::Reconciler;
use tidegate_core::service::Service;
use tidegate_core::store::TokenKind;

use crate::grants::{TOKEN, login};
use crate::{ms, percentile, round};

const ATTRIBUTE: &str = "custom:bench_db";
const CONCURRENCY: usize = 8;
/// Grants approved one at a time for the latency figure.
const ONE_AT_A_TIME: usize = 50;

fn state(users: usize) -> String {
    let mut list = vec![json!({"id": "1", "loginName": "alice@example.com", "role": "owner"})];
    let mut devices =
        vec![json!({"hostname": "db-1", "tags": ["tag:prod"], "user": "alice@example.com"})];
    for i in 0..users {
        list.push(json!({"id": (i + 2).to_string(), "loginName": login(i), "role": "member"}));
        devices.push(json!({"hostname": format!("laptop-{i}"), "user": login(i)}));
    }
    let policy = r#"// Benchmark policy: production databases from a device with the attribute.
{
	"groups": {"group:sre": ["alice@example.com"]},
	"tagOwners": {"tag:prod": ["group:sre"]},
	"postures": {"posture:jit": ["custom:bench_db == 'granted'"]},
	"grants": [
		{"src": ["autogroup:member"], "srcPosture": ["posture:jit"], "dst": ["tag:prod"], "ip": ["tcp:5432"]},
	],
	"tests": [
		{"src": "tag:prod", "deny": ["tag:prod:22"]},
	],
}
"#;
    json!({
        "tailnet": "example.com",
        "users": list,
        "devices": devices,
        "policy": policy,
        "apiTokens": [{"token": TOKEN, "user": "alice@example.com"}],
    })
    .to_string()
}

fn config(database: &str, api_url: &str) -> String {
    format!(
        r#"
[server]
database = "{database}"
[tailnet]
api_url = "{api_url}"
api_token = "{TOKEN}"
[[entitlement]]
name = "db"
strategy = "posture"
attribute = "{ATTRIBUTE}"
value = "granted"
requesters = ["autogroup:member"]
approvers = ["group:sre"]
reason = "optional"
max_duration = "8h"
"#
    )
}

/// Which devices carry the attribute now, read from the emulator's state in this process (no
/// HTTP, no latency: only tidegate's own time is measured).
fn carrying(emu: &emulator::RunningEmulator) -> Vec<String> {
    emu.state()
        .devices
        .iter()
        .filter(|d| d.posture.contains_key(ATTRIBUTE))
        .map(|d| d.device.hostname.clone())
        .collect()
}

/// Waits until `done` holds for the set of carrying devices; how long it took.
async fn until(
    emu: &emulator::RunningEmulator,
    since: Instant,
    done: impl Fn(&[String]) -> bool,
) -> Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if done(&carrying(emu)) {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for the tailnet");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct Api {
    http: reqwest::Client,
    url: String,
    tokens: HashMap<String, String>,
}

impl Api {
    async fn post(&self, login: &str, path: &str, body: Value) -> Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.tokens[login])
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!("{path}: {status} {v}");
        }
        Ok(v)
    }

    /// Creates and approves user `i`'s request; its id.
    async fn request_approved(&self, i: usize) -> Result<String> {
        let r = self
            .post(
                &login(i),
                "/api/requests",
                json!({"entitlement": "db", "duration": "1h", "devices": [format!("laptop-{i}")]}),
            )
            .await?;
        let id = r["id"].as_str().context("no id")?.to_owned();
        self.post(
            "alice@example.com",
            &format!("/api/requests/{id}/approve"),
            json!({}),
        )
        .await?;
        Ok(id)
    }
}

/// Runs `work(i)` for i in 0..count with `CONCURRENCY` at a time.
async fn concurrently<F, Fut, T>(count: usize, work: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T>> + Send,
    T: Send + 'static,
{
    let work = Arc::new(work);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (work, next) = (work.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= count {
                    return Ok::<_, anyhow::Error>(out);
                }
                out.push(work(i).await?);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

pub async fn run(count: usize) -> Result<Value> {
    let emu = emulator::start(
        emulator::State::from_json(&state(count), tailnet::Clock::now(&SystemClock))?,
        emulator::Options {
            latency: Duration::from_millis(50),
            ..emulator::Options::default()
        },
    )
    .await?;
    let dir = std::env::temp_dir().join(format!("tidegate-bench-posture-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let database = format!("sqlite://{}", dir.join("posture.db").display());
    let config = Config::parse(&config(&database, emu.url()), "bench config")?;
    let store = tidegate_store::open(&config.database).await?;
    let tailnet = Arc::new(ApiClient::new(ApiConfig::new(
        emu.url(),
        Credentials::ApiToken(Secret::new(TOKEN)),
    ))?);
    let service = Arc::new(Service::new(
        Arc::new(config),
        store.clone(),
        tailnet,
        Arc::new(SystemClock),
    ));
    let mut tokens = HashMap::new();
    for who in (0..count)
        .map(login)
        .chain(["alice@example.com".to_owned()])
    {
        let secret = tidegate_server::tokens::create(
            store.as_ref(),
            &who,
            TokenKind::Api,
            None,
            "bench",
            tailnet::Clock::now(&SystemClock),
        )
        .await?;
        tokens.insert(who, secret);
    }
    let reconciler = Arc::new(Reconciler::new(service.clone()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let running = {
        let (r, s) = (reconciler.clone(), stop.clone());
        tokio::spawn(async move { r.run(Duration::from_secs(1), s).await })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let http_server = crate::serve(service.clone(), listener, Vec::new());
    let api = Arc::new(Api {
        http: reqwest::Client::new(),
        url,
        tokens,
    });
    // Warm the server's cached reading of the tailnet, as a running server has it.
    service.live().await?;

    // 1. COUNT requests created and approved at concurrency 8.
    let started = Instant::now();
    let ids = {
        let api = api.clone();
        concurrently(count, move |i| {
            let api = api.clone();
            async move { api.request_approved(i).await }
        })
        .await?
    };
    let approving = started.elapsed();
    let last_approval = Instant::now();
    let all_applied = until(&emu, last_approval, |c| c.len() == count).await?;

    // 2. All revoked at once.
    let revoking = Instant::now();
    {
        let api = api.clone();
        let ids = Arc::new(ids);
        concurrently(count, move |i| {
            let (api, ids) = (api.clone(), ids.clone());
            async move {
                api.post(
                    "alice@example.com",
                    &format!("/api/requests/{}/revoke", ids[i]),
                    json!({"reason": "bench"}),
                )
                .await
            }
        })
        .await?;
    }
    let revoke_calls = revoking.elapsed();
    let last_revoke = Instant::now();
    let all_removed = until(&emu, last_revoke, |c| c.is_empty()).await?;
    // Phase 3 starts with the reconciler idle, as each of its approvals does: every removal
    // verified and stored, not only gone from the tailnet.
    let open = tidegate_core::store::RequestFilter {
        open_only: true,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !service.store().requests(&open).await?.is_empty() {
        if Instant::now() > deadline {
            bail!("the revoked grants' removals were never all verified");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // 3. One at a time: approval answered → attribute visible.
    let mut one_by_one = Vec::new();
    for i in 0..ONE_AT_A_TIME.min(count) {
        let id = api.request_approved(i).await?;
        let approved = Instant::now();
        let host = format!("laptop-{i}");
        one_by_one.push(until(&emu, approved, |c| c.contains(&host)).await?);
        api.post(
            "alice@example.com",
            &format!("/api/requests/{id}/revoke"),
            json!({}),
        )
        .await?;
        // The next approval starts with the reconciler idle: its removal verified.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r: Value = api
                .http
                .get(format!("{}/api/requests/{id}", api.url))
                .bearer_auth(&api.tokens["alice@example.com"])
                .send()
                .await?
                .json()
                .await?;
            if r["tailnet"]["removal_verified_at"].is_string() {
                break;
            }
            if Instant::now() > deadline {
                bail!("{id}: removal never verified");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    one_by_one.sort();

    stop.notify_waiters();
    running.abort();
    http_server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "bench": "posture",
        "grants": count,
        "latency_ms": 50,
        "concurrency": CONCURRENCY,
        "request_approve_per_s": round(count as f64 / approving.as_secs_f64(), 1),
        "create_and_approve_wall_ms": ms(approving),
        "all_applied_ms": ms(all_applied),
        "revoke_calls_ms": ms(revoke_calls),
        "all_removed_ms": ms(all_removed),
        "one_at_a_time": one_by_one.len(),
        "p50_approve_to_visible_ms": ms(percentile(&one_by_one, 0.5)),
        "p99_approve_to_visible_ms": ms(percentile(&one_by_one, 0.99)),
        "targets": {
            "all_applied_ms": "< 500",
            "all_removed_ms": "< 500",
            "p99_approve_to_visible_ms": "< 120",
            "request_approve_per_s": "> 600",
        },
    }))
}
