//! `/admin/inventory`: the tailnet's inventory from the last sync (users, devices, keys,
//! invites, groups, rules, and the last changes), searchable; `/admin/compliance`: the last
//! compliance run with its findings, and a button to run the checks now.

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use tidegate_core::inventory::field_text as text;

use super::admin::{require_auditor, tabs};
use super::layout::{self, Chrome, Page, Section, csrf};
use super::session::Viewer;
use super::{CsrfForm, Done, check_csrf};
use crate::AppState;

#[derive(Deserialize, Default)]
pub struct InventoryQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    q: String,
}

/// Rows shown at most; a search narrows the rest (keeps the page under 20 KB).
const SHOWN: usize = 80;

const KINDS: [(&str, &str); 7] = [
    ("users", "Users"),
    ("devices", "Devices"),
    ("keys", "Keys"),
    ("invites", "Invites"),
    ("groups", "Groups"),
    ("rules", "Rules"),
    ("changes", "Changes"),
];

pub async fn inventory(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<InventoryQuery>,
) -> Page {
    if let Err(page) = require_auditor(&app, &viewer).await {
        return page;
    }
    let kind = KINDS
        .iter()
        .map(|(k, _)| *k)
        .find(|k| *k == q.kind)
        .unwrap_or("users");
    let snapshot = match app.service.inventory_or_sync().await {
        Ok(s) => s,
        Err(e) => {
            return layout::message(
                &app,
                Some(&viewer),
                StatusCode::SERVICE_UNAVAILABLE,
                "Inventory",
                &e.to_string(),
            )
            .await;
        }
    };
    let (columns, rows): (Vec<&str>, Vec<Vec<String>>) = match kind {
        "groups" => (
            vec!["Group", "Members"],
            snapshot
                .groups
                .iter()
                .map(|(g, m)| vec![g.clone(), m.join(", ")])
                .collect(),
        ),
        "rules" => (
            vec!["Rule", "Source", "Destination", "What"],
            snapshot
                .rules
                .iter()
                .map(|r| {
                    vec![
                        r.label(),
                        r.src.join(" "),
                        r.dst.join(" "),
                        r.what.join(" "),
                    ]
                })
                .collect(),
        ),
        "changes" => {
            let record = app.service.inventory_changes().await.unwrap_or_default();
            (
                vec!["Kind", "Subject", "Change", "Fields"],
                record
                    .changes
                    .iter()
                    .map(|c| {
                        vec![
                            c.kind.clone(),
                            c.subject.clone(),
                            c.change.clone(),
                            c.fields
                                .iter()
                                .map(|(k, (old, new))| {
                                    format!("{k}: {} → {}", text(old), text(new))
                                })
                                .collect::<Vec<_>>()
                                .join("; "),
                        ]
                    })
                    .collect(),
            )
        }
        _ => {
            let (columns, keys): (Vec<&str>, Vec<&str>) = match kind {
                "devices" => (
                    vec!["Name", "Owner", "Tags", "Last seen", "Key expiry"],
                    vec!["name", "owner", "tags", "last_seen", "key_expiry_disabled"],
                ),
                "keys" => (
                    vec!["Key", "Kind", "Description", "Expires", "Tags"],
                    vec!["id", "kind", "description", "expires", "tags"],
                ),
                "invites" => (
                    vec!["E-mail", "Role", "Last sent"],
                    vec!["email", "role", "last_email_sent_at"],
                ),
                _ => (
                    vec!["Login", "Role", "Status", "Type", "Last seen"],
                    vec!["login", "role", "status", "kind", "last_seen"],
                ),
            };
            let value = serde_json::to_value(&snapshot).unwrap_or(Value::Null);
            let rows = value[kind]
                .as_array()
                .into_iter()
                .flatten()
                .map(|item| {
                    keys.iter()
                        .map(|k| match (*k, &item[*k]) {
                            ("name", Value::String(n)) => {
                                n.split('.').next().unwrap_or(n).to_owned()
                            }
                            ("key_expiry_disabled", Value::Bool(true)) => "disabled".to_owned(),
                            ("key_expiry_disabled", _) => String::new(),
                            (_, v) => text(v),
                        })
                        .collect()
                })
                .collect();
            (columns, rows)
        }
    };
    let needle = q.q.trim().to_lowercase();
    let matching: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| needle.is_empty() || r.iter().any(|c| c.to_lowercase().contains(&needle)))
        .collect();
    let chrome = Chrome::of(&app, &viewer).await;
    let body = html! {
        (tabs("/admin/inventory"))
        p.muted {
            "From the sync " @match tailnet::clock::parse_rfc3339(&snapshot.taken_at) { Some(t) => (layout::when(t, app.service.now())), None => (snapshot.taken_at) } ": "
            (snapshot.users.len()) " users, " (snapshot.devices.len()) " devices, "
            (snapshot.keys.len()) " keys, " (snapshot.invites.len()) " invites, "
            (snapshot.rules.len()) " rules."
            @if snapshot.policy_managed_externally { " The policy file is managed externally (GitOps)." }
        }
        nav.tabs aria-label="Inventory" {
            @for (k, label) in KINDS {
                a href=(format!("/admin/inventory?kind={k}")) aria-current=[(k == kind).then_some("page")] { (label) }
            }
        }
        form method="get" action="/admin/inventory" class="filters" role="search" {
            input type="hidden" name="kind" value=(kind);
            label for="q" { "Search" }
            input #q name="q" value=(q.q) type="search";
            button.secondary type="submit" { "Search" }
        }
        (table(&columns, &matching))
        @if matching.len() > SHOWN {
            p.muted { "Showing " (SHOWN) " of " (matching.len()) ": search to narrow them." }
        }
    };
    Page(
        StatusCode::OK,
        layout::page("Inventory", Some(&chrome), Section::Admin, None, body),
    )
}

fn table(columns: &[&str], rows: &[&Vec<String>]) -> Markup {
    html! {
        @if rows.is_empty() {
            p.empty { "Nothing matches." }
        } @else {
            table {
                thead { tr { @for c in columns { th scope="col" { (c) } } } }
                tbody {
                    @for row in rows.iter().take(SHOWN) {
                        tr { @for (c, cell) in columns.iter().zip(row.iter()) { td data-label=(c) { (cell) } } }
                    }
                }
            }
        }
    }
}

pub async fn compliance(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> Page {
    if let Err(page) = require_auditor(&app, &viewer).await {
        return page;
    }
    let last = app.service.last_checks().await;
    let now = app.service.now();
    let at = |text: &str| match tailnet::clock::parse_rfc3339(text) {
        Some(t) => layout::when(t, now),
        None => html! { (text) },
    };
    let chrome = Chrome::of(&app, &viewer).await;
    let body = html! {
        (tabs("/admin/compliance"))
        form method="post" action="/admin/compliance" {
            (csrf(&viewer))
            button type="submit" { "Run the checks now" }
        }
        @match &last {
            Err(e) => p.error role="alert" { (e.to_string()) },
            Ok(None) => p.empty { "No check has run yet. " code { "tidegate check --config F" } " runs them too." },
            Ok(Some(run)) => {
                p.muted { "Last run " (at(&run.at)) ". The same JSON is in the audit log as check.run, for evidence." }
                @for c in &run.checks {
                    section.card {
                        h2 {
                            @if c.status == "pass" { span.state.state-good { "pass" } } @else { span.state.state-bad { "fail" } }
                            " " (c.id)
                        }
                        p.muted { (c.title) }
                        @if !c.findings.is_empty() {
                            ul.items {
                                @for f in c.findings.iter().take(40) {
                                    li {
                                        strong { (f.subject) } ": " (f.detail)
                                        @if f.late { " " span.state.state-wait { "late" } }
                                        " " span.muted { "since " (at(&f.first_seen)) }
                                    }
                                }
                            }
                            @if c.findings.len() > 40 { p.muted { "And " (c.findings.len() - 40) " more: " code { "tidegate check --json" } " lists them all." } }
                        }
                    }
                }
            },
        }
    };
    Page(
        StatusCode::OK,
        layout::page(
            "Compliance",
            Some(&chrome),
            Section::Admin,
            layout::flash(done.done.as_deref()),
            body,
        ),
    )
}

pub async fn run_now(
    State(app): State<AppState>,
    viewer: Viewer,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(page) = check_csrf(&app, &viewer, &f.csrf).await {
        return page.into_response();
    }
    if let Err(page) = require_auditor(&app, &viewer).await {
        return page.into_response();
    }
    match app.service.run_checks().await {
        Ok(_) => Redirect::to("/admin/compliance?done=checked").into_response(),
        Err(e) => layout::message(
            &app,
            Some(&viewer),
            StatusCode::SERVICE_UNAVAILABLE,
            "Compliance",
            &e.to_string(),
        )
        .await
        .into_response(),
    }
}
