//! The Slack app (issue 14) end to end: a stand-in for Slack's Web API on loopback records and
//! checks every call tidegate makes; the tests send signed slash commands and interaction
//! payloads as Slack would. Forged, stale and replayed requests are refused with 401; a click
//! by an unknown user, by the requester, or by someone who may not approve changes nothing and
//! is explained to the clicker alone.

use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{Deployment, wait_until};

const SIGNING_SECRET: &str = "slack-signing-secret-test";
const BOT_TOKEN: &str = "xoxb-test-bot-token";

/// Slack users: id → e-mail.
const USERS: [(&str, &str); 5] = [
    ("U_ALICE", "alice@example.com"),
    ("U_BOB", "bob@example.com"),
    ("U_CAROL", "carol@example.com"),
    ("U_DAVE", "dave@example.com"),
    ("U_EVE", "eve@elsewhere.example"),
];

/// The Web API stand-in: every call (method, arguments) in order; each checked for the bot
/// token and the arguments its method needs.
struct SlackApi {
    url: String,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    _runtime: tokio::runtime::Runtime,
}

fn answer(method: &str, args: &Value, count: usize) -> Value {
    let need = |keys: &[&str]| {
        for k in keys {
            assert!(!args[*k].is_null(), "{method} without {k}: {args}");
        }
    };
    match method {
        "users.lookupByEmail" => {
            need(&["email"]);
            match USERS
                .iter()
                .find(|(_, e)| Some(*e) == args["email"].as_str())
            {
                Some((id, _)) => json!({"ok": true, "user": {"id": id}}),
                None => json!({"ok": false, "error": "users_not_found"}),
            }
        }
        "users.info" => {
            need(&["user"]);
            match USERS
                .iter()
                .find(|(id, _)| Some(*id) == args["user"].as_str())
            {
                Some((id, email)) => {
                    json!({"ok": true, "user": {"id": id, "profile": {"email": email}}})
                }
                None => json!({"ok": false, "error": "user_not_found"}),
            }
        }
        "conversations.open" => {
            need(&["users"]);
            json!({"ok": true, "channel": {"id": format!("D{}", args["users"].as_str().unwrap())}})
        }
        "chat.postMessage" => {
            need(&["channel", "text"]);
            assert!(args["blocks"].is_array(), "blocks: {args}");
            json!({"ok": true, "channel": args["channel"], "ts": format!("1700000000.{count:06}")})
        }
        "chat.update" => {
            need(&["channel", "ts", "text"]);
            json!({"ok": true})
        }
        "chat.postEphemeral" => {
            need(&["channel", "user", "text"]);
            json!({"ok": true})
        }
        "views.open" => {
            need(&["trigger_id", "view"]);
            assert_eq!(args["view"]["type"], "modal");
            json!({"ok": true})
        }
        other => panic!("unexpected Slack method {other}"),
    }
}

impl SlackApi {
    fn start() -> SlackApi {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        let record = calls.clone();
        let handle = move |method: String, headers: axum::http::HeaderMap, args: Value| {
            assert_eq!(
                headers.get("authorization").and_then(|v| v.to_str().ok()),
                Some(format!("Bearer {BOT_TOKEN}").as_str()),
                "{method} without the bot token"
            );
            let mut calls = record.lock().unwrap();
            let reply = answer(&method, &args, calls.len());
            calls.push((method, args));
            axum::Json(reply)
        };
        // Write methods get JSON, `users.*` a form body, as Slack takes them.
        let app = axum::Router::new().route(
            "/api/{method}",
            axum::routing::post(
                move |axum::extract::Path(method): axum::extract::Path<String>,
                      headers: axum::http::HeaderMap,
                      body: axum::body::Bytes| {
                    let handle = handle.clone();
                    async move {
                        let form = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
                        let args: Value = if form {
                            let pairs: std::collections::BTreeMap<String, String> =
                                serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
                                    .unwrap()
                                    .into_iter()
                                    .collect();
                            json!(pairs)
                        } else {
                            serde_json::from_slice(&body)
                                .unwrap_or_else(|e| panic!("{method}: the body is not JSON: {e}"))
                        };
                        if method.starts_with("users.") {
                            assert!(form, "{method} takes a form body, not JSON");
                        }
                        handle(method, headers, args)
                    }
                },
            ),
        );
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        SlackApi {
            url,
            calls,
            _runtime: runtime,
        }
    }

    fn calls(&self, method: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, a)| a.clone())
            .collect()
    }

    fn wait_for(&self, what: &str, done: impl Fn(&SlackApi) -> bool) {
        for _ in 0..200 {
            if done(self) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}: {:#?}",
            self.calls.lock().unwrap()
        );
    }
}

fn now() -> i64 {
    tailnet::Clock::now(&tailnet::SystemClock).unix_timestamp()
}

/// A request as Slack signs it: `v0=HEX(HMAC-SHA256(secret, "v0:TS:BODY"))`.
fn signed(secret: &str, ts: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v0={hex}")
}

struct App {
    base: String,
    http: reqwest::blocking::Client,
}

impl App {
    /// POSTs a form body signed with `secret` at `ts`: the status and the JSON answer.
    fn post_as(&self, path: &str, body: &str, secret: &str, ts: i64) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", signed(secret, ts, body))
            .body(body.to_owned())
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn command(&self, user: &str, text: &str) -> (u16, Value) {
        let body = form(&[
            ("command", "/tidegate"),
            ("text", text),
            ("user_id", user),
            ("channel_id", "C0GENERAL"),
            ("trigger_id", "trigger-1"),
        ]);
        self.post_as("/slack/commands", &body, SIGNING_SECRET, now())
    }

    fn interaction(&self, payload: Value) -> (u16, Value) {
        let body = form(&[("payload", &payload.to_string())]);
        self.post_as("/slack/interactions", &body, SIGNING_SECRET, now())
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| -> String {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                            (b as char).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A button click; each carries its own `action_ts`, as Slack's do (so two clicks in one
/// second are not one request replayed).
fn click(user: &str, action: &str, request: &str) -> Value {
    static CLICKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CLICKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    json!({
        "type": "block_actions",
        "action_ts": format!("{}.{n:06}", now()),
        "user": {"id": user},
        "trigger_id": "trigger-2",
        "channel": {"id": format!("D{user}")},
        "actions": [{"action_id": action, "value": request}],
    })
}

/// `(r-...)` in a text.
fn request_id(text: &str) -> String {
    let at = text
        .find("(r-")
        .unwrap_or_else(|| panic!("no request id in {text}"))
        + 1;
    text[at..at + text[at..].find(')').unwrap()].to_owned()
}

#[test]
fn requests_and_approvals_in_slack() {
    let slack = SlackApi::start();
    let api_url = slack.url.clone();
    let d = Deployment::new("slack", move |t| {
        format!(
            "{t}\n[slack]\nbot_token = \"{BOT_TOKEN}\"\nsigning_secret = \"{SIGNING_SECRET}\"\n\
             api_url = \"{api_url}\"\nannounce_channel = \"C0SECURITY\"\nverify_identity = false\n\n\
             [notifications]\nremind_before_expiry = \"10m\"\n"
        )
    });
    let mut server = d.serve();
    let app = App {
        base: d.server_url(),
        http: reqwest::blocking::Client::new(),
    };
    let carol = d.token("carol@example.com");

    // A request from the slash command; the approvers get a DM each with the buttons and what
    // the grant gives, in the web preview's words.
    let (status, answer) = app.command("U_CAROL", "request prod-ssh 2h INC-42 db is slow");
    assert_eq!(status, 200);
    assert_eq!(answer["response_type"], "ephemeral");
    let text = answer["text"].as_str().unwrap();
    assert!(text.starts_with("Requested prod-ssh for 2h"), "{text}");
    let id = request_id(text);
    slack.wait_for("two approver DMs", |s| {
        s.calls("chat.postMessage").len() >= 2
    });
    let posts = slack.calls("chat.postMessage");
    let mut channels: Vec<&str> = posts
        .iter()
        .map(|p| p["channel"].as_str().unwrap())
        .collect();
    channels.sort();
    assert_eq!(channels, ["DU_ALICE", "DU_BOB"]);
    let blocks = posts[0]["blocks"].to_string();
    assert!(
        blocks.contains("\"action_id\":\"tidegate_approve\"")
            && blocks.contains(&format!("\"value\":\"{id}\"")),
        "{blocks}"
    );
    assert!(blocks.contains("\"action_id\":\"tidegate_deny\""));
    assert!(blocks.contains("INC-42 db is slow") && blocks.contains("carol@example.com"));
    let preview: Value = reqwest::blocking::Client::new()
        .get(format!(
            "{}/api/entitlements/prod-ssh/preview",
            d.server_url()
        ))
        .bearer_auth(&carol)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let gives = preview["gives"][0].as_str().unwrap();
    assert!(blocks.contains(gives), "{gives} in {blocks}");
    assert!(!slack.calls("users.lookupByEmail").is_empty());

    // Forged, stale: 401, and nothing changes.
    let body = form(&[(
        "payload",
        &click("U_ALICE", "tidegate_approve", &id).to_string(),
    )]);
    assert_eq!(
        app.post_as("/slack/interactions", &body, "not-the-secret", now())
            .0,
        401
    );
    assert_eq!(
        app.post_as("/slack/interactions", &body, SIGNING_SECRET, now() - 600)
            .0,
        401
    );
    let unsigned = app
        .http
        .post(format!("{}/slack/interactions", app.base))
        .body(body.clone())
        .send()
        .unwrap()
        .status();
    assert_eq!(unsigned, 401);
    // An unknown Slack user, the requester herself, someone who may not approve: 200, told
    // why in an ephemeral message, nothing changes.
    for (user, why) in [
        ("U_EVE", "not a user of the tailnet"),
        ("U_CAROL", "carol@example.com"),
        ("U_DAVE", "dave@example.com"),
    ] {
        let before = slack.calls("chat.postEphemeral").len();
        assert_eq!(app.interaction(click(user, "tidegate_approve", &id)).0, 200);
        let told = slack.calls("chat.postEphemeral");
        assert_eq!(told.len(), before + 1, "{user}");
        assert_eq!(told[before]["user"], user);
        assert!(
            told[before]["text"].as_str().unwrap().contains(why),
            "{user}: {}",
            told[before]
        );
    }
    assert_eq!(d.cli(&carol, &["show", &id])["state"], "pending");

    // Alice approves with a click; the replayed click is refused.
    let ts = now();
    let approve = form(&[(
        "payload",
        &click("U_ALICE", "tidegate_approve", &id).to_string(),
    )]);
    assert_eq!(
        app.post_as("/slack/interactions", &approve, SIGNING_SECRET, ts)
            .0,
        200
    );
    assert_eq!(
        app.post_as("/slack/interactions", &approve, SIGNING_SECRET, ts)
            .0,
        401,
        "replayed"
    );
    wait_until("the grant active", || {
        d.cli(&carol, &["show", &id])["state"] == "active"
    });
    // Both messages updated in place, without buttons; carol told in a DM.
    slack.wait_for("the messages updated to active", |s| {
        s.calls("chat.update")
            .iter()
            .filter(|u| u["blocks"].to_string().contains("active until"))
            .count()
            >= 2
    });
    let last = slack.calls("chat.update").last().unwrap().clone();
    assert!(
        !last["blocks"].to_string().contains("tidegate_approve"),
        "{last}"
    );
    assert!(
        last["blocks"]
            .to_string()
            .contains("Approved by alice@example.com")
    );
    slack.wait_for("carol's DMs", |s| {
        let to_carol: Vec<String> = s
            .calls("chat.postMessage")
            .iter()
            .filter(|p| p["channel"] == "DU_CAROL")
            .map(|p| p["text"].as_str().unwrap().to_owned())
            .collect();
        to_carol
            .iter()
            .any(|t| t.contains("approved by alice@example.com"))
            && to_carol.iter().any(|t| t.contains("is active until"))
    });
    let (_, list) = app.command("U_CAROL", "list");
    assert!(
        list["text"].as_str().unwrap().contains("prod-ssh")
            && list["text"].as_str().unwrap().contains("active"),
        "{list}"
    );

    // Deny: the button opens a modal; its submission denies, and the comment reaches dave.
    let (_, answer) = app.command("U_DAVE", "request prod-ssh 1h curious");
    let denied = request_id(answer["text"].as_str().unwrap());
    assert_eq!(
        app.interaction(click("U_BOB", "tidegate_deny", &denied)).0,
        200
    );
    let modal = slack.calls("views.open").last().unwrap().clone();
    assert_eq!(modal["view"]["callback_id"], "tidegate_deny");
    assert_eq!(modal["view"]["private_metadata"], denied.as_str());
    assert_eq!(
        modal["view"]["blocks"][0]["element"]["action_id"],
        "comment"
    );
    let submit = json!({
        "type": "view_submission",
        "user": {"id": "U_BOB"},
        "view": {"callback_id": "tidegate_deny", "private_metadata": denied,
                 "state": {"values": {"comment": {"comment": {"type": "plain_text_input", "value": "use staging"}}}}},
    });
    assert_eq!(app.interaction(submit).0, 200);
    let alice = d.token("alice@example.com");
    assert_eq!(d.cli(&alice, &["show", &denied])["state"], "denied");
    slack.wait_for("dave told of the denial", |s| {
        s.calls("chat.postMessage").iter().any(|p| {
            p["channel"] == "DU_DAVE" && p["text"].as_str().unwrap().contains("use staging")
        })
    });

    // `/tidegate` alone: the request modal.
    let (status, _) = app.command("U_CAROL", "");
    assert_eq!(status, 200);
    let modal = slack.calls("views.open").last().unwrap().clone();
    assert_eq!(modal["view"]["callback_id"], "tidegate_request");
    let ids: Vec<&str> = modal["view"]["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["block_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["entitlement", "duration", "reason", "device"]);
    for b in modal["view"]["blocks"].as_array().unwrap() {
        assert_eq!(b["block_id"], b["element"]["action_id"]);
    }

    // The modal's submission is a request.
    let submit = json!({
        "type": "view_submission",
        "user": {"id": "U_CAROL"},
        "view": {"callback_id": "tidegate_request", "state": {"values": {
            "entitlement": {"entitlement": {"type": "static_select", "selected_option": {"value": "prod-db"}}},
            "duration": {"duration": {"type": "plain_text_input", "value": "30m"}},
            "reason": {"reason": {"type": "plain_text_input", "value": "from the modal"}},
            "device": {"device": {"type": "plain_text_input", "value": null}},
        }}},
    });
    assert_eq!(app.interaction(submit).0, 200);
    let listed = d.cli(&carol, &["list", "--mine", "--entitlement", "prod-db"]);
    let from_modal = &listed["requests"][0];
    assert_eq!(from_modal["reason"], "from the modal", "{listed:#}");
    assert_eq!(from_modal["duration"], "30m");
    // A bad duration is shown on the modal's own field.
    let bad = json!({
        "type": "view_submission",
        "user": {"id": "U_CAROL"},
        "view": {"callback_id": "tidegate_request", "state": {"values": {
            "entitlement": {"entitlement": {"selected_option": {"value": "prod-db"}}},
            "duration": {"duration": {"value": "forever"}},
            "reason": {"reason": {"value": "x"}},
            "device": {"device": {"value": null}},
        }}},
    });
    let (status, answer) = app.interaction(bad);
    assert_eq!(status, 200);
    assert_eq!(answer["response_action"], "errors");
    assert!(answer["errors"]["duration"].is_string(), "{answer}");

    // Ending soon: a DM with Extend; the click asks for more time.
    let (_, answer) = app.command("U_DAVE", "request prod-ssh 5m quick fix");
    let short = request_id(answer["text"].as_str().unwrap());
    assert_eq!(
        app.interaction(click("U_ALICE", "tidegate_approve", &short))
            .0,
        200
    );
    slack.wait_for("the reminder with Extend", |s| {
        s.calls("chat.postMessage").iter().any(|p| {
            p["channel"] == "DU_DAVE"
                && p["blocks"]
                    .to_string()
                    .contains("\"action_id\":\"tidegate_extend\"")
        })
    });
    assert_eq!(
        app.interaction(click("U_DAVE", "tidegate_extend", &short))
            .0,
        200
    );
    let told = slack.calls("chat.postEphemeral").last().unwrap().clone();
    assert!(
        told["text"]
            .as_str()
            .unwrap()
            .contains("more asked for prod-ssh"),
        "{told}"
    );
    let shown = d.cli(&alice, &["show", &short]);
    assert!(shown["extension"].is_object(), "{shown:#}");

    // An access review's reviewer gets a DM with their share.
    d.cli(
        &alice,
        &[
            "review",
            "create",
            "SRE",
            "--scope",
            "group:sre",
            "--reviewer",
            "carol@example.com",
        ],
    );
    slack.wait_for("the reviewer's DM", |s| {
        s.calls("chat.postMessage").iter().any(|p| {
            p["channel"] == "DU_CAROL"
                && p["text"]
                    .as_str()
                    .unwrap()
                    .contains("2 accesses to review in *SRE*")
        })
    });

    // Break-glass is announced.
    d.cli(
        &carol,
        &[
            "request",
            "prod-db",
            "--break-glass",
            "--reason",
            "outage INC-43",
        ],
    );
    slack.wait_for("the announcement", |s| {
        s.calls("chat.postMessage").iter().any(|p| {
            p["channel"] == "C0SECURITY" && p["text"].as_str().unwrap().contains("outage INC-43")
        })
    });
    let _ = server.kill();
    let _ = server.wait();
}

/// `verify_identity` (the default): a Slack user acts only after linking their account once
/// through a sign-in link, whatever e-mail their Slack profile shows.
#[test]
fn a_slack_account_is_linked_before_it_approves() {
    let slack = SlackApi::start();
    let api_url = slack.url.clone();
    let d = Deployment::new("slack-link", move |t| {
        format!(
            "{t}\n[auth]\ntrusted_proxy = [\"127.0.0.1\"]\n\n[slack]\nbot_token = \"{BOT_TOKEN}\"\n\
             signing_secret = \"{SIGNING_SECRET}\"\napi_url = \"{api_url}\"\napprovals_channel = \"C0APPROVALS\"\n"
        )
    });
    let mut server = d.serve();
    let app = App {
        base: d.server_url(),
        http: reqwest::blocking::Client::new(),
    };
    let carol = d.token("carol@example.com");
    let r = d.cli(
        &carol,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-50"],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    // With an approvals channel: one post there, no DMs.
    slack.wait_for("the post to the approvals channel", |s| {
        !s.calls("chat.postMessage").is_empty()
    });
    let posts = slack.calls("chat.postMessage");
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0]["channel"], "C0APPROVALS");
    assert!(slack.calls("conversations.open").is_empty());

    assert_eq!(
        app.interaction(click("U_ALICE", "tidegate_approve", &id)).0,
        200
    );
    let told = slack.calls("chat.postEphemeral").last().unwrap().clone();
    let text = told["text"].as_str().unwrap();
    assert!(text.contains("link your Slack account"), "{text}");
    assert_eq!(
        d.cli(&carol, &["show", &id])["state"],
        "pending",
        "not before linking"
    );
    let at = text.find("/slack/link?token=").unwrap();
    let path = text[at..].split_whitespace().next().unwrap().to_owned();

    // Alice opens it signed in (here through `tailscale serve`'s header).
    let mut web = crate::web::Browser::new(&d.server_url());
    web.get_with(
        &format!(
            "/login?next={}",
            path.replace('?', "%3F").replace('=', "%3D")
        ),
        &[("Tailscale-User-Login", "alice@example.com")],
    );
    let (status, page) = web.get(&path);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("now acts as alice@example.com"), "{page}");
    let (status, _) = web.get(&path);
    assert_eq!(status, 400, "a link works once");

    assert_eq!(
        app.interaction(click("U_ALICE", "tidegate_approve", &id)).0,
        200
    );
    wait_until("approved", || {
        d.cli(&carol, &["show", &id])["state"] != "pending"
    });
    let _ = server.kill();
    let _ = server.wait();
}
