//! Who may see and do what, and bad input, as users and attackers meet them over the API and
//! the CLI. Each test reproduces an observation from the trust issue.

use std::process::Command;

use crate::{Demo, stderr, stdout, tidegate};

fn api(
    demo: &Demo,
    login: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::blocking::Client::new()
        .request(method, format!("{}{path}", demo.server))
        .bearer_auth(&demo.tokens[login]);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{method_path} answered non-JSON {text:?}: {e}",
            method_path = path
        )
    });
    (status, json)
}

#[test]
fn requests_are_seen_only_by_those_involved() {
    let demo = Demo::start();
    let (carol, dave, alice) = ("carol@example.com", "dave@example.com", "alice@example.com");
    let r = demo.json(
        carol,
        &[
            "request",
            "prod-ssh",
            "--for",
            "1h",
            "--reason",
            "private INC-1",
        ],
    );
    let id = r["id"].as_str().unwrap().to_owned();

    // dave is neither its requester, nor an approver, nor an admin: it does not exist for him.
    let (status, body) = api(
        &demo,
        dave,
        reqwest::Method::GET,
        &format!("/api/requests/{id}"),
        None,
    );
    assert_eq!(status, 404, "{body}");
    let listed = demo.json(dave, &["list"]);
    assert!(
        !listed.to_string().contains(&id) && !listed.to_string().contains("private INC-1"),
        "{listed}"
    );
    let approve = demo.as_user(dave, &["approve", &id]);
    assert_ne!(approve.status.code(), Some(0));
    assert!(
        stderr(&approve).contains("no request"),
        "{}",
        stderr(&approve)
    );
    // Its requester and its approvers see it.
    assert_eq!(demo.json(carol, &["show", &id])["id"], id.as_str());
    assert_eq!(demo.json(alice, &["show", &id])["reason"], "private INC-1");
}

#[test]
fn drop_is_for_ones_own_grant_and_revoke_for_anothers() {
    let demo = Demo::start();
    let (dave, alice) = ("dave@example.com", "alice@example.com");
    let r = demo.json(
        dave,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-2"],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    demo.json(alice, &["approve", &id]);
    demo.wait_for(dave, &id, |r| r["state"] == "active");

    let dropped = demo.as_user(alice, &["drop", &id]);
    assert_ne!(dropped.status.code(), Some(0));
    assert!(
        stderr(&dropped).contains("revoke"),
        "says to use revoke: {}",
        stderr(&dropped)
    );
    assert_eq!(
        demo.json(dave, &["show", &id])["state"],
        "active",
        "nothing changed"
    );
    let revoked = demo.json(alice, &["revoke", &id, "--reason", "incident over"]);
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["end_reason"], "incident over");
}

#[test]
fn tokens_are_for_tailnet_users_listed_and_revoked_by_id() {
    let demo = Demo::start();
    let dave = "dave@example.com";
    let mine = demo.json(dave, &["token", "list"]);
    let tokens = mine["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1, "{mine}");
    let id = tokens[0]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("tok_"));
    assert_eq!(tokens[0]["kind"], "api");
    assert!(
        !mine.to_string().contains(&demo.tokens[dave]),
        "never the secret"
    );
    let table = demo.as_user(dave, &["token", "list"]);
    assert!(
        stdout(&table).contains("LAST USED") && stdout(&table).contains(&id),
        "{}",
        stdout(&table)
    );

    // Someone else's token cannot be revoked through the API.
    let (status, _) = api(
        &demo,
        "carol@example.com",
        reqwest::Method::DELETE,
        &format!("/api/tokens/{id}"),
        None,
    );
    assert_eq!(status, 404);
    let revoked = demo.as_user(dave, &["token", "revoke", &id]);
    assert_eq!(revoked.status.code(), Some(0), "{}", stderr(&revoked));
    let after = demo.as_user(dave, &["whoami"]);
    assert_eq!(after.status.code(), Some(2), "the token no longer works");
}

#[test]
fn a_token_is_created_only_for_a_user_of_the_tailnet() {
    let emu = crate::Deployment::new("token-users", |c| c);
    let out = tidegate(&[
        "token",
        "create",
        "--config",
        emu.config(),
        "--user",
        "mallory@evil.example",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("mallory@evil.example is not a user of the tailnet"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "no token printed");
    let ok = tidegate(&[
        "token",
        "create",
        "--config",
        emu.config(),
        "--user",
        "dave@example.com",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).starts_with("tg_"));
    // An operator on the server lists and revokes anyone's tokens, by id.
    let listed = tidegate(&[
        "token",
        "list",
        "--config",
        emu.config(),
        "--user",
        "dave@example.com",
        "--json",
    ]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let id = listed["tokens"][0]["id"].as_str().unwrap().to_owned();
    let args = |id: &str| {
        tidegate(&[
            "token",
            "revoke",
            id,
            "--config",
            emu.config(),
            "--user",
            "dave@example.com",
        ])
    };
    let revoked = args(&id);
    assert_eq!(revoked.status.code(), Some(0), "{}", stderr(&revoked));
    assert!(stdout(&revoked).contains(&format!("revoked {id} (api) of dave@example.com")));
    let again = args(&id);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("has no token"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn input_that_would_crash_or_deceive_is_refused_clearly() {
    let demo = Demo::start();
    let dave = "dave@example.com";
    for huge in ["18446744073709551615s", "99999999d"] {
        let out = demo.as_user(
            dave,
            &["request", "prod-ssh", "--for", huge, "--reason", "x"],
        );
        assert_eq!(out.status.code(), Some(1), "{huge}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("longer than ten years"),
            "{huge}: {}",
            stderr(&out)
        );
    }
    let out = demo.as_user(
        dave,
        &[
            "request",
            "prod-ssh",
            "--reason",
            "INC-9\n\u{1b}[2K\u{1b}[1Aapproved by alice",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("control character"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains('\u{1b}'), "never echoed raw");

    // A 1.9 MB reason: refused before it is read whole.
    let big = serde_json::json!({"entitlement": "prod-ssh", "reason": "x".repeat(1_900_000)});
    let (status, body) = api(
        &demo,
        dave,
        reqwest::Method::POST,
        "/api/requests",
        Some(big.to_string()),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("larger than"));
    let long = serde_json::json!({"entitlement": "prod-ssh", "reason": "x".repeat(1001)});
    let (status, body) = api(
        &demo,
        dave,
        reqwest::Method::POST,
        "/api/requests",
        Some(long.to_string()),
    );
    assert_eq!(status, 400, "{body}");

    // Bad query strings and paths get JSON errors too.
    let (status, body) = api(
        &demo,
        dave,
        reqwest::Method::GET,
        "/api/requests?limit=many",
        None,
    );
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("query"), "{body}");
    let (status, body) = api(
        &demo,
        dave,
        reqwest::Method::GET,
        "/api/requests/%FF%FE",
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string());
    let (status, _) = api(&demo, dave, reqwest::Method::GET, "/api/nothing-here", None);
    assert_eq!(status, 404);

    assert_eq!(
        demo.json(dave, &["list", "--mine"])["requests"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing was created"
    );
}

#[test]
fn standing_members_are_kept_reported_and_removed_only_once_adopted() {
    let d = crate::Deployment::new("standing", |c| c);
    // The group already has people in it before tidegate manages it (remove_drift = true).
    let state = crate::http_get(&format!("{}/emulator/state", d.emulator_url)).unwrap();
    let policy = state["policy"].as_str().unwrap().replace(
        "\"group:prod-access\": []",
        "\"group:prod-access\": [\"bob@example.com\", \"carol@example.com\"]",
    );
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/emulator/policy", d.emulator_url))
        .body(policy)
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let alice = d.token("alice@example.com");
    let mut server = d.serve();
    let listed = d.cli(&alice, &["standing"]);
    let standing = listed["groups"][0]["standing"].clone();
    assert_eq!(
        standing,
        serde_json::json!(["bob@example.com", "carol@example.com"]),
        "{listed}"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        d.members(),
        ["bob@example.com", "carol@example.com"],
        "kept"
    );

    let out = tidegate(&["adopt", "group:prod-access", "--config", d.config()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("bob@example.com, carol@example.com no longer standing"));
    crate::wait_until("the former standing members to be removed", || {
        d.members().is_empty()
    });
    let dave = d.token("dave@example.com");
    let refused = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["standing"])
        .env("TIDEGATE_SERVER", d.server_url())
        .env("TIDEGATE_TOKEN", &dave)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "members are not auditors");
    let _ = server.kill();
    let _ = server.wait();
}
