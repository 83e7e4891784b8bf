//! Webhook endpoints: list, create, get, update subscriptions, delete, test, rotate.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tailnet::clock::rfc3339;
use tailnet::{AuditTarget, Webhook, WebhookEvent};

use super::{check_tailnet, ok};
use crate::auth::Principal;
use crate::http::{ApiError, ApiResult, Reply, Req};
use crate::server::{App, AuditSpec};
use crate::state::random_token;
use crate::webhooks::Outgoing;

/// Events of the `categoryTailnetManagement` subscription.
pub(crate) const MANAGEMENT_EVENTS: &[&str] = &[
    "nodeCreated",
    "nodeNeedsApproval",
    "nodeApproved",
    "nodeKeyExpiringInOneDay",
    "nodeKeyExpired",
    "nodeDeleted",
    "nodeSigned",
    "nodeNeedsSignature",
    "policyUpdate",
    "userCreated",
    "userNeedsApproval",
    "userSuspended",
    "userRestored",
    "userDeleted",
    "userApproved",
    "userRoleUpdated",
];

/// Events of the `categoryDeviceMisconfigurations` subscription.
pub(crate) const MISCONFIGURATION_EVENTS: &[&str] = &[
    "subnetIPForwardingNotEnabled",
    "exitNodeIPForwardingNotEnabled",
];

const CATEGORIES: &[&str] = &[
    "categoryTailnetManagement",
    "categoryDeviceMisconfigurations",
];

/// A subscription the API accepts: an event or a category.
fn known_subscription(s: &str) -> bool {
    MANAGEMENT_EVENTS.contains(&s)
        || MISCONFIGURATION_EVENTS.contains(&s)
        || CATEGORIES.contains(&s)
}

const PROVIDERS: &[&str] = &["", "slack", "mattermost", "googlechat", "discord"];

/// The webhook as the API shows it: no secret unless `with_secret`; an empty `providerType`
/// is left out (the official schema's enum has no empty value).
fn view(w: &Webhook, with_secret: bool) -> Json {
    let mut w = w.clone();
    if !with_secret {
        w.secret = None;
    }
    let mut value = serde_json::to_value(&w).unwrap_or(Json::Null);
    if w.provider_type.is_empty()
        && let Some(o) = value.as_object_mut()
    {
        o.remove("providerType");
    }
    value
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("webhook endpoint {id:?} not found"))
}

fn check_subscriptions(subs: &[String]) -> Result<Vec<String>, ApiError> {
    if let Some(bad) = subs.iter().find(|s| !known_subscription(s)) {
        return Err(ApiError::bad_request(format!(
            "unknown subscription {bad:?}"
        )));
    }
    let mut out = subs.to_vec();
    out.dedup();
    Ok(out)
}

fn audit(p: &Principal, w: &Webhook, action: &'static str, property: &str) -> AuditSpec<'static> {
    AuditSpec {
        origin: "CONFIG_API",
        actor: p.actor(),
        target: AuditTarget {
            id: w.endpoint_id.clone(),
            name: w.endpoint_url.clone(),
            kind: "WEBHOOK_ENDPOINT".to_owned(),
            is_ephemeral: None,
            property: property.to_owned(),
        },
        action,
        old: None,
        new: None,
        details: String::new(),
    }
}

pub(crate) fn list(app: &App, p: &Principal, t: &str) -> ApiResult {
    p.require("webhooks", false)?;
    let st = app.lock();
    check_tailnet(&st, t)?;
    let hooks: Vec<Json> = st.webhooks.iter().map(|w| view(w, false)).collect();
    Ok(Reply::json(&json!({ "webhooks": hooks })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    endpoint_url: String,
    #[serde(default)]
    provider_type: Option<String>,
    subscriptions: Vec<String>,
}

pub(crate) fn create(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    p.require("webhooks", true)?;
    let body: CreateBody = req.json()?;
    let url = reqwest::Url::parse(&body.endpoint_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            ApiError::bad_request(format!("{:?} is not an http(s) URL", body.endpoint_url))
        })?;
    let provider = body.provider_type.unwrap_or_default();
    if !PROVIDERS.contains(&provider.as_str()) {
        return Err(ApiError::bad_request(format!(
            "unknown providerType {provider:?}"
        )));
    }
    let subscriptions = check_subscriptions(&body.subscriptions)?;
    app.mutate(|st, ctx| {
        check_tailnet(st, t)?;
        let now = rfc3339(ctx.now);
        let hook = Webhook {
            endpoint_id: format!("{}{}", st.fresh_id(), random_token(6)),
            endpoint_url: url.to_string(),
            provider_type: provider.clone(),
            creator_login_name: p.login().to_owned(),
            created: now.clone(),
            last_modified: now,
            subscriptions: subscriptions.clone(),
            secret: Some(format!("tskey-webhook-{}", random_token(32))),
        };
        ctx.audit(st, audit(p, &hook, "CREATE", ""));
        st.webhooks.push(hook.clone());
        Ok(Reply::json(&view(&hook, true)))
    })
}

pub(crate) fn get(app: &App, p: &Principal, id: &str) -> ApiResult {
    p.require("webhooks", false)?;
    let st = app.lock();
    let w = st
        .webhooks
        .iter()
        .find(|w| w.endpoint_id == id)
        .ok_or_else(|| not_found(id))?;
    Ok(Reply::json(&view(w, false)))
}

#[derive(Deserialize)]
struct UpdateBody {
    subscriptions: Vec<String>,
}

pub(crate) fn update(app: &App, req: &Req, p: &Principal, id: &str) -> ApiResult {
    p.require("webhooks", true)?;
    let body: UpdateBody = req.json()?;
    let subscriptions = check_subscriptions(&body.subscriptions)?;
    app.mutate(|st, ctx| {
        let i = st
            .webhooks
            .iter()
            .position(|w| w.endpoint_id == id)
            .ok_or_else(|| not_found(id))?;
        let old = std::mem::replace(&mut st.webhooks[i].subscriptions, subscriptions.clone());
        st.webhooks[i].last_modified = rfc3339(ctx.now);
        let hook = st.webhooks[i].clone();
        let mut spec = audit(p, &hook, "UPDATE", "SUBSCRIBED_EVENTS");
        spec.old = Some(json!(old));
        spec.new = Some(json!(subscriptions));
        ctx.audit(st, spec);
        Ok(Reply::json(&view(&hook, false)))
    })
}

pub(crate) fn delete(app: &App, p: &Principal, id: &str) -> ApiResult {
    p.require("webhooks", true)?;
    app.mutate(|st, ctx| {
        let i = st
            .webhooks
            .iter()
            .position(|w| w.endpoint_id == id)
            .ok_or_else(|| not_found(id))?;
        let hook = st.webhooks.remove(i);
        ctx.audit(st, audit(p, &hook, "DELETE", ""));
        ok()
    })
}

pub(crate) fn action(app: &App, p: &Principal, id: &str, action: &str) -> ApiResult {
    p.require("webhooks", true)?;
    app.mutate(|st, ctx| {
        let i = st
            .webhooks
            .iter()
            .position(|w| w.endpoint_id == id)
            .ok_or_else(|| not_found(id))?;
        if action == "test" {
            ctx.outgoing.push(Outgoing {
                endpoint_id: id.to_owned(),
                event: WebhookEvent {
                    timestamp: rfc3339(ctx.now),
                    version: 1,
                    kind: "test".to_owned(),
                    tailnet: st.tailnet.clone(),
                    message: "This is a test event".to_owned(),
                    data: Json::Null,
                },
            });
            return Ok(Reply::ok().with_status(StatusCode::ACCEPTED));
        }
        st.webhooks[i].secret = Some(format!("tskey-webhook-{}", random_token(32)));
        st.webhooks[i].last_modified = rfc3339(ctx.now);
        let hook = st.webhooks[i].clone();
        ctx.audit(st, audit(p, &hook, "UPDATE", "SECRET"));
        Ok(Reply::json(&view(&hook, true)))
    })
}
