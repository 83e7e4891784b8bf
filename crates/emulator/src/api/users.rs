//! Users: list, get, role, approve, suspend, restore, delete.

use serde::Deserialize;
use serde_json::{Value as Json, json};
use tailnet::{AuditTarget, User};

use super::{check_tailnet, ok};
use crate::auth::Principal;
use crate::http::{ApiError, ApiResult, Reply, Req};
use crate::server::{App, AuditSpec};
use crate::state::State;

pub(crate) const ROLES: &[&str] = &[
    "owner",
    "member",
    "admin",
    "it-admin",
    "network-admin",
    "billing-admin",
    "auditor",
];

fn role_display(role: &str) -> &'static str {
    match role {
        "owner" => "Owner",
        "admin" => "Admin",
        "it-admin" => "IT admin",
        "network-admin" => "Network admin",
        "billing-admin" => "Billing admin",
        "auditor" => "Auditor",
        _ => "Member",
    }
}

/// A user as the API shows it, with the counts derived from the devices.
fn view(st: &State, u: &User) -> User {
    let mut u = u.clone();
    let owned = st
        .devices
        .iter()
        .filter(|d| d.device.user == u.login_name && d.device.tags.is_empty());
    let (mut count, mut connected) = (0u32, false);
    for d in owned {
        count += 1;
        connected |= d.device.connected_to_control;
    }
    u.device_count = count;
    u.currently_connected = connected;
    u
}

pub(crate) fn list(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    p.require("users", false)?;
    let kind = req.query_value("type").unwrap_or("member");
    let role = req.query_value("role").unwrap_or("all");
    if !matches!(kind, "member" | "shared" | "all") {
        return Err(ApiError::bad_request(format!("invalid type {kind:?}")));
    }
    if role != "all" && !ROLES.contains(&role) {
        return Err(ApiError::bad_request(format!("invalid role {role:?}")));
    }
    let st = app.lock();
    check_tailnet(&st, t)?;
    let users: Vec<User> = st
        .users
        .iter()
        .filter(|u| kind == "all" || u.kind == kind)
        .filter(|u| role == "all" || u.role == role)
        .map(|u| view(&st, u))
        .collect();
    Ok(Reply::json(&json!({ "users": users })))
}

fn user_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("user {id:?} not found"))
}

pub(crate) fn get(app: &App, p: &Principal, id: &str) -> ApiResult {
    p.require("users", false)?;
    let st = app.lock();
    let i = st.user_index(id).ok_or_else(|| user_not_found(id))?;
    Ok(Reply::json(&view(&st, &st.users[i])))
}

#[derive(Deserialize)]
struct RoleBody {
    role: String,
}

pub(crate) fn action(app: &App, req: &Req, p: &Principal, id: &str, action: &str) -> ApiResult {
    p.require("users", true)?;
    let role_body: Option<RoleBody> = if action == "role" {
        Some(req.json()?)
    } else {
        None
    };
    if let Some(body) = &role_body
        && !ROLES.contains(&body.role.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "invalid role {:?}",
            body.role
        )));
    }
    app.mutate(|st, ctx| {
        let i = st.user_index(id).ok_or_else(|| user_not_found(id))?;
        if p.user_id() == Some(id) {
            return Err(ApiError::forbidden(
                "user-owned access tokens cannot change their own user",
            ));
        }
        let user = st.users[i].clone();
        let target = AuditTarget {
            id: user.id.clone(),
            name: user.login_name.clone(),
            kind: "USER".to_owned(),
            is_ephemeral: None,
            property: String::new(),
        };
        let event_data = |extra: Option<(&str, &str)>| {
            let mut data = json!({
                "user": user.login_name,
                "url": "https://login.tailscale.com/admin/users",
                "actor": p.login(),
            });
            if let Some((old, new)) = extra {
                data["oldRoles"] = json!([role_display(old)]);
                data["newRoles"] = json!([role_display(new)]);
            }
            data
        };
        let audit = |action: &'static str, property: &str, old: Option<Json>, new: Option<Json>| {
            let mut target = target.clone();
            target.property = property.to_owned();
            AuditSpec {
                origin: "CONFIG_API",
                actor: p.actor(),
                target,
                action,
                old,
                new,
                details: String::new(),
            }
        };
        match action {
            "role" => {
                let new_role = role_body
                    .as_ref()
                    .map(|b| b.role.clone())
                    .unwrap_or_default();
                if user.role == "owner" && new_role != "owner" {
                    return Err(ApiError::bad_request(
                        "the owner's role cannot be changed; transfer ownership first",
                    ));
                }
                if user.role != new_role {
                    st.users[i].role = new_role.clone();
                    ctx.audit(
                        st,
                        audit(
                            "UPDATE",
                            "USER_ROLE",
                            Some(json!(user.role)),
                            Some(json!(new_role)),
                        ),
                    );
                    ctx.event(
                        st,
                        "userRoleUpdated",
                        format!("Role of user {} updated", user.login_name),
                        event_data(Some((&user.role, &new_role))),
                    );
                }
            }
            "approve" => {
                if user.status == "needs-approval" {
                    st.users[i].status = "active".to_owned();
                    ctx.audit(st, audit("APPROVE", "", None, None));
                    ctx.event(
                        st,
                        "userApproved",
                        format!("User {} approved", user.login_name),
                        event_data(None),
                    );
                }
            }
            "suspend" => {
                if user.role == "owner" {
                    return Err(ApiError::bad_request("the owner cannot be suspended"));
                }
                if user.status != "suspended" {
                    st.users[i].status = "suspended".to_owned();
                    ctx.audit(st, audit("SUSPEND", "", None, None));
                    ctx.event(
                        st,
                        "userSuspended",
                        format!("User {} suspended", user.login_name),
                        event_data(None),
                    );
                }
            }
            "restore" => {
                if user.status == "suspended" {
                    st.users[i].status = "active".to_owned();
                    ctx.audit(st, audit("RESTORE", "", None, None));
                    ctx.event(
                        st,
                        "userRestored",
                        format!("User {} restored", user.login_name),
                        event_data(None),
                    );
                }
            }
            _ => {
                if user.role == "owner" {
                    return Err(ApiError::bad_request("the owner cannot be deleted"));
                }
                st.users.remove(i);
                // Their devices go with them; tagged devices belong to the tailnet.
                st.devices
                    .retain(|d| d.device.user != user.login_name || !d.device.tags.is_empty());
                st.touch_devices();
                st.recompute_next_expiry();
                ctx.audit(st, audit("DELETE", "", None, None));
                ctx.event(
                    st,
                    "userDeleted",
                    format!("User {} deleted", user.login_name),
                    event_data(None),
                );
            }
        }
        ok()
    })
}
