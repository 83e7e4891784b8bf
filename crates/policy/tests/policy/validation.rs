//! Every validation message the control plane is known to give (policy-semantics §4), from a
//! policy that provokes it.

use policy::{Engine, Inventory, Policy};

const TAGS: &str =
    r#""tagOwners": {"tag:server": ["odin@example.com"], "tag:exit": ["odin@example.com"]}"#;

fn message(body: &str) -> String {
    let text = if body.contains("tagOwners") {
        format!("{{{body}}}")
    } else {
        format!("{{{TAGS}, {body}}}")
    };
    let inventory: Inventory = serde_json::from_value(serde_json::json!({
        "users": [{"id": "1", "loginName": "odin@example.com", "role": "owner"}],
        "devices": [],
    }))
    .unwrap();
    match Policy::parse(&text).and_then(|p| Engine::build(p, &inventory)) {
        Ok(_) => "accepted".to_owned(),
        Err(e) => e.api_message(),
    }
}

#[test]
fn messages_match_the_control_plane() {
    let cases: &[(&str, &str)] = &[
        (
            r#""acls": [{"action": "accept", "src": ["tag:nonexistent"], "dst": ["*:*"]}]"#,
            r#"src=tag not found: "tag:nonexistent""#,
        ),
        (
            r#""acls": [{"action": "accept", "src": ["*"], "dst": ["tag:nonexistent:22"]}]"#,
            r#"dst="tag:nonexistent": tag not found: "tag:nonexistent""#,
        ),
        (
            r#""nodeAttrs": [{"target": ["tag:undefined-tag"], "attr": ["funnel"]}]"#,
            r#"tag not found: "tag:undefined-tag""#,
        ),
        (
            r#""grants": [{"src": ["*"], "dst": ["10.0.0.0/8"], "ip": ["*"], "via": ["tag:nonexistent"]}]"#,
            r#"tag "tag:nonexistent" not found"#,
        ),
        (
            r#""grants": [{"src": ["*"], "dst": ["10.0.0.0/8"], "ip": ["*"], "via": ["odin@example.com"]}]"#,
            "via can only be a tag",
        ),
        (
            r#""acls": [{"action": "accept", "src": ["autogroup:self"], "dst": ["*:*"]}]"#,
            r#""autogroup:self" not valid on the src side of a rule"#,
        ),
        (
            r#""acls": [{"action": "accept", "src": ["tag:server"], "dst": ["autogroup:self:*"]}]"#,
            "autogroup:self can only be used with users, groups, or supported autogroups",
        ),
        (
            r#""acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:self"]}]"#,
            r#"dst="autogroup:self": port range "self": invalid first integer"#,
        ),
        (
            r#""acls": [{"action": "accept", "src": ["*"], "dst": ["tag:server:ssh"]}]"#,
            r#"dst="tag:server:ssh": port range "ssh": invalid first integer"#,
        ),
        (
            r#""grants": [{"src": ["*"], "dst": ["*"], "ip": ["icmp"]}]"#,
            r#"port range "icmp": invalid first integer"#,
        ),
        (
            r#""grants": [{"src": ["*"], "dst": ["*"], "ip": ["0"]}]"#,
            r#"port range "0": first port must be >0, or use '*' for wildcard"#,
        ),
        (
            r#""acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]"#,
            r#"action="deny" is not supported"#,
        ),
        (
            r#""grants": [{"src": ["*"], "dst": ["*"]}]"#,
            "ip and app can not both be empty",
        ),
        (
            r#""grants": [{"src": ["*"], "dst": ["*"], "app": {"nodomain": [{}]}}]"#,
            "capability name must have the form {domain}/{path}",
        ),
        (
            r#""grants": [{"src": ["*"], "dst": ["*"], "app": {"tailscale.com/cap/secret-sauce": [{}]}}]"#,
            "capability name must not be in the tailscale.com domain",
        ),
        (
            r#""grants": [{"src": ["*"], "dst": ["autogroup:danger-all"], "ip": ["*"]}]"#,
            "cannot use autogroup:danger-all as a dst",
        ),
        (
            r#""grants": [{"src": ["*"], "dst": ["autogroup:internet"], "app": {"example.com/cap/x": [{}]}}]"#,
            "cannot use app grants with autogroup:internet",
        ),
        (
            r#""grants": [{"src": ["*"], "dst": ["0.0.0.0/0"], "ip": ["*"]}]"#,
            r#"dst "0.0.0.0/0": to allow all IP addresses, use "*" or "autogroup:internet""#,
        ),
        (
            r#""grants": [{"src": ["*"], "dst": ["::/0"], "ip": ["*"]}]"#,
            r#"dst "::/0": to allow all IP addresses, use "*" or "autogroup:internet""#,
        ),
        (
            r#""groups": {"group:a": ["odin@example.com"], "group:b": ["group:a"]}"#,
            r#"groups["group:b"]: "group:a": group members cannot be recursive"#,
        ),
        (r#""groups": {"group:x": []}"#, "accepted"),
        (
            r#""hosts": {"srv": "100.64.0.1"}, "ssh": [{"action": "accept", "src": ["*"], "dst": ["srv"], "users": ["root"]}]"#,
            r#"invalid dst "srv""#,
        ),
        (
            r#""ssh": [{"action": "deny", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"]}]"#,
            r#""deny" is not a valid action"#,
        ),
        (
            r#""ssh": [{"src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"]}]"#,
            "action must be specified",
        ),
        (
            r#""ssh": [{"action": "accept", "src": ["odin@example.com"], "dst": ["tag:server"]}]"#,
            "users must be specified",
        ),
        (
            r#""ssh": [{"action": "accept", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["*"]}]"#,
            r#"user "*" is not valid"#,
        ),
        (
            r#""ssh": [{"action": "accept", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"], "acceptEnv": [""]}]"#,
            "acceptEnv values cannot be empty",
        ),
        (
            r#""ssh": [{"action": "check", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"], "checkPeriod": "168h0m1s"}]"#,
            "checkPeriod 168h0m1s is above the max (168h)",
        ),
        (
            r#""ssh": [{"action": "check", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"], "checkPeriod": "-1m"}]"#,
            "checkPeriod -1m0s must be a positive duration",
        ),
        (
            r#""ssh": [{"action": "check", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"], "checkPeriod": "abc"}]"#,
            r#"time: invalid duration "abc""#,
        ),
        (
            r#""ssh": [{"action": "accept", "src": ["user:*@example.org"], "dst": ["tag:server"], "users": ["root"]}]"#,
            "[ssh] example.org is not associated with this Tailnet and cannot be used in user:*@<domain> expressions",
        ),
        (
            r#""acls": [{"action": "accept", "src": ["user:*@example.org"], "dst": ["*:*"]}]"#,
            "example.org is not associated with this Tailnet and cannot be used in user:*@<domain> expressions",
        ),
        (
            r#""nodeAttrs": [{"target": ["%bogus%"], "attr": ["funnel"]}]"#,
            r#""%bogus%": invalid address"#,
        ),
        (
            r#""nodeAttrs": [{"target": ["*"], "attr": ["x"], "ipPool": ["100.100.100.0/24"]}]"#,
            "IPPool(100.100.100.0/24): network within reserved range",
        ),
        (
            r#""nodeAttrs": [{"target": ["autogroup:self"], "attr": ["x"]}]"#,
            "internal server error",
        ),
        (
            r#""sshTests": [{"src": "odin@example.com", "dst": ["100.64.0.0/24"], "accept": ["root"]}]"#,
            r#"SSH tests dst contains disallowed element "100.64.0.0/24""#,
        ),
        (
            r#""sshTests": [{"src": "odin@example.com", "dst": ["tag:server:22"], "accept": ["root"]}]"#,
            r#"SSH tests dst contains unknown tag "tag:server:22""#,
        ),
        (
            r#""tagOwners": {"tag:1abc": []}"#,
            r#"tagOwners["tag:1abc"]: tag names must start with a letter, after 'tag:'"#,
        ),
    ];
    let mut wrong = Vec::new();
    for (body, want) in cases {
        let got = message(body);
        if got != *want {
            wrong.push(format!("{body}\n   got  {got}\n   want {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
