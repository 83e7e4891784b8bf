//! `/api/reviews`: access review campaigns, decisions, closing, and the evidence export.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tidegate_core::review::{Ask, NewCampaign, OnDue, Verdict};

use crate::evidence::Format;
use crate::{ApiError, ApiPath, ApiQuery, ApiResult, AppState, Body, Caller, auditor, span};

/// The caller's admin capability, or 403.
fn admin(who: &tidegate_core::access::Actor) -> ApiResult<tidegate_core::access::Admin<'_>> {
    who.admin().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} is not an admin: campaigns are started and closed by admins",
                who.login()
            ),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    scope: Option<String>,
    due: Option<String>,
    reviewer: Option<String>,
    on_due: Option<String>,
    #[serde(default)]
    keep_reason_required: bool,
}

pub(crate) async fn create(
    State(app): State<AppState>,
    Caller(who): Caller,
    Body(b): Body<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let admin = admin(&who)?;
    let mut scopes = b.scopes;
    scopes.extend(b.scope);
    let on_due = match b.on_due.as_deref() {
        None => OnDue::Keep,
        Some(t) => t.parse().map_err(ApiError::bad_request)?,
    };
    let new = NewCampaign {
        name: b.name,
        scopes,
        due: b.due.as_deref().map(span).transpose()?,
        reviewer: b.reviewer.filter(|r| !r.trim().is_empty()),
        on_due,
        keep_reason_required: b.keep_reason_required,
        schedule: None,
    };
    let v = app.service.create_review(admin, new).await?;
    Ok((StatusCode::CREATED, Json(json!(v))))
}

pub(crate) async fn list(
    State(app): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<Json<Value>> {
    let campaigns = app.service.reviews(&who).await?;
    Ok(Json(json!({ "campaigns": campaigns })))
}

/// The caller's undecided items, by campaign.
pub(crate) async fn mine(
    State(app): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<Json<Value>> {
    let mine = app.service.my_reviews(&who).await?;
    let campaigns: Vec<Value> = mine
        .into_iter()
        .map(|(c, items)| json!({ "campaign": c, "items": items }))
        .collect();
    Ok(Json(json!({ "campaigns": campaigns })))
}

pub(crate) async fn show(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(app.service.review(&who, &id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneDecision {
    item: String,
    decision: Verdict,
    #[serde(default)]
    reason: String,
}

/// Either `decisions: [{item, decision, reason}]`, or `items` with one `decision` and
/// `reason` for all (a bulk keep).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecideBody {
    #[serde(default)]
    decisions: Vec<OneDecision>,
    #[serde(default)]
    items: Vec<String>,
    decision: Option<Verdict>,
    #[serde(default)]
    reason: String,
}

pub(crate) async fn decide(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
    Body(b): Body<DecideBody>,
) -> ApiResult<Json<Value>> {
    let mut asks: Vec<Ask> = b
        .decisions
        .into_iter()
        .map(|d| Ask {
            item: d.item,
            verdict: d.decision,
            reason: d.reason,
        })
        .collect();
    if !b.items.is_empty() {
        let verdict = b.decision.ok_or_else(|| {
            ApiError::bad_request("items need a decision: \"keep\" or \"revoke\"")
        })?;
        asks.extend(b.items.into_iter().map(|item| Ask {
            item,
            verdict,
            reason: b.reason.clone(),
        }));
    }
    let items = app.service.decide_review(&who, &id, &asks).await?;
    Ok(Json(json!({ "items": items })))
}

pub(crate) async fn close(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Value>> {
    let admin = admin(&who)?;
    Ok(Json(json!(app.service.close_review(admin, &id).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportQuery {
    format: Option<String>,
}

/// The export's files as `{"files": {name: text}}` (admins and auditors); the CLI writes
/// them out.
pub(crate) async fn export(
    State(app): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<impl axum::response::IntoResponse> {
    let auditor = auditor(&who)?;
    let format: Format = q
        .format
        .as_deref()
        .unwrap_or("all")
        .parse()
        .map_err(ApiError::bad_request)?;
    let v = app.service.review_for_export(auditor, &id).await?;
    let head = app.service.record_review_export(auditor, &id).await?;
    let bundle = crate::evidence::review_bundle(&v, &head, format);
    drop(v);
    // Serialized from the files as they are: a large campaign's export is tens of megabytes,
    // and `json!` would copy it first.
    #[derive(serde::Serialize)]
    struct Files {
        files: std::collections::BTreeMap<String, String>,
    }
    Ok(Json(Files {
        files: bundle.files,
    }))
}
