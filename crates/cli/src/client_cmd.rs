//! The CLI client of the HTTP API: `tidegate request|approve|deny|revoke|drop|extend|list|show|
//! whoami|entitlements|key`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::Failure;
use crate::table;

/// The flags of every command that talks to a tidegate server (added to those commands only).
#[derive(Args, Clone, Default)]
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
    /// Print times in UTC (RFC 3339) instead of "in 42 min".
    #[arg(long, global = true)]
    pub utc: bool,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Request an entitlement.
    Request {
        /// The entitlement (`tidegate entitlements` lists yours).
        entitlement: String,
        /// How long, e.g. 2h (default: the entitlement's default).
        #[arg(long = "for")]
        duration: Option<String>,
        /// Why: a ticket or incident, e.g. INC-4211.
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
        /// Wait until the grant is active (exit 0), denied, cancelled or lapsed (exit 1).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (e.g. 10m) and exit 3.
        #[arg(long, requires = "wait")]
        wait_timeout: Option<String>,
    },
    /// Approve a request (or its pending extension).
    Approve {
        /// The request's id.
        id: String,
        /// A note kept with your approval.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Deny a request (or its pending extension).
    Deny {
        /// The request's id.
        id: String,
        /// Why, told to the requester.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// End someone's access early (approvers and admins).
    Revoke {
        /// The request's id.
        id: String,
        /// Why, kept in the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End your own access early.
    Drop {
        /// The request's id.
        id: String,
    },
    /// Withdraw your request before it is active.
    Cancel {
        /// The request's id.
        id: String,
    },
    /// Ask for more time on an active grant (needs approval).
    Extend {
        /// The request's id.
        id: String,
        /// How much more, e.g. 30m.
        #[arg(long = "for")]
        duration: String,
        /// Why more time is needed.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Claim the auth key of an approved authkey request (shown once).
    Key {
        /// The request's id.
        id: String,
    },
    /// List requests, newest first.
    List {
        /// Only your own requests.
        #[arg(long)]
        mine: bool,
        /// Requests (and extensions) waiting for your review.
        #[arg(long)]
        pending: bool,
        /// Only active grants (same as --state active).
        #[arg(long)]
        active: bool,
        /// Only these states, comma-separated: pending, approved, active, denied, cancelled,
        /// expired, revoked, failed.
        #[arg(long, value_delimiter = ',')]
        state: Vec<String>,
        /// Only this entitlement.
        #[arg(long)]
        entitlement: Option<String>,
        /// Only this requester's (a login).
        #[arg(long)]
        requester: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one request.
    Show {
        /// The request's id.
        id: String,
    },
    /// Who the token belongs to.
    Whoami,
    /// The entitlements you may request.
    Entitlements,
    /// Standing members of managed groups: there before tidegate managed the group, never
    /// removed until an admin adopts it (admins and auditors).
    Standing,
    /// What requesting an entitlement would give you, on the chosen device, and who approves.
    Preview {
        /// The entitlement.
        entitlement: String,
        /// Posture and tag entitlements: the device it would be for (name, hostname or ID).
        #[arg(long)]
        device: Option<String>,
    },
    /// Who has access right now: active grants, each managed group's members and why they are
    /// there, overdue removals (admins and auditors).
    Access {
        /// Only this managed group, e.g. group:prod-access.
        #[arg(long)]
        group: Option<String>,
        /// Only grants of this entitlement.
        #[arg(long)]
        entitlement: Option<String>,
        /// Only this person's access (a login).
        #[arg(long)]
        requester: Option<String>,
    },
    /// Break-glass grants, to be reviewed after the fact (admins and auditors).
    #[command(subcommand)]
    BreakGlass(BreakGlassCommand),
    /// Access reviews: campaigns over standing access, decided keep or revoke, with evidence.
    #[command(subcommand)]
    Review(crate::review_cmd::ReviewCommand),
}

#[derive(Subcommand)]
pub enum BreakGlassCommand {
    /// Break-glass grants, those not yet reviewed first.
    List,
    /// Mark one reviewed, saying what the review found.
    Review {
        /// The request's id.
        id: String,
        /// What the review found.
        #[arg(long)]
        note: String,
    },
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

/// How times are printed: relative to now ("in 42 min"), or UTC with `--utc`.
#[derive(Clone, Copy)]
pub(crate) struct Times {
    utc: bool,
    now: time::OffsetDateTime,
}

impl Times {
    pub(crate) fn new(connection: &Connection) -> Times {
        // The CLI is the edge: the terminal's reader lives in the machine's clock.
        Times {
            utc: connection.utc,
            now: tailnet::Clock::now(&tailnet::SystemClock),
        }
    }

    /// A time field of an API object as printed.
    pub(crate) fn of(&self, v: &Value, key: &str) -> String {
        let raw = text(v, key);
        match tailnet::clock::parse_rfc3339(&raw) {
            Some(t) if !self.utc => tidegate_core::relative(t, self.now),
            _ => raw,
        }
    }
}

fn print_request(r: &Value, times: Times) {
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
    for (key, label) in [
        ("created_at", "asked"),
        ("activated_at", "active since"),
        ("expires_at", "expires"),
        ("ended_at", "ended"),
    ] {
        let v = times.of(r, key);
        if !v.is_empty() {
            println!("  {label:<10} {v}");
        }
    }
    let why = text(r, "end_reason");
    if !why.is_empty() {
        println!("  ended because: {why}");
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
    let times = Times::new(connection);
    let post = |path: String, body: Value| {
        let client = &client;
        async move { client.call(Method::POST, &path, Some(body)).await }
    };
    let result = match command {
        ClientCommand::Review(review) => return crate::review_cmd::run(connection, review).await,
        ClientCommand::Request {
            entitlement,
            duration,
            reason,
            device,
            start,
            break_glass,
            wait,
            wait_timeout,
        } => {
            let mut body = json!({"entitlement": entitlement, "reason": reason, "devices": device, "break_glass": break_glass});
            if let Some(d) = duration {
                body["duration"] = json!(d);
            }
            if let Some(s) = start {
                body["start_at"] = json!(s);
            }
            if !wait {
                post("/api/requests".into(), body).await?
            } else {
                let timeout = wait_timeout
                    .map(|t| {
                        t.parse::<tidegate_core::Span>()
                            .map_err(|e| Failure::Usage(format!("--wait-timeout {t:?}: {e}")))
                    })
                    .transpose()?;
                let created = post("/api/requests".into(), body).await.map_err(as_error)?;
                return wait_for_grant(&client, created, timeout, connection.json).await;
            }
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
            mut state,
            entitlement,
            requester,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            if mine {
                query.push("mine=true".to_owned());
            }
            if pending {
                query.push("review=true".to_owned());
            }
            if active {
                state.push("active".to_owned());
            }
            if !state.is_empty() {
                query.push(format!("state={}", encode(&state.join(","))));
            }
            if let Some(e) = entitlement {
                query.push(format!("entitlement={}", encode(&e)));
            }
            if let Some(r) = requester {
                query.push(format!("requester={}", encode(&r)));
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
                        match times.of(r, "ended_at") {
                            // An ended grant shows when it ended, not the end it would have had.
                            ended if !ended.is_empty() => format!("ended {ended}"),
                            _ => times.of(r, "expires_at"),
                        },
                        text(r, "reason"),
                    ]
                })
                .collect();
            print_rows(
                &[
                    "ID",
                    "STATE",
                    "ENTITLEMENT",
                    "REQUESTER",
                    "FOR",
                    "ENDS",
                    "REASON",
                ],
                &rows,
                "no requests",
            );
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
        ClientCommand::Preview {
            entitlement,
            device,
        } => {
            let mut path = format!("/api/entitlements/{}/preview", encode(&entitlement));
            if let Some(d) = device {
                path.push_str(&format!("?device={}", encode(&d)));
            }
            let v = client.call(Method::GET, &path, None).await?;
            if !connection.json {
                print_preview(&v, times);
                return Ok(());
            }
            v
        }
        ClientCommand::Access {
            group,
            entitlement,
            requester,
        } => {
            let query: Vec<String> = [
                ("group", group),
                ("entitlement", entitlement),
                ("requester", requester),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(&v))))
            .collect();
            let v = client
                .call(
                    Method::GET,
                    &format!("/api/access?{}", query.join("&")),
                    None,
                )
                .await?;
            if !connection.json {
                print_access(&v, times);
                return Ok(());
            }
            v
        }
        ClientCommand::BreakGlass(BreakGlassCommand::List) => {
            let v = client.call(Method::GET, "/api/break-glass", None).await?;
            if !connection.json {
                let rows: Vec<Vec<String>> = v["requests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        vec![
                            text(r, "id"),
                            text(r, "requester"),
                            text(r, "entitlement"),
                            times.of(r, "created_at"),
                            match r.get("break_glass_review") {
                                Some(review) if review.is_object() => format!(
                                    "reviewed by {}: {}",
                                    text(review, "reviewer"),
                                    text(review, "note")
                                ),
                                _ => "not reviewed".to_owned(),
                            },
                            text(r, "reason"),
                        ]
                    })
                    .collect();
                print_rows(
                    &[
                        "ID",
                        "REQUESTER",
                        "ENTITLEMENT",
                        "TAKEN",
                        "REVIEW",
                        "REASON",
                    ],
                    &rows,
                    "no break-glass grants",
                );
                return Ok(());
            }
            v
        }
        ClientCommand::BreakGlass(BreakGlassCommand::Review { id, note }) => {
            post(
                format!("/api/requests/{id}/break-glass-review"),
                json!({"note": note}),
            )
            .await?
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
                print_rows(&["GROUP", "MEMBER", "SINCE"], &rows, "no standing members");
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
        print_request(&result, times);
    }
    Ok(())
}

fn print_preview(v: &Value, times: Times) {
    println!("{}: {}", text(v, "entitlement"), text(v, "description"));
    let list = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| printable(x.as_str().unwrap_or_default()))
            .collect()
    };
    let devices = list("for_devices");
    if !devices.is_empty() {
        println!("  on:        {}", devices.join(", "));
    }
    println!("  gives:");
    for line in list("gives") {
        println!("    - {line}");
    }
    if v["auto_approved"] == true {
        println!("  approval:  none needed (you are auto-approved)");
    } else {
        println!(
            "  approval:  {} from {}",
            v["approvals"],
            list("approvers").join(", ")
        );
    }
    println!(
        "  duration:  {} by default, {} to {}",
        text(v, "default_duration"),
        text(v, "min_duration"),
        text(v, "max_duration")
    );
    if let Some(h) = v.get("holding").filter(|h| h.is_object()) {
        println!(
            "  you already hold it ({}), until {}: `tidegate extend {} --for 30m` instead?",
            text(h, "request"),
            times.of(h, "expires_at"),
            text(h, "request")
        );
    }
}

fn print_access(v: &Value, times: Times) {
    for g in v["groups"].as_array().into_iter().flatten() {
        let members = g["members"].as_array().cloned().unwrap_or_default();
        println!("{} ({} members)", text(g, "group"), members.len());
        for m in &members {
            let why = match m["because"].as_str() {
                Some("grant") => format!(
                    "grant {}, ends {}",
                    m["requests"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                    times.of(m, "until")
                ),
                Some("standing") => "standing (there before tidegate)".to_owned(),
                _ => "unexplained (drift)".to_owned(),
            };
            println!("  {:<28} {why}", text(m, "login"));
        }
    }
    let rows = |key: &str| -> Vec<Vec<String>> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                vec![
                    text(r, "id"),
                    text(r, "requester"),
                    text(r, "entitlement"),
                    times.of(r, "expires_at"),
                ]
            })
            .collect()
    };
    println!();
    print_rows(
        &["ACTIVE", "REQUESTER", "ENTITLEMENT", "ENDS"],
        &rows("active"),
        "no active grants",
    );
    let overdue = rows("overdue");
    if !overdue.is_empty() {
        println!();
        print!(
            "{}",
            table::render(&["OVERDUE", "REQUESTER", "ENTITLEMENT", "ENDED"], &overdue)
        );
    }
}

/// Rows as a table under `headers`, or `empty` when there are none.
fn print_rows(headers: &[&str], rows: &[Vec<String>], empty: &str) {
    if rows.is_empty() {
        println!("{empty}");
    } else {
        print!("{}", table::render(headers, rows));
    }
}

/// A query parameter's value, percent-encoded.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// While waiting, every failure is exit 2; exit 1 is kept for "denied or lapsed".
fn as_error(f: Failure) -> Failure {
    match f {
        Failure::Rejected(m) => Failure::Usage(m),
        other => other,
    }
}

/// `request --wait`: polls the request until its access is usable (exit 0), it ended without
/// (denied, cancelled, lapsed: exit 1), or the timeout passed (exit 3), with a spinner on a
/// terminal.
async fn wait_for_grant(
    client: &Client,
    created: Value,
    timeout: Option<tidegate_core::Span>,
    json: bool,
) -> Result<(), Failure> {
    let id = text(&created, "id");
    // An auth key's grant is usable once approved: the key is claimed, not applied.
    let entitlements = client
        .call(reqwest::Method::GET, "/api/entitlements", None)
        .await
        .map_err(as_error)?;
    let is_key = entitlements["entitlements"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["name"] == created["entitlement"] && e["strategy"] == "authkey");
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let started = std::time::Instant::now();
    let mut current = created;
    loop {
        let state = text(&current, "state");
        let done = match state.as_str() {
            "active" => Some(Ok(format!("{id} is active: access granted"))),
            "approved" if is_key => Some(Ok(format!(
                "{id} is approved: claim the key with `tidegate key {id}`"
            ))),
            "denied" | "cancelled" | "expired" | "revoked" | "failed" => {
                let why = [text(&current, "end_reason")]
                    .into_iter()
                    .chain(
                        current["reviews"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|r| r["approve"] == false)
                            .map(|r| format!("{}: {}", text(r, "reviewer"), text(r, "comment"))),
                    )
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                Some(Err(format!(
                    "{id} was {state}{}",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                )))
            }
            _ => None,
        };
        if let Some(outcome) = done {
            spinner.finish_and_clear();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&current).unwrap_or_default()
                );
            }
            return match outcome {
                Ok(message) => {
                    eprintln!("{message}");
                    Ok(())
                }
                Err(message) => Err(Failure::Rejected(message)),
            };
        }
        if let Some(limit) = timeout
            && started.elapsed().as_secs() >= limit.as_secs()
        {
            spinner.finish_and_clear();
            return Err(Failure::TimedOut(format!(
                "{id} is still {state} after {limit}; `tidegate show {id}` follows it"
            )));
        }
        spinner.set_message(format!("{id}: {state}, waiting"));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        current = client
            .call(reqwest::Method::GET, &format!("/api/requests/{id}"), None)
            .await
            .map_err(as_error)?;
    }
}
