//! A campaign's population: every access its scopes cover, deduplicated, and who reviews
//! each.

use std::collections::{BTreeMap, BTreeSet};

use super::{Item, Revocation, Scope};
use crate::config::Config;
use crate::entitlement::{Directory, Selector, Strategy};
use crate::inventory::Snapshot;
use crate::people::People;
use crate::request::{Request, SYSTEM};

/// An access found by a scope, before its reviewer is assigned.
#[derive(Debug, Clone)]
struct Found {
    subject: String,
    kind: &'static str,
    target: String,
    /// Where it comes from (rules), joined into the sentence.
    via: Vec<String>,
    sentence: String,
    revocation: Revocation,
}

/// The inputs a population is computed from.
pub struct PopulationInputs<'a> {
    pub config: &'a Config,
    pub inventory: &'a Snapshot,
    /// Active grants: access they explain is just-in-time, not standing.
    pub active: &'a [Request],
}

/// Autogroups that stand for a tailnet role.
fn role_of_autogroup(src: &str) -> Option<&str> {
    let role = src.strip_prefix("autogroup:")?;
    (role != "member" && crate::entitlement::role_rank(role).is_some()).then_some(role)
}

/// The (list key, login) pairs active grants put into policy lists (groups, marked rules).
fn granted(config: &Config, active: &[Request]) -> BTreeSet<(String, String)> {
    active
        .iter()
        .filter_map(|r| {
            let list = config.entitlement(&r.entitlement)?.strategy.policy_list()?;
            Some((list.key(), r.requester.clone()))
        })
        .collect()
}

/// Every access the scopes cover, deduplicated (a person reaching a critical system through a
/// group is one item: that group's membership).
pub fn population(scopes: &[Scope], i: &PopulationInputs<'_>) -> Result<Vec<Item>, String> {
    let inv = i.inventory;
    let granted = granted(i.config, i.active);
    let active_users: Vec<&crate::inventory::InvUser> = inv
        .users
        .iter()
        .filter(|u| u.status != "suspended" && u.kind != "shared")
        .collect();
    let is_user = |login: &str| active_users.iter().any(|u| u.login == login);
    let mut found: BTreeMap<(String, &'static str, String), Found> = BTreeMap::new();
    let mut add = |f: Found| {
        let key = (f.subject.clone(), f.kind, f.target.clone());
        match found.get_mut(&key) {
            Some(existing) => {
                for v in f.via {
                    if !existing.via.contains(&v) {
                        existing.via.push(v);
                    }
                }
            }
            None => {
                found.insert(key, f);
            }
        }
    };
    let group_members = |group: &str| -> Vec<String> {
        inv.groups
            .get(group)
            .into_iter()
            .flatten()
            .filter(|m| m.contains('@') && !granted.contains(&(group.to_owned(), (*m).clone())))
            .cloned()
            .collect()
    };
    for scope in scopes {
        match scope {
            Scope::Group(group) => {
                if !inv.groups.contains_key(group) {
                    return Err(format!("scope {group}: the policy has no group {group}"));
                }
                for login in group_members(group) {
                    add(Found {
                        sentence: format!("member of {group}"),
                        subject: login,
                        kind: "group",
                        target: group.clone(),
                        via: Vec::new(),
                        revocation: Revocation::RemoveFromGroup {
                            group: group.clone(),
                        },
                    });
                }
            }
            Scope::Roles => {
                for u in active_users.iter().filter(|u| u.role != "member") {
                    add(role_access(&u.login, &u.role, None));
                }
            }
            Scope::Critical(name) => {
                let system = i
                    .config
                    .critical
                    .iter()
                    .find(|c| &c.name == name)
                    .ok_or_else(|| {
                        let known: Vec<&str> =
                            i.config.critical.iter().map(|c| c.name.as_str()).collect();
                        format!(
                            "scope critical:{name}: no [[critical]] system {name:?} (configured: {})",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        )
                    })?;
                for rule in inv
                    .rules
                    .iter()
                    .filter(|r| crate::compliance::reaches(r, &system.tags))
                {
                    let label = rule.label();
                    let via = format!("reaches {} through {label}", system.name);
                    for src in &rule.src {
                        if let Some(e) = crate::compliance::through_entitlement(
                            i.config,
                            rule,
                            src,
                            &inv.postures,
                        )
                        .and_then(|e| i.config.entitlement(&e))
                            && matches!(e.strategy, Strategy::Posture { .. } | Strategy::Tag { .. })
                        {
                            continue; // just-in-time: only a grant's attribute or tag lets in
                        }
                        if src.starts_with("group:") {
                            for login in group_members(src) {
                                add(Found {
                                    sentence: format!("member of {src}"),
                                    subject: login,
                                    kind: "group",
                                    target: src.clone(),
                                    via: vec![via.clone()],
                                    revocation: Revocation::RemoveFromGroup { group: src.clone() },
                                });
                            }
                        } else if let Some(role) = role_of_autogroup(src) {
                            for u in active_users.iter().filter(|u| u.role == role) {
                                add(role_access(&u.login, &u.role, Some(via.clone())));
                            }
                        } else if src == "*" || src == "autogroup:member" {
                            for u in &active_users {
                                add(Found {
                                    sentence: format!("every member: {label} lets in {src}"),
                                    subject: u.login.clone(),
                                    kind: "rule",
                                    target: label.clone(),
                                    via: vec![format!("reaches {}", system.name)],
                                    revocation: Revocation::SuspendUser,
                                });
                            }
                        } else if src.contains('@') && !src.starts_with("tag:") {
                            let list = rule.marker.as_ref().map(|m| format!("rule:{m}"));
                            if list.is_some_and(|l| granted.contains(&(l, src.clone())))
                                || !is_user(src)
                            {
                                continue;
                            }
                            add(Found {
                                sentence: format!("named in {label}"),
                                subject: src.clone(),
                                kind: "rule",
                                target: label.clone(),
                                via: vec![format!("reaches {}", system.name)],
                                revocation: Revocation::RemoveFromRule {
                                    section: rule.section.clone(),
                                    index: rule.index,
                                    dst: rule.dst.clone(),
                                },
                            });
                        }
                    }
                }
            }
            Scope::Keys => {
                for k in inv.keys.iter().filter(|k| !k.invalid) {
                    let what = match (k.kind.as_str(), k.reusable) {
                        ("api", _) => "API token",
                        ("client", _) => "OAuth client",
                        ("auth", true) => "reusable auth key",
                        _ => continue,
                    };
                    let owner = inv
                        .users
                        .iter()
                        .find(|u| u.id == k.user_id && !k.user_id.is_empty())
                        .map_or_else(|| "tailnet".to_owned(), |u| u.login.clone());
                    let mut sentence = format!("{what} {}", k.id);
                    if !k.description.is_empty() {
                        sentence.push_str(&format!(" ({:?})", k.description));
                    }
                    if !k.tags.is_empty() {
                        sentence.push_str(&format!(" for {}", k.tags.join(", ")));
                    }
                    if !k.expires.is_empty() {
                        sentence.push_str(&format!(", expires {}", k.expires));
                    }
                    add(Found {
                        sentence,
                        subject: owner,
                        kind: "key",
                        target: k.id.clone(),
                        via: Vec::new(),
                        revocation: Revocation::DeleteKey { key: k.id.clone() },
                    });
                }
            }
            Scope::Entitlement(name) => {
                let e = i.config.entitlement(name).ok_or_else(|| {
                    format!("scope entitlement:{name}: no entitlement {name:?} is configured")
                })?;
                let dir = Directory {
                    roles: active_users
                        .iter()
                        .map(|u| (u.login.clone(), u.role.clone()))
                        .collect(),
                    groups: inv
                        .groups
                        .iter()
                        .map(|(g, m)| (g.clone(), m.iter().cloned().collect()))
                        .collect(),
                };
                for u in &active_users {
                    for (verb, selectors) in [("request", &e.requesters), ("approve", &e.approvers)]
                    {
                        let Some(sel) = selectors.iter().find(|s| dir.matches(s, &u.login)) else {
                            continue;
                        };
                        let revocation = match sel {
                            Selector::Group(g) => Revocation::RemoveFromGroup { group: g.clone() },
                            Selector::Role(_) => Revocation::SetRoleMember,
                            Selector::Login(_) | Selector::Member => Revocation::SuspendUser,
                        };
                        add(Found {
                            sentence: format!("may {verb} {name} (through {sel})"),
                            subject: u.login.clone(),
                            kind: "entitlement",
                            target: format!("{name}:{verb}"),
                            via: Vec::new(),
                            revocation,
                        });
                    }
                }
            }
        }
    }
    Ok(found
        .into_values()
        .enumerate()
        .map(|(n, f)| {
            let access = if f.via.is_empty() {
                f.sentence
            } else {
                format!("{}, which {}", f.sentence, f.via.join(" and "))
            };
            let protected = protection(i.config, f.kind, &f.target);
            Item {
                id: format!("i{}", n + 1),
                subject: f.subject,
                kind: f.kind.to_owned(),
                target: f.target,
                access,
                reviewer: String::new(),
                protected,
                revocation: f.revocation,
            }
        })
        .collect())
}

/// Why tidegate must not revoke an access: its own credential (it would lock itself out), or
/// the owner's role (Tailscale changes it only by a transfer of ownership).
fn protection(config: &Config, kind: &str, target: &str) -> Option<String> {
    match kind {
        "key" if own_credential(config).is_some_and(|id| id == target) => Some(
            "tidegate's own credential: rotate it in the config, then delete the old one".into(),
        ),
        "role" if target == "owner" => Some(
            "the tailnet owner's role changes only by transferring ownership in the admin console"
                .into(),
        ),
        _ => None,
    }
}

/// The key id of tidegate's own API token or OAuth client.
fn own_credential(config: &Config) -> Option<String> {
    match &config.tailnet.credentials {
        tailnet::Credentials::ApiToken(secret) => secret
            .expose()
            .strip_prefix("tskey-api-")
            .and_then(|rest| rest.split('-').next())
            .map(str::to_owned),
        tailnet::Credentials::OAuth { client_id, .. }
        | tailnet::Credentials::Federated { client_id, .. } => Some(client_id.clone()),
    }
}

fn role_access(login: &str, role: &str, via: Option<String>) -> Found {
    Found {
        sentence: format!("tailnet role {role}"),
        subject: login.to_owned(),
        kind: "role",
        target: role.to_owned(),
        via: via.into_iter().collect(),
        revocation: Revocation::SetRoleMember,
    }
}

/// Who reviews `subject`'s access: their manager from the directory, else the campaign's
/// reviewer selector, else its creator; never the subject themselves (then any admin but
/// them: `role:admin`).
pub fn assign_reviewer(
    subject: &str,
    people: &People,
    aliases: &BTreeMap<String, String>,
    selector: Option<&str>,
    creator: &str,
) -> String {
    let manager = people
        .get(subject)
        .map(|p| p.manager.clone())
        .filter(|m| !m.is_empty())
        .map(|m| aliases.get(&m).cloned().unwrap_or(m));
    [
        manager,
        selector.map(str::to_owned),
        Some(creator.to_owned()),
    ]
    .into_iter()
    .flatten()
    .find(|r| !r.eq_ignore_ascii_case(subject) && r != SYSTEM)
    .unwrap_or_else(|| "role:admin".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{InvKey, InvUser, Rule};
    use crate::review::Scope;

    const CONFIG: &str = r#"
[tailnet]
api_token = "tskey-api-test"

[[entitlement]]
name = "prod-ssh"
strategy = "group"
group = "group:prod-access"
requesters = ["group:eng"]
approvers = ["group:sre", "alice@example.com"]

[[critical]]
name = "prod-db"
tags = ["tag:prod-db"]
"#;

    fn user(login: &str, role: &str) -> InvUser {
        InvUser {
            id: format!("u-{login}"),
            login: login.into(),
            role: role.into(),
            status: "active".into(),
            kind: "member".into(),
            ..InvUser::default()
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            users: vec![
                user("alice@example.com", "admin"),
                user("bob@example.com", "member"),
                user("carol@example.com", "member"),
                user("dave@example.com", "member"),
            ],
            groups: BTreeMap::from([
                (
                    "group:sre".to_owned(),
                    vec!["alice@example.com".to_owned(), "bob@example.com".to_owned()],
                ),
                ("group:eng".to_owned(), vec!["carol@example.com".to_owned()]),
                (
                    "group:prod-access".to_owned(),
                    vec![
                        "carol@example.com".to_owned(),
                        "dave@example.com".to_owned(),
                    ],
                ),
            ]),
            rules: vec![
                Rule {
                    section: "acls".into(),
                    index: 0,
                    line: 12,
                    src: vec!["group:sre".into()],
                    dst: vec!["tag:prod-db:5432".into()],
                    ..Rule::default()
                },
                Rule {
                    section: "acls".into(),
                    index: 1,
                    line: 17,
                    src: vec!["dave@example.com".into(), "group:sre".into()],
                    dst: vec!["tag:prod-db:*".into()],
                    ..Rule::default()
                },
                Rule {
                    section: "grants".into(),
                    index: 0,
                    line: 25,
                    src: vec!["group:prod-access".into()],
                    dst: vec!["tag:prod-db".into()],
                    ..Rule::default()
                },
            ],
            keys: vec![
                InvKey {
                    id: "k1".into(),
                    kind: "api".into(),
                    user_id: "u-bob@example.com".into(),
                    ..InvKey::default()
                },
                InvKey {
                    id: "k2".into(),
                    kind: "auth".into(),
                    reusable: false,
                    ..InvKey::default()
                },
            ],
            ..Snapshot::default()
        }
    }

    #[test]
    fn critical_paths_are_one_item_per_person_per_rule_and_groups_once() {
        let config = Config::parse(CONFIG, "test").unwrap();
        let inv = snapshot();
        let items = population(
            &[Scope::Critical("prod-db".into())],
            &PopulationInputs {
                config: &config,
                inventory: &inv,
                active: &[],
            },
        )
        .unwrap();
        let seen: Vec<(&str, &str, &str)> = items
            .iter()
            .map(|i| (i.subject.as_str(), i.kind.as_str(), i.target.as_str()))
            .collect();
        // alice and bob through group:sre once, though two rules reach through it; dave by
        // name in acls[1]; group:prod-access is managed by prod-ssh, but with no active
        // grant its members are standing.
        assert_eq!(
            seen,
            vec![
                ("alice@example.com", "group", "group:sre"),
                ("bob@example.com", "group", "group:sre"),
                ("carol@example.com", "group", "group:prod-access"),
                ("dave@example.com", "group", "group:prod-access"),
                ("dave@example.com", "rule", "acls[1] (line 17)"),
            ]
        );
        let bob = &items[1];
        assert_eq!(
            bob.access,
            "member of group:sre, which reaches prod-db through acls[0] (line 12) and reaches prod-db through acls[1] (line 17)"
        );
        assert_eq!(
            items[4].revocation,
            Revocation::RemoveFromRule {
                section: "acls".into(),
                index: 1,
                dst: vec!["tag:prod-db:*".into()],
            }
        );
    }

    #[test]
    fn scopes_find_roles_keys_and_who_may_request() {
        let config = Config::parse(CONFIG, "test").unwrap();
        let inv = snapshot();
        let inputs = PopulationInputs {
            config: &config,
            inventory: &inv,
            active: &[],
        };
        let roles = population(&[Scope::Roles], &inputs).unwrap();
        assert_eq!(roles.len(), 1);
        assert_eq!(roles[0].access, "tailnet role admin");
        let keys = population(&[Scope::Keys], &inputs).unwrap();
        assert_eq!(keys.len(), 1, "a one-off auth key is not reviewed");
        assert_eq!(keys[0].subject, "bob@example.com");
        let ent = population(&[Scope::Entitlement("prod-ssh".into())], &inputs).unwrap();
        let sentences: Vec<&str> = ent.iter().map(|i| i.access.as_str()).collect();
        assert_eq!(
            sentences,
            vec![
                "may approve prod-ssh (through group:sre)",
                "may approve prod-ssh (through group:sre)",
                "may request prod-ssh (through group:eng)",
            ]
        );
        assert_eq!(
            ent[0].revocation,
            Revocation::RemoveFromGroup {
                group: "group:sre".into()
            }
        );
        assert!(
            population(&[Scope::Group("group:nope".into())], &inputs)
                .unwrap_err()
                .contains("no group group:nope")
        );
        assert!(
            "nonsense"
                .parse::<Scope>()
                .unwrap_err()
                .contains("write group:NAME")
        );
    }

    #[test]
    fn nobody_reviews_their_own_access() {
        let people = People::parse(
            "email,name,department,title,manager,status,terminated_at\n\
             bob@example.com,Bob,SRE,SRE,alice@example.com,active,\n\
             alice@example.com,Alice,SRE,Lead,,active,\n",
            &BTreeMap::new(),
        )
        .unwrap();
        let none = BTreeMap::new();
        assert_eq!(
            assign_reviewer("bob@example.com", &people, &none, None, "carol@example.com"),
            "alice@example.com"
        );
        assert_eq!(
            assign_reviewer(
                "alice@example.com",
                &people,
                &none,
                Some("group:sec"),
                "carol@example.com"
            ),
            "group:sec"
        );
        assert_eq!(
            assign_reviewer(
                "alice@example.com",
                &people,
                &none,
                None,
                "carol@example.com"
            ),
            "carol@example.com"
        );
        assert_eq!(
            assign_reviewer(
                "carol@example.com",
                &people,
                &none,
                Some("carol@example.com"),
                "carol@example.com"
            ),
            "role:admin"
        );
    }
}
