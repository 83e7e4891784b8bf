//! The files an auditor takes away: an access review's report (`report.html`, one
//! self-contained file that prints well), its items (`items.csv`, `items.json`), and the
//! period evidence of `tidegate evidence`; each set with a `manifest.json` naming every file's
//! SHA-256 and the audit chain's head when it was made.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tidegate_core::evidence::Evidence;
use tidegate_core::review::{CampaignView, OnDue, Verdict};
use tidegate_core::service::AuditHead;

/// Which files an export holds (besides `manifest.json`, always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Csv,
    Json,
    All,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(text: &str) -> Result<Format, String> {
        match text {
            "html" => Ok(Format::Html),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "all" | "" => Ok(Format::All),
            other => Err(format!("format {other:?}: write html, csv, json or all")),
        }
    }
}

impl Format {
    fn wants(self, other: Format) -> bool {
        self == Format::All || self == other
    }
}

/// File name → content, with `manifest.json` last written over the others.
pub struct Bundle {
    pub files: BTreeMap<String, String>,
}

impl Bundle {
    /// Adds `manifest.json`: each file's SHA-256, the chain head, when, by which version.
    fn seal(mut files: BTreeMap<String, String>, head: &AuditHead, extra: Value) -> Bundle {
        let hashes: BTreeMap<&String, String> = files
            .iter()
            .map(|(name, text)| (name, hex::encode(Sha256::digest(text.as_bytes()))))
            .collect();
        let mut manifest = json!({
            "files": hashes,
            "audit_chain_head": head.hash,
            "audit_length": head.length,
            "generated_at": head.at,
            "tool_version": env!("CARGO_PKG_VERSION"),
        });
        if let (Some(m), Value::Object(extra)) = (manifest.as_object_mut(), extra) {
            m.extend(extra);
        }
        let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
        files.insert("manifest.json".into(), text);
        Bundle { files }
    }
}

/// An access review's export.
pub fn review_bundle(v: &CampaignView, head: &AuditHead, format: Format) -> Bundle {
    let mut files = BTreeMap::new();
    if format.wants(Format::Html) {
        files.insert("report.html".into(), review_report(v, head).into_string());
    }
    if format.wants(Format::Csv) {
        files.insert("items.csv".into(), tidegate_core::review::items_csv(v));
    }
    if format.wants(Format::Json) {
        // Compact: a large campaign's items are tens of megabytes pretty-printed.
        files.insert(
            "items.json".into(),
            serde_json::to_string(v).unwrap_or_default(),
        );
    }
    Bundle::seal(files, head, json!({"campaign": v.campaign.id}))
}

/// The period evidence of `tidegate evidence`.
pub fn period_bundle(e: &Evidence, head: &AuditHead, format: Format) -> Bundle {
    let mut files = BTreeMap::new();
    if format.wants(Format::Html) {
        files.insert("report.html".into(), period_report(e, head).into_string());
    }
    if format.wants(Format::Csv) {
        files.insert(
            "grants.csv".into(),
            tidegate_core::evidence::grants_csv(&e.grants),
        );
    }
    if format.wants(Format::Json) {
        let pretty = |v: Value| serde_json::to_string_pretty(&v).unwrap_or_default();
        files.insert("grants.json".into(), pretty(json!(e.grants)));
        files.insert("checks.json".into(), pretty(json!(e.check_runs)));
        let campaigns: Vec<Value> = e.campaigns.iter().map(|c| json!(c)).collect();
        files.insert("campaigns.json".into(), pretty(json!(campaigns)));
    }
    Bundle::seal(files, head, json!({"from": e.from, "to": e.to}))
}

/// Screen and print: A4 landscape, table headers repeated on each page, rows never split.
const STYLE: &str = "
body{font:13px/1.45 system-ui,sans-serif;color:#111;margin:2em;max-width:100%}
h1{font-size:1.6em;margin:0 0 .2em}h2{font-size:1.2em;margin:1.6em 0 .4em;border-bottom:1px solid #999}
table{border-collapse:collapse;width:100%;margin:.4em 0}
th,td{border:1px solid #bbb;padding:.25em .45em;text-align:left;vertical-align:top}
th{background:#eee}dl{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em}
dt{font-weight:600}dd{margin:0}.keep{color:#064}.revoke{color:#a00}.muted{color:#555}
code{font-size:.92em;word-break:break-all}
@page{size:A4 landscape;margin:12mm}
@media print{body{margin:0;font-size:10px}thead{display:table-header-group}tr{break-inside:avoid}h2{break-after:avoid}}
";

fn frame(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

fn time(t: Option<time::OffsetDateTime>) -> String {
    t.map(tidegate_core::time_text).unwrap_or_default()
}

fn review_report(v: &CampaignView, head: &AuditHead) -> Markup {
    let c = &v.campaign;
    let p = &v.progress;
    let rule = match c.on_due {
        OnDue::Keep => "kept",
        OnDue::Revoke => "revoked",
    };
    frame(
        &format!("Access review: {}", c.name),
        html! {
            h1 { "Access review: " (c.name) }
            p.muted { "Campaign " code { (c.id) } " — " (c.state) }
            h2 { "Campaign" }
            dl {
                dt { "Scope" } dd { (c.scopes.join(", ")) }
                dt { "Started" } dd { (tidegate_core::time_text(c.created_at)) " by " (c.created_by) }
                dt { "Due" } dd { (tidegate_core::time_text(c.due_at)) }
                dt { "At the due date" } dd { "undecided items are " (rule) }
                dt { "Reasons" } dd { "required for revoke" @if c.keep_reason_required { " and for keep" } }
                @if let Some(r) = &c.reviewer { dt { "Fallback reviewer" } dd { (r) } }
                dt { "Closed" } dd {
                    @match c.closed_at {
                        Some(t) => { (tidegate_core::time_text(t)) ": " (c.close_note.clone().unwrap_or_default()) },
                        None => { "open" },
                    }
                }
                @if let Some(h) = &c.audit_chain_head_at_close { dt { "Audit chain head at close" } dd { code { (h) } } }
            }
            h2 { "How the population was generated" }
            dl {
                dt { "Tool" } dd { "tidegate " (c.generated.tool_version) }
                dt { "Tailnet" } dd { (c.generated.tailnet) }
                dt { "Inventory read" } dd { (c.generated.inventory_taken_at) " (a fresh sync when the campaign started)" }
                dt { "Started by" } dd { (c.generated.started_by) " at " (tidegate_core::time_text(c.generated.at)) }
                dt { "Items" } dd { (c.item_count) }
            }
            h2 { "Outcome" }
            dl {
                dt { "Decided" } dd { (p.decided) " of " (p.items) }
                dt { "Kept" } dd { (p.kept) }
                dt { "Revoked" } dd { (p.revoked) " (" (p.revocations_verified) " verified removed, " (p.revocations_pending) " pending)" }
            }
            h2 { "Reviewers" }
            table {
                thead { tr { th { "Reviewer" } th { "Items" } th { "Undecided" } th { "Late" } } }
                tbody {
                    @for r in &v.reviewers {
                        tr { td { (r.reviewer) } td { (r.items) } td { (r.undecided) } td { @if r.late { "late" } } }
                    }
                }
            }
            h2 { "Items" }
            table {
                thead { tr {
                    th { "Item" } th { "Person" } th { "Access" } th { "Reviewer" } th { "Decision" }
                    th { "Reason" } th { "Decided by" } th { "Decided at" } th { "Removal verified" }
                } }
                tbody {
                    @for i in &v.items {
                        tr {
                            td { (i.id) } td { (i.subject) } td { (i.access) } td { (i.reviewer) }
                            td class=[i.decision.map(Verdict::as_str)] { (i.decision.map_or("undecided", Verdict::as_str)) }
                            td { (i.reason.clone().unwrap_or_default()) }
                            td { (i.decided_by.clone().unwrap_or_default()) }
                            td { (time(i.decided_at)) }
                            td { (time(i.revocation_verified_at)) }
                        }
                    }
                }
            }
            p.muted {
                "Generated " (head.at) " by tidegate " (env!("CARGO_PKG_VERSION"))
                ". Audit chain head then: " code { (head.hash) } " (entry " (head.length) "). "
                "manifest.json holds the SHA-256 of this file and the others of the export."
            }
        },
    )
}

fn period_report(e: &Evidence, head: &AuditHead) -> Markup {
    frame(
        &format!("Access evidence {} to {}", e.from, e.to),
        html! {
            h1 { "Access evidence" }
            p.muted { (e.from) " to " (e.to) }
            h2 { "Grants (" (e.grants.len()) ")" }
            table {
                thead { tr {
                    th { "Request" } th { "Person" } th { "Entitlement" } th { "Reason" } th { "Requested" }
                    th { "Approved by" } th { "Applied" } th { "Expires" } th { "Ended" } th { "Removal verified" }
                } }
                tbody {
                    @for g in &e.grants {
                        tr {
                            td { (g.id) @if g.break_glass { " (break-glass)" } }
                            td { (g.requester) } td { (g.entitlement) } td { (g.reason) } td { (g.requested_at) }
                            td { (g.approved_by.join("; ")) }
                            td { (g.applied_at.clone().unwrap_or_default()) }
                            td { (g.expires_at.clone().unwrap_or_default()) }
                            td { (g.ended_at.clone().unwrap_or_default()) @if let Some(by) = &g.ended_by { " by " (by) } }
                            td { (g.removal_verified_at.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
            h2 { "Compliance check runs (" (e.check_runs.len()) ")" }
            table {
                thead { tr { th { "Run" } th { "Passed" } th { "Failing checks" } } }
                tbody {
                    @for run in &e.check_runs {
                        tr {
                            td { (run.at) }
                            td { @if run.passed() { "yes" } @else { "no" } }
                            td { (run.checks.iter().filter(|c| c.status == "fail").map(|c| format!("{} ({})", c.id, c.findings.len())).collect::<Vec<_>>().join(", ")) }
                        }
                    }
                }
            }
            h2 { "Access reviews (" (e.campaigns.len()) ")" }
            table {
                thead { tr { th { "Campaign" } th { "Scope" } th { "Started" } th { "State" } th { "Items" } th { "Kept" } th { "Revoked (verified)" } } }
                tbody {
                    @for c in &e.campaigns {
                        tr {
                            td { (c.campaign.name) " " code { (c.campaign.id) } }
                            td { (c.campaign.scopes.join(", ")) }
                            td { (tidegate_core::time_text(c.campaign.created_at)) " by " (c.campaign.created_by) }
                            td { (c.campaign.state) }
                            td { (c.progress.items) } td { (c.progress.kept) }
                            td { (c.progress.revoked) " (" (c.progress.revocations_verified) ")" }
                        }
                    }
                }
            }
            p.muted {
                "Generated " (head.at) " by tidegate " (env!("CARGO_PKG_VERSION"))
                ". Audit chain head then: " code { (head.hash) } " (entry " (head.length) ")."
            }
        },
    )
}
