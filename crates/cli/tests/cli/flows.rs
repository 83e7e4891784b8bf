//! Flows as people finish them in the CLI (issue 11's observations, each reproduced first).

use crate::{Demo, stdout, wait_until};

/// Approvers see extension requests where they see requests waiting for them, and after the
/// approval `show` has the new end and both comments.
#[test]
fn approvers_see_and_approve_extensions() {
    let demo = Demo::start();
    let (dave, alice) = ("dave@example.com", "alice@example.com");
    let r = demo.json(
        dave,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-9"],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    demo.json(alice, &["approve", &id, "--comment", "go ahead"]);
    wait_until("the grant to apply", || {
        demo.json(dave, &["show", &id])["state"] == "active"
    });
    let before = demo.json(dave, &["show", &id]);
    demo.json(
        dave,
        &["extend", &id, "--for", "30m", "--reason", "still on it"],
    );

    // Waiting for alice: in the JSON list, with the extension, and in the table.
    let pending = demo.json(alice, &["list", "--pending"]);
    let listed = pending["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("the extension is not listed: {pending}"));
    assert_eq!(listed["extension"]["duration"], "30m", "{listed}");
    assert_eq!(listed["extension"]["state"], "pending", "{listed}");
    let table = stdout(&demo.as_user(alice, &["list", "--pending"]));
    assert!(
        table.contains(&id) && table.contains("extend"),
        "the table says it is an extension: {table}"
    );

    // And on the approvals page, with what is asked and a form to decide.
    let mut browser = crate::web::Browser::new(&demo.server);
    browser.sign_in_demo(alice);
    let (status, page) = browser.get("/approvals");
    assert_eq!(status.as_u16(), 200);
    assert!(
        page.contains(&id) && page.contains("30m more") && page.contains("still on it"),
        "the extension is on /approvals: {page}"
    );

    demo.json(alice, &["approve", &id, "--comment", "ok, 30 more"]);
    let after = demo.json(dave, &["show", &id]);
    assert_ne!(after["expires_at"], before["expires_at"]);
    let text = stdout(&demo.as_user(dave, &["show", &id]));
    assert!(
        text.contains("90m (1h, extended by 30m)"),
        "show prints the new duration: {text}"
    );
    assert!(
        text.contains("go ahead") && text.contains("ok, 30 more"),
        "both comments: {text}"
    );
}

/// After a drop, `show` says removal is under way (not an alarm), and `list` shows when the
/// grant ended instead of a future expiry.
#[test]
fn a_dropped_grant_reads_calmly() {
    let demo = Demo::start();
    let (dave, alice) = ("dave@example.com", "alice@example.com");
    let r = demo.json(
        dave,
        &["request", "prod-ssh", "--for", "2h", "--reason", "INC-10"],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    demo.json(alice, &["approve", &id]);
    wait_until("the grant to apply", || {
        demo.json(dave, &["show", &id])["state"] == "active"
    });
    let out = demo.as_user(dave, &["drop", &id]);
    let text = stdout(&out);
    assert!(
        !text.contains("not yet removed"),
        "a normal drop is not an alarm: {text}"
    );
    let listed = stdout(&demo.as_user(dave, &["list", "--mine"]));
    let row = listed
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains("ended"), "the row shows when it ended: {row}");
}

/// `demo --listen PORT` takes a bare port, and the favicon is not a JSON 404.
#[test]
fn the_demo_takes_a_bare_port_and_has_a_favicon() {
    use std::io::BufRead;
    let port = crate::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["demo", "--listen", &port.to_string(), "--for-seconds", "20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut server = String::new();
    let mut hint = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(url) = line.trim().strip_prefix("server:") {
            server = url.trim().to_owned();
        }
        if line.contains("prod-access") {
            hint = line.clone();
            break;
        }
    }
    assert_eq!(server, format!("http://127.0.0.1:{port}"));
    assert!(
        !hint.contains("curl -s") || !hint.contains("/emulator/state |"),
        "the hint shows the group, not the whole state: {hint}"
    );
    let r = reqwest::blocking::get(format!("{server}/favicon.ico")).unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("image/"),
        "{:?}",
        r.headers()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A misspelt entitlement gets "did you mean".
#[test]
fn a_misspelt_entitlement_gets_a_suggestion() {
    let demo = Demo::start();
    let out = demo.as_user(
        "dave@example.com",
        &["request", "prod-shh", "--for", "1h", "--reason", "INC-11"],
    );
    assert_ne!(out.status.code(), Some(0));
    let err = crate::stderr(&out);
    assert!(err.contains("did you mean \"prod-ssh\"?"), "{err}");
    let out = demo.as_user(
        "dave@example.com",
        &["request", "zzz", "--for", "1h", "--reason", "INC-11"],
    );
    assert!(
        !crate::stderr(&out).contains("did you mean"),
        "nothing close"
    );
}

/// The request page is titled by what it is, tells its story in sentences with the comments,
/// and lets a requester cancel their own pending request.
#[test]
fn the_request_page_tells_the_story_and_cancels() {
    let demo = Demo::start();
    let (carol, alice) = ("carol@example.com", "alice@example.com");
    let denied = demo.json(
        carol,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-12"],
    );
    let denied = denied["id"].as_str().unwrap().to_owned();
    demo.json(alice, &["deny", &denied, "--comment", "use staging"]);
    let mut browser = crate::web::Browser::new(&demo.server);
    browser.sign_in_demo(carol);
    let (_, page) = browser.get(&format!("/requests/{denied}"));
    assert!(
        page.contains("<title>prod-ssh for carol@example.com"),
        "titled by what it is: {page}"
    );
    assert!(
        page.contains("alice@example.com denied: use staging"),
        "the timeline in sentences, with the comment: {page}"
    );

    let pending = demo.json(
        carol,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-13"],
    );
    let pending = pending["id"].as_str().unwrap().to_owned();
    let (_, page) = browser.get(&format!("/requests/{pending}"));
    assert!(page.contains("value=\"cancel\""), "a cancel button: {page}");
    let token = crate::web::csrf(&page);
    let r = browser.post(
        &format!("/requests/{pending}/act"),
        &[("csrf", &token), ("action", "cancel")],
    );
    assert!(r.status().is_redirection(), "{}", r.status());
    assert_eq!(demo.json(carol, &["show", &pending])["state"], "cancelled");
}

/// Claiming an auth key in the web UI: a POST answered by a redirect to a page that shows the
/// key once, with the `tailscale up` line; reloading shows no key; claiming again is refused.
#[test]
fn an_auth_key_is_claimed_in_the_web_ui_and_shown_once() {
    let demo = Demo::start();
    let alice = "alice@example.com";
    // ci-runner-key: group:sre may request it and approve their own.
    let r = demo.json(
        alice,
        &[
            "request",
            "ci-runner-key",
            "--for",
            "30m",
            "--reason",
            "runner",
        ],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    if r["state"] != "approved" {
        demo.json(alice, &["approve", &id]);
    }
    let mut browser = crate::web::Browser::new(&demo.server);
    browser.sign_in_demo(alice);
    let (_, page) = browser.get(&format!("/requests/{id}"));
    assert!(page.contains("value=\"claim\""), "a claim button: {page}");
    let r = browser.post(
        &format!("/requests/{id}/act"),
        &[("csrf", &crate::web::csrf(&page)), ("action", "claim")],
    );
    assert!(r.status().is_redirection(), "{}", r.status());
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let (status, shown) = browser.get(&location);
    assert_eq!(status.as_u16(), 200);
    assert!(
        shown.contains("tskey-auth-") && shown.contains("tailscale up --auth-key="),
        "the key, once, with the command: {shown}"
    );
    let (_, again) = browser.get(&location);
    assert!(!again.contains("tskey-auth-"), "not shown twice: {again}");
    let (_, page) = browser.get(&format!("/requests/{id}"));
    assert!(
        !page.contains("value=\"claim\""),
        "no claim button once active"
    );
    let r = browser.post(
        &format!("/requests/{id}/act"),
        &[("csrf", &crate::web::csrf(&page)), ("action", "claim")],
    );
    let text = r.text().unwrap();
    assert!(
        text.contains("already claimed") || text.contains("only be claimed once"),
        "{text}"
    );
}

/// `list` filters by state, entitlement, requester and count, and prints times relative to now
/// (UTC with `--utc`).
#[test]
fn list_filters_and_reads_times_relatively() {
    let demo = Demo::start();
    let (dave, carol, alice) = ("dave@example.com", "carol@example.com", "alice@example.com");
    let first = demo.json(
        dave,
        &["request", "prod-ssh", "--for", "2h", "--reason", "INC-1"],
    );
    let first = first["id"].as_str().unwrap().to_owned();
    demo.json(
        carol,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-2"],
    );
    demo.json(
        dave,
        &[
            "request",
            "network-admin",
            "--for",
            "1h",
            "--reason",
            "INC-3",
        ],
    );
    demo.json(alice, &["approve", &first]);
    wait_until("the grant to apply", || {
        demo.json(dave, &["show", &first])["state"] == "active"
    });
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["list"];
        all.extend_from_slice(args);
        demo.json(alice, &all)["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r["requester"].as_str().unwrap(),
                    r["entitlement"].as_str().unwrap(),
                    r["state"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        ids(&["--state", "active"]),
        vec!["dave@example.com prod-ssh active"]
    );
    assert_eq!(
        ids(&["--entitlement", "network-admin"]),
        vec!["dave@example.com network-admin pending"]
    );
    assert_eq!(
        ids(&["--requester", carol]),
        vec!["carol@example.com prod-ssh pending"]
    );
    assert_eq!(
        ids(&[
            "--state",
            "pending,active",
            "--entitlement",
            "prod-ssh",
            "--limit",
            "1"
        ])
        .len(),
        1
    );
    let bad = demo.as_user(alice, &["list", "--state", "sleeping"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        crate::stderr(&bad).contains("sleeping"),
        "{}",
        crate::stderr(&bad)
    );

    let table = stdout(&demo.as_user(dave, &["list", "--mine", "--state", "active"]));
    assert!(
        table.contains("in 1 h 59 min") || table.contains("in 2 h"),
        "relative: {table}"
    );
    let utc = stdout(&demo.as_user(dave, &["list", "--mine", "--state", "active", "--utc"]));
    assert!(utc.contains("Z") && !utc.contains(" in "), "UTC: {utc}");
    let shown = stdout(&demo.as_user(dave, &["show", &first]));
    assert!(
        shown.contains("expires") && (shown.contains("in 1 h 59 min") || shown.contains("in 2 h")),
        "{shown}"
    );
}

/// `request --wait` blocks until the grant is active (exit 0), denied (exit 1), or the wait
/// times out (exit 3).
#[test]
fn request_wait_exits_with_the_outcome() {
    let demo = Demo::start();
    let (dave, alice) = ("dave@example.com", "alice@example.com");
    let waiting = |reason: &'static str, extra: &'static [&'static str]| {
        let mut args = vec![
            "request", "prod-ssh", "--for", "1h", "--reason", reason, "--wait",
        ];
        args.extend_from_slice(extra);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"));
        cmd.args(&args)
            .env("TIDEGATE_SERVER", &demo.server)
            .env("TIDEGATE_TOKEN", &demo.tokens[dave])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let pending_of = |reason: &str| -> String {
        let mut found = String::new();
        wait_until("the request to be listed", || {
            let list = demo.json(alice, &["list", "--pending"]);
            if let Some(r) = list["requests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["reason"] == reason)
            {
                found = r["id"].as_str().unwrap().to_owned();
                true
            } else {
                false
            }
        });
        found
    };

    let approved = waiting("INC-W1", &[]);
    let id = pending_of("INC-W1");
    demo.json(alice, &["approve", &id]);
    let out = approved.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    assert!(
        crate::stderr(&out).contains("active"),
        "{}",
        crate::stderr(&out)
    );

    let denied = waiting("INC-W2", &[]);
    let id = pending_of("INC-W2");
    demo.json(alice, &["deny", &id, "--comment", "use staging"]);
    let out = denied.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", crate::stderr(&out));
    assert!(
        crate::stderr(&out).contains("use staging"),
        "{}",
        crate::stderr(&out)
    );

    let out = waiting("INC-W3", &["--wait-timeout", "2s"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", crate::stderr(&out));
    assert!(
        crate::stderr(&out).contains("still pending"),
        "{}",
        crate::stderr(&out)
    );

    let out = demo.as_user(dave, &["request", "prod-sh", "--reason", "x", "--wait"]);
    assert_eq!(out.status.code(), Some(2), "{}", crate::stderr(&out));
}

/// Completions and a man page come from clap's generators; server commands do not offer the
/// client's flags.
#[test]
fn completions_man_page_and_help() {
    for shell in ["bash", "zsh", "fish"] {
        let out = crate::tidegate(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout(&out).contains("request"), "{shell}");
    }
    let man = crate::tidegate(&["man"]);
    assert!(
        stdout(&man).starts_with(".ie") || stdout(&man).contains(".TH tidegate"),
        "{}",
        stdout(&man)
    );
    let dir = std::env::temp_dir().join(format!("tidegate-man-{}", std::process::id()));
    assert_eq!(
        crate::tidegate(&["man", "--output", dir.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    assert!(dir.join("tidegate-request.1").exists() && dir.join("tidegate.1").exists());
    let _ = std::fs::remove_dir_all(&dir);
    let serve = stdout(&crate::tidegate(&["serve", "--help"]));
    assert!(
        !serve.contains("--server") && !serve.contains("--token"),
        "{serve}"
    );
    let request = stdout(&crate::tidegate(&["request", "--help"]));
    assert!(
        request.contains("--server") && request.contains("--wait"),
        "{request}"
    );
}

/// The preview follows the chosen device, refuses a tagged server by its name (not a node ID),
/// and says when no approval is needed; the same read model in the API and the CLI.
#[test]
fn the_preview_follows_the_device_and_the_approvals() {
    let demo = Demo::start();
    let (alice, dave) = ("alice@example.com", "dave@example.com");
    let laptop = demo.json(alice, &["preview", "prod-db", "--device", "alice-laptop"]);
    assert_eq!(
        laptop["for_devices"],
        serde_json::json!(["alice-laptop"]),
        "{laptop}"
    );
    assert_eq!(laptop["auto_approved"], true, "alice is an SRE: {laptop}");
    assert_eq!(laptop["approvals"], 0);
    let names: Vec<&str> = laptop["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alice-laptop"], "no tagged servers offered");
    let gives = laptop["gives"].to_string();
    assert!(gives.contains("5432"), "{gives}");

    let refused = demo.as_user(alice, &["preview", "prod-db", "--device", "db-1"]);
    assert_ne!(refused.status.code(), Some(0));
    let why = crate::stderr(&refused);
    assert!(
        why.contains("db-1") && why.contains("alice-laptop") && !why.contains("node"),
        "{why}"
    );

    let text = stdout(&demo.as_user(dave, &["preview", "prod-ssh"]));
    assert!(
        text.contains("1 from group:sre") && text.contains("TCP 22"),
        "{text}"
    );
    let text = stdout(&demo.as_user(alice, &["preview", "prod-db"]));
    assert!(text.contains("none needed"), "{text}");
}

/// Who has access right now, per managed group, with why; the demo's hint command.
#[test]
fn access_overview_and_break_glass_review() {
    let demo = Demo::start();
    let (alice, dave, carol) = ("alice@example.com", "dave@example.com", "carol@example.com");
    let r = demo.json(
        dave,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-7"],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    demo.json(alice, &["approve", &id]);
    wait_until("the grant to apply", || {
        demo.json(dave, &["show", &id])["state"] == "active"
    });
    let access = demo.json(alice, &["access", "--group", "group:prod-access"]);
    let members = &access["groups"][0]["members"];
    assert_eq!(members[0]["login"], dave, "{access}");
    assert_eq!(members[0]["because"], "grant");
    assert_eq!(members[0]["requests"][0], id.as_str());
    let text = stdout(&demo.as_user(alice, &["access", "--group", "group:prod-access"]));
    assert!(
        text.contains("dave@example.com") && text.contains(&id),
        "{text}"
    );
    let refused = demo.as_user(dave, &["access"]);
    assert_ne!(refused.status.code(), Some(0));

    // Break glass, then the after-the-fact review.
    let bg = demo.json(
        carol,
        &["request", "prod-db", "--reason", "outage", "--break-glass"],
    );
    let bg = bg["id"].as_str().unwrap().to_owned();
    let list = demo.json(alice, &["break-glass", "list"]);
    assert_eq!(list["requests"][0]["id"], bg.as_str(), "{list}");
    let no_note = demo.as_user(alice, &["break-glass", "review", &bg, "--note", " "]);
    assert_ne!(no_note.status.code(), Some(0));
    let not_auditor = demo.as_user(dave, &["break-glass", "review", &bg, "--note", "fine"]);
    assert_ne!(not_auditor.status.code(), Some(0));
    let done = demo.json(
        alice,
        &[
            "break-glass",
            "review",
            &bg,
            "--note",
            "outage INC-8 confirmed",
        ],
    );
    assert_eq!(done["break_glass_review"]["reviewer"], alice, "{done}");
    let again = demo.as_user(alice, &["break-glass", "review", &bg, "--note", "again"]);
    assert!(
        crate::stderr(&again).contains("already reviewed"),
        "{}",
        crate::stderr(&again)
    );
    let table = stdout(&demo.as_user(alice, &["break-glass", "list"]));
    assert!(table.contains("reviewed by alice@example.com"), "{table}");
}
