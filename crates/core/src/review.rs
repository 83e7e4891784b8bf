//! Access reviews: campaigns over standing access in the tailnet, each access decided (keep or
//! revoke) by a named reviewer with a time and a reason, revocations carried out by the
//! reconciler and verified by reading the tailnet back, and the evidence an auditor takes away.
//!
//! A campaign's population is frozen when it starts, from a fresh inventory sync. It is kept
//! in the store's named records: `review:campaign:ID` (the campaign), `review:items:ID:NNNNN`
//! (its items, in chunks of [`CHUNK`]), `review:decision:ID:ITEM` (one per decided item,
//! claimed so an item is decided once, across replicas), `review:revoke:ID:ITEM` (a
//! revocation the reconciler has still to make or verify).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::access::{Actor, Admin, Auditor};
use crate::audit::NewAuditEntry;
use crate::config::Config;
use crate::entitlement::{Directory, Selector, Strategy};
use crate::inventory::Snapshot;
use crate::people::People;
use crate::request::{Request, SYSTEM, check_text};
use crate::service::{Service, ServiceError};
use crate::{Span, time_text};

/// Items per stored chunk: a decision reads one chunk, a 50,000-item campaign is 100 records.
const CHUNK: usize = 500;
const CAMPAIGN: &str = "review:campaign:";
const ITEMS: &str = "review:items:";
const DECISION: &str = "review:decision:";
const REVOKE: &str = "review:revoke:";
const OPEN: &str = "review:open:";
/// Bumped on every revoke decision, so the reconciler looks for revocations only when there
/// may be new ones (and every minute regardless).
pub(crate) const REVOCATIONS_WANTED: &str = "review:revocations-wanted";
const SCHEDULE: &str = "review:schedule:";

/// What a campaign reviews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Standing members of a policy group.
    Group(String),
    /// Users whose tailnet role is above member.
    Roles,
    /// Every standing path to a `[[critical]]` system.
    Critical(String),
    /// API tokens, OAuth clients and reusable auth keys.
    Keys,
    /// Who may request or approve an entitlement.
    Entitlement(String),
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        let text = text.trim();
        let named = |rest: &str, what: &str| {
            if rest.is_empty() || rest.chars().any(char::is_control) {
                Err(format!("scope {text:?}: name the {what} after the colon"))
            } else {
                Ok(rest.to_owned())
            }
        };
        if let Some(rest) = text.strip_prefix("group:") {
            named(rest, "group").map(|_| Scope::Group(text.to_owned()))
        } else if let Some(rest) = text.strip_prefix("critical:") {
            named(rest, "[[critical]] system").map(Scope::Critical)
        } else if let Some(rest) = text.strip_prefix("entitlement:") {
            named(rest, "entitlement").map(Scope::Entitlement)
        } else if text == "roles" {
            Ok(Scope::Roles)
        } else if text == "keys" {
            Ok(Scope::Keys)
        } else {
            Err(format!(
                "scope {text:?}: write group:NAME, roles, critical:NAME, keys or entitlement:NAME"
            ))
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Group(g) => f.write_str(g),
            Scope::Roles => f.write_str("roles"),
            Scope::Critical(c) => write!(f, "critical:{c}"),
            Scope::Keys => f.write_str("keys"),
            Scope::Entitlement(e) => write!(f, "entitlement:{e}"),
        }
    }
}

/// What happens to items nobody decided by the due date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDue {
    #[default]
    Keep,
    Revoke,
}

impl std::str::FromStr for OnDue {
    type Err = String;
    fn from_str(text: &str) -> Result<OnDue, String> {
        match text {
            "keep" => Ok(OnDue::Keep),
            "revoke" => Ok(OnDue::Revoke),
            other => Err(format!("on-due {other:?}: write keep or revoke")),
        }
    }
}

/// A reviewer's verdict on one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Keep,
    Revoke,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Keep => "keep",
            Verdict::Revoke => "revoke",
        }
    }
}

/// How a revoked item's access is taken away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Revocation {
    /// Remove the login from a policy group (one HuJSON edit).
    RemoveFromGroup { group: String },
    /// Set the user's tailnet role to member.
    SetRoleMember,
    /// Remove the login from a rule's `src` (the rule stays, `"src": []` if it was the last).
    RemoveFromRule { section: String, index: usize },
    /// Delete the key, token or OAuth client.
    DeleteKey { key: String },
    /// Suspend the tailnet user: nothing narrower takes this access away.
    SuspendUser,
}

impl Revocation {
    /// "removes them from group:sre", as a reviewer reads it before deciding.
    pub fn describe(&self) -> String {
        match self {
            Revocation::RemoveFromGroup { group } => format!("removes them from {group}"),
            Revocation::SetRoleMember => "sets their tailnet role to member".into(),
            Revocation::RemoveFromRule { section, index } => {
                format!("removes them from {section}[{index}]'s src")
            }
            Revocation::DeleteKey { key } => format!("deletes key {key}"),
            Revocation::SuspendUser => "suspends their tailnet user (nothing narrower can)".into(),
        }
    }
}

/// One access to review, as frozen when the campaign started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    /// The person (login); for a key without an owner, `tailnet`.
    pub subject: String,
    /// `group`, `role`, `rule`, `key` or `entitlement`.
    pub kind: String,
    /// The group, role, rule label, key id or entitlement.
    pub target: String,
    /// A sentence naming the group, role, rule (`acls[1] (line 17)`) or key.
    pub access: String,
    /// A login, or a selector (`group:security`) whose members may decide it.
    pub reviewer: String,
    pub revocation: Revocation,
    /// Why this access cannot be revoked by tidegate (its own credential, the tailnet's
    /// owner): a revoke is refused, and the due date's revoke rule keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<String>,
}

/// A decision on one item, and what became of a revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub decision: Verdict,
    pub reason: String,
    pub decided_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub decided_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revocation_verified_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub revocation_error: Option<String>,
    #[serde(default)]
    pub revocation_attempts: u32,
}

/// How the population was generated, for the auditor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub tool_version: String,
    pub tailnet: String,
    /// When the inventory it was taken from was read.
    pub inventory_taken_at: String,
    pub started_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A campaign, without its items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// The `--reviewer` selector: who reviews people without a manager.
    pub reviewer: Option<String>,
    pub on_due: OnDue,
    /// A keep needs a reason too.
    pub keep_reason_required: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub due_at: OffsetDateTime,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// `open` or `closed`.
    pub state: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub closed_by: Option<String>,
    /// How it closed: "every item decided, every revocation verified", or what the due date did.
    #[serde(default)]
    pub close_note: Option<String>,
    /// The audit chain's head right after the close was recorded.
    #[serde(default)]
    pub audit_chain_head_at_close: Option<String>,
    /// `[[review_schedule]]` that started it, if any.
    #[serde(default)]
    pub schedule: Option<String>,
    pub generated: Generation,
    pub item_count: usize,
}

impl Campaign {
    pub fn is_open(&self) -> bool {
        self.state == "open"
    }
}

/// An item with its decision, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemView {
    pub id: String,
    pub subject: String,
    pub kind: String,
    pub target: String,
    pub access: String,
    pub reviewer: String,
    /// What a revoke does.
    pub revocation: String,
    /// Why a revoke is refused, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<String>,
    pub decision: Option<Verdict>,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revocation_verified_at: Option<OffsetDateTime>,
    pub revocation_error: Option<String>,
}

impl ItemView {
    fn of(item: &Item, decision: Option<&Decision>) -> ItemView {
        ItemView {
            id: item.id.clone(),
            subject: item.subject.clone(),
            kind: item.kind.clone(),
            target: item.target.clone(),
            access: item.access.clone(),
            reviewer: item.reviewer.clone(),
            revocation: item.revocation.describe(),
            protected: item.protected.clone(),
            decision: decision.map(|d| d.decision),
            reason: decision.map(|d| d.reason.clone()),
            decided_by: decision.map(|d| d.decided_by.clone()),
            decided_at: decision.map(|d| d.decided_at),
            revocation_verified_at: decision.and_then(|d| d.revocation_verified_at),
            revocation_error: decision.and_then(|d| d.revocation_error.clone()),
        }
    }

    /// A revoke whose removal is not yet verified.
    pub fn revocation_pending(&self) -> bool {
        self.decision == Some(Verdict::Revoke) && self.revocation_verified_at.is_none()
    }
}

/// Counts over a campaign's items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub items: usize,
    pub decided: usize,
    pub kept: usize,
    pub revoked: usize,
    pub revocations_verified: usize,
    pub revocations_pending: usize,
}

/// One reviewer's share of a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewerProgress {
    pub reviewer: String,
    pub items: usize,
    pub undecided: usize,
    /// Past the due date with items undecided.
    pub late: bool,
}

/// A campaign with its items (those the viewer may see) and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CampaignView {
    #[serde(flatten)]
    pub campaign: Campaign,
    pub progress: Progress,
    pub reviewers: Vec<ReviewerProgress>,
    pub items: Vec<ItemView>,
}

/// What `review create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewCampaign {
    pub name: String,
    pub scopes: Vec<String>,
    pub due: Option<Span>,
    pub reviewer: Option<String>,
    pub on_due: OnDue,
    pub keep_reason_required: bool,
    pub schedule: Option<String>,
}

/// One decision asked for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub item: String,
    pub verdict: Verdict,
    pub reason: String,
}

/// A pending revocation, as the reconciler reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRevocation {
    pub campaign: String,
    pub item: Item,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub retry_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub attempts: u32,
}

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

/// A new campaign id: `rv-` and 10 random base-32 characters.
fn new_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..10)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("rv-{tail}")
}

fn chunk_key(id: &str, n: usize) -> String {
    format!("{ITEMS}{id}:{n:05}")
}

/// The number of an item id (`i42` → 42).
fn item_number(item: &str) -> Option<usize> {
    item.strip_prefix('i')?.parse().ok().filter(|n| *n > 0)
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(message.into())
}

fn not_allowed(message: impl Into<String>) -> ServiceError {
    ServiceError::Lifecycle(crate::request::LifecycleError::NotAllowed(message.into()))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, text: &str) -> Result<T, ServiceError> {
    serde_json::from_str(text).map_err(|e| invalid(format!("stored {key} does not read: {e}")))
}

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn audit(
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    detail: serde_json::Value,
) -> NewAuditEntry {
    NewAuditEntry {
        at: time_text(at),
        actor: actor.to_owned(),
        action: action.to_owned(),
        request: None,
        detail: detail.to_string(),
    }
}

impl Service {
    /// Starts a campaign (admins): a fresh sync, the population of its scopes frozen with a
    /// reviewer for each item, stored and audited.
    pub async fn create_review(
        &self,
        admin: Admin<'_>,
        new: NewCampaign,
    ) -> Result<CampaignView, ServiceError> {
        self.start_review(admin.login(), new).await
    }

    async fn start_review(
        &self,
        creator: &str,
        new: NewCampaign,
    ) -> Result<CampaignView, ServiceError> {
        let name = new.name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid("a campaign needs a name"));
        }
        check_text("campaign name", &name)?;
        if new.scopes.is_empty() {
            return Err(invalid(
                "a campaign needs a scope: group:NAME, roles, critical:NAME, keys or entitlement:NAME",
            ));
        }
        let scopes: Vec<Scope> = new
            .scopes
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, String>>()
            .map_err(invalid)?;
        if let Some(sel) = &new.reviewer {
            sel.parse::<Selector>()
                .map_err(|e| invalid(format!("reviewer: {e}")))?;
        }
        let due = new.due.unwrap_or(Span::seconds(14 * 86_400));
        let (_, inventory) = self.sync_and_keep(&|_| {}).await?;
        let active = self
            .store()
            .requests(&crate::store::RequestFilter {
                states: vec![crate::request::State::Active],
                ..Default::default()
            })
            .await?;
        let mut items = population(
            &scopes,
            &PopulationInputs {
                config: self.config(),
                inventory: &inventory,
                active: &active,
            },
        )
        .map_err(invalid)?;
        let people = self.people().await?;
        let aliases = self
            .config()
            .directory
            .as_ref()
            .map(|d| d.aliases.clone())
            .unwrap_or_default();
        for item in &mut items {
            item.reviewer = assign_reviewer(
                &item.subject,
                &people,
                &aliases,
                new.reviewer.as_deref(),
                creator,
            );
        }
        let now = crate::now(self.clock().as_ref());
        let id = new_id();
        let campaign = Campaign {
            id: id.clone(),
            name,
            scopes: scopes.iter().map(ToString::to_string).collect(),
            reviewer: new.reviewer,
            on_due: new.on_due,
            keep_reason_required: new.keep_reason_required,
            due_at: now + due.to_time(),
            created_by: creator.to_owned(),
            created_at: now,
            state: "open".into(),
            closed_at: None,
            closed_by: None,
            close_note: None,
            audit_chain_head_at_close: None,
            schedule: new.schedule,
            generated: Generation {
                tool_version: env!("CARGO_PKG_VERSION").to_owned(),
                tailnet: self.config().tailnet.tailnet.clone(),
                inventory_taken_at: inventory.taken_at.clone(),
                started_by: creator.to_owned(),
                at: now,
            },
            item_count: items.len(),
        };
        drop(inventory);
        let at = time_text(now);
        // Items first, the campaign last: a campaign is never seen without all its items.
        for (n, chunk) in items.chunks(CHUNK).enumerate() {
            self.store()
                .put_state(&chunk_key(&id, n), &encode(&chunk), &at)
                .await?;
        }
        self.store()
            .put_state(&format!("{CAMPAIGN}{id}"), &encode(&campaign), &at)
            .await?;
        self.store()
            .put_state(&format!("{OPEN}{id}"), &id, &at)
            .await?;
        let mut by_reviewer: BTreeMap<&str, usize> = BTreeMap::new();
        for item in &items {
            *by_reviewer.entry(&item.reviewer).or_default() += 1;
        }
        self.store()
            .append_audit(&[audit(
                now,
                creator,
                "review.created",
                serde_json::json!({
                    "campaign": id,
                    "name": campaign.name,
                    "scopes": campaign.scopes,
                    "items": items.len(),
                    "due_at": time_text(campaign.due_at),
                    "on_due": campaign.on_due,
                    "inventory_taken_at": campaign.generated.inventory_taken_at,
                    "reviewers": by_reviewer,
                }),
            )])
            .await?;
        tracing::info!(campaign = %id, name = %campaign.name, items = items.len(), by = creator, "access review started");
        // An empty campaign has nothing to decide: it closes at once.
        if items.is_empty() {
            self.close_if_complete(&id).await?;
        }
        let campaign = self.campaign(&id).await?;
        let views = items.iter().map(|i| ItemView::of(i, None)).collect();
        Ok(view(campaign, views, now))
    }

    /// The stored campaign (no permission check: callers check).
    async fn campaign(&self, id: &str) -> Result<Campaign, ServiceError> {
        let key = format!("{CAMPAIGN}{id}");
        match self.store().get_state(&key).await? {
            Some(text) => decode(&key, &text),
            None => Err(ServiceError::UnknownReview(id.to_owned())),
        }
    }

    /// Every item of a campaign with its decision, in item order.
    async fn items_of(&self, id: &str) -> Result<Vec<(Item, Option<Decision>)>, ServiceError> {
        let mut items: Vec<Item> = Vec::new();
        for (key, text) in self.store().states(&format!("{ITEMS}{id}:")).await? {
            items.extend(decode::<Vec<Item>>(&key, &text)?);
        }
        let mut decisions: BTreeMap<String, Decision> = BTreeMap::new();
        for (key, text) in self.store().states(&format!("{DECISION}{id}:")).await? {
            let item = key.rsplit(':').next().unwrap_or_default().to_owned();
            decisions.insert(item, decode(&key, &text)?);
        }
        Ok(items
            .into_iter()
            .map(|i| {
                let d = decisions.remove(&i.id);
                (i, d)
            })
            .collect())
    }

    /// Campaigns the actor may see, newest first, with progress: admins and auditors see all,
    /// reviewers those with items for them.
    pub async fn reviews(&self, actor: &Actor) -> Result<Vec<CampaignView>, ServiceError> {
        let dir = self.directory().await?;
        let now = self.now();
        let mut out = Vec::new();
        for (key, text) in self.store().states(CAMPAIGN).await? {
            let campaign: Campaign = decode(&key, &text)?;
            let items = self.items_of(&campaign.id).await?;
            let all: Vec<ItemView> = items
                .iter()
                .map(|(i, d)| ItemView::of(i, d.as_ref()))
                .collect();
            let mut v = view(campaign, all, now);
            if !actor.is_auditor() {
                v.items
                    .retain(|i| actor.may_see_review_item(&i.subject, &i.reviewer, &dir));
                if v.items.is_empty() {
                    continue;
                }
            }
            // Lists carry progress, not items.
            v.items.clear();
            out.push(v);
        }
        out.sort_by_key(|v| std::cmp::Reverse(v.campaign.created_at));
        Ok(out)
    }

    /// One campaign: admins and auditors see every item, a reviewer their own items.
    pub async fn review(&self, actor: &Actor, id: &str) -> Result<CampaignView, ServiceError> {
        let campaign = self.campaign(id).await?;
        let dir = self.directory().await?;
        let items = self.items_of(id).await?;
        let mut v = view(
            campaign,
            items
                .iter()
                .map(|(i, d)| ItemView::of(i, d.as_ref()))
                .collect(),
            self.now(),
        );
        if !actor.is_auditor() {
            v.items
                .retain(|i| actor.may_see_review_item(&i.subject, &i.reviewer, &dir));
            if v.items.is_empty() {
                return Err(ServiceError::UnknownReview(id.to_owned()));
            }
        }
        Ok(v)
    }

    /// The undecided items of open campaigns that `actor` may decide, by campaign.
    pub async fn my_reviews(
        &self,
        actor: &Actor,
    ) -> Result<Vec<(Campaign, Vec<ItemView>)>, ServiceError> {
        let dir = self.directory().await?;
        let mut out = Vec::new();
        for (key, _) in self.store().states(OPEN).await? {
            let id = key.trim_start_matches(OPEN);
            let campaign = match self.campaign(id).await {
                Ok(c) if c.is_open() => c,
                _ => continue,
            };
            let mine: Vec<ItemView> = self
                .items_of(id)
                .await?
                .iter()
                .filter(|(i, d)| {
                    d.is_none()
                        && i.subject != actor.login()
                        && reviewer_matches(&i.reviewer, actor.login(), &dir)
                })
                .map(|(i, d)| ItemView::of(i, d.as_ref()))
                .collect();
            if !mine.is_empty() {
                out.push((campaign, mine));
            }
        }
        Ok(out)
    }

    /// Records decisions on a campaign's items. Each is checked first (the caller may decide
    /// it, it is not decided yet, a reason where one is required); if any fails, none is
    /// recorded. Revocations are handed to the reconciler.
    pub async fn decide_review(
        &self,
        actor: &Actor,
        id: &str,
        asks: &[Ask],
    ) -> Result<Vec<ItemView>, ServiceError> {
        let campaign = self.campaign(id).await?;
        if !campaign.is_open() {
            return Err(not_allowed(format!(
                "campaign {id} is closed; its decisions can no longer change"
            )));
        }
        if asks.is_empty() {
            return Err(invalid("no item to decide"));
        }
        let dir = self.directory().await?;
        let now = crate::now(self.clock().as_ref());
        let mut chunks: BTreeMap<usize, Vec<Item>> = BTreeMap::new();
        let mut checked: Vec<(Item, Decision)> = Vec::with_capacity(asks.len());
        let mut seen = BTreeSet::new();
        for ask in asks {
            if !seen.insert(ask.item.as_str()) {
                return Err(invalid(format!("item {} is listed twice", ask.item)));
            }
            let unknown = || invalid(format!("campaign {id} has no item {:?}", ask.item));
            let n = item_number(&ask.item).ok_or_else(unknown)?;
            let chunk = (n - 1) / CHUNK;
            if let std::collections::btree_map::Entry::Vacant(slot) = chunks.entry(chunk) {
                let key = chunk_key(id, chunk);
                let text = self.store().get_state(&key).await?.ok_or_else(unknown)?;
                slot.insert(decode(&key, &text)?);
            }
            let item = chunks
                .get(&chunk)
                .and_then(|c| c.iter().find(|i| i.id == ask.item))
                .ok_or_else(unknown)?;
            actor
                .may_decide_review_item(&item.subject, &item.reviewer, &dir)
                .map_err(|why| not_allowed(format!("item {}: {why}", item.id)))?;
            if let (Verdict::Revoke, Some(why)) = (ask.verdict, &item.protected) {
                return Err(not_allowed(format!(
                    "item {} cannot be revoked: {why}",
                    item.id
                )));
            }
            let reason = ask.reason.trim().to_owned();
            check_text("reason", &reason)?;
            let needs_reason = ask.verdict == Verdict::Revoke || campaign.keep_reason_required;
            if needs_reason && reason.is_empty() {
                return Err(invalid(format!(
                    "item {}: a {} needs a reason",
                    item.id,
                    ask.verdict.as_str()
                )));
            }
            checked.push((
                item.clone(),
                Decision {
                    decision: ask.verdict,
                    reason,
                    decided_by: actor.login().to_owned(),
                    decided_at: now,
                    revocation_verified_at: None,
                    revocation_error: None,
                    revocation_attempts: 0,
                },
            ));
        }
        self.record_decisions(&campaign, checked, actor.login())
            .await
    }

    /// Stores decisions (each claimed: an item is decided once), their audit entries, and the
    /// revocations for the reconciler.
    async fn record_decisions(
        &self,
        campaign: &Campaign,
        decisions: Vec<(Item, Decision)>,
        actor: &str,
    ) -> Result<Vec<ItemView>, ServiceError> {
        let id = &campaign.id;
        let now = crate::now(self.clock().as_ref());
        let at = time_text(now);
        let mut entries = Vec::with_capacity(decisions.len());
        let mut views = Vec::with_capacity(decisions.len());
        let mut revocations = 0;
        let mut refused = Vec::new();
        for (item, decision) in decisions {
            let key = format!("{DECISION}{id}:{}", item.id);
            if !self
                .store()
                .claim_state(&key, &encode(&decision), &at)
                .await?
            {
                refused.push(item.id.clone());
                continue;
            }
            if decision.decision == Verdict::Revoke {
                revocations += 1;
                let pending = PendingRevocation {
                    campaign: id.clone(),
                    item: item.clone(),
                    retry_at: None,
                    attempts: 0,
                };
                self.store()
                    .put_state(&format!("{REVOKE}{id}:{}", item.id), &encode(&pending), &at)
                    .await?;
            }
            entries.push(audit(
                now,
                &decision.decided_by,
                "review.decided",
                serde_json::json!({
                    "campaign": id,
                    "item": item.id,
                    "subject": item.subject,
                    "access": item.access,
                    "decision": decision.decision,
                    "reason": decision.reason,
                }),
            ));
            views.push(ItemView::of(&item, Some(&decision)));
        }
        if !entries.is_empty() {
            self.store().append_audit(&entries).await?;
        }
        if !refused.is_empty() && views.is_empty() {
            return Err(not_allowed(format!(
                "already decided: {}",
                refused.join(", ")
            )));
        }
        tracing::info!(campaign = %id, decided = views.len(), revocations, by = actor, "access review decisions recorded");
        if revocations > 0 {
            // A value of its own each time (not the time: two in one second must differ).
            let wish = format!("{at} {:016x}", rand::random::<u64>());
            self.store()
                .put_state(REVOCATIONS_WANTED, &wish, &at)
                .await?;
            self.wake_reconciler();
        }
        self.close_if_complete(id).await?;
        Ok(views)
    }

    /// Closes a campaign (admins): every item decided and every revocation verified, or past
    /// its due date (undecided items then follow its `on_due` rule). Waits up to 20 s for
    /// the reconciler to verify revocations still in flight.
    pub async fn close_review(
        &self,
        admin: Admin<'_>,
        id: &str,
    ) -> Result<CampaignView, ServiceError> {
        let campaign = self.campaign(id).await?;
        if campaign.is_open() {
            let undecided = self
                .items_of(id)
                .await?
                .iter()
                .filter(|(_, d)| d.is_none())
                .count();
            if undecided > 0 {
                if self.now() < campaign.due_at {
                    return Err(ServiceError::NotYet(format!(
                        "campaign {id} has {undecided} undecided item{}; decide them, or wait for the due date ({}) when they are {}",
                        if undecided == 1 { "" } else { "s" },
                        time_text(campaign.due_at),
                        match campaign.on_due {
                            OnDue::Keep => "kept",
                            OnDue::Revoke => "revoked",
                        }
                    )));
                }
                self.apply_due_rule(&campaign).await?;
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                if self.close_if_complete(id).await? {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let pending: Vec<String> = self
                        .items_of(id)
                        .await?
                        .iter()
                        .filter(|(_, d)| {
                            d.as_ref().is_some_and(|d| {
                                d.decision == Verdict::Revoke && d.revocation_verified_at.is_none()
                            })
                        })
                        .map(
                            |(i, d)| match d.as_ref().and_then(|d| d.revocation_error.clone()) {
                                Some(e) => format!("{} ({e})", i.id),
                                None => i.id.clone(),
                            },
                        )
                        .collect();
                    return Err(ServiceError::NotYet(format!(
                        "campaign {id}: revocations not yet verified: {}",
                        pending.join(", ")
                    )));
                }
                self.wake_reconciler();
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            tracing::info!(campaign = %id, by = admin.login(), "access review closed on request");
        }
        self.full_review(id).await
    }

    /// Undecided items of a campaign past its due date get the campaign's `on_due` verdict.
    async fn apply_due_rule(&self, campaign: &Campaign) -> Result<usize, ServiceError> {
        let now = crate::now(self.clock().as_ref());
        let verdict = match campaign.on_due {
            OnDue::Keep => Verdict::Keep,
            OnDue::Revoke => Verdict::Revoke,
        };
        let undecided: Vec<(Item, Decision)> = self
            .items_of(&campaign.id)
            .await?
            .into_iter()
            .filter(|(_, d)| d.is_none())
            .map(|(i, _)| {
                let (decision, reason) = match (&i.protected, verdict) {
                    (Some(why), Verdict::Revoke) => (
                        Verdict::Keep,
                        format!("undecided at the due date; kept, as it cannot be revoked: {why}"),
                    ),
                    _ => (
                        verdict,
                        format!(
                            "undecided at the due date {}: the campaign's rule is {}",
                            time_text(campaign.due_at),
                            verdict.as_str()
                        ),
                    ),
                };
                (
                    i,
                    Decision {
                        decision,
                        reason,
                        decided_by: SYSTEM.to_owned(),
                        decided_at: now,
                        revocation_verified_at: None,
                        revocation_error: None,
                        revocation_attempts: 0,
                    },
                )
            })
            .collect();
        let n = undecided.len();
        if n > 0 {
            tracing::warn!(campaign = %campaign.id, items = n, rule = verdict.as_str(), "access review due: undecided items follow the campaign's rule");
            self.record_decisions(campaign, undecided, SYSTEM).await?;
        }
        Ok(n)
    }

    /// Closes the campaign if every item is decided and every revocation verified; whether it
    /// is closed now.
    async fn close_if_complete(&self, id: &str) -> Result<bool, ServiceError> {
        let mut campaign = self.campaign(id).await?;
        if !campaign.is_open() {
            return Ok(true);
        }
        // Counted first: a large campaign is read whole only once every item is decided.
        let decided = self
            .store()
            .count_states(&format!("{DECISION}{id}:"))
            .await?;
        if decided < campaign.item_count as u64 {
            return Ok(false);
        }
        let items = self.items_of(id).await?;
        let complete = items.iter().all(|(_, d)| {
            d.as_ref()
                .is_some_and(|d| d.decision == Verdict::Keep || d.revocation_verified_at.is_some())
        });
        if !complete {
            return Ok(false);
        }
        let now = crate::now(self.clock().as_ref());
        let by_rule = items
            .iter()
            .filter(|(_, d)| d.as_ref().is_some_and(|d| d.decided_by == SYSTEM))
            .count();
        let note = if by_rule == 0 {
            "every item decided, every revocation verified".to_owned()
        } else {
            format!(
                "closed at the due date: {by_rule} undecided item{} {} by the campaign's rule",
                if by_rule == 1 { " was" } else { "s were" },
                match campaign.on_due {
                    OnDue::Keep => "kept",
                    OnDue::Revoke => "revoked",
                }
            )
        };
        let kept = items
            .iter()
            .filter(|(_, d)| d.as_ref().is_some_and(|d| d.decision == Verdict::Keep))
            .count();
        let written = self
            .store()
            .append_audit(&[audit(
                now,
                SYSTEM,
                "review.closed",
                serde_json::json!({
                    "campaign": id,
                    "items": items.len(),
                    "kept": kept,
                    "revoked": items.len() - kept,
                    "note": note,
                }),
            )])
            .await?;
        campaign.state = "closed".into();
        campaign.closed_at = Some(now);
        campaign.closed_by = Some(SYSTEM.to_owned());
        campaign.close_note = Some(note);
        campaign.audit_chain_head_at_close = written.last().map(|e| e.hash.clone());
        let at = time_text(now);
        self.store()
            .put_state(&format!("{CAMPAIGN}{id}"), &encode(&campaign), &at)
            .await?;
        self.store().delete_state(&format!("{OPEN}{id}")).await?;
        tracing::info!(campaign = %id, items = items.len(), kept, "access review closed");
        Ok(true)
    }

    /// Revocations still to make or verify (those waiting out a backoff too).
    pub async fn pending_revocations(&self) -> Result<Vec<PendingRevocation>, ServiceError> {
        let mut out = Vec::new();
        for (key, text) in self.store().states(REVOKE).await? {
            out.push(decode(&key, &text)?);
        }
        Ok(out)
    }

    /// Records what became of a revocation: verified (its pending record goes, the campaign
    /// may close) or failed (retried with backoff).
    pub async fn record_revocation(
        &self,
        pending: &PendingRevocation,
        outcome: Result<(), String>,
    ) -> Result<(), ServiceError> {
        let (id, item) = (&pending.campaign, &pending.item);
        let key = format!("{DECISION}{id}:{}", item.id);
        let Some(text) = self.store().get_state(&key).await? else {
            return Ok(());
        };
        let mut decision: Decision = decode(&key, &text)?;
        let now = crate::now(self.clock().as_ref());
        let at = time_text(now);
        let revoke_key = format!("{REVOKE}{id}:{}", item.id);
        match outcome {
            Ok(()) => {
                decision.revocation_verified_at = Some(now);
                decision.revocation_error = None;
                decision.revocation_attempts += 1;
                self.store()
                    .put_state(&key, &encode(&decision), &at)
                    .await?;
                self.store()
                    .append_audit(&[audit(
                        now,
                        SYSTEM,
                        "review.revocation_verified",
                        serde_json::json!({
                            "campaign": id, "item": item.id, "subject": item.subject,
                            "access": item.access, "revocation": item.revocation,
                        }),
                    )])
                    .await?;
                self.store().delete_state(&revoke_key).await?;
                tracing::info!(campaign = %id, item = %item.id, subject = %item.subject, "access review: revocation verified");
                self.close_if_complete(id).await?;
            }
            Err(error) => {
                decision.revocation_error = Some(error.clone());
                decision.revocation_attempts += 1;
                self.store()
                    .put_state(&key, &encode(&decision), &at)
                    .await?;
                let mut next = pending.clone();
                next.attempts += 1;
                let backoff = 2i64.saturating_pow(next.attempts.min(6)).min(60);
                next.retry_at = Some(now + time::Duration::seconds(backoff));
                self.store()
                    .put_state(&revoke_key, &encode(&next), &at)
                    .await?;
                self.store()
                    .append_audit(&[audit(
                        now,
                        SYSTEM,
                        "review.revocation_failed",
                        serde_json::json!({
                            "campaign": id, "item": item.id, "subject": item.subject,
                            "error": error, "attempt": next.attempts,
                        }),
                    )])
                    .await?;
                tracing::warn!(campaign = %id, item = %item.id, subject = %item.subject, error = %error, "access review: revocation failed; retrying");
            }
        }
        Ok(())
    }

    /// The leader's review duties: campaigns past their due date follow their rule and close
    /// when complete; `[[review_schedule]]`s start campaigns when due.
    pub async fn review_housekeeping(&self) -> Result<(), ServiceError> {
        let now = self.now();
        for (key, _) in self.store().states(OPEN).await? {
            let id = key.trim_start_matches(OPEN).to_owned();
            let campaign = match self.campaign(&id).await {
                Ok(c) => c,
                Err(ServiceError::UnknownReview(_)) => {
                    self.store().delete_state(&key).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if campaign.is_open() && now >= campaign.due_at {
                self.apply_due_rule(&campaign).await?;
            }
            self.close_if_complete(&id).await?;
        }
        for schedule in &self.config().review_schedules {
            let key = format!("{SCHEDULE}{}", schedule.name);
            let last = self
                .store()
                .get_state(&key)
                .await?
                .and_then(|t| tailnet::clock::parse_rfc3339(&t));
            if last.is_some_and(|l| now - l < schedule.every.to_time()) {
                continue;
            }
            let at = time_text(now);
            self.store().put_state(&key, &at, &at).await?;
            let started = self
                .start_review(
                    SYSTEM,
                    NewCampaign {
                        name: format!("{} {}", schedule.name, &at[..10.min(at.len())]),
                        scopes: schedule.scopes.clone(),
                        due: Some(schedule.due_in),
                        reviewer: schedule.reviewer.clone(),
                        on_due: schedule.on_due,
                        keep_reason_required: schedule.keep_reason_required,
                        schedule: Some(schedule.name.clone()),
                    },
                )
                .await;
            match started {
                Ok(c) => {
                    tracing::info!(schedule = %schedule.name, campaign = %c.campaign.id, items = c.items.len(), "scheduled access review started")
                }
                Err(e) => {
                    tracing::error!(schedule = %schedule.name, error = %e, "cannot start a scheduled access review")
                }
            }
        }
        Ok(())
    }

    /// A campaign with every item (for exports and evidence: auditors).
    pub async fn review_for_export(
        &self,
        _auditor: Auditor<'_>,
        id: &str,
    ) -> Result<CampaignView, ServiceError> {
        self.full_review(id).await
    }

    /// Records that a campaign's evidence was exported; the audit chain's head right after.
    pub async fn record_review_export(
        &self,
        auditor: Auditor<'_>,
        id: &str,
    ) -> Result<crate::service::AuditHead, ServiceError> {
        let now = crate::now(self.clock().as_ref());
        self.store()
            .append_audit(&[audit(
                now,
                auditor.login(),
                "review.exported",
                serde_json::json!({ "campaign": id }),
            )])
            .await?;
        tracing::info!(campaign = %id, by = auditor.login(), "access review exported");
        self.audit_head().await
    }

    async fn full_review(&self, id: &str) -> Result<CampaignView, ServiceError> {
        let campaign = self.campaign(id).await?;
        let items = self.items_of(id).await?;
        Ok(view(
            campaign,
            items
                .iter()
                .map(|(i, d)| ItemView::of(i, d.as_ref()))
                .collect(),
            self.now(),
        ))
    }

    /// Every campaign created before `to` and not closed before `from` (auditors).
    pub async fn reviews_between(
        &self,
        auditor: Auditor<'_>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<CampaignView>, ServiceError> {
        let mut out = Vec::new();
        for (key, text) in self.store().states(CAMPAIGN).await? {
            let c: Campaign = decode(&key, &text)?;
            if c.created_at < to && c.closed_at.is_none_or(|t| t >= from) {
                out.push(self.review_for_export(auditor, &c.id).await?);
            }
        }
        out.sort_by_key(|v| v.campaign.created_at);
        Ok(out)
    }
}

fn reviewer_matches(reviewer: &str, login: &str, dir: &Directory) -> bool {
    reviewer == login
        || reviewer
            .parse::<Selector>()
            .is_ok_and(|s| !matches!(s, Selector::Login(_)) && dir.matches(&s, login))
}

/// A campaign's view: its progress and each reviewer's share.
fn view(campaign: Campaign, items: Vec<ItemView>, now: OffsetDateTime) -> CampaignView {
    let mut progress = Progress {
        items: items.len(),
        ..Progress::default()
    };
    let mut reviewers: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for i in &items {
        let share = reviewers.entry(i.reviewer.clone()).or_default();
        share.0 += 1;
        match i.decision {
            None => share.1 += 1,
            Some(Verdict::Keep) => {
                progress.decided += 1;
                progress.kept += 1;
            }
            Some(Verdict::Revoke) => {
                progress.decided += 1;
                progress.revoked += 1;
                if i.revocation_verified_at.is_some() {
                    progress.revocations_verified += 1;
                } else {
                    progress.revocations_pending += 1;
                }
            }
        }
    }
    let overdue = campaign.is_open() && now >= campaign.due_at;
    CampaignView {
        reviewers: reviewers
            .into_iter()
            .map(|(reviewer, (items, undecided))| ReviewerProgress {
                reviewer,
                items,
                undecided,
                late: overdue && undecided > 0,
            })
            .collect(),
        campaign,
        progress,
        items,
    }
}

/// The items as CSV (one row per item, with its decision and verification).
pub fn items_csv(v: &CampaignView) -> String {
    let mut out = csv::Writer::from_writer(Vec::new());
    let t = |x: Option<OffsetDateTime>| x.map(time_text).unwrap_or_default();
    let _ = out.write_record([
        "id",
        "subject",
        "kind",
        "target",
        "access",
        "reviewer",
        "decision",
        "reason",
        "decided_by",
        "decided_at",
        "revocation",
        "revocation_verified_at",
    ]);
    for i in &v.items {
        let _ = out.write_record([
            i.id.as_str(),
            &i.subject,
            &i.kind,
            &i.target,
            &i.access,
            &i.reviewer,
            i.decision.map_or("", Verdict::as_str),
            i.reason.as_deref().unwrap_or_default(),
            i.decided_by.as_deref().unwrap_or_default(),
            &t(i.decided_at),
            &i.revocation,
            &t(i.revocation_verified_at),
        ]);
    }
    String::from_utf8(out.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{InvKey, InvUser, Rule};

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
                index: 1
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
