//! Test controls under `/emulator/` (no authentication; not part of Tailscale's API): state
//! dump, the clock, fault injection, admin-console policy edits, webhook deliveries, and
//! devices or users joining the tailnet.

use hyper::Method;
use hyper::header::ETAG;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tailnet::clock::{parse_rfc3339, rfc3339};
use tailnet::{AuditActor, AuditTarget, Clock, User};
use time::Duration;

use crate::http::{ApiError, ApiResult, Reply, Req, segments};
use crate::server::{App, AuditSpec, Fault};

pub(crate) fn route(app: &App, req: &Req) -> ApiResult {
    let rest = req.path.strip_prefix("/emulator").unwrap_or_default();
    let segs = segments(rest).ok_or_else(|| ApiError::not_found("not found"))?;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = &req.method;
    match (s.as_slice(), m) {
        (["state"], &Method::GET) => Ok(Reply::json(&app.lock().to_json())),
        (["clock"], &Method::GET) => Ok(now_reply(app)),
        (["clock"], &Method::POST) => clock(app, req),
        (["faults"], &Method::GET) => Ok(Reply::json(&*app.faults())),
        (["faults"], &Method::POST) => add_faults(app, req),
        (["faults"], &Method::DELETE) => {
            app.faults().clear();
            Ok(Reply::json(&json!({})))
        }
        (["policy"], &Method::POST) => set_policy(app, req),
        (["webhook-deliveries"], &Method::GET) => Ok(Reply::json(&*app.deliveries())),
        (["webhook-deliveries"], &Method::DELETE) => {
            app.deliveries().clear();
            Ok(Reply::json(&json!({})))
        }
        (["devices"], &Method::POST) => add_device(app, req),
        (["users"], &Method::POST) => add_user(app, req),
        (
            [
                "state" | "clock" | "faults" | "policy" | "webhook-deliveries" | "devices"
                | "users",
            ],
            _,
        ) => Err(ApiError::new(
            hyper::StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        )),
        _ => Err(ApiError::not_found("not found")),
    }
}

fn now_reply(app: &App) -> Reply {
    Reply::json(&json!({ "now": rfc3339(app.clock.now()) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClockBody {
    #[serde(default)]
    advance_seconds: Option<i64>,
    #[serde(default)]
    set: Option<String>,
}

fn clock(app: &App, req: &Req) -> ApiResult {
    let body: ClockBody = req.json_or(ClockBody {
        advance_seconds: None,
        set: None,
    })?;
    if let Some(text) = &body.set {
        let to = parse_rfc3339(text)
            .ok_or_else(|| ApiError::bad_request(format!("{text:?} is not an RFC 3339 time")))?;
        app.clock.set(to);
    }
    if let Some(secs) = body.advance_seconds {
        app.clock.advance(Duration::seconds(secs));
    }
    app.sweep();
    Ok(now_reply(app))
}

fn add_faults(app: &App, req: &Req) -> ApiResult {
    let value: Json = req.json()?;
    let list: Vec<Fault> = match value {
        Json::Array(_) => serde_json::from_value(value),
        other => serde_json::from_value(other).map(|f| vec![f]),
    }
    .map_err(|e| ApiError::bad_request(format!("invalid fault: {e}")))?;
    for f in &list {
        f.validate().map_err(ApiError::bad_request)?;
    }
    let mut faults = app.faults();
    faults.extend(list);
    Ok(Reply::json(&*faults))
}

/// The policy replaced by hand in the admin console: no `If-Match`, validated and tested all
/// the same, origin `ADMIN_CONSOLE`.
fn set_policy(app: &App, req: &Req) -> ApiResult {
    let text = req.text()?.to_owned();
    let login = req.query_value("actor").map(str::to_owned);
    app.mutate(|st, ctx| {
        let user = match &login {
            Some(l) => st.user_by_login(l),
            None => st
                .users
                .iter()
                .find(|u| u.role == "owner")
                .or(st.users.first()),
        }
        .cloned()
        .unwrap_or_default();
        let actor = AuditActor {
            id: user.id.clone(),
            kind: "USER".to_owned(),
            login_name: user.login_name.clone(),
            display_name: user.display_name.clone(),
            tags: Vec::new(),
        };
        crate::api::policy::apply(st, ctx, &text, actor, "ADMIN_CONSOLE")?;
        let etag = st.etag();
        Ok(Reply::json(&json!({ "etag": etag })).with_header(ETAG, &etag))
    })
}

fn add_device(app: &App, req: &Req) -> ApiResult {
    let mut raw: Json = req.json()?;
    app.mutate(|st, ctx| {
        // Joining with an auth key: the device takes the key's tags, ephemerality and
        // pre-authorization and its creator; a single-use key is spent.
        if let Some(secret) = raw.get("authKey").and_then(Json::as_str).map(str::to_owned) {
            let now = ctx.now;
            let key = st
                .keys
                .iter_mut()
                .find(|k| k.key.key_type == "auth" && k.secret == secret)
                .ok_or_else(|| ApiError::unauthorized("invalid auth key"))?;
            let expired = key
                .key
                .expires
                .as_deref()
                .and_then(tailnet::clock::parse_rfc3339)
                .is_some_and(|e| e <= now);
            if key.key.invalid || key.key.revoked.is_some() || expired {
                return Err(ApiError::unauthorized("auth key is no longer valid"));
            }
            let create = key
                .key
                .capabilities
                .clone()
                .unwrap_or_default()
                .devices
                .create;
            if !create.reusable {
                key.key.invalid = true;
            }
            let key_id = key.key.id.clone();
            let creator = key.key.user_id.clone();
            let object = raw
                .as_object_mut()
                .ok_or_else(|| ApiError::bad_request("a device is a JSON object"))?;
            object.remove("authKey");
            object.insert("tags".into(), serde_json::json!(create.tags));
            object.insert("isEphemeral".into(), Json::Bool(create.ephemeral));
            object.insert("authorized".into(), Json::Bool(create.preauthorized));
            object.insert("authKeyId".into(), Json::String(key_id));
            if !object.contains_key("user")
                && let Some(login) = creator
                    .and_then(|id| st.users.iter().find(|u| u.id == id))
                    .map(|u| u.login_name.clone())
            {
                object.insert("user".into(), Json::String(login));
            }
        }
        let record = st
            .device_from_json(&raw, ctx.now)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let device = record.device.clone();
        st.devices.push(record);
        st.touch_devices();
        st.recompute_next_expiry();
        let i = st.devices.len() - 1;
        let target = crate::api::node_target(st, i, "");
        let owner = st.user_by_login(&device.user).cloned().unwrap_or_default();
        ctx.audit(
            st,
            AuditSpec {
                origin: "NODE",
                actor: AuditActor {
                    id: owner.id,
                    kind: "USER".to_owned(),
                    login_name: owner.login_name,
                    display_name: owner.display_name,
                    tags: Vec::new(),
                },
                target,
                action: "CREATE",
                old: None,
                new: None,
                details: String::new(),
            },
        );
        ctx.event(
            st,
            "nodeCreated",
            format!("Node {} created", device.name),
            json!({
                "nodeID": device.node_id,
                "deviceName": device.name,
                "managedBy": device.user,
                "actor": device.user,
                "url": "https://login.tailscale.com/admin/machines",
            }),
        );
        Ok(Reply::json(&crate::api::devices::view(
            &st.devices[i],
            true,
        )))
    })
}

fn add_user(app: &App, req: &Req) -> ApiResult {
    let mut user: User = req.json()?;
    if user.login_name.trim().is_empty() {
        return Err(ApiError::bad_request("loginName is required"));
    }
    app.mutate(|st, ctx| {
        if st.user_by_login(&user.login_name).is_some() {
            return Err(ApiError::bad_request("a user with that loginName exists"));
        }
        let now = rfc3339(ctx.now);
        if user.id.is_empty() {
            user.id = st.fresh_id().to_string();
        }
        for (field, default) in [
            (&mut user.created, now.clone()),
            (&mut user.last_seen, now),
            (&mut user.kind, "member".to_owned()),
            (&mut user.role, "member".to_owned()),
            (&mut user.status, "active".to_owned()),
            (&mut user.tailnet_id, st.tailnet.clone()),
        ] {
            if field.is_empty() {
                *field = default;
            }
        }
        if user.display_name.is_empty() {
            user.display_name = user.login_name.split('@').next().unwrap_or_default().to_owned();
        }
        st.users.push(user.clone());
        ctx.audit(
            st,
            AuditSpec {
                origin: "IDENTITY_PROVIDER",
                actor: AuditActor {
                    id: user.id.clone(),
                    kind: "USER".to_owned(),
                    login_name: user.login_name.clone(),
                    display_name: user.display_name.clone(),
                    tags: Vec::new(),
                },
                target: AuditTarget {
                    id: user.id.clone(),
                    name: user.login_name.clone(),
                    kind: "USER".to_owned(),
                    is_ephemeral: None,
                    property: String::new(),
                },
                action: "CREATE",
                old: None,
                new: None,
                details: String::new(),
            },
        );
        ctx.event(
            st,
            "userCreated",
            format!("User {} created", user.login_name),
            json!({"user": user.login_name, "url": "https://login.tailscale.com/admin/users", "actor": user.login_name}),
        );
        Ok(Reply::json(&user))
    })
}
