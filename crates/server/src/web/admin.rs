//! The admin pages, for admins and auditors: `/admin` who has access right now (active grants
//! with filters, each managed group's members and why, overdue removals, drift, the
//! entitlements against the live policy, machine nodes), `/admin/break-glass` the review queue,
//! `/admin/audit` the audit log with filters and paging, `/admin/audit.jsonl` its export,
//! and (in `governance`) the inventory and the compliance checks.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tidegate_core::entitlement::Strategy;
use tidegate_core::overview::AccessFilter;

use super::Done;
use super::layout::{self, Chrome, Page, Section, when};
use super::session::Viewer;
use crate::AppState;

/// Admins and auditors only; others get a page that says who may.
pub(super) async fn require_auditor<'v>(
    app: &AppState,
    viewer: &'v Viewer,
) -> Result<tidegate_core::access::Auditor<'v>, Page> {
    match viewer.actor.auditor() {
        Some(auditor) => Ok(auditor),
        None => Err(layout::message(
            app,
            Some(viewer),
            StatusCode::FORBIDDEN,
            "Admin",
            "Only tailnet admins, owners and auditors see this page.",
        )
        .await),
    }
}

/// The admin pages' own links.
pub(super) fn tabs(current: &str) -> Markup {
    html! {
        nav.tabs aria-label="Admin" {
            @for (href, label) in [("/admin", "Who has access"), ("/admin/break-glass", "Break-glass"), ("/admin/audit", "Audit log"), ("/admin/inventory", "Inventory"), ("/admin/compliance", "Compliance"), ("/admin/webhooks", "Deliveries"), ("/reviews", "Access reviews")] {
                a href=(href) aria-current=[(href == current).then_some("page")] { (label) }
            }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct OverviewQuery {
    #[serde(default)]
    entitlement: String,
    #[serde(default)]
    requester: String,
    #[serde(default)]
    group: String,
}

fn some(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

pub async fn overview(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<OverviewQuery>,
) -> Page {
    let auditor = match require_auditor(&app, &viewer).await {
        Ok(auditor) => auditor,
        Err(page) => return page,
    };
    let now = app.service.now();
    let filter = AccessFilter {
        entitlement: some(&q.entitlement),
        requester: some(&q.requester),
        group: some(&q.group),
    };
    let overview = match app.service.access_overview(auditor, &filter).await {
        Ok(o) => o,
        Err(e) => {
            return layout::message(
                &app,
                Some(&viewer),
                StatusCode::SERVICE_UNAVAILABLE,
                "Admin",
                &e.to_string(),
            )
            .await;
        }
    };
    let standing = app.service.managed_groups().await.unwrap_or_default();
    let config = app.service.config();
    let checks = entitlement_checks(&app).await;
    let drift = recent_drift(&app).await;
    let unreviewed = app
        .service
        .break_glass_grants(auditor, 100)
        .await
        .map(|all| {
            all.iter()
                .filter(|r| r.break_glass_review.is_none())
                .count()
        })
        .unwrap_or(0);
    let chrome = Chrome::of(&app, &viewer).await;
    const SHOWN: usize = 30;
    let body = html! {
        (tabs("/admin"))
        @if !overview.overdue.is_empty() {
            p.error role="alert" { (overview.overdue.len()) " overdue: past their end, removal not yet verified." }
        }
        @if unreviewed > 0 {
            p.notice { a href="/admin/break-glass" { (unreviewed) " break-glass grant" @if unreviewed != 1 { "s" } " to review" } }
        }
        form method="get" action="/admin" class="filters" {
            label for="f-entitlement" { "Entitlement" }
            select #f-entitlement name="entitlement" {
                option value="" { "All" }
                @for e in &config.entitlements { option value=(e.name) selected[q.entitlement == e.name] { (e.name) } }
            }
            label for="f-requester" { "Person" }
            input #f-requester name="requester" value=(q.requester) placeholder="login";
            button.secondary type="submit" { "Filter" }
        }
        h2 { "Active grants (" (overview.active.len()) ")" }
        @if overview.active.is_empty() {
            p.muted { "Nobody holds access through tidegate right now." }
        } @else {
            ul.items {
                @for r in overview.active.iter().take(SHOWN) { (layout::request_item(r, now, true)) }
            }
            @if overview.active.len() > SHOWN { p.muted { "and " (overview.active.len() - SHOWN) " more: narrow the filter." } }
        }
        h2 { "Managed groups" }
        @if let Some(e) = &overview.policy_error { p.error { "Cannot read the policy: " (e) } }
        @for g in &overview.groups {
            section.card {
                h3 { (g.group) " " span.muted { "(" (g.entitlements.join(", ")) ")" } }
                @if g.members.is_empty() { p.muted { "No members." } }
                ul.items {
                    @for m in &g.members {
                        li {
                            (m.login) " "
                            @match m.because {
                                "grant" => {
                                    span.state.state-good { "grant" } " "
                                    @for id in &m.requests { a href=(format!("/requests/{id}")) { (id) } " " }
                                    @if let Some(until) = m.until { span.muted { "ends " (when(until, now)) } }
                                }
                                "standing" => { span.state.state-wait { "standing" } " " span.muted { "there before tidegate; " code { "tidegate adopt " (g.group) } " ends it" } }
                                _ => { span.state.state-bad { "unexplained" } " " span.muted { "drift: no grant explains it" } }
                            }
                        }
                    }
                }
                @if let Some(s) = standing.get(&g.group).filter(|s| !s.standing.is_empty()) {
                    p.muted { "Standing members since " (s.first_managed_at) ": " (s.standing.iter().cloned().collect::<Vec<_>>().join(", ")) }
                }
            }
        }
        h2 { "Overdue revocations" }
        @if overview.overdue.is_empty() {
            p.muted { "None." }
        } @else {
            ul.items { @for r in &overview.overdue { (layout::request_item(r, now, true)) } }
        }
        h2 { "Drift" }
        @if drift.is_empty() {
            p.muted { "No drift detected recently." }
        } @else {
            ul.items { @for (at, detail) in &drift { li { span.muted { (at) } " " (detail) } } }
        }
        h2 { "Entitlements" }
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Strategy" } th scope="col" { "Approvers" } th scope="col" { "Against the live policy" } } }
            tbody {
                @for (e, check) in config.entitlements.iter().zip(&checks) {
                    tr {
                        td data-label="Name" { (e.name) }
                        td data-label="Strategy" { (strategy(&e.strategy)) }
                        td data-label="Approvers" { (e.approvers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")) }
                        td data-label="Check" {
                            @match check { Ok(()) => "ok", Err(why) => span.error { (why) } }
                        }
                    }
                }
            }
        }
        @if !config.machines.is_empty() { (machine_nodes(&app, &viewer).await) }
    };
    Page(
        StatusCode::OK,
        layout::page("Admin", Some(&chrome), Section::Admin, None, body),
    )
}

fn strategy(s: &Strategy) -> String {
    match s {
        Strategy::Group { group, .. } => format!("group {group}"),
        Strategy::Posture { attribute, .. } => format!("posture {attribute}"),
        Strategy::Role { role } => format!("role {role}"),
        Strategy::Tag { tag } => format!("tag {tag}"),
        Strategy::Rule { rule } => format!("rule {rule}"),
        Strategy::AuthKey { tags, .. } => format!("authkey {}", tags.join(" ")),
    }
}

/// Each entitlement checked against the live policy, in config order.
async fn entitlement_checks(app: &AppState) -> Vec<Result<(), String>> {
    let entitlements = &app.service.config().entitlements;
    let parsed = app
        .service
        .tailnet()
        .policy()
        .await
        .map_err(|e| e.to_string())
        .and_then(|p| policy::Policy::parse(&p.text).map_err(|e| e.to_string()));
    match parsed {
        Ok(p) => {
            let issues = tidegate_core::entitlement::check_against_policy(entitlements, &p);
            entitlements
                .iter()
                .map(|e| {
                    let mine: Vec<&str> = issues
                        .iter()
                        .filter(|i| i.entitlement == e.name)
                        .map(|i| i.message.as_str())
                        .collect();
                    if mine.is_empty() {
                        Ok(())
                    } else {
                        Err(mine.join("; "))
                    }
                })
                .collect()
        }
        Err(why) => entitlements
            .iter()
            .map(|_| Err(format!("cannot check: {why}")))
            .collect(),
    }
}

/// How far back the drift list and the audit filters look.
const AUDIT_WINDOW: i64 = 2000;

async fn recent_drift(app: &AppState) -> Vec<(String, String)> {
    let length = app.service.store().audit_length().await.unwrap_or(0);
    let window = app
        .service
        .store()
        .audit((length - AUDIT_WINDOW).max(0), AUDIT_WINDOW as usize)
        .await
        .unwrap_or_default();
    window
        .iter()
        .rev()
        .filter(|e| e.action == "drift.detected")
        .take(20)
        .map(|e| (e.at.clone(), e.detail.clone()))
        .collect()
}

async fn machine_nodes(app: &AppState, viewer: &Viewer) -> Markup {
    let report = match viewer.actor.auditor() {
        Some(auditor) => app
            .service
            .machine_nodes(auditor)
            .await
            .map_err(|e| e.to_string()),
        None => Err("admins and auditors only".to_owned()),
    };
    html! {
        h2 { "Machine nodes" }
        p.muted { "Devices that joined with the machine entitlements' keys (ephemeral ones are deleted after their node_ttl), and tagged devices whose tags nothing explains." }
        @match report {
            Err(e) => p.error { (e) },
            Ok(report) => ul.items {
                @if report.machine_nodes.is_empty() && report.unexplained.is_empty() { li.muted { "None." } }
                @for n in &report.machine_nodes {
                    li { (layout::device(&n.hostname)) " " span.muted { (n.entitlement) " · " (n.subject.as_deref().unwrap_or("key not seen")) @if n.over_node_ttl { " · over node_ttl" } } }
                }
                @for u in &report.unexplained {
                    li.error { (layout::device(&u.hostname)) ": " (u.tags.join(", ")) " " span.muted { "(created by " (u.user) "; no machine entitlement or tag owner explains it)" } }
                }
            },
        }
    }
}

/// The break-glass review queue: grants taken without approval, unreviewed first.
pub async fn break_glass(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> Page {
    let auditor = match require_auditor(&app, &viewer).await {
        Ok(auditor) => auditor,
        Err(page) => return page,
    };
    let now = app.service.now();
    let grants = app
        .service
        .break_glass_grants(auditor, 100)
        .await
        .unwrap_or_default();
    let chrome = Chrome::of(&app, &viewer).await;
    let body = html! {
        (tabs("/admin/break-glass"))
        @if grants.is_empty() { p.empty { "No break-glass grants." } }
        @for r in &grants {
            article.card {
                h2 { a href=(format!("/requests/{}", r.id)) { (r.entitlement) " for " (r.requester) } " " (layout::badge(r, now)) }
                p { "Taken " (when(r.created_at, now)) ", for " (r.duration.to_string()) }
                @if !r.reason.is_empty() { p.reason { (r.reason) } }
                @match &r.break_glass_review {
                    Some(done) => p { span.state.state-good { "reviewed" } " by " (done.reviewer) " " (when(done.at, now)) ": " (done.note) },
                    None => form method="post" action=(format!("/requests/{}/act", r.id)) class="stack" {
                        (layout::csrf(&viewer))
                        input type="hidden" name="back" value="/admin/break-glass";
                        label for=(format!("note-{}", r.id)) { "What the review found" }
                        input id=(format!("note-{}", r.id)) name="comment" required;
                        div.actions { button type="submit" name="action" value="review" { "Mark reviewed" } }
                    },
                }
            }
        }
    };
    Page(
        StatusCode::OK,
        layout::page(
            "Break-glass reviews",
            Some(&chrome),
            Section::Admin,
            layout::flash(done.done.as_deref()),
            body,
        ),
    )
}

/// `/admin/webhooks`: each webhook endpoint and e-mail, what it hears, what waits, its last
/// deliveries.
pub async fn webhooks(State(app): State<AppState>, viewer: Viewer) -> Page {
    if let Err(page) = require_auditor(&app, &viewer).await {
        return page;
    }
    let now = app.service.now();
    let endpoints = crate::outbound::endpoints(&app, 20)
        .await
        .unwrap_or_default();
    let at = |t: &str| tailnet::clock::parse_rfc3339(t).map(|t| when(t, now));
    let chrome = Chrome::of(&app, &viewer).await;
    let body = html! {
        (tabs("/admin/webhooks"))
        @if endpoints.is_empty() {
            p.empty { "Nothing is configured to hear about events: add a [[webhook]], [email] or [slack] to the config." }
        }
        @for e in &endpoints {
            section.card aria-labelledby=(format!("hook-{}", e.name)) {
                h2 #(format!("hook-{}", e.name)) { (e.name) }
                p { code { (e.url) } " · " (e.events.join(", ")) " · " strong { (e.pending) } " waiting" }
                @if e.deliveries.is_empty() { p.muted { "Nothing sent yet." } }
                @else {
                    table {
                        thead { tr { th { "Event" } th { "State" } th { "Attempts" } th { "When" } th { "Error" } } }
                        tbody {
                            @for d in &e.deliveries {
                                tr {
                                    td data-label="Event" { (d.event_id) }
                                    td data-label="State" {
                                        span class=(match d.state.as_str() { "delivered" => "state state-good", "failed" => "state state-bad", _ => "state state-wait" }) { (d.state) }
                                    }
                                    td data-label="Attempts" { (d.attempts) }
                                    td data-label="When" {
                                        @match (d.state.as_str(), d.done_at.as_deref()) {
                                            ("pending", _) => { "next " @if let Some(t) = at(&d.next_at) { (t) } }
                                            (_, Some(done)) => { @if let Some(t) = at(done) { (t) } }
                                            _ => {}
                                        }
                                    }
                                    td data-label="Error" { (d.last_error.clone().unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Page(
        StatusCode::OK,
        layout::page("Deliveries", Some(&chrome), Section::Admin, None, body),
    )
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    request: String,
    /// Show entries before this sequence number (the next page).
    before: Option<i64>,
}

impl AuditQuery {
    fn keeps(&self, e: &tidegate_core::audit::AuditEntry) -> bool {
        (self.actor.is_empty() || e.actor.contains(self.actor.trim()))
            && (self.action.is_empty() || e.action.contains(self.action.trim()))
            && (self.request.is_empty() || e.request.as_deref() == Some(self.request.trim()))
    }

    fn link(&self, before: i64) -> String {
        let enc = super::session::urlencoding;
        format!(
            "/admin/audit?actor={}&action={}&request={}&before={before}",
            enc(&self.actor),
            enc(&self.action),
            enc(&self.request)
        )
    }
}

/// Entries per page of the audit log.
const AUDIT_PAGE: usize = 50;

/// The audit log, newest first, filtered, a page at a time.
pub async fn audit(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<AuditQuery>,
) -> Page {
    if let Err(page) = require_auditor(&app, &viewer).await {
        return page;
    }
    let length = app.service.store().audit_length().await.unwrap_or(0);
    let end = q.before.unwrap_or(length + 1).clamp(1, length + 1);
    // Walk back from `end` in windows until a page is full or the log's start is reached.
    let mut shown = Vec::new();
    let mut upper = end;
    while shown.len() < AUDIT_PAGE && upper > 1 {
        let from = (upper - 1 - AUDIT_WINDOW).max(0);
        let batch = app
            .service
            .store()
            .audit(from, (upper - 1 - from) as usize)
            .await
            .unwrap_or_default();
        for e in batch.into_iter().rev() {
            if shown.len() < AUDIT_PAGE && q.keeps(&e) {
                shown.push(e);
            }
        }
        upper = from + 1;
    }
    let next = shown
        .last()
        .map(|e| e.seq)
        .filter(|seq| *seq > 1 && shown.len() == AUDIT_PAGE);
    let chrome = Chrome::of(&app, &viewer).await;
    let body = html! {
        (tabs("/admin/audit"))
        form method="get" action="/admin/audit" class="filters" {
            label for="f-actor" { "Actor" } input #f-actor name="actor" value=(q.actor);
            label for="f-action" { "Action" } input #f-action name="action" value=(q.action);
            label for="f-request" { "Request" } input #f-request name="request" value=(q.request);
            button.secondary type="submit" { "Filter" }
        }
        p { a href="/admin/audit.jsonl" { "Export the whole log (JSON lines)" } " · " code { "tidegate audit export" } " adds a manifest of hashes." }
        @if shown.is_empty() { p.empty { "No entries match." } }
        @else {
            table {
                thead { tr { th scope="col" { "#" } th scope="col" { "At" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Request" } } }
                tbody {
                    @for e in &shown {
                        tr {
                            td data-label="#" { (e.seq) }
                            td data-label="At" { (e.at) }
                            td data-label="Actor" { (e.actor) }
                            td data-label="Action" { (e.action) }
                            td data-label="Request" { @if let Some(id) = &e.request { a href=(format!("/requests/{id}")) { (id) } } }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if q.before.is_some() { a href=(q.link(length + 1)) { "Newest" } }
            @if let Some(seq) = next { a href=(q.link(seq)) { "Older entries" } }
        }
    };
    Page(
        StatusCode::OK,
        layout::page("Audit log", Some(&chrome), Section::Admin, None, body),
    )
}

/// The whole audit log as JSON lines.
pub async fn audit_export(State(app): State<AppState>, viewer: Viewer) -> Response {
    if let Err(page) = require_auditor(&app, &viewer).await {
        return page.into_response();
    }
    let mut out = String::new();
    let mut after = 0;
    loop {
        let batch = match app.service.store().audit(after, 5000).await {
            Ok(b) => b,
            Err(e) => {
                return layout::message(
                    &app,
                    Some(&viewer),
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Audit log",
                    &e.to_string(),
                )
                .await
                .into_response();
            }
        };
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for e in &batch {
            if let Ok(line) = serde_json::to_string(e) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tidegate-audit.jsonl\"",
            ),
        ],
        out,
    )
        .into_response()
}
