//! The web UI: server-rendered pages that work without JavaScript. `/` my access, `/request`,
//! `/approvals`, `/requests/{id}`, `/admin`, `/login`. Every form carries the session's CSRF
//! token; every page goes out with a strict Content-Security-Policy (scripts and styles from
//! `/static/` only, nothing inline) and `frame-ancestors 'none'`. The one script only shows
//! times in the viewer's own zone.

mod oidc;
pub mod session;

use std::fmt::Write;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tidegate_core::entitlement::{Entitlement, Strategy};
use tidegate_core::request::{Request, State as RequestState};
use tidegate_core::store::RequestFilter;

use crate::AppState;
use session::Viewer;

const CSS: &str = include_str!("app.css");
const JS: &str = include_str!("app.js");

/// Text made safe for HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page's answer: HTML, or a message page with a status (never a stack trace).
pub struct Page(StatusCode, String);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        (self.0, Html(self.1)).into_response()
    }
}

fn layout(title: &str, viewer: Option<&Viewer>, body: &str) -> String {
    let nav = match viewer {
        Some(v) => format!(
            "<nav aria-label=\"Main\"><a href=\"/\">My access</a> <a href=\"/request\">Request</a> \
             <a href=\"/approvals\">Approvals</a> <a href=\"/admin\">Admin</a>\
             <form method=\"post\" action=\"/logout\" class=\"inline\">{}\
             <span class=\"who\">{}</span> <button type=\"submit\">Sign out</button></form></nav>",
            csrf_field(v),
            esc(&v.login)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · tidegate</title><link rel=\"stylesheet\" href=\"/static/app.css\">\
         <link rel=\"icon\" href=\"/static/favicon.svg\" type=\"image/svg+xml\">\
         <script src=\"/static/app.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><a class=\"brand\" href=\"/\">tidegate</a>{nav}</header>\
         <main id=\"main\"><h1>{}</h1>{body}</main></body></html>\n",
        esc(title),
        esc(title)
    )
}

fn csrf_field(v: &Viewer) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&v.csrf)
    )
}

fn message(status: StatusCode, title: &str, viewer: Option<&Viewer>, text: &str) -> Page {
    Page(
        status,
        layout(
            title,
            viewer,
            &format!("<p class=\"error\" role=\"alert\">{}</p>", esc(text)),
        ),
    )
}

/// Refuses a form whose CSRF token is not this session's.
fn check_csrf(viewer: &Viewer, given: &str) -> Result<(), Page> {
    let same = given.len() == viewer.csrf.len()
        && given
            .bytes()
            .zip(viewer.csrf.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(message(
            StatusCode::FORBIDDEN,
            "Refused",
            Some(viewer),
            "This form is stale or did not come from tidegate (CSRF check failed). Reload the page and try again.",
        ))
    }
}

fn service_error(viewer: &Viewer, e: impl std::fmt::Display, status: StatusCode) -> Page {
    message(status, "Could not do that", Some(viewer), &e.to_string())
}

/// A time in UTC with its relative form; the viewer's zone is applied by `<time>` readers.
fn when(t: time::OffsetDateTime, now: time::OffsetDateTime) -> String {
    let text = tidegate_core::time_text(t);
    format!(
        "<time datetime=\"{text}\" title=\"{text}\">{}</time>",
        esc(&tidegate_core::relative(t, now))
    )
}

fn state_badge(r: &Request) -> String {
    format!(
        "<span class=\"state state-{0}\">{0}</span>",
        r.state.as_str()
    )
}

fn request_row(r: &Request, now: time::OffsetDateTime) -> String {
    let timing = match (r.state, r.expires_at) {
        (RequestState::Active, Some(end)) => format!("expires {}", when(end, now)),
        (RequestState::Pending, _) => format!("asked {}", when(r.created_at, now)),
        _ => format!("for {}", r.duration),
    };
    format!(
        "<li><a href=\"/requests/{id}\">{ent}</a> {badge} <span class=\"muted\">{timing}</span>\
         <div class=\"reason\">{reason}</div></li>",
        id = esc(&r.id),
        ent = esc(&r.entitlement),
        badge = state_badge(r),
        reason = esc(&r.reason)
    )
}

/// The web UI's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(my_access))
        .route("/request", get(request_form).post(request_submit))
        .route("/approvals", get(approvals))
        .route("/requests/{id}", get(detail))
        .route("/requests/{id}/act", post(act))
        .route("/requests/{id}/key", get(claimed_key))
        .route("/admin", get(admin))
        .route("/admin/audit.jsonl", get(audit_export))
        .route("/login", get(login_page).post(login_submit))
        .route("/login/oidc", get(oidc::start))
        .route("/login/oidc/callback", get(oidc::callback))
        .route("/logout", post(logout))
        .route("/static/app.css", get(css))
        .route("/favicon.ico", get(favicon))
        .route("/static/favicon.svg", get(favicon))
        .route("/static/app.js", get(js))
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

async fn my_access(State(app): State<AppState>, viewer: Viewer) -> Page {
    let now = app.service.now();
    let mine = match app
        .service
        .list(
            &viewer.actor,
            &RequestFilter {
                requester: Some(viewer.login.clone()),
                limit: Some(200),
                ..RequestFilter::default()
            },
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return service_error(&viewer, e, StatusCode::SERVICE_UNAVAILABLE),
    };
    let mut body = String::new();
    let active: Vec<&Request> = mine
        .iter()
        .filter(|r| r.state == RequestState::Active)
        .collect();
    body.push_str("<section aria-labelledby=\"active\"><h2 id=\"active\">Active grants</h2>");
    if active.is_empty() {
        body.push_str("<p class=\"muted\">None. <a href=\"/request\">Request access</a>.</p>");
    }
    for r in &active {
        let _ = write!(
            body,
            "<article class=\"card\"><h3><a href=\"/requests/{id}\">{ent}</a></h3>\
             <p>Expires {exp}</p><p class=\"reason\">{reason}</p>\
             <form method=\"post\" action=\"/requests/{id}/act\">{csrf}\
             <button type=\"submit\" name=\"action\" value=\"drop\">Drop</button></form>\
             <form method=\"post\" action=\"/requests/{id}/act\">{csrf}\
             <label for=\"extend-{id}\">Duration</label>\
             <input id=\"extend-{id}\" name=\"duration\" value=\"1h\" size=\"5\" required>\
             <button type=\"submit\" name=\"action\" value=\"extend\">Extend</button></form></article>",
            id = esc(&r.id),
            ent = esc(&r.entitlement),
            exp = r.expires_at.map_or_else(String::new, |e| when(e, now)),
            reason = esc(&r.reason),
            csrf = csrf_field(&viewer),
        );
    }
    body.push_str("</section>");
    let open: Vec<&Request> = mine
        .iter()
        .filter(|r| matches!(r.state, RequestState::Pending | RequestState::Approved))
        .collect();
    body.push_str("<section aria-labelledby=\"pending\"><h2 id=\"pending\">Waiting</h2><ul>");
    if open.is_empty() {
        body.push_str("<li class=\"muted\">Nothing waiting.</li>");
    }
    for r in open {
        body.push_str(&request_row(r, now));
    }
    body.push_str(
        "</ul></section><section aria-labelledby=\"past\"><h2 id=\"past\">Recent</h2><ul>",
    );
    for r in mine.iter().filter(|r| r.state.is_final()).take(20) {
        body.push_str(&request_row(r, now));
    }
    body.push_str("</ul></section>");
    Page(StatusCode::OK, layout("My access", Some(&viewer), &body))
}

#[derive(Deserialize, Default)]
struct RequestQuery {
    entitlement: Option<String>,
    duration: Option<String>,
    reason: Option<String>,
    device: Option<String>,
}

async fn eligible(app: &AppState, viewer: &Viewer) -> Result<Vec<Entitlement>, Page> {
    app.service
        .entitlements_for(&viewer.login)
        .await
        .map_err(|e| service_error(viewer, e, StatusCode::SERVICE_UNAVAILABLE))
}

async fn request_form(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<RequestQuery>,
) -> Page {
    let entitlements = match eligible(&app, &viewer).await {
        Ok(e) => e,
        Err(page) => return page,
    };
    render_request_form(&app, &viewer, &entitlements, &q, None).await
}

async fn render_request_form(
    app: &AppState,
    viewer: &Viewer,
    entitlements: &[Entitlement],
    q: &RequestQuery,
    error: Option<&str>,
) -> Page {
    if entitlements.is_empty() {
        return message(
            StatusCode::OK,
            "Request access",
            Some(viewer),
            "There is nothing you are eligible to request.",
        );
    }
    let chosen = q
        .entitlement
        .as_deref()
        .and_then(|n| entitlements.iter().find(|e| e.name == n))
        .unwrap_or(&entitlements[0]);
    let mut body = String::new();
    if let Some(error) = error {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(error));
    }
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/request\" class=\"stack\">\
         <label for=\"entitlement\">Entitlement</label><select id=\"entitlement\" name=\"entitlement\">"
    );
    for e in entitlements {
        let _ = write!(
            body,
            "<option value=\"{0}\"{1}>{0}: {2}</option>",
            esc(&e.name),
            if e.name == chosen.name {
                " selected"
            } else {
                ""
            },
            esc(&e.description)
        );
    }
    let duration = q
        .duration
        .clone()
        .unwrap_or_else(|| chosen.default_duration.to_string());
    let _ = write!(
        body,
        "</select><button type=\"submit\">Preview</button></form>\
         <form method=\"post\" action=\"/request\" class=\"stack\">{csrf}\
         <input type=\"hidden\" name=\"entitlement\" value=\"{name}\">\
         <label for=\"duration\">Duration</label>\
         <input id=\"duration\" name=\"duration\" value=\"{duration}\" required \
         aria-describedby=\"duration-hint\">\
         <small id=\"duration-hint\">Between {min} and {max}, e.g. 90s, 15m, 2h, 1d.</small>\
         <label for=\"reason\">Reason</label>\
         <textarea id=\"reason\" name=\"reason\" rows=\"2\"{required}>{reason}</textarea>",
        csrf = csrf_field(viewer),
        name = esc(&chosen.name),
        duration = esc(&duration),
        min = chosen.min_duration,
        max = chosen.max_duration,
        required = if matches!(
            chosen.reason,
            tidegate_core::entitlement::ReasonRule::Required
        ) {
            " required"
        } else {
            ""
        },
        reason = esc(q.reason.as_deref().unwrap_or_default()),
    );
    let mut devices = Vec::new();
    if matches!(chosen.strategy, Strategy::Posture { .. }) {
        let mine: Vec<tailnet::Device> = app
            .service
            .tailnet()
            .devices()
            .await
            .map(|all| all.into_iter().filter(|d| d.user == viewer.login).collect())
            .unwrap_or_default();
        body.push_str(
            "<label for=\"device\">Device</label><select id=\"device\" name=\"device\">\
             <option value=\"\">All my devices</option>",
        );
        for d in &mine {
            let selected = q.device.as_deref() == Some(d.node_id.as_str());
            let _ = write!(
                body,
                "<option value=\"{0}\"{2}>{1}</option>",
                esc(&d.node_id),
                esc(&d.hostname),
                if selected { " selected" } else { "" }
            );
        }
        body.push_str("</select>");
        if let Some(d) = q.device.as_deref().filter(|d| !d.is_empty()) {
            devices.push(d.to_owned());
        }
    }
    let gives = tidegate_core::preview::Snapshot::default()
        .what_it_gives(&app.service, chosen, &viewer.login, &devices)
        .await;
    body.push_str("<section aria-labelledby=\"gives\" class=\"gives\"><h2 id=\"gives\">What it gives</h2><ul>");
    for line in gives {
        let _ = write!(body, "<li>{}</li>", esc(&line));
    }
    let _ = write!(
        body,
        "</ul><p class=\"muted\">{approvals} approval(s) from {approvers}.</p></section>\
         <button type=\"submit\">Request</button></form>",
        approvals = chosen.approvals,
        approvers = esc(&chosen
            .approvers
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")),
    );
    Page(
        StatusCode::OK,
        layout("Request access", Some(viewer), &body),
    )
}

#[derive(Deserialize)]
struct RequestForm {
    csrf: String,
    entitlement: String,
    duration: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    device: String,
}

async fn request_submit(
    State(app): State<AppState>,
    viewer: Viewer,
    Form(f): Form<RequestForm>,
) -> Result<Redirect, Page> {
    check_csrf(&viewer, &f.csrf)?;
    let retry = |error: String| {
        let app = app.clone();
        let viewer = viewer.clone();
        let q = RequestQuery {
            entitlement: Some(f.entitlement.clone()),
            duration: Some(f.duration.clone()),
            reason: Some(f.reason.clone()),
            device: Some(f.device.clone()),
        };
        async move {
            let entitlements = eligible(&app, &viewer).await?;
            let mut page =
                render_request_form(&app, &viewer, &entitlements, &q, Some(&error)).await;
            page.0 = StatusCode::BAD_REQUEST;
            Err::<Redirect, Page>(page)
        }
    };
    let duration = match f.duration.trim().parse::<tidegate_core::Span>() {
        Ok(d) => d,
        Err(e) => return retry(format!("Duration: {e}")).await,
    };
    let new = tidegate_core::service::NewRequest {
        entitlement: f.entitlement.clone(),
        reason: f.reason.trim().to_owned(),
        duration: Some(duration),
        devices: if f.device.is_empty() {
            Vec::new()
        } else {
            vec![f.device.clone()]
        },
        ..Default::default()
    };
    match app.service.create(&viewer.actor, new).await {
        Ok(r) => {
            app.service.wake_reconciler();
            Ok(Redirect::to(&format!("/requests/{}", r.id)))
        }
        Err(e) => retry(e.to_string()).await,
    }
}

async fn approvals(State(app): State<AppState>, viewer: Viewer) -> Page {
    let now = app.service.now();
    let (pending, dir) = match (
        app.service
            .list(
                &viewer.actor,
                &RequestFilter {
                    // Active grants too: an extension waits for review like a request.
                    states: vec![RequestState::Pending, RequestState::Active],
                    ..RequestFilter::default()
                },
            )
            .await,
        app.service.directory().await,
    ) {
        (Ok(p), Ok(d)) => (p, d),
        (Err(e), _) | (_, Err(e)) => {
            return service_error(&viewer, e, StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let mine: Vec<&Request> = pending
        .iter()
        .filter(|r| app.service.may_review(r, &viewer.actor, &dir))
        .collect();
    let mut body = String::new();
    if mine.is_empty() {
        body.push_str("<p class=\"muted\">Nothing waiting for you.</p>");
    }
    // One read of the live policy and inventory for every request on the page.
    let snapshot = tidegate_core::preview::Snapshot::default();
    for r in mine {
        let gives = match app.service.entitlement(&r.entitlement) {
            Ok(e) => {
                snapshot
                    .what_it_gives(&app.service, e, &r.requester, &r.devices)
                    .await
            }
            Err(e) => vec![e.to_string()],
        };
        let reviews = match &r.extension {
            Some(ext) => &ext.reviews,
            None => &r.reviews,
        };
        let others: Vec<String> = reviews
            .iter()
            .filter(|rev| rev.approve)
            .map(|rev| esc(&rev.reviewer))
            .collect();
        let (asks, reason) = match &r.extension {
            Some(ext) => (
                format!(
                    "<strong>{who}</strong> asks for <strong>{more} more</strong> on an active grant \
                     (it ends {ends}), {asked}.",
                    who = esc(&r.requester),
                    more = ext.duration,
                    ends = r.expires_at.map(|e| when(e, now)).unwrap_or_default(),
                    asked = when(ext.requested_at, now),
                ),
                esc(&ext.reason),
            ),
            None => (
                format!(
                    "<strong>{who}</strong> asks for <strong>{dur}</strong>, {asked}.",
                    who = esc(&r.requester),
                    dur = r.duration,
                    asked = when(r.created_at, now),
                ),
                esc(&r.reason),
            ),
        };
        let _ = write!(
            body,
            "<article class=\"card\"><h2><a href=\"/requests/{id}\">{ent}</a> for {who}</h2>\
             <p>{asks}</p>\
             <p class=\"reason\">{reason}</p><ul class=\"gives\">{gives}</ul>\
             <p class=\"muted\">Approved so far by: {others}</p>\
             <form method=\"post\" action=\"/requests/{id}/act\" class=\"stack\">{csrf}\
             <label for=\"comment-{id}\">Comment</label>\
             <input id=\"comment-{id}\" name=\"comment\">\
             <div><button type=\"submit\" name=\"action\" value=\"approve\">Approve</button> \
             <button type=\"submit\" name=\"action\" value=\"deny\">Deny</button></div></form></article>",
            id = esc(&r.id),
            ent = esc(&r.entitlement),
            who = esc(&r.requester),
            gives = gives
                .iter()
                .map(|g| format!("<li>{}</li>", esc(g)))
                .collect::<String>(),
            others = if others.is_empty() {
                "nobody yet".to_owned()
            } else {
                others.join(", ")
            },
            csrf = csrf_field(&viewer),
        );
    }
    Page(StatusCode::OK, layout("Approvals", Some(&viewer), &body))
}

async fn detail(State(app): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> Page {
    let now = app.service.now();
    let r = match app.service.get(&viewer.actor, &id).await {
        Ok(r) => r,
        Err(e) => return service_error(&viewer, e, StatusCode::NOT_FOUND),
    };
    let trail = app
        .service
        .store()
        .audit_of_request(&id)
        .await
        .unwrap_or_default();
    let mut body = format!(
        "<p>{badge} <strong>{ent}</strong> for <strong>{who}</strong>, {dur}{exp}</p>\
         <p class=\"reason\">{reason}</p>",
        badge = state_badge(&r),
        ent = esc(&r.entitlement),
        who = esc(&r.requester),
        dur = r.duration,
        exp = match (r.state, r.expires_at, r.ended_at) {
            (RequestState::Active, Some(e), _) => format!(", expires {}", when(e, now)),
            (_, _, Some(ended)) => format!(", ended {}", when(ended, now)),
            _ => String::new(),
        },
        reason = esc(&r.reason),
    );
    if r.overdue(now) {
        body.push_str("<p class=\"error\" role=\"alert\">Overdue: past its end, removal from the tailnet not yet verified.</p>");
    }
    let is_key = app
        .service
        .entitlement(&r.entitlement)
        .is_ok_and(|e| matches!(e.strategy, Strategy::AuthKey { .. }));
    if is_key && r.state == RequestState::Approved && r.requester == viewer.login {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/requests/{id}/act\">{csrf}\
             <button type=\"submit\" name=\"action\" value=\"claim\">Claim the key</button>\
             <p class=\"muted\">It is shown once, on the next page, and never stored.</p></form>",
            id = esc(&r.id),
            csrf = csrf_field(&viewer),
        );
    }
    if r.state == RequestState::Pending && r.requester == viewer.login {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/requests/{id}/act\">{csrf}\
             <button type=\"submit\" name=\"action\" value=\"cancel\">Cancel request</button></form>",
            id = esc(&r.id),
            csrf = csrf_field(&viewer),
        );
    }
    if matches!(r.state, RequestState::Active | RequestState::Approved) {
        let label = if r.requester == viewer.login {
            "Drop"
        } else {
            "Revoke"
        };
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/requests/{id}/act\">{csrf}\
             <button type=\"submit\" name=\"action\" value=\"{value}\">{label}</button></form>",
            id = esc(&r.id),
            csrf = csrf_field(&viewer),
            value = label.to_lowercase(),
        );
    }
    body.push_str("<h2>Timeline</h2><ol class=\"timeline\">");
    for e in &trail {
        let at = tailnet::clock::parse_rfc3339(&e.at)
            .map(|t| when(t, now))
            .unwrap_or_else(|| esc(&e.at));
        let _ = write!(
            body,
            "<li>{} <span class=\"muted\">{at}</span></li>",
            esc(&sentence(e))
        );
    }
    body.push_str("</ol>");
    Page(
        StatusCode::OK,
        layout(
            &format!("{} for {}", r.entitlement, r.requester),
            Some(&viewer),
            &body,
        ),
    )
}

/// An audit entry of a request as a plain sentence, with the comment or reason it carries.
fn sentence(e: &tidegate_core::audit::AuditEntry) -> String {
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

#[derive(Deserialize)]
struct ActForm {
    csrf: String,
    action: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    duration: String,
}

async fn act(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<ActForm>,
) -> Result<Response, Page> {
    check_csrf(&viewer, &f.csrf)?;
    let who = &viewer.actor;
    if f.action == "claim" {
        return match app.service.claim_key(who, &id).await {
            Ok((_, secret)) => Ok(key_once(&app, &id, &secret)),
            Err(e) => Err(service_error(&viewer, e, StatusCode::CONFLICT)),
        };
    }
    let done = match f.action.as_str() {
        "approve" => app.service.approve(who, &id, &f.comment).await,
        "deny" => app.service.deny(who, &id, &f.comment).await,
        "drop" => app.service.drop_grant(who, &id).await,
        "cancel" => app.service.cancel(who, &id).await,
        "revoke" => app.service.revoke(who, &id, &f.comment).await,
        "extend" => match f.duration.trim().parse() {
            Ok(d) => app.service.extend(who, &id, d, &f.comment).await,
            Err(e) => {
                return Err(message(
                    StatusCode::BAD_REQUEST,
                    "Could not extend",
                    Some(&viewer),
                    &format!("Duration: {e}"),
                ));
            }
        },
        other => {
            return Err(message(
                StatusCode::BAD_REQUEST,
                "Unknown action",
                Some(&viewer),
                &format!("{other:?} is not something a request can do"),
            ));
        }
    };
    match done {
        Ok(_) => {
            app.service.wake_reconciler();
            // Back where the button was, if it was one of ours.
            let back = headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(|r| r.split_once("://").map(|(_, rest)| rest))
                .and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned()))
                .map(|p| local_path(Some(&p)))
                .unwrap_or_else(|| format!("/requests/{id}"));
            Ok(Redirect::to(&back).into_response())
        }
        Err(e) => Err(service_error(&viewer, e, StatusCode::CONFLICT)),
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
async fn claimed_key(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = session::cookies(&headers, "tidegate_key")
        .find(|v| v.starts_with("tskey-"))
        .map(str::to_owned);
    let body = match &key {
        Some(key) => format!(
            "<p role=\"status\">Your key, shown this once: copy it now.</p>\
             <p><code id=\"key\">{key}</code></p>\
             <p>On the machine to join:</p><pre><code id=\"command\">tailscale up --auth-key={key}</code></pre>\
             <p><button type=\"button\" data-copy=\"command\">Copy the command</button></p>\
             <p class=\"muted\">tidegate does not keep it; it expires with the grant. \
             <a href=\"/requests/{id}\">Back to the request</a></p>",
            key = esc(key),
            id = esc(&id),
        ),
        None => format!(
            "<p>This key was shown once and is not kept anywhere: it cannot be shown again. \
             <a href=\"/requests/{id}\">Back to the request</a></p>",
            id = esc(&id),
        ),
    };
    let mut response = Page(
        StatusCode::OK,
        layout("Your auth key", Some(&viewer), &body),
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

#[derive(Deserialize, Default)]
struct AuditFilter {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    request: String,
}

impl AuditFilter {
    fn keeps(&self, e: &tidegate_core::audit::AuditEntry) -> bool {
        (self.actor.is_empty() || e.actor.contains(self.actor.trim()))
            && (self.action.is_empty() || e.action.contains(self.action.trim()))
            && (self.request.is_empty() || e.request.as_deref() == Some(self.request.trim()))
    }
}

/// How far back the admin page's audit filters look.
const AUDIT_WINDOW: i64 = 2000;

async fn require_admin(_app: &AppState, viewer: &Viewer) -> Result<(), Page> {
    match viewer.actor.admin() {
        Some(_) => Ok(()),
        None => Err(message(
            StatusCode::FORBIDDEN,
            "Admin",
            Some(viewer),
            "Only tailnet admins and owners see this page.",
        )),
    }
}

async fn admin(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(filter): Query<AuditFilter>,
) -> Page {
    if let Err(page) = require_admin(&app, &viewer).await {
        return page;
    }
    let now = app.service.now();
    let policy = app.service.tailnet().policy().await;
    let parsed = policy
        .as_ref()
        .map_err(|e| e.to_string())
        .and_then(|p| policy::Policy::parse(&p.text).map_err(|e| e.to_string()));
    let issues = match &parsed {
        Ok(p) => Ok(tidegate_core::entitlement::check_against_policy(
            &app.service.config().entitlements,
            &p.file,
        )),
        Err(e) => Err(e.clone()),
    };
    let mut body = String::from(
        "<h2>Entitlements</h2><table><thead><tr><th scope=\"col\">Name</th>\
         <th scope=\"col\">Strategy</th><th scope=\"col\">Approvers</th>\
         <th scope=\"col\">Against the live policy</th></tr></thead><tbody>",
    );
    for e in &app.service.config().entitlements {
        let strategy = match &e.strategy {
            Strategy::Group { group, .. } => format!("group {group}"),
            Strategy::Posture { attribute, .. } => format!("posture {attribute}"),
            Strategy::Role { role } => format!("role {role}"),
            Strategy::Tag { tag } => format!("tag {tag}"),
            Strategy::AuthKey { tags, .. } => format!("authkey {}", tags.join(" ")),
        };
        let check = match &issues {
            Ok(list) => {
                let mine: Vec<&str> = list
                    .iter()
                    .filter(|i| i.entitlement == e.name)
                    .map(|i| i.message.as_str())
                    .collect();
                if mine.is_empty() {
                    "ok".to_owned()
                } else {
                    format!("<span class=\"error\">{}</span>", esc(&mine.join("; ")))
                }
            }
            Err(why) => format!("<span class=\"error\">cannot check: {}</span>", esc(why)),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{check}</td></tr>",
            esc(&e.name),
            esc(&strategy),
            esc(&e
                .approvers
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    body.push_str("</tbody></table>");

    let overdue = app
        .service
        .list(
            &viewer.actor,
            &RequestFilter {
                overdue_at: Some(now),
                limit: Some(100),
                ..RequestFilter::default()
            },
        )
        .await
        .unwrap_or_default();
    body.push_str("<h2>Overdue revocations</h2><ul>");
    if overdue.is_empty() {
        body.push_str("<li class=\"muted\">None.</li>");
    }
    for r in &overdue {
        body.push_str(&request_row(r, now));
    }
    body.push_str("</ul>");

    body.push_str(
        "<h2>Standing members</h2><p class=\"muted\">Members a managed group had when \
         tidegate first managed it: reported, never removed, until an admin runs \
         <code>tidegate adopt GROUP</code>.</p><ul>",
    );
    match app.service.managed_groups().await {
        Ok(groups) if groups.values().any(|g| !g.standing.is_empty()) => {
            for g in groups.values().filter(|g| !g.standing.is_empty()) {
                let members: Vec<&str> = g.standing.iter().map(String::as_str).collect();
                let _ = write!(
                    body,
                    "<li>{}: {} <span class=\"muted\">(since {})</span></li>",
                    esc(&g.group),
                    esc(&members.join(", ")),
                    esc(&g.first_managed_at)
                );
            }
        }
        Ok(_) => body.push_str("<li class=\"muted\">None.</li>"),
        Err(e) => {
            let _ = write!(body, "<li class=\"error\">{}</li>", esc(&e.to_string()));
        }
    }
    body.push_str("</ul>");

    if !app.service.config().machines.is_empty() {
        body.push_str(
            "<h2>Machine nodes</h2><p class=\"muted\">Devices that joined with the machine \
             entitlements' keys (ephemeral ones are deleted after their node_ttl), and tagged \
             devices whose tags nothing explains.</p><ul>",
        );
        let report = match viewer.actor.auditor() {
            Some(auditor) => app.service.machine_nodes(auditor).await,
            None => Err(tidegate_core::service::ServiceError::Invalid(
                "admins and auditors only".into(),
            )),
        };
        match report {
            Ok(report) => {
                if report.machine_nodes.is_empty() && report.unexplained.is_empty() {
                    body.push_str("<li class=\"muted\">None.</li>");
                }
                for n in &report.machine_nodes {
                    let _ = write!(
                        body,
                        "<li>{} <span class=\"muted\">{} · {}{}</span></li>",
                        esc(&n.hostname),
                        esc(&n.entitlement),
                        esc(n.subject.as_deref().unwrap_or("key not seen")),
                        if n.over_node_ttl {
                            " · over node_ttl"
                        } else {
                            ""
                        }
                    );
                }
                for u in &report.unexplained {
                    let _ = write!(
                        body,
                        "<li class=\"error\">{}: {} <span class=\"muted\">(created by {}; no machine entitlement or tag owner explains it)</span></li>",
                        esc(&u.hostname),
                        esc(&u.tags.join(", ")),
                        esc(&u.user)
                    );
                }
            }
            Err(e) => {
                let _ = write!(body, "<li class=\"error\">{}</li>", esc(&e.to_string()));
            }
        }
        body.push_str("</ul>");
    }

    let length = app.service.store().audit_length().await.unwrap_or(0);
    let window = app
        .service
        .store()
        .audit((length - AUDIT_WINDOW).max(0), AUDIT_WINDOW as usize)
        .await
        .unwrap_or_default();
    body.push_str("<h2>Drift</h2><ul>");
    let drift: Vec<_> = window
        .iter()
        .rev()
        .filter(|e| e.action == "drift.detected")
        .take(20)
        .collect();
    if drift.is_empty() {
        body.push_str("<li class=\"muted\">No drift detected recently.</li>");
    }
    for e in drift {
        let _ = write!(body, "<li>{} {}</li>", esc(&e.at), esc(&e.detail));
    }
    let _ = write!(
        body,
        "</ul><h2 id=\"audit\">Audit log</h2>\
         <form method=\"get\" action=\"/admin#audit\" class=\"filters\">\
         <label for=\"f-actor\">Actor</label><input id=\"f-actor\" name=\"actor\" value=\"{}\">\
         <label for=\"f-action\">Action</label><input id=\"f-action\" name=\"action\" value=\"{}\">\
         <label for=\"f-request\">Request</label><input id=\"f-request\" name=\"request\" value=\"{}\">\
         <button type=\"submit\">Filter</button></form>\
         <p><a href=\"/admin/audit.jsonl\">Export the whole log (JSON lines)</a> · \
         <code>tidegate audit export</code> adds a manifest of hashes.</p>\
         <table><thead><tr><th scope=\"col\">#</th><th scope=\"col\">At</th>\
         <th scope=\"col\">Actor</th><th scope=\"col\">Action</th><th scope=\"col\">Request</th>\
         </tr></thead><tbody>",
        esc(&filter.actor),
        esc(&filter.action),
        esc(&filter.request),
    );
    for e in window.iter().rev().filter(|e| filter.keeps(e)).take(100) {
        let request = e
            .request
            .as_deref()
            .map(|id| format!("<a href=\"/requests/{0}\">{0}</a>", esc(id)))
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{request}</td></tr>",
            e.seq,
            esc(&e.at),
            esc(&e.actor),
            esc(&e.action)
        );
    }
    body.push_str("</tbody></table>");

    // The tailnet's inventory as tidegate sees it.
    let users = app.service.tailnet().users().await.unwrap_or_default();
    let devices = app.service.tailnet().devices().await.unwrap_or_default();
    body.push_str("<h2>Inventory</h2><h3>Users</h3><table><thead><tr><th scope=\"col\">Login</th><th scope=\"col\">Role</th></tr></thead><tbody>");
    for u in &users {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&u.login_name),
            esc(&u.role)
        );
    }
    body.push_str("</tbody></table><h3>Devices</h3><table><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Owner</th><th scope=\"col\">Tags</th></tr></thead><tbody>");
    for d in &devices {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.name),
            esc(&d.user),
            esc(&d.tags.join(" "))
        );
    }
    body.push_str("</tbody></table><h3>Groups</h3><ul>");
    if let Ok(p) = &parsed {
        for (group, members) in &p.file.groups {
            let _ = write!(
                body,
                "<li><strong>{}</strong>: {}</li>",
                esc(group),
                esc(&members.join(", "))
            );
        }
    }
    body.push_str("</ul>");
    Page(StatusCode::OK, layout("Admin", Some(&viewer), &body))
}

/// The whole audit log as JSON lines, for admins.
async fn audit_export(State(app): State<AppState>, viewer: Viewer) -> Response {
    if let Err(page) = require_admin(&app, &viewer).await {
        return page.into_response();
    }
    let mut out = String::new();
    let mut after = 0;
    loop {
        let batch = match app.service.store().audit(after, 5000).await {
            Ok(b) => b,
            Err(e) => {
                return service_error(&viewer, e, StatusCode::SERVICE_UNAVAILABLE).into_response();
            }
        };
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for e in &batch {
            if let Ok(line) = serde_json::to_string(e) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tidegate-audit.jsonl\"",
            ),
        ],
        out,
    )
        .into_response()
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    next: Option<String>,
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

async fn login_page(
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
    let mut body = String::new();
    if app.service.config().auth.oidc.is_some() {
        let _ = write!(
            body,
            "<p><a class=\"button\" href=\"/login/oidc?next={}\">Sign in with your identity provider</a></p>",
            esc(&session::urlencoding(&next))
        );
    } else if app.demo_logins.is_empty() {
        body.push_str(
            "<p>Open tidegate through <code>tailscale serve</code> (with this address in \
             <code>[auth] trusted_proxy</code>) to sign in with your tailnet identity.</p>",
        );
    } else {
        let _ = write!(
            body,
            "<p>Demo mode: sign in as one of the example users.</p>\
             <form method=\"post\" action=\"/login\" class=\"stack\">\
             <input type=\"hidden\" name=\"next\" value=\"{}\">\
             <label for=\"user\">User</label><select id=\"user\" name=\"user\">",
            esc(&next)
        );
        for login in &app.demo_logins {
            let _ = write!(body, "<option>{}</option>", esc(login));
        }
        body.push_str("</select><button type=\"submit\">Sign in</button></form>");
    }
    Page(StatusCode::OK, layout("Sign in", None, &body)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    #[serde(default)]
    next: String,
}

async fn login_submit(State(app): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    if !app.demo_logins.contains(&f.user) {
        return message(
            StatusCode::FORBIDDEN,
            "Sign in",
            None,
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

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    State(app): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Result<Response, Page> {
    check_csrf(&viewer, &f.csrf)?;
    if let Some(secret) = session::cookie_secret(&headers, session::cookie_name(&app)) {
        let _ = app
            .service
            .store()
            .delete_token(&crate::tokens::hash(&secret))
            .await;
    }
    Ok((
        [(header::SET_COOKIE, session::clear_cookie(&app))],
        Redirect::to("/login"),
    )
        .into_response())
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
