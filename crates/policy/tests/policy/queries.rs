//! Queries, tests and validation on the shipped example tailnet.

use std::path::Path;

use policy::{Engine, Inventory, Policy, PolicyError, Section};

fn example_text() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    std::fs::read_to_string(root.join("policy.hujson")).unwrap()
}

fn example_inventory() -> Inventory {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    serde_json::from_str(&std::fs::read_to_string(root.join("inventory.json")).unwrap()).unwrap()
}

fn engine(text: &str, inventory: &Inventory) -> Engine {
    Engine::build(Policy::parse(text).unwrap(), inventory).unwrap()
}

/// The line of the first occurrence of `needle` in `text` (1-based).
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

fn users(grantees: &[policy::Grantee]) -> Vec<String> {
    grantees
        .iter()
        .filter(|g| g.kind == "user")
        .map(|g| g.name.clone())
        .collect()
}

#[test]
fn example_policy_passes_its_own_tests() {
    let engine = policy::load(&example_text(), &example_inventory()).unwrap();
    assert!(engine.run_tests().is_empty());
}

#[test]
fn group_membership_added_by_a_hujson_edit_grants_production_access() {
    let text = example_text();
    let inventory = example_inventory();
    let before = engine(&text, &inventory);
    assert!(users(&before.who_can("db-1", 22, 6).unwrap()).is_empty());

    let mut doc = hujson::Document::parse(&text).unwrap();
    let path = [
        hujson::Seg::Key("groups"),
        hujson::Seg::Key("group:prod-access"),
    ];
    assert!(doc.add_string(&path, "carol@example.com").unwrap());
    let edited = doc.text().to_owned();
    // Comments survive the edit.
    assert!(edited.contains("// Managed by tidegate: members come and go"));

    let after = engine(&edited, &inventory);
    let who = after.who_can("db-1", 22, 6).unwrap();
    assert_eq!(users(&who), ["carol@example.com"]);
    let rule = who[0].rules[0];
    assert_eq!(rule.section, Section::Grants);
    assert_eq!(rule.index, 1);
    assert_eq!(
        rule.line,
        line_of(&edited, "\"src\": [\"group:prod-access\"]")
    );
    // Only the ports the grant names.
    assert!(after.who_can("db-1", 443, 6).unwrap().is_empty());
    // And SSH as ec2-user through the check rule.
    let carol = after.find_device("carol-laptop").unwrap();
    let db = after.find_device("db-1").unwrap();
    let (origin, check) = after.ssh_allows(carol, db, "ec2-user").unwrap();
    assert!(check, "the prod SSH rule is a check rule");
    assert_eq!(origin.section, Section::Ssh);
    assert!(after.ssh_allows(carol, db, "root").is_none());
}

#[test]
fn posture_attribute_gates_the_database_grant() {
    let text = example_text();
    let mut inventory = example_inventory();
    let without = engine(&text, &inventory);
    assert!(
        !without
            .explain("carol@example.com", "db-1", 5432, 6)
            .unwrap()
            .allowed
    );

    let laptop = inventory
        .devices
        .iter_mut()
        .find(|d| d.hostname == "carol-laptop")
        .unwrap();
    laptop
        .posture_attributes
        .insert("custom:tidegate_db".into(), serde_json::json!("granted"));
    let with = engine(&text, &inventory);
    let access = with.explain("carol@example.com", "db-1", 5432, 6).unwrap();
    assert!(access.allowed);
    assert_eq!(access.rules.len(), 1);
    assert_eq!(access.rules[0].line, line_of(&text, "\"srcPosture\""));
    assert_eq!(
        users(&with.who_can("db-1", 5432, 6).unwrap()),
        ["carol@example.com"]
    );
    // The posture opens the database port only, and only for that device's owner.
    assert!(
        !with
            .explain("carol@example.com", "db-1", 22, 6)
            .unwrap()
            .allowed
    );
    assert!(
        !with
            .explain("dave@example.com", "db-1", 5432, 6)
            .unwrap()
            .allowed
    );
}

#[test]
fn self_access_and_reach() {
    let engine = engine(&example_text(), &example_inventory());
    let own = engine
        .explain("carol@example.com", "carol-laptop", 8080, 6)
        .unwrap();
    assert!(own.allowed);
    assert_eq!(own.rules[0].section, Section::Acls);
    assert!(
        !engine
            .explain("carol@example.com", "dave-desktop", 8080, 6)
            .unwrap()
            .allowed
    );

    let reach = engine.reach("carol@example.com").unwrap();
    let staging = reach
        .iter()
        .find(|r| r.name == "staging-1.example.ts.net")
        .unwrap();
    assert_eq!(staging.ports, ["22", "443", "5432"]);
    assert!(reach.iter().all(|r| !r.name.starts_with("db-")));

    // Monitoring reaches node exporters, found through an alias as the source.
    let scrape = engine.explain("tag:monitoring", "db-2", 9100, 6).unwrap();
    assert!(scrape.allowed);
    // An ACL without `proto` allows the clients' default set (tcp, udp, icmp), not sctp.
    assert!(
        engine
            .explain("tag:monitoring", "db-2", 9100, 17)
            .unwrap()
            .allowed
    );
    assert!(
        !engine
            .explain("tag:monitoring", "db-2", 9100, 132)
            .unwrap()
            .allowed
    );
}

#[test]
fn unknown_names_in_queries_are_errors() {
    let engine = engine(&example_text(), &example_inventory());
    assert!(matches!(
        engine.who_can("no-such-host", 22, 6),
        Err(PolicyError::NotFound(_))
    ));
    assert!(matches!(
        engine.explain("mallory@evil.example", "db-1", 22, 6),
        Err(PolicyError::NotFound(_))
    ));
}

#[test]
fn failing_tests_say_which_and_why() {
    let text = example_text().replace(
        r#"{"src": "carol@example.com", "accept": ["tag:staging:22"], "deny": ["tag:monitoring:22"]},"#,
        r#"{"src": "carol@example.com", "accept": ["tag:prod:22"]},"#,
    );
    let err = policy::load(&text, &example_inventory()).unwrap_err();
    let PolicyError::TestsFailed(failures) = &err else {
        panic!("expected test failures, got {err:?}");
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].test, "tests[0]");
    assert!(
        failures[0].message.contains("tag:prod:22"),
        "{}",
        failures[0].message
    );
    assert_eq!(err.api_message(), "test(s) failed");
}

#[test]
fn errors_point_at_the_problem() {
    let err = Policy::parse("{\n  \"acls\": [\n    {\"action\": 'accept'}\n  ]\n}").unwrap_err();
    assert_eq!(
        err,
        PolicyError::Syntax {
            line: 3,
            column: 16,
            reason: "invalid character '\\'' at start of value".into()
        }
    );
    let err = Policy::parse(r#"{"acls": {"action": "accept"}}"#).unwrap_err();
    assert!(matches!(err, PolicyError::Shape { line: 1, .. }), "{err:?}");

    let inventory = example_inventory();
    let bad = example_text().replace(
        "\"dst\": [\"tag:staging:22\"]",
        "\"dst\": [\"tag:nope:22\"]",
    );
    let err = Engine::build(Policy::parse(&bad).unwrap(), &inventory).unwrap_err();
    assert_eq!(
        err.api_message(),
        r#"dst="tag:nope": tag not found: "tag:nope""#
    );

    let bad = example_text().replace("custom:tidegate_db == 'granted'", "custom:tidegate_db ~ 1");
    let err = Engine::build(Policy::parse(&bad).unwrap(), &inventory).unwrap_err();
    assert!(err.api_message().contains("posture:jit-db"), "{err}");
}

#[test]
fn compiled_filters_only_reach_their_destinations() {
    let engine = engine(&example_text(), &example_inventory());
    let all = engine.compile_all();
    let db = &all["db-1.example.ts.net"];
    // Monitoring's node-exporter rule reaches db-1; the staging grant does not.
    assert!(
        db.packet_filter
            .iter()
            .any(|r| r.dst_ports.iter().any(|p| p.ports.first == 9100))
    );
    assert!(
        db.packet_filter
            .iter()
            .all(|r| r.dst_ports.iter().all(|p| p.ports.first != 443))
    );
    // Every device's filter only names its own addresses as destinations.
    for (name, wire) in &all {
        let n = engine.find_device(name).unwrap();
        let own = engine.principal_ips(name).unwrap();
        for rule in &wire.packet_filter {
            for dst in &rule.dst_ports {
                let ip: std::net::IpAddr = match dst.ip.parse() {
                    Ok(ip) => ip,
                    Err(_) => continue, // networks and "*"
                };
                assert!(own.contains(&ip), "{name} ({n}) got a rule for {ip}");
            }
        }
    }
}
