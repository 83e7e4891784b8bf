//! Outbound webhooks (issue 14) end to end: a receiver on loopback that checks every
//! signature, a request's whole life delivered as events, a refused delivery retried with the
//! same id, and deliveries that survive a kill -9 of the server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::{Deployment, wait_until};

const SECRET: &str = "whsec-test-0123456789";

/// A webhook endpoint: records each delivery (its signature header and body) and answers 503
/// while `refuse` is above zero (counting down) or `down` is set.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<(String, String)>>>,
    refuse: Arc<AtomicUsize>,
    down: Arc<std::sync::atomic::AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let received: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let refuse = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (r, f, dn) = (received.clone(), refuse.clone(), down.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (r, f, dn) = (r.clone(), f.clone(), dn.clone());
                async move {
                    let signature = headers
                        .get("tidegate-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    r.lock().unwrap().push((signature, body));
                    let refused = dn.load(Ordering::SeqCst)
                        || f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                    if refused {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            received,
            refuse,
            down,
            _runtime: runtime,
        }
    }

    /// Every delivery received so far, each checked: signed with the secret over `t.body`,
    /// and fresh.
    fn events(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(signature, body)| {
                let (t, v1) = signature
                    .split_once(',')
                    .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
                    .unwrap_or_else(|| panic!("signature {signature:?}"));
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(format!("{t}.{body}").as_bytes());
                let expected: String = mac
                    .finalize()
                    .into_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert_eq!(v1, expected, "the signature of {body}");
                let age = tailnet::Clock::now(&tailnet::SystemClock).unix_timestamp()
                    - t.parse::<i64>().unwrap();
                assert!((0..300).contains(&age), "fresh: {age} s");
                serde_json::from_str(body).unwrap()
            })
            .collect()
    }

    fn types(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn deployment(name: &str, receiver: &Receiver) -> Deployment {
    let url = receiver.url.clone();
    Deployment::new(name, move |t| {
        format!(
            "{t}\n[auth]\ntrusted_proxy = [\"127.0.0.1\"]\n\n[[webhook]]\nname = \"siem\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nevents = [\"request.*\", \"grant.*\"]\n"
        )
    })
}

#[test]
fn a_request_s_life_reaches_a_webhook_signed_and_retried() {
    let receiver = Receiver::start();
    let d = deployment("webhooks", &receiver);
    let mut server = d.serve();
    let (carol, alice) = (d.token("carol@example.com"), d.token("alice@example.com"));
    // The first delivery is refused: it comes again within 10 s, with the same id.
    receiver.refuse.store(1, Ordering::SeqCst);
    let r = d.cli(
        &carol,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-9"],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    d.cli(&alice, &["approve", &id]);
    wait_until("the grant applied", || {
        d.cli(&carol, &["show", &id])["state"] == "active"
    });
    d.cli(&carol, &["drop", &id]);
    let started = std::time::Instant::now();
    let mut types = Vec::new();
    for _ in 0..300 {
        types = receiver.types();
        if types.iter().any(|t| t == "grant.removal_verified")
            && types.iter().filter(|t| *t == "request.created").count() == 2
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(started.elapsed().as_secs() < 25, "{types:?}");
    for wanted in [
        "request.created",
        "request.approved",
        "grant.applied",
        "grant.dropped",
        "grant.removal_verified",
    ] {
        assert!(types.iter().any(|t| t == wanted), "{wanted} in {types:?}");
    }
    assert!(
        !types.iter().any(|t| t.starts_with("tailnet.")),
        "only the events asked for"
    );
    let events = receiver.events();
    let created: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "request.created")
        .collect();
    assert_eq!(created[0]["id"], created[1]["id"], "a retry keeps its id");
    assert_eq!(created[0]["request"]["id"], id.as_str());
    assert_eq!(created[0]["actor"], "carol@example.com");
    let applied = events
        .iter()
        .find(|e| e["type"] == "grant.applied")
        .unwrap();
    assert_eq!(applied["request"]["requester"], "carol@example.com");

    // The delivery log: the refused attempt, then delivered.
    let log: Value = reqwest::blocking::Client::new()
        .get(format!("{}/api/webhooks", d.server_url()))
        .bearer_auth(&alice)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let siem = &log["webhooks"][0];
    assert_eq!(siem["name"], "siem");
    let first = siem["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event_id"] == created[0]["id"])
        .unwrap();
    assert_eq!(first["state"], "delivered");
    assert_eq!(first["attempts"], 2);
    assert_eq!(first["last_error"], Value::Null);
    let status = reqwest::blocking::Client::new()
        .get(format!("{}/api/webhooks", d.server_url()))
        .bearer_auth(&carol)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 403);
    let metrics = crate::http_text(&format!("{}/metrics", d.server_url()));
    assert!(
        metrics.contains("tidegate_deliveries_pending{channel=\"webhook:siem\"} 0"),
        "{metrics}"
    );
    // The same log in the admin pages.
    let mut web = crate::web::Browser::new(&d.server_url());
    web.get_with(
        "/login?next=/admin/webhooks",
        &[("Tailscale-User-Login", "alice@example.com")],
    );
    let (status, page) = web.get("/admin/webhooks");
    assert_eq!(status, 200);
    assert!(
        page.contains(">siem</h2>") && page.contains("state-good\">delivered"),
        "{page}"
    );

    // Down while events happen, and the server killed: after a restart they arrive.
    receiver.down.store(true, Ordering::SeqCst);
    let before = receiver.events().len();
    let r = d.cli(
        &carol,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-10"],
    );
    let second = r["id"].as_str().unwrap().to_owned();
    wait_until("a refused delivery", || receiver.events().len() > before);
    let _ = server.kill();
    let _ = server.wait();
    receiver.down.store(false, Ordering::SeqCst);
    let mut server = d.serve();
    let mut delivered = false;
    for _ in 0..300 {
        let last = receiver
            .events()
            .into_iter()
            .rev()
            .find(|e| e["request"]["id"] == second.as_str());
        let log: Value = reqwest::blocking::Client::new()
            .get(format!("{}/api/webhooks", d.server_url()))
            .bearer_auth(&alice)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if last.is_some() && log["webhooks"][0]["pending"] == 0 {
            delivered = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        delivered,
        "delivered after the restart: {:?}",
        receiver.types()
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// A real SMTP server (Python's aiosmtpd, installed by scripts/test.sh) on loopback: the
/// messages it accepted, parsed from its JSON lines. `refuse` first messages get a 451.
struct Smtp {
    port: u16,
    child: std::process::Child,
    messages: Arc<Mutex<Vec<Value>>>,
}

impl Smtp {
    fn start(refuse: usize) -> Option<Smtp> {
        let Some(python) = std::env::var_os("TIDEGATE_PYTHON") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "TIDEGATE_PYTHON is not set: run the tests with scripts/test.sh"
            );
            eprintln!("skipped: TIDEGATE_PYTHON is not set (scripts/test.sh sets it)");
            return None;
        };
        use std::io::BufRead;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new(python)
            .arg(crate::repo().join("tests/smtp/sink.py"))
            .args([port.to_string(), refuse.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "READY");
        let messages: Arc<Mutex<Vec<Value>>> = Arc::default();
        let keep = messages.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                keep.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        Some(Smtp {
            port,
            child,
            messages,
        })
    }

    /// (to, subject, whole message) of each message accepted.
    fn mails(&self) -> Vec<(String, String, String)> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|m| {
                let data = m["data"].as_str().unwrap().to_owned();
                let subject = data
                    .lines()
                    .find_map(|l| l.strip_prefix("Subject: "))
                    .unwrap_or_default()
                    .to_owned();
                (m["to"][0].as_str().unwrap().to_owned(), subject, data)
            })
            .collect()
    }

    fn wait_for(&self, what: &str, done: impl Fn(&[(String, String, String)]) -> bool) {
        for _ in 0..250 {
            if done(&self.mails()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}: {:#?}", self.mails());
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `extra` in `[email]` and `reminders` in `[notifications]`.
fn mail_deployment(name: &str, smtp: &Smtp, extra: &str, reminders: &str) -> Deployment {
    let port = smtp.port;
    let (extra, reminders) = (extra.to_owned(), reminders.to_owned());
    Deployment::new(name, move |t| {
        let t = t.replace(
            "[tailnet]",
            "public_url = \"https://tidegate.example.com\"\n\n[tailnet]",
        );
        format!(
            "{t}\n[email]\nsmtp_url = \"smtp://127.0.0.1:{port}\"\nfrom = \"tidegate@example.com\"\n{extra}\n\
             [notifications]\nremind_before_expiry = \"10m\"\n{reminders}\n"
        )
    })
}

/// Approvers are mailed a new request with a link to it (the first attempt refused by the
/// server and retried), the requester the approval and a reminder before the access ends, a
/// denied requester the comment; plain text and HTML.
#[test]
fn approvers_and_requesters_are_mailed() {
    let Some(smtp) = Smtp::start(1) else { return };
    let d = mail_deployment("mail", &smtp, "", "");
    let mut server = d.serve();
    let (carol, alice, bob, dave) = (
        d.token("carol@example.com"),
        d.token("alice@example.com"),
        d.token("bob@example.com"),
        d.token("dave@example.com"),
    );
    let r = d.cli(
        &carol,
        &["request", "prod-ssh", "--for", "5m", "--reason", "INC-11"],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    let asks = "carol@example.com requests prod-ssh for 5m";
    smtp.wait_for("both approvers mailed", |m| {
        m.iter().filter(|(_, s, _)| s == asks).count() == 2
    });
    let mails = smtp.mails();
    let mut approvers: Vec<&str> = mails
        .iter()
        .filter(|(_, s, _)| s == asks)
        .map(|(to, _, _)| to.as_str())
        .collect();
    approvers.sort();
    assert_eq!(approvers, ["alice@example.com", "bob@example.com"]);
    let (_, _, data) = mails.iter().find(|(_, s, _)| s == asks).unwrap();
    assert!(
        data.contains(&format!("https://tidegate.example.com/requests/{id}")),
        "{data}"
    );
    assert!(
        data.contains("multipart/alternative")
            && data.contains("text/plain")
            && data.contains("text/html")
    );
    assert!(
        data.contains("From: tidegate <tidegate@example.com>"),
        "{data}"
    );
    assert!(data.contains("INC-11"));

    d.cli(&alice, &["approve", &id]);
    smtp.wait_for("the approval and the reminder", |m| {
        m.iter()
            .any(|(to, s, _)| to == "carol@example.com" && s == "Approved: prod-ssh")
            && m.iter()
                .any(|(to, s, _)| to == "carol@example.com" && s.starts_with("prod-ssh ends in"))
    });

    let r = d.cli(
        &dave,
        &["request", "prod-ssh", "--for", "1h", "--reason", "curious"],
    );
    let denied = r["id"].as_str().unwrap().to_owned();
    d.cli(&bob, &["deny", &denied, "--comment", "use staging"]);
    smtp.wait_for("the denial", |m| {
        m.iter().any(|(to, s, data)| {
            to == "dave@example.com" && s == "Denied: prod-ssh" && data.contains("use staging")
        })
    });
    // An access review's reviewer is mailed their share, with a link to it.
    let campaign = d.cli(
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
    let review = campaign["id"].as_str().unwrap().to_owned();
    smtp.wait_for("the reviewer's mail", |m| {
        m.iter().any(|(to, s, data)| {
            to == "carol@example.com"
                && s == "2 accesses to review: SRE"
                // (quoted-printable: the link's `=` is `=3D` in the message)
                && data.contains(&format!("https://tidegate.example.com/reviews/{review}?show=3Dmine"))
        })
    });
    let _ = server.kill();
    let _ = server.wait();
}

/// `starttls = "required"` against a server that offers no STARTTLS: nothing is sent in the
/// clear; the delivery log says why, and it is retried.
#[test]
fn required_starttls_is_never_skipped() {
    let Some(smtp) = Smtp::start(0) else { return };
    let d = mail_deployment("mail-tls", &smtp, "starttls = \"required\"", "");
    let mut server = d.serve();
    let (carol, alice) = (d.token("carol@example.com"), d.token("alice@example.com"));
    d.cli(
        &carol,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-12"],
    );
    let mut email = Value::Null;
    wait_until("a refused delivery", || {
        let log: Value = reqwest::blocking::Client::new()
            .get(format!("{}/api/webhooks", d.server_url()))
            .bearer_auth(&alice)
            .send()
            .unwrap()
            .json()
            .unwrap();
        email = log["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "email")
            .cloned()
            .unwrap();
        email["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["last_error"].is_string())
    });
    let failed = &email["deliveries"][0];
    assert_eq!(failed["state"], "pending", "retried: {email:#}");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("tls"),
        "{failed}"
    );
    assert!(smtp.mails().is_empty(), "nothing sent in the clear");
    let _ = server.kill();
    let _ = server.wait();
}

/// A request nobody decides: its approvers are reminded after `remind_approvers_after`, and
/// `escalate_to` is mailed after `escalate_after`; once each.
#[test]
fn waiting_requests_are_reminded_and_escalated() {
    let Some(smtp) = Smtp::start(0) else { return };
    let d = mail_deployment(
        "mail-remind",
        &smtp,
        "",
        "remind_approvers_after = \"1s\"\nescalate_after = \"2s\"\nescalate_to = [\"dave@example.com\"]",
    );
    let mut server = d.serve();
    let carol = d.token("carol@example.com");
    d.cli(
        &carol,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-13"],
    );
    smtp.wait_for("the reminders and the escalation", |m| {
        let still: Vec<&String> = m
            .iter()
            .filter(|(_, s, _)| s.starts_with("Still waiting: carol@example.com requests prod-ssh"))
            .map(|(to, _, _)| to)
            .collect();
        still.len() == 2
            && m.iter()
                .any(|(to, s, _)| to == "dave@example.com" && s.starts_with("Escalated: "))
    });
    std::thread::sleep(std::time::Duration::from_secs(6));
    let reminders = smtp
        .mails()
        .iter()
        .filter(|(_, s, _)| s.starts_with("Still waiting") || s.starts_with("Escalated"))
        .count();
    assert_eq!(reminders, 3, "once each");
    let _ = server.kill();
    let _ = server.wait();
}
