//! The reconciler: makes the tailnet match the desired state in the database, and proves it.
//!
//! Desired state is per *target* (a group member, a device's attribute, a user's role), computed
//! from all active grants on it; one module per strategy computes and applies it. Each pass:
//! (1) time transitions (pending and unclaimed approved requests lapse, active grants expire);
//! (2) each strategy's targets, every change recorded in the audit log before it is made, its
//! grant's time counted from that intent, and every change verified by reading the tailnet back.
//! Faults leave the request as it was, with the error, the attempt count and an audit entry,
//! for the next pass; nothing is lost across restarts because the database holds it all.

mod authkey;
mod group;
mod posture;
mod review;
mod role;
mod tag;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;
use tailnet::Tailnet;
use time::OffsetDateTime;

use crate::audit::NewAuditEntry;
use crate::entitlement::{Entitlement, Strategy};
use crate::metrics::Metrics;
use crate::request::{Event, Request, SYSTEM, State};
use crate::service::{Service, audit_entries, log_events};
use crate::store::{LeaderLock, RequestFilter, StoreError};
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

impl PassReport {
    /// Adds what another part of the pass did.
    fn merge(&mut self, other: PassReport) {
        self.applied += other.applied;
        self.removed += other.removed;
        self.policy_writes += other.policy_writes;
        self.drift.extend(other.drift);
        self.errors.extend(other.errors);
    }
}

/// How many per-target tailnet changes (a user's role, a key) are made at once. The client
/// honours 429s (waiting as long as `Retry-After` says) for each of them.
const TARGET_CONCURRENCY: usize = 8;

/// Runs `work` on each item, [`TARGET_CONCURRENCY`] at a time, each with a report of its own,
/// and merges the reports into `report`.
async fn each_target<T, F, Fut>(items: Vec<T>, report: &mut PassReport, work: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = PassReport>,
{
    use futures_util::StreamExt;
    let parts: Vec<PassReport> = futures_util::stream::iter(items.into_iter().map(work))
        .buffer_unordered(TARGET_CONCURRENCY)
        .collect()
        .await;
    for part in parts {
        report.merge(part);
    }
}

/// Why a tailnet change was not made or not confirmed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChangeError {
    #[error("this replica is no longer the leader")]
    NotLeader,
    #[error("cannot record the change in the audit log before making it: {0}")]
    NotRecorded(String),
    #[error("{operation}: {source}")]
    Tailnet {
        operation: String,
        source: tailnet::Error,
    },
    /// Read back, the tailnet does not hold what was written.
    #[error("{0}")]
    NotVerified(String),
    /// The change cannot be made as configured (a group missing from the policy, a user who
    /// left the tailnet, a refused policy test).
    #[error("{0}")]
    Refused(String),
}

impl ChangeError {
    fn tailnet(operation: impl Into<String>, source: tailnet::Error) -> ChangeError {
        ChangeError::Tailnet {
            operation: operation.into(),
            source,
        }
    }
}

/// The longest wait before retrying a failed tailnet change for a request.
const MAX_BACKOFF_SECONDS: i64 = 60;

/// A grant that could not be applied after this many passes fails (its requester sees why);
/// removals are retried for as long as it takes.
const MAX_APPLY_ATTEMPTS: u32 = 5;

/// What one application of an edit did to the policy document.
pub(super) struct PolicyEdit<T> {
    /// `+login group`, `-login acls[1] (line 17)`: for the log and the audit entry.
    pub changes: Vec<String>,
    /// Audit entries written (with the write's own) before the write is made.
    pub intents: Vec<(Option<String>, &'static str, serde_json::Value)>,
    /// Whatever else the edit found (drift, missing groups).
    pub found: T,
}

/// How many times one pass re-reads and re-applies the policy after a 412.
const MAX_POLICY_ATTEMPTS: usize = 8;

impl Reconciler {
    /// The one way the reconciler writes the policy file: read it, apply `edit` to the parsed
    /// document, and write it with `If-Match`, the intents audited first; on a 412 (someone
    /// else wrote it meanwhile) read again and apply the edit again, so their change is kept.
    /// An edit that changes nothing writes nothing. The policy's text afterwards, and what
    /// the last application of the edit found.
    pub(super) async fn write_policy<T>(
        &self,
        what: &str,
        report: &mut PassReport,
        mut edit: impl FnMut(&mut hujson::Document) -> Result<PolicyEdit<T>, ChangeError>,
    ) -> Result<(String, T), ChangeError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = self
                .tailnet()
                .policy()
                .await
                .map_err(|e| ChangeError::tailnet("reading the policy", e))?;
            let mut doc = hujson::Document::parse(&current.text).map_err(|e| {
                ChangeError::Refused(format!("the tailnet's policy file does not parse: {e}"))
            })?;
            let PolicyEdit {
                changes,
                mut intents,
                found,
            } = edit(&mut doc)?;
            if doc.text() == current.text {
                return Ok((current.text, found));
            }
            intents.push((
                None,
                "tailnet.policy_write",
                json!({"changes": changes, "if_match": current.etag}),
            ));
            self.intend(intents).await?;
            match self
                .tailnet()
                .set_policy(doc.text(), Some(&current.etag))
                .await
            {
                Ok(new) => {
                    report.policy_writes += 1;
                    // The full list is in the audit entry; a log line stays readable.
                    const SHOWN: usize = 20;
                    tracing::info!(
                        what,
                        changes = changes.len(),
                        first = ?&changes[..changes.len().min(SHOWN)],
                        etag = %new.etag,
                        "policy written"
                    );
                    self.record(
                        "tailnet.policy_written",
                        json!({"changes": changes, "etag": new.etag}),
                    )
                    .await;
                    return Ok((new.text, found));
                }
                Err(tailnet::Error::PreconditionFailed) if attempts < MAX_POLICY_ATTEMPTS => {
                    tracing::info!(
                        attempt = attempts,
                        "policy changed meanwhile (412): re-reading"
                    );
                }
                Err(e) => {
                    self.record(
                        "tailnet.change_failed",
                        json!({"operation": format!("policy write ({what})"), "changes": changes, "error": e.to_string()}),
                    )
                    .await;
                    return Err(ChangeError::tailnet("writing the policy", e));
                }
            }
        }
    }
}

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
    /// This pass's time transitions (expired, lapsed) not yet stored: they go out with the
    /// request's next save, after the tailnet change they call for, or at the end of the pass.
    /// The tailnet is changed first and the bookkeeping after, so a pass with thousands of
    /// expiries (after a restart, say) removes access before it writes them down.
    transitions: std::sync::Mutex<BTreeMap<String, (Request, Vec<Event>)>>,
    /// Access review revocations: the last wish seen (see `review::REVOCATIONS_WANTED`) and
    /// whether the last look found any left; they are looked for only when either says so
    /// (and on full passes).
    review_scan: std::sync::Mutex<(Option<String>, bool)>,
    /// Delivers events to webhooks (and other channels); none: events are not sent.
    sender: Option<Arc<dyn crate::notify::Sender>>,
}

fn event(request: &Request, action: &str, detail: serde_json::Value) -> Event {
    Event {
        actor: SYSTEM.to_owned(),
        action: action.to_owned(),
        request: request.id.clone(),
        detail,
    }
}

/// The intents to record for a target's requests that need a change: `grant.applying` or
/// `grant.removing`, each with the same `detail` (what the target is made into).
fn target_intents(
    requests: &[Request],
    now: OffsetDateTime,
    detail: &serde_json::Value,
) -> Vec<(Option<String>, &'static str, serde_json::Value)> {
    requests
        .iter()
        .filter(|r| needs_change(r, now))
        .map(|r| {
            let action = if r.wants_access(now) {
                "grant.applying"
            } else {
                "grant.removing"
            };
            (Some(r.id.clone()), action, detail.clone())
        })
        .collect()
}

/// Whether the reconciler must change or confirm something in the tailnet for this request:
/// an approved grant to apply, or access to remove whose removal is not yet verified.
fn needs_change(r: &Request, now: OffsetDateTime) -> bool {
    if r.wants_access(now) {
        r.state == State::Approved
    } else {
        r.may_hold_access() && r.tailnet.removal_verified_at.is_none()
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
            transitions: std::sync::Mutex::new(BTreeMap::new()),
            review_scan: std::sync::Mutex::new((None, true)),
            sender: None,
        }
    }

    /// Makes no tailnet change unless `lock` is still held when it is about to be made.
    pub fn fenced(mut self, lock: Arc<dyn LeaderLock>) -> Reconciler {
        self.fence = Some(lock);
        self
    }

    /// Sends events (the outbox) through `sender` while leading.
    pub fn notifying(mut self, sender: Arc<dyn crate::notify::Sender>) -> Reconciler {
        self.sender = Some(sender);
        self
    }

    /// Reports each pass's duration to `metrics`.
    pub fn observed(mut self, metrics: Arc<Metrics>) -> Reconciler {
        self.metrics = Some(metrics);
        self
    }

    fn tailnet(&self) -> &dyn Tailnet {
        self.service.tailnet().as_ref()
    }

    fn now(&self) -> OffsetDateTime {
        self.service.now()
    }

    fn entitlement(&self, name: &str) -> Option<&Entitlement> {
        self.service.config().entitlement(name)
    }

    /// Stores a changed request with its events. A conflict (someone else changed it) is not
    /// an error: the next pass sees the new version.
    async fn save(&self, request: &mut Request, events: &[Event], report: &mut PassReport) -> bool {
        let mut events = events.to_vec();
        self.with_transitions(&request.id, &mut events);
        let events = &events[..];
        request.version += 1;
        let entries = audit_entries(events, self.now());
        match self.service.store().update_request(request, &entries).await {
            Ok(()) => {
                log_events(request, events);
                true
            }
            Err(StoreError::Conflict(_)) => {
                request.version -= 1;
                false
            }
            Err(e) => {
                request.version -= 1;
                tracing::error!(request = %request.id, error = %e, "cannot store a request change");
                report
                    .errors
                    .push(format!("{}: cannot store: {e}", request.id));
                false
            }
        }
    }

    /// Stores several changed requests with their events in one batch; versions are bumped
    /// here for those stored. Per request: stored, or refused for a version conflict (the next
    /// pass sees the newer version).
    async fn save_batch(
        &self,
        changes: &mut [(Request, Vec<Event>)],
        report: &mut PassReport,
    ) -> Vec<bool> {
        if changes.is_empty() {
            return Vec::new();
        }
        for (r, events) in changes.iter_mut() {
            self.with_transitions(&r.id, events);
        }
        let now = self.now();
        let batch: Vec<(Request, Vec<NewAuditEntry>)> = changes
            .iter()
            .map(|(r, events)| {
                let mut r = r.clone();
                r.version += 1;
                (r, audit_entries(events, now))
            })
            .collect();
        let stored = match self.service.store().update_requests(&batch).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(count = batch.len(), error = %e, "cannot store request changes");
                report
                    .errors
                    .push(format!("cannot store {} request changes: {e}", batch.len()));
                vec![false; batch.len()]
            }
        };
        for ((r, events), ok) in changes.iter_mut().zip(&stored) {
            if *ok {
                r.version += 1;
                log_events(r, events);
            }
        }
        stored
    }

    /// Puts the request's unstored time transition (its events) in front of `events`: the
    /// save about to be made stores it too.
    fn with_transitions(&self, id: &str, events: &mut Vec<Event>) {
        let pending = match self.transitions.lock() {
            Ok(mut t) => t.remove(id),
            Err(poisoned) => poisoned.into_inner().remove(id),
        };
        if let Some((_, mut first)) = pending {
            first.append(events);
            *events = first;
        }
    }

    /// Stores the time transitions no strategy stored with a change of its own.
    async fn flush_transitions(&self, report: &mut PassReport) {
        let pending = match self.transitions.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let mut changes: Vec<(Request, Vec<Event>)> = pending.into_values().collect();
        self.save_batch(&mut changes, report).await;
    }

    /// Records, on each approved request due to be applied now (not one scheduled later), the
    /// intent to apply it (and what `prepare` adds, such as the role to restore), before any
    /// tailnet write: the grant's time counts from here. Returns every request, except those
    /// that changed meanwhile, which wait for the next pass.
    async fn record_intent<F>(
        &self,
        requests: Vec<Request>,
        mut prepare: F,
        report: &mut PassReport,
    ) -> Vec<Request>
    where
        F: FnMut(&mut Request),
    {
        let now = self.now();
        let mut out = Vec::new();
        let mut changes = Vec::new();
        for mut r in requests {
            if r.state == State::Approved
                && r.wants_access(now)
                && r.tailnet.applying_since.is_none()
            {
                r.tailnet.applying_since = Some(now);
                prepare(&mut r);
                changes.push((r, Vec::new()));
            } else {
                out.push(r);
            }
        }
        let stored = self.save_batch(&mut changes, report).await;
        out.extend(
            changes
                .into_iter()
                .zip(stored)
                .filter_map(|((r, _), ok)| ok.then_some(r)),
        );
        out
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
            let mut stored = match self.service.store().request(&applied.id).await {
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
                self.service.wake_reconciler();
                return;
            }
        }
    }

    /// Notes a failed tailnet change on each request it was for: attempts, last error, when to
    /// retry, and a `tailnet.change_failed` audit entry. A grant that could not be applied
    /// after [`MAX_APPLY_ATTEMPTS`] fails.
    async fn note_failure(
        &self,
        requests: Vec<Request>,
        error: &ChangeError,
        report: &mut PassReport,
    ) {
        if requests.is_empty() {
            return;
        }
        let now = self.now();
        let message = error.to_string();
        report.errors.push(format!(
            "{}: {message}",
            requests
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut changes = Vec::new();
        for mut r in requests {
            r.tailnet.attempts += 1;
            r.tailnet.last_error = Some(message.clone());
            let backoff = 2i64
                .saturating_pow(r.tailnet.attempts.min(6))
                .min(MAX_BACKOFF_SECONDS);
            r.tailnet.retry_at = Some(now + time::Duration::seconds(backoff));
            tracing::warn!(
                request = %r.id,
                entitlement = %r.entitlement,
                attempt = r.tailnet.attempts,
                error = %message,
                "tailnet change failed"
            );
            let mut events = vec![event(
                &r,
                "tailnet.change_failed",
                json!({"error": message, "attempt": r.tailnet.attempts}),
            )];
            if r.state == State::Approved && r.tailnet.attempts >= MAX_APPLY_ATTEMPTS {
                let why = format!(
                    "could not be applied after {} attempts: {message}",
                    r.tailnet.attempts
                );
                events.extend(r.fail(&why, now).unwrap_or_default());
            }
            changes.push((r, events));
        }
        self.save_batch(&mut changes, report).await;
    }

    /// Fails approved requests outright (the change can never be made as asked).
    async fn fail_requests(&self, requests: Vec<Request>, why: &str, report: &mut PassReport) {
        let now = self.now();
        let mut changes = Vec::new();
        for mut r in requests {
            if let Ok(events) = r.fail(why, now) {
                changes.push((r, events));
            }
        }
        self.save_batch(&mut changes, report).await;
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
        let started = std::time::Instant::now();
        let mut report = PassReport::default();
        let now = self.now();
        let filter = RequestFilter {
            open_only: true,
            due_before: (!full).then_some(now),
            ..RequestFilter::default()
        };
        let requests = match self.service.store().requests(&filter).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read requests");
                report.errors.push(format!("cannot read requests: {e}"));
                return report;
            }
        };
        let requests = self.time_transitions(requests);
        let mut groups = Vec::new();
        let mut posture = Vec::new();
        let mut roles = Vec::new();
        let mut keys = Vec::new();
        let mut tags = Vec::new();
        for r in requests {
            let Some(entitlement) = self.entitlement(&r.entitlement) else {
                tracing::error!(request = %r.id, entitlement = %r.entitlement, "entitlement no longer configured");
                report.errors.push(format!(
                    "{}: entitlement {:?} is no longer configured",
                    r.id, r.entitlement
                ));
                continue;
            };
            match &entitlement.strategy {
                Strategy::Group { .. } | Strategy::Rule { .. } => groups.push(r),
                Strategy::Posture { .. } => posture.push(r),
                Strategy::Role { .. } => roles.push(r),
                Strategy::Tag { .. } => tags.push(r),
                Strategy::AuthKey { .. } => keys.push(r),
            }
        }
        self.groups(groups, full, &mut report).await;
        each_target(keys, &mut report, |r| async move {
            let mut part = PassReport::default();
            self.authkey(r, &mut part).await;
            part
        })
        .await;
        let posture = self
            .with_related(posture, full, "posture", &mut report)
            .await;
        self.posture(posture, &mut report).await;
        let roles = self.with_related(roles, full, "role", &mut report).await;
        self.roles(roles, &mut report).await;
        let tags = self.with_related(tags, full, "tag", &mut report).await;
        self.tags(tags, &mut report).await;
        self.flush_transitions(&mut report).await;
        if self.review_revocations_wanted(full).await {
            let left = self.review_revocations(&mut report).await;
            if let Ok(mut scan) = self.review_scan.lock() {
                scan.1 = left;
            }
        }
        match self.service.store().count_overdue(self.now()).await {
            Ok(n) => report.overdue = n as usize,
            Err(e) => report
                .errors
                .push(format!("cannot count overdue revocations: {e}")),
        }
        let did_something = report.applied > 0
            || report.removed > 0
            || report.policy_writes > 0
            || !report.errors.is_empty();
        if did_something {
            tracing::info!(
                full,
                applied = report.applied,
                removed = report.removed,
                policy_writes = report.policy_writes,
                overdue = report.overdue,
                drift = report.drift.len(),
                errors = report.errors.len(),
                duration_ms = started.elapsed().as_millis() as u64,
                "reconcile pass"
            );
        }
        report
    }

    /// Pending requests nobody decided and approved requests not applied or claimed within
    /// their pending time lapse; active grants past their end expire. Made in memory and kept
    /// in [`Self::transitions`] until stored with the tailnet change they call for.
    fn time_transitions(&self, requests: Vec<Request>) -> Vec<Request> {
        let now = self.now();
        let mut pending = match self.transitions.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        pending.clear();
        requests
            .into_iter()
            .map(|mut r| {
                let events = match r.state {
                    State::Pending | State::Approved => r.lapse(now).ok(),
                    State::Active if r.expires_at.is_some_and(|e| e <= now) => r.expire(now).ok(),
                    _ => None,
                };
                if let Some(events) = events {
                    pending.insert(r.id.clone(), (r.clone(), events));
                }
                r
            })
            .collect()
    }

    /// A target's desired state needs every open grant on it, not only those due now: in a
    /// due pass, the other open requests of the same requesters with this strategy are read
    /// too (a full pass already has them all).
    async fn with_related(
        &self,
        requests: Vec<Request>,
        full: bool,
        strategy: &str,
        report: &mut PassReport,
    ) -> Vec<Request> {
        if full || requests.is_empty() {
            return requests;
        }
        let requesters: BTreeSet<String> = requests.iter().map(|r| r.requester.clone()).collect();
        let mut by_id: BTreeMap<String, Request> =
            requests.into_iter().map(|r| (r.id.clone(), r)).collect();
        for requester in requesters {
            let filter = RequestFilter {
                open_only: true,
                requester: Some(requester.clone()),
                ..RequestFilter::default()
            };
            match self.service.store().requests(&filter).await {
                Ok(related) => {
                    for r in related {
                        let same = self
                            .entitlement(&r.entitlement)
                            .is_some_and(|e| e.strategy.name() == strategy);
                        if same {
                            by_id.entry(r.id.clone()).or_insert(r);
                        }
                    }
                }
                Err(e) => {
                    // Without the others, the desired state cannot be known: leave them all
                    // for the next pass rather than act on half of it.
                    report
                        .errors
                        .push(format!("cannot read {requester}'s other grants: {e}"));
                    by_id.retain(|_, r| r.requester != requester);
                }
            }
        }
        by_id.into_values().collect()
    }

    /// Whether to look for access review revocations in this pass: a full pass, a new wish
    /// (a revoke decision, from any replica), or some left over from the last look.
    async fn review_revocations_wanted(&self, full: bool) -> bool {
        let wish = self
            .service
            .store()
            .get_state(crate::review::REVOCATIONS_WANTED)
            .await
            .ok()
            .flatten();
        let Ok(mut scan) = self.review_scan.lock() else {
            return true;
        };
        let new_wish = wish.is_some() && scan.0 != wish;
        scan.0 = wish;
        full || new_wish || scan.1
    }

    /// Whether this replica may still change the tailnet (always, without a fence).
    async fn still_leading(&self) -> bool {
        match &self.fence {
            Some(fence) => fence.held().await,
            None => true,
        }
    }

    /// Writes intended tailnet changes to the audit log before they are made, after checking
    /// leadership. If they cannot be recorded, the change is not made (this pass).
    async fn intend(
        &self,
        intents: Vec<(Option<String>, &str, serde_json::Value)>,
    ) -> Result<(), ChangeError> {
        if !self.still_leading().await {
            return Err(ChangeError::NotLeader);
        }
        let at = time_text(self.now());
        let entries: Vec<NewAuditEntry> = intents
            .into_iter()
            .map(|(request, action, detail)| NewAuditEntry {
                at: at.clone(),
                actor: SYSTEM.to_owned(),
                action: action.to_owned(),
                request,
                detail: detail.to_string(),
            })
            .collect();
        self.service
            .store()
            .append_audit(&entries)
            .await
            .map(|_| ())
            .map_err(|e| ChangeError::NotRecorded(e.to_string()))
    }

    /// Writes an audit entry that is not about one request (best effort: it is also logged).
    async fn record(&self, action: &str, detail: serde_json::Value) {
        let entry = NewAuditEntry {
            at: time_text(self.now()),
            actor: SYSTEM.to_owned(),
            action: action.to_owned(),
            request: None,
            detail: detail.to_string(),
        };
        if let Err(e) = self.service.store().append_audit(&[entry]).await {
            tracing::error!(action, error = %e, "cannot write an audit entry");
        }
    }

    /// Stores activations and verified removals, counting them; an activation that lost the
    /// race for its row is handed to [`Self::applied_meanwhile`].
    async fn settle(&self, mut changes: Vec<(Request, Vec<Event>)>, report: &mut PassReport) {
        let stored = self.save_batch(&mut changes, report).await;
        for ((r, events), ok) in changes.into_iter().zip(stored) {
            let applied = events.iter().find(|e| e.action == "grant.applied");
            let removed = events.iter().any(|e| e.action == "grant.removal_verified");
            match (ok, applied) {
                (true, Some(_)) => report.applied += 1,
                (true, None) if removed => report.removed += 1,
                (false, Some(e)) => self.applied_meanwhile(&r, e.detail.clone(), report).await,
                _ => {}
            }
        }
    }

    /// When the next pass is due: the earliest due time of an open request (expiry, lapse,
    /// scheduled start, retry), at most `tick` from now.
    pub async fn next_due(&self, tick: time::Duration) -> OffsetDateTime {
        let now = self.now();
        let limit = now + tick;
        match self.service.store().next_due().await {
            Ok(Some(due)) => due.clamp(now, limit),
            _ => limit,
        }
    }

    /// Reloads the directory file when it changed and acts on new leavers.
    async fn watch_directory(&self, seen: &mut Option<(std::time::SystemTime, u64)>) {
        let Some(file) = self
            .service
            .config()
            .directory
            .as_ref()
            .and_then(|d| d.file.as_ref())
        else {
            return;
        };
        let stamp = std::fs::metadata(file)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_none() || stamp == *seen || !self.still_leading().await {
            return;
        }
        *seen = stamp;
        match self.service.people().await {
            Ok(people) => {
                if let Err(e) = self.service.act_on_leavers(&people, "directory file").await {
                    tracing::error!(error = %e, "cannot act on leavers");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the directory; leavers wait until it reads")
            }
        }
    }

    /// Runs passes until `stop` is notified: at the next due time, when woken, or every
    /// `tick`; passes over the due requests, and a full pass (drift, the membership index) every 5 minutes.
    pub async fn run(&self, tick: std::time::Duration, stop: Arc<tokio::sync::Notify>) {
        const FULL_EVERY: time::Duration = time::Duration::minutes(5);
        let tick_time = time::Duration::try_from(tick).unwrap_or(time::Duration::seconds(10));
        let mut last_full: Option<OffsetDateTime> = None;
        // Machine nodes past their node_ttl are looked for every minute (one device list).
        const CLEAN_EVERY: time::Duration = time::Duration::minutes(1);
        let mut last_clean: Option<OffsetDateTime> = None;
        // Access reviews' due dates and schedules, looked at every minute too.
        let mut last_reviews: Option<OffsetDateTime> = None;
        // The inventory is synced on its schedule (and when a webhook asks) in a task of its
        // own: a large tailnet takes seconds to read, and expiries must not wait for it.
        let sync_every = self.service.config().inventory_sync_interval.to_time();
        let mut last_sync: Option<OffsetDateTime> = None;
        let syncing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let notifying = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut sync_wished = false;
        // The directory file, looked at every turn: a leaver is acted on within a second or so
        // of the file changing.
        let mut directory_seen: Option<(std::time::SystemTime, u64)> = None;
        let mut served_request = self.service.full_pass_requested().await;
        loop {
            let now = self.now();
            let started = std::time::Instant::now();
            // A full pass asked for through the store (an adoption, from any process).
            let requested = self.service.full_pass_requested().await;
            let asked = requested != served_request;
            if asked || last_full.is_none_or(|t| now - t >= FULL_EVERY) {
                served_request = requested;
                let _ = self.pass().await;
                last_full = Some(now);
            } else {
                let _ = self.pass_due().await;
            }
            if let Some(metrics) = &self.metrics {
                metrics.observe_pass(started.elapsed());
            }
            if !self.service.config().machines.is_empty()
                && last_clean.is_none_or(|t| now - t >= CLEAN_EVERY)
                && self.still_leading().await
            {
                last_clean = Some(now);
                if let Err(e) = self.service.clean_machine_nodes().await {
                    tracing::error!(error = %e, "cannot clean up machine nodes");
                }
            }
            if last_reviews.is_none_or(|t| now - t >= CLEAN_EVERY) && self.still_leading().await {
                last_reviews = Some(now);
                if let Err(e) = self.service.review_housekeeping().await {
                    tracing::error!(error = %e, "access reviews: cannot apply due dates and schedules");
                }
            }
            // Events to other systems, in a task of their own (a slow endpoint must not hold
            // back an expiry), one round at a time.
            if let Some(sender) = &self.sender
                && self.service.notifies()
                && !notifying.load(std::sync::atomic::Ordering::SeqCst)
                && self.still_leading().await
            {
                notifying.store(true, std::sync::atomic::Ordering::SeqCst);
                let (service, sender, flag) =
                    (self.service.clone(), sender.clone(), notifying.clone());
                tokio::spawn(async move {
                    if let Err(e) = service.notify_round(sender.as_ref()).await {
                        tracing::error!(error = %e, "cannot deliver events");
                    }
                    flag.store(false, std::sync::atomic::Ordering::SeqCst);
                });
            }
            // A wish that comes during a sync is served by the next one.
            sync_wished |= self.service.take_inventory_sync_wish();
            if (sync_wished || last_sync.is_none_or(|t| now - t >= sync_every))
                && !syncing.load(std::sync::atomic::Ordering::SeqCst)
                && self.still_leading().await
            {
                last_sync = Some(now);
                sync_wished = false;
                syncing.store(true, std::sync::atomic::Ordering::SeqCst);
                let (service, flag) = (self.service.clone(), syncing.clone());
                tokio::spawn(async move {
                    if let Err(e) = service.sync_inventory(&|_| {}).await {
                        tracing::error!(error = %e, "cannot sync the inventory");
                    }
                    flag.store(false, std::sync::atomic::Ordering::SeqCst);
                });
            }
            self.watch_directory(&mut directory_seen).await;
            let due = self.next_due(tick_time).await;
            // Expiries are stored to the second: wake just after the due second begins.
            let wait = (due - self.service.clock().now()).max(time::Duration::milliseconds(20));
            let wait = std::time::Duration::try_from(wait)
                .unwrap_or(tick)
                .min(tick);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.service.woken() => {}
                _ = stop.notified() => return,
            }
        }
    }
}
