//! `tidegate-bench expiry [COUNT] [SPREAD_SECONDS]`: active group grants expiring over a
//! minute, revoked by the running reconciler; the lag from each grant's expiry to its removal
//! from the tailnet (observed by polling the emulator). Midway the reconciler is stopped for
//! ten seconds and a new one started on the same database, as after a crash; grants that
//! expired meanwhile are reported separately, their lag counted from the restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};
use tailnet::{ApiClient, ApiConfig, Clock, Credentials, Secret, SystemClock, Tailnet};
use tidegate_core::config::Config;
use tidegate_core::reconciler::Reconciler;
use tidegate_core::service::{NewRequest, Service};

use crate::grants::{CONFIG, GROUP, TOKEN, login, state};

/// Members of the group as the emulator holds them now.
async fn members(http: &reqwest::Client, url: &str) -> Option<std::collections::HashSet<String>> {
    let state: Value = http
        .get(format!("{url}/emulator/state"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let doc = hujson::Document::parse(state["policy"].as_str()?).ok()?;
    let node = doc.get(&[hujson::Seg::Key("groups"), hujson::Seg::Key(GROUP)])?;
    Some(
        node.as_array()?
            .iter()
            .filter_map(|n| doc.str_value(n))
            .collect(),
    )
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn lags(mut values: Vec<Duration>) -> Value {
    values.sort();
    let pick = |p: f64| {
        values
            .get(((values.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    json!({
        "grants": values.len(),
        "p50_lag_ms": ms(pick(0.5)),
        "p99_lag_ms": ms(pick(0.99)),
        "max_lag_ms": ms(values.last().copied().unwrap_or_default()),
    })
}

async fn open_service(config: &str) -> Result<Arc<Service>> {
    let config = Config::parse(config, "bench")?;
    let store = tidegate_store::open(&config.database).await?;
    let api = ApiConfig::new(
        &config.tailnet.api_url,
        Credentials::ApiToken(Secret::new(TOKEN)),
    );
    let tailnet: Arc<dyn Tailnet> = Arc::new(ApiClient::new(api)?);
    Ok(Arc::new(Service::new(
        Arc::new(config),
        store,
        tailnet,
        Arc::new(SystemClock),
    )))
}

pub async fn run(count: usize, spread: u64) -> Result<Value> {
    let clock = SystemClock;
    let emu = emulator::start(
        emulator::State::from_json(&state(count), clock.now())?,
        emulator::Options::default(),
    )
    .await?;
    let dir = std::env::temp_dir().join(format!("tidegate-expiry-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}", dir.join("expiry.db").display());
    let config = CONFIG
        .replace("DATABASE", &db)
        .replace("API_URL", emu.url())
        .replace("TOKEN", TOKEN)
        .replace(
            "reason = \"optional\"",
            "reason = \"optional\"\nmin_duration = \"1s\"\nmax_duration = \"1d\"",
        );
    let service = open_service(&config).await?;
    // Grants expire evenly over `spread` seconds, starting `lead` seconds after activation.
    let lead = 20u64;
    let setup_started = Instant::now();
    for i in 0..count {
        let seconds = lead + (i as u64 * spread) / count as u64;
        let new = NewRequest {
            entitlement: "prod-ssh".into(),
            duration: Some(format!("{seconds}s").parse()?),
            ..NewRequest::default()
        };
        let r = service.create(&login(i), new).await?;
        service.approve(&r.id, "alice@example.com", "").await?;
    }
    let report = Reconciler::new(service.clone()).pass().await;
    if report.applied != count {
        bail!(
            "applied {} of {count}: {:?}",
            report.applied,
            report.errors.first()
        );
    }
    let setup = setup_started.elapsed();
    let expiries: HashMap<String, time::OffsetDateTime> = service
        .list(&tidegate_core::store::RequestFilter::default())
        .await?
        .into_iter()
        .filter_map(|r| Some((r.requester.clone(), r.expires_at?)))
        .collect();

    // Run the reconciler; stop it for ten seconds midway; start a new one on the same database.
    let stop = Arc::new(tokio::sync::Notify::new());
    let first = Reconciler::new(service.clone());
    let first_stop = stop.clone();
    let running = tokio::spawn(async move { first.run(Duration::from_secs(1), first_stop).await });
    let http = reqwest::Client::new();
    let mut removed: HashMap<String, time::OffsetDateTime> = HashMap::new();
    let crash_at = Instant::now() + Duration::from_secs(lead + spread / 2);
    let mut restarted_at: Option<time::OffsetDateTime> = None;
    let mut second: Option<tokio::task::JoinHandle<()>> = None;
    let deadline = Instant::now() + Duration::from_secs(lead + spread + 30);
    let mut down_since: Option<time::OffsetDateTime> = None;
    while removed.len() < count && Instant::now() < deadline {
        if down_since.is_none() && restarted_at.is_none() && Instant::now() >= crash_at {
            stop.notify_waiters();
            running.abort();
            down_since = Some(clock.now());
        }
        if let Some(since) = down_since
            && restarted_at.is_none()
            && clock.now() - since >= time::Duration::seconds(10)
        {
            let service = open_service(&config).await?;
            let reconciler = Reconciler::new(service);
            let stop2 = stop.clone();
            restarted_at = Some(clock.now());
            second = Some(tokio::spawn(async move {
                reconciler.run(Duration::from_secs(1), stop2).await
            }));
        }
        if let Some(now_members) = members(&http, emu.url()).await {
            let now = clock.now();
            for (login, _) in expiries.iter() {
                if !now_members.contains(login) {
                    removed.entry(login.clone()).or_insert(now);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.notify_waiters();
    if let Some(task) = second {
        task.abort();
    }
    if removed.len() < count {
        bail!(
            "only {} of {count} grants were removed in time",
            removed.len()
        );
    }
    let (mut normal, mut after_restart) = (Vec::new(), Vec::new());
    for (login, expiry) in &expiries {
        let gone = removed[login];
        match (down_since, restarted_at) {
            (Some(down), Some(up)) if *expiry >= down && *expiry < up => {
                after_restart.push(std::time::Duration::try_from(gone - up).unwrap_or_default())
            }
            _ => normal.push(std::time::Duration::try_from(gone - *expiry).unwrap_or_default()),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = lags(normal);
    out["setup_ms"] = json!(ms(setup));
    out["spread_s"] = json!(spread);
    out["after_restart"] = lags(after_restart);
    Ok(out)
}
