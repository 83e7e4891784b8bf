//! Cases the recorded vectors do not cover, checked against Tailscale's documented semantics
//! (shared reference `policy-semantics.md`, cited per test as §N).

use policy::{Engine, Inventory, Policy};
use serde_json::{Value, json};

/// Three users (odin and freya in the tailnet's domain example.com, thor in example.org) and
/// devices of each kind: user devices, tagged servers and clients, a subnet router for
/// 10.33.0.0/16, an approved exit node and an exit node whose exit routes are not approved.
fn inventory() -> Inventory {
    serde_json::from_value(json!({
        "users": [
            {"id": "1", "loginName": "odin@example.com", "role": "owner"},
            {"id": "2", "loginName": "thor@example.org"},
            {"id": "3", "loginName": "freya@example.com"},
        ],
        "devices": [
            {"name": "bulbasaur", "user": "odin@example.com", "tags": [],
             "addresses": ["100.64.0.1", "fd7a:115c:a1e0::1"]},
            {"name": "ivysaur", "user": "thor@example.org", "tags": [],
             "addresses": ["100.64.0.2", "fd7a:115c:a1e0::2"]},
            {"name": "venusaur", "user": "freya@example.com", "tags": [],
             "addresses": ["100.64.0.3", "fd7a:115c:a1e0::3"]},
            {"name": "beedrill", "tags": ["tag:server"],
             "addresses": ["100.64.0.10", "fd7a:115c:a1e0::a"]},
            {"name": "weedle", "tags": ["tag:client"],
             "addresses": ["100.64.0.11", "fd7a:115c:a1e0::b"]},
            {"name": "squirtle", "tags": ["tag:router"],
             "addresses": ["100.64.0.12", "fd7a:115c:a1e0::c"],
             "advertisedRoutes": ["10.33.0.0/16"], "enabledRoutes": ["10.33.0.0/16"]},
            {"name": "charmander", "tags": ["tag:exit"],
             "addresses": ["100.64.0.13", "fd7a:115c:a1e0::d"],
             "advertisedRoutes": ["0.0.0.0/0", "::/0"], "enabledRoutes": ["0.0.0.0/0", "::/0"]},
            {"name": "pidgey", "tags": ["tag:exit"],
             "addresses": ["100.64.0.14", "fd7a:115c:a1e0::e"],
             "advertisedRoutes": ["0.0.0.0/0", "::/0"], "enabledRoutes": []},
        ],
    }))
    .unwrap()
}

const TAG_OWNERS: &str = r#""tagOwners": {
    "tag:server": ["odin@example.com"], "tag:client": ["odin@example.com"],
    "tag:router": ["odin@example.com"], "tag:exit": ["odin@example.com"]}"#;

fn build(body: &str) -> Result<Engine, policy::PolicyError> {
    let text = format!("{{{TAG_OWNERS}, {body}}}");
    Engine::build(Policy::parse(&text)?, &inventory())
}

fn engine(body: &str) -> Engine {
    build(body).unwrap()
}

fn filter(engine: &Engine, device: &str) -> Value {
    serde_json::to_value(engine.packet_filter(device).unwrap()).unwrap()
}

/// §3.8: a rule whose sources select nothing produces nothing, also for app capabilities
/// (including the reversed `drive-sharer` companion of §3.5.6).
#[test]
fn app_grant_from_an_empty_group_reaches_nobody() {
    let e = engine(
        r#""groups": {"group:empty": []}, "grants": [
        {"src": ["group:empty"], "dst": ["*"], "app": {"tailscale.com/cap/drive": [{"shares": ["*"]}]}},
        {"src": ["group:empty"], "dst": ["tag:server"], "app": {"example.com/cap/x": [{}]}},
        {"src": ["group:empty"], "dst": ["autogroup:self"], "app": {"example.com/cap/y": [{}]}}]"#,
    );
    for device in e.device_names().map(str::to_owned).collect::<Vec<_>>() {
        assert_eq!(filter(&e, &device), json!([]), "{device}");
    }
}

/// §3.5.7 + §3.5.6: a `via` grant lands only on the via-tagged routers whose approved routes
/// overlap the destination, with the literal destination prefix; for an app grant that prefix
/// is the CapGrant's `Dsts`. A destination that is not a prefix (a tag) selects nothing.
#[test]
fn app_grant_through_a_via_router() {
    let e = engine(
        r#""grants": [
        {"src": ["tag:client"], "dst": ["10.33.0.0/16"], "app": {"example.com/cap/x": [{}]}, "via": ["tag:router"]},
        {"src": ["tag:client"], "dst": ["10.33.1.5"], "app": {"example.com/cap/y": [1]}, "via": ["tag:router"]},
        {"src": ["tag:client"], "dst": ["tag:server"], "app": {"example.com/cap/z": [{}]}, "via": ["tag:router"]}]"#,
    );
    let client = json!(["100.64.0.11", "fd7a:115c:a1e0::b"]);
    assert_eq!(
        filter(&e, "squirtle"),
        json!([
            {"SrcIPs": client, "CapGrant": [{"Dsts": ["10.33.0.0/16"], "CapMap": {"example.com/cap/x": [{}]}}]},
            {"SrcIPs": client, "CapGrant": [{"Dsts": ["10.33.1.5/32"], "CapMap": {"example.com/cap/y": [1]}}]},
        ])
    );
    for device in ["beedrill", "weedle", "charmander", "bulbasaur"] {
        assert_eq!(filter(&e, device), json!([]), "{device}");
    }
}

/// §3.6 + §3.5.4: with `*` sources, an `autogroup:self` rule is narrowed per device to the
/// owner's own addresses; a later rule whose sources are exactly those addresses (a per-user
/// rule) has identical SrcIPs, so it merges into the self rule at the self rule's place, as
/// two self rules do in acl-s10.
#[test]
fn self_rule_with_wildcard_sources_merges_with_a_later_per_user_rule() {
    let odin = json!(["100.64.0.1", "fd7a:115c:a1e0::1"]);
    let all = |ip: &str| json!({"IP": ip, "Ports": {"First": 0, "Last": 65535}});
    let ssh = |ip: &str| json!({"IP": ip, "Ports": {"First": 22, "Last": 22}});
    let e = engine(
        r#""acls": [
        {"action": "accept", "src": ["*"], "dst": ["autogroup:self:*"]},
        {"action": "accept", "src": ["odin@example.com"], "dst": ["autogroup:member:22"]}]"#,
    );
    assert_eq!(
        filter(&e, "bulbasaur"),
        json!([{"SrcIPs": odin, "DstPorts": [
            all("100.64.0.1"), all("fd7a:115c:a1e0::1"),
            ssh("100.64.0.1"), ssh("fd7a:115c:a1e0::1"),
        ]}])
    );
    // On thor's device the sources differ (thor's own vs odin's): two rules.
    assert_eq!(
        filter(&e, "ivysaur"),
        json!([
            {"SrcIPs": ["100.64.0.2", "fd7a:115c:a1e0::2"],
             "DstPorts": [all("100.64.0.2"), all("fd7a:115c:a1e0::2")]},
            {"SrcIPs": odin, "DstPorts": [ssh("100.64.0.2"), ssh("fd7a:115c:a1e0::2")]},
        ])
    );
    // The other order already merged: the self rule joins the per-user rule's place.
    let e = engine(
        r#""acls": [
        {"action": "accept", "src": ["odin@example.com"], "dst": ["autogroup:member:22"]},
        {"action": "accept", "src": ["*"], "dst": ["autogroup:self:*"]}]"#,
    );
    assert_eq!(
        filter(&e, "bulbasaur"),
        json!([{"SrcIPs": odin, "DstPorts": [
            ssh("100.64.0.1"), ssh("fd7a:115c:a1e0::1"),
            all("100.64.0.1"), all("fd7a:115c:a1e0::1"),
        ]}])
    );
}

/// §3.3 + §3.5.5(c): `autogroup:internet` reaches only devices with *approved* exit routes,
/// which get all seven public ranges; advertised-but-unapproved routes count for nothing. The
/// control plane does not re-approve advertised routes from the policy's `autoApprovers` on
/// a policy write (acl-au01, acl-h03 and 11 more vectors record an auto-approvable route left
/// unapproved), so approval is read from the inventory's `enabledRoutes`, not from
/// `autoApprovers.exitNode`. `*` as a source never includes exit routes (§2).
#[test]
fn internet_destinations_follow_approved_exit_routes_not_exit_node_approvers() {
    let e = engine(
        r#""autoApprovers": {"exitNode": ["tag:exit"], "routes": {"0.0.0.0/0": ["tag:router"]}},
        "grants": [{"src": ["autogroup:member"], "dst": ["autogroup:internet"], "ip": ["tcp:443"]}],
        "acls": [{"action": "accept", "src": ["*"], "dst": ["tag:server:22"]}]"#,
    );
    let port = |ip: &str| json!({"IP": ip, "Ports": {"First": 443, "Last": 443}});
    assert_eq!(
        filter(&e, "charmander"),
        json!([{
            "SrcIPs": ["100.64.0.1", "100.64.0.2", "100.64.0.3",
                       "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2", "fd7a:115c:a1e0::3"],
            "DstPorts": [
                port("0.0.0.0-9.255.255.255"), port("11.0.0.0-100.63.255.255"),
                port("100.128.0.0-169.253.255.255"), port("169.255.0.0-172.15.255.255"),
                port("172.32.0.0-192.167.255.255"), port("192.169.0.0-255.255.255.255"),
                port("2000::/3"),
            ],
            "IPProto": [6],
        }])
    );
    // Named by `exitNode`, advertising 0/0 and ::/0, but not approved.
    assert_eq!(filter(&e, "pidgey"), json!([]));
    // A subnet router with a private route is not on the internet.
    assert_eq!(filter(&e, "squirtle"), json!([]));
    let server = filter(&e, "beedrill");
    assert_eq!(
        server[0]["SrcIPs"],
        json!([
            "10.33.0.0/16",
            "100.115.94.0-100.127.255.255",
            "100.64.0.0-100.115.91.255",
            "fd7a:115c:a1e0::/48"
        ])
    );
}

fn ssh(engine: &Engine, device: &str) -> Vec<(Vec<String>, Value)> {
    let rules = engine.device_wire(device).unwrap().ssh_rules;
    rules
        .into_iter()
        .map(|r| {
            let principals = r.principals.into_iter().map(|p| p.node_ip).collect();
            (principals, serde_json::to_value(r.ssh_users).unwrap())
        })
        .collect()
}

/// §3.9: `localpart:*@<domain>` maps, per source *user* of that domain, the login's local
/// part, in a rule right after that user's common rule; tagged sources have no login, so they
/// get only the common users, in one rule placed last. A `localpart:` entry without
/// `*@<domain>` is not a mapping but a literal unix name (ssh-malformed-user-localpart-no-at,
/// -no-glob), and so is `localpart:*`.
#[test]
fn ssh_localpart_with_tagged_sources_and_without_a_domain() {
    let e = engine(
        r#""ssh": [
        {"action": "accept", "src": ["tag:client", "odin@example.com", "thor@example.org"],
         "dst": ["tag:server"], "users": ["localpart:*@example.com", "ubuntu"]},
        {"action": "accept", "src": ["tag:client"], "dst": ["tag:server"],
         "users": ["localpart:*"]}],
        "sshTests": [
            {"src": "odin@example.com", "dst": ["tag:server"], "accept": ["odin", "ubuntu"]},
            {"src": "tag:client", "dst": ["tag:server"], "accept": ["ubuntu", "localpart:*"],
             "deny": ["odin", "weedle"]},
            {"src": "thor@example.org", "dst": ["tag:server"], "deny": ["thor"]}]"#,
    );
    assert_eq!(e.run_tests(), vec![]);
    let ip = |a: &str, b: &str| vec![a.to_owned(), b.to_owned()];
    let odin = ip("100.64.0.1", "fd7a:115c:a1e0::1");
    let thor = ip("100.64.0.2", "fd7a:115c:a1e0::2");
    let weedle = ip("100.64.0.11", "fd7a:115c:a1e0::b");
    let common = json!({"root": "", "ubuntu": "ubuntu"});
    assert_eq!(
        ssh(&e, "beedrill"),
        vec![
            (odin.clone(), common.clone()),
            (odin, json!({"odin": "odin"})),
            (thor, common.clone()),
            (weedle.clone(), common),
            (weedle, json!({"root": "", "localpart:*": "localpart:*"})),
        ]
    );
    // Tagged devices have no owner, so the localpart rule does not reach them as it reaches
    // the source users' own devices.
    assert_eq!(ssh(&e, "weedle"), vec![]);
}

/// §3.10: a `tests` destination is one host and one port; a host alias bound to one address
/// and a bare address pass, in a policy with `grants` and no `acls` too
/// (policytest-allpass-grants-only-tag-src-ip-literal-dst). Only the destination's own address
/// family is checked: a host alias names one address, not the device's other one.
#[test]
fn tests_with_host_alias_and_single_address_destinations_in_a_grants_only_policy() {
    let body = |tests: &str| {
        format!(
            r#""hosts": {{"webserver": "100.64.0.10", "webserver6": "fd7a:115c:a1e0::a",
                          "printer": "10.33.1.5", "lan": "10.33.0.0/16"}},
            "grants": [
                {{"src": ["tag:client"], "dst": ["webserver", "printer"], "ip": ["tcp:80"]}},
                {{"src": ["tag:client"], "dst": ["100.64.0.1"], "ip": ["tcp:22"]}}],
            "tests": [{tests}]"#
        )
    };
    let passing = body(
        r#"{"src": "tag:client",
            "accept": ["webserver:80", "100.64.0.1:22", "printer:80"],
            "deny": ["webserver:22", "webserver6:80", "100.64.0.1:80", "[fd7a:115c:a1e0::1]:22"]}"#,
    );
    assert_eq!(engine(&passing).run_tests(), vec![]);
    for failing in [
        // The grant names the IPv4 address only; the tag is both of the device's addresses
        // and the engine wants every source address through (headscale's rule; the reference
        // marks the control plane's multi-address semantics UNCONFIRMED).
        r#"{"src": "tag:client", "accept": ["tag:server:80"]}"#,
        r#"{"src": "tag:client", "deny": ["webserver:80"]}"#,
        r#"{"src": "tag:client", "accept": ["lan:80"]}"#,
        r#"{"src": "tag:client", "accept": ["webserver:80,443"]}"#,
    ] {
        let failures = engine(&body(failing)).run_tests();
        assert_eq!(failures.len(), 1, "{failing}");
    }
}

fn refusal(body: &str) -> String {
    match build(body) {
        Ok(_) => "accepted".to_owned(),
        Err(e) => e.api_message(),
    }
}

/// §4: an unknown tag in an ACL destination is reported with the alias, not the port
/// (`dst="tag:nonexistent": tag not found: "tag:nonexistent"`), while a bad port is reported
/// with the whole destination (`dst="tag:server:ssh": port range "ssh": ...`, acl-err07). In
/// `sshTests` the whole entry is named (`SSH tests dst contains unknown tag "tag:server:22"`).
#[test]
fn unknown_tag_written_with_a_port() {
    assert_eq!(
        refusal(r#""acls": [{"action": "accept", "src": ["*"], "dst": ["tag:nope:22"]}]"#),
        r#"dst="tag:nope": tag not found: "tag:nope""#
    );
    assert_eq!(
        refusal(r#""acls": [{"action": "accept", "src": ["*"], "dst": ["tag:nope:22,80"]}]"#),
        r#"dst="tag:nope": tag not found: "tag:nope""#
    );
    assert_eq!(
        refusal(r#""acls": [{"action": "accept", "src": ["*"], "dst": ["tag:nope:ssh"]}]"#),
        r#"dst="tag:nope:ssh": port range "ssh": invalid first integer"#
    );
    assert_eq!(
        refusal(
            r#""sshTests": [{"src": "odin@example.com", "dst": ["tag:server:22"], "accept": ["root"]}]"#
        ),
        r#"SSH tests dst contains unknown tag "tag:server:22""#
    );
}

/// A policy file that is not UTF-8 is a syntax error at the first bad byte, with the line and
/// (byte) column every other syntax error has (§1: columns counted in bytes), so the CLI can
/// print FILE:LINE:COL for it.
#[test]
fn a_policy_that_is_not_utf8_is_a_syntax_error_with_line_and_column() {
    let mut bytes = b"{\n  \"groups\": {\n    \"group:a\": [\"".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b"@example.com\"]}\n}\n");
    let err = Policy::parse_bytes(&bytes).unwrap_err();
    assert_eq!(
        err,
        policy::PolicyError::Syntax {
            line: 3,
            column: 18,
            reason: "invalid UTF-8".into()
        }
    );
    assert_eq!(err.to_string(), "line 3, column 18: invalid UTF-8");
    // A truncated multi-byte character at the very end, after a valid document.
    let err = Policy::parse_bytes(b"{}\n\xe2\x82").unwrap_err();
    assert!(
        matches!(
            err,
            policy::PolicyError::Syntax {
                line: 2,
                column: 1,
                ..
            }
        ),
        "{err:?}"
    );
    // Valid UTF-8 parses exactly as text does, errors included.
    let text = "{\"acls\": [], // é\n}";
    assert_eq!(
        Policy::parse_bytes(text.as_bytes())
            .unwrap()
            .file
            .acls
            .map(|a| a.len()),
        Some(0)
    );
    assert_eq!(
        Policy::parse_bytes(b"{\n 'x'}").unwrap_err(),
        Policy::parse("{\n 'x'}").unwrap_err()
    );
}
