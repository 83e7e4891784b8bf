//! Access reviews (issue 13) end to end: campaigns started with the CLI against a server on
//! the emulator over a socket, decided by the people the directory names, revocations removed
//! from the tailnet and verified, and the evidence written out.

use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Deployment, http_get, stderr, stdout, wait_until};

const PEOPLE: &str = "email,name,department,title,manager,status,terminated_at\n\
alice@example.com,Alice,SRE,Head of SRE,,active,\n\
bob@example.com,Bob,SRE,SRE,alice@example.com,active,\n\
carol@example.com,Carol,Engineering,Engineer,bob@example.com,active,\n\
dave@example.com,Dave,Sales,Account executive,carol@example.com,active,\n";

/// Standing paths to production: group:sre by a rule, carol and dave named in another.
fn deployment(name: &str) -> Deployment {
    deployment_with(name, "")
}

fn deployment_with(name: &str, extra: &str) -> Deployment {
    let d = Deployment::with_state(
        name,
        |mut state| {
            let policy = state["policy"].as_str().unwrap().replace(
                "\t\t// Monitoring scrapes everything it watches.",
                "\t\t{\"action\": \"accept\", \"src\": [\"group:sre\"], \"dst\": [\"tag:prod:443\"]},\n\
                 \t\t{\"action\": \"accept\", \"src\": [\"carol@example.com\", \"dave@example.com\"], \"dst\": [\"tag:prod:22\"]},\n\
                 \t\t// Monitoring scrapes everything it watches.",
            );
            state["policy"] = json!(policy);
            state
        },
        |t| {
            format!(
                "{t}\n[directory]\nfile = \"people.csv\"\n\n\
                 [[critical]]\nname = \"production\"\ntags = [\"tag:prod\"]\n{extra}"
            )
        },
    );
    std::fs::write(d.config.parent().unwrap().join("people.csv"), PEOPLE).unwrap();
    d
}

/// Runs a client command; its exit code, JSON output and standard error.
fn cli(d: &Deployment, token: &str, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .arg("--json")
        .env("TIDEGATE_SERVER", d.server_url())
        .env("TIDEGATE_TOKEN", token)
        .output()
        .unwrap();
    let value = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
    (out.status.code(), value, stderr(&out))
}

fn item<'a>(campaign: &'a Value, subject: &str, kind: &str) -> &'a Value {
    campaign["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["subject"] == subject && i["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} item for {subject} in {campaign:#}"))
}

fn line_of(policy: &str, needle: &str) -> usize {
    policy.lines().position(|l| l.contains(needle)).unwrap() + 1
}

fn policy(d: &Deployment) -> String {
    http_get(&format!("{}/emulator/state", d.emulator_url)).unwrap()["policy"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_campaign_is_decided_revoked_verified_and_exported() {
    let d = deployment("review");
    let before = policy(&d);
    let mut server = d.serve();
    let (alice, bob, carol) = (
        d.token("alice@example.com"),
        d.token("bob@example.com"),
        d.token("carol@example.com"),
    );

    // Only admins start campaigns; a bad scope says what to write.
    let (code, _, err) = cli(&d, &carol, &["review", "create", "Q4", "--scope", "roles"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not an admin"), "{err}");
    let (code, _, err) = cli(&d, &alice, &["review", "create", "Q4", "--scope", "prod"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("write group:NAME, roles, critical:NAME"),
        "{err}"
    );

    // The population: every standing path to production, one item per person per rule, the
    // group once; reviewers are managers, else the --reviewer.
    let (code, campaign, err) = cli(
        &d,
        &alice,
        &[
            "review",
            "create",
            "Q4 production",
            "--scope",
            "critical:production",
            "--due",
            "14d",
            "--reviewer",
            "bob@example.com",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let id = campaign["id"].as_str().unwrap().to_owned();
    assert_eq!(campaign["state"], "open");
    assert_eq!(campaign["created_by"], "alice@example.com");
    assert_eq!(
        campaign["items"].as_array().unwrap().len(),
        4,
        "{campaign:#}"
    );
    let sre_line = line_of(
        &before,
        "\"src\": [\"group:sre\"], \"dst\": [\"tag:prod:443\"]",
    );
    let named_line = line_of(
        &before,
        "\"src\": [\"carol@example.com\", \"dave@example.com\"]",
    );
    let alice_item = item(&campaign, "alice@example.com", "group");
    assert_eq!(
        alice_item["reviewer"], "bob@example.com",
        "no manager: the --reviewer"
    );
    assert!(
        alice_item["access"].as_str().unwrap().contains(&format!(
            "group:sre, which reaches production through acls[0] (line {sre_line})"
        )),
        "{alice_item}"
    );
    let bob_item = item(&campaign, "bob@example.com", "group");
    assert_eq!(bob_item["reviewer"], "alice@example.com", "bob's manager");
    let dave_item = item(&campaign, "dave@example.com", "rule");
    assert_eq!(dave_item["reviewer"], "carol@example.com");
    assert!(
        dave_item["access"]
            .as_str()
            .unwrap()
            .contains(&format!("acls[1] (line {named_line})")),
        "{dave_item}"
    );
    for key in [
        "decision",
        "reason",
        "decided_by",
        "decided_at",
        "revocation_verified_at",
    ] {
        assert_eq!(dave_item[key], Value::Null, "{key}");
    }
    let carol_item = item(&campaign, "carol@example.com", "rule");
    let item_id = |i: &Value| i["id"].as_str().unwrap().to_owned();
    let (alice_i, bob_i, carol_i, dave_i) = (
        item_id(alice_item),
        item_id(bob_item),
        item_id(carol_item),
        item_id(dave_item),
    );

    // Refused: an item that is not yours, your own access (even as an admin), a revoke with
    // no reason. Nothing is recorded.
    let (code, _, err) = cli(&d, &carol, &["review", "decide", &id, &alice_i, "--keep"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("reviewed by bob@example.com"), "{err}");
    let (code, _, err) = cli(&d, &bob, &["review", "decide", &id, &bob_i, "--keep"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("own access"), "{err}");
    let (code, _, err) = cli(&d, &alice, &["review", "decide", &id, &alice_i, "--keep"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("own access"), "{err}");
    let (code, _, err) = cli(&d, &carol, &["review", "decide", &id, &dave_i, "--revoke"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("needs a reason"), "{err}");
    // A reviewer (not an admin) sees only their items.
    let (_, carol_view, _) = cli(&d, &carol, &["review", "show", &id]);
    let visible: Vec<&Value> = carol_view["items"].as_array().unwrap().iter().collect();
    assert_eq!(visible.len(), 1, "{carol_view:#}");
    assert_eq!(visible[0]["subject"], "dave@example.com");
    let (_, mine, _) = cli(&d, &carol, &["review", "mine"]);
    assert_eq!(mine["campaigns"][0]["items"][0]["id"], dave_i.as_str());

    // Carol revokes dave, bob revokes carol and keeps alice; alice keeps bob.
    let (code, decided, err) = cli(
        &d,
        &carol,
        &[
            "review",
            "decide",
            &id,
            &dave_i,
            "--revoke",
            "--reason",
            "no longer on call",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(decided["items"][0]["decision"], "revoke");
    assert_eq!(decided["items"][0]["decided_by"], "carol@example.com");
    let (code, _, err) = cli(
        &d,
        &bob,
        &[
            "review",
            "decide",
            &id,
            &carol_i,
            "--revoke",
            "--reason",
            "no longer on call",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cli(
        &d,
        &bob,
        &[
            "review",
            "decide",
            &id,
            &alice_i,
            "--keep",
            "--reason",
            "runs the on-call rota",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cli(
        &d,
        &carol,
        &["review", "decide", &id, &dave_i, "--keep", "--reason", "x"],
    );
    assert_eq!(code, Some(1), "decided once: {err}");
    let (code, _, err) = cli(
        &d,
        &alice,
        &[
            "review",
            "decide",
            &id,
            &bob_i,
            "--revoke",
            "--reason",
            "moved to sales",
        ],
    );
    assert_eq!(code, Some(0), "{err}");

    // The revocations are made and verified; the rule stays with "src": []; the campaign
    // closes by itself once all is verified.
    let mut shown = Value::Null;
    wait_until("the revocations verified", || {
        shown = cli(&d, &alice, &["review", "show", &id]).1;
        shown["state"] == "closed"
    });
    for i in [&dave_i, &carol_i, &bob_i] {
        let it = shown["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| &x["id"] == i)
            .unwrap();
        assert!(it["revocation_verified_at"].is_string(), "{it}");
    }
    let after = policy(&d);
    assert!(
        after.contains("{\"action\": \"accept\", \"src\": [], \"dst\": [\"tag:prod:22\"]}"),
        "{after}"
    );
    assert!(
        after.contains("\"group:sre\": [\"alice@example.com\"]"),
        "bob is out of group:sre: {after}"
    );
    let (code, closed, err) = cli(&d, &alice, &["review", "close", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["progress"]["revocations_verified"], 3);

    // The evidence: four files, each hashed in the manifest, with the chain head.
    let out_dir = d.dir.join("evidence");
    let (code, _, err) = cli(
        &d,
        &alice,
        &[
            "review",
            "export",
            &id,
            "--output",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("manifest.json")).unwrap())
            .unwrap();
    let files = manifest["files"].as_object().unwrap();
    assert_eq!(files.len(), 3);
    for name in ["report.html", "items.csv", "items.json"] {
        let bytes = std::fs::read(out_dir.join(name)).unwrap();
        assert_eq!(files[name], hex(&Sha256::digest(&bytes)), "{name}");
    }
    assert!(manifest["generated_at"].is_string() && manifest["tool_version"].is_string());
    let head = manifest["audit_chain_head"].as_str().unwrap();
    let audit: Value = reqwest::blocking::Client::new()
        .get(format!("{}/api/audit?limit=1000", d.server_url()))
        .bearer_auth(&alice)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let exported = entries
        .iter()
        .find(|e| e["action"] == "review.exported")
        .unwrap();
    assert_eq!(exported["hash"], head, "the head is the export's own entry");
    for action in [
        "review.created",
        "review.decided",
        "review.revoking",
        "review.revocation_verified",
        "review.closed",
    ] {
        assert!(entries.iter().any(|e| e["action"] == action), "{action}");
    }
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(html.contains("Access review: Q4 production") && html.contains("dave@example.com"));
    assert!(html.contains("undecided items are kept") && html.contains("@media print"));
    assert!(
        !html.contains("src=\"http") && !html.contains("<link"),
        "self-contained"
    );
    let csv = std::fs::read_to_string(out_dir.join("items.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.contains("no longer on call"));
    // One format: that file and the manifest.
    let only_csv = d.dir.join("csv-only");
    let (code, _, _) = cli(
        &d,
        &alice,
        &[
            "review",
            "export",
            &id,
            "--format",
            "csv",
            "--output",
            only_csv.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0));
    let mut names: Vec<String> = std::fs::read_dir(&only_csv)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["items.csv", "manifest.json"]);

    // The period's evidence, from the operator's command line.
    let period = d.dir.join("period");
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args([
            "evidence",
            "--config",
            d.config(),
            "--from",
            "2020-01-01",
            "--to",
            "2100-01-01",
            "--output",
            period.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let campaigns: Value =
        serde_json::from_str(&std::fs::read_to_string(period.join("campaigns.json")).unwrap())
            .unwrap();
    assert_eq!(campaigns[0]["id"], id.as_str());
    for name in [
        "report.html",
        "grants.csv",
        "grants.json",
        "checks.json",
        "manifest.json",
    ] {
        assert!(period.join(name).exists(), "{name}");
    }
    let _ = server.kill();
    let _ = server.wait();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Roles and keys: past the due date, `review close` applies the campaign's revoke rule; the
/// owner's role and tidegate's own credential are kept (revoking them is refused), bob's admin
/// role goes to member, verified.
#[test]
fn past_due_the_rule_decides_and_protected_access_stays() {
    let d = deployment_with(
        "review-due",
        "\n[[review_schedule]]\nname = \"quarterly-sre\"\nscope = \"group:sre\"\nevery = \"90d\"\n\
         due_in = \"14d\"\nreviewer = \"group:sre\"\n",
    );
    let mut server = d.serve();
    let alice = d.token("alice@example.com");
    // The schedule starts its first campaign by itself.
    let mut scheduled = Value::Null;
    wait_until("the scheduled campaign", || {
        scheduled = cli(&d, &alice, &["review", "list"]).1;
        scheduled["campaigns"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    });
    let first = &scheduled["campaigns"][0];
    assert_eq!(first["schedule"], "quarterly-sre");
    assert_eq!(first["created_by"], "tidegate");
    assert_eq!(first["progress"]["items"], 2);
    let (code, campaign, err) = cli(
        &d,
        &alice,
        &[
            "review", "create", "Admins", "--scope", "roles", "keys", "--due", "1s", "--on-due",
            "revoke",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let id = campaign["id"].as_str().unwrap().to_owned();
    let owner = item(&campaign, "alice@example.com", "role");
    assert!(
        owner["protected"]
            .as_str()
            .unwrap()
            .contains("transferring ownership")
    );
    let own_key = campaign["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "key" && i["protected"].is_string())
        .unwrap_or_else(|| panic!("tidegate's own token is listed: {campaign:#}"));
    let bob_token = d.token("bob@example.com");
    let (code, _, err) = cli(
        &d,
        &bob_token,
        &[
            "review",
            "decide",
            &id,
            own_key["id"].as_str().unwrap(),
            "--revoke",
            "--reason",
            "x",
        ],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot be revoked"), "{err}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, closed, err) = cli(&d, &alice, &["review", "close", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(closed["state"], "closed");
    assert!(
        closed["close_note"]
            .as_str()
            .unwrap()
            .contains("by the campaign's rule")
    );
    let bob = item(&closed, "bob@example.com", "role");
    assert_eq!(bob["decision"], "revoke");
    assert_eq!(bob["decided_by"], "tidegate");
    assert!(bob["revocation_verified_at"].is_string());
    assert_eq!(
        item(&closed, "alice@example.com", "role")["decision"],
        "keep"
    );
    let state = http_get(&format!("{}/emulator/state", d.emulator_url)).unwrap();
    let role = |login: &str| {
        state["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["loginName"] == login)
            .unwrap()["role"]
            .clone()
    };
    assert_eq!(role("bob@example.com"), "member");
    assert_eq!(role("alice@example.com"), "owner");
    // The CI OAuth client was revoked by the rule: deleted, and verified gone.
    let client = campaign["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["target"] == "kCiClient1CNTRL")
        .unwrap_or_else(|| panic!("the OAuth client is reviewed: {campaign:#}"));
    let client = item(&closed, client["subject"].as_str().unwrap(), "key");
    assert!(client["revocation_verified_at"].is_string(), "{client}");
    let oauth = &state["oauthClients"][0];
    assert_eq!(oauth["id"], "kCiClient1CNTRL");
    assert!(oauth["revoked"].is_string(), "{oauth}");
    // tidegate still works: its own token was kept.
    let (code, _, err) = cli(&d, &alice, &["review", "list"]);
    assert_eq!(code, Some(0), "{err}");
    let _ = server.kill();
    let _ = server.wait();
}

/// The web pages: an admin starts a campaign from a form, the reviewer keeps both items with
/// one reason (checkboxes), the campaign closes, and the evidence downloads match their
/// manifest.
#[test]
fn a_campaign_through_the_web_pages() {
    use crate::web::{Browser, csrf};
    let demo = crate::Demo::start();
    let mut alice = Browser::new(&demo.server);
    alice.sign_in_demo("alice@example.com");
    let (status, page) = alice.get("/reviews");
    assert_eq!(status, 200);
    assert!(
        page.contains("Start a campaign") && page.contains("No access review has been started.")
    );
    let token = csrf(&page);
    // A bad scope shows the form again with the error and what was typed.
    let r = alice.post(
        "/reviews",
        &[
            ("csrf", &token),
            ("name", "Web"),
            ("scope", "nonsense"),
            ("due", "14d"),
            ("on_due", "keep"),
        ],
    );
    assert_eq!(r.status(), 400);
    let page = r.text().unwrap();
    assert!(
        page.contains("write group:NAME") && page.contains("value=\"nonsense\""),
        "{page}"
    );
    let r = alice.post(
        "/reviews",
        &[
            ("csrf", &token),
            ("name", "SRE membership"),
            ("scope", "group:sre"),
            ("due", "14d"),
            ("reviewer", "carol@example.com"),
            ("on_due", "keep"),
        ],
    );
    assert_eq!(r.status(), 303, "{}", r.text().unwrap());
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    let id = to
        .trim_start_matches("/reviews/")
        .split('?')
        .next()
        .unwrap()
        .to_owned();

    // Carol, a member, sees her two items and keeps both at once.
    let mut carol = Browser::new(&demo.server);
    carol.sign_in_demo("carol@example.com");
    let (_, page) = carol.get("/reviews");
    assert!(page.contains("2</strong> items to decide"), "{page}");
    let (status, page) = carol.get(&format!("/reviews/{id}?show=mine"));
    assert_eq!(status, 200);
    assert_eq!(
        page.matches("type=\"checkbox\" name=\"item\"").count(),
        2,
        "{page}"
    );
    assert!(!page.contains("Close the campaign"), "members do not close");
    let token = csrf(&page);
    let r = carol.post(
        &format!("/reviews/{id}/decide"),
        &[
            ("csrf", &token),
            ("item", "i1"),
            ("item", "i2"),
            ("action", "revoke"),
            ("reason", ""),
        ],
    );
    assert_eq!(r.status(), 400, "a revoke needs a reason");
    assert!(r.text().unwrap().contains("needs a reason"));
    let r = carol.post(
        &format!("/reviews/{id}/decide"),
        &[
            ("csrf", &token),
            ("item", "i1"),
            ("item", "i2"),
            ("action", "keep"),
            ("reason", "both on call"),
        ],
    );
    assert_eq!(r.status(), 303);
    let (_, page) = carol.get(&format!("/reviews/{id}"));
    assert!(
        page.contains("state-ended") && page.contains("both on call"),
        "{page}"
    );

    // The evidence downloads: the manifest's hashes match the files of the same export.
    let (_, page) = alice.get(&format!("/reviews/{id}"));
    let link = |file: &str| {
        let at = page.find(&format!("/export/{file}?")).unwrap();
        let start = page[..at].rfind('"').unwrap() + 1;
        let end = at + page[at..].find('"').unwrap();
        page[start..end].replace("&amp;", "&")
    };
    let (report_link, manifest_link) = (link("report.html"), link("manifest.json"));
    let (status, report) = alice.get(&report_link);
    assert_eq!(status, 200);
    assert!(report.contains("both on call"));
    let (_, manifest) = alice.get(&manifest_link);
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(
        manifest["files"]["report.html"],
        hex(&Sha256::digest(report.as_bytes()))
    );
    assert_eq!(manifest["campaign"], id.as_str());
    let (status, _) = carol.get(&report_link);
    assert_eq!(status, 403, "members do not export");
}
