//! `/request`: ask for access. The entitlement is chosen first (a GET, so the page works
//! without a script); the form then shows the duration presets within its bounds, the device
//! for device grants, what the grant gives on that device, who approves (or that nobody needs
//! to), a grant already held, and break-glass where the entitlement allows it.

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tidegate_core::entitlement::Entitlement;
use tidegate_core::preview::RequestPreview;

use super::check_csrf;
use super::layout::{self, Chrome, Page, Section, csrf, when};
use super::session::Viewer;
use crate::AppState;

#[derive(Deserialize, Default, Clone)]
pub struct RequestQuery {
    entitlement: Option<String>,
    duration: Option<String>,
    reason: Option<String>,
    device: Option<String>,
    start: Option<String>,
}

pub async fn form(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<RequestQuery>,
) -> Page {
    render(&app, &viewer, &q, None, StatusCode::OK).await
}

async fn render(
    app: &AppState,
    viewer: &Viewer,
    q: &RequestQuery,
    error: Option<&str>,
    status: StatusCode,
) -> Page {
    let chrome = Chrome::of(app, viewer).await;
    let entitlements = match app.service.entitlements_for(&viewer.login).await {
        Ok(e) => e,
        Err(e) => {
            return layout::message(
                app,
                Some(viewer),
                StatusCode::SERVICE_UNAVAILABLE,
                "Request access",
                &e.to_string(),
            )
            .await;
        }
    };
    let Some(first) = entitlements.first() else {
        let body = html! { p.empty { "There is nothing you are eligible to request. Ask an admin which entitlements you should have." } };
        return Page(
            StatusCode::OK,
            layout::page(
                "Request access",
                Some(&chrome),
                Section::Request,
                None,
                body,
            ),
        );
    };
    let chosen = q
        .entitlement
        .as_deref()
        .and_then(|n| entitlements.iter().find(|e| e.name == n))
        .unwrap_or(first);
    let device: Vec<String> = q.device.iter().filter(|d| !d.is_empty()).cloned().collect();
    // The preview on the chosen device; a device that is not theirs is said, not fatal.
    let (preview, device_error) = match app
        .service
        .preview(&viewer.login, &chosen.name, &device)
        .await
    {
        Ok(p) => (Some(p), None),
        Err(e) => match app.service.preview(&viewer.login, &chosen.name, &[]).await {
            Ok(p) => (Some(p), Some(e.to_string())),
            Err(_) => (None, Some(e.to_string())),
        },
    };
    let error = error.map(str::to_owned).or(device_error);
    let body = html! {
        (layout::error(error.as_deref()))
        form method="get" action="/request" class="pick" {
            label for="entitlement" { "Entitlement" }
            select #entitlement name="entitlement" {
                @for e in &entitlements {
                    option value=(e.name) selected[e.name == chosen.name] { (e.name) ": " (e.description) }
                }
            }
            button.secondary type="submit" { "Choose" }
        }
        @if let Some(p) = &preview {
            (request_form(viewer, chosen, p, q, app.service.now()))
        }
    };
    Page(
        status,
        layout::page(
            "Request access",
            Some(&chrome),
            Section::Request,
            None,
            body,
        ),
    )
}

fn request_form(
    viewer: &Viewer,
    e: &Entitlement,
    p: &RequestPreview,
    q: &RequestQuery,
    now: time::OffsetDateTime,
) -> Markup {
    let duration = q
        .duration
        .clone()
        .unwrap_or_else(|| e.default_duration.to_string());
    let link = |duration: &str| {
        let mut href = format!(
            "/request?entitlement={}&duration={}",
            enc(&e.name),
            enc(duration)
        );
        if let Some(d) = q.device.as_deref().filter(|d| !d.is_empty()) {
            href.push_str(&format!("&device={}", enc(d)));
        }
        href
    };
    html! {
        @if let Some(h) = &p.holding {
            p.notice {
                "You already hold " (e.name)
                @if let Some(end) = h.expires_at { " until " (when(end, now)) }
                ". "
                a href=(format!("/requests/{}", h.request)) { "Extend it instead?" }
            }
        }
        @if !p.devices.is_empty() {
            form method="get" action="/request" class="pick" {
                input type="hidden" name="entitlement" value=(e.name);
                input type="hidden" name="duration" value=(duration);
                label for="device-pick" { "Device" }
                select #device-pick name="device" {
                    option value="" { "All my devices" }
                    @for d in &p.devices {
                        option value=(d.name) selected[q.device.as_deref() == Some(d.name.as_str()) || q.device.as_deref() == Some(d.id.as_str())] { (d.name) }
                    }
                }
                button.secondary type="submit" { "Show for this device" }
            }
        }
        form method="post" action="/request" class="stack" {
            (csrf(viewer))
            input type="hidden" name="entitlement" value=(e.name);
            @if let Some(d) = q.device.as_deref().filter(|d| !d.is_empty()) {
                input type="hidden" name="device" value=(d);
            }
            label for="duration" { "Duration" }
            div.chips role="group" aria-label="Duration presets" {
                @for s in &p.duration_presets {
                    a.chip href=(link(&s.to_string())) aria-current=[(s.to_string() == duration).then_some("true")] { (s.to_string()) }
                }
            }
            input #duration name="duration" value=(duration) required aria-describedby="duration-hint";
            small #duration-hint { "A preset, or any duration between " (e.min_duration.to_string()) " and " (e.max_duration.to_string()) ", e.g. 90s, 15m, 2h, 1d." }
            label for="reason" { "Reason" }
            textarea #reason name="reason" rows="2" required[p.reason_required] { (q.reason.as_deref().unwrap_or_default()) }
            label for="start" { "Start later (optional, UTC)" }
            input #start type="datetime-local" name="start" value=(q.start.as_deref().unwrap_or_default());
            section.gives aria-labelledby="gives" {
                h2 #gives {
                    "What it gives"
                    @if !p.for_devices.is_empty() { " on " @for (i, d) in p.for_devices.iter().enumerate() { @if i > 0 { ", " } (layout::device(d)) } }
                }
                ul { @for line in &p.gives { li { (line) } } }
                p.muted {
                    @if p.auto_approved {
                        "No approval needed: you are auto-approved for it."
                    } @else {
                        (p.approvals) " approval" @if p.approvals != 1 { "s" } " from " (p.approvers.join(", ")) "."
                    }
                }
            }
            @if p.break_glass_allowed && !p.auto_approved {
                div.check {
                    input #break-glass type="checkbox" name="break_glass" value="on";
                    label for="break-glass" { "Emergency: grant it to me now (break-glass; announced and reviewed afterwards)" }
                }
            }
            button type="submit" { "Request" }
        }
    }
}

/// A query value, percent-encoded for a link.
fn enc(value: &str) -> String {
    super::session::urlencoding(value)
}

#[derive(Deserialize)]
pub struct RequestForm {
    csrf: String,
    entitlement: String,
    duration: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    start: String,
    #[serde(default)]
    break_glass: Option<String>,
}

pub async fn submit(
    State(app): State<AppState>,
    viewer: Viewer,
    Form(f): Form<RequestForm>,
) -> Response {
    if let Err(page) = check_csrf(&app, &viewer, &f.csrf).await {
        return page.into_response();
    }
    let kept = RequestQuery {
        entitlement: Some(f.entitlement.clone()),
        duration: Some(f.duration.clone()),
        reason: Some(f.reason.clone()),
        device: Some(f.device.clone()),
        start: Some(f.start.clone()),
    };
    let retry = |error: String| {
        let (app, viewer, kept) = (app.clone(), viewer.clone(), kept.clone());
        async move {
            render(&app, &viewer, &kept, Some(&error), StatusCode::BAD_REQUEST)
                .await
                .into_response()
        }
    };
    let duration = match f.duration.trim().parse::<tidegate_core::Span>() {
        Ok(d) => d,
        Err(e) => return retry(format!("Duration: {e}")).await,
    };
    let start_at = match f.start.trim() {
        "" => None,
        text => match parse_local(text) {
            Some(t) => Some(t),
            None => return retry(format!("Start: {text:?} is not a date and time")).await,
        },
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
        start_at,
        break_glass: f.break_glass.is_some(),
    };
    match app.service.create(&viewer.actor, new).await {
        Ok(r) => {
            app.service.wake_reconciler();
            let done = if r.state == tidegate_core::request::State::Pending {
                "requested"
            } else {
                "granted"
            };
            Redirect::to(&format!("/requests/{}?done={done}", r.id)).into_response()
        }
        Err(e) => retry(e.to_string()).await,
    }
}

/// A `datetime-local` value ("2026-11-30T14:30", seconds optional), read as UTC.
fn parse_local(text: &str) -> Option<time::OffsetDateTime> {
    let with_seconds = if text.len() == 16 {
        format!("{text}:00Z")
    } else {
        format!("{text}Z")
    };
    tailnet::clock::parse_rfc3339(&with_seconds)
}
