//! `group` and `rule`: a login is wanted in a managed policy group (or in the `src` of a rule
//! marked `// tidegate:rule NAME`) while any active grant puts it there. Every change to the
//! policy goes out in one HuJSON edit and one write with `If-Match`, re-read and re-applied on
//! 412. Members that no grant explains are drift. A list is keyed by its group's name, or by
//! `rule:NAME` (see `entitlement::PolicyList`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{ChangeError, PassReport, PolicyEdit, Reconciler, event, needs_change};
use crate::entitlement::{PolicyList, Strategy};
use crate::request::{Request, State};
use crate::service::ManagedGroup;
use crate::time_text;

/// The managed groups and what one edit must make of them.
struct Edit<'a> {
    /// Managed group → whether drift in it is removed.
    managed: &'a BTreeMap<String, bool>,
    /// Members that must be present (active grants).
    keep: &'a BTreeMap<String, BTreeSet<String>>,
    /// Members whose last grant ended.
    remove: &'a BTreeSet<(String, String)>,
    /// Whether to look for (and, where configured, remove) drift; only such (full) passes
    /// record a group's standing members the first time they see it.
    drift_check: bool,
    /// What tidegate recorded of each managed group: its standing members.
    baselines: &'a BTreeMap<String, ManagedGroup>,
}

/// What an edit left in the policy, and what it could not do.
struct Edited {
    text: String,
    /// Managed groups that are not a list of logins in the policy file.
    missing: BTreeSet<String>,
    /// Baselines recorded or changed by this edit (first sight, standing members who left).
    baselines: BTreeMap<String, ManagedGroup>,
}

impl Reconciler {
    fn group_of(&self, r: &Request) -> Option<String> {
        self.entitlement(&r.entitlement)?
            .strategy
            .policy_list()
            .map(|l| l.key())
    }

    /// One read-edit-write of the policy (see [`Reconciler::write_policy`]).
    async fn edit_policy(
        &self,
        edit: &Edit<'_>,
        report: &mut PassReport,
    ) -> Result<Edited, ChangeError> {
        // Drift is what the last reading of the policy showed, written or not.
        let mut last_drift = None;
        let result = self
            .write_policy("group memberships", report, |doc| {
                let mut drift = Vec::new();
                let mut changes: Vec<String> = Vec::new();
                let mut missing = BTreeSet::new();
                let mut baselines = BTreeMap::new();
                for (group, remove_drift) in edit.managed {
                    let Ok(located) = PolicyList::from_key(group).locate(doc) else {
                        missing.insert(group.clone());
                        continue;
                    };
                    let path = located.path();
                    let Some(members) = doc.strings(&path) else {
                        missing.insert(group.clone());
                        continue;
                    };
                    let present: BTreeSet<String> = members.into_iter().collect();
                    let empty = BTreeSet::new();
                    let kept = edit.keep.get(group).unwrap_or(&empty);
                    // Members already there when tidegate first manages the group are standing:
                    // reported, never removed, until an admin adopts the group.
                    let standing: BTreeSet<String> = match edit.baselines.get(group) {
                        Some(b) => {
                            let still: BTreeSet<String> =
                                b.standing.intersection(&present).cloned().collect();
                            if still != b.standing {
                                let mut changed = b.clone();
                                changed.standing = still.clone();
                                baselines.insert(group.clone(), changed);
                            }
                            still
                        }
                        None if edit.drift_check => {
                            let ending: BTreeSet<&String> = edit
                                .remove
                                .iter()
                                .filter(|(g, _)| g == group)
                                .map(|(_, l)| l)
                                .collect();
                            let standing: BTreeSet<String> = present
                                .iter()
                                .filter(|l| !kept.contains(*l) && !ending.contains(l))
                                .cloned()
                                .collect();
                            baselines.insert(
                                group.clone(),
                                ManagedGroup {
                                    group: group.clone(),
                                    standing: standing.clone(),
                                    first_managed_at: time_text(self.now()),
                                    adopted_at: None,
                                    adopted_by: None,
                                },
                            );
                            standing
                        }
                        None => BTreeSet::new(),
                    };
                    let new: Vec<&str> = kept.difference(&present).map(String::as_str).collect();
                    changes.extend(new.iter().map(|login| format!("+{login} {group}")));
                    doc.add_strings(&path, &new).map_err(|e| {
                        ChangeError::Refused(format!("cannot add members to {group}: {e}"))
                    })?;
                    let mut leaving: Vec<&str> = Vec::new();
                    for login in present.difference(kept) {
                        if standing.contains(login) {
                            continue;
                        }
                        let ending = edit.remove.contains(&(group.clone(), login.clone()));
                        if !ending && !edit.drift_check {
                            continue;
                        }
                        if !ending {
                            drift.push((group.clone(), login.clone()));
                        }
                        if ending || *remove_drift {
                            changes.push(format!("-{login} {group}"));
                            leaving.push(login);
                        }
                    }
                    doc.remove_strings(&path, &leaving).map_err(|e| {
                        ChangeError::Refused(format!("cannot remove members from {group}: {e}"))
                    })?;
                }
                last_drift = Some(drift);
                Ok(PolicyEdit {
                    changes,
                    intents: Vec::new(),
                    found: (missing, baselines),
                })
            })
            .await;
        if edit.drift_check
            && let Some(drift) = last_drift
        {
            report.drift = drift;
        }
        let (text, (missing, baselines)) = result?;
        Ok(Edited {
            text,
            missing,
            baselines,
        })
    }

    /// All `group` grants and removals in one policy edit and write. If the tailnet refuses
    /// that write (the policy's own tests fail), removals go out alone first, then each grant
    /// on its own, so one refused grant never holds back a revocation or another grant.
    pub(super) async fn groups(&self, requests: Vec<Request>, full: bool, report: &mut PassReport) {
        let managed: BTreeMap<String, bool> = self
            .service
            .config()
            .entitlements
            .iter()
            .filter_map(|e| match &e.strategy {
                Strategy::Group {
                    group,
                    remove_drift,
                } => Some((group.clone(), *remove_drift)),
                // A rule's other sources are its own: never removed as drift.
                Strategy::Rule { rule } => Some((PolicyList::Rule(rule.clone()).key(), false)),
                _ => None,
            })
            .collect();
        // A due pass with nothing due has nothing to change: no need to read the policy.
        if managed.is_empty() || (requests.is_empty() && !full) {
            return;
        }
        // The intent to add each new member is recorded before the write: the grant's time
        // counts from it.
        let mut requests: Vec<(Request, String)> = self
            .record_intent(requests, |_| {}, report)
            .await
            .into_iter()
            .filter_map(|r| self.group_of(&r).map(|g| (r, g)))
            .collect();
        let now = self.now();
        // Members that must stay (active grants, from the membership index) and members whose
        // last grant ended.
        let mut index = self.memberships.lock().await;
        if full {
            index.clear();
        }
        for (r, group) in &requests {
            let key = (group.clone(), r.requester.clone());
            if r.wants_access(now) {
                index.entry(key).or_default().insert(r.id.clone());
            } else if let Some(ids) = index.get_mut(&key) {
                ids.remove(&r.id);
                if ids.is_empty() {
                    index.remove(&key);
                }
            }
        }
        let mut keep: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (group, login) in index.keys() {
            keep.entry(group.clone()).or_default().insert(login.clone());
        }
        drop(index);
        let mut add: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut remove: BTreeSet<(String, String)> = BTreeSet::new();
        for (r, group) in &requests {
            if r.wants_access(now) {
                if r.state == State::Approved {
                    add.entry(group.clone())
                        .or_default()
                        .insert(r.requester.clone());
                }
            } else if r.may_hold_access()
                && !keep.get(group).is_some_and(|k| k.contains(&r.requester))
            {
                remove.insert((group.clone(), r.requester.clone()));
            }
        }
        let want = keep.clone();
        let baselines = match self.service.managed_groups().await {
            Ok(b) => b,
            Err(e) => {
                // Without them, standing members could be taken for drift: change nothing.
                report.errors.push(format!(
                    "cannot read the managed groups' standing members: {e}"
                ));
                return;
            }
        };
        let edit = Edit {
            managed: &managed,
            keep: &keep,
            remove: &remove,
            drift_check: full,
            baselines: &baselines,
        };
        let result = match self.edit_policy(&edit, report).await {
            Err(ChangeError::Tailnet {
                source: tailnet::Error::BadRequest { .. },
                ..
            }) if !add.is_empty() => {
                let context = Edit {
                    managed: &managed,
                    keep: &keep,
                    remove: &remove,
                    drift_check: full,
                    baselines: &baselines,
                };
                self.apply_one_by_one(&context, &add, &mut requests, report)
                    .await
            }
            other => other,
        };
        let written = match result {
            Ok(edited) => edited,
            Err(e) => {
                let failed: Vec<Request> = requests
                    .into_iter()
                    .filter(|(r, _)| needs_change(r, now))
                    .map(|(r, _)| r)
                    .collect();
                self.note_failure(failed, &e, report).await;
                return;
            }
        };
        if !written.missing.is_empty() {
            let mut failing: BTreeMap<&str, Vec<Request>> = BTreeMap::new();
            for (r, group) in &requests {
                if written.missing.contains(group) && needs_change(r, now) {
                    failing.entry(group.as_str()).or_default().push(r.clone());
                }
            }
            for group in &written.missing {
                tracing::error!(group = %group, "a managed group is missing from the policy file");
                let error = ChangeError::Refused(format!(
                    "{group} is not in the policy file's groups (or is not a list of logins): add it back, or change the entitlement"
                ));
                let affected = failing.remove(group.as_str()).unwrap_or_default();
                if affected.is_empty() {
                    report.errors.push(error.to_string());
                }
                self.note_failure(affected, &error, report).await;
            }
        }
        for (group, baseline) in &written.baselines {
            self.record_baseline(baseline, baselines.get(group)).await;
        }
        self.report_drift(&report.drift).await;
        // Verify by reading back what the tailnet now holds.
        let stored = if report.policy_writes > 0 {
            match self.tailnet().policy().await {
                Ok(p) => p.text,
                Err(e) => {
                    report
                        .errors
                        .push(format!("cannot read the policy back: {e}"));
                    return;
                }
            }
        } else {
            written.text
        };
        let Ok(doc) = hujson::Document::parse(&stored) else {
            report
                .errors
                .push("the policy read back does not parse".into());
            return;
        };
        let members: BTreeMap<&str, BTreeSet<String>> = managed
            .keys()
            .filter(|g| !written.missing.contains(*g))
            .map(|group| {
                let set = PolicyList::from_key(group)
                    .locate(&doc)
                    .ok()
                    .and_then(|l| doc.strings(&l.path()))
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                (group.as_str(), set)
            })
            .collect();
        let now = self.now();
        let mut changes = Vec::new();
        for (mut r, group) in requests {
            let Some(present) = members.get(group.as_str()) else {
                continue;
            };
            let present = present.contains(&r.requester);
            if r.wants_access(now) && r.state == State::Approved && present {
                if let Ok(events) = r.activate(now, json!({"group": group})) {
                    changes.push((r, events));
                }
            } else if !r.wants_access(now)
                && r.may_hold_access()
                && r.tailnet.removal_verified_at.is_none()
            {
                let still_wanted = want
                    .get(group.as_str())
                    .is_some_and(|w| w.contains(&r.requester));
                let standing = written
                    .baselines
                    .get(group.as_str())
                    .or_else(|| baselines.get(group.as_str()))
                    .is_some_and(|b| b.standing.contains(&r.requester));
                if !present || still_wanted || standing {
                    let detail = if still_wanted {
                        json!({"group": group, "note": "membership kept for another active grant"})
                    } else if standing && present {
                        json!({"group": group, "note": "kept: a standing member of the group since before tidegate managed it"})
                    } else {
                        json!({"group": group})
                    };
                    r.tailnet.removed_at = Some(now);
                    r.tailnet.removal_verified_at = Some(now);
                    let events = vec![event(&r, "grant.removal_verified", detail)];
                    changes.push((r, events));
                }
            }
        }
        self.settle(changes, report).await;
    }

    /// After the tailnet refused the edit as a whole: removals and the grants already active
    /// first, then each new grant on its own; a grant refused alone fails with the reason.
    async fn apply_one_by_one(
        &self,
        context: &Edit<'_>,
        add: &BTreeMap<String, BTreeSet<String>>,
        requests: &mut Vec<(Request, String)>,
        report: &mut PassReport,
    ) -> Result<Edited, ChangeError> {
        let now = self.now();
        let mut active = context.keep.clone();
        for (group, logins) in add {
            if let Some(members) = active.get_mut(group) {
                for login in logins {
                    let still_active = requests.iter().any(|(r, g)| {
                        g == group
                            && &r.requester == login
                            && r.state == State::Active
                            && r.wants_access(now)
                    });
                    if !still_active {
                        members.remove(login);
                    }
                }
            }
        }
        fn edit<'b>(context: &Edit<'b>, keep: &'b BTreeMap<String, BTreeSet<String>>) -> Edit<'b> {
            Edit { keep, ..*context }
        }
        let mut last = self.edit_policy(&edit(context, &active), report).await;
        for (group, logins) in add {
            for login in logins {
                let mut one = active.clone();
                one.entry(group.clone()).or_default().insert(login.clone());
                let result = self.edit_policy(&edit(context, &one), report).await;
                match result {
                    Ok(edited) => {
                        active = one;
                        last = Ok(edited);
                    }
                    Err(e) => {
                        let why = match &e {
                            ChangeError::Tailnet {
                                source:
                                    tailnet::Error::BadRequest {
                                        message,
                                        data: Some(d),
                                    },
                                ..
                            } => format!("the tailnet refused the policy change: {message}: {d}"),
                            ChangeError::Tailnet { source, .. } => {
                                format!("the tailnet refused the policy change: {source}")
                            }
                            other => other.to_string(),
                        };
                        let refused: Vec<Request> = requests
                            .iter()
                            .filter(|(r, g)| {
                                g == group && &r.requester == login && r.state == State::Approved
                            })
                            .map(|(r, _)| r.clone())
                            .collect();
                        requests.retain(|(r, g)| {
                            !(g == group && &r.requester == login && r.state == State::Approved)
                        });
                        self.fail_requests(refused, &why, report).await;
                        report.errors.push(format!("{login} in {group}: {why}"));
                    }
                }
            }
        }
        last
    }

    /// Stores a managed group's baseline, with an audit entry and a log line the first time
    /// (its standing members).
    async fn record_baseline(&self, baseline: &ManagedGroup, before: Option<&ManagedGroup>) {
        if let Err(e) = self.service.save_managed_group(baseline).await {
            tracing::error!(group = %baseline.group, error = %e, "cannot store the group's standing members");
            return;
        }
        if before.is_none() {
            tracing::warn!(
                group = %baseline.group,
                standing = ?baseline.standing,
                "first managed: its present members are standing (never removed until an admin adopts the group)"
            );
            self.record(
                "group.standing_recorded",
                json!({"group": baseline.group, "standing": baseline.standing}),
            )
            .await;
        }
    }

    async fn report_drift(&self, drift: &[(String, String)]) {
        let mut reported = self.reported_drift.lock().await;
        let current: BTreeSet<(String, String)> = drift.iter().cloned().collect();
        let new: Vec<&(String, String)> = current.difference(&reported).collect();
        if !new.is_empty() {
            let now = self.now();
            let entries: Vec<crate::audit::NewAuditEntry> = new
                .iter()
                .map(|(group, login)| {
                    tracing::warn!(group = %group, member = %login, "drift: no active grant explains this member");
                    crate::audit::NewAuditEntry {
                        at: time_text(now),
                        actor: crate::request::SYSTEM.to_owned(),
                        action: "drift.detected".to_owned(),
                        request: None,
                        detail: json!({"group": group, "member": login, "note": "no active grant explains this member"}).to_string(),
                    }
                })
                .collect();
            // Best effort: drift is also in every pass report and the log.
            let _ = self.service.store().append_audit(&entries).await;
        }
        *reported = current;
    }
}
