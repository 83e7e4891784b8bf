//! `/login` and `/logout`: sign in through the identity provider, through `tailscale serve`,
//! or (in the demo only) as an example user; sign out ends the session on the server too.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Page, Section};
use super::session::{self, Viewer};
use super::{CsrfForm, check_csrf, local_path};
use crate::AppState;

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn page(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let next = local_path(q.next.as_deref());
    // Behind `tailscale serve`: the proxy vouches for the login; start a session for it.
    if let Some(login) = session::proxy_login(&headers, Some(peer), &app) {
        return match session::start(&app, &login).await {
            Ok(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response(),
            Err(e) => e.into_response(),
        };
    }
    let body = html! {
        @if app.service.config().auth.oidc.is_some() {
            p { a.button href=(format!("/login/oidc?next={}", session::urlencoding(&next))) { "Sign in with your identity provider" } }
        } @else if app.demo_logins.is_empty() {
            p { "Open tidegate through " code { "tailscale serve" } " (with this address in " code { "[auth] trusted_proxy" } ") to sign in with your tailnet identity." }
        } @else {
            p { "Demo mode: sign in as one of the example users." }
            form method="post" action="/login" class="stack" {
                input type="hidden" name="next" value=(next);
                label for="user" { "User" }
                select #user name="user" { @for login in &app.demo_logins { option { (login) } } }
                button type="submit" { "Sign in" }
            }
        }
    };
    Page(
        StatusCode::OK,
        layout::page("Sign in", None, Section::None, None, body),
    )
    .into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    #[serde(default)]
    next: String,
}

pub async fn submit(State(app): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    if !app.demo_logins.contains(&f.user) {
        return layout::signed_out_message(
            StatusCode::FORBIDDEN,
            "Sign in",
            "Signing in by name works in demo mode only, as one of the example users.",
        )
        .into_response();
    }
    match session::start(&app, &f.user).await {
        Ok(cookie) => (
            [(header::SET_COOKIE, cookie)],
            Redirect::to(&local_path(Some(&f.next))),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn logout(
    State(app): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(page) = check_csrf(&app, &viewer, &f.csrf).await {
        return page.into_response();
    }
    if let Some(secret) = session::cookie_secret(&headers, session::cookie_name(&app)) {
        let _ = app
            .service
            .store()
            .delete_token(&crate::tokens::hash(&secret))
            .await;
    }
    (
        [(header::SET_COOKIE, session::clear_cookie(&app))],
        Redirect::to("/login"),
    )
        .into_response()
}
