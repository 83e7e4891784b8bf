//! SCIM 2.0 (RFC 7643/7644) for the directory, when `[directory] scim = true`: an identity
//! provider pushes people to `/scim/v2/Users` (create, get, list with `filter=userName eq
//! "..."`, PUT, PATCH, DELETE) and groups to `/scim/v2/Groups`. Bodies are read and checked
//! with the `scim_v2` crate's types; `active: false` or a DELETE is a termination, acted on at
//! once. Requests carry `Authorization: Bearer <scim_token>`, compared in constant time.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use scim_v2::models::user::User;
use scim_v2::{CreateRequest, ReplaceRequest, Strict};
use serde::Deserialize;
use serde_json::{Value, json};
use tidegate_core::people::Person;

use crate::AppState;

const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const ERROR_URN: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/scim/v2/Users", get(list_users).post(create_user))
        .route(
            "/scim/v2/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/scim/v2/Groups", get(list_groups).post(create_group))
        .route(
            "/scim/v2/Groups/{id}",
            get(get_group)
                .put(replace_group)
                .patch(patch_group)
                .delete(delete_group),
        )
}

/// A SCIM answer (`application/scim+json`).
fn scim(status: StatusCode, body: Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    r
}

/// A SCIM error answer (RFC 7644 §3.12).
struct ScimError {
    status: StatusCode,
    scim_type: Option<&'static str>,
    detail: String,
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({"schemas": [ERROR_URN], "status": self.status.as_u16().to_string(), "detail": self.detail});
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        scim(self.status, body)
    }
}

fn error(
    status: StatusCode,
    scim_type: Option<&'static str>,
    detail: impl Into<String>,
) -> ScimError {
    ScimError {
        status,
        scim_type,
        detail: detail.into(),
    }
}

/// The SCIM bearer token, compared in constant time; SCIM must be on.
fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), ScimError> {
    let Some(dir) = app.service.config().directory.as_ref().filter(|d| d.scim) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            None,
            "SCIM is not enabled ([directory] scim = true)",
        ));
    };
    let expected = dir
        .scim_token
        .as_ref()
        .map(|t| t.expose().as_bytes().to_vec())
        .unwrap_or_default();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().as_bytes().to_vec())
        .unwrap_or_default();
    let same = !expected.is_empty()
        && given.len() == expected.len()
        && given
            .iter()
            .zip(&expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        tracing::warn!("SCIM request refused: bad or missing bearer token");
        Err(error(
            StatusCode::UNAUTHORIZED,
            None,
            "a valid bearer token is required",
        ))
    }
}

fn new_id() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..16)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect()
}

/// The person a SCIM user describes, with the directory's aliases applied.
fn person(app: &AppState, user: &Value, was: Option<&Person>) -> Result<Person, String> {
    let parsed: User<String> = serde_json::from_value(user.clone()).map_err(|e| e.to_string())?;
    let email = parsed.user_name.trim().to_lowercase();
    if !email.contains('@') || email.chars().any(char::is_control) {
        return Err(format!("userName {:?} is not an e-mail", parsed.user_name));
    }
    let aliases = app
        .service
        .config()
        .directory
        .as_ref()
        .map(|d| d.aliases.clone())
        .unwrap_or_default();
    let login = aliases
        .get(&email)
        .cloned()
        .unwrap_or_else(|| email.clone());
    let enterprise = parsed.enterprise_user.as_option();
    let manager_id = enterprise
        .and_then(|e| e.manager.as_option())
        .and_then(|m| m.value.as_option())
        .cloned()
        .unwrap_or_default();
    let active = parsed.active.as_option().copied().unwrap_or(true);
    let now = app.service.now();
    let terminated_at = match was {
        Some(w) if w.terminated => w.terminated_at,
        _ if !active => Some(now),
        _ => None,
    };
    Ok(Person {
        email,
        login,
        name: parsed
            .display_name
            .as_option()
            .cloned()
            .or_else(|| {
                parsed
                    .name
                    .as_option()
                    .and_then(|n| n.formatted.as_option().cloned())
            })
            .unwrap_or_default(),
        department: enterprise
            .and_then(|e| e.department.as_option().cloned())
            .unwrap_or_default(),
        title: parsed.title.as_option().cloned().unwrap_or_default(),
        manager: manager_id,
        terminated: !active,
        terminated_at,
        source: "scim".into(),
    })
}

fn with_meta(mut resource: Value, kind: &str, id: &str, public: &str) -> Value {
    resource["id"] = json!(id);
    resource["meta"] = json!({
        "resourceType": kind.trim_end_matches('s'),
        "location": format!("{public}/scim/v2/{kind}/{id}"),
    });
    resource
}

fn public_url(app: &AppState) -> String {
    app.service
        .config()
        .public_url
        .clone()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned()
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<usize>,
    count: Option<usize>,
}

/// `attr eq "value"`: the one filter identity providers send before provisioning.
fn equality(filter: &str) -> Result<(String, String), ScimError> {
    let bad = || {
        error(
            StatusCode::BAD_REQUEST,
            Some("invalidFilter"),
            format!("unsupported filter {filter:?}: use attribute eq \"value\""),
        )
    };
    if filter.parse::<scim_v2::filter::Filter>().is_err() {
        return Err(bad());
    }
    let mut parts = filter.splitn(3, ' ');
    let (Some(attr), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if !op.eq_ignore_ascii_case("eq") {
        return Err(bad());
    }
    let value: String = serde_json::from_str(value.trim()).map_err(|_| bad())?;
    Ok((attr.to_owned(), value))
}

async fn list(app: &AppState, kind: &str, q: &ListQuery) -> Response {
    let all = match app.service.scim_resources(kind).await {
        Ok(all) => all,
        Err(e) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, None, e.to_string()).into_response();
        }
    };
    let kept: Vec<Value> = match q.filter.as_deref() {
        None => all,
        Some(f) => {
            let (attr, value) = match equality(f) {
                Ok(v) => v,
                Err(r) => return r.into_response(),
            };
            all.into_iter()
                .filter(|r| {
                    r.as_object()
                        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(&attr)))
                        .and_then(|(_, v)| v.as_str())
                        .is_some_and(|v| v.eq_ignore_ascii_case(&value))
                })
                .collect()
        }
    };
    let start = q.start_index.unwrap_or(1).max(1);
    let count = q.count.unwrap_or(100).min(500);
    let page: Vec<Value> = kept.iter().skip(start - 1).take(count).cloned().collect();
    scim(
        StatusCode::OK,
        json!({"schemas": [LIST_URN], "totalResults": kept.len(), "startIndex": start, "itemsPerPage": page.len(), "Resources": page}),
    )
}

async fn list_users(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r.into_response();
    }
    list(&app, "Users", &q).await
}

async fn list_groups(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r.into_response();
    }
    list(&app, "Groups", &q).await
}

async fn get_one(app: &AppState, headers: &HeaderMap, kind: &str, id: &str) -> Response {
    if let Err(r) = authorize(app, headers) {
        return r.into_response();
    }
    match app.service.scim_resource(kind, id).await {
        Ok(Some(r)) => scim(StatusCode::OK, r),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            None,
            format!("no {} {id}", kind.trim_end_matches('s').to_lowercase()),
        )
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, None, e.to_string()).into_response(),
    }
}

async fn get_user(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    get_one(&app, &headers, "Users", &id).await
}

async fn get_group(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    get_one(&app, &headers, "Groups", &id).await
}

/// Stores a user (new or replaced) and the person it describes.
async fn save_user(app: &AppState, id: &str, body: Value, status: StatusCode) -> Response {
    let was = previous_person(app, id).await;
    let person = match person(app, &body, was.as_ref()) {
        Ok(p) => p,
        Err(why) => {
            return error(StatusCode::BAD_REQUEST, Some("invalidValue"), why).into_response();
        }
    };
    let resource = with_meta(body, "Users", id, &public_url(app));
    if let Err(e) = app
        .service
        .put_scim_resource("Users", id, Some(&resource), Some(&person))
        .await
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, None, e.to_string()).into_response();
    }
    scim(status, resource)
}

/// The person stored for this SCIM id before this change.
async fn previous_person(app: &AppState, id: &str) -> Option<Person> {
    let text = app
        .service
        .store()
        .get_state(&format!("{}{id}", tidegate_core::people::SCIM_PREFIX))
        .await
        .ok()??;
    serde_json::from_str(&text).ok()
}

async fn create_user(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r.into_response();
    }
    let user = match serde_json::from_slice::<Strict<User<String>, CreateRequest>>(&body) {
        Ok(u) => u.into_valid().into_inner(),
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, Some("invalidValue"), e.to_string())
                .into_response();
        }
    };
    let taken = app
        .service
        .scim_resources("Users")
        .await
        .unwrap_or_default()
        .iter()
        .any(|r| {
            r["userName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(&user.user_name))
        });
    if taken {
        return error(
            StatusCode::CONFLICT,
            Some("uniqueness"),
            format!("userName {} exists", user.user_name),
        )
        .into_response();
    }
    let value = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    save_user(&app, &new_id(), value, StatusCode::CREATED).await
}

async fn replace_user(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r.into_response();
    }
    if !matches!(app.service.scim_resource("Users", &id).await, Ok(Some(_))) {
        return error(StatusCode::NOT_FOUND, None, format!("no user {id}")).into_response();
    }
    if let Err(e) = serde_json::from_slice::<Strict<User<String>, ReplaceRequest>>(&body) {
        return error(StatusCode::BAD_REQUEST, Some("invalidValue"), e.to_string()).into_response();
    }
    let mut value = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    if let Some(o) = value.as_object_mut() {
        o.remove("id");
    }
    save_user(&app, &id, value, StatusCode::OK).await
}

/// Applies a PatchOp to a stored resource: `add`/`replace` with a simple path (`active`,
/// `title`, `name.formatted`, the enterprise extension's attributes) or without one (a map of
/// attributes), `remove` with a path. Paths with value filters are refused (400).
fn apply_patch(resource: &mut Value, body: &[u8]) -> Result<(), ScimError> {
    let op: scim_v2::models::others::PatchOp = serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            e.to_string(),
        )
    })?;
    use scim_v2::models::others::{OperationTarget, PatchOperation};
    let set = |resource: &mut Value, path: &str, value: Option<Value>| -> Result<(), ScimError> {
        if path.contains('[') {
            return Err(error(
                StatusCode::BAD_REQUEST,
                Some("invalidPath"),
                format!("path {path:?}: value filters are not supported"),
            ));
        }
        let (container, attr) = match path.strip_prefix(&format!("{ENTERPRISE_URN}:")) {
            Some(attr) => (Some(ENTERPRISE_URN), attr),
            None => (
                None,
                path.strip_prefix(&format!("{USER_URN}:")).unwrap_or(path),
            ),
        };
        let mut target = match container {
            Some(urn) => {
                if !resource[urn].is_object() {
                    resource[urn] = json!({});
                }
                &mut resource[urn]
            }
            None => &mut *resource,
        };
        let mut parts: Vec<&str> = attr.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        for p in parts {
            if !target[p].is_object() {
                target[p] = json!({});
            }
            target = &mut target[p];
        }
        match (value, target.as_object_mut()) {
            (Some(v), Some(o)) => {
                o.insert(last.to_owned(), v);
            }
            (None, Some(o)) => {
                o.remove(last);
            }
            _ => {}
        }
        Ok(())
    };
    for operation in op.operations {
        match operation {
            PatchOperation::Add(t) | PatchOperation::Replace(t) => match t {
                OperationTarget::WithPath { path, value } => {
                    set(resource, &path.to_string(), value)?
                }
                OperationTarget::WithoutPath { value } => {
                    for (k, v) in value {
                        set(resource, &k, Some(v))?;
                    }
                }
            },
            PatchOperation::Remove { path, .. } => set(resource, &path.to_string(), None)?,
        }
    }
    Ok(())
}

/// A stored resource with a PatchOp applied (not yet saved).
async fn patched(
    app: &AppState,
    headers: &HeaderMap,
    kind: &str,
    id: &str,
    body: &[u8],
) -> Result<Value, ScimError> {
    authorize(app, headers)?;
    let mut resource = match app.service.scim_resource(kind, id).await {
        Ok(Some(r)) => r,
        _ => {
            return Err(error(
                StatusCode::NOT_FOUND,
                None,
                format!("no {} {id}", kind.trim_end_matches('s').to_lowercase()),
            ));
        }
    };
    apply_patch(&mut resource, body)?;
    Ok(resource)
}

async fn patch_user(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let resource = match patched(&app, &headers, "Users", &id, &body).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // `active` may come as "False" from some providers; the crate's lenient reading decides.
    save_user(&app, &id, resource, StatusCode::OK).await
}

async fn delete_user(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r.into_response();
    }
    let Some(mut person) = previous_person(&app, &id).await else {
        return error(StatusCode::NOT_FOUND, None, format!("no user {id}")).into_response();
    };
    // A deprovisioned person is a leaver: kept as terminated, acted on now.
    if !person.terminated {
        person.terminated = true;
        person.terminated_at = Some(app.service.now());
    }
    match app
        .service
        .put_scim_resource("Users", &id, None, Some(&person))
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, None, e.to_string()).into_response(),
    }
}

async fn save_group(app: &AppState, id: &str, body: &[u8], status: StatusCode) -> Response {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                Some("invalidSyntax"),
                e.to_string(),
            )
            .into_response();
        }
    };
    if let Err(e) = serde_json::from_value::<scim_v2::models::group::Group<String>>(value.clone()) {
        return error(StatusCode::BAD_REQUEST, Some("invalidValue"), e.to_string()).into_response();
    }
    let resource = with_meta(value, "Groups", id, &public_url(app));
    match app
        .service
        .put_scim_resource("Groups", id, Some(&resource), None)
        .await
    {
        Ok(()) => scim(status, resource),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, None, e.to_string()).into_response(),
    }
}

async fn create_group(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r.into_response();
    }
    save_group(&app, &new_id(), &body, StatusCode::CREATED).await
}

async fn replace_group(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r.into_response();
    }
    if !matches!(app.service.scim_resource("Groups", &id).await, Ok(Some(_))) {
        return error(StatusCode::NOT_FOUND, None, format!("no group {id}")).into_response();
    }
    save_group(&app, &id, &body, StatusCode::OK).await
}

async fn patch_group(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let resource = match patched(&app, &headers, "Groups", &id, &body).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    save_group(&app, &id, resource.to_string().as_bytes(), StatusCode::OK).await
}

async fn delete_group(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r.into_response();
    }
    if !matches!(app.service.scim_resource("Groups", &id).await, Ok(Some(_))) {
        return error(StatusCode::NOT_FOUND, None, format!("no group {id}")).into_response();
    }
    match app
        .service
        .put_scim_resource("Groups", &id, None, None)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, None, e.to_string()).into_response(),
    }
}
