//! Devices: list (with `fields` projection and exact-match filters), get, delete, authorize,
//! tags, expire, key, name, IP and routes.

use std::net::Ipv4Addr;

use bytes::Bytes;
use hyper::StatusCode;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value as Json, json};
use tailnet::clock::rfc3339;

use super::{check_tags, check_tailnet, find_device, node_target, ok};
use crate::auth::Principal;
use crate::http::{ApiError, ApiResult, Reply, Req};
use crate::server::{App, AuditSpec, Ctx};
use crate::state::{DeviceRecord, State};

/// A device as the API shows it: `lastSeen` omitted while connected; routes and the other
/// detailed fields only with `fields=all`. Serialized directly (no intermediate JSON tree), as
/// lists of 10,000 devices are common.
pub(crate) struct DeviceView<'a> {
    pub d: &'a DeviceRecord,
    pub all: bool,
}

impl Serialize for DeviceView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = &self.d.device;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("addresses", &d.addresses)?;
        m.serialize_entry("id", &d.id)?;
        m.serialize_entry("nodeId", &d.node_id)?;
        m.serialize_entry("user", &d.user)?;
        m.serialize_entry("name", &d.name)?;
        m.serialize_entry("hostname", &d.hostname)?;
        m.serialize_entry("clientVersion", &d.client_version)?;
        m.serialize_entry("updateAvailable", &d.update_available)?;
        m.serialize_entry("os", &d.os)?;
        m.serialize_entry("created", &d.created)?;
        m.serialize_entry("connectedToControl", &d.connected_to_control)?;
        if !d.connected_to_control
            && let Some(last_seen) = &d.last_seen
        {
            m.serialize_entry("lastSeen", last_seen)?;
        }
        m.serialize_entry("keyExpiryDisabled", &d.key_expiry_disabled)?;
        m.serialize_entry("expires", &d.expires)?;
        m.serialize_entry("authorized", &d.authorized)?;
        m.serialize_entry("isExternal", &d.is_external)?;
        m.serialize_entry("machineKey", &d.machine_key)?;
        m.serialize_entry("nodeKey", &d.node_key)?;
        m.serialize_entry("blocksIncomingConnections", &d.blocks_incoming_connections)?;
        m.serialize_entry("tailnetLockKey", &d.tailnet_lock_key)?;
        m.serialize_entry("tailnetLockError", &d.tailnet_lock_error)?;
        m.serialize_entry("tags", &d.tags)?;
        m.serialize_entry("isEphemeral", &d.is_ephemeral)?;
        if self.all {
            let none = Vec::new();
            m.serialize_entry("enabledRoutes", d.enabled_routes.as_ref().unwrap_or(&none))?;
            m.serialize_entry(
                "advertisedRoutes",
                d.advertised_routes.as_ref().unwrap_or(&none),
            )?;
            for (k, v) in &self.d.extra {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

/// One device as a JSON object.
pub(crate) fn view(d: &DeviceRecord, all: bool) -> Map<String, Json> {
    match serde_json::to_value(DeviceView { d, all }) {
        Ok(Json::Object(o)) => o,
        _ => Map::new(),
    }
}

/// The value of a top-level field, for filters.
fn field(d: &DeviceRecord, name: &str) -> Option<Json> {
    let v = &d.device;
    Some(match name {
        "id" => json!(v.id),
        "nodeId" => json!(v.node_id),
        "user" => json!(v.user),
        "name" => json!(v.name),
        "hostname" => json!(v.hostname),
        "os" => json!(v.os),
        "tags" => json!(v.tags),
        "addresses" => json!(v.addresses),
        "authorized" => json!(v.authorized),
        "isEphemeral" => json!(v.is_ephemeral),
        "isExternal" => json!(v.is_external),
        "clientVersion" => json!(v.client_version),
        _ => return view(d, true).remove(name),
    })
}

fn wants_all(req: &Req) -> Result<bool, ApiError> {
    match req.query_value("fields") {
        None | Some("default") | Some("") => Ok(false),
        Some("all") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid fields value {other:?}: use \"all\" or \"default\""
        ))),
    }
}

/// Exact match of a query filter against a top-level field: strings, numbers and booleans by
/// their text, lists must contain every value given.
/// Exact match of a query filter against a top-level field: strings, numbers and booleans by
/// their text, lists must contain every value given.
fn json_text(value: &Json) -> String {
    value.to_string()
}

fn filter_matches(value: Option<Json>, values: &[&str]) -> bool {
    match value {
        Some(Json::Array(items)) => values.iter().all(|v| {
            items.iter().any(|item| match item {
                Json::String(s) => s == v,
                other => json_text(other) == *v,
            })
        }),
        Some(Json::String(s)) => values.iter().all(|v| s == *v),
        Some(Json::Object(_)) | None => false,
        Some(other) => {
            let text = other.to_string();
            values.iter().all(|v| text == *v)
        }
    }
}

fn render(devices: &[&DeviceRecord], all: bool) -> Result<Bytes, ApiError> {
    let views: Vec<DeviceView<'_>> = devices.iter().map(|d| DeviceView { d, all }).collect();
    let mut out = Vec::with_capacity(devices.len() * 700 + 16);
    out.extend_from_slice(b"{\"devices\":");
    serde_json::to_writer(&mut out, &views).map_err(|e| ApiError::internal(e.to_string()))?;
    out.push(b'}');
    Ok(out.into())
}

pub(crate) fn list(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    p.require("devices:core", false)?;
    let all = wants_all(req)?;
    let mut filters: Vec<(&str, Vec<&str>)> = Vec::new();
    for (k, _) in &req.query {
        if k == "fields" || filters.iter().any(|(f, _)| f == k) {
            continue;
        }
        filters.push((k.as_str(), req.query_values(k)));
    }
    let st = app.lock();
    check_tailnet(&st, t)?;
    if filters.is_empty() {
        let generation = st.devices_gen;
        {
            let cache = app.devices_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, _, body)) = cache.iter().find(|(g, a, _)| *g == generation && *a == all)
            {
                return Ok(Reply::bytes(
                    StatusCode::OK,
                    "application/json",
                    body.clone(),
                ));
            }
        }
        let devices: Vec<&DeviceRecord> = st.devices.iter().collect();
        let body = render(&devices, all)?;
        drop(st);
        let mut cache = app.devices_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(g, a, _)| *g == generation && *a != all);
        cache.push((generation, all, body.clone()));
        return Ok(Reply::bytes(StatusCode::OK, "application/json", body));
    }
    let devices: Vec<&DeviceRecord> = st
        .devices
        .iter()
        .filter(|d| {
            filters
                .iter()
                .all(|(f, values)| filter_matches(field(d, f), values))
        })
        .collect();
    Ok(Reply::bytes(
        StatusCode::OK,
        "application/json",
        render(&devices, all)?,
    ))
}

pub(crate) fn get(app: &App, req: &Req, p: &Principal, id: &str) -> ApiResult {
    p.require("devices:core", false)?;
    let all = wants_all(req)?;
    let st = app.lock();
    let i = find_device(&st, id)?;
    Ok(Reply::json(&view(&st.devices[i], all)))
}

pub(crate) fn delete(app: &App, p: &Principal, id: &str) -> ApiResult {
    p.require("devices:core", true)?;
    app.mutate(|st, ctx| {
        let i = find_device(st, id)?;
        if st.devices[i].device.is_external {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "deleting a device shared into the tailnet is not supported",
            ));
        }
        let target = node_target(st, i, "");
        let removed = st.devices.remove(i);
        st.touch_devices();
        st.recompute_next_expiry();
        ctx.audit(
            st,
            AuditSpec {
                origin: "CONFIG_API",
                actor: p.actor(),
                target,
                action: "DELETE",
                old: None,
                new: None,
                details: String::new(),
            },
        );
        ctx.event(
            st,
            "nodeDeleted",
            format!("Node {} deleted", removed.device.name),
            json!({
                "nodeID": removed.device.node_id,
                "deviceName": removed.device.name,
                "managedBy": if removed.device.tags.is_empty() {
                    removed.device.user.clone()
                } else {
                    removed.device.tags.join(",")
                },
                "actor": p.login(),
                "url": format!("https://login.tailscale.com/admin/machines/{}", removed.device.addresses.first().cloned().unwrap_or_default()),
            }),
        );
        ok()
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorizedBody {
    authorized: bool,
}

#[derive(Deserialize)]
struct TagsBody {
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyBody {
    key_expiry_disabled: bool,
}

#[derive(Deserialize)]
struct NameBody {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct IpBody {
    ipv4: String,
}

#[derive(Deserialize)]
struct RoutesBody {
    routes: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn audit_node(
    st: &mut State,
    ctx: &mut Ctx,
    p: &Principal,
    i: usize,
    action: &'static str,
    property: &str,
    old: Json,
    new: Json,
) {
    let target = node_target(st, i, property);
    ctx.audit(
        st,
        AuditSpec {
            origin: "CONFIG_API",
            actor: p.actor(),
            target,
            action,
            old: Some(old),
            new: Some(new),
            details: String::new(),
        },
    );
}

fn valid_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub(crate) fn action(app: &App, req: &Req, p: &Principal, id: &str, action: &str) -> ApiResult {
    p.require("devices:core", true)?;
    match action {
        "authorized" => {
            let body: AuthorizedBody = req.json()?;
            app.mutate(|st, ctx| {
                let i = find_device(st, id)?;
                let old = st.devices[i].device.authorized;
                if old != body.authorized {
                    st.devices[i].device.authorized = body.authorized;
                    st.touch_devices();
                    if body.authorized {
                        let target = node_target(st, i, "");
                        ctx.audit(
                            st,
                            AuditSpec {
                                origin: "CONFIG_API",
                                actor: p.actor(),
                                target,
                                action: "APPROVE",
                                old: None,
                                new: None,
                                details: String::new(),
                            },
                        );
                        let d = st.devices[i].device.clone();
                        ctx.event(
                            st,
                            "nodeApproved",
                            format!("Node {} approved", d.name),
                            json!({"nodeID": d.node_id, "deviceName": d.name, "managedBy": d.user, "actor": p.login(), "url": "https://login.tailscale.com/admin/machines"}),
                        );
                    } else {
                        audit_node(st, ctx, p, i, "UPDATE", "MACHINE_AUTH_NEEDED", json!(false), json!(true));
                    }
                }
                ok()
            })
        }
        "tags" => {
            let body: TagsBody = req.json()?;
            let mut tags = body.tags;
            tags.sort();
            tags.dedup();
            app.mutate(|st, ctx| {
                let i = find_device(st, id)?;
                check_tags(st, p, &tags)?;
                let old = st.devices[i].device.tags.clone();
                if old != tags {
                    st.devices[i].device.tags = tags.clone();
                    st.touch_devices();
                    audit_node(st, ctx, p, i, "UPDATE", "ACL_TAGS", json!(old), json!(tags));
                }
                ok()
            })
        }
        "expire" => app.mutate(|st, ctx| {
            let i = find_device(st, id)?;
            let old = st.devices[i].device.expires.clone();
            let new = rfc3339(ctx.now);
            st.devices[i].device.expires = new.clone();
            st.devices[i].device.key_expiry_disabled = false;
            st.touch_devices();
            audit_node(
                st,
                ctx,
                p,
                i,
                "UPDATE",
                "KEY_EXPIRY_TIME",
                json!(old),
                json!(new),
            );
            ok()
        }),
        "key" => {
            let body: KeyBody = req.json()?;
            app.mutate(|st, ctx| {
                let i = find_device(st, id)?;
                let old = st.devices[i].device.key_expiry_disabled;
                if old != body.key_expiry_disabled {
                    st.devices[i].device.key_expiry_disabled = body.key_expiry_disabled;
                    st.touch_devices();
                    audit_node(
                        st,
                        ctx,
                        p,
                        i,
                        "UPDATE",
                        "KEY_EXPIRY",
                        json!(!old),
                        json!(!body.key_expiry_disabled),
                    );
                }
                ok()
            })
        }
        "name" => {
            let body: NameBody = req.json()?;
            app.mutate(|st, ctx| {
                let i = find_device(st, id)?;
                let requested = body.name.clone().unwrap_or_default();
                let suffix = format!(".{}", st.dns_suffix);
                let label = if requested.is_empty() {
                    let host = st.devices[i].device.hostname.to_ascii_lowercase();
                    host.chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                        .collect::<String>()
                        .trim_matches('-')
                        .to_owned()
                } else {
                    let trimmed = requested.trim_end_matches('.');
                    trimmed.strip_suffix(&suffix).unwrap_or(trimmed).to_owned()
                };
                if !valid_label(&label) {
                    return Err(ApiError::bad_request(format!(
                        "invalid device name {requested:?}: use lower-case letters, digits and hyphens"
                    )));
                }
                let name = format!("{label}{suffix}");
                if st
                    .devices
                    .iter()
                    .enumerate()
                    .any(|(j, d)| j != i && d.device.name == name)
                {
                    return Err(ApiError::bad_request(format!(
                        "the name {label:?} is already used by another device"
                    )));
                }
                let old = st.devices[i].device.name.clone();
                if old != name {
                    st.devices[i].device.name = name.clone();
                    st.touch_devices();
                    audit_node(st, ctx, p, i, "UPDATE", "MACHINE_NAME", json!(old), json!(name));
                }
                ok()
            })
        }
        _ => {
            let body: IpBody = req.json()?;
            let ip: Ipv4Addr = body.ipv4.parse().map_err(|_| {
                ApiError::bad_request(format!("{:?} is not an IPv4 address", body.ipv4))
            })?;
            let cgnat = u32::from(ip) & 0xffc0_0000 == u32::from(Ipv4Addr::new(100, 64, 0, 0));
            if !cgnat {
                return Err(ApiError::bad_request(format!(
                    "{ip} is not in the Tailscale range 100.64.0.0/10"
                )));
            }
            app.mutate(|st, ctx| {
                let i = find_device(st, id)?;
                let text = ip.to_string();
                if st
                    .devices
                    .iter()
                    .enumerate()
                    .any(|(j, d)| j != i && d.device.addresses.contains(&text))
                {
                    return Err(ApiError::bad_request(format!(
                        "{ip} is already used by another device"
                    )));
                }
                let addresses = &mut st.devices[i].device.addresses;
                let old = addresses
                    .iter()
                    .find(|a| a.parse::<Ipv4Addr>().is_ok())
                    .cloned()
                    .unwrap_or_default();
                if old != text {
                    match addresses.iter_mut().find(|a| a.parse::<Ipv4Addr>().is_ok()) {
                        Some(a) => *a = text.clone(),
                        None => addresses.insert(0, text.clone()),
                    }
                    st.touch_devices();
                    audit_node(st, ctx, p, i, "UPDATE", "ADDRESS", json!(old), json!(text));
                }
                ok()
            })
        }
    }
}

fn routes_json(d: &DeviceRecord) -> Json {
    json!({
        "advertisedRoutes": d.device.advertised_routes.clone().unwrap_or_default(),
        "enabledRoutes": d.device.enabled_routes.clone().unwrap_or_default(),
    })
}

pub(crate) fn routes(app: &App, p: &Principal, id: &str) -> ApiResult {
    p.require("devices:routes", false)?;
    let st = app.lock();
    let i = find_device(&st, id)?;
    Ok(Reply::json(&routes_json(&st.devices[i])))
}

fn valid_route(route: &str) -> bool {
    policy::ip::Net::parse(route).is_some() && route.contains('/')
}

pub(crate) fn set_routes(app: &App, req: &Req, p: &Principal, id: &str) -> ApiResult {
    p.require("devices:routes", true)?;
    let body: RoutesBody = req.json()?;
    if let Some(bad) = body.routes.iter().find(|r| !valid_route(r)) {
        return Err(ApiError::bad_request(format!(
            "{bad:?} is not a route (CIDR prefix)"
        )));
    }
    let mut routes = body.routes;
    routes.dedup();
    app.mutate(|st, ctx| {
        let i = find_device(st, id)?;
        let old = st.devices[i]
            .device
            .enabled_routes
            .clone()
            .unwrap_or_default();
        if old != routes {
            st.devices[i].device.enabled_routes = Some(routes.clone());
            st.touch_devices();
            audit_node(
                st,
                ctx,
                p,
                i,
                "UPDATE",
                "ALLOWED_IPS",
                json!(old),
                json!(routes),
            );
        }
        Ok(Reply::json(&routes_json(&st.devices[i])))
    })
}
