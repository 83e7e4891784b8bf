//! The Slack app, over HTTPS request URLs (so replicas behind a load balancer share it):
//! `/tidegate` slash commands at `POST /slack/commands`, button clicks and modal submissions at
//! `POST /slack/interactions`, and the messages tidegate sends (approvers' Block Kit messages
//! updated in place as the request moves, the requester's DMs, break-glass announcements)
//! through the outbox's `slack` channel.
//!
//! Every request from Slack is verified: `X-Slack-Signature` is v0 HMAC-SHA256 over
//! `v0:TIMESTAMP:BODY` with the signing secret, compared in constant time; a timestamp more
//! than five minutes off is refused, and a (timestamp, signature) pair is accepted once (the
//! replay cache is in the database, so replicas share it). The check is written here with the
//! `hmac` crate rather than taken from a Slack SDK: it is ten lines, and the SDKs bring a whole
//! client tidegate does not use.
//!
//! A Slack user acts as a tailnet login: with `verify_identity` (the default) only after
//! linking it once through a sign-in link (`/slack/link`), otherwise by their Slack e-mail
//! (`users.info`) through the directory's aliases. A click is an approval by that login, with
//! the same rules as everywhere (no self-approval, eligibility, N of M).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tidegate_core::access::{Actor, Via};
use tidegate_core::config::SlackSettings;
use tidegate_core::request::{Request, State as RequestState};
use tidegate_core::service::{NewRequest, Service};

use crate::AppState;

/// How far a request's timestamp may be from now.
const MAX_SKEW_SECONDS: i64 = 300;

/// Slack's Web API, with the bot token.
pub struct SlackApi {
    http: reqwest::Client,
    base: String,
    token: tailnet::Secret,
}

impl SlackApi {
    pub fn new(settings: &SlackSettings) -> SlackApi {
        SlackApi {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            base: settings.api_url.clone(),
            token: settings.bot_token.clone(),
        }
    }

    /// Calls a Web API method with a JSON body; Slack's `ok: false` is an error.
    pub async fn call(&self, method: &str, body: Value) -> Result<Value, String> {
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(self.token.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{method}: {}", e.without_url()))?;
        Self::answer(method, response).await
    }

    /// Calls a method with a form body: Slack's `users.*` methods take no JSON.
    async fn form(&self, method: &str, fields: &[(&str, &str)]) -> Result<Value, String> {
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(self.token.expose())
            .form(fields)
            .send()
            .await
            .map_err(|e| format!("{method}: {}", e.without_url()))?;
        Self::answer(method, response).await
    }

    async fn answer(method: &str, response: reqwest::Response) -> Result<Value, String> {
        let status = response.status();
        let value: Value = response
            .json()
            .await
            .map_err(|e| format!("{method}: HTTP {status}: {e}"))?;
        if value["ok"] == true {
            Ok(value)
        } else {
            Err(format!(
                "{method}: {}",
                value["error"].as_str().unwrap_or("not ok")
            ))
        }
    }

    /// The Slack user id of an e-mail address, if Slack has one.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<String>, String> {
        match self.form("users.lookupByEmail", &[("email", email)]).await {
            Ok(v) => Ok(v["user"]["id"].as_str().map(str::to_owned)),
            Err(e) if e.ends_with("users_not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A Slack user's e-mail (`users.info`).
    pub async fn email_of(&self, user: &str) -> Result<Option<String>, String> {
        let v = self.form("users.info", &[("user", user)]).await?;
        Ok(v["user"]["profile"]["email"]
            .as_str()
            .map(str::to_lowercase))
    }

    /// Posts to a user's DM (opened first) or a channel; the channel and `ts` of the message.
    pub async fn post(
        &self,
        to: Target<'_>,
        text: &str,
        blocks: Value,
    ) -> Result<(String, String), String> {
        let channel = match to {
            Target::Channel(c) => c.to_owned(),
            Target::User(user) => self
                .call("conversations.open", json!({"users": user}))
                .await?["channel"]["id"]
                .as_str()
                .ok_or("conversations.open: no channel")?
                .to_owned(),
        };
        let posted = self
            .call(
                "chat.postMessage",
                json!({"channel": channel, "text": text, "blocks": blocks}),
            )
            .await?;
        let ts = posted["ts"].as_str().ok_or("chat.postMessage: no ts")?;
        Ok((channel, ts.to_owned()))
    }

    pub async fn ephemeral(&self, channel: &str, user: &str, text: &str) -> Result<(), String> {
        self.call(
            "chat.postEphemeral",
            json!({"channel": channel, "user": user, "text": text}),
        )
        .await
        .map(|_| ())
    }
}

/// Where a message goes.
pub enum Target<'a> {
    Channel(&'a str),
    User(&'a str),
}

/// Checks a request came from Slack (see the module's doc); `Err` is the reason for a 401.
pub async fn verify(
    settings: &SlackSettings,
    service: &Service,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| format!("no {name} header"))
    };
    let timestamp = header("x-slack-request-timestamp")?;
    let signature = header("x-slack-signature")?;
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| "the timestamp is not a number".to_owned())?;
    if (service.now().unix_timestamp() - ts).abs() > MAX_SKEW_SECONDS {
        return Err("the timestamp is more than five minutes off".into());
    }
    let given = signature
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or("the signature is not v0=HEX")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(settings.signing_secret.expose().as_bytes())
        .map_err(|_| "no signing secret".to_owned())?;
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| "the signature does not match".to_owned())?;
    // Accepted once: a replayed (timestamp, signature) pair is refused, across replicas.
    let at = tidegate_core::time_text(service.now());
    let fresh = service
        .store()
        .claim_state(&format!("slack:seen:{timestamp}:{signature}"), &at, &at)
        .await
        .map_err(|e| format!("cannot record the request: {e}"))?;
    if !fresh {
        return Err("replayed: this request was already handled".into());
    }
    // Now and then the cache forgets what is too old to be replayed anyway.
    if rand::random::<u8>() == 0 {
        forget_old_requests(service).await;
    }
    Ok(())
}

/// Drops replay records past the five-minute window (a stale timestamp is refused anyway).
async fn forget_old_requests(service: &Service) {
    let limit = service.now().unix_timestamp() - 2 * MAX_SKEW_SECONDS;
    let Ok(seen) = service.store().states("slack:seen:").await else {
        return;
    };
    for (key, _) in seen {
        let ts = key
            .trim_start_matches("slack:seen:")
            .split(':')
            .next()
            .and_then(|t| t.parse::<i64>().ok());
        if ts.is_some_and(|t| t < limit) {
            let _ = service.store().delete_state(&key).await;
        }
    }
}

fn unauthorized(why: &str) -> Response {
    tracing::warn!(why, "slack: request refused");
    (StatusCode::UNAUTHORIZED, Json(json!({"error": why}))).into_response()
}

/// Why a Slack user cannot act, told to them.
async fn actor_of(app: &AppState, user: &str) -> Result<Actor, String> {
    let Some(settings) = &app.service.config().slack else {
        return Err("Slack is not configured".into());
    };
    let login = if settings.verify_identity {
        match app
            .service
            .store()
            .get_state(&format!("slack:link:{user}"))
            .await
            .map_err(|e| e.to_string())?
        {
            Some(login) => login,
            None => return Err(link_message(app, user).await),
        }
    } else {
        let api = SlackApi::new(settings);
        let email = api
            .email_of(user)
            .await?
            .ok_or("your Slack profile has no e-mail")?;
        app.service
            .config()
            .directory
            .as_ref()
            .and_then(|d| d.aliases.get(&email).cloned())
            .unwrap_or(email)
    };
    app.service
        .actor(&login, Via::Slack)
        .await
        .map_err(|_| format!("{login} is not a user of the tailnet: tidegate does nothing for it"))
}

/// A one-time sign-in link that ties this Slack user to the login that opens it.
async fn link_message(app: &AppState, user: &str) -> String {
    use rand::Rng;
    let token: String = {
        let mut rng = rand::thread_rng();
        (0..32)
            .map(|_| format!("{:02x}", rng.r#gen::<u8>()))
            .collect()
    };
    let at = tidegate_core::time_text(app.service.now());
    let record = json!({"user": user, "until": app.service.now().unix_timestamp() + 900});
    if app
        .service
        .store()
        .put_state(
            &format!("slack:linktoken:{token}"),
            &record.to_string(),
            &at,
        )
        .await
        .is_err()
    {
        return "tidegate cannot make a sign-in link right now; try again".into();
    }
    format!(
        "First link your Slack account to tidegate (once): sign in at {}/slack/link?token={token} (valid 15 min).",
        app.service.config().base_url()
    )
}

#[derive(Deserialize)]
pub(crate) struct LinkQuery {
    token: String,
}

/// `GET /slack/link?token=`: the signed-in viewer's login is tied to the Slack user the token
/// was made for.
pub(crate) async fn link(
    State(app): State<AppState>,
    viewer: crate::web::session::Viewer,
    Query(q): Query<LinkQuery>,
) -> Response {
    let key = format!("slack:linktoken:{}", q.token);
    let record: Option<Value> = app
        .service
        .store()
        .get_state(&key)
        .await
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str(&t).ok());
    let now = app.service.now();
    let Some(user) = record
        .filter(|r| {
            r["until"]
                .as_i64()
                .is_some_and(|u| u >= now.unix_timestamp())
        })
        .and_then(|r| r["user"].as_str().map(str::to_owned))
    else {
        return crate::web::layout::message(
            &app,
            Some(&viewer),
            StatusCode::BAD_REQUEST,
            "Slack",
            "This link is unknown or has expired: type /tidegate in Slack for a new one.",
        )
        .await
        .into_response();
    };
    let at = tidegate_core::time_text(now);
    let stored = async {
        app.service.store().delete_state(&key).await?;
        app.service
            .store()
            .put_state(&format!("slack:link:{user}"), &viewer.login, &at)
            .await?;
        app.service
            .store()
            .append_audit(&[tidegate_core::audit::NewAuditEntry {
                at: at.clone(),
                actor: viewer.login.clone(),
                action: "slack.linked".into(),
                request: None,
                detail: json!({"slack_user": user}).to_string(),
            }])
            .await
    };
    if let Err(e) = stored.await {
        return crate::web::layout::message(
            &app,
            Some(&viewer),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Slack",
            &e.to_string(),
        )
        .await
        .into_response();
    }
    tracing::info!(slack_user = %user, login = %viewer.login, "slack: account linked");
    crate::web::layout::message(
        &app,
        Some(&viewer),
        StatusCode::OK,
        "Slack linked",
        &format!(
            "Your Slack account now acts as {} in tidegate.",
            viewer.login
        ),
    )
    .await
    .into_response()
}

/// A form body's fields.
fn form(body: &[u8]) -> BTreeMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The Slack settings, once the request is verified as Slack's; else the answer (404 without
/// `[slack]`, 401 for a request that is not Slack's).
async fn checked(
    app: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<SlackSettings, Response> {
    let Some(settings) = app.service.config().slack.clone() else {
        return Err((StatusCode::NOT_FOUND, "Slack is not configured").into_response());
    };
    match verify(&settings, &app.service, headers, body).await {
        Ok(()) => Ok(settings),
        Err(why) => Err(unauthorized(&why)),
    }
}

fn ephemeral(text: impl Into<String>) -> Response {
    Json(json!({"response_type": "ephemeral", "text": text.into()})).into_response()
}

/// `POST /slack/commands`: `/tidegate request ENT DURATION REASON...`, `/tidegate list`, and
/// `/tidegate` alone (a modal).
pub(crate) async fn commands(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let settings = match checked(&app, &headers, &body).await {
        Ok(settings) => settings,
        Err(refused) => return refused,
    };
    let f = form(&body);
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let actor = match actor_of(&app, &field("user_id")).await {
        Ok(a) => a,
        Err(why) => return ephemeral(why),
    };
    let text = field("text");
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        [] => {
            let api = SlackApi::new(&settings);
            let view = request_modal(&app, &actor).await;
            match api
                .call(
                    "views.open",
                    json!({"trigger_id": field("trigger_id"), "view": view}),
                )
                .await
            {
                Ok(_) => StatusCode::OK.into_response(),
                Err(e) => ephemeral(format!("cannot open the request form: {e}")),
            }
        }
        ["list", ..] => ephemeral(list_text(&app, &actor).await),
        ["request", entitlement, duration, reason @ ..] => {
            ephemeral(create(&app, &actor, entitlement, duration, &reason.join(" ")).await)
        }
        _ => ephemeral(
            "Usage: /tidegate request ENTITLEMENT DURATION REASON... · /tidegate list · /tidegate (a form)",
        ),
    }
}

async fn create(
    app: &AppState,
    actor: &Actor,
    entitlement: &str,
    duration: &str,
    reason: &str,
) -> String {
    let duration = match duration.parse() {
        Ok(d) => d,
        Err(e) => return format!("{e}"),
    };
    let new = NewRequest {
        entitlement: entitlement.to_owned(),
        reason: reason.to_owned(),
        duration: Some(duration),
        ..NewRequest::default()
    };
    match app.service.create(actor, new).await {
        Ok(r) => match r.state {
            RequestState::Pending => format!(
                "Requested {} for {} ({}): the approvers have been asked.",
                r.entitlement, r.duration, r.id
            ),
            _ => format!(
                "{} for {} ({}): {}.",
                r.entitlement,
                r.duration,
                r.id,
                r.state.as_str()
            ),
        },
        Err(e) => format!("Not requested: {e}"),
    }
}

async fn list_text(app: &AppState, actor: &Actor) -> String {
    let mine = app
        .service
        .list(
            actor,
            &tidegate_core::store::RequestFilter {
                requester: Some(actor.login().to_owned()),
                states: vec![
                    RequestState::Pending,
                    RequestState::Approved,
                    RequestState::Active,
                ],
                limit: Some(20),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_default();
    if mine.is_empty() {
        return "You hold no grants and wait for none.".into();
    }
    let now = app.service.now();
    mine.iter()
        .map(|r| match (r.state, r.expires_at) {
            (RequestState::Active, Some(end)) => format!(
                "• {} ({}): active, ends {}",
                r.entitlement,
                r.id,
                tidegate_core::relative(end, now)
            ),
            _ => format!("• {} ({}): {}", r.entitlement, r.id, r.state.as_str()),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The request modal: entitlement, duration, reason, device.
async fn request_modal(app: &AppState, actor: &Actor) -> Value {
    let options: Vec<Value> = app
        .service
        .entitlements_for(actor.login())
        .await
        .unwrap_or_default()
        .iter()
        .take(100)
        .map(|e| json!({"text": {"type": "plain_text", "text": e.name}, "value": e.name}))
        .collect();
    let input = |id: &str, label: &str, element: Value, optional: bool| {
        json!({"type": "input", "block_id": id, "optional": optional,
               "label": {"type": "plain_text", "text": label}, "element": element})
    };
    json!({
        "type": "modal",
        "callback_id": "tidegate_request",
        "title": {"type": "plain_text", "text": "Request access"},
        "submit": {"type": "plain_text", "text": "Request"},
        "blocks": [
            input("entitlement", "Entitlement", json!({"type": "static_select", "action_id": "entitlement", "options": options}), false),
            input("duration", "Duration (e.g. 2h)", json!({"type": "plain_text_input", "action_id": "duration"}), false),
            input("reason", "Reason", json!({"type": "plain_text_input", "action_id": "reason"}), false),
            input("device", "Device (posture and tag grants)", json!({"type": "plain_text_input", "action_id": "device"}), true),
        ]
    })
}

/// `POST /slack/interactions`: Approve and Deny buttons, the deny and request modals, Extend.
pub(crate) async fn interactions(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let settings = match checked(&app, &headers, &body).await {
        Ok(settings) => settings,
        Err(refused) => return refused,
    };
    let f = form(&body);
    let Some(payload) = f
        .get("payload")
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
    else {
        return (StatusCode::BAD_REQUEST, "no payload").into_response();
    };
    let api = SlackApi::new(&settings);
    let user = payload["user"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let channel = payload["channel"]["id"]
        .as_str()
        .or_else(|| payload["container"]["channel_id"].as_str())
        .unwrap_or_default()
        .to_owned();
    // A refusal is told to the clicker alone; Slack still gets its 200.
    let tell = |text: String| {
        let (api, channel, user) = (&api, channel.clone(), user.clone());
        async move {
            tracing::info!(slack_user = %user, why = %text, "slack: action refused");
            if !channel.is_empty()
                && let Err(e) = api.ephemeral(&channel, &user, &text).await
            {
                tracing::warn!(error = %e, "slack: cannot tell the user");
            }
            StatusCode::OK.into_response()
        }
    };
    match payload["type"].as_str() {
        Some("block_actions") => {
            let action = &payload["actions"][0];
            let id = action["value"].as_str().unwrap_or_default().to_owned();
            let actor = match actor_of(&app, &user).await {
                Ok(a) => a,
                Err(why) => return tell(why).await,
            };
            match action["action_id"].as_str() {
                Some("tidegate_approve") => {
                    // Someone a button reached but who is no approver is told who is.
                    if let (Ok(Some(r)), Ok(dir)) = (
                        app.service.store().request(&id).await,
                        app.service.directory().await,
                    ) && let Ok(e) = app.service.entitlement(&r.entitlement)
                        && let Err(why) = actor.review(e, &dir)
                    {
                        return tell(format!("Not approved: {why}")).await;
                    }
                    match app.service.approve(&actor, &id, "").await {
                        Ok(r) => {
                            tracing::info!(request = %r.id, by = actor.login(), "slack: approved");
                            StatusCode::OK.into_response()
                        }
                        Err(e) => tell(format!("Not approved: {e}")).await,
                    }
                }
                Some("tidegate_deny") => {
                    // The same check as the deny itself, before the modal opens.
                    let allowed = match (
                        app.service.get(&actor, &id).await,
                        app.service.directory().await,
                    ) {
                        (Ok(r), Ok(dir)) => app.service.may_review(&r, &actor, &dir),
                        _ => false,
                    };
                    if !allowed {
                        return tell(format!("{} may not deny {id}", actor.login())).await;
                    }
                    let view = json!({
                        "type": "modal",
                        "callback_id": "tidegate_deny",
                        "private_metadata": id,
                        "title": {"type": "plain_text", "text": "Deny"},
                        "submit": {"type": "plain_text", "text": "Deny"},
                        "blocks": [{"type": "input", "block_id": "comment", "optional": true,
                            "label": {"type": "plain_text", "text": "Comment for the requester"},
                            "element": {"type": "plain_text_input", "action_id": "comment"}}]
                    });
                    let trigger = payload["trigger_id"].as_str().unwrap_or_default();
                    match api
                        .call("views.open", json!({"trigger_id": trigger, "view": view}))
                        .await
                    {
                        Ok(_) => StatusCode::OK.into_response(),
                        Err(e) => tell(format!("cannot open the deny form: {e}")).await,
                    }
                }
                Some("tidegate_extend") => {
                    let Ok(r) = app.service.get(&actor, &id).await else {
                        return tell(format!("no request {id}")).await;
                    };
                    let more = app
                        .service
                        .entitlement(&r.entitlement)
                        .map(|e| e.default_duration)
                        .unwrap_or(r.duration);
                    match app
                        .service
                        .extend(&actor, &id, more, "asked from Slack")
                        .await
                    {
                        Ok(_) => {
                            tell(format!(
                                "{more} more asked for {}: the approvers have been asked.",
                                r.entitlement
                            ))
                            .await
                        }
                        Err(e) => tell(format!("Not extended: {e}")).await,
                    }
                }
                _ => StatusCode::OK.into_response(),
            }
        }
        Some("view_submission") => {
            let view = &payload["view"];
            let values = &view["state"]["values"];
            let text = |block: &str| {
                values[block][block]["value"]
                    .as_str()
                    .or_else(|| values[block][block]["selected_option"]["value"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let errors = |block: &str, why: String| {
                Json(json!({"response_action": "errors", "errors": {block: why}})).into_response()
            };
            let actor = match actor_of(&app, &user).await {
                Ok(a) => a,
                Err(why) => {
                    return errors(
                        if view["callback_id"] == "tidegate_deny" {
                            "comment"
                        } else {
                            "reason"
                        },
                        why,
                    );
                }
            };
            match view["callback_id"].as_str() {
                Some("tidegate_deny") => {
                    let id = view["private_metadata"].as_str().unwrap_or_default();
                    match app.service.deny(&actor, id, &text("comment")).await {
                        Ok(_) => StatusCode::OK.into_response(),
                        Err(e) => errors("comment", format!("Not denied: {e}")),
                    }
                }
                Some("tidegate_request") => {
                    let duration = match text("duration").parse() {
                        Ok(d) => d,
                        Err(e) => return errors("duration", format!("{e}")),
                    };
                    let device = text("device");
                    let new = NewRequest {
                        entitlement: text("entitlement"),
                        reason: text("reason"),
                        duration: Some(duration),
                        devices: if device.is_empty() {
                            Vec::new()
                        } else {
                            vec![device]
                        },
                        ..NewRequest::default()
                    };
                    match app.service.create(&actor, new).await {
                        Ok(_) => StatusCode::OK.into_response(),
                        Err(e) => errors("reason", format!("Not requested: {e}")),
                    }
                }
                _ => StatusCode::OK.into_response(),
            }
        }
        _ => StatusCode::OK.into_response(),
    }
}

/// Sends the `slack` channel's deliveries: each is an event (see `tidegate_core::notify`).
pub struct SlackSender {
    api: SlackApi,
    settings: SlackSettings,
    service: Arc<Service>,
    /// One event at a time, in the order they come (the outbox sends several at once): a
    /// message is posted before it is updated, "approved" is said before "active".
    turn: tokio::sync::Mutex<()>,
}

impl SlackSender {
    pub fn new(service: Arc<Service>) -> Option<SlackSender> {
        let settings = service.config().slack.clone()?;
        Some(SlackSender {
            api: SlackApi::new(&settings),
            settings,
            service,
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Delivers one event: the approvers' messages posted or updated, the requester told.
    pub async fn send(&self, payload: &str) -> Result<(), String> {
        let _turn = self.turn.lock().await;
        let event: Value = serde_json::from_str(payload)
            .map_err(|e| format!("a stored event does not read: {e}"))?;
        let kind = event["type"].as_str().unwrap_or_default();
        if kind == "review.assigned" || kind == "review.reminder" {
            return self.tell_reviewers(kind, &event["detail"]).await;
        }
        let Some(id) = event["request"]["id"].as_str() else {
            return Ok(());
        };
        let r = self
            .service
            .store()
            .request(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no request {id}"))?;
        let pending = r.state == RequestState::Pending;
        match kind {
            "request.created" if pending => {
                let targets = self.approver_targets(&r, "").await?;
                self.ask(&r, targets, None).await?
            }
            "request.reminder" if pending => {
                let targets = self.approver_targets(&r, "reminder:").await?;
                self.ask(&r, targets, Some("Still waiting")).await?
            }
            "request.escalated" if pending => {
                let targets = event["detail"]["to"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .map(|l| (format!("escalated:{l}"), Some(l.to_owned())))
                    .collect();
                self.ask(&r, targets, Some("Escalated to you")).await?
            }
            "grant.overdue" => {
                if let Some(channel) = &self.settings.announce_channel {
                    let text = format!(
                        ":warning: Overdue: {}'s {} access ({}) should have ended at {} and is not yet verified gone; tidegate keeps retrying.",
                        r.requester,
                        r.entitlement,
                        r.id,
                        event["detail"]["access_ended_at"]
                            .as_str()
                            .unwrap_or_default()
                    );
                    self.api
                        .post(Target::Channel(channel), &text, json!([section(&text)]))
                        .await?;
                }
            }
            "request.break_glass" => {
                if let Some(channel) = &self.settings.announce_channel {
                    let text = format!(
                        ":rotating_light: Break-glass: {} took {} for {}. Reason: {}",
                        r.requester, r.entitlement, r.duration, r.reason
                    );
                    self.api
                        .post(Target::Channel(channel), &text, json!([section(&text)]))
                        .await?;
                }
            }
            _ => {}
        }
        if !matches!(
            kind,
            "request.created" | "request.reminder" | "request.escalated"
        ) {
            self.update_approvers(&r).await?;
        }
        if let Some(text) = requester_text(kind, &r, &event) {
            self.tell_requester(&r, kind, &text).await?;
        }
        Ok(())
    }

    /// Who may approve the request: every user its entitlement's approvers select, but the
    /// requester (unless self-approval is allowed).
    async fn approvers(&self, r: &Request) -> Result<Vec<String>, String> {
        let e = self
            .service
            .entitlement(&r.entitlement)
            .map_err(|e| e.to_string())?;
        let dir = self.service.directory().await.map_err(|e| e.to_string())?;
        Ok(tidegate_core::access::eligible_approvers(
            e,
            &r.requester,
            &dir,
        ))
    }

    /// Where the approvers' messages are: key (a login, or the channel) → (channel, ts).
    async fn messages(&self, id: &str) -> Result<BTreeMap<String, (String, String)>, String> {
        Ok(self
            .service
            .store()
            .get_state(&format!("slack:messages:{id}"))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    /// Where the approvers' messages go: the approvals channel, or each approver's DM; keyed
    /// by `prefix` and the login (or the channel).
    async fn approver_targets(
        &self,
        r: &Request,
        prefix: &str,
    ) -> Result<Vec<(String, Option<String>)>, String> {
        Ok(match &self.settings.approvals_channel {
            Some(channel) => vec![(format!("{prefix}{channel}"), None)],
            None => self
                .approvers(r)
                .await?
                .into_iter()
                .map(|login| (format!("{prefix}{login}"), Some(login)))
                .collect(),
        })
    }

    /// Posts the approval message (headed by `headline`, if any) to each target not yet
    /// posted to, and keeps where, to update it as the request moves.
    async fn ask(
        &self,
        r: &Request,
        targets: Vec<(String, Option<String>)>,
        headline: Option<&str>,
    ) -> Result<(), String> {
        let mut posted = self.messages(&r.id).await?;
        let (mut text, mut blocks) = self.approval_message(r).await;
        if let Some(h) = headline {
            text = format!("{h}: {text}");
            if let Value::Array(b) = &mut blocks {
                b.insert(0, section(&format!("*{h}*")));
            }
        }
        for (key, login) in targets {
            // Posted already (a retry after a partial failure): not again.
            if posted.contains_key(&key) {
                continue;
            }
            let target = match &login {
                None => self.settings.approvals_channel.clone().unwrap_or_default(),
                Some(login) => match self.slack_user(login).await? {
                    Some(user) => user,
                    None => {
                        tracing::debug!(login, "slack: approver not in Slack");
                        continue;
                    }
                },
            };
            let to = if login.is_some() {
                Target::User(&target)
            } else {
                Target::Channel(&target)
            };
            let (channel, ts) = self.api.post(to, &text, blocks.clone()).await?;
            posted.insert(key, (channel, ts));
            let at = tidegate_core::time_text(self.service.now());
            self.service
                .store()
                .put_state(
                    &format!("slack:messages:{}", r.id),
                    &serde_json::to_string(&posted).unwrap_or_default(),
                    &at,
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn update_approvers(&self, r: &Request) -> Result<(), String> {
        let posted = self.messages(&r.id).await?;
        if posted.is_empty() {
            return Ok(());
        }
        let (text, blocks) = self.approval_message(r).await;
        for (channel, ts) in posted.values() {
            self.api
                .call(
                    "chat.update",
                    json!({"channel": channel, "ts": ts, "text": text, "blocks": blocks}),
                )
                .await?;
        }
        Ok(())
    }

    /// The approvers' message as the request stands: who asks for what, for how long, why,
    /// what it gives (the same sentences as the web preview), and the buttons while it waits.
    async fn approval_message(&self, r: &Request) -> (String, Value) {
        let gives = match self.service.entitlement(&r.entitlement) {
            Ok(e) => {
                tidegate_core::preview::Snapshot::default()
                    .what_it_gives(&self.service, e, &r.requester, &r.devices)
                    .await
            }
            Err(e) => vec![e.to_string()],
        };
        let text = format!(
            "{} requests {} for {}: {}",
            r.requester, r.entitlement, r.duration, r.reason
        );
        let status = match r.state {
            RequestState::Pending => {
                let approved: Vec<&str> = r
                    .reviews
                    .iter()
                    .filter(|v| v.approve)
                    .map(|v| v.reviewer.as_str())
                    .collect();
                if approved.is_empty() {
                    "Waiting for approval".to_owned()
                } else {
                    format!(
                        "Approved by {} so far: more approvals needed",
                        approved.join(", ")
                    )
                }
            }
            RequestState::Approved => format!("Approved by {}: being applied", approvers_of(r)),
            RequestState::Active => format!(
                "Approved by {}: active until {}",
                approvers_of(r),
                r.expires_at
                    .map(tidegate_core::time_text)
                    .unwrap_or_default()
            ),
            RequestState::Denied => format!(
                "Denied by {}{}",
                r.ended_by.clone().unwrap_or_default(),
                r.end_reason
                    .as_deref()
                    .filter(|c| !c.is_empty())
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default()
            ),
            RequestState::Expired => "Expired: the access is gone".to_owned(),
            RequestState::Revoked => format!("Ended by {}", r.ended_by.clone().unwrap_or_default()),
            RequestState::Cancelled => "Cancelled or lapsed".to_owned(),
            RequestState::Failed => format!("Failed: {}", r.end_reason.clone().unwrap_or_default()),
        };
        let mut blocks = vec![
            section(&format!(
                "*{}* requests *{}* for *{}*\n>{}",
                r.requester, r.entitlement, r.duration, r.reason
            )),
            json!({"type": "context", "elements": gives.iter().take(8).map(|g| json!({"type": "plain_text", "text": g})).collect::<Vec<_>>()}),
            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("*{status}* · {}", r.id)}]}),
        ];
        if r.state == RequestState::Pending {
            blocks.push(json!({"type": "actions", "elements": [
                {"type": "button", "action_id": "tidegate_approve", "value": r.id, "style": "primary",
                 "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": "tidegate_deny", "value": r.id, "style": "danger",
                 "text": {"type": "plain_text", "text": "Deny"}},
            ]}));
        }
        (text, Value::Array(blocks))
    }

    /// A login's Slack user: looked up by the login, then by each directory e-mail whose
    /// alias is that login.
    async fn slack_user(&self, login: &str) -> Result<Option<String>, String> {
        let mut emails = vec![login.to_owned()];
        if let Some(d) = &self.service.config().directory {
            emails.extend(
                d.aliases
                    .iter()
                    .filter(|(_, to)| to.eq_ignore_ascii_case(login))
                    .map(|(from, _)| from.clone()),
            );
        }
        for email in emails {
            if let Some(user) = self.api.user_by_email(&email).await? {
                return Ok(Some(user));
            }
        }
        Ok(None)
    }

    /// An access review's reviewers hear of their share, and are reminded when it is due soon.
    async fn tell_reviewers(&self, kind: &str, detail: &Value) -> Result<(), String> {
        let dir = self.service.directory().await.map_err(|e| e.to_string())?;
        let base = self.service.config().base_url();
        let text = format!(
            "{} {} access{} to review in *{}* (due {}): <{}/reviews/{}?show=mine|review them>",
            if kind == "review.reminder" {
                "Reminder:"
            } else {
                "You have"
            },
            detail["items"],
            if detail["items"] == 1 { "" } else { "es" },
            detail["name"].as_str().unwrap_or_default(),
            detail["due_at"].as_str().unwrap_or_default(),
            base,
            detail["campaign"].as_str().unwrap_or_default(),
        );
        let reviewer = detail["reviewer"].as_str().unwrap_or_default();
        for login in tidegate_core::notify::reviewer_logins(reviewer, &dir) {
            if let Some(user) = self.slack_user(&login).await? {
                self.api
                    .post(Target::User(&user), &text, json!([section(&text)]))
                    .await?;
            }
        }
        Ok(())
    }

    async fn tell_requester(&self, r: &Request, kind: &str, text: &str) -> Result<(), String> {
        let Some(user) = self.slack_user(&r.requester).await? else {
            return Ok(());
        };
        let mut blocks = vec![section(text)];
        if kind == "grant.expiring" {
            blocks.push(json!({"type": "actions", "elements": [
                {"type": "button", "action_id": "tidegate_extend", "value": r.id,
                 "text": {"type": "plain_text", "text": "Extend"}},
            ]}));
        }
        self.api
            .post(Target::User(&user), text, Value::Array(blocks))
            .await?;
        Ok(())
    }
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

fn approvers_of(r: &Request) -> String {
    r.reviews
        .iter()
        .filter(|v| v.approve)
        .map(|v| v.reviewer.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the requester is told of an event, if anything.
fn requester_text(kind: &str, r: &Request, event: &Value) -> Option<String> {
    Some(match kind {
        "request.approved" => format!(
            "Your request for {} was approved by {}.",
            r.entitlement,
            event["actor"].as_str().unwrap_or_default()
        ),
        "request.denied" => {
            let comment = event["detail"]["comment"].as_str().unwrap_or_default();
            format!(
                "Your request for {} was denied by {}{}",
                r.entitlement,
                event["actor"].as_str().unwrap_or_default(),
                if comment.is_empty() {
                    ".".to_owned()
                } else {
                    format!(": {comment}")
                }
            )
        }
        "grant.applied" => format!(
            "Your {} access is active until {}.",
            r.entitlement,
            r.expires_at
                .map(tidegate_core::time_text)
                .unwrap_or_default()
        ),
        "grant.expiring" => format!(
            "Your {} access ends at {}. Extend it if you need longer.",
            r.entitlement,
            event["detail"]["expires_at"].as_str().unwrap_or_default()
        ),
        "grant.expired" => format!("Your {} access has ended.", r.entitlement),
        "grant.revoked" | "grant.dropped" => format!(
            "Your {} access was ended by {}.",
            r.entitlement,
            event["actor"].as_str().unwrap_or_default()
        ),
        _ => return None,
    })
}
