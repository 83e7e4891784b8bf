//! Access ends on time, every time: overlapping grants on one target, crashes between a
//! tailnet write and its record, and failures that must be visible. Each test reproduces an
//! observation from the trust issue.

use super::*;

fn role_of(w: &World, login: &str) -> String {
    w.emu
        .state()
        .users
        .iter()
        .find(|u| u.login_name == login)
        .unwrap()
        .role
        .clone()
}

async fn ask(
    w: &World,
    login: &str,
    entitlement: &str,
    duration: &str,
    devices: &[&str],
) -> String {
    w.service
        .create(
            &who(&w.service, login).await,
            NewRequest {
                entitlement: entitlement.into(),
                reason: "INC-4211".into(),
                duration: Some(duration.parse().unwrap()),
                devices: devices.iter().map(|d| d.to_string()).collect(),
                ..NewRequest::default()
            },
        )
        .await
        .unwrap()
        .id
}

async fn approve(w: &World, id: &str) {
    w.service
        .approve(&who(&w.service, "alice@example.com").await, id, "ok")
        .await
        .unwrap();
}

async fn clear_faults(w: &World) {
    reqwest::Client::new()
        .delete(format!("{}/emulator/faults", w.emu.url()))
        .send()
        .await
        .unwrap();
}

async fn audit_actions(w: &World, request: Option<&str>) -> Vec<String> {
    w.store
        .audit(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| request.is_none_or(|r| e.request.as_deref() == Some(r)))
        .map(|e| e.action)
        .collect()
}

#[tokio::test]
async fn overlapping_role_grants_leave_no_standing_role() {
    let w = World::new().await;
    let carol = "carol@example.com";
    let first = ask(&w, carol, "network-admin", "1h", &[]).await;
    approve(&w, &first).await;
    w.pass().await;
    assert_eq!(role_of(&w, carol), "network-admin");
    w.advance(30);
    let second = ask(&w, carol, "network-admin", "1h", &[]).await;
    approve(&w, &second).await;
    w.pass().await;
    let second_stored = w
        .service
        .get(
            &operator(&w.service, "tidegate-test-operator").await,
            &second,
        )
        .await
        .unwrap();
    assert_eq!(second_stored.state, State::Active);
    assert_eq!(
        second_stored.tailnet.previous_role.as_deref(),
        Some("member"),
        "the own role, not the first grant's raised role"
    );
    w.advance(30);
    w.pass().await;
    let first_stored = w
        .service
        .get(
            &operator(&w.service, "tidegate-test-operator").await,
            &first,
        )
        .await
        .unwrap();
    assert_eq!(first_stored.state, State::Expired);
    assert!(first_stored.tailnet.removal_verified_at.is_some());
    assert_eq!(
        role_of(&w, carol),
        "network-admin",
        "the second grant still holds"
    );
    w.advance(30);
    w.pass().await;
    assert_eq!(
        role_of(&w, carol),
        "member",
        "no standing role once both end"
    );
    w.audit_verifies().await;
}

fn tags_of(w: &World, host: &str) -> Vec<String> {
    w.emu
        .state()
        .devices
        .iter()
        .find(|d| d.device.hostname == host)
        .unwrap()
        .device
        .tags
        .clone()
}

/// The `tag` strategy: the device is a target; overlapping grants keep the tag until the last
/// ends, then the device's own tags come back; a change made by someone else wins.
#[tokio::test]
async fn overlapping_tag_grants_keep_the_tag_and_restore_the_devices_own_tags() {
    let w = World::new().await;
    let dave = "dave@example.com";
    let long = ask(&w, dave, "monitoring-tag", "2h", &["dave-desktop"]).await;
    approve(&w, &long).await;
    w.pass().await;
    assert_eq!(tags_of(&w, "dave-desktop"), ["tag:monitoring"]);
    let short = ask(&w, dave, "monitoring-tag", "30m", &["dave-desktop"]).await;
    approve(&w, &short).await;
    w.pass().await;
    w.advance(31);
    w.pass().await;
    let operator = operator(&w.service, "tidegate-test-operator").await;
    let ended = w.service.get(&operator, &short).await.unwrap();
    assert_eq!(ended.state, State::Expired);
    assert!(ended.tailnet.removal_verified_at.is_some());
    assert_eq!(
        tags_of(&w, "dave-desktop"),
        ["tag:monitoring"],
        "the longer grant still holds"
    );
    w.advance(90);
    w.pass().await;
    assert!(
        tags_of(&w, "dave-desktop").is_empty(),
        "the device's own tags (none) are back"
    );

    // Someone else changes the tags while a grant holds: theirs win at the end.
    let again = ask(&w, dave, "monitoring-tag", "1h", &["dave-desktop"]).await;
    approve(&w, &again).await;
    w.pass().await;
    let device = w
        .emu
        .state()
        .devices
        .iter()
        .find(|d| d.device.hostname == "dave-desktop")
        .unwrap()
        .device
        .id
        .clone();
    w.service
        .tailnet()
        .set_device_tags(&device, &["tag:ci".to_owned()])
        .await
        .unwrap();
    w.advance(61);
    w.pass().await;
    assert_eq!(
        tags_of(&w, "dave-desktop"),
        ["tag:ci"],
        "left as someone set it"
    );
    assert!(
        audit_actions(&w, None)
            .await
            .contains(&"grant.tags_changed_outside".to_owned())
    );
    // Only one's own devices.
    let err = w
        .service
        .create(
            &who(&w.service, dave).await,
            NewRequest {
                entitlement: "monitoring-tag".into(),
                reason: "x".into(),
                devices: vec!["carol-laptop".into()],
                ..NewRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("carol-laptop"), "{err}");
    w.audit_verifies().await;
}

#[tokio::test]
async fn a_role_grant_never_lowers_and_a_manual_change_wins() {
    let w = World::new().await;
    // bob is an admin: network-admin would lower him.
    let refused = w
        .service
        .create(
            &who(&w.service, "bob@example.com").await,
            NewRequest {
                entitlement: "network-admin".into(),
                reason: "x".into(),
                ..NewRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("already admin"), "{refused}");

    let dave = "dave@example.com";
    let id = ask(&w, dave, "network-admin", "1h", &[]).await;
    approve(&w, &id).await;
    w.pass().await;
    assert_eq!(role_of(&w, dave), "network-admin");
    // An owner makes dave an admin in the console while the grant runs.
    let users = w.service.tailnet().users().await.unwrap();
    let dave_id = users
        .iter()
        .find(|u| u.login_name == dave)
        .unwrap()
        .id
        .clone();
    w.service
        .tailnet()
        .set_user_role(&dave_id, "admin")
        .await
        .unwrap();
    w.advance(60);
    w.pass().await;
    assert_eq!(role_of(&w, dave), "admin", "the manual change wins");
    let r = w
        .service
        .get(&operator(&w.service, "tidegate-test-operator").await, &id)
        .await
        .unwrap();
    assert!(r.tailnet.removal_verified_at.is_some());
    assert!(
        audit_actions(&w, None)
            .await
            .contains(&"grant.role_changed_outside".to_owned())
    );
}

#[tokio::test]
async fn overlapping_posture_grants_keep_the_latest_end() {
    let w = World::new().await;
    let t0 = w.clock.now();
    let dave = "dave@example.com";
    let attrs = |w: &World| {
        let w = w.service.tailnet().clone();
        async move { w.posture_attributes("n0004CNTRL").await.unwrap() }
    };
    let long = ask(&w, dave, "prod-db", "2h", &["dave-desktop"]).await;
    approve(&w, &long).await;
    w.pass().await;
    let short = ask(&w, dave, "prod-db", "30m", &["dave-desktop"]).await;
    approve(&w, &short).await;
    w.pass().await;
    let a = attrs(&w).await;
    assert_eq!(
        a.expiries["custom:tidegate_db"],
        tidegate_core::time_text(t0 + time::Duration::hours(2)),
        "the shorter grant must not cut the longer one's expiry"
    );
    // Dropping the shorter one leaves the attribute to the longer one.
    w.service
        .revoke(&who(&w.service, dave).await, &short, "")
        .await
        .unwrap();
    w.pass().await;
    let a = attrs(&w).await;
    assert_eq!(a.attributes["custom:tidegate_db"], json!("granted"));
    assert_eq!(
        a.expiries["custom:tidegate_db"],
        tidegate_core::time_text(t0 + time::Duration::hours(2))
    );
    assert_eq!(
        w.service
            .get(&operator(&w.service, "tidegate-test-operator").await, &long)
            .await
            .unwrap()
            .state,
        State::Active
    );
    assert!(
        w.service
            .get(
                &operator(&w.service, "tidegate-test-operator").await,
                &short
            )
            .await
            .unwrap()
            .tailnet
            .removal_verified_at
            .is_some()
    );
    // A longer grant dropped early brings the expiry back to the remaining grant's end.
    let longest = ask(&w, dave, "prod-db", "4h", &["dave-desktop"]).await;
    approve(&w, &longest).await;
    w.pass().await;
    let stored = w
        .service
        .get(
            &operator(&w.service, "tidegate-test-operator").await,
            &longest,
        )
        .await
        .unwrap();
    assert_eq!(
        attrs(&w).await.expiries["custom:tidegate_db"],
        tidegate_core::time_text(stored.expires_at.unwrap())
    );
    w.service
        .revoke(&who(&w.service, dave).await, &longest, "")
        .await
        .unwrap();
    w.pass().await;
    assert_eq!(
        attrs(&w).await.expiries["custom:tidegate_db"],
        tidegate_core::time_text(t0 + time::Duration::hours(2))
    );
    // When the last one ends, the attribute goes.
    w.advance(120);
    w.pass().await;
    assert!(
        !attrs(&w)
            .await
            .attributes
            .contains_key("custom:tidegate_db")
    );
    let open = w
        .store
        .requests(&RequestFilter {
            open_only: true,
            ..RequestFilter::default()
        })
        .await
        .unwrap();
    assert!(open.is_empty(), "{open:?}");
    w.audit_verifies().await;
}

#[tokio::test]
async fn a_crash_between_the_write_and_its_record_does_not_stretch_access() {
    let mut w = World::new().await;
    let t0 = w.clock.now();
    let id = w.approved_prod_request("dave@example.com", "10m").await;
    // The policy write is made, but its answer never arrives (the process dies).
    w.control(
        "faults",
        json!({"drop": true, "after": true, "method": "POST", "path": "/tailnet/-/acl"}),
    )
    .await;
    let report = w.reconciler.pass().await;
    assert!(!report.errors.is_empty());
    assert_eq!(w.members(), ["dave@example.com"], "the write was made");
    clear_faults(&w).await;
    w.advance(5);
    w.restart().await;
    w.pass().await;
    let r = w
        .service
        .get(&operator(&w.service, "tidegate-test-operator").await, &id)
        .await
        .unwrap();
    assert_eq!(r.state, State::Active);
    assert_eq!(
        r.expires_at,
        Some(t0 + time::Duration::minutes(10)),
        "access counts from the intent before the write, not from the restart"
    );
    w.advance(5);
    w.pass().await;
    assert!(w.members().is_empty());
    assert!(
        w.service
            .get(&operator(&w.service, "tidegate-test-operator").await, &id)
            .await
            .unwrap()
            .tailnet
            .removal_verified_at
            .is_some()
    );
}

#[tokio::test]
async fn a_grant_revoked_after_a_lost_write_is_still_removed() {
    let w = World::new().await;
    let id = w.approved_prod_request("dave@example.com", "1h").await;
    w.control(
        "faults",
        json!({"drop": true, "after": true, "method": "POST", "path": "/tailnet/-/acl"}),
    )
    .await;
    let _ = w.reconciler.pass().await;
    clear_faults(&w).await;
    assert_eq!(w.members(), ["dave@example.com"]);
    // Revoked before the reconciler learned that the write went through.
    w.service
        .revoke(
            &who(&w.service, "alice@example.com").await,
            &id,
            "not needed",
        )
        .await
        .unwrap();
    w.pass().await;
    assert!(w.members().is_empty(), "the lost write's member is removed");
}

#[tokio::test]
async fn failed_changes_are_counted_recorded_and_audited() {
    let w = World::new().await;
    let id = w.approved_prod_request("dave@example.com", "1h").await;
    w.control(
        "faults",
        json!({"status": 500, "method": "POST", "path": "/tailnet/-/acl"}),
    )
    .await;
    for _ in 0..2 {
        let report = w.reconciler.pass().await;
        assert!(!report.errors.is_empty());
        w.advance(1);
    }
    let r = w
        .service
        .get(&operator(&w.service, "tidegate-test-operator").await, &id)
        .await
        .unwrap();
    assert_eq!(r.state, State::Approved);
    assert_eq!(r.tailnet.attempts, 2);
    let error = r.tailnet.last_error.clone().unwrap();
    assert!(error.contains("writing the policy"), "{error}");
    let actions = audit_actions(&w, Some(&id)).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "tailnet.change_failed")
            .count(),
        2,
        "{actions:?}"
    );
    // Each policy write intent has an outcome in the log.
    let all = audit_actions(&w, None).await;
    let intents = all.iter().filter(|a| *a == "tailnet.policy_write").count();
    let outcomes = all
        .iter()
        .filter(|a| *a == "tailnet.change_failed" || *a == "tailnet.policy_written")
        .count();
    assert!(intents > 0 && outcomes >= intents, "{all:?}");

    // Removal failures count too.
    clear_faults(&w).await;
    w.pass().await;
    assert_eq!(
        w.service
            .get(&operator(&w.service, "tidegate-test-operator").await, &id)
            .await
            .unwrap()
            .state,
        State::Active
    );
    w.control(
        "faults",
        json!({"status": 500, "method": "POST", "path": "/tailnet/-/acl"}),
    )
    .await;
    w.advance(60);
    let _ = w.reconciler.pass().await;
    let r = w
        .service
        .get(&operator(&w.service, "tidegate-test-operator").await, &id)
        .await
        .unwrap();
    assert_eq!(r.state, State::Expired);
    assert!(r.tailnet.attempts >= 3, "{:?}", r.tailnet);
    assert!(r.overdue(w.clock.now()));
    clear_faults(&w).await;
    w.pass().await;
    assert!(w.members().is_empty());
}

#[tokio::test]
async fn an_approved_grant_whose_group_vanished_says_so() {
    let w = World::new().await;
    // An admin renames the managed group in the console.
    let text = w
        .emu
        .state()
        .policy
        .replace("group:prod-access", "group:prod-team");
    w.admin_edit(text).await;
    let id = w.approved_prod_request("dave@example.com", "1h").await;
    let report = w.reconciler.pass().await;
    assert!(!report.errors.is_empty());
    let r = w
        .service
        .get(&operator(&w.service, "tidegate-test-operator").await, &id)
        .await
        .unwrap();
    let error = r.tailnet.last_error.unwrap_or_default();
    assert!(
        error.contains("group:prod-access is not in the policy file"),
        "{error}"
    );
    assert_eq!(r.tailnet.attempts, 1);
}

#[tokio::test]
async fn an_approved_key_not_claimed_in_time_lapses() {
    let w = World::new().await;
    // ci-runner-key: pending_ttl defaults; alice (sre) may self-approve.
    let id = ask(&w, "alice@example.com", "ci-runner-key", "30m", &[]).await;
    w.service
        .approve(&who(&w.service, "alice@example.com").await, &id, "")
        .await
        .unwrap();
    let r = w
        .service
        .get(&operator(&w.service, "tidegate-test-operator").await, &id)
        .await
        .unwrap();
    assert_eq!(r.state, State::Approved);
    let lapse = r.pending_until - w.clock.now();
    w.clock.advance(lapse);
    let err = w
        .service
        .claim_key(&who(&w.service, "alice@example.com").await, &id)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not claimed in time"), "{err}");
    w.pass().await;
    let r = w
        .service
        .get(&operator(&w.service, "tidegate-test-operator").await, &id)
        .await
        .unwrap();
    assert_eq!(r.state, State::Cancelled);
    assert_eq!(
        r.end_reason.as_deref(),
        Some("approved but not used in time")
    );
}

#[tokio::test]
async fn members_found_in_a_managed_group_are_standing_until_adopted() {
    let w = World::new().await;
    // The group already has members when tidegate first manages it (remove_drift = true).
    let text = w.emu.state().policy.replace(
        "\"group:prod-access\": []",
        "\"group:prod-access\": [\"bob@example.com\", \"carol@example.com\"]",
    );
    w.admin_edit(text).await;
    let report = w.pass().await;
    assert!(report.drift.is_empty(), "{:?}", report.drift);
    assert_eq!(w.members(), ["bob@example.com", "carol@example.com"]);
    let admin = operator(&w.service, "ops@example.com").await;
    let standing = w.service.standing(admin.auditor().unwrap()).await.unwrap();
    assert_eq!(standing.len(), 1);
    assert_eq!(
        standing[0].standing.iter().collect::<Vec<_>>(),
        ["bob@example.com", "carol@example.com"]
    );
    assert!(
        audit_actions(&w, None)
            .await
            .contains(&"group.standing_recorded".to_owned())
    );

    // A grant to a standing member ends: the member stays (their standing access is theirs).
    let id = w.approved_prod_request("carol@example.com", "10m").await;
    w.pass().await;
    w.advance(10);
    w.pass().await;
    assert!(
        w.service
            .get(&admin, &id)
            .await
            .unwrap()
            .tailnet
            .removal_verified_at
            .is_some()
    );
    assert_eq!(w.members(), ["bob@example.com", "carol@example.com"]);
    // Someone added by hand after tidegate took over is drift, and goes.
    let text = w.emu.state().policy.replace(
        "\"carol@example.com\"]",
        "\"carol@example.com\", \"dave@example.com\"]",
    );
    w.admin_edit(text).await;
    let report = w.pass().await;
    assert_eq!(
        report.drift,
        [(
            "group:prod-access".to_owned(),
            "dave@example.com".to_owned()
        )]
    );
    assert_eq!(w.members(), ["bob@example.com", "carol@example.com"]);

    // An admin adopts the group: former standing members are drift from now on.
    let adopted = w
        .service
        .adopt(admin.admin().unwrap(), "group:prod-access")
        .await
        .unwrap();
    assert!(adopted.standing.is_empty() && adopted.adopted_by.is_some());
    let report = w.pass().await;
    assert_eq!(report.drift.len(), 2, "{:?}", report.drift);
    assert!(w.members().is_empty());
    assert!(
        audit_actions(&w, None)
            .await
            .contains(&"group.adopted".to_owned())
    );
    let err = w
        .service
        .adopt(admin.admin().unwrap(), "group:sre")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not managed"), "{err}");
}

#[tokio::test]
async fn a_request_the_policys_tests_refuse_is_refused_when_asked() {
    let w = World::new().await;
    // The policy says carol must never reach production over SSH.
    let text = w.emu.state().policy.replace(
        r#""tests": ["#,
        r#""tests": [
		{"src": "carol@example.com", "deny": ["tag:prod:22"]},"#,
    );
    w.admin_edit(text).await;
    let err = w
        .service
        .create(
            &who(&w.service, "carol@example.com").await,
            NewRequest {
                entitlement: "prod-ssh".into(),
                reason: "INC-1".into(),
                ..NewRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the policy's own tests[0] refuses this grant"),
        "{err}"
    );
    let all = w.store.requests(&RequestFilter::default()).await.unwrap();
    assert!(all.is_empty(), "nothing stored, nobody asked to approve");
    // dave is not concerned by that test.
    w.approved_prod_request("dave@example.com", "1h").await;
}

/// Posture grants are checked against the tests too: only a device a test starts from can
/// change its outcome, so only that request is refused.
#[tokio::test]
async fn a_posture_grant_the_policys_tests_refuse_is_refused_when_asked() {
    let w = World::new().await;
    // dave's desktop must never reach the production database.
    let text = w.emu.state().policy.replace(
        r#""tests": ["#,
        r#""tests": [
		{"src": "dave@example.com", "deny": ["tag:prod:5432"]},"#,
    );
    w.admin_edit(text).await;
    let err = w
        .service
        .create(
            &who(&w.service, "dave@example.com").await,
            NewRequest {
                entitlement: "prod-db".into(),
                reason: "INC-1".into(),
                devices: vec!["dave-desktop".into()],
                ..NewRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the policy's own tests[0] refuses this grant"),
        "{err}"
    );
    assert!(
        w.store
            .requests(&RequestFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    // carol's laptop is no test's source: her grant cannot change a test's outcome.
    ask(&w, "carol@example.com", "prod-db", "1h", &["carol-laptop"]).await;
}

/// One step of a random history over three targets: dave in group:prod-access (prod-ssh),
/// the attribute on dave-desktop (prod-db), carol's role (network-admin).
#[derive(Debug, Clone)]
enum Step {
    Request { target: usize, minutes: i64 },
    Approve(usize),
    Drop(usize),
    Advance(i64),
    Crash,
    LoseNextWrite,
    Pass,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (0..3usize, prop::sample::select(vec![10i64, 30, 60]))
            .prop_map(|(target, minutes)| Step::Request { target, minutes }),
        3 => (0..8usize).prop_map(Step::Approve),
        1 => (0..8usize).prop_map(Step::Drop),
        2 => prop::sample::select(vec![5i64, 20, 45]).prop_map(Step::Advance),
        1 => Just(Step::Crash),
        1 => Just(Step::LoseNextWrite),
        3 => Just(Step::Pass),
    ]
}

const TARGETS: [(&str, &str); 3] = [
    ("dave@example.com", "prod-ssh"),
    ("dave@example.com", "prod-db"),
    ("carol@example.com", "network-admin"),
];

/// The tailnet as the three targets show it: (dave in the group, the attribute's expiry on
/// dave's desktop, carol's role).
async fn observed(w: &World) -> (bool, Option<String>, String) {
    let attrs = w
        .service
        .tailnet()
        .posture_attributes("n0004CNTRL")
        .await
        .unwrap();
    (
        w.members().contains(&"dave@example.com".to_owned()),
        attrs.expiries.get("custom:tidegate_db").cloned(),
        role_of(w, "carol@example.com"),
    )
}

/// What the active grants say the tailnet must be.
async fn wanted(w: &World) -> (bool, Option<String>, String) {
    let now = w.clock.now();
    let ops = operator(&w.service, "ops@example.com").await;
    let all = w
        .service
        .list(&ops, &RequestFilter::default())
        .await
        .unwrap();
    let active = |entitlement: &str| {
        all.iter()
            .filter(|r| r.entitlement == entitlement && r.state == State::Active)
            .filter(|r| r.expires_at.is_some_and(|e| e > now))
            .filter_map(|r| r.expires_at)
            .max()
    };
    (
        active("prod-ssh").is_some(),
        active("prod-db").map(tidegate_core::time_text),
        if active("network-admin").is_some() {
            "network-admin".to_owned()
        } else {
            "member".to_owned()
        },
    )
}

async fn history(steps: Vec<Step>) {
    let mut w = World::new().await;
    let mut ids: Vec<String> = Vec::new();
    let mut faulty = false;
    for step in steps {
        match step {
            Step::Request { target, minutes } => {
                let (login, entitlement) = TARGETS[target];
                let devices: &[&str] = if entitlement == "prod-db" {
                    &["dave-desktop"]
                } else {
                    &[]
                };
                let r = w
                    .service
                    .create(
                        &who(&w.service, login).await,
                        NewRequest {
                            entitlement: entitlement.into(),
                            reason: "INC-1".into(),
                            duration: Some(format!("{minutes}m").parse().unwrap()),
                            devices: devices.iter().map(|d| d.to_string()).collect(),
                            ..NewRequest::default()
                        },
                    )
                    .await;
                // Refusals (a role grant while carol holds a raised role, say) are fine.
                if let Ok(r) = r {
                    ids.push(r.id);
                }
            }
            Step::Approve(i) => {
                if let Some(id) = ids.get(i) {
                    let _ = w
                        .service
                        .approve(&who(&w.service, "alice@example.com").await, id, "")
                        .await;
                }
            }
            Step::Drop(i) => {
                if let Some(id) = ids.get(i) {
                    let ops = operator(&w.service, "ops@example.com").await;
                    let requester = w.service.get(&ops, id).await.unwrap().requester;
                    let _ = w
                        .service
                        .drop_grant(&who(&w.service, &requester).await, id)
                        .await;
                }
            }
            Step::Advance(minutes) => w.advance(minutes),
            Step::Crash => w.restart().await,
            Step::LoseNextWrite => {
                faulty = true;
                w.control(
                    "faults",
                    json!({"drop": true, "after": true, "count": 1, "method": "POST"}),
                )
                .await;
            }
            Step::Pass => {
                let report = w.reconciler.pass().await;
                if report.errors.is_empty() && !faulty {
                    assert_eq!(observed(&w).await, wanted(&w).await, "after a clean pass");
                }
                faulty = !report.errors.is_empty() && faulty;
            }
        }
    }
    // Whatever happened: faults clear, the reconciler catches up, the tailnet is the union of
    // the active grants...
    clear_faults(&w).await;
    w.advance(1);
    for _ in 0..2 {
        let _ = w.reconciler.pass().await;
        w.advance(1);
    }
    w.pass().await;
    assert_eq!(observed(&w).await, wanted(&w).await, "after catching up");
    // ...and once every grant has ended (and every request lapsed), nothing is left.
    w.advance(3 * 24 * 60);
    let _ = w.reconciler.pass().await;
    w.pass().await;
    assert_eq!(
        observed(&w).await,
        (false, None, "member".to_owned()),
        "nothing left once all have ended"
    );
    let open = w
        .store
        .requests(&RequestFilter {
            open_only: true,
            ..RequestFilter::default()
        })
        .await
        .unwrap();
    assert!(open.is_empty(), "{open:?}");
    w.audit_verifies().await;
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 24,
        max_shrink_iters: 64,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Random interleavings of request, approve, drop, expiry, crash and lost writes over
    /// overlapping grants on three targets.
    #[test]
    fn any_history_ends_with_the_tailnet_equal_to_the_active_grants(
        steps in proptest::collection::vec(step(), 1..28)
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(history(steps));
    }
}

#[tokio::test]
async fn after_a_restart_access_is_removed_before_the_bookkeeping() {
    let mut w = World::new().await;
    let ids = [
        w.approved_prod_request("carol@example.com", "10m").await,
        w.approved_prod_request("dave@example.com", "10m").await,
    ];
    w.pass().await;
    w.advance(30);
    w.restart().await;
    w.pass().await;
    assert!(w.members().is_empty());
    let log = w.store.audit(0, 100_000).await.unwrap();
    let write = log
        .iter()
        .rposition(|e| e.action == "tailnet.policy_write")
        .unwrap();
    for id in &ids {
        let expired = log
            .iter()
            .position(|e| e.action == "grant.expired" && e.request.as_deref() == Some(id))
            .unwrap();
        assert!(
            write < expired,
            "the removal's intent is recorded before the expiry"
        );
    }
}

#[tokio::test]
async fn a_scheduled_grant_counts_from_its_start_even_beside_another_on_the_same_device() {
    let w = World::new().await;
    let t0 = w.clock.now();
    let dave = "dave@example.com";
    let start = t0 + time::Duration::minutes(30);
    let scheduled = w
        .service
        .create(
            &who(&w.service, dave).await,
            NewRequest {
                entitlement: "prod-db".into(),
                reason: "deploy window".into(),
                duration: Some("1h".parse().unwrap()),
                start_at: Some(start),
                devices: vec!["dave-desktop".into()],
                ..NewRequest::default()
            },
        )
        .await
        .unwrap()
        .id;
    approve(&w, &scheduled).await;
    // Another grant on the same device is applied now, before the scheduled one starts.
    let now = ask(&w, dave, "prod-db", "30m", &["dave-desktop"]).await;
    approve(&w, &now).await;
    w.pass().await;
    let ops = operator(&w.service, "ops@example.com").await;
    let waiting = w.service.get(&ops, &scheduled).await.unwrap();
    assert_eq!(waiting.state, State::Approved);
    assert_eq!(
        waiting.tailnet.applying_since, None,
        "nothing intended before its start"
    );
    w.advance(30);
    w.pass().await;
    let started = w.service.get(&ops, &scheduled).await.unwrap();
    assert_eq!(started.state, State::Active);
    assert_eq!(started.expires_at, Some(start + time::Duration::hours(1)));
}

/// Every sync keeps its own run record, even two within one tick of the clock (seen losing
/// records when they were keyed by the time alone).
#[tokio::test]
async fn every_inventory_sync_keeps_a_run_record() {
    let w = World::new().await;
    for _ in 0..3 {
        w.service.sync_inventory(&|_| {}).await.unwrap();
    }
    let runs = w.store.states("inventory:run:").await.unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
}

/// Reviewers hear of their share when a campaign starts (`review.assigned`), and those with
/// items still undecided are reminded once when it is due within three days
/// (`review.reminder`); events every channel turns into mail, Slack DMs and webhooks.
#[tokio::test]
async fn reviewers_are_told_and_reminded_once() {
    let w = World::new().await;
    let ops = operator(&w.service, "ops@example.com").await;
    let admin = ops.admin().unwrap();
    let v = w
        .service
        .create_review(
            admin,
            tidegate_core::review::NewCampaign {
                name: "SRE".into(),
                scopes: vec!["group:sre".into()],
                due: Some("7d".parse().unwrap()),
                reviewer: Some("carol@example.com".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let actions = |w: &World| {
        let store = w.store.clone();
        async move {
            store
                .audit(0, 10_000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.action.starts_with("review."))
                .map(|e| {
                    (
                        e.action,
                        serde_json::from_str::<serde_json::Value>(&e.detail).unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let assigned: Vec<_> = actions(&w)
        .await
        .into_iter()
        .filter(|(a, _)| a == "review.assigned")
        .collect();
    assert_eq!(assigned.len(), 1, "one reviewer: {assigned:?}");
    assert_eq!(assigned[0].1["reviewer"], "carol@example.com");
    assert_eq!(assigned[0].1["items"], 2);
    // Carol decides one; a day later nothing is due soon; five days later it is.
    let carol = w
        .service
        .actor("carol@example.com", tidegate_core::access::Via::ApiToken)
        .await
        .unwrap();
    let first = v.items[0].id.clone();
    w.service
        .decide_review(
            &carol,
            &v.campaign.id,
            &[tidegate_core::review::Ask {
                item: first,
                verdict: tidegate_core::review::Verdict::Keep,
                reason: "on call".into(),
            }],
        )
        .await
        .unwrap();
    w.advance(24 * 60);
    w.service.review_housekeeping().await.unwrap();
    let reminders = |all: Vec<(String, serde_json::Value)>| {
        all.into_iter()
            .filter(|(a, _)| a == "review.reminder")
            .map(|(_, d)| d)
            .collect::<Vec<_>>()
    };
    assert!(reminders(actions(&w).await).is_empty(), "not due soon yet");
    w.advance(4 * 24 * 60 + 60);
    w.service.review_housekeeping().await.unwrap();
    w.service.review_housekeeping().await.unwrap();
    let sent = reminders(actions(&w).await);
    assert_eq!(sent.len(), 1, "once: {sent:?}");
    assert_eq!(sent[0]["reviewer"], "carol@example.com");
    assert_eq!(sent[0]["items"], 1, "only what is undecided");
}
