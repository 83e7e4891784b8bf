//! The web UI: server-rendered pages that work without JavaScript, one module per page on a
//! shared layout (`layout`). `/` my access, `/request`, `/approvals`, `/requests/{id}`,
//! `/account`, `/admin` (and its tabs), `/reviews` (access reviews), `/login`. Every form carries the session's CSRF token;
//! every page goes out with a strict Content-Security-Policy (scripts and styles from
//! `/static/` only, nothing inline) and `frame-ancestors 'none'`. The one script only shows
//! times in the viewer's own zone and copies keys.

mod account;
mod admin;
mod approvals;
mod governance;
pub mod layout;
mod login;
mod my_access;
mod oidc;
mod request;
mod request_page;
mod reviews;
pub mod session;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::AppState;
use layout::Page;
use session::Viewer;

const CSS: &str = include_str!("app.css");
const JS: &str = include_str!("app.js");

/// The web UI's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(my_access::page))
        .route("/request", get(request::form).post(request::submit))
        .route("/approvals", get(approvals::page))
        .route("/requests/{id}", get(request_page::page))
        .route("/requests/{id}/act", post(request_page::act))
        .route("/requests/{id}/key", get(request_page::claimed_key))
        .route("/account", get(account::page))
        .route("/account/tokens/{id}/revoke", post(account::revoke_token))
        .route("/admin", get(admin::overview))
        .route("/admin/break-glass", get(admin::break_glass))
        .route("/admin/audit", get(admin::audit))
        .route("/admin/audit.jsonl", get(admin::audit_export))
        .route("/admin/inventory", get(governance::inventory))
        .route("/admin/webhooks", get(admin::webhooks))
        .route(
            "/admin/compliance",
            get(governance::compliance).post(governance::run_now),
        )
        .route("/reviews", get(reviews::list).post(reviews::create))
        .route("/reviews/{id}", get(reviews::campaign))
        .route("/reviews/{id}/decide", post(reviews::decide))
        .route("/reviews/{id}/close", post(reviews::close))
        .route("/reviews/{id}/export/{file}", get(reviews::export))
        .route("/slack/link", get(crate::slack::link))
        .route("/login", get(login::page).post(login::submit))
        .route("/login/oidc", get(oidc::start))
        .route("/login/oidc/callback", get(oidc::callback))
        .route("/logout", post(login::logout))
        .route("/static/app.css", get(css))
        .route("/favicon.ico", get(favicon))
        .route("/static/favicon.svg", get(favicon))
        .route("/static/app.js", get(js))
}

/// `?done=CODE` after an action: the flash message to show (see `layout::flash`).
#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

/// A form that carries nothing but the session's CSRF token (sign out, revoke, run now).
#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// Refuses a form whose CSRF token is not this session's.
async fn check_csrf(app: &AppState, viewer: &Viewer, given: &str) -> Result<(), Page> {
    let same = given.len() == viewer.csrf.len()
        && given
            .bytes()
            .zip(viewer.csrf.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(layout::message(
            app,
            Some(viewer),
            StatusCode::FORBIDDEN,
            "Refused",
            "This form is stale or did not come from tidegate (CSRF check failed). Reload the page and try again.",
        )
        .await)
    }
}

/// Security headers on every answer (and HSTS when served over https).
pub async fn security_headers(
    State(app): State<AppState>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    if session::served_over_https(&app) {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A tide mark: two waves under a gate (SVG, so one small file serves every size).
const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 32 32\">\
<rect width=\"32\" height=\"32\" rx=\"6\" fill=\"#0b4f6c\"/>\
<path d=\"M8 6v14M24 6v14M8 8h16\" stroke=\"#fff\" stroke-width=\"3\" fill=\"none\"/>\
<path d=\"M4 22q4-3 8 0t8 0t8 0M4 27q4-3 8 0t8 0t8 0\" stroke=\"#7fd1ff\" stroke-width=\"2\" fill=\"none\"/></svg>";

async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        JS,
    )
}

/// Only paths on this site: `/` and then not a second slash or backslash, and no control
/// characters (browsers drop tabs and newlines from URLs, so `/\t/evil.example` would leave).
fn local_path(next: Option<&str>) -> String {
    next.filter(|n| {
        let mut chars = n.chars();
        chars.next() == Some('/')
            && !matches!(chars.next(), Some('/' | '\\'))
            && !n.chars().any(|c| c.is_control() || c == '\\')
    })
    .unwrap_or("/")
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        for good in ["/", "/request?entitlement=a", "/requests/r-1#x"] {
            assert_eq!(local_path(Some(good)), good);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "https://evil.example",
            "evil",
            "",
            "/ok\\..",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(local_path(None), "/");
    }
}
