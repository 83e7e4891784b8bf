//! Entitlements (requestable access), selectors over the tailnet (who may request, who
//! approves), and the start-up check of entitlements against the live policy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::duration::Span;

/// How a grant becomes real in the tailnet.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "strategy", rename_all = "lowercase")]
pub enum Strategy {
    /// The requester's login joins a policy group (a HuJSON edit written with `If-Match`).
    Group { group: String, remove_drift: bool },
    /// A `custom:` posture attribute with Tailscale's own expiry on the requester's devices.
    Posture {
        attribute: String,
        value: serde_json::Value,
    },
    /// The requester's tailnet role is raised, and the previous one restored after.
    Role { role: String },
    /// A tag on the requester's own devices for a time; their previous tags come back after.
    Tag { tag: String },
    /// The requester's login joins the `src` of the policy rule marked
    /// `// tidegate:rule NAME` (in `acls`, `grants` or `ssh`), like a group's members.
    Rule { rule: String },
    /// A short-lived tagged auth key, shown once to the requester.
    #[serde(rename = "authkey")]
    AuthKey {
        tags: Vec<String>,
        ephemeral: bool,
        reusable: bool,
        preauthorized: bool,
    },
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Group { .. } => "group",
            Strategy::Posture { .. } => "posture",
            Strategy::Role { .. } => "role",
            Strategy::Tag { .. } => "tag",
            Strategy::Rule { .. } => "rule",
            Strategy::AuthKey { .. } => "authkey",
        }
    }
}

/// A list of logins in the policy file that a strategy edits: a group's members, or the `src`
/// of a marked rule. Keyed `group:NAME` or `rule:NAME` wherever they are managed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyList {
    Group(String),
    Rule(String),
}

/// Where a [`PolicyList`] is in one version of the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    section: &'static str,
    index: Option<usize>,
    key: String,
}

impl Located {
    /// The HuJSON path of the list.
    pub fn path(&self) -> Vec<hujson::Seg<'_>> {
        match self.index {
            Some(i) => vec![
                hujson::Seg::Key(self.section),
                hujson::Seg::Index(i),
                hujson::Seg::Key(&self.key),
            ],
            None => vec![hujson::Seg::Key(self.section), hujson::Seg::Key(&self.key)],
        }
    }
}

/// The rule sections a marker may stand in.
const RULE_SECTIONS: [&str; 3] = ["acls", "grants", "ssh"];

/// Every `// tidegate:rule NAME` marker directly above a rule: name → `(section, index)`s.
pub fn rule_markers(doc: &hujson::Document) -> BTreeMap<String, Vec<(&'static str, usize)>> {
    let text = doc.text();
    let mut out: BTreeMap<String, Vec<(&'static str, usize)>> = BTreeMap::new();
    for section in RULE_SECTIONS {
        let Some(rules) = doc
            .get(&[hujson::Seg::Key(section)])
            .and_then(|n| n.as_array())
        else {
            continue;
        };
        for (i, rule) in rules.iter().enumerate() {
            // The last comment before the rule, with only white space between them.
            let above = doc
                .comments()
                .iter()
                .rev()
                .find(|(_, end)| *end <= rule.start)
                .filter(|(_, end)| text[*end..rule.start].trim().is_empty());
            if let Some((start, end)) = above {
                let comment = text[*start..*end].trim_start_matches("//").trim();
                if let Some(name) = comment.strip_prefix("tidegate:rule ") {
                    out.entry(name.trim().to_owned())
                        .or_default()
                        .push((section, i));
                }
            }
        }
    }
    out
}

impl PolicyList {
    pub fn key(&self) -> String {
        match self {
            PolicyList::Group(g) => g.clone(),
            PolicyList::Rule(r) => format!("rule:{r}"),
        }
    }

    pub fn from_key(key: &str) -> PolicyList {
        match key.strip_prefix("rule:") {
            Some(r) => PolicyList::Rule(r.to_owned()),
            None => PolicyList::Group(key.to_owned()),
        }
    }

    /// Where the list is in `doc`; for a rule, its marker must be there exactly once.
    pub fn locate(&self, doc: &hujson::Document) -> Result<Located, String> {
        match self {
            PolicyList::Group(g) => Ok(Located {
                section: "groups",
                index: None,
                key: g.clone(),
            }),
            PolicyList::Rule(name) => match rule_markers(doc).get(name).map(Vec::as_slice) {
                Some([(section, index)]) => Ok(Located {
                    section,
                    index: Some(*index),
                    key: "src".into(),
                }),
                Some(many) if many.len() > 1 => Err(format!(
                    "the marker // tidegate:rule {name} is used {} times ({}); it must mark one rule",
                    many.len(),
                    many.iter()
                        .map(|(s, i)| format!("{s}[{i}]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                _ => Err(format!(
                    "no rule in acls, grants or ssh is marked // tidegate:rule {name} (the comment goes on the line above the rule)"
                )),
            },
        }
    }
}

impl Strategy {
    /// The list of logins in the policy file this strategy edits, if it edits one.
    pub fn policy_list(&self) -> Option<PolicyList> {
        match self {
            Strategy::Group { group, .. } => Some(PolicyList::Group(group.clone())),
            Strategy::Rule { rule } => Some(PolicyList::Rule(rule.clone())),
            _ => None,
        }
    }
}

/// Tailscale's user roles, lowest first, with their rank: a role grant only ever raises a
/// user (member < auditor, billing-admin < it-admin, network-admin < admin < owner).
pub const ROLES: [(&str, u8); 7] = [
    ("member", 0),
    ("auditor", 1),
    ("billing-admin", 1),
    ("it-admin", 2),
    ("network-admin", 2),
    ("admin", 3),
    ("owner", 4),
];

/// The rank of a Tailscale role; `None` for a name Tailscale does not have.
pub fn role_rank(role: &str) -> Option<u8> {
    ROLES
        .iter()
        .find(|(name, _)| *name == role)
        .map(|(_, r)| *r)
}

/// Whether `role` is strictly above `own` (an unknown role is above nothing and below all).
pub fn role_above(role: &str, own: &str) -> bool {
    match (role_rank(role), role_rank(own)) {
        (Some(r), Some(o)) => r > o,
        (Some(_), None) => true,
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasonRule {
    Required,
    Optional,
}

/// Someone or some set of people in the tailnet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// A policy group, e.g. `group:sre`.
    Group(String),
    /// Users with a tailnet role, e.g. `role:admin` (owners count as admins).
    Role(String),
    /// One user by login.
    Login(String),
    /// Every member of the tailnet (`autogroup:member`).
    Member,
}

impl FromStr for Selector {
    type Err = String;

    fn from_str(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        if text == "autogroup:member" {
            Ok(Selector::Member)
        } else if let Some(role) = text.strip_prefix("role:") {
            const ROLES: [&str; 7] = [
                "owner",
                "admin",
                "member",
                "it-admin",
                "network-admin",
                "billing-admin",
                "auditor",
            ];
            if ROLES.contains(&role) {
                Ok(Selector::Role(role.to_owned()))
            } else {
                Err(format!(
                    "{text:?}: unknown role (one of {})",
                    ROLES.join(", ")
                ))
            }
        } else if text.starts_with("group:") && text.len() > 6 {
            Ok(Selector::Group(text.to_owned()))
        } else if text.contains('@') && !text.contains(char::is_whitespace) {
            Ok(Selector::Login(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a selector (use group:NAME, role:ROLE, a login, or autogroup:member)"
            ))
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Group(g) => f.write_str(g),
            Selector::Role(r) => write!(f, "role:{r}"),
            Selector::Login(l) => f.write_str(l),
            Selector::Member => f.write_str("autogroup:member"),
        }
    }
}

impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A requestable thing, from the config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entitlement {
    pub name: String,
    pub description: String,
    #[serde(flatten)]
    pub strategy: Strategy,
    pub requesters: Vec<Selector>,
    pub approvers: Vec<Selector>,
    pub approvals: u32,
    pub self_approval: bool,
    pub reason: ReasonRule,
    pub default_duration: Span,
    pub min_duration: Span,
    pub max_duration: Span,
    pub pending_ttl: Span,
    /// Requesters matching one of these are approved without review.
    pub auto_approve: Vec<Selector>,
    /// Eligible requesters may grant it to themselves at once; announced and marked for review.
    pub break_glass: bool,
}

/// Who is who in the tailnet: roles from the user list, groups from the policy file.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Login → role, for every user of the tailnet.
    pub roles: BTreeMap<String, String>,
    /// Policy group → member logins.
    pub groups: BTreeMap<String, BTreeSet<String>>,
}

impl Directory {
    pub fn from_tailnet(users: &[tailnet::User], policy: &policy::PolicyFile) -> Directory {
        let roles = users
            .iter()
            .filter(|u| u.status != "suspended")
            .map(|u| (u.login_name.clone(), u.role.clone()))
            .collect();
        let groups = policy
            .groups
            .iter()
            .map(|(g, members)| (g.clone(), members.iter().cloned().collect()))
            .collect();
        Directory { roles, groups }
    }

    pub fn is_user(&self, login: &str) -> bool {
        self.roles.contains_key(login)
    }

    pub fn matches(&self, selector: &Selector, login: &str) -> bool {
        if !self.is_user(login) {
            return false;
        }
        match selector {
            Selector::Member => true,
            Selector::Login(l) => l == login,
            Selector::Role(role) => {
                let actual = self.roles.get(login).map(String::as_str).unwrap_or("");
                actual == role || (role == "admin" && actual == "owner")
            }
            Selector::Group(g) => self.groups.get(g).is_some_and(|m| m.contains(login)),
        }
    }

    pub fn matches_any(&self, selectors: &[Selector], login: &str) -> bool {
        selectors.iter().any(|s| self.matches(s, login))
    }
}

/// A problem found when checking an entitlement against the live policy. Such an entitlement
/// would grant nothing, so it is refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyIssue {
    pub entitlement: String,
    pub message: String,
}

impl fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entitlement {:?}: {}", self.entitlement, self.message)
    }
}

/// Checks entitlements against the policy: groups that do not exist, posture attributes that
/// no posture used by a rule reads, selectors naming unknown groups.
pub fn check_against_policy(
    entitlements: &[Entitlement],
    parsed: &policy::Policy,
) -> Vec<PolicyIssue> {
    let policy = &parsed.file;
    let doc = hujson::Document::parse(&parsed.text).ok();
    let mut issues = Vec::new();
    let mut issue = |e: &Entitlement, message: String| {
        issues.push(PolicyIssue {
            entitlement: e.name.clone(),
            message,
        })
    };
    // Postures some rule actually uses.
    let mut used_postures: BTreeSet<&String> = policy.default_src_posture.iter().collect();
    for grant in policy.grants.iter().flatten() {
        used_postures.extend(grant.src_posture.iter());
    }
    for acl in policy.acls.iter().flatten() {
        used_postures.extend(acl.src_posture.iter());
    }
    for ssh in &policy.ssh {
        used_postures.extend(ssh.src_posture.iter());
    }
    for e in entitlements {
        match &e.strategy {
            Strategy::Rule { rule } => {
                let located = doc
                    .as_ref()
                    .map(|d| PolicyList::Rule(rule.clone()).locate(d));
                if let Some(Err(why)) = located {
                    issue(e, why);
                }
            }
            Strategy::Group { group, .. } => {
                if !policy.groups.contains_key(group) {
                    issue(
                        e,
                        format!(
                            "group {group:?} does not exist in the policy file, so membership would grant nothing"
                        ),
                    );
                }
            }
            Strategy::Posture { attribute, .. } => {
                let read_by: Vec<&String> = policy
                    .postures
                    .iter()
                    .filter(|(_, conditions)| {
                        conditions.iter().any(|c| {
                            policy::posture::Condition::parse(c)
                                .is_ok_and(|c| c.attribute == *attribute)
                        })
                    })
                    .map(|(name, _)| name)
                    .collect();
                if read_by.is_empty() {
                    issue(
                        e,
                        format!(
                            "no posture in the policy file reads {attribute:?}, so setting it would grant nothing"
                        ),
                    );
                } else if !read_by.iter().any(|p| used_postures.contains(p)) {
                    let names: Vec<&str> = read_by.iter().map(|s| s.as_str()).collect();
                    issue(
                        e,
                        format!(
                            "{attribute:?} is read by {} but no rule's srcPosture (or defaultSrcPosture) uses it, so setting it would grant nothing",
                            names.join(", ")
                        ),
                    );
                }
            }
            Strategy::AuthKey { tags, .. } => {
                for tag in tags {
                    if !policy.tag_owners.contains_key(tag) {
                        issue(
                            e,
                            format!("tag {tag:?} is not in tagOwners, so no key can carry it"),
                        );
                    }
                }
            }
            Strategy::Tag { tag } => {
                if !policy.tag_owners.contains_key(tag) {
                    issue(
                        e,
                        format!("tag {tag:?} is not in tagOwners, so no device can carry it"),
                    );
                }
            }
            Strategy::Role { .. } => {}
        }
        for selector in e
            .requesters
            .iter()
            .chain(&e.approvers)
            .chain(&e.auto_approve)
        {
            if let Selector::Group(g) = selector
                && !policy.groups.contains_key(g)
            {
                issue(
                    e,
                    format!("selector {g:?} names a group the policy file does not define"),
                );
            }
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_match() {
        let dir = Directory {
            roles: [
                ("alice@example.com".to_owned(), "owner".to_owned()),
                ("bob@example.com".to_owned(), "member".to_owned()),
            ]
            .into(),
            groups: [(
                "group:sre".to_owned(),
                ["bob@example.com".to_owned()].into(),
            )]
            .into(),
        };
        let sel = |s: &str| s.parse::<Selector>().unwrap();
        assert!(
            dir.matches(&sel("role:admin"), "alice@example.com"),
            "owners are admins"
        );
        assert!(!dir.matches(&sel("role:admin"), "bob@example.com"));
        assert!(dir.matches(&sel("group:sre"), "bob@example.com"));
        assert!(dir.matches(&sel("autogroup:member"), "bob@example.com"));
        assert!(
            !dir.matches(&sel("autogroup:member"), "mallory@evil.example"),
            "unknown users match nothing"
        );
        assert!(dir.matches(&sel("alice@example.com"), "alice@example.com"));
        assert!("role:wizard".parse::<Selector>().is_err());
        assert!("sre".parse::<Selector>().is_err());
    }
}
