//! Machine entitlements (`[[machine]]`): a CI job presents the OIDC token its platform gives it
//! and gets a short-lived, tagged auth key, with no secret stored in CI. This module holds what
//! a machine entitlement is, whether a token's claims match it, the per-subject rate, and which
//! nodes joined with its keys. The token's signature and standard claims (issuer, audience,
//! times) are checked by the server against the issuer's published keys, and its `jti` claimed
//! in the database (see `Service::claim_token_id`), before anything here is asked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use time::OffsetDateTime;

use crate::Span;
use crate::entitlement::Selector;

/// The longest an auth key minted for a machine may live.
pub const MAX_KEY_TTL: Span = Span::hours(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineEntitlement {
    pub name: String,
    /// The token issuer, exactly as in the token's `iss` (no trailing slash).
    pub issuer: String,
    pub audience: String,
    /// Claim → pattern (`*` matches any run of characters); every one must match.
    pub claims: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub ephemeral: bool,
    pub preauthorized: bool,
    pub reusable: bool,
    pub key_ttl: Span,
    pub rate: Rate,
    /// Approvals a human must give before the key is minted (0: none).
    pub approvals: u32,
    pub approvers: Vec<Selector>,
    /// How long an ephemeral node that joined with one of these keys may stay.
    pub node_ttl: Span,
    /// With approvals: how long a request may wait for them, and then for its job to take
    /// the key.
    pub pending_ttl: Span,
}

/// How a machine shows as a request's requester: `machine:` and its token's subject.
pub fn requester(subject: &str) -> String {
    format!("machine:{subject}")
}

/// At most `count` keys per `per` for one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Span,
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// `N/s`, `N/m` or `N/h`.
    fn from_str(text: &str) -> Result<Rate, String> {
        let bad = || format!("rate {text:?}: write N/s, N/m or N/h (e.g. \"30/m\")");
        let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" => Span::seconds(1),
            "m" => Span::minutes(1),
            "h" => Span::hours(1),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("rate {text:?}: allow at least one key"));
        }
        Ok(Rate { count, per })
    }
}

/// Whether `value` matches `pattern`, where `*` stands for any run of characters (none too).
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == value;
    };
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// A claim's value as text: strings as they are, numbers and booleans as JSON writes them.
fn claim_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl MachineEntitlement {
    /// The entitlement its requests follow when a person must approve the key: an `authkey`
    /// grant nobody can request as a person, reviewed by its approvers, lasting the key's
    /// time.
    pub fn to_entitlement(&self) -> crate::entitlement::Entitlement {
        crate::entitlement::Entitlement {
            name: self.name.clone(),
            description: format!("auth key for CI jobs ({})", self.tags.join(", ")),
            strategy: crate::entitlement::Strategy::AuthKey {
                tags: self.tags.clone(),
                ephemeral: self.ephemeral,
                reusable: self.reusable,
                preauthorized: self.preauthorized,
            },
            requesters: Vec::new(),
            approvers: self.approvers.clone(),
            approvals: self.approvals,
            self_approval: false,
            reason: crate::entitlement::ReasonRule::Optional,
            default_duration: self.key_ttl,
            min_duration: self.key_ttl,
            max_duration: self.key_ttl,
            pending_ttl: self.pending_ttl,
            auto_approve: Vec::new(),
            break_glass: false,
        }
    }

    /// `Ok` when every configured claim matches; otherwise which one did not, and why.
    pub fn claims_match(&self, claims: &serde_json::Value) -> Result<(), String> {
        for (claim, pattern) in &self.claims {
            match claims.get(claim).and_then(claim_text) {
                None => return Err(format!("the token has no {claim:?} claim")),
                Some(value) if !pattern_matches(pattern, &value) => {
                    return Err(format!(
                        "claim {claim:?} is {value:?}, which does not match {pattern:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Keys minted per (entitlement, subject) in a sliding window. Only mints count: a refused
/// request never uses up the allowance.
#[derive(Debug, Default)]
pub struct Limiter {
    mints: Mutex<HashMap<(String, String), VecDeque<OffsetDateTime>>>,
}

impl Limiter {
    /// Takes one from the allowance, or says how long until one is free.
    pub fn take(
        &self,
        entitlement: &str,
        subject: &str,
        rate: Rate,
        now: OffsetDateTime,
    ) -> Result<(), time::Duration> {
        let mut mints = match self.mints.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let window = rate.per.to_time();
        let times = mints
            .entry((entitlement.to_owned(), subject.to_owned()))
            .or_default();
        while times.front().is_some_and(|t| *t + window <= now) {
            times.pop_front();
        }
        if times.len() >= rate.count as usize {
            let free_at = times.front().map_or(now, |t| *t + window);
            return Err((free_at - now).max(time::Duration::seconds(1)));
        }
        times.push_back(now);
        Ok(())
    }

    /// Gives back what [`Self::take`] took (the key could not be minted after all).
    pub fn give_back(&self, entitlement: &str, subject: &str) {
        let mut mints = match self.mints.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(times) = mints.get_mut(&(entitlement.to_owned(), subject.to_owned())) {
            times.pop_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn patterns() {
        assert!(pattern_matches("acme/api", "acme/api"));
        assert!(!pattern_matches("acme/api", "acme/api2"));
        assert!(pattern_matches("acme/*", "acme/api"));
        assert!(pattern_matches("*", ""));
        assert!(pattern_matches("refs/heads/*", "refs/heads/main"));
        assert!(!pattern_matches("refs/heads/*", "refs/tags/v1"));
        assert!(pattern_matches(
            "repo:acme/*:ref:*",
            "repo:acme/api:ref:refs/heads/main"
        ));
        assert!(!pattern_matches("a*a", "a"));
        assert!(pattern_matches("a*a", "aa"));
    }

    #[test]
    fn rates_parse() {
        assert_eq!(
            "5/m".parse::<Rate>().unwrap(),
            Rate {
                count: 5,
                per: Span::minutes(1)
            }
        );
        assert!("5".parse::<Rate>().is_err());
        assert!("0/m".parse::<Rate>().is_err());
        assert!("5/d".parse::<Rate>().is_err());
    }

    #[test]
    fn the_limiter_counts_mints_in_a_sliding_window() {
        let t0 = datetime!(2026-11-30 10:00 UTC);
        let rate: Rate = "2/m".parse().unwrap();
        let limiter = Limiter::default();
        assert!(limiter.take("e", "s", rate, t0).is_ok());
        assert!(limiter.take("e", "s", rate, t0).is_ok());
        let wait = limiter.take("e", "s", rate, t0).unwrap_err();
        assert_eq!(wait, time::Duration::minutes(1));
        assert!(limiter.take("e", "other", rate, t0).is_ok(), "per subject");
        limiter.give_back("e", "s");
        assert!(limiter.take("e", "s", rate, t0).is_ok(), "given back");
        assert!(
            limiter
                .take("e", "s", rate, t0 + time::Duration::minutes(1))
                .is_ok()
        );
    }
}

/// A device that carries exactly a machine entitlement's tags: one of its jobs' nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MachineNode {
    pub device: String,
    /// The key it joined with, when tidegate saw it join; `None` for a device that only
    /// carries the entitlement's tags.
    pub key_id: Option<String>,
    /// The job's token subject that got the key.
    pub subject: Option<String>,
    pub hostname: String,
    pub entitlement: String,
    pub tags: Vec<String>,
    pub ephemeral: bool,
    pub created: String,
    /// Still there longer than the entitlement's `node_ttl`.
    pub over_node_ttl: bool,
}

/// A tagged device with tags that neither a machine entitlement mints nor its owner could
/// have applied (no tagOwner matches them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnexplainedTags {
    pub device: String,
    pub hostname: String,
    pub user: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodesReport {
    pub machine_nodes: Vec<MachineNode>,
    pub unexplained: Vec<UnexplainedTags>,
}

/// Which devices are machine entitlements' nodes, and which tagged devices nothing explains.
pub fn nodes_report(
    machines: &[MachineEntitlement],
    records: &[MintedRecord],
    devices: &[tailnet::Device],
    policy: &policy::PolicyFile,
    dir: &crate::entitlement::Directory,
    now: OffsetDateTime,
) -> NodesReport {
    let mut report = NodesReport::default();
    for d in devices.iter().filter(|d| !d.tags.is_empty()) {
        let mut tags = d.tags.clone();
        tags.sort();
        let machine = machines.iter().find(|m| {
            let mut want = m.tags.clone();
            want.sort();
            want == tags && m.ephemeral == d.is_ephemeral
        });
        let record = records
            .iter()
            .find(|r| r.device.as_deref() == Some(d.id.as_str()));
        let machine = record
            .and_then(|r| machines.iter().find(|m| m.name == r.entitlement))
            .or(machine);
        if let Some(m) = machine {
            let age = tailnet::clock::parse_rfc3339(&d.created).map(|c| now - c);
            report.machine_nodes.push(MachineNode {
                device: d.id.clone(),
                key_id: record.map(|r| r.key_id.clone()),
                subject: record.map(|r| r.subject.clone()),
                hostname: d.hostname.clone(),
                entitlement: m.name.clone(),
                tags: tags.clone(),
                ephemeral: d.is_ephemeral,
                created: d.created.clone(),
                over_node_ttl: age.is_some_and(|a| a > m.node_ttl.to_time()),
            });
        }
        let unexplained: Vec<String> = tags
            .iter()
            .filter(|t| {
                !machines.iter().any(|m| m.tags.contains(t)) && !owner_may_tag(policy, dir, d, t)
            })
            .cloned()
            .collect();
        if !unexplained.is_empty() {
            report.unexplained.push(UnexplainedTags {
                device: d.id.clone(),
                hostname: d.hostname.clone(),
                user: d.user.clone(),
                tags: unexplained,
            });
        }
    }
    report
}

/// Whether the device's user is among the tag's owners (directly, through a group, as an
/// admin, or through another tag the device carries).
fn owner_may_tag(
    policy: &policy::PolicyFile,
    dir: &crate::entitlement::Directory,
    device: &tailnet::Device,
    tag: &str,
) -> bool {
    let Some(owners) = policy.tag_owners.get(tag) else {
        return false;
    };
    owners.iter().any(|owner| match owner.as_str() {
        "autogroup:admin" => dir.matches(&Selector::Role("admin".into()), &device.user),
        "autogroup:member" => dir.is_user(&device.user),
        o if o.starts_with("group:") => dir.matches(&Selector::Group(o.to_owned()), &device.user),
        o if o.starts_with("tag:") => o != tag && device.tags.iter().any(|t| t == o),
        o => o == device.user,
    })
}

/// What tidegate keeps of each key it minted for a machine, to know the node that joins
/// with it (the tailnet does not say which key a device used: a single-use key's node is
/// the device that appears with its tags while it is valid).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MintedRecord {
    pub key_id: String,
    pub entitlement: String,
    pub subject: String,
    pub tags: Vec<String>,
    pub ephemeral: bool,
    pub minted_at: String,
    pub expires_at: String,
    /// The device that joined with it, once seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// State-record key of a minted key's record.
pub fn record_key(key_id: &str) -> String {
    format!("machine_key:{key_id}")
}

/// Assigns devices to the minted keys they joined with: the same tags and ephemerality,
/// created while the key was valid; each key one device (single-use keys), earliest first.
/// Records already linked keep their device. Returns the records that gained a device.
pub fn link_nodes(records: &mut [MintedRecord], devices: &[tailnet::Device]) -> Vec<usize> {
    let parse = |t: &str| tailnet::clock::parse_rfc3339(t);
    let mut taken: std::collections::BTreeSet<String> =
        records.iter().filter_map(|r| r.device.clone()).collect();
    let mut order: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].device.is_none())
        .collect();
    order.sort_by(|&a, &b| records[a].minted_at.cmp(&records[b].minted_at));
    let mut linked = Vec::new();
    for i in order {
        let r = &records[i];
        let (Some(from), Some(until)) = (parse(&r.minted_at), parse(&r.expires_at)) else {
            continue;
        };
        let mut want = r.tags.clone();
        want.sort();
        let found = devices
            .iter()
            .filter(|d| !taken.contains(&d.id) && d.is_ephemeral == r.ephemeral)
            .filter(|d| {
                let mut tags = d.tags.clone();
                tags.sort();
                tags == want
            })
            .filter(|d| parse(&d.created).is_some_and(|c| c >= from && c <= until))
            .min_by(|a, b| a.created.cmp(&b.created));
        if let Some(d) = found {
            taken.insert(d.id.clone());
            records[i].device = Some(d.id.clone());
            linked.push(i);
        }
    }
    linked
}
