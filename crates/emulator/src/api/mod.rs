//! The Tailscale API v2 endpoints under `/api/v2`.

pub(crate) mod audit;
pub(crate) mod devices;
pub(crate) mod invites;
pub(crate) mod keys;
pub(crate) mod oauth;
pub(crate) mod policy;
pub(crate) mod posture;
pub(crate) mod users;
pub(crate) mod webhooks;

use hyper::{Method, StatusCode};
use tailnet::AuditTarget;

use crate::auth::{Principal, authenticate};
use crate::http::{ApiError, ApiResult, Reply, Req, segments};
use crate::server::App;
use crate::state::State;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ep<'a> {
    Acl(&'a str),
    AclValidate(&'a str),
    AclPreview(&'a str),
    Users(&'a str),
    User(&'a str),
    UserAction(&'a str, &'a str),
    Devices(&'a str),
    DeviceAttrsBatch(&'a str),
    Device(&'a str),
    DeviceAction(&'a str, &'a str),
    DeviceRoutes(&'a str),
    DeviceAttrs(&'a str),
    DeviceAttr(&'a str, &'a str),
    Keys(&'a str),
    Key(&'a str, &'a str),
    Webhooks(&'a str),
    Webhook(&'a str),
    WebhookAction(&'a str, &'a str),
    AuditLog(&'a str),
    Invites(&'a str),
    Invite(&'a str),
    Settings(&'a str),
}

fn endpoint<'a>(s: &[&'a str]) -> Option<Ep<'a>> {
    Some(match s {
        ["tailnet", t, "acl"] => Ep::Acl(t),
        ["tailnet", t, "acl", "validate"] => Ep::AclValidate(t),
        ["tailnet", t, "acl", "preview"] => Ep::AclPreview(t),
        ["tailnet", t, "users"] => Ep::Users(t),
        ["users", id] => Ep::User(id),
        [
            "users",
            id,
            a @ ("role" | "approve" | "suspend" | "restore" | "delete"),
        ] => Ep::UserAction(id, a),
        ["tailnet", t, "devices"] => Ep::Devices(t),
        ["tailnet", t, "device-attributes"] => Ep::DeviceAttrsBatch(t),
        ["device", id] => Ep::Device(id),
        [
            "device",
            id,
            a @ ("authorized" | "tags" | "expire" | "key" | "name" | "ip"),
        ] => Ep::DeviceAction(id, a),
        ["device", id, "routes"] => Ep::DeviceRoutes(id),
        ["device", id, "attributes"] => Ep::DeviceAttrs(id),
        ["device", id, "attributes", key] => Ep::DeviceAttr(id, key),
        ["tailnet", t, "keys"] => Ep::Keys(t),
        ["tailnet", t, "keys", id] => Ep::Key(t, id),
        ["tailnet", t, "webhooks"] => Ep::Webhooks(t),
        ["webhooks", id] => Ep::Webhook(id),
        ["webhooks", id, a @ ("test" | "rotate")] => Ep::WebhookAction(id, a),
        ["tailnet", t, "logging", "configuration"] => Ep::AuditLog(t),
        ["tailnet", t, "user-invites"] => Ep::Invites(t),
        ["user-invites", id] => Ep::Invite(id),
        ["tailnet", t, "settings"] => Ep::Settings(t),
        _ => return None,
    })
}

fn allowed_methods(ep: Ep<'_>) -> &'static [Method] {
    match ep {
        Ep::Acl(_) => &[Method::GET, Method::POST],
        Ep::Users(_) | Ep::User(_) | Ep::Devices(_) | Ep::DeviceAttrs(_) | Ep::AuditLog(_) => {
            &[Method::GET]
        }
        Ep::AclValidate(_)
        | Ep::AclPreview(_)
        | Ep::UserAction(..)
        | Ep::DeviceAction(..)
        | Ep::WebhookAction(..) => &[Method::POST],
        Ep::DeviceAttrsBatch(_) => &[Method::PATCH],
        Ep::Device(_) => &[Method::GET, Method::DELETE],
        Ep::DeviceRoutes(_) | Ep::Keys(_) | Ep::Webhooks(_) => &[Method::GET, Method::POST],
        Ep::DeviceAttr(..) => &[Method::POST, Method::DELETE],
        Ep::Key(..) => &[Method::GET, Method::DELETE, Method::PUT],
        Ep::Webhook(_) => &[Method::GET, Method::PATCH, Method::DELETE],
        Ep::Invites(_) => &[Method::GET, Method::POST],
        Ep::Invite(_) => &[Method::GET, Method::DELETE],
        Ep::Settings(_) => &[Method::GET, Method::PATCH],
    }
}

/// Dispatches an `/api/v2` request: 404 for unknown paths, 405 for the wrong method, 401
/// without a valid token, then the endpoint (which checks scopes: 403).
pub(crate) fn route(app: &App, req: &Req) -> ApiResult {
    let rest = req.path.strip_prefix("/api/v2").unwrap_or_default();
    let Some(segs) = segments(rest) else {
        return Err(ApiError::not_found("not found"));
    };
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    if s == ["oauth", "token"] {
        if req.method != Method::POST {
            return Err(method_not_allowed(&[Method::POST]));
        }
        return oauth::token(app, req);
    }
    let Some(ep) = endpoint(&s) else {
        return Err(ApiError::not_found("not found"));
    };
    let allowed = allowed_methods(ep);
    if !allowed.contains(&req.method) {
        return Err(method_not_allowed(allowed));
    }
    let p = {
        let st = app.lock();
        authenticate(&st, req, app.now())?
    };
    let m = &req.method;
    match ep {
        Ep::Acl(t) if m == Method::GET => policy::get(app, req, &p, t),
        Ep::Acl(t) => policy::set(app, req, &p, t),
        Ep::AclValidate(t) => policy::validate(app, req, &p, t),
        Ep::AclPreview(t) => policy::preview(app, req, &p, t),
        Ep::Users(t) => users::list(app, req, &p, t),
        Ep::User(id) => users::get(app, &p, id),
        Ep::UserAction(id, action) => users::action(app, req, &p, id, action),
        Ep::Devices(t) => devices::list(app, req, &p, t),
        Ep::DeviceAttrsBatch(t) => posture::batch(app, req, &p, t),
        Ep::Device(id) if m == Method::GET => devices::get(app, req, &p, id),
        Ep::Device(id) => devices::delete(app, &p, id),
        Ep::DeviceAction(id, action) => devices::action(app, req, &p, id, action),
        Ep::DeviceRoutes(id) if m == Method::GET => devices::routes(app, &p, id),
        Ep::DeviceRoutes(id) => devices::set_routes(app, req, &p, id),
        Ep::DeviceAttrs(id) => posture::get(app, &p, id),
        Ep::DeviceAttr(id, key) if m == Method::POST => posture::set(app, req, &p, id, key),
        Ep::DeviceAttr(id, key) => posture::delete(app, &p, id, key),
        Ep::Keys(t) if m == Method::GET => keys::list(app, req, &p, t),
        Ep::Keys(t) => keys::create(app, req, &p, t),
        Ep::Key(t, id) if m == Method::GET => keys::get(app, &p, t, id),
        Ep::Key(t, id) if m == Method::DELETE => keys::delete(app, &p, t, id),
        Ep::Key(t, id) => keys::update(app, req, &p, t, id),
        Ep::Webhooks(t) if m == Method::GET => webhooks::list(app, &p, t),
        Ep::Webhooks(t) => webhooks::create(app, req, &p, t),
        Ep::Webhook(id) if m == Method::GET => webhooks::get(app, &p, id),
        Ep::Webhook(id) if m == Method::PATCH => webhooks::update(app, req, &p, id),
        Ep::Webhook(id) => webhooks::delete(app, &p, id),
        Ep::WebhookAction(id, action) => webhooks::action(app, &p, id, action),
        Ep::AuditLog(t) => audit::list(app, req, &p, t),
        Ep::Invites(t) if m == Method::GET => invites::list(app, &p, t),
        Ep::Invites(t) => invites::create(app, req, &p, t),
        Ep::Invite(id) if m == Method::GET => invites::get(app, &p, id),
        Ep::Invite(id) => invites::delete(app, &p, id),
        Ep::Settings(t) if m == Method::GET => invites::settings(app, &p, t),
        Ep::Settings(t) => invites::patch_settings(app, req, &p, t),
    }
}

fn method_not_allowed(allowed: &[Method]) -> ApiError {
    let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    let mut err = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    err.allow = Some(list.join(", "));
    err
}

/// 404 unless `t` is `-`, the tailnet's name or its ID.
pub(crate) fn check_tailnet(st: &State, t: &str) -> Result<(), ApiError> {
    if t == "-" || t == st.tailnet || (!st.tailnet_id.is_empty() && t == st.tailnet_id) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("tailnet {t:?} not found")))
    }
}

pub(crate) fn device_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("device {id:?} not found"))
}

/// The index of device `id` (node ID or numeric ID), 404 otherwise.
pub(crate) fn find_device(st: &State, id: &str) -> Result<usize, ApiError> {
    st.device_index(id).ok_or_else(|| device_not_found(id))
}

/// The audit target for a device.
pub(crate) fn node_target(st: &State, i: usize, property: &str) -> AuditTarget {
    let d = &st.devices[i].device;
    AuditTarget {
        id: d.node_id.clone(),
        name: d.name.clone(),
        kind: "NODE".to_owned(),
        is_ephemeral: Some(d.is_ephemeral),
        property: property.to_owned(),
    }
}

/// Is `p` allowed to put `tag` on something? OAuth clients: the tag is one of theirs or owned
/// by one of theirs. Users: admins any tag of `tagOwners`, others the tags they own.
pub(crate) fn may_use_tag(st: &State, p: &Principal, tag: &str) -> bool {
    let Some(owners) = st.policy_file.tag_owners.get(tag) else {
        return false;
    };
    match p {
        Principal::OAuth { tags, .. } => {
            tags.iter().any(|t| t == tag) || tags.iter().any(|t| owners.contains(t))
        }
        Principal::User { login, role, .. } => {
            p.is_admin()
                || owners.iter().any(|o| {
                    o == login
                        || o == "autogroup:member"
                        || (o == "autogroup:admin" && role == "admin")
                        || (o == "autogroup:owner" && role == "owner")
                        || (o.starts_with("group:")
                            && st
                                .policy_file
                                .groups
                                .get(o)
                                .is_some_and(|members| members.contains(login)))
                })
        }
    }
}

/// `requested tags [a, b] are invalid or not permitted` for the tags `p` may not use.
pub(crate) fn check_tags(st: &State, p: &Principal, tags: &[String]) -> Result<(), ApiError> {
    for tag in tags {
        let well_formed = tag.strip_prefix("tag:").is_some_and(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        if !well_formed {
            return Err(ApiError::bad_request(format!(
                "tag {tag:?} is invalid: tags look like \"tag:name\""
            )));
        }
    }
    let bad: Vec<&str> = tags
        .iter()
        .filter(|t| !may_use_tag(st, p, t))
        .map(String::as_str)
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "requested tags [{}] are invalid or not permitted",
            bad.join(", ")
        )))
    }
}

pub(crate) fn ok() -> ApiResult {
    Ok(Reply::ok())
}
