//! Replicas on PostgreSQL: `tidegate-bench failover [KILLS]` kills the leader (SIGKILL) KILLS
//! times and measures kill → first completed reconciler pass by the next leader;
//! `tidegate-bench throughput [SECONDS]` measures the API's request rate with one replica and
//! with three (clients spread over them), side by side.
//!
//! The replicas are real `tidegate serve` processes: the `tidegate` binary next to this one
//! (`cargo build --release -p tidegate -p tidegate-bench`) or `TIDEGATE_BIN`. The database is a
//! fresh schema in `TIDEGATE_BENCH_POSTGRES_URL` (default the machine's
//! `postgres://postgres@127.0.0.1:5432/test`), dropped at the end; the tailnet is the emulator,
//! in this process.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tailnet::{Clock, SystemClock};

use crate::grants::{config, login, state};
use crate::{ms, percentile};

const USERS: usize = 64;
const ALICE: &str = "alice@example.com";

fn tidegate_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TIDEGATE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let here = std::env::current_exe()?;
    let bin = here.with_file_name("tidegate");
    if !bin.exists() {
        bail!(
            "no tidegate binary at {}: build it (cargo build --release -p tidegate) or set TIDEGATE_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A metric's value in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

struct Replica {
    url: String,
    listen: String,
    child: Option<Child>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Replicas of one deployment: the emulator, a schema, a config, tokens.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    config: String,
    base_url: String,
    schema: String,
    http: reqwest::Client,
    replicas: Vec<Replica>,
    tokens: Vec<(String, String)>,
    _emulator: emulator::RunningEmulator,
}

impl Cluster {
    async fn new(replicas: usize) -> Result<Cluster> {
        let bin = tidegate_bin()?;
        let base_url = std::env::var("TIDEGATE_BENCH_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let schema = format!("tidegate_bench_{}", std::process::id());
        let pool = sqlx_connect(&base_url).await?;
        pool.execute_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await?;
        pool.execute_sql(&format!("CREATE SCHEMA {schema}")).await?;
        let separator = if base_url.contains('?') { '&' } else { '?' };
        let url = format!("{base_url}{separator}options=-c%20search_path%3D{schema}");

        let emulator = emulator::start(
            emulator::State::from_json(&state(USERS), SystemClock.now())?,
            emulator::Options::default(),
        )
        .await?;
        let dir = std::env::temp_dir().join(format!("tidegate-replicas-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config_text = config(&url, emulator.url(), true);
        let config = dir.join("tidegate.toml");
        std::fs::write(&config, config_text)?;
        let config = config.display().to_string();

        let mut cluster = Cluster {
            bin,
            dir,
            config,
            base_url,
            schema,
            http: reqwest::Client::new(),
            replicas: Vec::new(),
            tokens: Vec::new(),
            _emulator: emulator,
        };
        for who in std::iter::once(ALICE.to_owned()).chain((0..USERS).map(login)) {
            let out = Command::new(&cluster.bin)
                .args([
                    "token",
                    "create",
                    "--config",
                    &cluster.config,
                    "--user",
                    &who,
                ])
                .output()?;
            if !out.status.success() {
                bail!(
                    "token create: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            cluster.tokens.push((who, token));
        }
        for _ in 0..replicas {
            let port = free_port()?;
            cluster.replicas.push(Replica {
                url: format!("http://127.0.0.1:{port}"),
                listen: format!("127.0.0.1:{port}"),
                child: None,
            });
        }
        for i in 0..replicas {
            cluster.start(i)?;
        }
        for i in 0..replicas {
            cluster.await_healthy(i).await?;
        }
        Ok(cluster)
    }

    fn start(&mut self, i: usize) -> Result<()> {
        let child = Command::new(&self.bin)
            .args([
                "serve",
                "--config",
                &self.config,
                "--listen",
                &self.replicas[i].listen,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.replicas[i].child = Some(child);
        Ok(())
    }

    async fn await_healthy(&self, i: usize) -> Result<()> {
        let url = format!("{}/healthz", self.replicas[i].url);
        for _ in 0..400 {
            if self.http.get(&url).send().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("replica {i} did not come up")
    }

    fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.replicas[i].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Per replica: leads, terms as leader, completed passes (zeros if down or silent).
    async fn leadership(&self) -> Vec<(bool, f64, f64)> {
        let mut out = Vec::new();
        for r in &self.replicas {
            let text = match &r.child {
                Some(_) => match self
                    .http
                    .get(format!("{}/metrics", r.url))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    Ok(answer) => answer.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                },
                None => String::new(),
            };
            out.push((
                metric(&text, "tidegate_leader") == Some(1.0),
                metric(&text, "tidegate_leader_terms_total").unwrap_or(0.0),
                metric(&text, "tidegate_reconcile_duration_seconds_count").unwrap_or(0.0),
            ));
        }
        out
    }

    /// Waits for a replica other than `not` to lead in a new term (relative to `before`) and
    /// complete a pass in it.
    async fn await_new_reconcile(
        &self,
        not: Option<usize>,
        before: &[(bool, f64, f64)],
    ) -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for (i, (leads, terms, passes)) in self.leadership().await.into_iter().enumerate() {
                let (_, terms_before, passes_before) = before[i];
                if leads && Some(i) != not && terms > terms_before && passes > passes_before {
                    return Ok(i);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("no replica took over within 30 s")
    }

    async fn finish(mut self) -> Result<()> {
        for i in 0..self.replicas.len() {
            self.kill(i)?;
        }
        let pool = sqlx_connect(&self.base_url).await?;
        pool.execute_sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await?;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

/// A connection to the bench database for schema set-up.
async fn sqlx_connect(url: &str) -> Result<BenchDb> {
    let pool = sqlx::PgPool::connect(url)
        .await
        .context("the bench database (TIDEGATE_BENCH_POSTGRES_URL)")?;
    Ok(BenchDb(pool))
}

struct BenchDb(sqlx::PgPool);

impl BenchDb {
    async fn execute_sql(&self, sql: &str) -> Result<()> {
        sqlx::query(sql).execute(&self.0).await?;
        Ok(())
    }
}

fn summary(mut times: Vec<Duration>) -> Value {
    times.sort();
    json!({
        "kills": times.len(),
        "median_ms": ms(percentile(&times, 0.5)),
        "min_ms": ms(times.first().copied().unwrap_or_default()),
        "max_ms": ms(times.last().copied().unwrap_or_default()),
    })
}

pub async fn failover(kills: usize) -> Result<Value> {
    let mut cluster = Cluster::new(3).await?;
    let none = vec![(false, 0.0, 0.0); 3];
    cluster.await_new_reconcile(None, &none).await?;
    let mut times = Vec::with_capacity(kills);
    for _ in 0..kills {
        let before = cluster.leadership().await;
        let leader = before
            .iter()
            .position(|(leads, _, _)| *leads)
            .context("no leader")?;
        let killed = Instant::now();
        cluster.kill(leader)?;
        cluster.await_new_reconcile(Some(leader), &before).await?;
        times.push(killed.elapsed());
        cluster.start(leader)?;
        cluster.await_healthy(leader).await?;
    }
    cluster.finish().await?;
    let mut out = summary(times);
    out["measured"] = json!("SIGKILL of the leader → first completed reconciler pass by the next");
    Ok(out)
}

/// Clients hammering the API for `seconds`: each request is a create, a read of it and a
/// cancel (three API calls, two of them writes with audit entries).
async fn load(cluster: &Cluster, replicas: usize, seconds: u64) -> Result<Value> {
    const CLIENTS: usize = 16;
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let http = cluster.http.clone();
        let base = cluster.replicas[c % replicas].url.clone();
        let (_, token) = cluster.tokens[1 + c % USERS].clone();
        let (calls, errors) = (calls.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let ok = async {
                    let created: Value = http
                        .post(format!("{base}/api/requests"))
                        .bearer_auth(&token)
                        .json(&json!({"entitlement": "prod-ssh", "duration": "1h"}))
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
                    let id = created["id"].as_str().unwrap_or_default().to_owned();
                    http.get(format!("{base}/api/requests/{id}"))
                        .bearer_auth(&token)
                        .send()
                        .await?
                        .error_for_status()?;
                    http.post(format!("{base}/api/requests/{id}/cancel"))
                        .bearer_auth(&token)
                        .json(&json!({}))
                        .send()
                        .await?
                        .error_for_status()?;
                    Ok::<_, reqwest::Error>(())
                }
                .await;
                match ok {
                    Ok(()) => calls.fetch_add(3, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let calls = calls.load(Ordering::Relaxed);
    Ok(json!({
        "replicas": replicas,
        "clients": CLIENTS,
        "seconds": seconds,
        "calls": calls,
        "errors": errors.load(Ordering::Relaxed),
        "calls_per_s": ((calls as f64 / seconds as f64) * 10.0).round() / 10.0,
    }))
}

pub async fn throughput(seconds: u64) -> Result<Value> {
    let cluster = Cluster::new(3).await?;
    let one = load(&cluster, 1, seconds).await?;
    let three = load(&cluster, 3, seconds).await?;
    cluster.finish().await?;
    let ratio = three["calls_per_s"].as_f64().unwrap_or_default()
        / one["calls_per_s"].as_f64().unwrap_or(1.0).max(1e-9);
    Ok(json!({
        "one_replica": one,
        "three_replicas": three,
        "ratio": (ratio * 100.0).round() / 100.0,
        "workload": "create + read + cancel a request per iteration, 16 clients",
    }))
}
