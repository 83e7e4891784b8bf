//! The CLI client of the HTTP API: `tidegate request|approve|deny|revoke|drop|extend|list|show|
//! whoami|entitlements|key`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::Failure;
use crate::table;

#[derive(Args, Clone)]
pub struct Connection {
    /// The tidegate server.
    #[arg(
        long,
        global = true,
        env = "TIDEGATE_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// An API token (`tidegate token create`).
    #[arg(long, global = true, env = "TIDEGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON objects.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Request an entitlement.
    Request {
        entitlement: String,
        /// How long, e.g. 2h (default: the entitlement's default).
        #[arg(long = "for")]
        duration: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        /// posture entitlements: your device (hostname, MagicDNS name or ID); repeatable.
        #[arg(long)]
        device: Vec<String>,
        /// Start later (RFC 3339).
        #[arg(long)]
        start: Option<String>,
        /// Grant it to yourself now (emergency; announced and reviewed).
        #[arg(long)]
        break_glass: bool,
    },
    /// Approve a request (or its pending extension).
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Deny a request.
    Deny {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// End someone's access early (approvers and admins).
    Revoke {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End your own access early.
    Drop { id: String },
    /// Withdraw your request before it is active.
    Cancel { id: String },
    /// Ask for more time on an active grant (needs approval).
    Extend {
        id: String,
        #[arg(long = "for")]
        duration: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Claim the auth key of an approved authkey request (shown once).
    Key { id: String },
    /// List requests.
    List {
        #[arg(long)]
        mine: bool,
        /// Requests waiting for your review.
        #[arg(long)]
        pending: bool,
        #[arg(long)]
        active: bool,
    },
    /// Show one request.
    Show { id: String },
    /// Who the token belongs to.
    Whoami,
    /// The entitlements you may request.
    Entitlements,
    /// Standing members of managed groups: there before tidegate managed the group, never
    /// removed until an admin adopts it (admins and auditors).
    Standing,
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub(crate) fn new(c: &Connection) -> Result<Client, Failure> {
        let token = c.token.clone().ok_or_else(|| {
            Failure::Usage(
                "no token: pass --token or set TIDEGATE_TOKEN (tidegate token create makes one)"
                    .into(),
            )
        })?;
        Ok(Client {
            http: reqwest::Client::new(),
            base: c.server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.map_err(|e| {
            Failure::Usage(format!("cannot reach {}: {}", self.base, e.without_url()))
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        Err(match status.as_u16() {
            401 => Failure::Usage(format!("not signed in: {message}")),
            _ => Failure::Rejected(format!("error: {message}")),
        })
    }
}

/// A field as printed to a terminal: control characters (escape sequences, newlines) are
/// shown escaped, never sent raw, whatever the server stored.
pub(crate) fn text(v: &Value, key: &str) -> String {
    let raw = match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    printable(&raw)
}

pub(crate) fn printable(raw: &str) -> String {
    raw.chars()
        .flat_map(|c| {
            if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn print_request(r: &Value) {
    println!(
        "{}  {}  {}",
        text(r, "id"),
        text(r, "state"),
        text(r, "entitlement")
    );
    println!("  requester: {}", text(r, "requester"));
    println!("  reason:    {}", text(r, "reason"));
    let extended: Vec<&Value> = r
        .get("extended")
        .and_then(Value::as_array)
        .map(|e| e.iter().collect())
        .unwrap_or_default();
    if extended.is_empty() {
        println!("  duration:  {}", text(r, "duration"));
    } else {
        let steps: Vec<String> = extended.iter().map(|e| text(e, "duration")).collect();
        println!(
            "  duration:  {} ({}, extended by {})",
            text(r, "total_duration"),
            text(r, "duration"),
            steps.join(" and ")
        );
    }
    let print_reviews = |reviews: Option<&Value>, what: &str| {
        for review in reviews.and_then(Value::as_array).into_iter().flatten() {
            let verdict = if review["approve"] == true {
                "approved"
            } else {
                "denied"
            };
            println!(
                "  {what}{verdict} by {} {}",
                text(review, "reviewer"),
                text(review, "comment")
            );
        }
    };
    print_reviews(r.get("reviews"), "");
    for e in &extended {
        print_reviews(
            e.get("reviews"),
            &format!("extension {} ", text(e, "duration")),
        );
    }
    if let Some(ext) = r.get("extension").filter(|e| e.is_object()) {
        println!(
            "  extension: {} more asked, waiting for approval: {}",
            text(ext, "duration"),
            text(ext, "reason")
        );
        print_reviews(ext.get("reviews"), "  extension ");
    }
    for key in ["activated_at", "expires_at", "ended_at", "end_reason"] {
        let v = text(r, key);
        if !v.is_empty() {
            println!("  {key}: {v}");
        }
    }
    match r["removal"].as_str() {
        Some("in progress") => println!("  removal from the tailnet: in progress"),
        Some(_) => println!(
            "  overdue: not yet removed from the tailnet (the reconciler retries; see last error if any)"
        ),
        None => {}
    }
    let error = r
        .get("tailnet")
        .map(|t| text(t, "last_error"))
        .unwrap_or_default();
    if !error.is_empty() {
        println!("  last error: {error}");
    }
}

pub async fn run(connection: &Connection, command: ClientCommand) -> Result<(), Failure> {
    use reqwest::Method;
    let client = Client::new(connection)?;
    let post = |path: String, body: Value| {
        let client = &client;
        async move { client.call(Method::POST, &path, Some(body)).await }
    };
    let result = match command {
        ClientCommand::Request {
            entitlement,
            duration,
            reason,
            device,
            start,
            break_glass,
        } => {
            let mut body = json!({"entitlement": entitlement, "reason": reason, "devices": device, "break_glass": break_glass});
            if let Some(d) = duration {
                body["duration"] = json!(d);
            }
            if let Some(s) = start {
                body["start_at"] = json!(s);
            }
            post("/api/requests".into(), body).await?
        }
        ClientCommand::Approve { id, comment } => {
            post(
                format!("/api/requests/{id}/approve"),
                json!({"comment": comment}),
            )
            .await?
        }
        ClientCommand::Deny { id, comment } => {
            post(
                format!("/api/requests/{id}/deny"),
                json!({"comment": comment}),
            )
            .await?
        }
        ClientCommand::Revoke { id, reason } => {
            post(
                format!("/api/requests/{id}/revoke"),
                json!({"reason": reason}),
            )
            .await?
        }
        ClientCommand::Drop { id } => post(format!("/api/requests/{id}/drop"), json!({})).await?,
        ClientCommand::Cancel { id } => {
            post(format!("/api/requests/{id}/cancel"), json!({})).await?
        }
        ClientCommand::Extend {
            id,
            duration,
            reason,
        } => {
            post(
                format!("/api/requests/{id}/extend"),
                json!({"duration": duration, "reason": reason}),
            )
            .await?
        }
        ClientCommand::Key { id } => {
            let v = post(format!("/api/requests/{id}/key"), json!({})).await?;
            if connection.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("{}", text(&v, "key"));
                eprintln!("This key is shown once. It expires with the grant.");
            }
            return Ok(());
        }
        ClientCommand::List {
            mine,
            pending,
            active,
        } => {
            let mut query = Vec::new();
            if mine {
                query.push("mine=true".to_owned());
            }
            if pending {
                query.push("review=true".to_owned());
            }
            if active {
                query.push("state=active".to_owned());
            }
            let path = format!("/api/requests?{}", query.join("&"));
            let v = client.call(Method::GET, &path, None).await?;
            if connection.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["requests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        text(r, "id"),
                        match r.get("extension").filter(|e| e.is_object()) {
                            // Waiting for a review is the extension, not the grant.
                            Some(ext) => {
                                format!("{}, extend +{}", text(r, "state"), text(ext, "duration"))
                            }
                            None => text(r, "state"),
                        },
                        text(r, "entitlement"),
                        text(r, "requester"),
                        text(r, "duration"),
                        match text(r, "ended_at") {
                            // An ended grant shows when it ended, not the end it would have had.
                            ended if !ended.is_empty() => format!("ended {ended}"),
                            _ => text(r, "expires_at"),
                        },
                        text(r, "reason"),
                    ]
                })
                .collect();
            if rows.is_empty() {
                println!("no requests");
            } else {
                print!(
                    "{}",
                    table::render(
                        &[
                            "ID",
                            "STATE",
                            "ENTITLEMENT",
                            "REQUESTER",
                            "FOR",
                            "EXPIRES",
                            "REASON"
                        ],
                        &rows
                    )
                );
            }
            return Ok(());
        }
        ClientCommand::Show { id } => {
            client
                .call(Method::GET, &format!("/api/requests/{id}"), None)
                .await?
        }
        ClientCommand::Whoami => {
            let v = client.call(Method::GET, "/api/whoami", None).await?;
            if !connection.json {
                println!(
                    "{}{}",
                    text(&v, "login"),
                    if v["admin"] == true { " (admin)" } else { "" }
                );
                return Ok(());
            }
            v
        }
        ClientCommand::Entitlements => {
            let v = client.call(Method::GET, "/api/entitlements", None).await?;
            if !connection.json {
                let rows: Vec<Vec<String>> = v["entitlements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            text(e, "name"),
                            text(e, "strategy"),
                            text(e, "max_duration"),
                            text(e, "description"),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(&["NAME", "STRATEGY", "MAX", "DESCRIPTION"], &rows)
                );
                return Ok(());
            }
            v
        }
        ClientCommand::Standing => {
            let v = client.call(Method::GET, "/api/standing", None).await?;
            if !connection.json {
                let rows: Vec<Vec<String>> = v["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|g| {
                        let group = text(g, "group");
                        let since = text(g, "first_managed_at");
                        g["standing"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .map(move |m| {
                                vec![
                                    group.clone(),
                                    printable(m.as_str().unwrap_or_default()),
                                    since.clone(),
                                ]
                            })
                    })
                    .collect();
                if rows.is_empty() {
                    println!("no standing members");
                } else {
                    print!("{}", table::render(&["GROUP", "MEMBER", "SINCE"], &rows));
                }
                return Ok(());
            }
            v
        }
    };
    if connection.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
    } else {
        print_request(&result);
    }
    Ok(())
}
