//! `tidegate-bench machine [COUNT]`: CI jobs trading OIDC tokens for auth keys over tidegate's
//! HTTP API. A local issuer (discovery and JWKS over HTTP, an ES256 key) signs COUNT job
//! tokens (default 500); they are sent at concurrency 8, against the emulator with no latency
//! and with 50 ms on every tailnet call. Reported per run: keys minted per second and p50/p99
//! latency with the issuer's keys cached, and the cost of fetching them (the first request,
//! and a request signed with a key rotated in at the issuer, which makes tidegate refresh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use tailnet::{ApiClient, ApiConfig, Clock, Credentials, Secret, SystemClock};
use tidegate_core::config::Config;
use tidegate_core::service::Service;

use crate::grants::TOKEN;
use crate::{ms, percentile};

const CONCURRENCY: usize = 8;

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn new(kid: &str) -> Result<SigningKey> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot make a key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("cannot read the key"))?;
        let point = pair.public_key().as_ref();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Ok(SigningKey {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": kid,
                "x": b64(&point[1..33]), "y": b64(&point[33..65]),
            }),
        })
    }

    fn sign(&self, issuer: &str, n: usize) -> Result<String> {
        let now = SystemClock.now().unix_timestamp();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let claims = json!({
            "iss": issuer, "aud": "tidegate", "sub": format!("repo:acme/api:run:{n}"),
            "repository": "acme/api", "iat": now, "exp": now + 300, "jti": format!("job-{n}"),
        });
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }
}

/// One run against an emulator with `latency` on every tailnet call.
async fn run_once(count: usize, latency: Duration) -> Result<Value> {
    let emu = emulator::start(
        emulator::State::from_json(&crate::grants::state(1), SystemClock.now())?,
        emulator::Options {
            latency,
            ..emulator::Options::default()
        },
    )
    .await?;
    // The issuer.
    let published = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let key = SigningKey::new("k1")?;
    published
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .push(key.jwk.clone());
    let issuer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}", issuer_listener.local_addr()?);
    let app = {
        let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")});
        let published = published.clone();
        axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/keys",
                axum::routing::get(move || async move {
                    let keys = published.lock().map(|k| k.clone()).unwrap_or_default();
                    axum::Json(json!({"keys": keys}))
                }),
            )
    };
    tokio::spawn(async move {
        let _ = axum::serve(issuer_listener, app).await;
    });

    let dir = std::env::temp_dir().join(format!("tidegate-bench-machine-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let database = format!("sqlite://{}", dir.join("machine.db").display());
    let config = Config::parse(
        &format!(
            r#"
[server]
database = "{database}"
[tailnet]
api_url = "{}"
api_token = "{TOKEN}"
[[machine]]
name = "ci"
issuer = "{issuer}"
audience = "tidegate"
claims = {{ repository = "acme/*" }}
tags = ["tag:prod"]
rate = "100000/m"
"#,
            emu.url()
        ),
        "bench config",
    )?;
    let store = tidegate_store::open(&config.database).await?;
    let tailnet = Arc::new(ApiClient::new(ApiConfig::new(
        emu.url(),
        Credentials::ApiToken(Secret::new(TOKEN)),
    ))?);
    let service = Arc::new(Service::new(
        Arc::new(config),
        store,
        tailnet,
        Arc::new(SystemClock),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    crate::serve(service, listener, Vec::new());
    let http = reqwest::Client::new();
    let ask = move |token: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let started = Instant::now();
            let r = http
                .post(format!("{url}/api/machine/authkey"))
                .bearer_auth(token)
                .json(&json!({"entitlement": "ci"}))
                .send()
                .await?;
            let status = r.status();
            let body: Value = r.json().await?;
            if !status.is_success() {
                bail!("{status}: {body}");
            }
            body["key"].as_str().context("no key")?;
            Ok::<_, anyhow::Error>(started.elapsed())
        }
    };

    // Cold: the issuer's keys are fetched (discovery, then the key set).
    let cold = ask(key.sign(&issuer, 0)?).await?;
    // Warm, at concurrency 8.
    let tokens: Vec<String> = (1..=count)
        .map(|n| key.sign(&issuer, n))
        .collect::<Result<_>>()?;
    let queue = Arc::new(std::sync::Mutex::new(tokens));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (queue, ask) = (queue.clone(), ask.clone());
        workers.spawn(async move {
            let mut times = Vec::new();
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some(token) = next else {
                    return Ok::<_, anyhow::Error>(times);
                };
                times.push(ask(token).await?);
            }
        });
    }
    let mut times = Vec::new();
    while let Some(done) = workers.join_next().await {
        times.extend(done??);
    }
    let wall = started.elapsed();
    times.sort();
    // A key rotated in at the issuer: the first token signed with it makes tidegate refetch.
    let rotated = SigningKey::new("k2")?;
    published
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .push(rotated.jwk.clone());
    tokio::time::sleep(Duration::from_secs(11)).await; // past the refresh interval
    let refresh = ask(rotated.sign(&issuer, count + 1)?).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "latency_ms": latency.as_millis() as u64,
        "keys": count,
        "keys_per_s": crate::round(count as f64 / wall.as_secs_f64(), 1),
        "p50_ms": ms(percentile(&times, 0.5)),
        "p99_ms": ms(percentile(&times, 0.99)),
        "first_request_ms": ms(cold),
        "rotated_key_request_ms": ms(refresh),
    }))
}

pub async fn run(count: usize) -> Result<Value> {
    let without = run_once(count, Duration::ZERO).await?;
    let with = run_once(count, Duration::from_millis(50)).await?;
    let jwks_cost = |run: &Value| {
        let refresh = run["rotated_key_request_ms"].as_f64().unwrap_or_default();
        let p50 = run["p50_ms"].as_f64().unwrap_or_default();
        crate::round(refresh - p50, 1)
    };
    Ok(json!({
        "bench": "machine",
        "concurrency": CONCURRENCY,
        "no_latency": without,
        "latency_50ms": with,
        "jwks_refresh_cost_ms": {
            "no_latency": jwks_cost(&without),
            "latency_50ms": jwks_cost(&with),
        },
    }))
}
