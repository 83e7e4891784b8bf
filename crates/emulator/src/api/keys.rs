//! Keys: auth keys and OAuth clients (create, list, get, revoke, update).

use serde::Deserialize;
use serde_json::{Value as Json, json};
use tailnet::clock::{parse_rfc3339, rfc3339};
use tailnet::{AuditTarget, DeviceCreateCapabilities, Key, KeyCapabilities};
use time::{Duration, OffsetDateTime};

use super::{check_tags, check_tailnet, ok};
use crate::auth::{Principal, is_known_scope};
use crate::http::{ApiError, ApiResult, Reply, Req};
use crate::server::{App, AuditSpec, new_secret};
use crate::state::{DEFAULT_KEY_EXPIRY_SECONDS, KeyRecord, State};

/// The scope that governs keys of a type.
fn scope_for(key_type: &str) -> &'static str {
    match key_type {
        "client" => "oauth_keys",
        "federated" => "federated_keys",
        "api" => "api_access_tokens",
        _ => "auth_keys",
    }
}

/// The key as the API shows it, with `invalid` computed now.
fn view(k: &KeyRecord, now: OffsetDateTime) -> Key {
    let mut key = k.key.clone();
    key.key = None;
    let expired = key
        .expires
        .as_deref()
        .and_then(parse_rfc3339)
        .is_some_and(|e| e <= now);
    key.invalid = key.revoked.is_some() || expired;
    key
}

fn key_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("key {id:?} not found"))
}

pub(crate) fn list(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    let all = req
        .query_value("all")
        .is_some_and(|v| v == "true" || v == "1");
    let readable: Vec<&str> = ["auth", "client", "api", "federated"]
        .into_iter()
        .filter(|k| p.allows(scope_for(k), false))
        .collect();
    if readable.is_empty() {
        return Err(ApiError::forbidden(
            "insufficient permissions: listing keys needs auth_keys:read, oauth_keys:read, federated_keys:read or api_access_tokens:read",
        ));
    }
    let st = app.lock();
    check_tailnet(&st, t)?;
    let now = app.now();
    let keys: Vec<Key> = st
        .keys
        .iter()
        .filter(|k| readable.contains(&k.key.key_type.as_str()))
        .filter(|k| {
            let key = view(k, now);
            !key.invalid
        })
        .filter(|k| {
            all || match p {
                Principal::User { user_id, .. } => k.key.user_id.as_deref() == Some(user_id),
                Principal::OAuth { .. } => {
                    k.key.key_type == "client" || k.key.user_id.as_deref().is_none_or(str::is_empty)
                }
            }
        })
        .map(|k| view(k, now))
        .collect();
    Ok(Reply::json(&json!({ "keys": keys })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[serde(default)]
    key_type: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    capabilities: Option<CapabilitiesBody>,
    #[serde(default)]
    expiry_seconds: Option<i64>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct CapabilitiesBody {
    #[serde(default)]
    devices: Option<DevicesCaps>,
}

#[derive(Deserialize)]
struct DevicesCaps {
    #[serde(default)]
    create: Option<DeviceCreateCapabilities>,
}

fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > 50
        || !description
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
    {
        return Err(ApiError::bad_request(
            "description: at most 50 letters, digits, spaces and hyphens",
        ));
    }
    Ok(())
}

fn check_scopes(scopes: &[String]) -> Result<(), ApiError> {
    if scopes.is_empty() {
        return Err(ApiError::bad_request("at least one scope is required"));
    }
    if let Some(bad) = scopes.iter().find(|s| !is_known_scope(s)) {
        return Err(ApiError::bad_request(format!("unknown scope {bad:?}")));
    }
    Ok(())
}

/// Trust credentials with `devices:core` or `auth_keys` (or `all`) must carry tags.
fn needs_tags(scopes: &[String]) -> bool {
    scopes
        .iter()
        .any(|s| matches!(s.as_str(), "all" | "devices" | "devices:core" | "auth_keys"))
}

fn audit_key(p: &Principal, k: &Key, action: &'static str) -> AuditSpec<'static> {
    AuditSpec {
        origin: "CONFIG_API",
        actor: p.actor(),
        target: AuditTarget {
            id: k.id.clone(),
            name: k.description.clone(),
            kind: "API_KEY".to_owned(),
            is_ephemeral: None,
            property: String::new(),
        },
        action,
        old: None,
        new: None,
        details: String::new(),
    }
}

pub(crate) fn create(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    let body: CreateBody = req.json()?;
    let key_type = body.key_type.clone().unwrap_or_else(|| "auth".to_owned());
    let description = body.description.clone().unwrap_or_default();
    match key_type.as_str() {
        "auth" | "client" => p.require(scope_for(&key_type), true)?,
        "federated" => {
            return Err(ApiError::bad_request(
                "federated identities are not supported by this emulator",
            ));
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "keyType must be \"auth\", \"client\" or \"federated\", not {other:?}"
            )));
        }
    }
    check_description(&description)?;
    app.mutate(|st, ctx| {
        check_tailnet(st, t)?;
        let id = format!("k{}CNTRL", random_id(st));
        let created = rfc3339(ctx.now);
        let (key, secret) = if key_type == "auth" {
            let create = body
                .capabilities
                .as_ref()
                .and_then(|c| c.devices.as_ref())
                .ok_or_else(|| {
                    ApiError::bad_request("capabilities.devices is required for auth keys")
                })?
                .create
                .clone()
                .unwrap_or_default();
            let mut tags = create.tags.clone();
            tags.sort();
            tags.dedup();
            if matches!(p, Principal::OAuth { .. }) && tags.is_empty() {
                return Err(ApiError::bad_request(
                    "auth keys created with an OAuth client must have tags",
                ));
            }
            check_tags(st, p, &tags)?;
            let expiry = match body.expiry_seconds {
                None | Some(0) => DEFAULT_KEY_EXPIRY_SECONDS,
                Some(s) if s < 0 => {
                    return Err(ApiError::bad_request("expirySeconds must be positive"));
                }
                Some(s) => s as u64,
            };
            if expiry > DEFAULT_KEY_EXPIRY_SECONDS {
                return Err(ApiError::bad_request(
                    "expirySeconds may be at most 7776000 (90 days)",
                ));
            }
            let key = Key {
                id: id.clone(),
                key_type: "auth".to_owned(),
                description: description.clone(),
                expiry_seconds: Some(expiry),
                created: created.clone(),
                expires: Some(rfc3339(
                    ctx.now.saturating_add(Duration::seconds(expiry as i64)),
                )),
                capabilities: Some(KeyCapabilities {
                    devices: tailnet::DeviceCapabilities {
                        create: DeviceCreateCapabilities { tags, ..create },
                    },
                }),
                user_id: p.user_id().map(str::to_owned),
                ..Key::default()
            };
            (key, new_secret("tskey-auth", &id))
        } else {
            let scopes = body.scopes.clone().unwrap_or_default();
            check_scopes(&scopes)?;
            let mut tags = body.tags.clone().unwrap_or_default();
            tags.sort();
            tags.dedup();
            if needs_tags(&scopes) && tags.is_empty() {
                return Err(ApiError::bad_request(
                    "tags are required for OAuth clients with the devices:core or auth_keys scope",
                ));
            }
            check_tags(st, p, &tags)?;
            let key = Key {
                id: id.clone(),
                key_type: "client".to_owned(),
                description: description.clone(),
                created: created.clone(),
                scopes: Some(scopes),
                tags: Some(tags),
                user_id: p.user_id().map(str::to_owned),
                ..Key::default()
            };
            (key, new_secret("tskey-client", &id))
        };
        ctx.audit(st, audit_key(p, &key, "CREATE"));
        st.keys.push(KeyRecord {
            key: key.clone(),
            secret: secret.clone(),
        });
        let mut shown = key;
        shown.key = Some(secret);
        Ok(Reply::json(&shown))
    })
}

fn random_id(st: &mut State) -> String {
    let n = st.fresh_id();
    format!("{n}{}", crate::state::random_token(6))
}

/// The key `id` if `p` may see it (any token may see its own key).
fn readable<'a>(
    st: &'a State,
    p: &Principal,
    id: &str,
) -> Result<(usize, &'a KeyRecord), ApiError> {
    let (i, k) = st
        .keys
        .iter()
        .enumerate()
        .find(|(_, k)| k.key.id == id)
        .ok_or_else(|| key_not_found(id))?;
    if p.own_key_id() == id {
        return Ok((i, k));
    }
    p.require(scope_for(&k.key.key_type), false)?;
    if let Principal::User { user_id, .. } = p
        && !p.is_admin()
        && k.key.user_id.as_deref() != Some(user_id)
    {
        return Err(key_not_found(id));
    }
    Ok((i, k))
}

pub(crate) fn get(app: &App, p: &Principal, t: &str, id: &str) -> ApiResult {
    let st = app.lock();
    check_tailnet(&st, t)?;
    let (_, k) = readable(&st, p, id)?;
    Ok(Reply::json(&view(k, app.now())))
}

pub(crate) fn delete(app: &App, p: &Principal, t: &str, id: &str) -> ApiResult {
    app.mutate(|st, ctx| {
        check_tailnet(st, t)?;
        let (i, k) = readable(st, p, id)?;
        if p.own_key_id() != id {
            p.require(scope_for(&k.key.key_type), true)?;
        }
        if st.keys[i].key.revoked.is_some() {
            return ok();
        }
        st.keys[i].key.revoked = Some(rfc3339(ctx.now));
        let key = st.keys[i].key.clone();
        if key.key_type == "client" {
            st.tokens.retain(|_, tok| tok.client_id != key.id);
        }
        ctx.audit(st, audit_key(p, &key, "REVOKE"));
        ok()
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    #[serde(default)]
    key_type: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

pub(crate) fn update(app: &App, req: &Req, p: &Principal, t: &str, id: &str) -> ApiResult {
    let body: UpdateBody = req.json()?;
    p.require("oauth_keys", true)?;
    if let Some(d) = &body.description {
        check_description(d)?;
    }
    app.mutate(|st, ctx| {
        check_tailnet(st, t)?;
        let i = st
            .keys
            .iter()
            .position(|k| k.key.id == id)
            .ok_or_else(|| key_not_found(id))?;
        let key_type = st.keys[i].key.key_type.clone();
        if key_type != "client" || body.key_type.as_deref().is_some_and(|k| k != "client") {
            return Err(ApiError::bad_request(
                "only OAuth clients can be updated by this emulator",
            ));
        }
        if st.keys[i].key.revoked.is_some() {
            return Err(key_not_found(id));
        }
        let old = serde_json::to_value(view(&st.keys[i], ctx.now)).unwrap_or(Json::Null);
        let mut key = st.keys[i].key.clone();
        if let Some(scopes) = &body.scopes {
            check_scopes(scopes)?;
            key.scopes = Some(scopes.clone());
        }
        if let Some(tags) = &body.tags {
            check_tags(st, p, tags)?;
            key.tags = Some(tags.clone());
        }
        if needs_tags(key.scopes.as_deref().unwrap_or_default())
            && key.tags.as_deref().unwrap_or_default().is_empty()
        {
            return Err(ApiError::bad_request(
                "tags are required for OAuth clients with the devices:core or auth_keys scope",
            ));
        }
        if let Some(d) = &body.description {
            key.description = d.clone();
        }
        key.updated = Some(rfc3339(ctx.now));
        st.keys[i].key = key.clone();
        let mut spec = audit_key(p, &key, "UPDATE");
        spec.old = Some(old);
        spec.new = serde_json::to_value(view(&st.keys[i], ctx.now)).ok();
        ctx.audit(st, spec);
        Ok(Reply::json(&view(&st.keys[i], ctx.now)))
    })
}
