//! `tidegate-bench expiry [COUNT] [SPREAD_SECONDS]`: COUNT active group grants (default
//! 100,000) expiring evenly over SPREAD_SECONDS (default 60), revoked by the running
//! reconciler. Revocation lag is each grant's expiry to the moment its member is gone from the
//! tailnet's policy, observed from outside by polling the emulator's API. Midway the
//! reconciler is stopped (as in a crash) for ten seconds and a new one started on the same
//! database; grants still in the tailnet at the restart that were due before it (expired
//! during the outage, or just before it and not yet removed) are reported separately, their
//! lag counted from the restart.
//!
//! Set-up writes the active grants straight to the store in one batch (each built through the
//! real lifecycle: created, approved, activated) and starts the emulator with those members in
//! the group, so the measurement is only about revocation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};
use tailnet::{ApiClient, ApiConfig, Clock, Credentials, Secret, SystemClock, Tailnet};
use tidegate_core::config::Config;
use tidegate_core::entitlement::Directory;
use tidegate_core::reconciler::Reconciler;
use tidegate_core::request::{Ask, Request};
use tidegate_core::service::{Service, audit_entries};

use crate::grants::{GROUP, TOKEN, login};
use crate::{ms, percentile};

/// The policy the tailnet holds now, and how many members the benchmark's group has in it.
/// The state below writes one member per line, so lines are counted rather than the 3 MB file
/// parsed on every poll: the watcher must not starve what it measures.
async fn policy_members(api: &dyn Tailnet) -> Option<(String, usize)> {
    let policy = api.policy().await.ok()?;
    let count = member_lines(&policy.text).count();
    Some((policy.text, count))
}

/// The logins on the member lines of the benchmark's group.
fn member_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|line| {
        line.strip_prefix(MEMBER_INDENT)?
            .strip_suffix("\",")?
            .strip_prefix('"')
    })
}

const MEMBER_INDENT: &str = "\t\t\t";

fn lags(mut values: Vec<Duration>) -> Value {
    values.sort();
    json!({
        "grants": values.len(),
        "p50_lag_ms": ms(percentile(&values, 0.5)),
        "p99_lag_ms": ms(percentile(&values, 0.99)),
        "max_lag_ms": ms(values.last().copied().unwrap_or_default()),
    })
}

/// The emulator's tailnet: alice, and the group holding every grantee, one per line.
fn state(logins: &[String]) -> String {
    let members: Vec<String> = logins
        .iter()
        .map(|l| format!("{MEMBER_INDENT}\"{l}\","))
        .collect();
    let policy = format!(
        "// Benchmark policy.\n{{\n\t\"groups\": {{\n\t\t\"group:sre\": [\"alice@example.com\"],\n\t\t// Managed by tidegate.\n\t\t\"{GROUP}\": [\n{}\n\t\t],\n\t}},\n\t\"tagOwners\": {{\"tag:prod\": [\"group:sre\"]}},\n\t\"grants\": [\n\t\t{{\"src\": [\"{GROUP}\"], \"dst\": [\"tag:prod\"], \"ip\": [\"tcp:22\"]}},\n\t],\n}}\n",
        members.join("\n")
    );
    json!({
        "tailnet": "example.com",
        "users": [{"id": "1", "loginName": "alice@example.com", "role": "owner"}],
        "devices": [{"hostname": "db-1", "tags": ["tag:prod"], "user": "alice@example.com"}],
        "policy": policy,
        "apiTokens": [{"token": TOKEN, "user": "alice@example.com"}],
    })
    .to_string()
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
    let logins: Vec<String> = (0..count).map(login).collect();
    let emu = emulator::start(
        emulator::State::from_json(&state(&logins), clock.now())?,
        emulator::Options::default(),
    )
    .await?;
    let dir = std::env::temp_dir().join(format!("tidegate-expiry-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}", dir.join("expiry.db").display());
    let config = crate::grants::config(&db, emu.url(), true);
    let service = open_service(&config).await?;
    let entitlement = service.entitlement("prod-ssh")?.clone();

    // Every grant through the lifecycle, stored in one batch.
    let setup_started = Instant::now();
    let directory = Directory {
        roles: logins
            .iter()
            .map(|l| (l.clone(), "member".to_owned()))
            .chain([("alice@example.com".to_owned(), "owner".to_owned())])
            .collect(),
        groups: BTreeMap::from([(
            "group:sre".to_owned(),
            BTreeSet::from(["alice@example.com".to_owned()]),
        )]),
    };
    let lead = 30 + count as u64 / 10_000;
    let start = tidegate_core::now(&clock);
    let alice = service
        .actor("alice@example.com", tidegate_core::access::Via::ApiToken)
        .await?;
    let reviewer = alice
        .review(&entitlement, &directory)
        .map_err(anyhow::Error::msg)?;
    let mut batch = Vec::with_capacity(count);
    for (i, login) in logins.iter().enumerate() {
        let seconds = lead + (i as u64 * spread) / count as u64;
        let ask = Ask {
            duration: Some(format!("{seconds}s").parse()?),
            ..Ask::default()
        };
        let (mut r, mut events) = Request::create(
            format!("r-bench{i:07}"),
            &entitlement,
            login,
            ask,
            &directory,
            start,
        )?;
        events.extend(r.approve(&entitlement, &reviewer, "", start)?);
        events.extend(r.activate(start, json!({"group": GROUP}))?);
        batch.push((r, audit_entries(&events, start)));
    }
    let expiries: HashMap<String, time::OffsetDateTime> = batch
        .iter()
        .filter_map(|(r, _): &(Request, _)| Some((r.requester.clone(), r.expires_at?)))
        .collect();
    service.store().insert_requests(&batch).await?;
    drop(batch);
    let setup = setup_started.elapsed();

    // Run the reconciler; stop it for ten seconds midway; start a new one on the same database.
    let stop = Arc::new(tokio::sync::Notify::new());
    let reconciler = Reconciler::new(service.clone());
    let stop1 = stop.clone();
    let first = tokio::spawn(async move { reconciler.run(Duration::from_secs(1), stop1).await });
    let api = ApiClient::new(ApiConfig::new(
        emu.url(),
        Credentials::ApiToken(Secret::new(TOKEN)),
    ))?;
    let crash_at = start + time::Duration::seconds((lead + spread / 2) as i64);
    let deadline = Instant::now() + Duration::from_secs(lead + spread + 60);
    let (mut down_since, mut restarted_at) = (None, None);
    let mut second: Option<tokio::task::JoinHandle<()>> = None;
    // The watcher must not starve what it measures: each poll looks only at the grants past
    // their expiry and still present, and counts the others.
    let mut by_expiry: Vec<(time::OffsetDateTime, &str)> =
        expiries.iter().map(|(l, e)| (*e, l.as_str())).collect();
    by_expiry.sort();
    let mut next_expiring = 0;
    let mut expired_present: Vec<&str> = Vec::new();
    let mut removed: HashMap<String, time::OffsetDateTime> = HashMap::new();
    while removed.len() < count && Instant::now() < deadline {
        let now = clock.now();
        if down_since.is_none() && now >= crash_at {
            first.abort();
            down_since = Some(now);
        }
        if let Some(since) = down_since
            && restarted_at.is_none()
            && now - since >= time::Duration::seconds(10)
        {
            let reconciler = Reconciler::new(open_service(&config).await?);
            let stop2 = stop.clone();
            restarted_at = Some(clock.now());
            second = Some(tokio::spawn(async move {
                reconciler.run(Duration::from_secs(1), stop2).await
            }));
        }
        if let Some((text, members)) = policy_members(&api).await {
            let seen = clock.now();
            while let Some((expiry, login)) = by_expiry.get(next_expiring)
                && *expiry <= seen
            {
                expired_present.push(login);
                next_expiring += 1;
            }
            let unexpired = by_expiry.len() - next_expiring;
            if members < unexpired {
                bail!(
                    "{} members left the group before their grant expired",
                    unexpired - members
                );
            }
            let waiting: HashSet<&str> = expired_present.iter().copied().collect();
            let present: HashSet<&str> = member_lines(&text)
                .filter(|login| waiting.contains(login))
                .collect();
            expired_present.retain(|login| {
                let gone = !present.contains(login);
                if gone {
                    removed.insert((*login).to_owned(), seen);
                }
                !gone
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.notify_waiters();
    if let Some(task) = second {
        task.abort();
    }
    if removed.len() < count {
        bail!(
            "only {} of {count} grants were removed before the deadline",
            removed.len()
        );
    }
    let (mut normal, mut after_restart) = (Vec::new(), Vec::new());
    for (login, expiry) in &expiries {
        let gone = removed[login];
        match (down_since, restarted_at) {
            // Still there at the restart: waiting for the new reconciler, whether it expired
            // during the outage or just before it.
            (Some(_), Some(up)) if *expiry < up && gone >= up => {
                after_restart.push(Duration::try_from(gone - up).unwrap_or_default())
            }
            _ => normal.push(Duration::try_from(gone - *expiry).unwrap_or_default()),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = lags(normal);
    out["setup_ms"] = json!(ms(setup));
    out["spread_s"] = json!(spread);
    out["after_restart"] = lags(after_restart);
    Ok(out)
}
