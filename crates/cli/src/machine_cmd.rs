//! `tidegate machine authkey`: for CI. Trades the job's OIDC token for an auth key from a
//! machine entitlement and prints the key, so a workflow step is
//! `tailscale up --auth-key=$(tidegate machine authkey ...)`.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::Value;

use crate::Failure;

#[derive(Subcommand)]
pub enum MachineCommand {
    /// Get an auth key for this CI job from a machine entitlement; prints the key.
    Authkey {
        /// The tidegate server.
        #[arg(long, env = "TIDEGATE_SERVER")]
        server: String,
        /// The machine entitlement (`[[machine]] name`).
        #[arg(long)]
        entitlement: String,
        /// A file holding the job's OIDC token.
        #[arg(long, conflicts_with = "github_actions")]
        id_token_file: Option<PathBuf>,
        /// Ask GitHub Actions for the job's token (the job needs `permissions: id-token:
        /// write`).
        #[arg(long)]
        github_actions: bool,
        /// The audience to ask GitHub Actions for: the machine entitlement's `audience`.
        #[arg(long, default_value = "tidegate", requires = "github_actions")]
        audience: String,
        /// Print the whole answer (key, id, expires_at, tags) as JSON.
        #[arg(long)]
        json: bool,
        /// Where a person must approve the key: how long to wait for them, in seconds.
        #[arg(long, default_value_t = 3600)]
        wait_seconds: u64,
    },
    /// The nodes of machine entitlements (devices carrying exactly their tags, and whether they
    /// outstayed node_ttl), and tagged devices whose tags nothing explains (no machine
    /// entitlement mints them, no tagOwner matches their user).
    Nodes {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        /// First delete the ephemeral nodes still there after their node_ttl (as the server
        /// does every minute), audited.
        #[arg(long)]
        clean: bool,
    },
}

pub async fn run(command: MachineCommand) -> Result<(), Failure> {
    match command {
        MachineCommand::Nodes {
            config,
            json,
            clean,
        } => nodes(&config, json, clean).await,
        MachineCommand::Authkey {
            server,
            entitlement,
            id_token_file,
            github_actions,
            audience,
            json,
            wait_seconds,
        } => {
            let http = reqwest::Client::new();
            if id_token_file.is_none() && !github_actions {
                return Err(Failure::Usage(
                    "give the job's token: --id-token-file F or --github-actions".into(),
                ));
            }
            // Read again for every poll: job tokens live minutes, an approval may take longer
            // (and platforms rotate the file).
            let job_token = || async {
                match &id_token_file {
                    Some(path) => std::fs::read_to_string(path)
                        .map(|t| t.trim().to_owned())
                        .map_err(|e| Failure::Usage(format!("{}: {e}", path.display()))),
                    None => github_token(&http, &audience).await,
                }
            };
            let token = job_token().await?;
            let url = format!("{}/api/machine/authkey", server.trim_end_matches('/'));
            let answer = http
                .post(&url)
                .bearer_auth(&token)
                .json(&serde_json::json!({"entitlement": entitlement}))
                .send()
                .await
                .map_err(|e| Failure::Usage(format!("cannot reach {url}: {e}")))?;
            let (mut status, mut body) = read(answer, &url).await?;
            // A person must approve it: poll with the same token until the key comes.
            if status == reqwest::StatusCode::ACCEPTED {
                let id = body["request"].as_str().unwrap_or_default().to_owned();
                let poll = format!("{}/api/machine/requests/{id}", server.trim_end_matches('/'));
                eprintln!("tidegate: {id} waits for approval (tidegate approve {id})");
                let deadline =
                    std::time::Instant::now() + std::time::Duration::from_secs(wait_seconds);
                while status == reqwest::StatusCode::ACCEPTED {
                    if std::time::Instant::now() > deadline {
                        return Err(Failure::Rejected(format!(
                            "tidegate: {id} was not approved within {wait_seconds} s"
                        )));
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    let token = job_token().await?;
                    let answer = http
                        .get(&poll)
                        .bearer_auth(&token)
                        .send()
                        .await
                        .map_err(|e| Failure::Usage(format!("cannot reach {poll}: {e}")))?;
                    (status, body) = read(answer, &poll).await?;
                }
            }
            if !status.is_success() {
                let why = body["error"].as_str().unwrap_or("no reason given");
                return Err(Failure::Rejected(format!(
                    "tidegate: refused ({status}): {why}"
                )));
            }
            if json {
                println!("{body}");
            } else {
                let key = body["key"]
                    .as_str()
                    .ok_or_else(|| Failure::Usage(format!("{url} answered without a key")))?;
                println!("{key}");
            }
            Ok(())
        }
    }
}

/// The job's OIDC token from GitHub Actions, for `audience`.
async fn github_token(http: &reqwest::Client, audience: &str) -> Result<String, Failure> {
    let env = |name: &str| {
        std::env::var(name).map_err(|_| {
            Failure::Usage(format!(
                "{name} is not set: is this a GitHub Actions job with `permissions: id-token: write`?"
            ))
        })
    };
    let url = env("ACTIONS_ID_TOKEN_REQUEST_URL")?;
    let bearer = env("ACTIONS_ID_TOKEN_REQUEST_TOKEN")?;
    let mut url = reqwest::Url::parse(&url)
        .map_err(|e| Failure::Usage(format!("ACTIONS_ID_TOKEN_REQUEST_URL {url:?}: {e}")))?;
    url.query_pairs_mut().append_pair("audience", audience);
    let answer: Value = http
        .get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| {
            Failure::Usage(format!(
                "cannot get the job's token from GitHub Actions: {e}"
            ))
        })?
        .json()
        .await
        .map_err(|e| Failure::Usage(format!("GitHub Actions answered without JSON: {e}")))?;
    answer["value"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure::Usage("GitHub Actions answered without a token".into()))
}

async fn read(
    answer: reqwest::Response,
    url: &str,
) -> Result<(reqwest::StatusCode, Value), Failure> {
    let status = answer.status();
    let body = answer
        .json()
        .await
        .map_err(|e| Failure::Usage(format!("{url} answered {status} without JSON: {e}")))?;
    Ok((status, body))
}

async fn nodes(config: &std::path::Path, json: bool, clean: bool) -> Result<(), Failure> {
    let service = crate::server_cmd::operator_service(config).await?;
    if clean {
        let deleted = service
            .clean_machine_nodes()
            .await
            .map_err(|e| Failure::Usage(format!("cannot clean machine nodes: {e}")))?;
        if !json {
            for host in &deleted {
                println!("deleted {host}: an ephemeral machine node past its node_ttl");
            }
        }
    }
    let operator = service
        .actor(
            "operator (tidegate machine nodes --config)",
            tidegate_core::access::Via::Local,
        )
        .await
        .map_err(|e| Failure::Usage(format!("cannot read the tailnet: {e}")))?;
    let auditor = operator
        .auditor()
        .ok_or_else(|| Failure::Usage("an operator is an auditor".into()))?;
    let report = service
        .machine_nodes(auditor)
        .await
        .map_err(|e| Failure::Usage(format!("cannot read the tailnet: {e}")))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .machine_nodes
        .iter()
        .map(|n| {
            vec![
                n.hostname.clone(),
                n.entitlement.clone(),
                n.tags.join(","),
                n.created.clone(),
                if n.over_node_ttl { "over node_ttl" } else { "" }.to_owned(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no machine nodes");
    } else {
        print!(
            "{}",
            crate::table::render(&["HOST", "MACHINE", "TAGS", "CREATED", ""], &rows)
        );
    }
    if report.unexplained.is_empty() {
        println!("every tagged device's tags are explained");
    } else {
        let rows: Vec<Vec<String>> = report
            .unexplained
            .iter()
            .map(|u| vec![u.hostname.clone(), u.user.clone(), u.tags.join(",")])
            .collect();
        println!("tagged devices whose tags nothing explains:");
        print!(
            "{}",
            crate::table::render(&["HOST", "CREATED BY", "UNEXPLAINED TAGS"], &rows)
        );
    }
    Ok(())
}
