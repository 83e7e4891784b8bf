//! The reconciler: makes the tailnet match the desired state in the database, and proves it.
//!
//! Each pass: (1) time transitions (pending requests lapse, active grants expire); (2) for the
//! `group` strategy, every change to the policy file in one HuJSON edit and one write with
//! `If-Match`, re-read and re-applied on 412; members of managed groups that no grant explains
//! are drift; (3) per-request changes for `posture`, `role` and `authkey`; (4) every removal is
//! verified by reading the tailnet back. Faults leave the request as it was, with the error
//! noted, for the next pass; nothing is lost across restarts because the database holds it all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;
use tailnet::Tailnet;
use time::OffsetDateTime;

use crate::entitlement::Strategy;
use crate::leader::{LeaderLock, Metrics};
use crate::request::{Event, Request, SYSTEM, State};
use crate::service::{Service, audit_entries};
use crate::store::{RequestFilter, StoreError};
use crate::time_text;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    pub applied: usize,
    pub removed: usize,
    pub policy_writes: usize,
    pub overdue: usize,
    /// (group, login) members no active grant explains.
    pub drift: Vec<(String, String)>,
    pub errors: Vec<String>,
}

/// The longest wait before retrying a failed tailnet change for a request.
const MAX_BACKOFF_SECONDS: i64 = 60;

/// How many times one pass re-reads and re-applies the policy after a 412.
const MAX_POLICY_ATTEMPTS: usize = 8;

pub struct Reconciler {
    service: Arc<Service>,
    /// Drift already written to the audit log, so it is reported once.
    reported_drift: tokio::sync::Mutex<BTreeSet<(String, String)>>,
    /// (group, login) → the requests that want that membership now. Rebuilt by every full
    /// pass and kept up to date by due passes, which see only the requests due now.
    memberships: tokio::sync::Mutex<BTreeMap<(String, String), BTreeSet<String>>>,
    /// Checked right before every tailnet change: a replica that is no longer the leader
    /// makes none.
    fence: Option<Arc<dyn LeaderLock>>,
    metrics: Option<Arc<Metrics>>,
}

fn event(request: &Request, action: &str, detail: serde_json::Value) -> Event {
    Event {
        actor: SYSTEM.to_owned(),
        action: action.to_owned(),
        request: request.id.clone(),
        detail,
    }
}

impl Reconciler {
    pub fn new(service: Arc<Service>) -> Reconciler {
        Reconciler {
            service,
            reported_drift: tokio::sync::Mutex::new(BTreeSet::new()),
            memberships: tokio::sync::Mutex::new(BTreeMap::new()),
            fence: None,
            metrics: None,
        }
    }

    /// Makes no tailnet change unless `lock` is still held when it is about to be made.
    pub fn fenced(mut self, lock: Arc<dyn LeaderLock>) -> Reconciler {
        self.fence = Some(lock);
        self
    }

    /// Reports each pass's duration to `metrics`.
    pub fn observed(mut self, metrics: Arc<Metrics>) -> Reconciler {
        self.metrics = Some(metrics);
        self
    }

    fn tailnet(&self) -> &dyn Tailnet {
        self.service.tailnet.as_ref()
    }

    fn now(&self) -> OffsetDateTime {
        crate::now(self.service.clock.as_ref())
    }

    /// Stores a changed request with its events. A conflict (someone else changed it) is not
    /// an error: the next pass sees the new version.
    async fn save(&self, request: &mut Request, events: &[Event], report: &mut PassReport) -> bool {
        request.version += 1;
        let entries = audit_entries(events, self.now());
        match self.service.store.update_request(request, &entries).await {
            Ok(()) => true,
            Err(StoreError::Conflict(_)) => {
                request.version -= 1;
                false
            }
            Err(e) => {
                request.version -= 1;
                report
                    .errors
                    .push(format!("{}: cannot store: {e}", request.id));
                false
            }
        }
    }

    /// A grant made in the tailnet while its request changed under it (revoked or cancelled
    /// through another door): the activation lost the race for the row. If the stored request
    /// no longer wants access, it is marked applied now, so its removal follows in the next
    /// pass like any other; if it still does, the next pass activates it.
    async fn applied_meanwhile(
        &self,
        applied: &Request,
        detail: serde_json::Value,
        report: &mut PassReport,
    ) {
        for _ in 0..3 {
            let mut stored = match self.service.store.request(&applied.id).await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    report
                        .errors
                        .push(format!("{}: cannot re-read: {e}", applied.id));
                    return;
                }
            };
            if !stored.state.is_final() || stored.tailnet.applied_at.is_some() {
                return;
            }
            stored.tailnet = applied.tailnet.clone();
            stored.tailnet.retry_at = None;
            let mut detail = detail.clone();
            detail["note"] = json!("applied while the request was being ended; removal follows");
            let events = vec![event(&stored, "grant.applied", detail)];
            if self.save(&mut stored, &events, report).await {
                self.service.wake.notify_one();
                return;
            }
        }
    }

    /// Notes a failed attempt on the request (kept for the UI and the next pass).
    /// A grant that could not be applied after this many passes fails (its requester sees why);
    /// removals are retried for as long as it takes.
    const MAX_APPLY_ATTEMPTS: u32 = 5;

    async fn note_error(&self, request: &mut Request, error: String, report: &mut PassReport) {
        report.errors.push(format!("{}: {error}", request.id));
        request.tailnet.attempts += 1;
        request.tailnet.last_error = Some(error.clone());
        let backoff = 2i64
            .saturating_pow(request.tailnet.attempts.min(6))
            .min(MAX_BACKOFF_SECONDS);
        request.tailnet.retry_at = Some(self.now() + time::Duration::seconds(backoff));
        let events = if request.state == State::Approved
            && request.tailnet.attempts >= Self::MAX_APPLY_ATTEMPTS
        {
            let why = format!(
                "could not be applied after {} attempts: {error}",
                request.tailnet.attempts
            );
            request.fail(&why, self.now()).unwrap_or_default()
        } else {
            Vec::new()
        };
        self.save(request, &events, report).await;
    }

    /// A full pass: every open request, and drift in managed groups.
    pub async fn pass(&self) -> PassReport {
        self.pass_with(true).await
    }

    /// A pass over the requests due now only (cheap however many grants are active); drift
    /// is left to full passes.
    pub async fn pass_due(&self) -> PassReport {
        self.pass_with(false).await
    }

    async fn pass_with(&self, full: bool) -> PassReport {
        let mut report = PassReport::default();
        let now = self.now();
        let filter = RequestFilter {
            open_only: true,
            due_before: (!full).then_some(now),
            ..RequestFilter::default()
        };
        let requests = match self.service.store.requests(&filter).await {
            Ok(r) => r,
            Err(e) => {
                report.errors.push(format!("cannot read requests: {e}"));
                return report;
            }
        };
        // Time transitions, stored in one batch.
        let mut changes = Vec::new();
        let mut unchanged = Vec::new();
        for mut r in requests {
            let events = match r.state {
                State::Pending if r.pending_until <= now => r.lapse(now).ok(),
                State::Active if r.expires_at.is_some_and(|e| e <= now) => r.expire(now).ok(),
                _ => None,
            };
            match events {
                Some(events) => changes.push((r, events)),
                None => unchanged.push(r),
            }
        }
        let changed: Vec<Request> = changes.iter().map(|(r, _)| r.clone()).collect();
        let stored = self.save_batch(changes, &mut report).await;
        let mut requests = unchanged;
        for (mut r, ok) in changed.into_iter().zip(stored) {
            if ok {
                r.version += 1;
                requests.push(r);
            }
        }
        let mut groups = Vec::new();
        for r in requests {
            let Some(entitlement) = self.service.config.entitlement(&r.entitlement).cloned() else {
                report.errors.push(format!(
                    "{}: entitlement {:?} is no longer configured",
                    r.id, r.entitlement
                ));
                continue;
            };
            match &entitlement.strategy {
                Strategy::Group { group, .. } => groups.push((r, group.clone())),
                Strategy::Posture { attribute, value } => {
                    self.posture(r, attribute, value, &mut report).await
                }
                Strategy::Role { role } => self.role(r, role, &mut report).await,
                Strategy::AuthKey { .. } => self.authkey(r, &mut report).await,
            }
        }
        self.groups(groups, full, &mut report).await;
        match self.service.store.count_overdue(self.now()).await {
            Ok(n) => report.overdue = n as usize,
            Err(e) => report
                .errors
                .push(format!("cannot count overdue revocations: {e}")),
        }
        report
    }

    /// Stores several changed requests (versions bumped here) with their events in one batch.
    /// Per request: stored, or refused for a version conflict (the next pass sees the newer
    /// version).
    async fn save_batch(
        &self,
        changes: Vec<(Request, Vec<Event>)>,
        report: &mut PassReport,
    ) -> Vec<bool> {
        if changes.is_empty() {
            return Vec::new();
        }
        let now = self.now();
        let batch: Vec<(Request, Vec<crate::audit::NewAuditEntry>)> = changes
            .into_iter()
            .map(|(mut r, events)| {
                r.version += 1;
                let entries = audit_entries(&events, now);
                (r, entries)
            })
            .collect();
        match self.service.store.update_requests(&batch).await {
            Ok(stored) => stored,
            Err(e) => {
                report
                    .errors
                    .push(format!("cannot store {} request changes: {e}", batch.len()));
                vec![false; batch.len()]
            }
        }
    }

    /// One read-edit-write of the policy: adds `add` members, removes `remove` members and
    /// (where configured) drift, written with `If-Match` and re-applied on 412. Returns the
    /// text now stored, or the error that refused the write.
    async fn edit_policy(
        &self,
        managed: &BTreeMap<String, bool>,
        add: &BTreeMap<String, BTreeSet<String>>,
        keep: &BTreeMap<String, BTreeSet<String>>,
        remove: &BTreeSet<(String, String)>,
        drift_check: bool,
        report: &mut PassReport,
    ) -> Result<String, tailnet::Error> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = self.tailnet().policy().await?;
            let mut doc = hujson::Document::parse(&current.text).map_err(|e| {
                tailnet::Error::Protocol(format!("the tailnet's policy file does not parse: {e}"))
            })?;
            let mut drift = Vec::new();
            let mut changes: Vec<String> = Vec::new();
            for (group, remove_drift) in managed {
                let path = [hujson::Seg::Key("groups"), hujson::Seg::Key(group)];
                let Some(members) = doc.strings(&path) else {
                    report.errors.push(format!(
                        "{group} is not a list of logins in the policy file"
                    ));
                    continue;
                };
                let present: BTreeSet<String> = members.into_iter().collect();
                let empty = BTreeSet::new();
                let adding = add.get(group).unwrap_or(&empty);
                let kept = keep.get(group).unwrap_or(&empty);
                let new: Vec<&str> = adding.difference(&present).map(String::as_str).collect();
                changes.extend(new.iter().map(|login| format!("+{login} {group}")));
                doc.add_strings(&path, &new).map_err(|e| {
                    tailnet::Error::Protocol(format!("cannot add members to {group}: {e}"))
                })?;
                let mut leaving: Vec<&str> = Vec::new();
                for login in present.difference(adding) {
                    if kept.contains(login) {
                        continue;
                    }
                    let ending = remove.contains(&(group.clone(), login.clone()));
                    if !ending && !drift_check {
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
                    tailnet::Error::Protocol(format!("cannot remove members from {group}: {e}"))
                })?;
            }
            if drift_check {
                report.drift = drift;
            }
            if doc.text() == current.text {
                return Ok(current.text);
            }
            let detail = json!({"changes": changes, "if_match": current.etag});
            if !self
                .intend(None, "tailnet.policy_write", detail, report)
                .await
            {
                return Err(tailnet::Error::Protocol(
                    "not recorded in the audit log first, or no longer the leader: not made".into(),
                ));
            }
            match self
                .tailnet()
                .set_policy(doc.text(), Some(&current.etag))
                .await
            {
                Ok(new) => {
                    report.policy_writes += 1;
                    return Ok(new.text);
                }
                Err(tailnet::Error::PreconditionFailed) if attempts < MAX_POLICY_ATTEMPTS => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// All `group` grants and removals in one policy edit and write. If the tailnet refuses
    /// that write (the policy's own tests fail), removals go out alone first, then each grant
    /// on its own, so one refused grant never holds back a revocation or another grant.
    async fn groups(
        &self,
        mut requests: Vec<(Request, String)>,
        full: bool,
        report: &mut PassReport,
    ) {
        let now = self.now();
        let managed: BTreeMap<String, bool> = self
            .service
            .config
            .entitlements
            .iter()
            .filter_map(|e| match &e.strategy {
                Strategy::Group {
                    group,
                    remove_drift,
                } => Some((group.clone(), *remove_drift)),
                _ => None,
            })
            .collect();
        // A due pass with nothing due has nothing to change: no need to read the policy.
        if managed.is_empty() || (requests.is_empty() && !full) {
            return;
        }
        // Members that must stay (active grants, from the membership index), members to add
        // (approved, not yet applied) and members whose last grant ended.
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
            } else if r.tailnet.applied_at.is_some()
                && !keep.get(group).is_some_and(|k| k.contains(&r.requester))
            {
                remove.insert((group.clone(), r.requester.clone()));
            }
        }
        let want = keep.clone();
        let result = match self
            .edit_policy(&managed, &keep, &keep, &remove, full, report)
            .await
        {
            Err(tailnet::Error::BadRequest { .. }) if !add.is_empty() => {
                // Without the new grants, then each new grant alone.
                let mut active = keep.clone();
                for (group, logins) in &add {
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
                let mut last = self
                    .edit_policy(&managed, &active, &active, &remove, full, report)
                    .await;
                for (group, logins) in &add {
                    for login in logins {
                        let mut one = active.clone();
                        one.entry(group.clone()).or_default().insert(login.clone());
                        match self
                            .edit_policy(&managed, &one, &one, &remove, full, report)
                            .await
                        {
                            Ok(text) => {
                                active = one;
                                last = Ok(text);
                            }
                            Err(e) => {
                                let why = match &e {
                                    tailnet::Error::BadRequest {
                                        message,
                                        data: Some(d),
                                    } => {
                                        format!(
                                            "the tailnet refused the policy change: {message}: {d}"
                                        )
                                    }
                                    _ => format!("the tailnet refused the policy change: {e}"),
                                };
                                for (r, g) in requests.iter_mut() {
                                    if g == group
                                        && &r.requester == login
                                        && r.state == State::Approved
                                        && let Ok(events) = r.fail(&why, now)
                                    {
                                        self.save(r, &events, report).await;
                                    }
                                }
                                report.errors.push(format!("{login} in {group}: {why}"));
                            }
                        }
                    }
                }
                last
            }
            other => other,
        };
        let written = match result {
            Ok(text) => text,
            Err(e) => {
                let message = format!("policy write failed: {e}");
                for (r, _) in requests
                    .iter_mut()
                    .filter(|(r, _)| r.state == State::Approved)
                {
                    self.note_error(r, message.clone(), report).await;
                }
                report.errors.push(message);
                return;
            }
        };
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
            written
        };
        let Ok(doc) = hujson::Document::parse(&stored) else {
            report
                .errors
                .push("the policy read back does not parse".into());
            return;
        };
        let members: BTreeMap<&str, BTreeSet<String>> = managed
            .keys()
            .map(|group| {
                let set = doc
                    .strings(&[hujson::Seg::Key("groups"), hujson::Seg::Key(group)])
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                (group.as_str(), set)
            })
            .collect();
        let now = self.now();
        let mut changes = Vec::new();
        let mut activations = Vec::new();
        for (mut r, group) in requests {
            let present = members
                .get(group.as_str())
                .is_some_and(|m| m.contains(&r.requester));
            if r.wants_access(now) && r.state == State::Approved && present {
                if let Ok(events) = r.activate(now, json!({"group": group})) {
                    activations.push(Some((r.clone(), group.clone())));
                    changes.push((r, events));
                }
            } else if !r.wants_access(now)
                && r.tailnet.applied_at.is_some()
                && r.tailnet.removal_verified_at.is_none()
            {
                let still_wanted = want
                    .get(group.as_str())
                    .is_some_and(|w| w.contains(&r.requester));
                if !present || still_wanted {
                    let detail = if still_wanted {
                        json!({"group": group, "note": "membership kept for another active grant"})
                    } else {
                        json!({"group": group})
                    };
                    r.tailnet.removed_at = Some(now);
                    r.tailnet.removal_verified_at = Some(now);
                    let events = vec![event(&r, "grant.removal_verified", detail)];
                    activations.push(None);
                    changes.push((r, events));
                }
            }
        }
        let stored = self.save_batch(changes, report).await;
        for (ok, activation) in stored.into_iter().zip(activations) {
            match (ok, activation) {
                (true, Some(_)) => report.applied += 1,
                (true, None) => report.removed += 1,
                (false, Some((applied, group))) => {
                    self.applied_meanwhile(&applied, json!({"group": group}), report)
                        .await
                }
                (false, None) => {}
            }
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
                .map(|(group, login)| crate::audit::NewAuditEntry {
                    at: time_text(now),
                    actor: SYSTEM.to_owned(),
                    action: "drift.detected".to_owned(),
                    request: None,
                    detail: json!({"group": group, "member": login, "note": "no active grant explains this member"}).to_string(),
                })
                .collect();
            // Best effort: drift is also in every pass report.
            let _ = self.service.store.append_audit(&entries).await;
        }
        *reported = current;
    }

    /// Sets a posture attribute (with its expiry) on each device, then reads every device back.
    async fn set_posture_verified(
        &self,
        devices: &[String],
        attribute: &str,
        value: &serde_json::Value,
        expiry: &str,
        comment: &str,
    ) -> Result<(), String> {
        for device in devices {
            self.still_leading()
                .await
                .then_some(())
                .ok_or("this replica is no longer the leader")?;
            self.tailnet()
                .set_posture_attribute(
                    device,
                    attribute,
                    value.clone(),
                    Some(expiry),
                    Some(comment),
                )
                .await
                .map_err(|e| format!("setting {attribute} on {device}: {e}"))?;
        }
        for device in devices {
            let attrs = self
                .tailnet()
                .posture_attributes(device)
                .await
                .map_err(|e| format!("reading {device}'s attributes: {e}"))?;
            if attrs.attributes.get(attribute) != Some(value) {
                return Err(format!("{attribute} did not stick on {device}"));
            }
        }
        Ok(())
    }

    /// Removes a posture attribute from each device (already gone is fine), then reads every
    /// device back.
    async fn remove_posture_verified(
        &self,
        devices: &[String],
        attribute: &str,
    ) -> Result<(), String> {
        for device in devices {
            self.still_leading()
                .await
                .then_some(())
                .ok_or("this replica is no longer the leader")?;
            match self
                .tailnet()
                .delete_posture_attribute(device, attribute)
                .await
            {
                Ok(()) | Err(tailnet::Error::NotFound(_)) => {}
                Err(e) => return Err(format!("removing {attribute} from {device}: {e}")),
            }
        }
        for device in devices {
            match self.tailnet().posture_attributes(device).await {
                Ok(attrs) if attrs.attributes.contains_key(attribute) => {
                    return Err(format!("{attribute} is still on {device}"));
                }
                Ok(_) | Err(tailnet::Error::NotFound(_)) => {}
                Err(e) => return Err(format!("reading {device}'s attributes: {e}")),
            }
        }
        Ok(())
    }

    async fn posture(
        &self,
        mut r: Request,
        attribute: &str,
        value: &serde_json::Value,
        report: &mut PassReport,
    ) {
        let now = self.now();
        let comment = format!(
            "tidegate {}: {}",
            r.id,
            r.reason.chars().take(150).collect::<String>()
        );
        if r.wants_access(now) {
            let until = match r.state {
                State::Approved => now + r.duration.to_time(),
                _ => r.expires_at.unwrap_or(now),
            };
            if r.state == State::Active && r.tailnet.applied_until == Some(until) {
                return;
            }
            let expiry = time_text(until);
            let detail = json!({"attribute": attribute, "devices": r.devices, "expiry": expiry});
            if !self
                .intend(Some(&r.id), "grant.applying", detail, report)
                .await
            {
                return;
            }
            let set = self
                .set_posture_verified(&r.devices, attribute, value, &expiry, &comment)
                .await;
            if let Err(e) = set {
                return self.note_error(&mut r, e, report).await;
            }
            r.tailnet.applied_until = Some(until);
            r.tailnet.verified_at = Some(now);
            let events = if r.state == State::Approved {
                let detail =
                    json!({"attribute": attribute, "devices": r.devices, "expiry": expiry});
                match r.activate(now, detail) {
                    Ok(events) => events,
                    Err(_) => return,
                }
            } else {
                vec![event(
                    &r,
                    "grant.expiry_moved",
                    json!({"attribute": attribute, "expiry": expiry}),
                )]
            };
            let activating = events.iter().any(|e| e.action == "grant.applied");
            if self.save(&mut r, &events, report).await {
                if r.state == State::Active {
                    report.applied += 1;
                }
            } else if activating {
                let detail = json!({"attribute": attribute, "devices": r.devices});
                self.applied_meanwhile(&r, detail, report).await;
            }
            return;
        }
        if r.tailnet.applied_at.is_none() || r.tailnet.removal_verified_at.is_some() {
            return;
        }
        let detail = json!({"attribute": attribute, "devices": r.devices});
        if !self
            .intend(Some(&r.id), "grant.removing", detail.clone(), report)
            .await
        {
            return;
        }
        if let Err(e) = self.remove_posture_verified(&r.devices, attribute).await {
            return self.note_error(&mut r, e, report).await;
        }
        self.mark_removed(&mut r, detail, report).await;
    }

    async fn user_id(&self, login: &str) -> Result<String, String> {
        let users = self
            .tailnet()
            .users()
            .await
            .map_err(|e| format!("reading users: {e}"))?;
        users
            .into_iter()
            .find(|u| u.login_name == login)
            .map(|u| u.id)
            .ok_or_else(|| format!("{login} is not a user of the tailnet"))
    }

    async fn role(&self, mut r: Request, role: &str, report: &mut PassReport) {
        let now = self.now();
        let wants = r.wants_access(now);
        let needs_apply = wants && r.state == State::Approved;
        let needs_removal =
            !wants && r.tailnet.applied_at.is_some() && r.tailnet.removal_verified_at.is_none();
        if !needs_apply && !needs_removal {
            return;
        }
        let login = r.requester.clone();
        let id = match self.user_id(&login).await {
            Ok(id) => id,
            Err(e) => return self.note_error(&mut r, e, report).await,
        };
        if needs_apply {
            let previous = match self.tailnet().user(&id).await {
                Ok(u) => u.role,
                Err(e) => {
                    return self
                        .note_error(&mut r, format!("reading {login}: {e}"), report)
                        .await;
                }
            };
            // Remember the role to restore before changing anything.
            if r.tailnet.previous_role.is_none() {
                r.tailnet.previous_role = Some(previous.clone());
                if !self.save(&mut r, &[], report).await {
                    return;
                }
            }
            let detail = json!({"role": role, "previous_role": r.tailnet.previous_role});
            if !self
                .intend(Some(&r.id), "grant.applying", detail, report)
                .await
            {
                return;
            }
            if let Err(e) = self.set_role_verified(&id, &login, role).await {
                return self.note_error(&mut r, e, report).await;
            }
            r.tailnet.verified_at = Some(now);
            let detail = json!({"role": role, "previous_role": r.tailnet.previous_role});
            if let Ok(events) = r.activate(now, detail.clone()) {
                if self.save(&mut r, &events, report).await {
                    report.applied += 1;
                } else {
                    self.applied_meanwhile(&r, detail, report).await;
                }
            }
            return;
        }
        let restore = r
            .tailnet
            .previous_role
            .clone()
            .unwrap_or_else(|| "member".to_owned());
        if !self
            .intend(
                Some(&r.id),
                "grant.removing",
                json!({"restore_role": restore}),
                report,
            )
            .await
        {
            return;
        }
        if let Err(e) = self.set_role_verified(&id, &login, &restore).await {
            return self.note_error(&mut r, e, report).await;
        }
        self.mark_removed(&mut r, json!({"role": restore}), report)
            .await;
    }

    /// Whether this replica may still change the tailnet (always, without a fence).
    async fn still_leading(&self) -> bool {
        match &self.fence {
            Some(fence) => fence.held().await,
            None => true,
        }
    }

    /// Writes an intended tailnet change to the audit log before it is made. If it cannot be
    /// recorded, the change is not made (this pass).
    async fn intend(
        &self,
        request: Option<&str>,
        action: &str,
        detail: serde_json::Value,
        report: &mut PassReport,
    ) -> bool {
        if !self.still_leading().await {
            report.errors.push(format!(
                "{action} not made: this replica is no longer the leader"
            ));
            return false;
        }
        let entry = crate::audit::NewAuditEntry {
            at: time_text(self.now()),
            actor: SYSTEM.to_owned(),
            action: action.to_owned(),
            request: request.map(str::to_owned),
            detail: detail.to_string(),
        };
        match self.service.store.append_audit(&[entry]).await {
            Ok(_) => true,
            Err(e) => {
                report
                    .errors
                    .push(format!("cannot record {action} before making it: {e}"));
                false
            }
        }
    }

    /// Sets a user's role and reads it back.
    async fn set_role_verified(&self, id: &str, login: &str, role: &str) -> Result<(), String> {
        self.tailnet()
            .set_user_role(id, role)
            .await
            .map_err(|e| format!("setting {login}'s role to {role}: {e}"))?;
        match self.tailnet().user(id).await {
            Ok(u) if u.role == role => Ok(()),
            Ok(u) => Err(format!("{login}'s role is {} after setting {role}", u.role)),
            Err(e) => Err(format!("reading {login} back: {e}")),
        }
    }

    /// Records that access is gone from the tailnet, as just read back.
    async fn mark_removed(
        &self,
        r: &mut Request,
        detail: serde_json::Value,
        report: &mut PassReport,
    ) {
        let now = self.now();
        r.tailnet.removed_at = Some(now);
        r.tailnet.removal_verified_at = Some(now);
        let events = [event(r, "grant.removal_verified", detail)];
        if self.save(r, &events, report).await {
            report.removed += 1;
        }
    }

    /// Auth keys are minted when the requester claims them; here they are revoked at the end.
    async fn authkey(&self, mut r: Request, report: &mut PassReport) {
        let now = self.now();
        if r.wants_access(now)
            || r.tailnet.applied_at.is_none()
            || r.tailnet.removal_verified_at.is_some()
        {
            return;
        }
        let Some(key_id) = r.tailnet.key_id.clone() else {
            return;
        };
        if !self
            .intend(
                Some(&r.id),
                "grant.removing",
                json!({"key_id": key_id}),
                report,
            )
            .await
        {
            return;
        }
        match self.tailnet().delete_key(&key_id).await {
            Ok(()) | Err(tailnet::Error::NotFound(_)) => {}
            Err(e) => {
                return self
                    .note_error(&mut r, format!("revoking key {key_id}: {e}"), report)
                    .await;
            }
        }
        match self.tailnet().key(&key_id).await {
            Ok(k) if k.invalid => {}
            Err(tailnet::Error::NotFound(_)) => {}
            Ok(_) => {
                return self
                    .note_error(&mut r, format!("key {key_id} is still valid"), report)
                    .await;
            }
            Err(e) => {
                return self
                    .note_error(&mut r, format!("reading key {key_id}: {e}"), report)
                    .await;
            }
        }
        self.mark_removed(&mut r, json!({"key_id": key_id}), report)
            .await;
    }

    /// When the next pass is due: the earliest due time of an open request (expiry, lapse,
    /// scheduled start, retry), at most `tick` from now.
    pub async fn next_due(&self, tick: time::Duration) -> OffsetDateTime {
        let now = self.now();
        let limit = now + tick;
        match self.service.store.next_due().await {
            Ok(Some(due)) => due.clamp(now, limit),
            _ => limit,
        }
    }

    /// Runs passes until `stop` is notified: at the next due time, when woken, or every
    /// `tick`; passes over the due requests, and a full pass (drift, the membership index) every 5 minutes.
    pub async fn run(&self, tick: std::time::Duration, stop: Arc<tokio::sync::Notify>) {
        const FULL_EVERY: time::Duration = time::Duration::minutes(5);
        let tick_time = time::Duration::try_from(tick).unwrap_or(time::Duration::seconds(10));
        let mut last_full: Option<OffsetDateTime> = None;
        loop {
            let now = self.now();
            let started = std::time::Instant::now();
            if last_full.is_none_or(|t| now - t >= FULL_EVERY) {
                let _ = self.pass().await;
                last_full = Some(now);
            } else {
                let _ = self.pass_due().await;
            }
            if let Some(metrics) = &self.metrics {
                metrics.observe_pass(started.elapsed());
            }
            let due = self.next_due(tick_time).await;
            // Expiries are stored to the second: wake just after the due second begins.
            let wait = (due - self.service.clock.now()).max(time::Duration::milliseconds(20));
            let wait = std::time::Duration::try_from(wait)
                .unwrap_or(tick)
                .min(tick);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.service.wake.notified() => {}
                _ = stop.notified() => return,
            }
        }
    }
}
