//! Device posture attributes: get, set, delete, the batch merge patch, and the sweep that
//! removes attributes whose expiry has passed.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use tailnet::clock::{parse_rfc3339, rfc3339};
use tailnet::{AuditActor, PostureAttributes};
use time::OffsetDateTime;

use super::{check_tailnet, find_device, node_target, ok};
use crate::auth::Principal;
use crate::http::{ApiError, ApiResult, Reply, Req};
use crate::server::{App, AuditSpec, Ctx};
use crate::state::{PostureKey, PostureValue, State, value_kind};

/// The largest integer a posture attribute may hold (2^53 - 1).
const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// Checks an attribute key: `custom:` namespace, at most 128 characters of `[A-Za-z0-9_:]`.
pub(crate) fn check_key(key: &str) -> Result<(), ApiError> {
    let Some(name) = key.strip_prefix("custom:") else {
        return Err(ApiError::bad_request(format!(
            "attribute key {key:?} is not in the custom: namespace; only custom: attributes can be set"
        )));
    };
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "attribute key has no name after custom:",
        ));
    }
    if key.len() > 128 {
        return Err(ApiError::bad_request(format!(
            "attribute key is {} characters long; the limit is 128",
            key.len()
        )));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(ApiError::bad_request(format!(
            "attribute key {key:?} may only contain letters, numbers, underscores and colons"
        )));
    }
    Ok(())
}

/// Checks a value: a string of at most 50 `[A-Za-z0-9_.]`, an integer within ±(2^53 - 1), or
/// a boolean.
pub(crate) fn check_value(value: &Json) -> Result<(), ApiError> {
    match value {
        Json::Bool(_) => Ok(()),
        Json::String(s) => {
            if s.chars().count() > 50 {
                return Err(ApiError::bad_request(
                    "string attribute values are limited to 50 characters",
                ));
            }
            if !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(ApiError::bad_request(format!(
                    "string attribute value {s:?} may only contain letters, numbers, underscores and periods"
                )));
            }
            Ok(())
        }
        Json::Number(n) => {
            let int = n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.1e15)
                    .map(|f| f as i64)
            });
            match int {
                Some(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) => Ok(()),
                Some(_) => Err(ApiError::bad_request(
                    "number attribute values must be within ±(2^53 - 1)",
                )),
                None => Err(ApiError::bad_request(
                    "number attribute values must be integers",
                )),
            }
        }
        other => Err(ApiError::bad_request(format!(
            "attribute values must be a string, number or boolean, not {}",
            value_kind(other)
        ))),
    }
}

/// Integral floats are stored as integers.
fn normalize(value: Json) -> Json {
    match &value {
        Json::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => {
            n.as_f64().map(|f| json!(f as i64)).unwrap_or(value)
        }
        _ => value,
    }
}

fn check_expiry(expiry: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    match expiry {
        None | Some("") => Ok(None),
        Some(text) => parse_rfc3339(text).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("expiry {text:?} is not an RFC 3339 time"))
        }),
    }
}

fn check_comment(comment: &str) -> Result<(), ApiError> {
    if comment.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "comments are limited to 200 characters",
        ));
    }
    Ok(())
}

/// Type and case-insensitive uniqueness of a key tailnet-wide; `pending` holds locks taken
/// earlier in the same batch.
fn check_lock(
    locks: &BTreeMap<String, PostureKey>,
    pending: &BTreeMap<String, PostureKey>,
    key: &str,
    value: &Json,
) -> Result<(), ApiError> {
    let lower = key.to_lowercase();
    let Some(lock) = pending.get(&lower).or_else(|| locks.get(&lower)) else {
        return Ok(());
    };
    if lock.key != key {
        return Err(ApiError::bad_request(format!(
            "attribute key {key:?} conflicts with the existing key {:?} (keys are unique regardless of case)",
            lock.key
        )));
    }
    let kind = value_kind(value);
    if lock.kind != kind {
        return Err(ApiError::bad_request(format!(
            "attribute {key:?} holds {} values in this tailnet; got a {kind}",
            lock.kind
        )));
    }
    Ok(())
}

/// What `GET /device/{id}/attributes` shows: the stored attributes plus the `node:` ones
/// Tailscale derives from the device.
fn attributes(st: &State, i: usize) -> PostureAttributes {
    let d = &st.devices[i];
    let mut out = PostureAttributes::default();
    if !d.device.os.is_empty() {
        out.attributes
            .insert("node:os".to_owned(), json!(d.device.os));
    }
    if !d.device.client_version.is_empty() {
        let version = d
            .device
            .client_version
            .trim_start_matches('v')
            .split('-')
            .next()
            .unwrap_or_default();
        out.attributes
            .insert("node:tsVersion".to_owned(), json!(version));
    }
    for (k, v) in &d.posture {
        out.attributes.insert(k.clone(), v.value.clone());
        if let Some(expiry) = v.expiry {
            out.expiries.insert(k.clone(), rfc3339(expiry));
        }
    }
    out
}

pub(crate) fn get(app: &App, p: &Principal, id: &str) -> ApiResult {
    p.require("devices:posture_attributes", false)?;
    let st = app.lock();
    let i = find_device(&st, id)?;
    Ok(Reply::json(&attributes(&st, i)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    value: Json,
    #[serde(default)]
    expiry: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

/// Writes one attribute (already validated) with its audit entry.
#[allow(clippy::too_many_arguments)]
fn write(
    st: &mut State,
    ctx: &mut Ctx,
    actor: &AuditActor,
    i: usize,
    key: &str,
    value: Json,
    expiry: Option<OffsetDateTime>,
    comment: &str,
) {
    st.posture_keys
        .entry(key.to_lowercase())
        .or_insert_with(|| PostureKey {
            key: key.to_owned(),
            kind: value_kind(&value).to_owned(),
        });
    let old = st.devices[i].posture.insert(
        key.to_owned(),
        PostureValue {
            value: value.clone(),
            expiry,
        },
    );
    let target = node_target(st, i, "ATTRIBUTES");
    let mut new = Map::new();
    new.insert(key.to_owned(), value);
    ctx.audit(
        st,
        AuditSpec {
            origin: "CONFIG_API",
            actor: actor.clone(),
            target,
            action: if old.is_some() { "UPDATE" } else { "CREATE" },
            old: old.map(|o| json!({ key: o.value })),
            new: Some(Json::Object(new)),
            details: comment.to_owned(),
        },
    );
}

fn remove(
    st: &mut State,
    ctx: &mut Ctx,
    actor: &AuditActor,
    origin: &str,
    i: usize,
    key: &str,
    comment: &str,
) {
    if let Some(old) = st.devices[i].posture.remove(key) {
        let target = node_target(st, i, "ATTRIBUTES");
        ctx.audit(
            st,
            AuditSpec {
                origin,
                actor: actor.clone(),
                target,
                action: "DELETE",
                old: Some(json!({ key: old.value })),
                new: None,
                details: comment.to_owned(),
            },
        );
    }
}

pub(crate) fn set(app: &App, req: &Req, p: &Principal, id: &str, key: &str) -> ApiResult {
    p.require("devices:posture_attributes", true)?;
    check_key(key)?;
    let body: SetBody = req.json()?;
    check_value(&body.value)?;
    let value = normalize(body.value);
    let expiry = check_expiry(body.expiry.as_deref())?;
    let comment = body.comment.unwrap_or_default();
    check_comment(&comment)?;
    app.mutate(|st, ctx| {
        let i = find_device(st, id)?;
        check_lock(&st.posture_keys, &BTreeMap::new(), key, &value)?;
        write(st, ctx, &p.actor(), i, key, value, expiry, &comment);
        st.recompute_next_expiry();
        Ok(Reply::json(&attributes(st, i)))
    })
}

pub(crate) fn delete(app: &App, p: &Principal, id: &str, key: &str) -> ApiResult {
    p.require("devices:posture_attributes", true)?;
    check_key(key)?;
    app.mutate(|st, ctx| {
        let i = find_device(st, id)?;
        remove(st, ctx, &p.actor(), "CONFIG_API", i, key, "");
        st.recompute_next_expiry();
        ok()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    nodes: BTreeMap<String, BTreeMap<String, Option<BatchValue>>>,
    #[serde(default)]
    comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchValue {
    value: Json,
    #[serde(default)]
    expiry: Option<String>,
}

pub(crate) fn batch(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    p.require("devices:posture_attributes", true)?;
    let body: BatchBody = req.json()?;
    let comment = body.comment.unwrap_or_default();
    check_comment(&comment)?;
    // Everything is checked before anything changes.
    let mut ops = Vec::new();
    for (node, attrs) in body.nodes {
        for (key, change) in attrs {
            check_key(&key)?;
            let change = match change {
                None => None,
                Some(v) => {
                    check_value(&v.value)?;
                    Some((normalize(v.value), check_expiry(v.expiry.as_deref())?))
                }
            };
            ops.push((node.clone(), key, change));
        }
    }
    app.mutate(|st, ctx| {
        check_tailnet(st, t)?;
        let mut pending = BTreeMap::new();
        let mut resolved = Vec::new();
        for (node, key, change) in ops {
            let i = find_device(st, &node)?;
            if let Some((value, _)) = &change {
                check_lock(&st.posture_keys, &pending, &key, value)?;
                pending
                    .entry(key.to_lowercase())
                    .or_insert_with(|| PostureKey {
                        key: key.clone(),
                        kind: value_kind(value).to_owned(),
                    });
            }
            resolved.push((i, key, change));
        }
        let actor = p.actor();
        for (i, key, change) in resolved {
            match change {
                Some((value, expiry)) => write(st, ctx, &actor, i, &key, value, expiry, &comment),
                None => remove(st, ctx, &actor, "CONFIG_API", i, &key, &comment),
            }
        }
        st.recompute_next_expiry();
        Ok(Reply::json(&Json::Null))
    })
}

/// Removes every attribute whose expiry is at or before `ctx.now`.
pub(crate) fn sweep(st: &mut State, ctx: &mut Ctx) {
    let now = ctx.now;
    let expired: Vec<(usize, String)> = st
        .devices
        .iter()
        .enumerate()
        .flat_map(|(i, d)| {
            d.posture
                .iter()
                .filter(|(_, v)| v.expiry.is_some_and(|e| e <= now))
                .map(move |(k, _)| (i, k.clone()))
        })
        .collect();
    let actor = AuditActor {
        id: String::new(),
        kind: "AUTOMATED_WORKER".to_owned(),
        login_name: String::new(),
        display_name: "posture attribute expiry".to_owned(),
        tags: Vec::new(),
    };
    for (i, key) in expired {
        remove(st, ctx, &actor, "CONTROL", i, &key, "expired");
    }
    st.recompute_next_expiry();
}
