//! What an operator reads: the server's log over a whole lifecycle with faults has a line for
//! every change and every error, and none of the secrets the run created.

use crate::{Demo, stdout, wait_until};

fn control(emulator: &str, path: &str, body: Option<serde_json::Value>) {
    let http = reqwest::blocking::Client::new();
    let r = match body {
        Some(b) => http.post(format!("{emulator}/emulator/{path}")).json(&b),
        None => http.delete(format!("{emulator}/emulator/{path}")),
    }
    .send()
    .unwrap();
    assert!(r.status().is_success());
}

#[test]
fn the_log_tells_what_happened_and_never_a_secret() {
    let dir = std::env::temp_dir().join(format!("tidegate-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let demo = Demo::start_with(&["--log-format", "json"], log.into());
    let dave = "dave@example.com";
    let alice = "alice@example.com";

    // A grant applied through failing policy writes (retried), then dropped.
    control(
        &demo.emulator,
        "faults",
        Some(
            serde_json::json!({"status": 503, "count": 4, "method": "POST", "path": "/tailnet/-/acl"}),
        ),
    );
    let r = demo.json(
        dave,
        &["request", "prod-ssh", "--for", "1h", "--reason", "INC-4211"],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    demo.json(alice, &["approve", &id, "--comment", "go"]);
    demo.wait_for(dave, &id, |r| r["state"] == "active");
    demo.json(dave, &["drop", &id]);
    demo.wait_for(dave, &id, |r| {
        r["tailnet"]["removal_verified_at"].is_string()
    });
    control(&demo.emulator, "faults", None);

    // An auth key, claimed: its secret must never be logged.
    let k = demo.json(alice, &["request", "ci-runner-key", "--reason", "runner 7"]);
    let key_request = k["id"].as_str().unwrap().to_owned();
    demo.json(alice, &["approve", &key_request]);
    let claimed = demo.as_user(alice, &["key", &key_request]);
    let auth_key = stdout(&claimed).trim().to_owned();
    assert!(auth_key.starts_with("tskey-auth-"), "{auth_key}");

    // A web session.
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = http
        .post(format!("{}/login", demo.server))
        .form(&[("user", dave), ("next", "/")])
        .send()
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let session = cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();

    let read = || std::fs::read_to_string(&log_path).unwrap();
    wait_until("the removal is logged", || {
        read().contains("grant.removal_verified")
    });
    let text = read();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let has = |message: &str, request: Option<&str>| {
        lines.iter().any(|l| {
            l["message"] == message && request.is_none_or(|r| l["request"].as_str() == Some(r))
        })
    };
    assert!(has("starting", None), "{text}");
    assert!(has("became the leader: running the reconciler", None));
    for step in [
        "request.created",
        "request.approved",
        "grant.applied",
        "grant.dropped",
        "grant.removal_verified",
    ] {
        assert!(has(step, Some(&id)), "no {step} line for {id}:\n{text}");
    }
    assert!(has("tailnet API call failed", None), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "tailnet API call failed" && l["status"] == "unavailable"),
        "{text}"
    );
    assert!(has("reconcile pass", None));
    assert!(has("policy written", None));

    // No secret the run created or used.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::example("emulator-state.json")).unwrap(),
    )
    .unwrap();
    let mut secrets: Vec<String> = demo.tokens.values().cloned().collect();
    secrets.push(auth_key);
    secrets.push(session);
    for t in state["apiTokens"].as_array().unwrap() {
        secrets.push(t["token"].as_str().unwrap().to_owned());
    }
    for c in state["oauthClients"].as_array().into_iter().flatten() {
        if let Some(s) = c["secret"].as_str() {
            secrets.push(s.to_owned());
        }
    }
    for secret in &secrets {
        assert!(secret.len() > 8);
        // Also a distinctive tail, in case a secret were logged cut or re-encoded.
        let tail = &secret[secret.len() - 12..];
        assert!(
            !text.contains(secret.as_str()) && !text.contains(tail),
            "a secret is in the log"
        );
    }
    drop(demo);
    let _ = std::fs::remove_dir_all(&dir);
}
