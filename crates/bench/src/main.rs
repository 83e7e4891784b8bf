//! `tidegate-bench`: benchmarks that print their figures as one JSON object.
//!
//! `tidegate-bench policy` generates a tailnet of 10,000 users, 50,000 devices and 2,000 rules
//! and measures the policy engine on it, plus a HuJSON edit of a ~1 MB policy file against a
//! plain `serde_json` parse of the same file in the same run.

mod expiry;
mod generate;
mod grants;
mod machine;
mod pages;
mod posture;
mod replicas;
mod review;
mod slack;
mod sync;
mod webhooks;

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;

/// Median wall time of `runs` runs of `f`, in milliseconds.
fn median_ms<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Peak resident set size of this process, from the kernel.
fn peak_rss_mb() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmHWM")?
        .parse()?;
    Ok(kb / 1024.0)
}

/// The value at fraction `p` (0.5 = median) of `sorted`; zero when empty.
fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// Serves tidegate's API and web UI for `service` on `listener` (a task that runs until the
/// bench ends).
fn serve(
    service: std::sync::Arc<tidegate_core::service::Service>,
    listener: tokio::net::TcpListener,
    demo_logins: Vec<String>,
) -> tokio::task::JoinHandle<()> {
    let router = tidegate_server::router(tidegate_server::AppState {
        service,
        metrics: std::sync::Arc::new(tidegate_core::metrics::Metrics::default()),
        demo_logins,
        machine: tidegate_server::machine::state(),
    });
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    })
}

/// Milliseconds to a tenth.
fn ms(d: std::time::Duration) -> f64 {
    round(d.as_secs_f64() * 1e3, 1)
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn policy_bench() -> Result<serde_json::Value> {
    let tailnet = generate::Tailnet::new(10_000, 50_000, 2_000);
    let text = tailnet.policy_text();
    let inventory = tailnet.inventory();

    // Load, validate and index.
    let mut engine = None;
    let index_ms = median_ms(3, || {
        let policy = policy::Policy::parse(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let built =
            policy::Engine::build(policy, &inventory).map_err(|e| anyhow::anyhow!("{e}"))?;
        engine = Some(built);
        Ok::<_, anyhow::Error>(())
    });
    let engine = engine.context("engine did not build")?;

    // The busiest tagged device: many rules name it.
    let device = tailnet.tagged_device_name(7);
    let filter = engine
        .packet_filter(&device)
        .with_context(|| format!("no device {device}"))?;
    if filter.is_empty() {
        bail!("{device} received an empty filter; the generated policy is wrong");
    }
    let device_filter_ms = median_ms(21, || engine.packet_filter(&device));

    // Access checks from users' devices to tagged devices, allowed and denied alike.
    let checks: Vec<(IpAddr, String, u16)> = (0..1000)
        .map(|i| {
            let src = tailnet.user_device_ip(i * 37 % tailnet.user_devices());
            (
                src,
                tailnet.tagged_device_name(i % 100),
                [443, 22, 5432, 8080][i % 4],
            )
        })
        .collect();
    let mut allowed = 0usize;
    for (src, dst, port) in &checks {
        if engine.check(*src, dst, *port, 6)?.is_some() {
            allowed += 1;
        }
    }
    let rounds = 50;
    let start = Instant::now();
    for _ in 0..rounds {
        for (src, dst, port) in &checks {
            black_box(engine.check(*src, dst, *port, 6)?);
        }
    }
    let check_us = start.elapsed().as_secs_f64() * 1e6 / (rounds * checks.len()) as f64;

    let who = engine.who_can(&device, 443, 6)?;
    let who_can_ms = median_ms(21, || engine.who_can(&device, 443, 6));

    // A group edit of a ~1 MB policy, against a plain serde_json parse of the same bytes.
    let big = tailnet.large_policy_json(1_000_000);
    let group = "group:team7";
    let hujson_edit_ms = median_ms(21, || -> Result<String> {
        let mut doc = hujson::Document::parse(&big)?;
        doc.add_string(
            &[hujson::Seg::Key("groups"), hujson::Seg::Key(group)],
            "new-hire@example.com",
        )?;
        Ok(doc.into_text())
    });
    let serde_json_parse_ms = median_ms(21, || serde_json::from_str::<serde_json::Value>(&big));

    Ok(json!({
        "users": inventory.users.len(),
        "devices": inventory.devices.len(),
        "rules": tailnet.rule_count(),
        "policy_bytes": text.len(),
        "index_ms": round(index_ms, 1),
        "device_filter_ms": round(device_filter_ms, 3),
        "device_filter_rules": filter.len(),
        "check_us": round(check_us, 3),
        "checks_allowed_of_1000": allowed,
        "who_can_ms": round(who_can_ms, 3),
        "who_can_entries": who.len(),
        "edit_file_bytes": big.len(),
        "hujson_edit_ms": round(hujson_edit_ms, 3),
        "serde_json_parse_ms": round(serde_json_parse_ms, 3),
        "edit_vs_parse_ratio": round(hujson_edit_ms / serde_json_parse_ms, 2),
        "peak_rss_mb": round(peak_rss_mb()?, 1),
    }))
}

fn main() -> Result<()> {
    // Logs on standard error when asked (TIDEGATE_LOG=info, say); the figures stay on stdout.
    if let Ok(filter) = std::env::var("TIDEGATE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let which = std::env::args().nth(1).unwrap_or_default();
    let figures = match which.as_str() {
        "policy" => policy_bench()?,
        "grants" => {
            let count = std::env::args()
                .nth(2)
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(1000);
            tokio::runtime::Runtime::new()?.block_on(grants::run(count))?
        }
        "expiry" => {
            let arg = |i: usize, default: u64| -> Result<u64> {
                Ok(std::env::args()
                    .nth(i)
                    .map(|n| n.parse())
                    .transpose()?
                    .unwrap_or(default))
            };
            let (count, spread) = (arg(2, 100_000)?, arg(3, 60)?);
            tokio::runtime::Runtime::new()?.block_on(expiry::run(count as usize, spread))?
        }
        "posture" => {
            let count = std::env::args()
                .nth(2)
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(200);
            tokio::runtime::Runtime::new()?.block_on(posture::run(count))?
        }
        "sync" => {
            let arg = |n: usize, default: usize| -> Result<usize> {
                Ok(std::env::args()
                    .nth(n)
                    .map(|v| v.parse())
                    .transpose()?
                    .unwrap_or(default))
            };
            tokio::runtime::Runtime::new()?.block_on(sync::run(
                arg(2, 10_000)?,
                arg(3, 50_000)?,
                arg(4, 2_000)?,
            ))?
        }
        "slack" => {
            let clicks = std::env::args()
                .nth(2)
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(50);
            tokio::runtime::Runtime::new()?.block_on(slack::run(clicks))?
        }
        "webhooks" => {
            let events = std::env::args()
                .nth(2)
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(2_000);
            tokio::runtime::Runtime::new()?.block_on(webhooks::run(events))?
        }
        "review" => {
            let users = std::env::args()
                .nth(2)
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(50_000);
            tokio::runtime::Runtime::new()?.block_on(review::run(users))?
        }
        "sync-emulator" => {
            let arg = |n: usize| -> Result<usize> {
                Ok(std::env::args()
                    .nth(n)
                    .context("sync-emulator USERS DEVICES RULES")?
                    .parse()?)
            };
            tokio::runtime::Runtime::new()?.block_on(sync::serve_emulator(
                arg(2)?,
                arg(3)?,
                arg(4)?,
            ))?
        }
        "pages" => {
            let runs = std::env::args()
                .nth(2)
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(200);
            tokio::runtime::Runtime::new()?.block_on(pages::run(runs))?
        }
        "machine" => {
            let count = std::env::args()
                .nth(2)
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(500);
            tokio::runtime::Runtime::new()?.block_on(machine::run(count))?
        }
        "failover" => {
            let kills = std::env::args()
                .nth(2)
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(20);
            tokio::runtime::Runtime::new()?.block_on(replicas::failover(kills))?
        }
        "throughput" => {
            let seconds = std::env::args()
                .nth(2)
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(10);
            tokio::runtime::Runtime::new()?.block_on(replicas::throughput(seconds))?
        }
        _ => {
            bail!(
                "usage: tidegate-bench policy | grants [COUNT] | posture [COUNT] | machine [COUNT] | pages [RUNS] | sync [USERS DEVICES RULES] | review [USERS] | webhooks [EVENTS] | slack [CLICKS] \
                 | expiry [COUNT] [SPREAD_SECONDS] \
                 | failover [KILLS] | throughput [SECONDS]"
            )
        }
    };
    println!("{}", serde_json::to_string_pretty(&figures)?);
    Ok(())
}
