//! User invites and the tailnet's settings.

use serde::Deserialize;
use serde_json::Value as Json;
use tailnet::UserInvite;

use super::{check_tailnet, ok, users::ROLES};
use crate::auth::Principal;
use crate::http::{ApiError, ApiResult, Reply, Req};
use crate::server::App;

/// `GET /tailnet/{t}/user-invites`: a bare JSON array.
pub(crate) fn list(app: &App, p: &Principal, t: &str) -> ApiResult {
    p.require("users", false)?;
    let st = app.lock();
    check_tailnet(&st, t)?;
    Ok(Reply::json(&st.user_invites))
}

#[derive(Deserialize)]
struct NewInvite {
    #[serde(default = "member")]
    role: String,
    email: Option<String>,
}

fn member() -> String {
    "member".to_owned()
}

/// `POST /tailnet/{t}/user-invites` with `[{"role", "email"?}]`: user-owned tokens only.
pub(crate) fn create(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    p.require("users", true)?;
    let Principal::User { user_id, .. } = p else {
        return Err(ApiError::forbidden("Only permitted for user-owned keys"));
    };
    let asked: Vec<NewInvite> = req.json()?;
    let mut st = app.lock();
    check_tailnet(&st, t)?;
    let inviter = user_id.parse().unwrap_or(0);
    let tailnet_id = st.tailnet_id.parse().unwrap_or(1);
    let mut made = Vec::new();
    for a in asked {
        if !ROLES.contains(&a.role.as_str()) {
            return Err(ApiError::bad_request(format!("invalid role {:?}", a.role)));
        }
        let id = st.fresh_id().to_string();
        let invite = UserInvite {
            invite_url: Some(format!("https://login.tailscale.com/uinv/i{id}")),
            id,
            role: a.role,
            tailnet_id,
            inviter_id: inviter,
            email: a.email,
            last_email_sent_at: None,
        };
        st.user_invites.push(invite.clone());
        made.push(invite);
    }
    Ok(Reply::json(&made))
}

pub(crate) fn get(app: &App, p: &Principal, id: &str) -> ApiResult {
    p.require("users", false)?;
    let st = app.lock();
    st.user_invites
        .iter()
        .find(|i| i.id == id)
        .map(Reply::json)
        .ok_or_else(|| ApiError::not_found(format!("invite {id:?} not found")))
}

pub(crate) fn delete(app: &App, p: &Principal, id: &str) -> ApiResult {
    p.require("users", true)?;
    let mut st = app.lock();
    let before = st.user_invites.len();
    st.user_invites.retain(|i| i.id != id);
    if st.user_invites.len() == before {
        return Err(ApiError::not_found(format!("invite {id:?} not found")));
    }
    ok()
}

/// `GET /tailnet/{t}/settings`.
pub(crate) fn settings(app: &App, p: &Principal, t: &str) -> ApiResult {
    p.require("feature_settings", false)?;
    let st = app.lock();
    check_tailnet(&st, t)?;
    Ok(Reply::json(&st.settings))
}

/// `PATCH /tailnet/{t}/settings`: the fields given replace the stored ones.
pub(crate) fn patch_settings(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    p.require("feature_settings", true)?;
    let patch: serde_json::Map<String, Json> = req.json()?;
    let mut st = app.lock();
    check_tailnet(&st, t)?;
    let mut current = match serde_json::to_value(&st.settings) {
        Ok(Json::Object(o)) => o,
        _ => serde_json::Map::new(),
    };
    for (k, v) in patch {
        current.insert(k, v);
    }
    st.settings = serde_json::from_value(Json::Object(current))
        .map_err(|e| ApiError::bad_request(format!("invalid settings: {e}")))?;
    Ok(Reply::json(&st.settings))
}
