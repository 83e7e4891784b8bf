//! `tidegate-bench pages [RUNS]`: every web page's weight (bytes of HTML) and server time
//! (p50, p99 over RUNS sequential loads, default 200) on the demo's tailnet with some history:
//! active, pending, denied and break-glass requests and a few hundred audit entries. The
//! emulator answers without added latency, so the figures are tidegate's own time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tailnet::{ApiClient, ApiConfig, Clock, Credentials, Secret, SystemClock};
use tidegate_core::config::Config;
use tidegate_core::service::Service;

const STATE: &str = include_str!("../../../examples/emulator-state.json");
const CONFIG: &str = include_str!("../../../examples/tidegate.toml");

pub async fn run(runs: usize) -> Result<Value> {
    let state = emulator::State::from_json(STATE, SystemClock.now())?;
    let token = state.to_json()["apiTokens"][0]["token"]
        .as_str()
        .context("the example tailnet has no API token")?
        .to_owned();
    let logins: Vec<String> = state.users.iter().map(|u| u.login_name.clone()).collect();
    let emu = emulator::start(state, emulator::Options::default()).await?;
    let dir = std::env::temp_dir().join(format!("tidegate-bench-pages-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let database = format!("sqlite://{}", dir.join("pages.db").display());
    let text = CONFIG
        .replace("https://api.tailscale.com", emu.url())
        .replace("sqlite://tidegate.db", &database)
        .replace(
            "oauth_client_id = \"k123\"\noauth_client_secret_file = \"/run/secrets/tailscale-oauth\"",
            &format!("api_token = \"{token}\""),
        );
    let config = Config::parse(&text, "bench config")?;
    let store = tidegate_store::open(&config.database).await?;
    let tailnet = Arc::new(ApiClient::new(ApiConfig::new(
        emu.url(),
        Credentials::ApiToken(Secret::new(&token)),
    ))?);
    let service = Arc::new(Service::new(
        Arc::new(config),
        store.clone(),
        tailnet,
        Arc::new(SystemClock),
    ));
    let reconciler = {
        let reconciler = tidegate_core::reconciler::Reconciler::new(service.clone());
        tokio::spawn(async move {
            loop {
                reconciler.pass().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    crate::serve(service.clone(), listener, logins);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    // Some history: requests in every state, and their audit entries.
    let api = |login: &'static str| {
        let (http, url, store) = (http.clone(), url.clone(), store.clone());
        async move {
            let secret = tidegate_server::tokens::create(
                store.as_ref(),
                login,
                tidegate_core::store::TokenKind::Api,
                None,
                "bench",
                SystemClock.now(),
            )
            .await?;
            Ok::<_, anyhow::Error>((http, url, secret))
        }
    };
    let (dave_http, _, dave) = api("dave@example.com").await?;
    let (_, _, alice) = api("alice@example.com").await?;
    let call = |token: &str, path: String, body: Value| {
        let (http, url, token) = (dave_http.clone(), url.clone(), token.to_owned());
        async move {
            let v: Value = http
                .post(format!("{url}{path}"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?
                .json()
                .await?;
            Ok::<_, anyhow::Error>(v)
        }
    };
    let mut ids = Vec::new();
    for n in 0..40 {
        let r = call(
            &dave,
            "/api/requests".into(),
            json!({"entitlement": "prod-ssh", "duration": "1h", "reason": format!("INC-{n}")}),
        )
        .await?;
        ids.push(r["id"].as_str().context("no id")?.to_owned());
    }
    for (i, id) in ids.iter().enumerate().take(30) {
        let action = if i % 3 == 0 { "deny" } else { "approve" };
        call(
            &alice,
            format!("/api/requests/{id}/{action}"),
            json!({"comment": "bench"}),
        )
        .await?;
    }
    call(
        &dave,
        "/api/requests".into(),
        json!({"entitlement": "prod-db", "reason": "outage", "break_glass": true}),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let session = |login: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(format!("{url}/login"))
                .form(&[("user", login), ("next", "/")])
                .send()
                .await?;
            let cookie = r
                .headers()
                .get(reqwest::header::SET_COOKIE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .context("no session cookie")?
                .to_owned();
            Ok::<_, anyhow::Error>(cookie)
        }
    };
    let dave_cookie = session("dave@example.com").await?;
    let alice_cookie = session("alice@example.com").await?;
    let pages: Vec<(&str, String, &str)> = vec![
        ("login", "/login".into(), ""),
        ("my access", "/".into(), &dave_cookie),
        (
            "request prod-ssh",
            "/request?entitlement=prod-ssh".into(),
            &dave_cookie,
        ),
        (
            "request prod-db",
            "/request?entitlement=prod-db".into(),
            &dave_cookie,
        ),
        ("approvals", "/approvals".into(), &alice_cookie),
        (
            "request page",
            format!("/requests/{}", ids[1]),
            &alice_cookie,
        ),
        ("account", "/account".into(), &dave_cookie),
        ("admin", "/admin".into(), &alice_cookie),
        (
            "admin break-glass",
            "/admin/break-glass".into(),
            &alice_cookie,
        ),
        ("admin audit", "/admin/audit".into(), &alice_cookie),
        ("admin inventory", "/admin/inventory".into(), &alice_cookie),
    ];
    let mut out = serde_json::Map::new();
    for (name, path, cookie) in pages {
        let mut times = Vec::with_capacity(runs);
        let mut bytes = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let mut req = http.get(format!("{url}{path}"));
            if !cookie.is_empty() {
                req = req.header(reqwest::header::COOKIE, cookie);
            }
            let r = req.send().await?;
            let status = r.status();
            let body = r.bytes().await?;
            times.push(started.elapsed());
            anyhow::ensure!(status.is_success(), "{path}: {status}");
            bytes = body.len();
        }
        times.sort();
        out.insert(
            name.to_owned(),
            json!({
                "path": path,
                "html_bytes": bytes,
                "p50_ms": crate::ms(crate::percentile(&times, 0.5)),
                "p99_ms": crate::ms(crate::percentile(&times, 0.99)),
            }),
        );
    }
    reconciler.abort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({"bench": "pages", "runs": runs, "pages": out}))
}
