//! `tidegate sync`, `tidegate inventory ...` and `tidegate check`: the tailnet's inventory and
//! the compliance checks, run by an operator against the config's tailnet and database.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::Failure;
use crate::client_cmd::printable;
use crate::server_cmd::operator_service;
use crate::table;

#[derive(Args)]
pub struct SyncArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Print the counts as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum InventoryCommand {
    /// Users: role, status, type, last seen.
    Users(InventoryArgs),
    /// Devices: owner, tags, last seen, key expiry.
    Devices(InventoryArgs),
    /// Keys: auth keys, API tokens, OAuth clients, federated identities.
    Keys(InventoryArgs),
    /// Pending user invites.
    Invites(InventoryArgs),
    /// The policy's groups and their members.
    Groups(InventoryArgs),
    /// Every acls, grants and ssh rule, with its line.
    Rules(InventoryArgs),
    /// What changed between the last two snapshots.
    Diff(InventoryArgs),
}

#[derive(Args)]
pub struct InventoryArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure::Usage(e.to_string())
}

/// A spinner on a terminal while the inventory is read (nothing when piped).
fn progress() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar.set_message("reading the tailnet's inventory");
    bar
}

pub async fn sync(args: SyncArgs) -> Result<(), Failure> {
    let service = operator_service(&args.config).await?;
    let bar = progress();
    let report = {
        let bar = bar.clone();
        service
            .sync_inventory(&move |step: &str| bar.set_message(step.to_owned()))
            .await
            .map_err(usage)?
    };
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(usage)?);
        return Ok(());
    }
    println!(
        "{} users, {} devices, {} invites, {} keys, {} groups, {} rules: {}",
        report.users,
        report.devices,
        report.invites,
        report.keys,
        report.groups,
        report.rules,
        if report.unchanged {
            "unchanged".to_owned()
        } else {
            format!("{} changes", report.changes)
        }
    );
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

pub async fn inventory(command: InventoryCommand) -> Result<(), Failure> {
    let (args, kind) = match &command {
        InventoryCommand::Users(a) => (a, "users"),
        InventoryCommand::Devices(a) => (a, "devices"),
        InventoryCommand::Keys(a) => (a, "keys"),
        InventoryCommand::Invites(a) => (a, "invites"),
        InventoryCommand::Groups(a) => (a, "groups"),
        InventoryCommand::Rules(a) => (a, "rules"),
        InventoryCommand::Diff(a) => (a, "diff"),
    };
    let service = operator_service(&args.config).await?;
    if kind == "diff" {
        let record = service.inventory_changes().await.map_err(usage)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&record).map_err(usage)?);
            return Ok(());
        }
        let rows: Vec<Vec<String>> = record
            .changes
            .iter()
            .map(|c| {
                vec![
                    c.kind.clone(),
                    printable(&c.subject),
                    c.change.clone(),
                    c.fields
                        .iter()
                        .map(|(k, (old, new))| printable(&format!("{k}: {old} → {new}")))
                        .collect::<Vec<_>>()
                        .join("; "),
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("no changes recorded");
        } else {
            print!(
                "{}",
                table::render(&["KIND", "SUBJECT", "CHANGE", "FIELDS"], &rows)
            );
        }
        return Ok(());
    }
    let snapshot = service.inventory_or_sync().await.map_err(usage)?;
    let value = serde_json::to_value(&snapshot).map_err(usage)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ kind: value[kind] })).map_err(usage)?
        );
        return Ok(());
    }
    let cell = |v: &Value| printable(&tidegate_core::inventory::field_text(v));
    let (header, rows): (Vec<&str>, Vec<Vec<String>>) = match kind {
        "groups" => (
            vec!["GROUP", "MEMBERS"],
            snapshot
                .groups
                .iter()
                .map(|(g, m)| vec![printable(g), printable(&m.join(" "))])
                .collect(),
        ),
        "rules" => (
            vec!["RULE", "SRC", "DST", "WHAT"],
            snapshot
                .rules
                .iter()
                .map(|r| {
                    vec![
                        r.label(),
                        printable(&r.src.join(" ")),
                        printable(&r.dst.join(" ")),
                        printable(&r.what.join(" ")),
                    ]
                })
                .collect(),
        ),
        _ => {
            let columns: &[&str] = match kind {
                "users" => &["login", "role", "status", "kind", "last_seen"],
                "devices" => &["name", "owner", "tags", "last_seen", "key_expiry_disabled"],
                "keys" => &["id", "kind", "description", "expires", "tags"],
                _ => &["email", "role", "last_email_sent_at"],
            };
            (
                columns.to_vec(),
                value[kind]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|item| columns.iter().map(|c| cell(&item[*c])).collect())
                    .collect(),
            )
        }
    };
    let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    if rows.is_empty() {
        println!("no {kind}");
    } else {
        print!("{}", table::render(&header, &rows));
    }
    Ok(())
}

/// `tidegate check`: syncs, runs every check, prints them; exit 0 when all pass, 1 when any
/// fails, 2 on error.
pub async fn check(args: SyncArgs) -> Result<(), Failure> {
    let service = operator_service(&args.config).await?;
    let bar = progress();
    let run = service.run_checks().await.map_err(usage);
    bar.finish_and_clear();
    let run = run?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&run).map_err(usage)?);
    } else {
        for c in &run.checks {
            println!("{:<4}  {:<27} {}", c.status.to_uppercase(), c.id, c.title);
            for f in &c.findings {
                println!(
                    "      {}: {}{}",
                    printable(&f.subject),
                    printable(&f.detail),
                    if f.late { " (late)" } else { "" }
                );
            }
        }
    }
    if run.passed() {
        Ok(())
    } else {
        let failed: Vec<&str> = run
            .checks
            .iter()
            .filter(|c| c.status == "fail")
            .map(|c| c.id.as_str())
            .collect();
        Err(Failure::Rejected(if args.json {
            String::new()
        } else {
            format!("failed: {}", failed.join(", "))
        }))
    }
}
