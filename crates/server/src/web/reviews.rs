//! `/reviews`: access review campaigns with their progress, the items waiting for the viewer,
//! and (admins) a form to start one; `/reviews/{id}`: a campaign's report (each reviewer's
//! share and who is late, the items with their decisions and verified removals), keep or
//! revoke per item or several at once with one reason, close, and the evidence downloads.

use axum::extract::{Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tidegate_core::review::{Ask, CampaignView, ItemView, NewCampaign, Verdict};
use tidegate_core::service::ServiceError;

use super::layout::{self, Chrome, Page, Section, csrf, when};
use super::session::Viewer;
use super::{Done, check_csrf};
use crate::AppState;

/// Items shown on a campaign's page at most; search narrows, the export has them all.
const SHOWN: usize = 60;

pub async fn list(State(app): State<AppState>, viewer: Viewer, Query(done): Query<Done>) -> Page {
    list_page(
        &app,
        &viewer,
        done.done.as_deref(),
        None,
        &CreateForm::default(),
    )
    .await
}

async fn list_page(
    app: &AppState,
    viewer: &Viewer,
    done: Option<&str>,
    error: Option<&str>,
    typed: &CreateForm,
) -> Page {
    let now = app.service.now();
    let campaigns = app.service.reviews(&viewer.actor).await.unwrap_or_default();
    let mine = app
        .service
        .my_reviews(&viewer.actor)
        .await
        .unwrap_or_default();
    let chrome = Chrome::of(app, viewer).await;
    let body = html! {
        section aria-labelledby="mine" {
            h2 #mine { "Waiting for your review" }
            @if mine.is_empty() {
                p.empty { "No access waits for your review." }
            }
            @for (c, items) in &mine {
                p {
                    a href=(format!("/reviews/{}?show=mine", c.id)) { (c.name) } ": "
                    strong { (items.len()) } " item" @if items.len() != 1 { "s" } " to decide, due " (when(c.due_at, now))
                }
            }
        }
        section aria-labelledby="campaigns" {
            h2 #campaigns { "Campaigns" }
            @if campaigns.is_empty() {
                p.empty { "No access review has been started." }
            } @else {
                table {
                    thead { tr { th { "Campaign" } th { "Scope" } th { "Decided" } th { "Due" } th { "State" } } }
                    tbody {
                        @for v in &campaigns {
                            tr {
                                td data-label="Campaign" { a href=(format!("/reviews/{}", v.campaign.id)) { (v.campaign.name) } }
                                td data-label="Scope" { (v.campaign.scopes.join(", ")) }
                                td data-label="Decided" { (progress(v)) }
                                td data-label="Due" { (when(v.campaign.due_at, now)) }
                                td data-label="State" { (state(v, now)) }
                            }
                        }
                    }
                }
            }
        }
        @if viewer.actor.is_admin() {
            section aria-labelledby="start" {
                h2 #start { "Start a campaign" }
                (layout::error(error))
                form method="post" action="/reviews" class="stack" {
                    (csrf(viewer))
                    label for="name" { "Name" }
                    input #name name="name" required value=(typed.name) placeholder="Q4 production access";
                    label for="scope" { "Scope" }
                    input #scope name="scope" required value=(typed.scope) placeholder="critical:production group:sre roles keys entitlement:prod-ssh" aria-describedby="scope-help";
                    small #scope-help { "One or more, separated by spaces: group:NAME, roles, critical:NAME, keys, entitlement:NAME." }
                    label for="due" { "Due in" }
                    input #due name="due" value=(if typed.due.is_empty() { "14d" } else { typed.due.as_str() });
                    label for="reviewer" { "Reviewer for people without a manager" }
                    input #reviewer name="reviewer" value=(typed.reviewer) placeholder="group:security (default: you)";
                    label for="on_due" { "Undecided at the due date" }
                    select #on_due name="on_due" {
                        option value="keep" selected[typed.on_due != "revoke"] { "keep" }
                        option value="revoke" selected[typed.on_due == "revoke"] { "revoke" }
                    }
                    div.actions { button type="submit" { "Start" } }
                }
            }
        }
    };
    Page(
        if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        },
        layout::page(
            "Access reviews",
            Some(&chrome),
            Section::Approvals,
            layout::flash(done),
            body,
        ),
    )
}

fn progress(v: &CampaignView) -> Markup {
    let p = &v.progress;
    html! {
        (p.decided) " of " (p.items)
        @if p.revocations_pending > 0 { " " span.muted { "(" (p.revocations_pending) " removals pending)" } }
    }
}

fn state(v: &CampaignView, now: time::OffsetDateTime) -> Markup {
    let late = v.campaign.is_open() && now >= v.campaign.due_at;
    html! {
        @if !v.campaign.is_open() { span.state.state-ended { "closed" } }
        @else if late { span.state.state-bad { "overdue" } }
        @else { span.state.state-wait { "open" } }
    }
}

#[derive(Deserialize, Default)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    due: String,
    #[serde(default)]
    reviewer: String,
    #[serde(default)]
    on_due: String,
}

pub async fn create(
    State(app): State<AppState>,
    viewer: Viewer,
    Form(f): Form<CreateForm>,
) -> Response {
    if let Err(page) = check_csrf(&app, &viewer, &f.csrf).await {
        return page.into_response();
    }
    let Some(admin) = viewer.actor.admin() else {
        return layout::message(
            &app,
            Some(&viewer),
            StatusCode::FORBIDDEN,
            "Access reviews",
            "Only admins start campaigns.",
        )
        .await
        .into_response();
    };
    let parsed = (|| -> Result<NewCampaign, String> {
        Ok(NewCampaign {
            name: f.name.clone(),
            scopes: f.scope.split_whitespace().map(str::to_owned).collect(),
            due: Some(f.due.trim().parse().map_err(|e| format!("due: {e}"))?),
            reviewer: Some(f.reviewer.trim().to_owned()).filter(|r| !r.is_empty()),
            on_due: f.on_due.parse().unwrap_or_default(),
            keep_reason_required: false,
            schedule: None,
        })
    })();
    let result = match parsed {
        Ok(new) => app
            .service
            .create_review(admin, new)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match result {
        Ok(v) => {
            Redirect::to(&format!("/reviews/{}?done=review-started", v.campaign.id)).into_response()
        }
        Err(e) => list_page(&app, &viewer, None, Some(&e), &f)
            .await
            .into_response(),
    }
}

#[derive(Deserialize, Default)]
pub struct CampaignQuery {
    /// `mine` (what I may decide, undecided), `undecided`, `revoked`, or all.
    #[serde(default)]
    show: String,
    #[serde(default)]
    q: String,
    done: Option<String>,
}

pub async fn campaign(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<CampaignQuery>,
) -> Page {
    campaign_page(&app, &viewer, &id, &q, None).await
}

async fn campaign_page(
    app: &AppState,
    viewer: &Viewer,
    id: &str,
    q: &CampaignQuery,
    error: Option<&str>,
) -> Page {
    let now = app.service.now();
    let v = match app.service.review(&viewer.actor, id).await {
        Ok(v) => v,
        Err(e) => {
            let status = match e {
                ServiceError::UnknownReview(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return layout::message(app, Some(viewer), status, "Access review", &e.to_string())
                .await;
        }
    };
    let dir = app.service.directory().await.ok();
    let may_decide = |i: &ItemView| {
        v.campaign.is_open()
            && i.decision.is_none()
            && dir.as_ref().is_some_and(|d| {
                viewer
                    .actor
                    .may_decide_review_item(&i.subject, &i.reviewer, d)
                    .is_ok()
            })
    };
    let needle = q.q.trim().to_lowercase();
    let matching: Vec<&ItemView> = v
        .items
        .iter()
        .filter(|i| match q.show.as_str() {
            "mine" => may_decide(i),
            "undecided" => i.decision.is_none(),
            "revoked" => i.decision == Some(Verdict::Revoke),
            _ => true,
        })
        .filter(|i| {
            needle.is_empty()
                || i.subject.to_lowercase().contains(&needle)
                || i.access.to_lowercase().contains(&needle)
                || i.reviewer.to_lowercase().contains(&needle)
        })
        .collect();
    let decidable = matching.iter().filter(|i| may_decide(i)).count();
    let c = &v.campaign;
    let head = app.service.audit_head().await.ok();
    let export = |file: &str| {
        let (at, length) = head.as_ref().map_or((now.unix_timestamp(), 0), |h| {
            (
                tailnet::clock::parse_rfc3339(&h.at)
                    .map_or(now.unix_timestamp(), |t| t.unix_timestamp()),
                h.length,
            )
        });
        format!("/reviews/{}/export/{file}?at={at}&head={length}", c.id)
    };
    let chrome = Chrome::of(app, viewer).await;
    let body = html! {
        p {
            (c.scopes.join(", ")) " · started " (when(c.created_at, now)) " by " (c.created_by)
            " · due " (when(c.due_at, now)) " · " (state(&v, now))
        }
        p.muted {
            "Undecided items at the due date are "
            @if c.on_due == tidegate_core::review::OnDue::Revoke { "revoked" } @else { "kept" } ". "
            "Population: tidegate " (c.generated.tool_version) ", tailnet " (c.generated.tailnet)
            ", inventory read " (c.generated.inventory_taken_at) "."
            @if let Some(note) = &c.close_note { " Closed: " (note) "." }
        }
        p { strong { (progress(&v)) } " decided · " (v.progress.kept) " kept · " (v.progress.revoked) " revoked (" (v.progress.revocations_verified) " verified removed)" }
        (layout::error(error))
        details {
            summary { "Reviewers (" (v.reviewers.len()) ")" }
            table {
                thead { tr { th { "Reviewer" } th { "Items" } th { "Undecided" } th { "" } } }
                tbody {
                    @for r in &v.reviewers {
                        tr {
                            td data-label="Reviewer" { (r.reviewer) }
                            td data-label="Items" { (r.items) }
                            td data-label="Undecided" { (r.undecided) }
                            td { @if r.late { span.state.state-bad { "late" } } }
                        }
                    }
                }
            }
        }
        form method="get" action=(format!("/reviews/{}", c.id)) class="actions" role="search" {
            label for="show" { "Show" }
            select #show name="show" {
                @for (value, label) in [("", "all"), ("mine", "mine to decide"), ("undecided", "undecided"), ("revoked", "revoked")] {
                    option value=(value) selected[q.show == value] { (label) }
                }
            }
            label for="q" { "Search" }
            input #q name="q" value=(q.q) type="search";
            button.secondary type="submit" { "Filter" }
        }
        form method="post" action=(format!("/reviews/{}/decide", c.id)) {
            (csrf(viewer))
            @if matching.is_empty() { p.empty { "No item matches." } }
            @else {
                table {
                    thead { tr {
                        th { span.sr { "Select" } } th { "Person" } th { "Access" } th { "Reviewer" } th { "Decision" }
                    } }
                    tbody {
                        @for i in matching.iter().take(SHOWN) {
                            tr {
                                td {
                                    @if may_decide(i) {
                                        input type="checkbox" name="item" value=(i.id) id=(format!("pick-{}", i.id)) aria-label=(format!("Select {} {}", i.subject, i.id));
                                    }
                                }
                                td data-label="Person" { (i.subject) }
                                td data-label="Access" {
                                    (i.access)
                                    br; small { "Revoking " (i.revocation) "." }
                                    @if let Some(why) = &i.protected { br; small { "Cannot be revoked: " (why) } }
                                }
                                td data-label="Reviewer" { (i.reviewer) }
                                td data-label="Decision" {
                                    @match i.decision {
                                        None if may_decide(i) => {
                                            div.actions {
                                                button type="submit" name="one" value=(format!("keep:{}", i.id)) aria-label=(format!("Keep {} for {}", i.id, i.subject)) { "Keep" }
                                                @if i.protected.is_none() {
                                                    button.secondary type="submit" name="one" value=(format!("revoke:{}", i.id)) aria-label=(format!("Revoke {} for {}", i.id, i.subject)) { "Revoke" }
                                                }
                                            }
                                        }
                                        None => { span.muted { "undecided" } }
                                        Some(d) => {
                                            span class=(if d == Verdict::Keep { "state state-good" } else { "state state-bad" }) { (d.as_str()) }
                                            " by " (i.decided_by.clone().unwrap_or_default())
                                            @if let Some(at) = i.decided_at { " " (when(at, now)) }
                                            @if let Some(r) = &i.reason { @if !r.is_empty() { div.reason { (r) } } }
                                            @if d == Verdict::Revoke {
                                                @match i.revocation_verified_at {
                                                    Some(t) => { div { small { "removed, verified " (when(t, now)) } } }
                                                    None => { div { small.muted { "removal pending" @if let Some(e) = &i.revocation_error { ": " (e) } } } }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if matching.len() > SHOWN {
                    p.notice { (matching.len() - SHOWN) " more: narrow with the search, or export the whole campaign." }
                }
            }
            @if decidable > 0 {
                label for="reason" { "Reason (required to revoke" @if c.keep_reason_required { " and to keep" } ")" }
                input #reason name="reason";
                div.actions {
                    button type="submit" name="action" value="keep" { "Keep selected" }
                    button.secondary type="submit" name="action" value="revoke" { "Revoke selected" }
                }
            }
        }
        @if viewer.actor.is_admin() && c.is_open() {
            form method="post" action=(format!("/reviews/{}/close", c.id)) {
                (csrf(viewer))
                div.actions { button.secondary type="submit" { "Close the campaign" } }
            }
        }
        @if viewer.actor.is_auditor() {
            section aria-labelledby="evidence" {
                h2 #evidence { "Evidence" }
                p {
                    a href=(export("report.html")) { "report.html" } " (prints to PDF) · "
                    a href=(export("items.csv")) { "items.csv" } " · "
                    a href=(export("items.json")) { "items.json" } " · "
                    a href=(export("manifest.json")) { "manifest.json" } " (SHA-256 of each)"
                }
            }
        }
    };
    Page(
        if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        },
        layout::page(
            &c.name,
            Some(&chrome),
            Section::Approvals,
            layout::flash(q.done.as_deref()),
            body,
        ),
    )
}

#[derive(Deserialize, Default)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    /// `keep:i3` or `revoke:i3`: one item's own button.
    #[serde(default)]
    one: String,
    /// With `item`s checked: `keep` or `revoke`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
}

pub async fn decide(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    // Checkboxes repeat `item`: read the pairs, not a struct.
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let form = DecideForm {
        csrf: field("csrf"),
        one: field("one"),
        action: field("action"),
        reason: field("reason"),
    };
    if let Err(page) = check_csrf(&app, &viewer, &form.csrf).await {
        return page.into_response();
    }
    let (verdict, items): (&str, Vec<String>) = match form.one.split_once(':') {
        Some((v, item)) => (v, vec![item.to_owned()]),
        None => (
            form.action.as_str(),
            pairs
                .iter()
                .filter(|(k, _)| k == "item")
                .map(|(_, v)| v.clone())
                .collect(),
        ),
    };
    let verdict = match verdict {
        "keep" => Verdict::Keep,
        "revoke" => Verdict::Revoke,
        _ => return Redirect::to(&format!("/reviews/{id}")).into_response(),
    };
    let back = CampaignQuery::default();
    if items.is_empty() {
        return campaign_page(
            &app,
            &viewer,
            &id,
            &back,
            Some("Select the items to decide first."),
        )
        .await
        .into_response();
    }
    let asks: Vec<Ask> = items
        .into_iter()
        .map(|item| Ask {
            item,
            verdict,
            reason: form.reason.clone(),
        })
        .collect();
    match app.service.decide_review(&viewer.actor, &id, &asks).await {
        Ok(_) => {
            Redirect::to(&format!("/reviews/{id}?done=review-decided&show=mine")).into_response()
        }
        Err(e) => campaign_page(&app, &viewer, &id, &back, Some(&e.to_string()))
            .await
            .into_response(),
    }
}

pub async fn close(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<super::CsrfForm>,
) -> Response {
    if let Err(page) = check_csrf(&app, &viewer, &f.csrf).await {
        return page.into_response();
    }
    let Some(admin) = viewer.actor.admin() else {
        return layout::message(
            &app,
            Some(&viewer),
            StatusCode::FORBIDDEN,
            "Access review",
            "Only admins close campaigns.",
        )
        .await
        .into_response();
    };
    match app.service.close_review(admin, &id).await {
        Ok(_) => Redirect::to(&format!("/reviews/{id}?done=review-closed")).into_response(),
        Err(e) => campaign_page(
            &app,
            &viewer,
            &id,
            &CampaignQuery::default(),
            Some(&e.to_string()),
        )
        .await
        .into_response(),
    }
}

#[derive(Deserialize)]
pub struct ExportQuery {
    /// The time the page offered the export (Unix seconds): every file of one export says the
    /// same, so the manifest's hashes match the files downloaded beside it.
    at: i64,
    /// The audit log's length then: its last entry's hash is the chain head named.
    head: i64,
}

pub async fn export(
    State(app): State<AppState>,
    viewer: Viewer,
    Path((id, file)): Path<(String, String)>,
    Query(q): Query<ExportQuery>,
) -> Response {
    match export_file(&app, &viewer, &id, &file, &q).await {
        Ok(response) => response,
        Err((status, e)) => layout::message(&app, Some(&viewer), status, "Access review", &e)
            .await
            .into_response(),
    }
}

async fn export_file(
    app: &AppState,
    viewer: &Viewer,
    id: &str,
    file: &str,
    q: &ExportQuery,
) -> Result<Response, (StatusCode, String)> {
    let auditor = viewer.actor.auditor().ok_or((
        StatusCode::FORBIDDEN,
        "Only admins and auditors export evidence.".to_owned(),
    ))?;
    let failed = |e: ServiceError| (StatusCode::BAD_REQUEST, e.to_string());
    let v = app
        .service
        .review_for_export(auditor, id)
        .await
        .map_err(failed)?;
    let hash = app
        .service
        .store()
        .audit((q.head - 1).max(0), 1)
        .await
        .map_err(|e| failed(e.into()))?
        .first()
        .map_or(tidegate_core::audit::GENESIS.to_owned(), |e| e.hash.clone());
    let at = time::OffsetDateTime::from_unix_timestamp(q.at).unwrap_or_else(|_| app.service.now());
    let head = tidegate_core::service::AuditHead {
        length: q.head.max(0),
        hash,
        at: tidegate_core::time_text(at),
    };
    let bundle = crate::evidence::review_bundle(&v, &head, crate::evidence::Format::All);
    let text = bundle.files.get(file).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!(
                "an export has report.html, items.csv, items.json and manifest.json, not {file:?}"
            ),
        )
    })?;
    let kind = match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("csv") => "text/csv; charset=utf-8",
        _ => "application/json",
    };
    let disposition = format!("attachment; filename=\"{}-{file}\"", v.campaign.id);
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        text.clone(),
    )
        .into_response())
}
