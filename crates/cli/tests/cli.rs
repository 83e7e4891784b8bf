//! The `tidegate` binary as a user runs it: exit codes, messages, and output formats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(name: &str) -> String {
    repo().join("examples").join(name).display().to_string()
}

fn tidegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch file that lives as long as the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, content: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tidegate-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        Scratch(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn check_accepts_the_example_and_reports_syntax_errors_with_position() {
    let ok = tidegate(&["policy", "check", &example("policy.hujson")]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).ends_with(": ok\n"));

    let bad = Scratch::new(
        "syntax.hujson",
        "{\n  \"groups\": {\n    \"group:a\": [\"x@y\",,],\n  }\n}\n",
    );
    let out = tidegate(&["policy", "check", bad.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "{}:3:23: invalid character ',' at start of value",
            bad.path()
        )
    );
}

#[test]
fn check_reports_semantic_errors_in_tailscales_words() {
    let bad = Scratch::new(
        "semantic.hujson",
        r#"{"acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]}"#,
    );
    let out = tidegate(&["policy", "check", bad.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), r#"action="deny" is not supported"#);

    let bad = Scratch::new(
        "self-src.hujson",
        r#"{"grants": [{"src": ["autogroup:self"], "dst": ["*"], "ip": ["*"]}]}"#,
    );
    let out = tidegate(&["policy", "check", bad.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        r#""autogroup:self" not valid on the src side of a rule"#
    );
}

#[test]
fn io_and_usage_errors_exit_2() {
    let out = tidegate(&["policy", "check", "/nonexistent/policy.hujson"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read /nonexistent/policy.hujson"));

    let out = tidegate(&["policy", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));

    let out = tidegate(&[
        "policy",
        "who-can",
        &example("policy.hujson"),
        "--inventory",
        &example("inventory.json"),
        "--reach",
        "db-1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("expected DEVICE:PORT"));

    let inv = Scratch::new("bad-inventory.json", "{\"devices\": [{\"name\": 5}]}");
    let out = tidegate(&[
        "policy",
        "test",
        &example("policy.hujson"),
        "--inventory",
        inv.path(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not an inventory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn test_runs_the_files_tests_and_says_which_failed() {
    let ok = tidegate(&[
        "policy",
        "test",
        &example("policy.hujson"),
        "--inventory",
        &example("inventory.json"),
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}{}", stdout(&ok), stderr(&ok));
    assert!(stdout(&ok).contains("3 tests, 2 sshTests: 5 passed, 0 failed"));

    let text = std::fs::read_to_string(example("policy.hujson"))
        .unwrap()
        .replace(
            r#"{"src": "tag:ci", "accept": ["tag:staging:22"], "deny": ["tag:prod:22"]},"#,
            r#"{"src": "tag:ci", "accept": ["tag:prod:22"]},"#,
        );
    let failing = Scratch::new("failing.hujson", &text);
    let out = tidegate(&[
        "policy",
        "test",
        failing.path(),
        "--inventory",
        &example("inventory.json"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAIL tests[2]: tag:ci -> tag:prod:22"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("test(s) failed"));
}

#[test]
fn compile_prints_wire_format_per_device() {
    let out = tidegate(&[
        "policy",
        "compile",
        &example("policy.hujson"),
        "--inventory",
        &example("inventory.json"),
        "--device",
        "staging-1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let device = &json["staging-1"];
    let filter = device["packetFilter"].as_array().unwrap();
    assert!(!filter.is_empty());
    for rule in filter {
        assert!(rule["SrcIPs"].is_array());
        for dst in rule["DstPorts"].as_array().unwrap() {
            assert!(dst["Ports"]["First"].is_u64() && dst["IP"].is_string());
        }
    }
    // Engineers may SSH to staging as any non-root user.
    let ssh = device["sshRules"].as_array().unwrap();
    assert!(
        ssh.iter()
            .any(|r| r["sshUsers"]["*"] == "=" && r["action"]["accept"] == true)
    );

    let all = tidegate(&[
        "policy",
        "compile",
        &example("policy.hujson"),
        "--inventory",
        &example("inventory.json"),
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&all)).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 11);
}

#[test]
fn who_can_reach_and_explain_answer_in_tables_and_json() {
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "policy".into(),
            extra[0].into(),
            example("policy.hujson"),
            "--inventory".into(),
            example("inventory.json"),
        ];
        v.extend(extra[1..].iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        tidegate(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let table = run(&["who-can", "--reach", "staging-1:22"]);
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.starts_with("KIND"), "{text}");
    assert!(text.contains("carol@example.com"));
    assert!(text.contains("ci-runner.example.ts.net"));

    let json = run(&["who-can", "--reach", "staging-1:22", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"dave@example.com"));
    assert!(
        !names.contains(&"bob@example.com"),
        "bob is not an engineer: {names:?}"
    );

    let explain = run(&[
        "explain",
        "--src",
        "dave@example.com",
        "--dst",
        "staging-1:443",
    ]);
    let text = stdout(&explain);
    assert!(
        text.contains("ALLOWED") && text.contains("grants[0] (line 28)"),
        "{text}"
    );
    let denied = run(&[
        "explain",
        "--src",
        "dave@example.com",
        "--dst",
        "db-1:22",
        "--json",
    ]);
    let access: serde_json::Value = serde_json::from_str(&stdout(&denied)).unwrap();
    assert_eq!(access["allowed"], false);

    let reach = run(&["reach", "--from", "ci-runner", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&stdout(&reach)).unwrap();
    let targets: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        ["office-router.example.ts.net", "staging-1.example.ts.net"]
    );
}
