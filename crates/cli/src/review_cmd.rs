//! `tidegate review ...` (an API client, like `request`) and `tidegate evidence` (an operator
//! command on the config's database): access reviews and the files auditors take away.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Failure;
use crate::client_cmd::{Client, Connection, Times, printable, text};
use crate::server_cmd::operator_service;
use crate::table;

#[derive(Subcommand)]
pub enum ReviewCommand {
    /// Start a campaign (admins): its population is frozen now, from a fresh sync.
    Create {
        /// The campaign's name, e.g. "Q4 prod access".
        name: String,
        /// What to review: group:NAME, roles, critical:NAME, keys or entitlement:NAME;
        /// repeatable, or several after one --scope.
        #[arg(long, required = true, num_args = 1..)]
        scope: Vec<String>,
        /// When it is due, from now (e.g. 14d).
        #[arg(long, default_value = "14d")]
        due: String,
        /// Who reviews people without a manager in the directory (a login or group:NAME).
        #[arg(long)]
        reviewer: Option<String>,
        /// What happens to undecided items at the due date.
        #[arg(long, default_value = "keep", value_parser = ["keep", "revoke"])]
        on_due: String,
        /// A keep needs a reason too (a revoke always does).
        #[arg(long)]
        keep_reason_required: bool,
    },
    /// Campaigns you may see, with their progress.
    List,
    /// One campaign with its items (yours, unless you are an admin or auditor).
    Show {
        /// The campaign's id.
        id: String,
    },
    /// Your undecided items in open campaigns.
    Mine,
    /// Decide items: keep or revoke, with a reason.
    Decide {
        /// The campaign's id.
        id: String,
        /// The items' ids (several for a bulk decision with one reason).
        #[arg(required = true)]
        items: Vec<String>,
        /// Keep the access.
        #[arg(long, conflicts_with = "revoke", required_unless_present = "revoke")]
        keep: bool,
        /// Take the access away (tidegate removes it and verifies).
        #[arg(long)]
        revoke: bool,
        /// Why (required for revoke).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Close a campaign (admins): every item decided and revocation verified, or past due.
    Close {
        /// The campaign's id.
        id: String,
    },
    /// Write the evidence: report.html, items.csv, items.json and manifest.json.
    Export {
        /// The campaign's id.
        id: String,
        /// Which files: html, csv, json (each with manifest.json) or all.
        #[arg(long, default_value = "all", value_parser = ["html", "csv", "json", "all"])]
        format: String,
        /// The directory to write into (made if missing).
        #[arg(long)]
        output: PathBuf,
    },
}

pub async fn run(connection: &Connection, command: ReviewCommand) -> Result<(), Failure> {
    let client = Client::new(connection)?;
    let times = Times::new(connection);
    let result = match command {
        ReviewCommand::Create {
            name,
            scope,
            due,
            reviewer,
            on_due,
            keep_reason_required,
        } => {
            let v = client
                .call(
                    Method::POST,
                    "/api/reviews",
                    Some(json!({
                        "name": name, "scopes": scope, "due": due, "reviewer": reviewer,
                        "on_due": on_due, "keep_reason_required": keep_reason_required,
                    })),
                )
                .await?;
            if !connection.json {
                print_campaign(&v, times);
                return Ok(());
            }
            v
        }
        ReviewCommand::List => {
            let v = client.call(Method::GET, "/api/reviews", None).await?;
            if !connection.json {
                let rows: Vec<Vec<String>> = v["campaigns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        vec![
                            text(c, "id"),
                            text(c, "name"),
                            text(c, "state"),
                            progress(c),
                            times.of(c, "due_at"),
                            text(c, "created_by"),
                        ]
                    })
                    .collect();
                print_rows(
                    &["ID", "NAME", "STATE", "DECIDED", "DUE", "STARTED BY"],
                    &rows,
                    "no access reviews",
                );
                return Ok(());
            }
            v
        }
        ReviewCommand::Show { id } => {
            let v = client
                .call(Method::GET, &format!("/api/reviews/{}", encode(&id)), None)
                .await?;
            if !connection.json {
                print_campaign(&v, times);
                return Ok(());
            }
            v
        }
        ReviewCommand::Mine => {
            let v = client.call(Method::GET, "/api/reviews/mine", None).await?;
            if !connection.json {
                let rows: Vec<Vec<String>> = v["campaigns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|c| {
                        let id = text(&c["campaign"], "id");
                        let due = times.of(&c["campaign"], "due_at");
                        c["items"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .map(move |i| {
                                vec![
                                    id.clone(),
                                    text(&i, "id"),
                                    text(&i, "subject"),
                                    text(&i, "access"),
                                    due.clone(),
                                ]
                            })
                    })
                    .collect();
                print_rows(
                    &["CAMPAIGN", "ITEM", "PERSON", "ACCESS", "DUE"],
                    &rows,
                    "nothing waits for your review",
                );
                return Ok(());
            }
            v
        }
        ReviewCommand::Decide {
            id,
            items,
            keep,
            revoke,
            reason,
        } => {
            let decision = if revoke && !keep { "revoke" } else { "keep" };
            let v = client
                .call(
                    Method::POST,
                    &format!("/api/reviews/{}/decisions", encode(&id)),
                    Some(json!({"items": items, "decision": decision, "reason": reason})),
                )
                .await?;
            if !connection.json {
                for i in v["items"].as_array().into_iter().flatten() {
                    println!(
                        "{} {}: {} ({})",
                        text(i, "id"),
                        text(i, "decision"),
                        text(i, "subject"),
                        text(i, "access")
                    );
                }
                return Ok(());
            }
            v
        }
        ReviewCommand::Close { id } => {
            let v = client
                .call(
                    Method::POST,
                    &format!("/api/reviews/{}/close", encode(&id)),
                    None,
                )
                .await?;
            if !connection.json {
                print_campaign(&v, times);
                return Ok(());
            }
            v
        }
        ReviewCommand::Export { id, format, output } => {
            let v = client
                .call(
                    Method::GET,
                    &format!("/api/reviews/{}/export?format={format}", encode(&id)),
                    None,
                )
                .await?;
            let written = write_files(&v["files"], &output)?;
            if !connection.json {
                for (name, bytes) in &written {
                    println!("{}  {bytes} bytes", output.join(name).display());
                }
                return Ok(());
            }
            json!({ "output": output, "files": written.iter().map(|(n, _)| n).collect::<Vec<_>>() })
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&result).unwrap_or_default()
    );
    Ok(())
}

/// Writes `{name: text}` into `dir`; the names and sizes written.
fn write_files(files: &Value, dir: &Path) -> Result<Vec<(String, usize)>, Failure> {
    let files = files
        .as_object()
        .ok_or_else(|| Failure::Usage("the server sent no files".into()))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (name, text) in files {
        // Names come from the server: only plain file names are written.
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Failure::Usage(format!("refusing to write {name:?}")));
        }
        let text = text.as_str().unwrap_or_default();
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))?;
        written.push((name.clone(), text.len()));
    }
    Ok(written)
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn progress(c: &Value) -> String {
    let p = &c["progress"];
    format!(
        "{}/{}{}",
        p["decided"],
        p["items"],
        match p["revocations_pending"].as_u64() {
            Some(n) if n > 0 => format!(" ({n} revocations pending)"),
            _ => String::new(),
        }
    )
}

fn print_rows(headers: &[&str], rows: &[Vec<String>], empty: &str) {
    if rows.is_empty() {
        println!("{empty}");
    } else {
        print!("{}", table::render(headers, rows));
    }
}

fn print_campaign(v: &Value, times: Times) {
    println!(
        "{}  {}  {}",
        text(v, "id"),
        text(v, "state"),
        text(v, "name")
    );
    let scopes: Vec<String> = v["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| printable(s.as_str().unwrap_or_default()))
        .collect();
    println!("  scope:     {}", scopes.join(", "));
    println!(
        "  started:   {} by {}",
        times.of(v, "created_at"),
        text(v, "created_by")
    );
    println!(
        "  due:       {} (undecided items are then {})",
        times.of(v, "due_at"),
        if text(v, "on_due") == "revoke" {
            "revoked"
        } else {
            "kept"
        }
    );
    println!("  decided:   {}", progress(v));
    if !text(v, "close_note").is_empty() {
        println!(
            "  closed:    {} ({})",
            times.of(v, "closed_at"),
            text(v, "close_note")
        );
    }
    let rows: Vec<Vec<String>> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let verified = if text(i, "revocation_verified_at").is_empty() {
                String::new()
            } else {
                format!("removed {}", times.of(i, "revocation_verified_at"))
            };
            vec![
                text(i, "id"),
                text(i, "subject"),
                text(i, "access"),
                text(i, "reviewer"),
                match i["decision"].as_str() {
                    Some(d) => d.to_owned(),
                    None => "-".to_owned(),
                },
                verified,
            ]
        })
        .collect();
    print_rows(
        &[
            "ITEM",
            "PERSON",
            "ACCESS",
            "REVIEWER",
            "DECISION",
            "REVOCATION",
        ],
        &rows,
        "  no items",
    );
}

#[derive(Args)]
pub struct EvidenceArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// The period's start: YYYY-MM-DD or RFC 3339.
    #[arg(long)]
    from: String,
    /// The period's end (exclusive): YYYY-MM-DD or RFC 3339.
    #[arg(long)]
    to: String,
    /// Which files: html, csv, json (each with manifest.json) or all.
    #[arg(long, default_value = "all", value_parser = ["html", "csv", "json", "all"])]
    format: String,
    /// The directory to write into (made if missing).
    #[arg(long)]
    output: PathBuf,
}

/// `tidegate evidence`: every grant, check run and campaign of a period, as files.
pub async fn evidence(args: EvidenceArgs) -> Result<(), Failure> {
    let date = |flag: &str, text: &str| {
        tidegate_core::people::parse_date(text).ok_or_else(|| {
            Failure::Usage(format!(
                "--{flag} {text:?}: write YYYY-MM-DD or an RFC 3339 time"
            ))
        })
    };
    let (from, to) = (date("from", &args.from)?, date("to", &args.to)?);
    let format: tidegate_server::evidence::Format = args.format.parse().map_err(Failure::Usage)?;
    let service = operator_service(&args.config).await?;
    let actor = service
        .actor("operator", tidegate_core::access::Via::Local)
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let auditor = actor
        .auditor()
        .ok_or_else(|| Failure::Usage("the operator is not an auditor".into()))?;
    let evidence = service
        .evidence(auditor, from, to)
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let head = service
        .audit_head()
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let bundle = tidegate_server::evidence::period_bundle(&evidence, &head, format);
    let files = serde_json::to_value(&bundle.files).unwrap_or_default();
    for (name, bytes) in write_files(&files, &args.output)? {
        println!("{}  {bytes} bytes", args.output.join(name).display());
    }
    println!(
        "{} grants, {} check runs, {} campaigns",
        evidence.grants.len(),
        evidence.check_runs.len(),
        evidence.campaigns.len()
    );
    Ok(())
}
