//! Who is looking at a page. A web session is a random secret in an `HttpOnly` cookie, stored
//! hashed like an API token (so sessions live in the database on both backends and survive a
//! restart or a change of replica). The CSRF token of a session is derived from its secret, so
//! it needs no storage and cannot be guessed without the cookie. Identity comes from a demo
//! sign-in or from `tailscale serve`'s `Tailscale-User-Login` header, believed only from the
//! configured proxy addresses.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::AppState;

/// The session cookie's name: with the `__Host-` prefix when served over https, so that no
/// other host (a sibling subdomain) can plant one.
pub fn cookie_name(app: &AppState) -> &'static str {
    if served_over_https(app) {
        "__Host-tidegate_session"
    } else {
        "tidegate_session"
    }
}

/// Whether people reach tidegate over https (`[server] public_url`), which decides `Secure`
/// cookies, the `__Host-` prefix and HSTS.
pub fn served_over_https(app: &AppState) -> bool {
    app.service
        .config()
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
}
/// Marks token rows that are web sessions.
pub const SESSION_DESCRIPTION: &str = "web session";
/// How long a session lasts.
pub const SESSION_HOURS: i64 = 12;

/// The signed-in viewer of a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub login: String,
    /// The viewer as the service's rules see them.
    pub actor: tidegate_core::access::Actor,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

pub fn csrf_of(secret: &str) -> String {
    hex::encode(&Sha256::digest(format!("csrf\0{secret}").as_bytes())[..16])
}

/// The session secret from the request's cookies. Two session cookies (one planted for a
/// narrower path, say) mean none: which one is ours cannot be told.
pub fn cookie_secret(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = cookies(headers, name);
    let first = found.next()?;
    found.next().is_none().then(|| first.to_owned())
}

/// The values of every cookie called `name` the request carries.
pub fn cookies<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// The login `tailscale serve` vouches for, if the request came through a trusted proxy.
pub fn proxy_login(
    parts_headers: &HeaderMap,
    peer: Option<SocketAddr>,
    app: &AppState,
) -> Option<String> {
    let peer = peer?;
    // An IPv4 proxy reaching a dual-stack listener shows up as ::ffff:a.b.c.d.
    if !app
        .service
        .config()
        .auth
        .trusted_proxy
        .contains(&peer.ip().to_canonical())
    {
        return None;
    }
    let login = parts_headers
        .get("tailscale-user-login")?
        .to_str()
        .ok()?
        .trim();
    (login.contains('@') && !login.contains(char::is_whitespace)).then(|| login.to_owned())
}

/// The session's login, if the cookie names a live web session.
pub async fn session_login(secret: &str, app: &AppState) -> Option<String> {
    let stored = app
        .service
        .store()
        .token(&crate::tokens::hash(secret))
        .await
        .ok()??;
    if stored.kind != tidegate_core::store::TokenKind::Session {
        return None;
    }
    let now = app.service.now();
    let live = stored
        .expires_at
        .as_deref()
        .and_then(tailnet::clock::parse_rfc3339)
        .is_some_and(|end| end > now);
    live.then_some(stored.user)
}

/// Starts a session for `login`; the `Set-Cookie` value to send. Sessions that ended over a
/// day ago are cleared out on the way (a day's margin: stored times are compared as text).
pub async fn start(app: &AppState, login: &str) -> Result<HeaderValue, crate::ApiError> {
    let day_ago = tidegate_core::time_text(app.service.now() - time::Duration::days(1));
    let _ = app.service.store().purge_expired_tokens(&day_ago).await;
    let secret = crate::tokens::create(
        app.service.store().as_ref(),
        login,
        tidegate_core::store::TokenKind::Session,
        Some(time::Duration::hours(SESSION_HOURS)),
        SESSION_DESCRIPTION,
        app.service.now(),
    )
    .await
    .map_err(|e| {
        crate::ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    })?;
    let cookie = format!(
        "{}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        cookie_name(app),
        SESSION_HOURS * 3600,
        if served_over_https(app) {
            "; Secure"
        } else {
            ""
        }
    );
    HeaderValue::from_str(&cookie).map_err(|e| {
        crate::ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    })
}

/// The cookie that ends a session in the browser.
pub fn clear_cookie(app: &AppState) -> HeaderValue {
    if served_over_https(app) {
        HeaderValue::from_static(
            "__Host-tidegate_session=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0",
        )
    } else {
        HeaderValue::from_static("tidegate_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
    }
}

/// Not signed in: to the sign-in page, coming back here afterwards.
pub struct SignIn(String);

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to(&format!("/login?next={}", urlencoding(&self.0))).into_response()
    }
}

pub fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, SignIn> {
        let back = parts
            .uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let secret =
            cookie_secret(&parts.headers, cookie_name(app)).ok_or_else(|| SignIn(back.clone()))?;
        let login = session_login(&secret, app)
            .await
            .ok_or_else(|| SignIn(back.clone()))?;
        // Behind `tailscale serve`, the proxy's word is the identity: a session of someone
        // else is not used.
        if let Some(vouched) = proxy_login(&parts.headers, peer, app)
            && vouched != login
        {
            return Err(SignIn(back));
        }
        // A login that is no longer a user of the tailnet has no session.
        let actor = app
            .service
            .actor(&login, tidegate_core::access::Via::WebSession)
            .await
            .map_err(|_| SignIn(back.clone()))?;
        Ok(Viewer {
            csrf: csrf_of(&secret),
            login,
            actor,
        })
    }
}
