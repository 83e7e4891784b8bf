//! `/`: my access. Active grants first (with Drop and Extend), then what is waiting, then the
//! recent past.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use maud::html;
use tidegate_core::request::State as RequestState;
use tidegate_core::store::RequestFilter;

use super::Done;
use super::layout::{self, Chrome, Page, Section, csrf, request_item, when};
use super::session::Viewer;
use crate::AppState;

/// Active grants shown as cards; more are counted.
const SHOWN_ACTIVE: usize = 15;

pub async fn page(State(app): State<AppState>, viewer: Viewer, Query(done): Query<Done>) -> Page {
    let now = app.service.now();
    let mine = match app
        .service
        .list(
            &viewer.actor,
            &RequestFilter {
                requester: Some(viewer.login.clone()),
                limit: Some(100),
                ..RequestFilter::default()
            },
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return layout::message(
                &app,
                Some(&viewer),
                StatusCode::SERVICE_UNAVAILABLE,
                "My access",
                &e.to_string(),
            )
            .await;
        }
    };
    // Bounded lists keep the page small (at most 20 KB) whatever the history.
    let active: Vec<_> = mine
        .iter()
        .filter(|r| r.state == RequestState::Active)
        .collect();
    let more_active = active.len().saturating_sub(SHOWN_ACTIVE);
    let waiting: Vec<_> = mine
        .iter()
        .filter(|r| matches!(r.state, RequestState::Pending | RequestState::Approved))
        .collect();
    let past: Vec<_> = mine
        .iter()
        .filter(|r| r.state.is_final())
        .take(15)
        .collect();
    let chrome = Chrome::of(&app, &viewer).await;
    let body = html! {
        section aria-labelledby="active" {
            h2 #active { "Active grants" }
            @if active.is_empty() {
                p.empty { "You hold no access right now. " a.button href="/request" { "Request access" } }
            }
            @for r in active.iter().take(SHOWN_ACTIVE) {
                article.card {
                    h3 { a href=(format!("/requests/{}", r.id)) { (r.entitlement) } " " (layout::badge(r, now)) }
                    p {
                        "Ends " @if let Some(end) = r.expires_at { (when(end, now)) }
                        @if let Some(ext) = &r.extension {
                            " · " (ext.duration.to_string()) " more asked, waiting for approval"
                        }
                    }
                    @if !r.reason.is_empty() { p.reason { (r.reason) } }
                    div.actions {
                        form method="post" action=(format!("/requests/{}/act", r.id)) {
                            (csrf(&viewer))
                            input type="hidden" name="back" value="/";
                            button.secondary type="submit" name="action" value="drop" aria-label=(format!("Drop {}", r.entitlement)) { "Drop" }
                        }
                        @if r.extension.is_none() {
                            a href=(format!("/requests/{}#more-time", r.id)) { "More time…" }
                        }
                    }
                }
            }
        }
        @if more_active > 0 {
            p.muted { "And " (more_active) " more active grants: " code { "tidegate list --mine --state active" } " lists them all." }
        }
        section aria-labelledby="waiting" {
            h2 #waiting { "Waiting" }
            @if waiting.is_empty() {
                p.muted { "Nothing waiting." }
            } @else {
                ul.items { @for r in waiting.iter().take(10) { (request_item(r, now, false)) } }
                @if waiting.len() > 10 { p.muted { "And " (waiting.len() - 10) " more." } }
            }
        }
        section aria-labelledby="past" {
            h2 #past { "Recent" }
            @if past.is_empty() {
                p.muted { "No past requests yet." }
            } @else {
                ul.items { @for r in &past { (request_item(r, now, false)) } }
            }
        }
    };
    Page(
        StatusCode::OK,
        layout::page(
            "My access",
            Some(&chrome),
            Section::Access,
            layout::flash(done.done.as_deref()),
            body,
        ),
    )
}
