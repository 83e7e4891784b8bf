//! Compliance checks on the inventory and the directory, each `pass` or `fail` with findings
//! (subject, detail, first seen): every user is identified, leavers lost access in time, the
//! critical systems' access is configured as declared, access is valid for each person's role,
//! and the hygiene checks (stale devices, key expiry disabled, keys about to expire).
//!
//! Which rule reaches a critical system is read from the policy's text: a rule reaches it when
//! its destination names one of the system's tags (or `*`). A rule's source reaches people
//! "through tidegate" when it is a group a `group` entitlement manages, a tag a `tag`
//! entitlement sets, or when the rule requires a posture that a `posture` entitlement's
//! attribute satisfies; any other source is a standing path.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{Config, CriticalSystem};
use crate::entitlement::Strategy;
use crate::inventory::{Rule, Snapshot};
use crate::people::People;
use crate::request::Request;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// A login, a hostname, a key id, or a rule (`acls[2] (line 31)`).
    pub subject: String,
    pub detail: String,
    /// When this finding was first seen (RFC 3339).
    pub first_seen: String,
    /// `leaver-removed`: removed, but later than the grace allowed (shown, not failing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub id: String,
    pub title: String,
    /// `pass` or `fail`.
    pub status: String,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRun {
    pub at: String,
    pub checks: Vec<CheckResult>,
}

impl CheckRun {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status == "pass")
    }
}

/// What the checks look at.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub inventory: &'a Snapshot,
    pub people: &'a People,
    /// Active grants (who reaches a critical system through tidegate right now).
    pub active: &'a [Request],
    pub now: OffsetDateTime,
    /// When each leaver's tailnet user was first seen suspended or gone (login → time).
    pub removed_at: &'a BTreeMap<String, OffsetDateTime>,
}

/// A finding before its first-seen time is known.
struct Raw {
    subject: String,
    detail: String,
    late: bool,
}

fn raw(subject: impl Into<String>, detail: impl Into<String>) -> Raw {
    Raw {
        subject: subject.into(),
        detail: detail.into(),
        late: false,
    }
}

/// Runs every check. `first_seen` maps `check|subject|detail` to when it was first seen; new
/// findings are added to it with `now`, resolved ones dropped.
pub fn run(inputs: &Inputs<'_>, first_seen: &mut BTreeMap<String, String>) -> CheckRun {
    let now_text = crate::time_text(inputs.now);
    let checks: Vec<(&str, &str, Vec<Raw>)> = vec![
        (
            "user-identified",
            "Every tailnet user is a person in the directory, still active",
            user_identified(inputs),
        ),
        (
            "leaver-removed",
            "Leavers lost their tailnet access within the grace period",
            leaver_removed(inputs),
        ),
        (
            "critical-access-configured",
            "Critical systems: tags in use, standing access only as declared, an entitlement reaches them",
            critical_configured(inputs),
        ),
        (
            "access-valid-for-role",
            "Who reaches a critical system, or holds a role above member, is valid for it",
            valid_for_role(inputs),
        ),
        (
            "stale-devices",
            "Devices seen recently",
            stale_devices(inputs),
        ),
        (
            "key-expiry-disabled",
            "User devices keep key expiry",
            key_expiry_disabled(inputs),
        ),
        (
            "keys-expiring",
            "Keys and OAuth clients not about to expire",
            keys_expiring(inputs),
        ),
    ];
    let mut seen_now = BTreeMap::new();
    let checks = checks
        .into_iter()
        .map(|(id, title, raws)| {
            let findings: Vec<Finding> = raws
                .into_iter()
                .map(|r| {
                    let key = format!("{id}|{}|{}", r.subject, r.detail);
                    let first = first_seen
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| now_text.clone());
                    seen_now.insert(key, first.clone());
                    Finding {
                        subject: r.subject,
                        detail: r.detail,
                        first_seen: first,
                        late: r.late,
                    }
                })
                .collect();
            let failing = findings.iter().any(|f| !f.late);
            CheckResult {
                id: id.to_owned(),
                title: title.to_owned(),
                status: if failing { "fail" } else { "pass" }.to_owned(),
                findings,
            }
        })
        .collect();
    *first_seen = seen_now;
    CheckRun {
        at: now_text,
        checks,
    }
}

fn user_identified(i: &Inputs<'_>) -> Vec<Raw> {
    let mut out = Vec::new();
    for u in i
        .inventory
        .users
        .iter()
        .filter(|u| u.status != "suspended" && u.kind != "shared")
    {
        match i.people.get(&u.login) {
            None => out.push(raw(
                &u.login,
                format!("tailnet {} with no directory record", u.role),
            )),
            Some(p) if p.terminated => out.push(raw(
                &u.login,
                format!(
                    "terminated{} in the directory, still an active tailnet user",
                    p.terminated_at
                        .map(|t| format!(" on {}", crate::time_text(t)))
                        .unwrap_or_default()
                ),
            )),
            Some(_) => {}
        }
    }
    for inv in &i.inventory.invites {
        let email = inv.email.to_lowercase();
        match i.people.get(&email) {
            _ if email.is_empty() => out.push(raw(
                &inv.id,
                format!("pending {} invite with no e-mail (an open link)", inv.role),
            )),
            None => out.push(raw(
                &email,
                format!(
                    "pending {} invite to someone not in the directory",
                    inv.role
                ),
            )),
            Some(p) if p.terminated => out.push(raw(
                &email,
                format!("pending {} invite to a leaver", inv.role),
            )),
            Some(_) => {}
        }
    }
    out
}

fn leaver_removed(i: &Inputs<'_>) -> Vec<Raw> {
    let grace = i.config.compliance.leaver_grace.to_time();
    let mut out = Vec::new();
    for p in i.people.by_login.values().filter(|p| p.terminated) {
        let Some(terminated) = p.terminated_at else {
            continue;
        };
        let user = i
            .inventory
            .users
            .iter()
            .find(|u| u.login.eq_ignore_ascii_case(&p.login));
        let active = user.is_some_and(|u| u.status != "suspended");
        let when = crate::time_text(terminated);
        if active {
            if i.now > terminated + grace {
                out.push(raw(&p.login, format!("terminated {when}; still active")));
            }
            continue;
        }
        if let Some(removed) = i.removed_at.get(&p.login)
            && *removed > terminated + grace
        {
            out.push(Raw {
                subject: p.login.clone(),
                detail: format!(
                    "terminated {when}; removed {} (late)",
                    crate::time_text(*removed)
                ),
                late: true,
            });
        }
    }
    out
}

/// Whether a rule's destination names one of `tags` (or everything).
pub(crate) fn reaches(rule: &Rule, tags: &[String]) -> bool {
    rule.dst.iter().any(|d| {
        let target = if rule.section == "acls" {
            d.rsplit_once(':').map_or(d.as_str(), |(host, _)| host)
        } else {
            d.as_str()
        };
        target == "*" || tags.iter().any(|t| t == target)
    })
}

/// How a source selector reaches people: through an entitlement (its name), or standing.
pub(crate) fn through_entitlement(
    config: &Config,
    rule: &Rule,
    src: &str,
    postures: &BTreeMap<String, Vec<String>>,
) -> Option<String> {
    for e in &config.entitlements {
        match &e.strategy {
            Strategy::Group { group, .. } if group == src => return Some(e.name.clone()),
            Strategy::Tag { tag } if tag == src => return Some(e.name.clone()),
            // Logins in a marked rule's sources are its grants; its other sources are standing.
            Strategy::Rule { rule: name }
                if rule.marker.as_deref() == Some(name.as_str()) && src.contains('@') =>
            {
                return Some(e.name.clone());
            }
            Strategy::Posture { attribute, .. } => {
                let satisfied = rule.src_posture.iter().any(|p| {
                    postures
                        .get(p)
                        .is_some_and(|conds| conds.iter().any(|c| c.contains(attribute.as_str())))
                });
                if satisfied {
                    return Some(e.name.clone());
                }
            }
            _ => {}
        }
    }
    None
}

/// The people a source selector lets in, as the inventory has them.
fn people_of(src: &str, inv: &Snapshot) -> Vec<String> {
    if let Some(members) = inv.groups.get(src) {
        return members.clone();
    }
    match src {
        "*" | "autogroup:member" => inv
            .users
            .iter()
            .filter(|u| u.kind != "shared")
            .map(|u| u.login.clone())
            .collect(),
        s if s.contains('@') && !s.starts_with("tag:") => vec![s.to_owned()],
        _ => Vec::new(),
    }
}

/// The critical system's reaching rules, each with its standing sources and the entitlements
/// that reach through it.
struct Path<'r> {
    rule: &'r Rule,
    standing: Vec<String>,
    entitlements: Vec<String>,
}

fn paths<'r>(config: &Config, inv: &'r Snapshot, system: &CriticalSystem) -> Vec<Path<'r>> {
    inv.rules
        .iter()
        .filter(|r| reaches(r, &system.tags))
        .map(|rule| {
            let mut standing = Vec::new();
            let mut entitlements = Vec::new();
            for src in &rule.src {
                match through_entitlement(config, rule, src, &inv.postures) {
                    Some(e) => entitlements.push(e),
                    // Tagged sources are machines, not people.
                    None if src.starts_with("tag:") => {}
                    None => standing.push(src.clone()),
                }
            }
            // A marked rule is reached through its `rule` entitlement even while nobody holds it.
            for e in &config.entitlements {
                let marked = matches!(&e.strategy, Strategy::Rule { rule: name } if rule.marker.as_deref() == Some(name.as_str()));
                if marked && !entitlements.contains(&e.name) {
                    entitlements.push(e.name.clone());
                }
            }
            Path {
                rule,
                standing,
                entitlements,
            }
        })
        .collect()
}

fn critical_configured(i: &Inputs<'_>) -> Vec<Raw> {
    let mut out = Vec::new();
    for system in &i.config.critical {
        if !i
            .inventory
            .devices
            .iter()
            .any(|d| d.tags.iter().any(|t| system.tags.contains(t)))
        {
            out.push(raw(
                &system.name,
                format!("no device carries {}", system.tags.join(" or ")),
            ));
        }
        let paths = paths(i.config, i.inventory, system);
        for p in &paths {
            for src in p.standing.iter().filter(|s| !system.standing.contains(s)) {
                let who = people_of(src, i.inventory);
                out.push(raw(
                    p.rule.label(),
                    format!(
                        "standing access to {} from {src} (not in its standing list){}",
                        system.name,
                        if who.is_empty() {
                            String::new()
                        } else {
                            format!(": lets in {}", who.join(", "))
                        }
                    ),
                ));
            }
        }
        if !paths.iter().any(|p| !p.entitlements.is_empty()) {
            out.push(raw(
                &system.name,
                "no entitlement reaches it: nobody can get just-in-time access".to_owned(),
            ));
        }
    }
    out
}

fn valid_for_role(i: &Inputs<'_>) -> Vec<Raw> {
    let mut out = Vec::new();
    for system in i.config.critical.iter().filter(|s| !s.valid_for.is_empty()) {
        // Who reaches it: standing sources' people, and active grants of entitlements that do.
        let mut who: BTreeMap<String, String> = BTreeMap::new();
        let paths = paths(i.config, i.inventory, system);
        for p in &paths {
            for src in &p.standing {
                for login in people_of(src, i.inventory) {
                    who.entry(login)
                        .or_insert_with(|| format!("standing through {} ({src})", p.rule.label()));
                }
            }
        }
        let reaching: BTreeSet<&String> = paths.iter().flat_map(|p| &p.entitlements).collect();
        for r in i
            .active
            .iter()
            .filter(|r| reaching.contains(&r.entitlement))
        {
            who.entry(r.requester.clone())
                .or_insert_with(|| format!("an active grant of {} ({})", r.entitlement, r.id));
        }
        for (login, how) in who {
            let verdict = match i.people.get(&login) {
                None => Some("not in the directory".to_owned()),
                Some(p) if !system.valid_for.allows(&p.department, &p.title) => Some(format!(
                    "department {:?}, title {:?}: not valid for it",
                    p.department, p.title
                )),
                Some(_) => None,
            };
            if let Some(why) = verdict {
                out.push(raw(
                    &login,
                    format!("reaches {} by {how}; {why}", system.name),
                ));
            }
        }
    }
    for u in i
        .inventory
        .users
        .iter()
        .filter(|u| u.role != "member" && u.status != "suspended")
    {
        let rule = i
            .config
            .role_rules
            .iter()
            .find(|r| r.tailnet_role == u.role);
        let person = i.people.get(&u.login);
        let why = match (rule, person) {
            (None, _) => Some(format!(
                "tailnet role {}: no [[role_rule]] allows it",
                u.role
            )),
            (Some(_), None) => Some(format!("tailnet role {}: not in the directory", u.role)),
            (Some(r), Some(p)) if !r.valid_for.allows(&p.department, &p.title) => Some(format!(
                "tailnet role {}: department {:?}, title {:?} not valid for it",
                u.role, p.department, p.title
            )),
            _ => None,
        };
        if let Some(why) = why {
            out.push(raw(&u.login, why));
        }
    }
    out
}

fn stale_devices(i: &Inputs<'_>) -> Vec<Raw> {
    let limit = time::Duration::days(i64::from(i.config.compliance.stale_device_days));
    i.inventory
        .devices
        .iter()
        .filter(|d| !d.connected)
        .filter_map(|d| {
            let seen = tailnet::clock::parse_rfc3339(&d.last_seen)?;
            (i.now - seen > limit).then(|| {
                raw(
                    d.name.split('.').next().unwrap_or(&d.name),
                    format!(
                        "not seen since {} ({} days)",
                        d.last_seen,
                        (i.now - seen).whole_days()
                    ),
                )
            })
        })
        .collect()
}

fn key_expiry_disabled(i: &Inputs<'_>) -> Vec<Raw> {
    i.inventory
        .devices
        .iter()
        .filter(|d| d.tags.is_empty() && d.key_expiry_disabled)
        .map(|d| {
            raw(
                d.name.split('.').next().unwrap_or(&d.name),
                format!("{}'s device has key expiry disabled", d.owner),
            )
        })
        .collect()
}

fn keys_expiring(i: &Inputs<'_>) -> Vec<Raw> {
    let soon = i.now + time::Duration::days(14);
    i.inventory
        .keys
        .iter()
        .filter(|k| !k.invalid && k.kind != "federated")
        .filter_map(|k| {
            let expires = tailnet::clock::parse_rfc3339(&k.expires)?;
            (expires <= soon).then(|| {
                raw(
                    &k.id,
                    format!(
                        "{} key{} expires {}",
                        k.kind,
                        if k.description.is_empty() {
                            String::new()
                        } else {
                            format!(" {:?}", k.description)
                        },
                        k.expires
                    ),
                )
            })
        })
        .collect()
}

const LAST: &str = "compliance:last";
const FIRST_SEEN: &str = "compliance:first_seen";
const REMOVED: &str = "compliance:removed";

impl crate::service::Service {
    /// Syncs the inventory, runs every check, keeps the run (and when each finding was first
    /// seen), and writes it to the audit log as a check run.
    pub async fn run_checks(&self) -> Result<CheckRun, crate::service::ServiceError> {
        use crate::service::ServiceError;
        let (_, inventory) = self.sync_and_keep(&|_| {}).await?;
        let people = self.people().await?;
        let active = self
            .store()
            .requests(&crate::store::RequestFilter {
                states: vec![crate::request::State::Active],
                ..Default::default()
            })
            .await?;
        let now = self.now();
        let read = |text: Option<String>| -> BTreeMap<String, String> {
            text.and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default()
        };
        // When each leaver's user was first seen gone or suspended.
        let mut removed = read(self.store().get_state(REMOVED).await?);
        for p in people.by_login.values().filter(|p| p.terminated) {
            let active = inventory
                .users
                .iter()
                .any(|u| u.login.eq_ignore_ascii_case(&p.login) && u.status != "suspended");
            if active {
                removed.remove(&p.login);
            } else {
                removed
                    .entry(p.login.clone())
                    .or_insert_with(|| crate::time_text(now));
            }
        }
        let removed_at: BTreeMap<String, OffsetDateTime> = removed
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), tailnet::clock::parse_rfc3339(v)?)))
            .collect();
        let mut first_seen = read(self.store().get_state(FIRST_SEEN).await?);
        let run = run(
            &Inputs {
                config: self.config(),
                inventory: &inventory,
                people: &people,
                active: &active,
                now,
                removed_at: &removed_at,
            },
            &mut first_seen,
        );
        let at = run.at.clone();
        let text = serde_json::to_string(&run)
            .map_err(|e| ServiceError::Invalid(format!("cannot encode the check run: {e}")))?;
        self.store().put_state(LAST, &text, &at).await?;
        self.store()
            .put_state(
                FIRST_SEEN,
                &serde_json::to_string(&first_seen).unwrap_or_default(),
                &at,
            )
            .await?;
        self.store()
            .put_state(
                REMOVED,
                &serde_json::to_string(&removed).unwrap_or_default(),
                &at,
            )
            .await?;
        self.store()
            .append_audit(&[crate::audit::NewAuditEntry {
                at: at.clone(),
                actor: crate::request::SYSTEM.to_owned(),
                action: "check.run".into(),
                request: None,
                detail: text,
            }])
            .await?;
        for c in &run.checks {
            tracing::info!(check = %c.id, status = %c.status, findings = c.findings.len(), "compliance check");
        }
        Ok(run)
    }

    /// The last check run, if any.
    pub async fn last_checks(&self) -> Result<Option<CheckRun>, crate::service::ServiceError> {
        match self.store().get_state(LAST).await? {
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                crate::service::ServiceError::Invalid(format!("stored check run: {e}"))
            }),
            None => Ok(None),
        }
    }
}
