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
