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
    let active: Vec<_> = mine
        .iter()
        .filter(|r| r.state == RequestState::Active)
        .collect();
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
            @for r in &active {
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
                        @if r.extension.is_none() {
                            form method="post" action=(format!("/requests/{}/act", r.id)) class="inline-form" {
                                (csrf(&viewer))
                                input type="hidden" name="back" value="/";
                                label for=(format!("extend-{}", r.id)) { "More time" }
                                input id=(format!("extend-{}", r.id)) name="duration" value="30m" size="5" required;
                                button type="submit" name="action" value="extend" { "Extend" }
                            }
                        }
                        form method="post" action=(format!("/requests/{}/act", r.id)) {
                            (csrf(&viewer))
                            input type="hidden" name="back" value="/";
                            button.secondary type="submit" name="action" value="drop" { "Drop" }
                        }
                    }
                }
            }
        }
        section aria-labelledby="waiting" {
            h2 #waiting { "Waiting" }
            @if waiting.is_empty() {
                p.muted { "Nothing waiting." }
            } @else {
                ul.items { @for r in &waiting { (request_item(r, now, false)) } }
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
