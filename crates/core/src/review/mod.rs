//! Access reviews: campaigns over standing access in the tailnet, each access decided (keep or
//! revoke) by a named reviewer with a time and a reason, revocations carried out by the
//! reconciler and verified by reading the tailnet back, and the evidence an auditor takes away.
//!
//! A campaign's population is frozen when it starts, from a fresh inventory sync. It is kept
//! in the store's named records: `review:campaign:ID` (the campaign), `review:items:ID:NNNNN`
//! (its items, in chunks of [`CHUNK`]), `review:decision:ID:ITEM` (one per decided item,
//! claimed so an item is decided once, across replicas), `review:revoke:ID:ITEM` (a
//! revocation the reconciler has still to make or verify).

mod campaigns;
mod population;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Span;
use crate::entitlement::Selector;
use crate::time_text;

pub use population::{PopulationInputs, assign_reviewer, population};

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
    /// The rule is found again by its section, index and destinations: if rules were added
    /// above it since, the one with the same destinations is meant, never another.
    RemoveFromRule {
        section: String,
        index: usize,
        #[serde(default)]
        dst: Vec<String>,
    },
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
            Revocation::RemoveFromRule { section, index, .. } => {
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
