//! `/requests/{id}`: one request, titled "prod-ssh for carol": its state, the one action that
//! fits the viewer (cancel, approve or deny, claim the key, extend, drop or revoke, review a
//! break-glass grant), and its timeline in plain sentences. Every action is a POST to
//! `/requests/{id}/act`; success redirects with a flash, failure shows the page again with the
//! error and what was typed.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tidegate_core::entitlement::Strategy;
use tidegate_core::request::{Request, State as RequestState};

use super::layout::{self, Chrome, Page, Section, csrf, when};
use super::session::{self, Viewer};
use super::{Done, check_csrf, local_path};
use crate::AppState;

pub async fn page(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Page {
    render(
        &app,
        &viewer,
        &id,
        layout::flash(done.done.as_deref()),
        None,
        &ActForm::default(),
    )
    .await
}

async fn render(
    app: &AppState,
    viewer: &Viewer,
    id: &str,
    flash: Option<&str>,
    error: Option<&str>,
    typed: &ActForm,
) -> Page {
    let now = app.service.now();
    let r = match app.service.get(&viewer.actor, id).await {
        Ok(r) => r,
        Err(e) => {
            return layout::message(
                app,
                Some(viewer),
                StatusCode::NOT_FOUND,
                "Request",
                &e.to_string(),
            )
            .await;
        }
    };
    let trail = app
        .service
        .store()
        .audit_of_request(id)
        .await
        .unwrap_or_default();
    let dir = app.service.directory().await.ok();
    let may_review = dir
        .as_ref()
        .is_some_and(|d| app.service.may_review(&r, &viewer.actor, d));
    let entitlement = app.service.entitlement(&r.entitlement).ok();
    let may_revoke = dir
        .as_ref()
        .is_some_and(|d| viewer.actor.may_revoke(&r, entitlement, d));
    let is_key = entitlement.is_some_and(|e| matches!(e.strategy, Strategy::AuthKey { .. }));
    let mine = r.requester == viewer.login;
    // Devices are stored by node ID; people know them by name.
    let live = app.service.live().await.ok();
    let devices: Vec<String> = r
        .devices
        .iter()
        .map(|id| {
            live.as_ref()
                .and_then(|l| l.devices.iter().find(|d| d.node_id == *id || d.id == *id))
                .map_or_else(|| id.clone(), |d| d.name.clone())
        })
        .collect();
    let chrome = Chrome::of(app, viewer).await;
    let body = html! {
        p.summary {
            (layout::badge(&r, now)) " "
            (r.duration.to_string())
            @for x in &r.extended { " + " (x.duration.to_string()) }
            @match (r.state, r.expires_at, r.ended_at) {
                (RequestState::Active, Some(end), _) => { ", ends " (when(end, now)) }
                (_, _, Some(ended)) => { ", ended " (when(ended, now)) }
                (RequestState::Pending, _, _) => { ", lapses " (when(r.pending_until, now)) " if nobody decides" }
                _ => {}
            }
        }
        @if !devices.is_empty() {
            p { "On " @for (i, d) in devices.iter().enumerate() { @if i > 0 { ", " } (layout::device(d)) } }
        }
        @if !r.reason.is_empty() { p.reason { (r.reason) } }
        @if r.overdue(now) && r.access_ends_at().is_some_and(|end| now - end > time::Duration::minutes(1)) {
            p.error role="alert" { "Overdue: past its end, and its removal from the tailnet is not yet verified. tidegate keeps trying." }
        }
        (layout::error(error))
        (actions(&r, viewer, Actions { mine, may_review, may_revoke, is_key }, typed))
        @if r.break_glass { (break_glass(&r, viewer, now)) }
        h2 { "Timeline" }
        ol.timeline {
            @for e in &trail {
                li {
                    (sentence(e)) " "
                    span.muted {
                        @match tailnet::clock::parse_rfc3339(&e.at) {
                            Some(t) => (when(t, now)),
                            None => (e.at),
                        }
                    }
                }
            }
        }
    };
    let title = format!("{} for {}", r.entitlement, r.requester);
    Page(
        if error.is_some() {
            StatusCode::CONFLICT
        } else {
            StatusCode::OK
        },
        layout::page(&title, Some(&chrome), Section::None, flash, body),
    )
}

struct Actions {
    mine: bool,
    may_review: bool,
    may_revoke: bool,
    is_key: bool,
}

/// The viewer's possible actions, the likeliest one as the primary button.
fn actions(r: &Request, viewer: &Viewer, can: Actions, typed: &ActForm) -> Markup {
    let action = format!("/requests/{}/act", r.id);
    let deciding = can.may_review && (r.state == RequestState::Pending || r.extension.is_some());
    html! {
        @if deciding {
            form method="post" action=(action) class="stack" {
                (csrf(viewer))
                @if let Some(ext) = &r.extension {
                    p { (r.requester) " asks for " strong { (ext.duration.to_string()) " more" }
                        @if !ext.reason.is_empty() { ": " (ext.reason) } }
                }
                label for="comment" { "Comment" }
                input #comment name="comment" value=(typed.comment);
                div.actions {
                    button type="submit" name="action" value="approve" { "Approve" }
                    button.secondary type="submit" name="action" value="deny" { "Deny" }
                }
            }
        }
        @if can.mine && r.state == RequestState::Pending {
            form method="post" action=(action) {
                (csrf(viewer))
                button.secondary[deciding] type="submit" name="action" value="cancel" { "Cancel request" }
            }
        }
        @if can.mine && can.is_key && r.state == RequestState::Approved {
            form method="post" action=(action) {
                (csrf(viewer))
                button type="submit" name="action" value="claim" { "Claim the key" }
                p.muted { "It is shown once, on the next page, and never stored." }
            }
        }
        @if can.mine && r.state == RequestState::Active && r.extension.is_none() && !deciding {
            form method="post" action=(action) class="stack" {
                (csrf(viewer))
                label #more-time for="duration" { "More time" }
                input #duration name="duration" value=(if typed.duration.is_empty() { "30m" } else { typed.duration.as_str() }) required;
                label for="why" { "Why" }
                input #why name="comment" value=(typed.comment);
                div.actions {
                    button type="submit" name="action" value="extend" { "Ask for more time" }
                }
            }
        }
        @if can.mine && r.extension.is_some() && !deciding {
            p.muted { "More time asked for: waiting for approval." }
        }
        @if can.mine && matches!(r.state, RequestState::Active | RequestState::Approved) {
            form method="post" action=(action) {
                (csrf(viewer))
                button.secondary type="submit" name="action" value="drop" { "Drop: end my access now" }
            }
        } @else if can.may_revoke && matches!(r.state, RequestState::Active | RequestState::Approved) {
            form method="post" action=(action) class="stack" {
                (csrf(viewer))
                label for="revoke-reason" { "Reason to revoke" }
                input #revoke-reason name="comment" value=(typed.comment);
                div.actions { button.secondary type="submit" name="action" value="revoke" { "Revoke" } }
            }
        }
    }
}

/// A break-glass grant's after-the-fact review: done (by whom, what they found), or a form
/// for admins and auditors.
fn break_glass(r: &Request, viewer: &Viewer, now: time::OffsetDateTime) -> Markup {
    html! {
        section.card aria-labelledby="bg" {
            h2 #bg { "Break-glass" }
            @match &r.break_glass_review {
                Some(done) => p {
                    "Reviewed by " (done.reviewer) " " (when(done.at, now)) ": " span.reason { (done.note) }
                },
                None => {
                    p { "Taken in an emergency without approval; not yet reviewed." }
                    @if viewer.actor.auditor().is_some() {
                        form method="post" action=(format!("/requests/{}/act", r.id)) class="stack" {
                            (csrf(viewer))
                            label for="note" { "What the review found" }
                            input #note name="comment" required;
                            div.actions { button.secondary type="submit" name="action" value="review" { "Mark reviewed" } }
                        }
                    }
                }
            }
        }
    }
}

/// An audit entry of a request as a plain sentence, with the comment or reason it carries.
pub fn sentence(e: &tidegate_core::audit::AuditEntry) -> String {
    let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
    let said = |key: &str| {
        detail[key]
            .as_str()
            .filter(|t| !t.trim().is_empty())
            .map(|t| format!(": {t}"))
            .unwrap_or_default()
    };
    let who = &e.actor;
    match e.action.as_str() {
        "request.created" => format!("{who} asked for it{}", said("reason")),
        "request.approval" => format!("{who} approved{}", said("comment")),
        "request.approved" => "Approved: enough approvals".to_owned(),
        "request.auto_approved" => "Approved automatically".to_owned(),
        "request.break_glass" => {
            format!("{who} took it in an emergency (break-glass), to be reviewed")
        }
        "request.break_glass_reviewed" => {
            format!("{who} reviewed the break-glass grant{}", said("note"))
        }
        "request.denied" => format!("{who} denied{}", said("comment")),
        "request.cancelled" => format!("{who} cancelled it"),
        "request.lapsed" => "Lapsed: nobody decided in time".to_owned(),
        "grant.applying" => "tidegate is giving the access".to_owned(),
        "grant.applied" => "Access given in the tailnet".to_owned(),
        "grant.expired" => "The grant's time ran out".to_owned(),
        "grant.removing" => "tidegate is removing the access".to_owned(),
        "grant.removal_verified" => "Access removed, checked in the tailnet".to_owned(),
        "grant.revoked" => format!("{who} revoked it{}", said("reason")),
        "grant.dropped" => format!("{who} ended it early"),
        "grant.failed" => format!("It could not be applied{}", said("reason")),
        "extension.requested" => format!(
            "{who} asked for {} more{}",
            detail["duration"].as_str().unwrap_or("time"),
            said("reason")
        ),
        "extension.approval" => format!("{who} approved the extension{}", said("comment")),
        "extension.denied" => format!("{who} denied the extension{}", said("comment")),
        "grant.extended" => "Extended".to_owned(),
        "tailnet.change_failed" => format!("A tailnet change failed{}", said("error")),
        other => format!("{} by {who}", other.replace(['_', '.'], " ")),
    }
}

#[derive(Deserialize, Default)]
pub struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    duration: String,
    /// Where to go back to after success (a local path), else the request's page.
    #[serde(default)]
    back: String,
}

pub async fn act(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<ActForm>,
) -> Response {
    if let Err(page) = check_csrf(&app, &viewer, &f.csrf).await {
        return page.into_response();
    }
    let who = &viewer.actor;
    if f.action == "claim" {
        return match app.service.claim_key(who, &id).await {
            Ok((_, secret)) => key_once(&app, &id, &secret),
            Err(e) => render(&app, &viewer, &id, None, Some(&e.to_string()), &f)
                .await
                .into_response(),
        };
    }
    let (done, code) = match f.action.as_str() {
        "approve" => (app.service.approve(who, &id, &f.comment).await, "approved"),
        "deny" => (app.service.deny(who, &id, &f.comment).await, "denied"),
        "drop" => (app.service.drop_grant(who, &id).await, "dropped"),
        "cancel" => (app.service.cancel(who, &id).await, "cancelled"),
        "revoke" => (app.service.revoke(who, &id, &f.comment).await, "revoked"),
        "review" => (
            app.service.review_break_glass(who, &id, &f.comment).await,
            "reviewed",
        ),
        "extend" => match f.duration.trim().parse() {
            Ok(d) => (
                app.service.extend(who, &id, d, &f.comment).await,
                "extension",
            ),
            Err(e) => {
                let error = format!("Duration: {e}");
                return render(&app, &viewer, &id, None, Some(&error), &f)
                    .await
                    .into_response();
            }
        },
        other => {
            let error = format!("{other:?} is not something a request can do");
            return render(&app, &viewer, &id, None, Some(&error), &f)
                .await
                .into_response();
        }
    };
    match done {
        Ok(_) => {
            app.service.wake_reconciler();
            let back = if f.back.is_empty() {
                format!("/requests/{id}")
            } else {
                local_path(Some(&f.back))
            };
            let sep = if back.contains('?') { '&' } else { '?' };
            Redirect::to(&format!("{back}{sep}done={code}")).into_response()
        }
        Err(e) => render(&app, &viewer, &id, None, Some(&e.to_string()), &f)
            .await
            .into_response(),
    }
}

/// The cookie that carries a just-claimed key to the one page that shows it. The key is never
/// stored by tidegate: it goes to the claimant's browser, scoped to that page, for two minutes,
/// and the page clears it as it shows it (so a reload, or another replica, shows nothing).
fn key_cookie(app: &AppState, id: &str, value: &str, max_age: u32) -> Option<HeaderValue> {
    let secure = if session::served_over_https(app) {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "tidegate_key={value}; Path=/requests/{id}/key; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// The redirect after a claim, with the key in its one-page cookie.
fn key_once(app: &AppState, id: &str, secret: &str) -> Response {
    let mut response = Redirect::to(&format!("/requests/{id}/key")).into_response();
    if let Some(cookie) = key_cookie(app, id, secret, 120) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Shows a just-claimed key once, with the command that uses it.
pub async fn claimed_key(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = session::cookies(&headers, "tidegate_key")
        .find(|v| v.starts_with("tskey-"))
        .map(str::to_owned);
    let back = format!("/requests/{id}");
    let body = html! {
        @match &key {
            Some(key) => {
                p.flash role="status" { "Your key, shown this once: copy it now." }
                p { code #key { (key) } }
                p { "On the machine to join:" }
                pre { code #command { "tailscale up --auth-key=" (key) } }
                p { button type="button" data-copy="command" { "Copy the command" } }
                p.muted { "tidegate does not keep it; it expires with the grant. " a href=(back) { "Back to the request" } }
            }
            None => {
                p { "This key was shown once and is not kept anywhere: it cannot be shown again. " a href=(back) { "Back to the request" } }
            }
        }
    };
    let chrome = Chrome::of(&app, &viewer).await;
    let mut response = Page(
        StatusCode::OK,
        layout::page("Your auth key", Some(&chrome), Section::None, None, body),
    )
    .into_response();
    if key.is_some()
        && let Some(clear) = key_cookie(&app, &id, "", 0)
    {
        response.headers_mut().insert(header::SET_COOKIE, clear);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
