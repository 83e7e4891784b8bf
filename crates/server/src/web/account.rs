//! `/account`: who I am, my API tokens and web sessions (revoke any, this one marked), and
//! signing out.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::layout::{self, Chrome, Page, Section, csrf};
use super::session::{self, Viewer};
use super::{CsrfForm, Done, check_csrf};
use crate::AppState;

pub async fn page(
    State(app): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Page {
    let tokens = app
        .service
        .store()
        .tokens_of(&viewer.login)
        .await
        .unwrap_or_default();
    let this_session = session::cookie_secret(&headers, session::cookie_name(&app))
        .map(|secret| crate::tokens::hash(&secret));
    let chrome = Chrome::of(&app, &viewer).await;
    let role = if viewer.actor.is_admin() {
        "admin"
    } else if viewer.actor.auditor().is_some() {
        "auditor"
    } else {
        "member"
    };
    let body = html! {
        p { "Signed in as " strong { (viewer.login) } " (" (role) ")." }
        form method="post" action="/logout" {
            (csrf(&viewer))
            button.secondary type="submit" { "Sign out" }
        }
        h2 { "Tokens and sessions" }
        p.muted { "API tokens for the CLI and scripts come from " code { "tidegate token create" } "; each is shown once. Revoke any you no longer use." }
        @if tokens.is_empty() { p.empty { "None." } }
        ul.items {
            @for t in &tokens {
                li {
                    strong { (t.kind.as_str()) } " " code { (t.id()) }
                    @if this_session.as_deref() == Some(t.hash.as_str()) { " " span.state.state-good { "this session" } }
                    @if !t.description.is_empty() && t.description != session::SESSION_DESCRIPTION { " · " (t.description) }
                    div.muted {
                        "created " (t.created_at)
                        " · last used " (t.last_used_at.as_deref().unwrap_or("never"))
                        " · " @match &t.expires_at { Some(e) => { "expires " (e) }, None => "no expiry" }
                    }
                    form method="post" action=(format!("/account/tokens/{}/revoke", t.id())) {
                        (csrf(&viewer))
                        button.secondary type="submit" aria-label=(format!("Revoke {}", t.id())) { "Revoke" }
                    }
                }
            }
        }
    };
    Page(
        StatusCode::OK,
        layout::page(
            "Account",
            Some(&chrome),
            Section::Account,
            layout::flash(done.done.as_deref()),
            body,
        ),
    )
}

pub async fn revoke_token(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(page) = check_csrf(&app, &viewer, &f.csrf).await {
        return page.into_response();
    }
    match app
        .service
        .revoke_token(&viewer.actor, &viewer.login, &id)
        .await
    {
        Ok(_) => Redirect::to("/account?done=token-revoked").into_response(),
        Err(e) => layout::message(
            &app,
            Some(&viewer),
            StatusCode::CONFLICT,
            "Account",
            &e.to_string(),
        )
        .await
        .into_response(),
    }
}
