//! `/approvals`: what waits for my decision (requests and extensions), each with what it gives,
//! "1 of 2 approvals", when it lapses, and a comment with Approve and Deny; then my recent
//! decisions.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use maud::html;
use tidegate_core::request::Request;
use tidegate_core::store::RequestFilter;

use super::Done;
use super::layout::{self, Chrome, Page, Section, csrf, when};
use super::session::Viewer;
use crate::AppState;

/// Requests shown with their forms; more are counted.
const SHOWN: usize = 12;

pub async fn page(State(app): State<AppState>, viewer: Viewer, Query(done): Query<Done>) -> Page {
    let now = app.service.now();
    let mut waiting = layout::waiting_for(&app, &viewer).await;
    // Those that lapse first come first; the page shows a bounded number (at most 20 KB).
    waiting.sort_by_key(|r| {
        r.extension
            .as_ref()
            .map_or(r.pending_until, |x| x.requested_at)
    });
    let total = waiting.len();
    // One read of the live policy and inventory for every request on the page.
    let snapshot = tidegate_core::preview::Snapshot::default();
    let mut cards = Vec::new();
    for r in waiting.iter().take(SHOWN) {
        let gives = match app.service.entitlement(&r.entitlement) {
            Ok(e) => {
                snapshot
                    .what_it_gives(&app.service, e, &r.requester, &r.devices)
                    .await
            }
            Err(e) => vec![e.to_string()],
        };
        let needed = app
            .service
            .entitlement(&r.entitlement)
            .map_or(1, |e| e.approvals);
        cards.push((r, gives, needed));
    }
    let recent = recent_decisions(&app, &viewer).await;
    let chrome = Chrome::new(&viewer, total);
    let body = html! {
        @if cards.is_empty() {
            p.empty { "Nothing is waiting for you." }
        }
        @for (r, gives, needed) in &cards {
            @let reviews = r.extension.as_ref().map_or(&r.reviews, |x| &x.reviews);
            @let approved: Vec<&str> = reviews.iter().filter(|x| x.approve).map(|x| x.reviewer.as_str()).collect();
            article.card {
                h2 { a href=(format!("/requests/{}", r.id)) { (r.entitlement) } " for " (r.requester) }
                @match &r.extension {
                    Some(ext) => p {
                        strong { (r.requester) } " asks for " strong { (ext.duration.to_string()) " more" }
                        " on an active grant (it ends "
                        @if let Some(end) = r.expires_at { (when(end, now)) }
                        "), " (when(ext.requested_at, now)) "."
                    },
                    None => p {
                        strong { (r.requester) } " asks for " strong { (r.duration.to_string()) } ", " (when(r.created_at, now)) "."
                        " Lapses " (when(r.pending_until, now)) " if nobody decides."
                    },
                }
                @let reason = r.extension.as_ref().map_or(r.reason.as_str(), |x| x.reason.as_str());
                @if !reason.is_empty() { p.reason { (reason) } }
                ul.gives { @for g in gives { li { (g) } } }
                p.muted {
                    (approved.len()) " of " (needed) " approval" @if *needed != 1 { "s" }
                    @if !approved.is_empty() { " (" (approved.join(", ")) ")" }
                }
                form method="post" action=(format!("/requests/{}/act", r.id)) class="stack" {
                    (csrf(&viewer))
                    input type="hidden" name="back" value="/approvals";
                    label for=(format!("comment-{}", r.id)) { "Comment" }
                    input id=(format!("comment-{}", r.id)) name="comment";
                    div.actions {
                        button type="submit" name="action" value="approve" { "Approve" }
                        button.secondary type="submit" name="action" value="deny" { "Deny" }
                    }
                }
            }
        }
        @if total > SHOWN {
            p.notice { (total - SHOWN) " more are waiting: decide these first, or " code { "tidegate list --pending" } " lists them all." }
        }
        p { "Access reviews of standing access: " a href="/reviews" { "your review items and campaigns" } "." }
        section aria-labelledby="recent" {
            h2 #recent { "My recent decisions" }
            @if recent.is_empty() {
                p.muted { "None yet." }
            } @else {
                ul.items {
                    @for (r, approve, comment) in &recent {
                        li {
                            a href=(format!("/requests/{}", r.id)) { (r.entitlement) } " for " (r.requester) ": "
                            @if *approve { span.state.state-good { "approved" } } @else { span.state.state-bad { "denied" } }
                            @if !comment.is_empty() { " " span.muted { "“" (comment) "”" } }
                        }
                    }
                }
            }
        }
    };
    Page(
        StatusCode::OK,
        layout::page(
            "Approvals",
            Some(&chrome),
            Section::Approvals,
            layout::flash(done.done.as_deref()),
            body,
        ),
    )
}

/// The last ten requests this viewer decided, with their decision and comment.
async fn recent_decisions(app: &AppState, viewer: &Viewer) -> Vec<(Request, bool, String)> {
    let recent = app
        .service
        .list(
            &viewer.actor,
            &RequestFilter {
                limit: Some(300),
                ..RequestFilter::default()
            },
        )
        .await
        .unwrap_or_default();
    recent
        .into_iter()
        .filter_map(|r| {
            let mine = r
                .reviews
                .iter()
                .chain(r.extended.iter().flat_map(|x| &x.reviews))
                .rfind(|x| x.reviewer == viewer.login)
                .map(|x| (x.approve, x.comment.clone()));
            mine.map(|(approve, comment)| (r, approve, comment))
        })
        .take(10)
        .collect()
}
