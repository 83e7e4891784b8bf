//! The frame every page shares (header, navigation with the waiting count, flash message) and
//! the small components pages are made of.
//!
//! Pages are maud templates: HTML written in Rust, checked when tidegate compiles, every
//! spliced value escaped unless it says otherwise. No template files to ship or to find at run
//! time, no front-end build step, and a page cannot reference a field that does not exist.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use tidegate_core::request::{Request, State as RequestState};
use tidegate_core::store::RequestFilter;

use super::session::Viewer;
use crate::AppState;

/// A page's answer: its status and HTML.
pub struct Page(pub StatusCode, pub Markup);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        (self.0, Html(self.1.into_string())).into_response()
    }
}

/// What the header needs to know about the viewer: computed once per page.
pub struct Chrome {
    pub viewer: Viewer,
    /// Requests and extensions waiting for this viewer's review.
    pub waiting: usize,
    /// Admins and auditors see the Admin pages.
    pub admin: bool,
}

impl Chrome {
    pub async fn of(app: &AppState, viewer: &Viewer) -> Chrome {
        Chrome::new(viewer, waiting_for(app, viewer).await.len())
    }

    /// For a page that has already worked out what waits for the viewer.
    pub fn new(viewer: &Viewer, waiting: usize) -> Chrome {
        Chrome {
            viewer: viewer.clone(),
            waiting,
            admin: viewer.actor.auditor().is_some(),
        }
    }
}

/// Pending requests and active grants with a pending extension that `viewer` may review.
pub async fn waiting_for(app: &AppState, viewer: &Viewer) -> Vec<Request> {
    let Ok(dir) = app.service.directory().await else {
        return Vec::new();
    };
    let open = app
        .service
        .list(
            &viewer.actor,
            &RequestFilter {
                states: vec![RequestState::Pending, RequestState::Active],
                limit: Some(500),
                ..RequestFilter::default()
            },
        )
        .await
        .unwrap_or_default();
    open.into_iter()
        .filter(|r| r.state == RequestState::Pending || r.extension.is_some())
        .filter(|r| app.service.may_review(r, &viewer.actor, &dir))
        .collect()
}

/// Which part of the site a page belongs to (marked in the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Access,
    Request,
    Approvals,
    Admin,
    Account,
    None,
}

/// The whole page around `body`.
pub fn page(
    title: &str,
    chrome: Option<&Chrome>,
    section: Section,
    flash: Option<&str>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · tidegate" }
                link rel="stylesheet" href="/static/app.css";
                link rel="icon" href="/static/favicon.svg" type="image/svg+xml";
                script src="/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    a.brand href="/" aria-label="tidegate home" {
                        img src="/static/favicon.svg" alt="" width="24" height="24";
                        span { "tidegate" }
                    }
                    @if let Some(c) = chrome { (nav(c, section)) }
                }
                main #main {
                    h1 { (title) }
                    @if let Some(text) = flash {
                        p.flash role="status" { (text) }
                    }
                    (body)
                }
            }
        }
    }
}

fn nav(c: &Chrome, section: Section) -> Markup {
    let link = |href: &str, label: &str, this: Section| {
        html! {
            a href=(href) aria-current=[(section == this).then_some("page")] { (label) }
        }
    };
    html! {
        nav aria-label="Main" {
            (link("/", "Access", Section::Access))
            (link("/request", "Request", Section::Request))
            a href="/approvals" aria-current=[(section == Section::Approvals).then_some("page")] {
                "Approvals"
                @if c.waiting > 0 {
                    " " span.count aria-label=(format!("{} waiting for you", c.waiting)) { (c.waiting) }
                }
            }
            @if c.admin { (link("/admin", "Admin", Section::Admin)) }
            a href="/account" aria-current=[(section == Section::Account).then_some("page")]
                title=(c.viewer.login) { "Account" }
        }
    }
}

/// The hidden field every form of the session carries.
pub fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A time as "in 42 min", with the exact UTC time for readers and the script.
pub fn when(t: time::OffsetDateTime, now: time::OffsetDateTime) -> Markup {
    let text = tidegate_core::time_text(t);
    html! { time datetime=(text) title=(text) { (tidegate_core::relative(t, now)) } }
}

/// The state as a coloured badge: active green, waiting amber, refused or failed red, ended
/// grey, overdue red.
pub fn badge(r: &Request, now: time::OffsetDateTime) -> Markup {
    let (class, text) =
        if r.overdue(now) && now - r.access_ends_at().unwrap_or(now) > time::Duration::minutes(1) {
            ("bad", "overdue")
        } else {
            let class = match r.state {
                RequestState::Active => "good",
                RequestState::Pending | RequestState::Approved => "wait",
                RequestState::Denied | RequestState::Failed => "bad",
                RequestState::Expired | RequestState::Revoked | RequestState::Cancelled => "ended",
            };
            (class, r.state.as_str())
        };
    html! { span class=(format!("state state-{class}")) { (text) } }
}

/// A request in a list: what, for whom, its state and its time.
pub fn request_item(r: &Request, now: time::OffsetDateTime, show_requester: bool) -> Markup {
    html! {
        li {
            a href=(format!("/requests/{}", r.id)) { (r.entitlement) }
            @if show_requester { " for " (r.requester) }
            " " (badge(r, now)) " "
            span.muted {
                @match (r.state, r.expires_at, r.ended_at) {
                    (RequestState::Active, Some(end), _) => { "ends " (when(end, now)) }
                    (RequestState::Pending, _, _) => { "asked " (when(r.created_at, now)) }
                    (_, _, Some(ended)) => { "ended " (when(ended, now)) }
                    _ => { "for " (r.duration.to_string()) }
                }
            }
            @if !r.reason.is_empty() { div.reason { (r.reason) } }
        }
    }
}

/// A device's short name that does not break at its hyphens.
pub fn device(name: &str) -> Markup {
    let short = name.split('.').next().unwrap_or(name);
    html! { span.nowrap { (short) } }
}

/// The error of a form, in the page above the form it belongs to.
pub fn error(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text {
            p.error role="alert" { (text) }
        }
    }
}

/// A message page (refusals, errors) that still leads somewhere.
pub async fn message(
    app: &AppState,
    viewer: Option<&Viewer>,
    status: StatusCode,
    title: &str,
    text: &str,
) -> Page {
    let chrome = match viewer {
        Some(v) => Some(Chrome::of(app, v).await),
        None => None,
    };
    Page(
        status,
        page(
            title,
            chrome.as_ref(),
            Section::None,
            None,
            html! {
                p.error role="alert" { (text) }
                p { a href="/" { "Back to my access" } }
            },
        ),
    )
}

/// A message page for someone not signed in (sign-in failures): it leads back to sign-in.
pub fn signed_out_message(status: StatusCode, title: &str, text: &str) -> Page {
    Page(
        status,
        page(
            title,
            None,
            Section::None,
            None,
            html! {
                p.error role="alert" { (text) }
                p { a href="/login" { "Back to sign-in" } }
            },
        ),
    )
}

/// What a flash code in `?done=` says after an action. Only these fixed texts are shown, so a
/// link cannot put words in tidegate's mouth.
pub fn flash(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "requested" => "Request sent. Approvers have been asked.",
        "granted" => "Approved automatically: the access is being given.",
        "approved" => "Approved.",
        "denied" => "Denied. The requester sees your comment.",
        "cancelled" => "Request cancelled.",
        "dropped" => "Access ended. tidegate is removing it from the tailnet.",
        "revoked" => "Revoked. tidegate is removing it from the tailnet.",
        "extension" => "More time asked for. Approvers have been asked.",
        "reviewed" => "Marked reviewed.",
        "checked" => "Checks run: the results below are new.",
        "token-revoked" => "Token revoked.",
        "signed-in" => "Signed in.",
        "review-started" => "Campaign started: its reviewers can decide now.",
        "review-decided" => "Decisions recorded. Revocations are being removed and verified.",
        "review-closed" => "Campaign closed.",
        _ => return None,
    })
}
