//! Access requests and their lifecycle:
//! `pending → approved → active → expired | revoked`, or `denied | cancelled | failed`.
//!
//! Every transition is a method that checks who may do it and when, changes the request, and
//! returns the [`Event`] to write to the audit log (the caller stores both in one transaction,
//! so the log holds every step before it takes effect). Time is passed in, never read.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::access::{Reviewer, Revoker};
use crate::duration::Span;
use crate::entitlement::{Directory, Entitlement, ReasonRule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Approved,
    Active,
    Expired,
    Revoked,
    Denied,
    Cancelled,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Active => "active",
            State::Expired => "expired",
            State::Revoked => "revoked",
            State::Denied => "denied",
            State::Cancelled => "cancelled",
            State::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        [
            State::Pending,
            State::Approved,
            State::Active,
            State::Expired,
            State::Revoked,
            State::Denied,
            State::Cancelled,
            State::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// No further transitions.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Expired | State::Revoked | State::Denied | State::Cancelled | State::Failed
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: String,
    pub approve: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A break-glass grant looked at afterwards: who, when, and what they concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AfterReview {
    pub reviewer: String,
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A request to lengthen an active grant; it needs approvals of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    pub duration: Span,
    pub reason: String,
    pub reviews: Vec<Review>,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
}

/// What the reconciler has done in the tailnet for this request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailnetStatus {
    /// When the reconciler recorded its intent to give this access, just before the tailnet
    /// write. The grant's time counts from here, so a crash between the write and its record
    /// never lengthens it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub applying_since: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub applied_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub verified_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub removed_at: Option<OffsetDateTime>,
    /// Read back from the tailnet after removal: the access is really gone.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub removal_verified_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// `role` strategy: the user's own role, recorded before tidegate first raised it, restored
    /// when no grant on the user remains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_role: Option<String>,
    /// `tag` strategy: each device's own tags, recorded before tidegate first changed them,
    /// restored when no grant on the device remains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_tags: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// `posture`: the expiry the attribute carries in the tailnet (moves with extensions).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub applied_until: Option<OffsetDateTime>,
    /// After a failed attempt, when to try again (backoff).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_at: Option<OffsetDateTime>,
    /// `authkey` strategy: the key's id (never its secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub entitlement: String,
    pub requester: String,
    pub reason: String,
    pub duration: Span,
    /// `posture` strategy: the requester's devices (node IDs) that get the attribute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    pub state: State,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// A scheduled start; the grant is not applied before it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_at: Option<OffsetDateTime>,
    /// A pending request is cancelled at this time if not decided.
    #[serde(with = "time::serde::rfc3339")]
    pub pending_until: OffsetDateTime,
    #[serde(default)]
    pub reviews: Vec<Review>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub activated_at: Option<OffsetDateTime>,
    /// Null until the grant is active (duration counts from activation).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ended_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// Self-granted in an emergency; must be reviewed afterwards.
    #[serde(default)]
    pub break_glass: bool,
    /// The after-the-fact review of a break-glass grant by an admin or auditor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass_review: Option<AfterReview>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Extension>,
    /// Extensions granted, in order, with their reviews.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extended: Vec<Extension>,
    #[serde(default)]
    pub tailnet: TailnetStatus,
    /// Bumped on every stored change (optimistic concurrency).
    #[serde(default)]
    pub version: i64,
}

/// A step in a request's life, for the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub actor: String,
    /// `request.created`, `request.approved`, `grant.applied`, ...
    pub action: String,
    pub request: String,
    pub detail: serde_json::Value,
}

/// Why a transition was refused. The message says what to do differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("request {id} is {state}, so it cannot be {action}")]
    WrongState {
        id: String,
        state: &'static str,
        action: &'static str,
    },
}

/// The actor name the reconciler and the scheduler use in the audit log.
pub const SYSTEM: &str = "tidegate";

fn not_allowed(message: String) -> LifecycleError {
    LifecycleError::NotAllowed(message)
}

/// The most characters a reason or comment may have.
pub const MAX_TEXT_CHARS: usize = 1000;

/// Refuses a reason or comment that is too long or carries control characters (newlines and
/// tabs included) or bidirectional overrides: it is shown in approvers' terminals, pages and
/// chat, where such characters could rewrite or hide what is displayed.
pub fn check_text(field: &str, text: &str) -> Result<(), LifecycleError> {
    let count = text.chars().count();
    if count > MAX_TEXT_CHARS {
        return Err(LifecycleError::Invalid(format!(
            "the {field} is {count} characters long; at most {MAX_TEXT_CHARS} are allowed"
        )));
    }
    if let Some((at, c)) = text.chars().enumerate().find(|(_, c)| {
        c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }) {
        return Err(LifecycleError::Invalid(format!(
            "the {field} contains the control character U+{:04X} at character {}; write it on one line without control characters",
            c as u32,
            at + 1
        )));
    }
    Ok(())
}

/// What a requester asks for.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    pub reason: String,
    pub duration: Option<Span>,
    pub start_at: Option<OffsetDateTime>,
    pub devices: Vec<String>,
    pub break_glass: bool,
}

impl Request {
    /// A new request, checked against the entitlement's rules. Auto-approval and break-glass
    /// make it approved at once.
    pub fn create(
        id: String,
        entitlement: &Entitlement,
        requester: &str,
        ask: Ask,
        directory: &Directory,
        now: OffsetDateTime,
    ) -> Result<(Request, Vec<Event>), LifecycleError> {
        if !directory.is_user(requester) {
            return Err(not_allowed(format!(
                "{requester} is not a user of this tailnet"
            )));
        }
        if !directory.matches_any(&entitlement.requesters, requester) {
            let who: Vec<String> = entitlement
                .requesters
                .iter()
                .map(|s| s.to_string())
                .collect();
            return Err(not_allowed(format!(
                "{requester} may not request {:?}: it is for {}",
                entitlement.name,
                who.join(", ")
            )));
        }
        check_text("reason", &ask.reason)?;
        let reason = ask.reason.trim().to_owned();
        if entitlement.reason == ReasonRule::Required && reason.is_empty() {
            return Err(LifecycleError::Invalid(format!(
                "{:?} needs a reason (a ticket or a sentence)",
                entitlement.name
            )));
        }
        let duration = ask.duration.unwrap_or(entitlement.default_duration);
        check_duration(entitlement, duration)?;
        if let Some(start) = ask.start_at
            && start < now
        {
            return Err(LifecycleError::Invalid(
                "the start time is in the past".into(),
            ));
        }
        if ask.break_glass && !entitlement.break_glass {
            return Err(not_allowed(format!(
                "{:?} has no break-glass access",
                entitlement.name
            )));
        }
        let mut request = Request::pending(id, entitlement, requester, reason, duration, now);
        request.devices = ask.devices;
        request.start_at = ask.start_at;
        // A scheduled request may be decided (and, approved, applied) until its pending time
        // after the start.
        request.pending_until =
            ask.start_at.unwrap_or(now).max(now) + entitlement.pending_ttl.to_time();
        request.break_glass = ask.break_glass;
        let mut events = vec![request.event(
            requester,
            "request.created",
            serde_json::json!({
                "entitlement": request.entitlement,
                "reason": request.reason,
                "duration": request.duration,
                "devices": request.devices,
                "start_at": request.start_at.map(crate::time_text),
                "break_glass": request.break_glass,
            }),
        )];
        if ask.break_glass {
            request.state = State::Approved;
            events.push(request.event(
                requester,
                "request.break_glass",
                serde_json::json!({"note": "self-granted in an emergency; to be reviewed"}),
            ));
        } else if directory.matches_any(&entitlement.auto_approve, requester) {
            request.state = State::Approved;
            events.push(request.event(
                SYSTEM,
                "request.auto_approved",
                serde_json::json!({"rule": entitlement.auto_approve.iter().map(|s| s.to_string()).collect::<Vec<_>>()}),
            ));
        }
        Ok((request, events))
    }

    /// A CI job's request for a machine key that a person must approve (see
    /// [`crate::machine::MachineEntitlement::to_entitlement`]); the job's token was verified and
    /// its claims matched. Its requester is the job's subject.
    pub fn for_machine(
        id: String,
        entitlement: &Entitlement,
        subject: &str,
        now: OffsetDateTime,
    ) -> Result<(Request, Vec<Event>), LifecycleError> {
        let requester = crate::machine::requester(subject);
        check_text("subject", subject)?;
        let request = Request::pending(
            id,
            entitlement,
            &requester,
            format!("CI job {subject}"),
            entitlement.default_duration,
            now,
        );
        let events = vec![request.event(
            &requester,
            "request.created",
            serde_json::json!({
                "entitlement": request.entitlement,
                "reason": request.reason,
                "duration": request.duration,
                "machine": true,
            }),
        )];
        Ok((request, events))
    }

    /// A new pending request, decided within the entitlement's pending time; nothing else
    /// set yet.
    fn pending(
        id: String,
        entitlement: &Entitlement,
        requester: &str,
        reason: String,
        duration: Span,
        now: OffsetDateTime,
    ) -> Request {
        Request {
            id,
            entitlement: entitlement.name.clone(),
            requester: requester.to_owned(),
            reason,
            duration,
            devices: Vec::new(),
            state: State::Pending,
            created_at: now,
            start_at: None,
            pending_until: now + entitlement.pending_ttl.to_time(),
            reviews: Vec::new(),
            activated_at: None,
            expires_at: None,
            ended_at: None,
            ended_by: None,
            end_reason: None,
            break_glass: false,
            break_glass_review: None,
            extension: None,
            extended: Vec::new(),
            tailnet: TailnetStatus::default(),
            version: 0,
        }
    }

    fn event(&self, actor: &str, action: &str, detail: serde_json::Value) -> Event {
        Event {
            actor: actor.to_owned(),
            action: action.to_owned(),
            request: self.id.clone(),
            detail,
        }
    }

    fn wrong_state(&self, action: &'static str) -> LifecycleError {
        LifecycleError::WrongState {
            id: self.id.clone(),
            state: self.state.as_str(),
            action,
        }
    }

    /// May `reviewer` review this request at all?
    /// The reviewer's capability must be for this request's entitlement, and nobody reviews
    /// their own request unless the entitlement allows it.
    fn check_reviewer(
        &self,
        entitlement: &Entitlement,
        reviewer: &Reviewer,
    ) -> Result<(), LifecycleError> {
        if reviewer.entitlement() != self.entitlement || entitlement.name != self.entitlement {
            return Err(not_allowed(format!(
                "{} reviews {:?} requests, not {}",
                reviewer.login(),
                reviewer.entitlement(),
                self.id
            )));
        }
        if reviewer.login() == self.requester && !entitlement.self_approval {
            return Err(not_allowed(format!(
                "{} requested {} and may not review their own request",
                reviewer.login(),
                self.id
            )));
        }
        Ok(())
    }

    pub fn approve(
        &mut self,
        entitlement: &Entitlement,
        reviewer: &Reviewer,
        comment: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, LifecycleError> {
        check_text("comment", comment)?;
        self.check_reviewer(entitlement, reviewer)?;
        let reviewer = reviewer.login();
        let review = Review {
            reviewer: reviewer.to_owned(),
            approve: true,
            comment: comment.trim().to_owned(),
            at: now,
        };
        let needed = entitlement.approvals as usize;
        if self.state == State::Active
            && let Some(extension) = self.extension.as_mut()
        {
            if extension.reviews.iter().any(|r| r.reviewer == reviewer) {
                return Err(LifecycleError::Invalid(format!(
                    "{reviewer} already approved this extension"
                )));
            }
            extension.reviews.push(review);
            let count = extension.reviews.len();
            let duration = extension.duration;
            let mut events = vec![self.event(
                reviewer,
                "extension.approval",
                serde_json::json!({"comment": comment, "approvals": count, "needed": needed}),
            )];
            if count >= needed {
                let old = self.expires_at;
                let base = old.unwrap_or(now).max(now);
                self.expires_at = Some(base + duration.to_time());
                // Kept, with its reviews: who approved the extra time, and why, stays on the
                // request.
                if let Some(granted) = self.extension.take() {
                    self.extended.push(granted);
                }
                events.push(self.event(
                    reviewer,
                    "grant.extended",
                    serde_json::json!({
                        "by": duration,
                        "old_expires_at": old.map(crate::time_text),
                        "expires_at": self.expires_at.map(crate::time_text),
                    }),
                ));
            }
            return Ok(events);
        }
        if self.state != State::Pending {
            return Err(self.wrong_state("approved"));
        }
        if self.reviews.iter().any(|r| r.reviewer == reviewer) {
            return Err(LifecycleError::Invalid(format!(
                "{reviewer} already reviewed {}",
                self.id
            )));
        }
        self.reviews.push(review);
        let count = self.reviews.iter().filter(|r| r.approve).count();
        let mut events = vec![self.event(
            reviewer,
            "request.approval",
            serde_json::json!({"comment": comment, "approvals": count, "needed": needed}),
        )];
        if count >= needed {
            self.state = State::Approved;
            events.push(self.event(
                reviewer,
                "request.approved",
                serde_json::json!({"approvals": count}),
            ));
        }
        Ok(events)
    }

    /// One deny ends a pending request (or its pending extension).
    pub fn deny(
        &mut self,
        entitlement: &Entitlement,
        reviewer: &Reviewer,
        comment: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, LifecycleError> {
        check_text("comment", comment)?;
        self.check_reviewer(entitlement, reviewer)?;
        let reviewer = reviewer.login();
        if self.state == State::Active && self.extension.is_some() {
            self.extension = None;
            return Ok(vec![self.event(
                reviewer,
                "extension.denied",
                serde_json::json!({"comment": comment}),
            )]);
        }
        if self.state != State::Pending {
            return Err(self.wrong_state("denied"));
        }
        self.reviews.push(Review {
            reviewer: reviewer.to_owned(),
            approve: false,
            comment: comment.trim().to_owned(),
            at: now,
        });
        self.end(State::Denied, reviewer, comment, now);
        Ok(vec![self.event(
            reviewer,
            "request.denied",
            serde_json::json!({"comment": comment}),
        )])
    }

    fn end(&mut self, state: State, by: &str, reason: &str, now: OffsetDateTime) {
        self.state = state;
        self.ended_at = Some(now);
        self.ended_by = Some(by.to_owned());
        if !reason.is_empty() {
            self.end_reason = Some(reason.to_owned());
        }
    }

    /// The requester left (the directory says terminated): a request not yet holding access is
    /// cancelled, a grant is revoked, by tidegate. Only the leaver handling calls this.
    pub(crate) fn end_for_leaver(
        &mut self,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, LifecycleError> {
        const WHY: &str = "the requester left (terminated in the directory)";
        match self.state {
            State::Pending | State::Approved if !self.may_hold_access() => {
                self.end(State::Cancelled, SYSTEM, WHY, now);
                Ok(vec![self.event(
                    SYSTEM,
                    "request.cancelled",
                    serde_json::json!({"reason": WHY}),
                )])
            }
            State::Active | State::Approved => {
                self.end(State::Revoked, SYSTEM, WHY, now);
                self.extension = None;
                Ok(vec![self.event(
                    SYSTEM,
                    "grant.revoked",
                    serde_json::json!({"reason": WHY}),
                )])
            }
            _ => Err(self.wrong_state("ended for a leaver")),
        }
    }

    /// The requester withdraws a request not yet active.
    pub fn cancel(&mut self, by: &str, now: OffsetDateTime) -> Result<Vec<Event>, LifecycleError> {
        if by != self.requester {
            return Err(not_allowed(format!(
                "only {} can cancel {}",
                self.requester, self.id
            )));
        }
        if !matches!(self.state, State::Pending | State::Approved) || self.may_hold_access() {
            return Err(self.wrong_state("cancelled"));
        }
        self.end(State::Cancelled, by, "cancelled by the requester", now);
        Ok(vec![self.event(
            by,
            "request.cancelled",
            serde_json::json!({}),
        )])
    }

    /// Ends access early: the requester drops it, or an approver or admin revokes it.
    pub fn revoke(
        &mut self,
        revoker: &Revoker,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, LifecycleError> {
        check_text("reason", reason)?;
        if revoker.request() != self.id {
            return Err(not_allowed(format!(
                "{} may end {}, not {}",
                revoker.login(),
                revoker.request(),
                self.id
            )));
        }
        let by = revoker.login();
        let requester = by == self.requester;
        if !matches!(self.state, State::Active | State::Approved) {
            return Err(self.wrong_state("revoked"));
        }
        let action = if requester {
            "grant.dropped"
        } else {
            "grant.revoked"
        };
        let why = if reason.trim().is_empty() {
            if requester {
                "dropped by the requester"
            } else {
                "revoked"
            }
        } else {
            reason.trim()
        };
        self.end(State::Revoked, by, why, now);
        self.extension = None;
        Ok(vec![self.event(
            by,
            action,
            serde_json::json!({"reason": why}),
        )])
    }

    /// The requester asks for more time on an active grant; approvers approve it like a request.
    pub fn request_extension(
        &mut self,
        entitlement: &Entitlement,
        by: &str,
        duration: Span,
        reason: &str,
        directory: &Directory,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, LifecycleError> {
        check_text("reason", reason)?;
        if by != self.requester {
            return Err(not_allowed(format!(
                "only {} can extend {}",
                self.requester, self.id
            )));
        }
        if self.state != State::Active {
            return Err(self.wrong_state("extended"));
        }
        let total_seconds = self
            .expires_at
            .zip(self.activated_at)
            .map(|(e, a)| (e - a).whole_seconds().max(0) as u64)
            .unwrap_or(self.duration.as_secs())
            + duration.as_secs();
        if total_seconds > entitlement.max_duration.as_secs() {
            return Err(LifecycleError::Invalid(format!(
                "extending by {duration} would exceed the maximum of {} for {:?}",
                entitlement.max_duration, entitlement.name
            )));
        }
        self.extension = Some(Extension {
            duration,
            reason: reason.trim().to_owned(),
            reviews: Vec::new(),
            requested_at: now,
        });
        let mut events = vec![self.event(
            by,
            "extension.requested",
            serde_json::json!({"by": duration, "reason": reason}),
        )];
        if directory.matches_any(&entitlement.auto_approve, by) {
            let old = self.expires_at;
            self.expires_at = Some(old.unwrap_or(now).max(now) + duration.to_time());
            self.extension = None;
            events.push(self.event(
                SYSTEM,
                "grant.extended",
                serde_json::json!({"by": duration, "expires_at": self.expires_at.map(crate::time_text), "auto": true}),
            ));
        }
        Ok(events)
    }

    /// When this grant's access would end if given now: its time counts from the intent
    /// recorded before the first tailnet write that gave it ([`TailnetStatus::applying_since`]).
    pub fn access_until(&self, now: OffsetDateTime) -> OffsetDateTime {
        match self.state {
            State::Active => self.expires_at.unwrap_or(now),
            _ => self.tailnet.applying_since.unwrap_or(now) + self.duration.to_time(),
        }
    }

    /// The reconciler applied the access (read back from the tailnet). The grant's clock
    /// started when the change was intended (see [`Request::access_until`]), not now.
    pub fn activate(
        &mut self,
        now: OffsetDateTime,
        detail: serde_json::Value,
    ) -> Result<Vec<Event>, LifecycleError> {
        if self.state != State::Approved {
            return Err(self.wrong_state("activated"));
        }
        let since = self.tailnet.applying_since.unwrap_or(now).min(now);
        self.state = State::Active;
        self.activated_at = Some(since);
        self.expires_at = Some(since + self.duration.to_time());
        self.tailnet.applied_at = Some(now);
        self.tailnet.last_error = None;
        let mut detail = detail;
        if let Some(obj) = detail.as_object_mut() {
            obj.insert(
                "expires_at".into(),
                serde_json::json!(self.expires_at.map(crate::time_text)),
            );
        }
        Ok(vec![self.event(SYSTEM, "grant.applied", detail)])
    }

    /// The grant's time is up.
    pub fn expire(&mut self, now: OffsetDateTime) -> Result<Vec<Event>, LifecycleError> {
        if self.state != State::Active || self.expires_at.is_none_or(|e| e > now) {
            return Err(self.wrong_state("expired"));
        }
        self.end(State::Expired, SYSTEM, "", now);
        self.extension = None;
        Ok(vec![self.event(
            SYSTEM,
            "grant.expired",
            serde_json::json!({}),
        )])
    }

    /// An admin or auditor marks a break-glass grant reviewed, with what they found. Any state:
    /// the review is of what happened, whether or not the grant has ended.
    pub fn review_break_glass(
        &mut self,
        auditor: crate::access::Auditor<'_>,
        note: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, LifecycleError> {
        if !self.break_glass {
            return Err(LifecycleError::Invalid(format!(
                "{} was not a break-glass grant: there is nothing to review afterwards",
                self.id
            )));
        }
        if let Some(done) = &self.break_glass_review {
            return Err(LifecycleError::Invalid(format!(
                "{} was already reviewed by {} at {}",
                self.id,
                done.reviewer,
                crate::time_text(done.at)
            )));
        }
        let note = note.trim();
        if note.is_empty() {
            return Err(LifecycleError::Invalid(
                "say what the review found (a note is required)".into(),
            ));
        }
        let reviewer = auditor.login().to_owned();
        self.break_glass_review = Some(AfterReview {
            reviewer: reviewer.clone(),
            note: note.to_owned(),
            at: now,
        });
        Ok(vec![self.event(
            &reviewer,
            "request.break_glass_reviewed",
            serde_json::json!({"note": note}),
        )])
    }

    /// A pending request nobody decided in time is cancelled; so is an approved one whose
    /// access was not given (or its key claimed) within the same pending time.
    pub fn lapse(&mut self, now: OffsetDateTime) -> Result<Vec<Event>, LifecycleError> {
        if self.pending_until > now {
            return Err(self.wrong_state("lapsed"));
        }
        let why = match self.state {
            State::Pending => "not reviewed in time",
            State::Approved if !self.may_hold_access() => "approved but not used in time",
            _ => return Err(self.wrong_state("lapsed")),
        };
        self.end(State::Cancelled, SYSTEM, why, now);
        Ok(vec![self.event(
            SYSTEM,
            "request.lapsed",
            serde_json::json!({"reason": why}),
        )])
    }

    /// Whether the tailnet may hold this request's access: applied, or a write giving it was
    /// intended (and so may have happened before a crash).
    pub fn may_hold_access(&self) -> bool {
        self.tailnet.applied_at.is_some() || self.tailnet.applying_since.is_some()
    }

    /// The access could not be applied (e.g. a device that is not the requester's).
    pub fn fail(&mut self, error: &str, now: OffsetDateTime) -> Result<Vec<Event>, LifecycleError> {
        if self.state != State::Approved {
            return Err(self.wrong_state("failed"));
        }
        self.end(State::Failed, SYSTEM, error, now);
        self.tailnet.last_error = Some(error.to_owned());
        Ok(vec![self.event(
            SYSTEM,
            "grant.failed",
            serde_json::json!({"error": error}),
        )])
    }

    /// Access that must now exist in the tailnet: active, or approved and due to start.
    pub fn wants_access(&self, now: OffsetDateTime) -> bool {
        match self.state {
            State::Active => self.expires_at.is_some_and(|e| e > now),
            State::Approved => self.start_at.is_none_or(|s| s <= now),
            _ => false,
        }
    }

    /// Past its end, but removal from the tailnet is not yet verified.
    pub fn overdue(&self, now: OffsetDateTime) -> bool {
        self.access_ends_at().is_some_and(|end| end <= now)
    }

    /// When access that is in the tailnet must be gone: the expiry of an active grant, the
    /// end of a finished one; `None` when nothing is applied or its removal is verified.
    pub fn access_ends_at(&self) -> Option<OffsetDateTime> {
        if !self.may_hold_access() || self.tailnet.removal_verified_at.is_some() {
            return None;
        }
        if self.state.is_final() {
            Some(self.ended_at.unwrap_or(self.created_at))
        } else {
            self.expires_at
        }
    }
}

/// A user's own role as tidegate recorded it, before its first role grant raised it: from
/// the earliest of their grants that may hold access. `None` when no grant has touched it.
pub fn recorded_own_role(requests: &[Request]) -> Option<String> {
    requests
        .iter()
        .filter(|r| r.may_hold_access())
        .filter_map(|r| {
            let since = r.tailnet.applying_since.or(r.tailnet.applied_at)?;
            Some((since, r.tailnet.previous_role.clone()?))
        })
        .min()
        .map(|(_, role)| role)
}

fn check_duration(entitlement: &Entitlement, duration: Span) -> Result<(), LifecycleError> {
    if duration < entitlement.min_duration || duration > entitlement.max_duration {
        return Err(LifecycleError::Invalid(format!(
            "{:?} can be requested for {} to {}, not {duration}",
            entitlement.name, entitlement.min_duration, entitlement.max_duration
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Actor, Via};
    use crate::config::{Config, Roles};

    fn actor(login: &str, dir: &Directory) -> Actor {
        Actor::resolve(login, Via::ApiToken, &Roles::default(), dir)
    }

    /// An approval by `login`, with the capability the service would hand out.
    fn approve(
        r: &mut Request,
        e: &Entitlement,
        login: &str,
        comment: &str,
        dir: &Directory,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, LifecycleError> {
        let reviewer = actor(login, dir).review(e, dir).map_err(not_allowed)?;
        r.approve(e, &reviewer, comment, now)
    }

    fn deny(
        r: &mut Request,
        e: &Entitlement,
        login: &str,
        comment: &str,
        dir: &Directory,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, LifecycleError> {
        let reviewer = actor(login, dir).review(e, dir).map_err(not_allowed)?;
        r.deny(e, &reviewer, comment, now)
    }

    fn revoke(
        r: &mut Request,
        e: &Entitlement,
        login: &str,
        reason: &str,
        dir: &Directory,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, LifecycleError> {
        let revoker = actor(login, dir).revoker(r, e, dir).map_err(not_allowed)?;
        r.revoke(&revoker, reason, now)
    }
    use time::macros::datetime;

    const CONFIG: &str = r#"
[tailnet]
api_token = "tskey-api-test"

[[entitlement]]
name = "prod-ssh"
strategy = "group"
group = "group:prod"
requesters = ["autogroup:member"]
approvers = ["group:sre"]
approvals = 2
max_duration = "8h"
pending_ttl = "1h"

[[entitlement]]
name = "db"
strategy = "posture"
attribute = "custom:db"
requesters = ["group:eng"]
approvers = ["group:sre"]
auto_approve = ["group:sre"]
break_glass = true
reason = "optional"
"#;

    const T0: OffsetDateTime = datetime!(2026-11-22 10:00 UTC);

    fn setup() -> (Config, Directory) {
        let config = Config::parse(CONFIG, "test.toml").unwrap();
        let mut dir = Directory::default();
        for (login, role) in [
            ("alice@example.com", "owner"),
            ("bob@example.com", "member"),
            ("carol@example.com", "member"),
            ("dave@example.com", "member"),
        ] {
            dir.roles.insert(login.into(), role.into());
        }
        dir.groups.insert(
            "group:sre".into(),
            [
                "alice@example.com".into(),
                "bob@example.com".into(),
                "carol@example.com".into(),
            ]
            .into(),
        );
        dir.groups.insert(
            "group:eng".into(),
            ["dave@example.com".into(), "bob@example.com".into()].into(),
        );
        (config, dir)
    }

    fn ask(reason: &str, duration: &str) -> Ask {
        Ask {
            reason: reason.into(),
            duration: Some(duration.parse().unwrap()),
            ..Ask::default()
        }
    }

    #[test]
    fn two_approvals_then_activation_then_expiry() {
        let (config, dir) = setup();
        let e = config.entitlement("prod-ssh").unwrap();
        let (mut r, events) = Request::create(
            "r1".into(),
            e,
            "dave@example.com",
            ask("INC-4211", "2h"),
            &dir,
            T0,
        )
        .unwrap();
        assert_eq!(r.state, State::Pending);
        assert_eq!(events[0].action, "request.created");

        let ev = approve(&mut r, e, "alice@example.com", "ok", &dir, T0).unwrap();
        assert_eq!(r.state, State::Pending, "one of two approvals");
        assert_eq!(ev[0].detail["approvals"], 1);
        let again = approve(&mut r, e, "alice@example.com", "", &dir, T0).unwrap_err();
        assert!(again.to_string().contains("already reviewed"));
        let ev = approve(&mut r, e, "bob@example.com", "", &dir, T0).unwrap();
        assert_eq!(r.state, State::Approved);
        assert_eq!(ev.last().unwrap().action, "request.approved");

        // Duration counts from activation, not from the request.
        let applied = T0 + time::Duration::minutes(30);
        r.activate(applied, serde_json::json!({})).unwrap();
        assert_eq!(r.expires_at, Some(applied + time::Duration::hours(2)));
        assert!(r.wants_access(applied));
        assert!(
            r.expire(applied + time::Duration::hours(1)).is_err(),
            "not yet"
        );
        let end = applied + time::Duration::hours(2);
        r.expire(end).unwrap();
        assert_eq!(r.state, State::Expired);
        assert!(r.overdue(end), "until removal is verified");
        r.tailnet.removal_verified_at = Some(end);
        assert!(!r.overdue(end));
        assert!(!r.open());
    }

    #[test]
    fn who_may_do_what() {
        let (config, dir) = setup();
        let e = config.entitlement("prod-ssh").unwrap();
        // Unknown users and ineligible requesters are refused.
        let err = Request::create(
            "x".into(),
            e,
            "mallory@evil.example",
            ask("x", "1h"),
            &dir,
            T0,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("not a user of this tailnet"),
            "{err}"
        );
        let db = config.entitlement("db").unwrap();
        let err = Request::create(
            "x".into(),
            db,
            "carol@example.com",
            ask("x", "1h"),
            &dir,
            T0,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("may not request \"db\": it is for group:eng"),
            "{err}"
        );
        // Reason and duration bounds.
        let err = Request::create("x".into(), e, "dave@example.com", ask("  ", "1h"), &dir, T0)
            .unwrap_err();
        assert!(err.to_string().contains("needs a reason"), "{err}");
        let err = Request::create("x".into(), e, "dave@example.com", ask("x", "9h"), &dir, T0)
            .unwrap_err();
        assert!(err.to_string().contains("5m to 8h, not 9h"), "{err}");

        // Self-approval is refused; so are non-approvers.
        let (mut r, _) =
            Request::create("r2".into(), e, "bob@example.com", ask("x", "1h"), &dir, T0).unwrap();
        let err = approve(&mut r, e, "bob@example.com", "", &dir, T0).unwrap_err();
        assert!(
            err.to_string().contains("may not review their own request"),
            "{err}"
        );
        let err = approve(&mut r, e, "dave@example.com", "", &dir, T0).unwrap_err();
        assert!(
            err.to_string().contains("its approvers are group:sre"),
            "{err}"
        );
        assert!(r.reviews.is_empty(), "refused reviews leave no trace");

        // One deny ends it.
        approve(&mut r, e, "alice@example.com", "", &dir, T0).unwrap();
        deny(
            &mut r,
            e,
            "carol@example.com",
            "not during the freeze",
            &dir,
            T0,
        )
        .unwrap();
        assert_eq!(r.state, State::Denied);
        assert!(approve(&mut r, e, "alice@example.com", "", &dir, T0).is_err());
        assert!(!r.open());
    }

    #[test]
    fn auto_approval_break_glass_and_lapse() {
        let (config, dir) = setup();
        let db = config.entitlement("db").unwrap();
        let (r, events) =
            Request::create("a".into(), db, "bob@example.com", Ask::default(), &dir, T0).unwrap();
        assert_eq!(
            r.state,
            State::Approved,
            "bob is in group:sre, the auto-approve rule"
        );
        assert_eq!(events[1].action, "request.auto_approved");

        let glass = Ask {
            break_glass: true,
            ..Ask::default()
        };
        let (r, events) =
            Request::create("b".into(), db, "dave@example.com", glass.clone(), &dir, T0).unwrap();
        assert!(r.break_glass && r.state == State::Approved);
        assert_eq!(events[1].action, "request.break_glass");
        let prod = config.entitlement("prod-ssh").unwrap();
        assert!(
            Request::create(
                "c".into(),
                prod,
                "dave@example.com",
                Ask {
                    reason: "x".into(),
                    ..glass
                },
                &dir,
                T0
            )
            .is_err()
        );

        let (mut r, _) = Request::create(
            "d".into(),
            prod,
            "dave@example.com",
            ask("x", "1h"),
            &dir,
            T0,
        )
        .unwrap();
        assert!(r.lapse(T0 + time::Duration::minutes(59)).is_err());
        r.lapse(T0 + time::Duration::hours(1)).unwrap();
        assert_eq!(r.state, State::Cancelled);
    }

    #[test]
    fn drop_revoke_extend_and_schedule() {
        let (config, dir) = setup();
        let e = config.entitlement("prod-ssh").unwrap();
        let start = T0 + time::Duration::hours(3);
        let scheduled = Ask {
            start_at: Some(start),
            ..ask("deploy window", "2h")
        };
        let (mut r, _) =
            Request::create("s".into(), e, "dave@example.com", scheduled, &dir, T0).unwrap();
        approve(&mut r, e, "alice@example.com", "", &dir, T0).unwrap();
        approve(&mut r, e, "bob@example.com", "", &dir, T0).unwrap();
        assert!(!r.wants_access(T0), "approved but not yet started");
        assert!(r.wants_access(start));
        r.activate(start, serde_json::json!({})).unwrap();

        // Extension: the requester asks, two approvers approve, the end moves.
        let err = r
            .request_extension(
                e,
                "dave@example.com",
                "7h".parse().unwrap(),
                "",
                &dir,
                start,
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("exceed the maximum of 8h"),
            "{err}"
        );
        r.request_extension(
            e,
            "dave@example.com",
            "1h".parse().unwrap(),
            "more",
            &dir,
            start,
        )
        .unwrap();
        approve(&mut r, e, "alice@example.com", "", &dir, start).unwrap();
        assert_eq!(r.expires_at, Some(start + time::Duration::hours(2)));
        let ev = approve(&mut r, e, "carol@example.com", "", &dir, start).unwrap();
        assert_eq!(ev.last().unwrap().action, "grant.extended");
        assert_eq!(r.expires_at, Some(start + time::Duration::hours(3)));

        // Revocation: not by a bystander; by the requester it is a drop.
        let err =
            revoke(&mut r, e, "dave@example.com", "", &dir, start).map(|ev| ev[0].action.clone());
        assert_eq!(err.unwrap(), "grant.dropped");
        assert_eq!(r.state, State::Revoked);

        let (mut other, _) =
            Request::create("o".into(), e, "dave@example.com", ask("x", "1h"), &dir, T0).unwrap();
        approve(&mut other, e, "alice@example.com", "", &dir, T0).unwrap();
        approve(&mut other, e, "bob@example.com", "", &dir, T0).unwrap();
        other.activate(T0, serde_json::json!({})).unwrap();
        let mut stranger = Directory::default();
        stranger
            .roles
            .insert("eve@example.com".into(), "member".into());
        assert!(revoke(&mut other, e, "eve@example.com", "", &stranger, T0).is_err());
        let ev = revoke(
            &mut other,
            e,
            "carol@example.com",
            "incident over",
            &dir,
            T0,
        )
        .unwrap();
        assert_eq!(ev[0].action, "grant.revoked");
        assert_eq!(other.end_reason.as_deref(), Some("incident over"));
    }

    #[test]
    fn reasons_and_comments_are_bounded_and_printable() {
        let (config, dir) = setup();
        let e = config.entitlement("prod-ssh").unwrap();
        for (bad, says) in [
            (
                "INC-1\n\u{1b}[2Japproved by alice".to_owned(),
                "U+000A at character 6",
            ),
            ("tab\there".to_owned(), "U+0009"),
            ("\u{202e}evil".to_owned(), "U+202E at character 1"),
            ("x".repeat(1001), "1001 characters long; at most 1000"),
        ] {
            let err = Request::create("x".into(), e, "dave@example.com", ask(&bad, "1h"), &dir, T0)
                .unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
        let fine = "é".repeat(1000);
        let (mut r, _) = Request::create(
            "r".into(),
            e,
            "dave@example.com",
            ask(&fine, "1h"),
            &dir,
            T0,
        )
        .unwrap();
        let err = approve(&mut r, e, "alice@example.com", "ok\r\nreally", &dir, T0).unwrap_err();
        assert!(err.to_string().contains("comment contains"), "{err}");
        assert!(r.reviews.is_empty());
    }

    /// A capability is for one entitlement (a reviewer) or one request (a revoker): handed
    /// another, the lifecycle refuses it.
    #[test]
    fn capabilities_are_for_one_entitlement_or_request() {
        let (config, dir) = setup();
        let ssh = config.entitlement("prod-ssh").unwrap();
        let db = config.entitlement("db").unwrap();
        let (mut r, _) = Request::create(
            "r".into(),
            ssh,
            "dave@example.com",
            ask("x", "1h"),
            &dir,
            T0,
        )
        .unwrap();
        let for_db = actor("alice@example.com", &dir).review(db, &dir).unwrap();
        let err = r.approve(ssh, &for_db, "", T0).unwrap_err();
        assert!(err.to_string().contains("reviews \"db\" requests"), "{err}");
        assert!(r.reviews.is_empty());

        approve(&mut r, ssh, "alice@example.com", "", &dir, T0).unwrap();
        approve(&mut r, ssh, "bob@example.com", "", &dir, T0).unwrap();
        r.activate(T0, serde_json::json!({})).unwrap();
        let (other, _) = Request::create(
            "o".into(),
            ssh,
            "dave@example.com",
            ask("x", "1h"),
            &dir,
            T0,
        )
        .unwrap();
        let for_other = actor("carol@example.com", &dir)
            .revoker(&other, ssh, &dir)
            .unwrap();
        let err = r.revoke(&for_other, "", T0).unwrap_err();
        assert!(err.to_string().contains("may end o, not r"), "{err}");
        assert_eq!(r.state, State::Active);
    }
}
