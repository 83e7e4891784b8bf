//! `tidegate serve`, `tidegate demo`, `tidegate token create`, `tidegate audit ...`: the commands
//! that run the server or work on its database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use tailnet::{ApiClient, ApiConfig, Clock, SystemClock, Tailnet};
use tidegate_core::config::Config;
use tidegate_core::entitlement::check_against_policy;
use tidegate_core::leader;
use tidegate_core::metrics::Metrics;
use tidegate_core::reconciler::Reconciler;
use tidegate_core::service::Service;
use tidegate_core::store::Store;

use crate::Failure;

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure::Usage(e.to_string())
}

fn load_config(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure::Usage(e.to_string()))
}

async fn open_store(url: &str) -> Result<Arc<dyn Store>, Failure> {
    tidegate_store::open(url)
        .await
        .map_err(|e| Failure::Usage(format!("database {}: {e}", tidegate_store::redact_url(url))))
}

fn tailnet_client(config: &Config, clock: Arc<dyn Clock>) -> Result<Arc<dyn Tailnet>, Failure> {
    let mut api = ApiConfig::new(&config.tailnet.api_url, config.tailnet.credentials.clone());
    api.tailnet = config.tailnet.tailnet.clone();
    api.clock = clock;
    Ok(Arc::new(ApiClient::new(api).map_err(usage)?))
}

/// Checks every entitlement against the live policy; an entitlement that would grant nothing
/// stops the server with a clear message.
async fn startup_check(config: &Config, tailnet: &dyn Tailnet) -> Result<(), Failure> {
    let policy_text = tailnet
        .policy()
        .await
        .map_err(|e| Failure::Usage(format!("cannot read the tailnet's policy file: {e}")))?;
    let policy = policy::Policy::parse(&policy_text.text)
        .map_err(|e| Failure::Usage(format!("the tailnet's policy file does not parse: {e}")))?;
    match tailnet.settings().await {
        Ok(settings) => {
            if let Some(conflict) = config.policy_edit_conflict(settings.acls_externally_managed_on)
            {
                return Err(Failure::Rejected(format!("error: {conflict}")));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the tailnet's settings: whether GitOps manages the policy is not known")
        }
    }
    let issues = check_against_policy(&config.entitlements, &policy);
    if issues.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = issues.iter().map(|i| format!("error: {i}")).collect();
    Err(Failure::Rejected(format!(
        "{}\n{} entitlement problem(s) against the live policy; nothing is served until they are fixed",
        lines.join("\n"),
        issues.len()
    )))
}

/// A running server: its URL, and what to stop.
pub struct Running {
    pub url: String,
    stop: Arc<tokio::sync::Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(self) {
        self.stop.notify_waiters();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Starts the API, and the reconciler whenever this process holds the leader lock.
pub async fn start(
    config: Config,
    store: Arc<dyn Store>,
    tailnet: Arc<dyn Tailnet>,
    clock: Arc<dyn Clock>,
    listener: tokio::net::TcpListener,
    demo_logins: Vec<String>,
) -> Result<Running, Failure> {
    startup_check(&config, tailnet.as_ref()).await?;
    let url = format!("http://{}", listener.local_addr().map_err(usage)?);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %url,
        tailnet = %config.tailnet.api_url,
        database = %tidegate_store::redact_url(&config.database),
        entitlements = config.entitlements.len(),
        "starting"
    );
    let lock = store
        .leader_lock()
        .await
        .map_err(|e| Failure::Usage(format!("leader lock: {e}")))?;
    let outbound =
        tidegate_server::outbound::Outbound::new(&config, clock.clone()).map_err(Failure::Usage)?;
    let service = Arc::new(Service::new(Arc::new(config), store, tailnet, clock));
    let sender = Arc::new(outbound.with_slack(service.clone()));
    let metrics = Arc::new(Metrics::default());
    let reconciler = Arc::new(
        Reconciler::new(service.clone())
            .fenced(lock.clone())
            .observed(metrics.clone())
            .notifying(sender),
    );
    let stop = Arc::new(tokio::sync::Notify::new());
    let reconcile = tokio::spawn(leader::run(
        reconciler,
        lock,
        metrics.clone(),
        // Changes made through other replicas wake nobody here: look every second (two
        // indexed queries when nothing is due).
        std::time::Duration::from_secs(1),
        stop.clone(),
    ));
    // The chain head, written to the log every `[audit] head_interval`.
    let every = std::time::Duration::from_secs(service.config().audit_head_interval.as_secs());
    let head_service = service.clone();
    let head_stop = stop.clone();
    let heads = tokio::spawn(async move {
        loop {
            match head_service.audit_head().await {
                Ok(head) => tracing::info!(
                    length = head.length,
                    hash = %head.hash,
                    "audit chain head"
                ),
                Err(e) => tracing::error!(error = %e, "cannot read the audit chain head"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = head_stop.notified() => return,
            }
        }
    });
    let app = tidegate_server::router(tidegate_server::AppState {
        service: service.clone(),
        metrics,
        demo_logins,
        machine: tidegate_server::machine::state(),
    });
    let http = tokio::spawn(async move {
        // The peer address decides whether `tailscale serve`'s identity headers are believed.
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    Ok(Running {
        url,
        stop,
        tasks: vec![reconcile, http, heads],
    })
}

pub async fn serve(config_path: &Path, listen: Option<String>) -> Result<(), Failure> {
    let mut config = load_config(config_path)?;
    if let Some(listen) = listen {
        config.listen = listen_address(&listen);
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&config.database).await?;
    let tailnet = tailnet_client(&config, clock.clone())?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}", config.listen)))?;
    let running = start(config, store, tailnet, clock, listener, Vec::new()).await?;
    println!("tidegate serving on {}", running.url);
    tracing::info!(url = %running.url, "serving");
    let _ = tokio::signal::ctrl_c().await;
    running.stop().await;
    Ok(())
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user; it is printed once and stored hashed.
    Create {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The user's login (user@domain).
        #[arg(long)]
        user: String,
        /// How long it lasts (e.g. 30d); without it, until revoked.
        #[arg(long)]
        ttl: Option<String>,
        /// What the token is for, shown by token list.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List your API tokens and web sessions (id, kind, description, created, last used,
    /// expires); with --config and --user, an operator lists anyone's.
    List {
        /// The configuration file (TOML).
        #[arg(long, requires = "user")]
        config: Option<PathBuf>,
        /// The user's login (user@domain).
        #[arg(long, requires = "config")]
        user: Option<String>,
    },
    /// Revoke one of your tokens (or sessions) by its id from `token list`, never its secret;
    /// with --config and --user, an operator revokes anyone's.
    Revoke {
        /// The token's id from token list (never its secret).
        id: String,
        /// The configuration file (TOML).
        #[arg(long, requires = "user")]
        config: Option<PathBuf>,
        /// The user's login (user@domain).
        #[arg(long, requires = "config")]
        user: Option<String>,
    },
}

fn print_tokens(tokens: &[serde_json::Value], json: bool) -> Result<(), Failure> {
    use crate::client_cmd::text;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "tokens": tokens }))
                .map_err(usage)?
        );
        return Ok(());
    }
    if tokens.is_empty() {
        println!("no tokens");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let or_never = |k: &str| {
                let v = text(t, k);
                if v.is_empty() { "never".to_owned() } else { v }
            };
            vec![
                text(t, "id"),
                text(t, "kind"),
                text(t, "description"),
                text(t, "created_at"),
                or_never("last_used_at"),
                or_never("expires_at"),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::table::render(
            &[
                "ID",
                "KIND",
                "DESCRIPTION",
                "CREATED",
                "LAST USED",
                "EXPIRES"
            ],
            &rows
        )
    );
    Ok(())
}

pub async fn token(
    command: TokenCommand,
    connection: &crate::client_cmd::Connection,
) -> Result<(), Failure> {
    use crate::client_cmd::Client;
    match command {
        TokenCommand::List { config, user } => match (config, user) {
            (Some(config), Some(user)) => {
                let config = load_config(&config)?;
                let store = open_store(&config.database).await?;
                let tokens = store.tokens_of(&user).await.map_err(usage)?;
                let public: Vec<serde_json::Value> =
                    tokens.iter().map(tidegate_server::tokens::public).collect();
                print_tokens(&public, connection.json)
            }
            _ => {
                let client = Client::new(connection)?;
                let v = client
                    .call(reqwest::Method::GET, "/api/tokens", None)
                    .await?;
                let tokens = v["tokens"].as_array().cloned().unwrap_or_default();
                print_tokens(&tokens, connection.json)
            }
        },
        TokenCommand::Revoke { id, config, user } => match (config, user) {
            (Some(config), Some(user)) => {
                let service = operator_service(&config).await?;
                let operator = service
                    .actor(
                        "operator (tidegate token revoke --config)",
                        tidegate_core::access::Via::Local,
                    )
                    .await
                    .map_err(usage)?;
                let token = service
                    .revoke_token(&operator, &user, &id)
                    .await
                    .map_err(|e| Failure::Rejected(e.to_string()))?;
                println!("revoked {id} ({}) of {user}", token.kind.as_str());
                Ok(())
            }
            _ => {
                let client = Client::new(connection)?;
                client
                    .call(reqwest::Method::DELETE, &format!("/api/tokens/{id}"), None)
                    .await?;
                println!("revoked {id}");
                Ok(())
            }
        },
        TokenCommand::Create {
            config,
            user,
            ttl,
            description,
        } => {
            let config = load_config(&config)?;
            if !user.contains('@') {
                return Err(Failure::Usage(format!(
                    "{user:?} is not a login (user@domain)"
                )));
            }
            // Tokens only for people who are users of the tailnet.
            let tailnet = tailnet_client(&config, Arc::new(SystemClock))?;
            let users = tailnet.users().await.map_err(|e| {
                Failure::Usage(format!(
                    "cannot read the tailnet's users to check {user}: {e}"
                ))
            })?;
            if !users.iter().any(|u| u.login_name == user) {
                return Err(Failure::Rejected(format!(
                    "{user} is not a user of the tailnet: no token created"
                )));
            }
            let ttl = ttl
                .map(|t| t.parse::<tidegate_core::Span>().map(|s| s.to_time()))
                .transpose()
                .map_err(usage)?;
            let store = open_store(&config.database).await?;
            let secret = tidegate_server::tokens::create(
                store.as_ref(),
                &user,
                tidegate_core::store::TokenKind::Api,
                ttl,
                &description,
                SystemClock.now(),
            )
            .await
            .map_err(usage)?;
            println!("{secret}");
            Ok(())
        }
    }
}

/// `tidegate adopt GROUP --config F`: an operator on the server adopts a managed group.
/// The service as an operator on the server uses it: the config's store and tailnet.
pub async fn operator_service(config_path: &Path) -> Result<Service, Failure> {
    let config = load_config(config_path)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&config.database).await?;
    let tailnet = tailnet_client(&config, clock.clone())?;
    Ok(Service::new(Arc::new(config), store, tailnet, clock))
}

pub async fn adopt(config_path: &Path, group: &str) -> Result<(), Failure> {
    let service = operator_service(config_path).await?;
    let operator = service
        .actor(
            "operator (tidegate adopt --config)",
            tidegate_core::access::Via::Local,
        )
        .await
        .map_err(usage)?;
    let admin = operator
        .admin()
        .ok_or_else(|| Failure::Usage("an operator is an admin".into()))?;
    let before = service.managed_groups().await.map_err(usage)?;
    let released = before
        .get(group)
        .map(|g| g.standing.iter().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    service
        .adopt(admin, group)
        .await
        .map_err(|e| Failure::Rejected(e.to_string()))?;
    if released.is_empty() {
        println!("adopted {group}: it had no standing members");
    } else {
        println!(
            "adopted {group}: {} no longer standing; from the next full pass they are drift",
            released.join(", ")
        );
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain: exit 1 and say where if any entry was edited or deleted.
    Verify {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// A manifest from `audit export` to check the log against (catches a cut-off tail).
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Export the log as JSON lines or CSV, and a manifest of hashes for auditors.
    Export {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// JSON lines or CSV.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
        format: String,
        /// Write here (and the manifest next to it as FILE.manifest.json); default stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

async fn all_entries(store: &dyn Store) -> Result<Vec<tidegate_core::audit::AuditEntry>, Failure> {
    let mut entries = Vec::new();
    loop {
        let after = entries
            .last()
            .map_or(0, |e: &tidegate_core::audit::AuditEntry| e.seq);
        let batch = store.audit(after, 5000).await.map_err(usage)?;
        if batch.is_empty() {
            return Ok(entries);
        }
        entries.extend(batch);
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

pub async fn audit(command: AuditCommand) -> Result<(), Failure> {
    match command {
        AuditCommand::Verify { config, manifest } => {
            let config = load_config(&config)?;
            let store = open_store(&config.database).await?;
            let entries = all_entries(store.as_ref()).await?;
            tidegate_core::audit::verify(&entries).map_err(|e| Failure::Rejected(e.to_string()))?;
            if let Some(path) = manifest {
                let text = std::fs::read_to_string(&path).map_err(usage)?;
                let m: serde_json::Value = serde_json::from_str(&text).map_err(usage)?;
                let count = m["entries"].as_i64().unwrap_or(-1);
                let last = m["last_hash"].as_str().unwrap_or("");
                let found = entries.iter().find(|e| e.seq == count);
                if found.map(|e| e.hash.as_str()) != Some(last) {
                    return Err(Failure::Rejected(format!(
                        "the log does not contain entry {count} with the manifest's hash: entries were removed or changed"
                    )));
                }
            }
            // The requests table must be what the log says (an edited state is found).
            let requests = store
                .requests(&tidegate_core::store::RequestFilter::default())
                .await
                .map_err(usage)?;
            let disagreements = tidegate_core::audit::check_requests(&entries, &requests);
            if let Some(first) = disagreements.first() {
                let more = disagreements.len() - 1;
                return Err(Failure::Rejected(format!(
                    "the requests table does not match the audit log: {first}{}",
                    if more > 0 {
                        format!(" (and {more} more)")
                    } else {
                        String::new()
                    }
                )));
            }
            println!(
                "audit log intact: {} entries, last hash {}; the requests table matches it ({} requests)",
                entries.len(),
                entries
                    .last()
                    .map_or(tidegate_core::audit::GENESIS, |e| e.hash.as_str()),
                requests.len()
            );
            Ok(())
        }
        AuditCommand::Export {
            config,
            format,
            output,
        } => {
            let config = load_config(&config)?;
            let store = open_store(&config.database).await?;
            let entries = all_entries(store.as_ref()).await?;
            tidegate_core::audit::verify(&entries)
                .map_err(|e| Failure::Rejected(format!("refusing to export a broken log: {e}")))?;
            let mut out = String::new();
            if format == "csv" {
                out.push_str("seq,at,actor,action,request,detail,prev_hash,hash\n");
                for e in &entries {
                    let row = [
                        e.seq.to_string(),
                        e.at.clone(),
                        e.actor.clone(),
                        e.action.clone(),
                        e.request.clone().unwrap_or_default(),
                        e.detail.clone(),
                        e.prev_hash.clone(),
                        e.hash.clone(),
                    ];
                    out.push_str(
                        &row.iter()
                            .map(|f| csv_field(f))
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                    out.push('\n');
                }
            } else {
                for e in &entries {
                    out.push_str(&serde_json::to_string(e).map_err(usage)?);
                    out.push('\n');
                }
            }
            let digest = tidegate_server::tokens::hash(&out);
            let manifest = serde_json::json!({
                "format": format,
                "entries": entries.len(),
                "first_hash": entries.first().map(|e| e.hash.clone()),
                "last_hash": entries.last().map(|e| e.hash.clone()),
                "sha256": digest,
                "chain": "each entry's hash = SHA-256 over its length-prefixed fields and the previous hash (first: 64 zeros)",
            });
            match output {
                Some(path) => {
                    std::fs::write(&path, &out).map_err(usage)?;
                    let manifest_path = PathBuf::from(format!("{}.manifest.json", path.display()));
                    std::fs::write(
                        &manifest_path,
                        serde_json::to_string_pretty(&manifest).map_err(usage)?,
                    )
                    .map_err(usage)?;
                    eprintln!(
                        "wrote {} entries to {} and the manifest to {}",
                        entries.len(),
                        path.display(),
                        manifest_path.display()
                    );
                }
                None => {
                    let mut stdout = std::io::stdout();
                    stdout.write_all(out.as_bytes()).map_err(usage)?;
                    eprintln!("{}", serde_json::to_string(&manifest).map_err(usage)?);
                }
            }
            Ok(())
        }
    }
}

/// The demo's tailnet, policy and entitlements.
const DEMO_STATE: &str = include_str!("../../../examples/emulator-state.json");
const DEMO_CONFIG: &str = include_str!("../../../examples/tidegate.toml");

/// Runs everything locally: the emulator with the example tailnet, the server on SQLite in a
/// temporary directory, and a token per example user.
/// `--listen` as given, or a bare port on this machine's loopback.
fn listen_address(listen: &str) -> String {
    match listen.parse::<u16>() {
        Ok(port) => format!("127.0.0.1:{port}"),
        Err(_) => listen.to_owned(),
    }
}

pub async fn demo(listen: &str, for_seconds: Option<u64>) -> Result<(), Failure> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = emulator::State::from_json(DEMO_STATE, clock.now()).map_err(usage)?;
    let token = state
        .to_json()
        .get("apiTokens")
        .and_then(|t| t.get(0))
        .and_then(|t| t.get("token"))
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .ok_or_else(|| Failure::Usage("the demo tailnet has no API token".into()))?;
    let logins: Vec<String> = state.users.iter().map(|u| u.login_name.clone()).collect();
    let emu = emulator::start(state, emulator::Options::default())
        .await
        .map_err(usage)?;
    let dir = std::env::temp_dir().join(format!("tidegate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(usage)?;
    let database = format!("sqlite://{}", dir.join("tidegate.db").display());
    let text = DEMO_CONFIG
        .replace("https://api.tailscale.com", emu.url())
        .replace("sqlite://tidegate.db", &database)
        .replace(
            "oauth_client_id = \"k123\"\noauth_client_secret_file = \"/run/secrets/tailscale-oauth\"",
            &format!("api_token = \"{token}\""),
        );
    let config = Config::parse(&text, "demo config").map_err(usage)?;
    let store = open_store(&config.database).await?;
    let tailnet = tailnet_client(&config, clock.clone())?;
    let listen = listen_address(listen);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| Failure::Usage(format!("cannot listen on {listen}: {e}")))?;
    let running = start(
        config,
        store.clone(),
        tailnet,
        clock.clone(),
        listener,
        logins.clone(),
    )
    .await?;
    println!("tidegate demo");
    println!("  server:   {}", running.url);
    println!(
        "  web UI:   {}/login  (demo: sign in as any example user)",
        running.url
    );
    println!("  emulated tailnet (Tailscale API v2): {}", emu.url());
    println!("  database: {database}");
    println!();
    println!("Tokens for the example users (alice and bob are SREs; carol and dave engineers):");
    for login in &logins {
        let secret = tidegate_server::tokens::create(
            store.as_ref(),
            login,
            tidegate_core::store::TokenKind::Api,
            None,
            "demo",
            clock.now(),
        )
        .await
        .map_err(usage)?;
        println!("  export TIDEGATE_TOKEN={secret}   # {login}");
    }
    println!();
    println!(
        "Try, with TIDEGATE_SERVER={} and dave's token:",
        running.url
    );
    println!("  tidegate entitlements");
    println!("  tidegate request prod-ssh --for 1h --reason INC-4211");
    println!("then with alice's token:   tidegate list --pending   and   tidegate approve <ID>");
    println!(
        "and watch group:prod-access change (alice's token):  tidegate access --group group:prod-access"
    );
    match for_seconds {
        Some(s) => tokio::time::sleep(std::time::Duration::from_secs(s)).await,
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    running.stop().await;
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
