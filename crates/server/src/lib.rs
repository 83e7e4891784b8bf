//! tidegate's HTTP API: JSON endpoints for requests, reviews, grants and the audit log,
//! authenticated with API tokens (stored hashed), and its OpenAPI document.

pub mod evidence;
mod jwt;
pub mod machine;
pub mod mail;
mod metrics;
mod openapi;
pub mod outbound;
mod reviews;
mod scim;
pub mod slack;
pub mod tokens;
pub mod web;
mod webhooks;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tidegate_core::Span;
use tidegate_core::access::{Actor, Via};
use tidegate_core::request::State as RequestState;
use tidegate_core::service::{NewRequest, Service, ServiceError};
use tidegate_core::store::{RequestFilter, StoreError};

pub use openapi::document as openapi_document;

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    /// Leadership and reconciler figures of this replica.
    pub metrics: Arc<tidegate_core::metrics::Metrics>,
    /// Demo mode only: the example users anyone may sign in as. Empty otherwise.
    pub demo_logins: Vec<String>,
    /// Machine access: issuers' keys, used token ids, rates.
    pub machine: Arc<machine::MachineAuth>,
}

/// An error as the API answers it: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use tidegate_core::request::LifecycleError;
        let status = match &e {
            ServiceError::UnknownEntitlement { .. }
            | ServiceError::UnknownRequest(_)
            | ServiceError::UnknownReview(_)
            | ServiceError::UnknownToken { .. } => StatusCode::NOT_FOUND,
            ServiceError::UnknownUser(_) => StatusCode::FORBIDDEN,
            ServiceError::Lifecycle(LifecycleError::NotAllowed(_)) => StatusCode::FORBIDDEN,
            ServiceError::Lifecycle(LifecycleError::WrongState { .. }) => StatusCode::CONFLICT,
            ServiceError::Lifecycle(LifecycleError::Invalid(_)) | ServiceError::Invalid(_) => {
                StatusCode::BAD_REQUEST
            }
            ServiceError::Store(StoreError::Conflict(_)) | ServiceError::NotYet(_) => {
                StatusCode::CONFLICT
            }
            ServiceError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServiceError::Tailnet(_) => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The authenticated caller (from `Authorization: Bearer <token>`), resolved once.
pub struct Caller(pub Actor);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let login = tokens::authenticate(&parts.headers, state.service.as_ref()).await?;
        let actor = state
            .service
            .actor(&login, Via::ApiToken)
            .await
            .map_err(|e| match e {
                ServiceError::UnknownUser(_) => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!("{login} is no longer a user of the tailnet"),
                ),
                other => other.into(),
            })?;
        Ok(Caller(actor))
    }
}

/// A query string whose errors are JSON `{"error": ...}` like every other 4xx.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
    }
}

/// One path segment (a request or token id) whose errors are JSON.
pub struct ApiPath(pub String);

impl FromRequestParts<AppState> for ApiPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
    }
}

/// The largest request body the API reads: requests, reviews and tokens are small.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body whose errors say what is wrong with it.
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send> axum::extract::FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    ApiError::bad_request(format!("cannot read the body: {e}"))
                }
            })?;
        let text = if bytes.is_empty() {
            &b"{}"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(text)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    entitlement: String,
    #[serde(default)]
    reason: String,
    duration: Option<String>,
    start_at: Option<String>,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    break_glass: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    #[serde(default)]
    comment: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    duration: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    mine: bool,
    state: Option<String>,
    entitlement: Option<String>,
    /// Only this requester's.
    requester: Option<String>,
    /// Requests waiting for the caller's review.
    #[serde(default)]
    review: bool,
    limit: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<i64>,
    limit: Option<usize>,
}

fn span(text: &str) -> ApiResult<Span> {
    text.parse()
        .map_err(|e| ApiError::bad_request(format!("{e}")))
}

fn json_request(r: &tidegate_core::request::Request, now: time::OffsetDateTime) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("overdue".into(), json!(r.overdue(now)));
        // The time granted in all: the duration asked for plus every extension granted.
        let total =
            r.duration.as_secs() + r.extended.iter().map(|e| e.duration.as_secs()).sum::<u64>();
        obj.insert(
            "total_duration".into(),
            json!(tidegate_core::Span::seconds(total).to_string()),
        );
        // Access being taken away: just now (the reconciler is on it) or overdue.
        if let Some(end) = r.access_ends_at().filter(|end| *end <= now) {
            let removal = if now - end < time::Duration::minutes(1) {
                "in progress"
            } else {
                "overdue"
            };
            obj.insert("removal".into(), json!(removal));
        }
        if let Some(ext) = obj.get_mut("extension").and_then(Value::as_object_mut) {
            ext.insert("state".into(), json!("pending"));
        }
    }
    v
}

async fn create(
    State(app): State<AppState>,
    Caller(who): Caller,
    Body(body): Body<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let start_at = match body.start_at.as_deref() {
        Some(text) => Some(tailnet::clock::parse_rfc3339(text).ok_or_else(|| {
            ApiError::bad_request(format!("start_at {text:?} is not an RFC 3339 time"))
        })?),
        None => None,
    };
    let new = NewRequest {
        entitlement: body.entitlement,
        reason: body.reason,
        duration: body.duration.as_deref().map(span).transpose()?,
        start_at,
        devices: body.devices,
        break_glass: body.break_glass,
    };
    let request = app.service.create(&who, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(json_request(&request, app.service.now())),
    ))
}

async fn list(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    let mut filter = RequestFilter {
        limit: q.limit,
        entitlement: q.entitlement,
        ..RequestFilter::default()
    };
    if let Some(state) = &q.state {
        for s in state.split(',') {
            filter.states.push(
                RequestState::parse(s.trim())
                    .ok_or_else(|| ApiError::bad_request(format!("unknown state {s:?}")))?,
            );
        }
    }
    filter.requester = q.requester;
    if q.mine {
        filter.requester = Some(who.login().to_owned());
    }
    let mut requests = app.service.list(&who, &filter).await?;
    if q.review {
        let dir = app.service.directory().await?;
        requests.retain(|r| app.service.may_review(r, &who, &dir));
    }
    let now = app.service.now();
    Ok(Json(
        json!({ "requests": requests.iter().map(|r| json_request(r, now)).collect::<Vec<_>>() }),
    ))
}

async fn show(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Value>> {
    let request = app.service.get(&who, &id).await?;
    Ok(Json(json_request(&request, app.service.now())))
}

async fn approve(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
    Body(b): Body<CommentBody>,
) -> ApiResult<Json<Value>> {
    let r = app.service.approve(&who, &id, &b.comment).await?;
    Ok(Json(json_request(&r, app.service.now())))
}

async fn deny(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
    Body(b): Body<CommentBody>,
) -> ApiResult<Json<Value>> {
    let r = app.service.deny(&who, &id, &b.comment).await?;
    Ok(Json(json_request(&r, app.service.now())))
}

async fn cancel(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Value>> {
    let r = app.service.cancel(&who, &id).await?;
    Ok(Json(json_request(&r, app.service.now())))
}

async fn revoke(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
    Body(b): Body<CommentBody>,
) -> ApiResult<Json<Value>> {
    let reason = if b.reason.is_empty() {
        b.comment
    } else {
        b.reason
    };
    let r = app.service.revoke(&who, &id, &reason).await?;
    Ok(Json(json_request(&r, app.service.now())))
}

async fn drop_grant(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Value>> {
    let r = app.service.drop_grant(&who, &id).await?;
    Ok(Json(json_request(&r, app.service.now())))
}

async fn extend(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
    Body(b): Body<ExtendBody>,
) -> ApiResult<Json<Value>> {
    let r = app
        .service
        .extend(&who, &id, span(&b.duration)?, &b.reason)
        .await?;
    Ok(Json(json_request(&r, app.service.now())))
}

async fn claim_key(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Value>> {
    let (r, secret) = app.service.claim_key(&who, &id).await?;
    Ok(Json(
        json!({ "request": json_request(&r, app.service.now()), "key": secret }),
    ))
}

async fn whoami(Caller(who): Caller) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "login": who.login(), "admin": who.is_admin(), "auditor": who.is_auditor() }),
    ))
}

async fn entitlements(State(app): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Value>> {
    let list = app.service.entitlements_for(who.login()).await?;
    Ok(Json(json!({ "entitlements": list })))
}

async fn audit(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Value>> {
    auditor(&who)?;
    let entries = app
        .service
        .store()
        .audit(q.after.unwrap_or(0), q.limit.unwrap_or(1000).min(10_000))
        .await
        .map_err(ServiceError::from)?;
    Ok(Json(json!({ "entries": entries })))
}

/// The caller's auditor capability (admins have it too), or 403 saying who has it.
fn auditor(who: &tidegate_core::access::Actor) -> ApiResult<tidegate_core::access::Auditor<'_>> {
    who.auditor().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} is not an admin or auditor (tailnet owners, admins and auditors, and [roles] in the config)",
                who.login()
            ),
        )
    })
}

/// The audit chain's head now (admins and auditors).
async fn audit_head(State(app): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Value>> {
    auditor(&who)?;
    let head = app.service.audit_head().await?;
    Ok(Json(json!(head)))
}

/// Standing members of the managed groups (admins and auditors).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PreviewQuery {
    /// A device for posture and tag grants (name, hostname or ID).
    device: Option<String>,
}

/// What requesting an entitlement would give the caller, on the chosen device.
async fn preview(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> ApiResult<Json<Value>> {
    let devices: Vec<String> = q.device.into_iter().collect();
    Ok(Json(json!(
        app.service.preview(who.login(), &name, &devices).await?
    )))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AccessQuery {
    entitlement: Option<String>,
    requester: Option<String>,
    group: Option<String>,
}

/// Who has access right now (admins and auditors).
async fn access(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<AccessQuery>,
) -> ApiResult<Json<Value>> {
    let auditor = auditor(&who)?;
    let filter = tidegate_core::overview::AccessFilter {
        entitlement: q.entitlement,
        requester: q.requester,
        group: q.group,
    };
    let overview = app.service.access_overview(auditor, &filter).await?;
    let now = app.service.now();
    let mut v = json!(overview);
    for list in ["active", "overdue"] {
        v[list] = json!(
            match list {
                "active" => &overview.active,
                _ => &overview.overdue,
            }
            .iter()
            .map(|r| json_request(r, now))
            .collect::<Vec<_>>()
        );
    }
    Ok(Json(v))
}

/// Break-glass grants, those not yet reviewed first (admins and auditors).
async fn break_glass(State(app): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Value>> {
    let auditor = auditor(&who)?;
    let grants = app.service.break_glass_grants(auditor, 500).await?;
    let now = app.service.now();
    Ok(Json(
        json!({ "requests": grants.iter().map(|r| json_request(r, now)).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    note: String,
}

/// Marks a break-glass grant reviewed after the fact, with a note.
async fn review_break_glass(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
    Body(b): Body<NoteBody>,
) -> ApiResult<Json<Value>> {
    let r = app.service.review_break_glass(&who, &id, &b.note).await?;
    Ok(Json(json_request(&r, app.service.now())))
}

/// One part of the inventory from the last sync (admins and auditors); `diff` is what the
/// last changing sync found.
async fn inventory(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(kind): ApiPath,
) -> ApiResult<Json<Value>> {
    auditor(&who)?;
    if kind == "diff" {
        return Ok(Json(json!(app.service.inventory_changes().await?)));
    }
    const KINDS: [&str; 6] = ["users", "devices", "keys", "invites", "groups", "rules"];
    if !KINDS.contains(&kind.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no inventory of {kind:?}: one of {}, diff",
                KINDS.join(", ")
            ),
        ));
    }
    let snapshot = app.service.inventory_or_sync().await?;
    let value = json!(snapshot);
    Ok(Json(
        json!({ "taken_at": snapshot.taken_at, kind.as_str(): value[kind.as_str()] }),
    ))
}

/// Syncs the inventory now (admins and auditors).
async fn sync_inventory(
    State(app): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<Json<Value>> {
    auditor(&who)?;
    Ok(Json(json!(app.service.sync_inventory(&|_| {}).await?)))
}

/// The last compliance check run (admins and auditors).
async fn checks(State(app): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Value>> {
    auditor(&who)?;
    match app.service.last_checks().await? {
        Some(run) => Ok(Json(json!(run))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no check has run yet: POST /api/checks runs them now",
        )),
    }
}

/// Runs the compliance checks now (admins and auditors).
async fn run_checks(State(app): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Value>> {
    auditor(&who)?;
    let run = app.service.run_checks().await?;
    Ok(Json(json!(run)))
}

async fn standing(State(app): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Value>> {
    let auditor = auditor(&who)?;
    let groups = app.service.standing(auditor).await?;
    Ok(Json(json!({ "groups": groups })))
}

/// Machine nodes and unexplained tagged devices (admins and auditors).
async fn machine_nodes(State(app): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Value>> {
    let auditor = auditor(&who)?;
    Ok(Json(json!(app.service.machine_nodes(auditor).await?)))
}

/// The caller's own API tokens and web sessions (never their secrets).
async fn list_tokens(State(app): State<AppState>, Caller(who): Caller) -> ApiResult<Json<Value>> {
    let tokens = app
        .service
        .store()
        .tokens_of(who.login())
        .await
        .map_err(ServiceError::from)?;
    Ok(Json(
        json!({ "tokens": tokens.iter().map(tokens::public).collect::<Vec<_>>() }),
    ))
}

/// Revokes one of the caller's own tokens (or sessions) by its id.
async fn revoke_token(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Value>> {
    let token = app.service.revoke_token(&who, who.login(), &id).await?;
    Ok(Json(json!({ "revoked": tokens::public(&token) })))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn openapi() -> impl IntoResponse {
    Json(openapi::document())
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /api/openapi.json",
    )
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(metrics::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/api/whoami", get(whoami))
        .route("/api/entitlements", get(entitlements))
        .route("/api/entitlements/{name}/preview", get(preview))
        .route("/api/access", get(access))
        .route("/api/inventory/sync", post(sync_inventory))
        .route("/api/inventory/{kind}", get(inventory))
        .route("/api/checks", get(checks).post(run_checks))
        .route("/webhooks/tailscale", post(webhooks::tailscale))
        .route("/slack/commands", post(slack::commands))
        .route("/slack/interactions", post(slack::interactions))
        .route("/api/break-glass", get(break_glass))
        .route("/api/webhooks", get(outbound::list))
        .route("/api/reviews", get(reviews::list).post(reviews::create))
        .route("/api/reviews/mine", get(reviews::mine))
        .route("/api/reviews/{id}", get(reviews::show))
        .route("/api/reviews/{id}/decisions", post(reviews::decide))
        .route("/api/reviews/{id}/close", post(reviews::close))
        .route("/api/reviews/{id}/export", get(reviews::export))
        .route(
            "/api/requests/{id}/break-glass-review",
            post(review_break_glass),
        )
        .route("/api/requests", get(list).post(create))
        .route("/api/requests/{id}", get(show))
        .route("/api/requests/{id}/approve", post(approve))
        .route("/api/requests/{id}/deny", post(deny))
        .route("/api/requests/{id}/cancel", post(cancel))
        .route("/api/requests/{id}/revoke", post(revoke))
        .route("/api/requests/{id}/drop", post(drop_grant))
        .route("/api/requests/{id}/extend", post(extend))
        .route("/api/requests/{id}/key", post(claim_key))
        .route("/api/machine/authkey", post(machine::authkey))
        .route("/api/machine/requests/{id}", get(machine::poll))
        .route("/api/machine/nodes", get(machine_nodes))
        .route("/api/audit", get(audit))
        .route("/api/audit/head", get(audit_head))
        .route("/api/tokens", get(list_tokens))
        .route("/api/standing", get(standing))
        .route("/api/tokens/{id}", axum::routing::delete(revoke_token))
        .merge(web::router())
        .merge(scim::router())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            web::security_headers,
        ))
        .with_state(state)
}
