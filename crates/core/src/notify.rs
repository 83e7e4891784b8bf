//! Events to other systems. Every audit entry is an event (`request.created`,
//! `grant.applied`, `review.decided`, ...), written in the same transaction as the change it
//! records, so none is lost. The leader turns new entries into deliveries in the outbox (one per
//! channel that wants the event, keyed by the event's id so a crash between the two repeats
//! nothing) and sends what is due, each retried with backoff for a day. How a delivery reaches
//! its channel (HTTP, SMTP) is not core's business: a [`Sender`] does it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::AuditEntry;
use crate::request::Request;
use crate::service::{Service, ServiceError};
use crate::store::{Attempt, Delivery, NewDelivery};
use crate::time_text;

/// The audit log's last entry already turned into deliveries.
const CURSOR: &str = "notify:cursor";
/// Audit entries turned into deliveries per round.
const FAN_OUT_BATCH: usize = 500;
/// Deliveries sent per round, and at once.
const SEND_BATCH: usize = 200;
const SEND_CONCURRENCY: usize = 16;
/// How long a delivery is retried before it is given up.
pub const GIVE_UP_AFTER: time::Duration = time::Duration::hours(24);

/// Delivers one payload to one channel.
#[async_trait::async_trait]
pub trait Sender: Send + Sync {
    /// `Err` says why it was not delivered (it is retried).
    async fn send(&self, channel: &str, payload: &str) -> Result<(), String>;
}

/// The wait before the next attempt after `attempts` failed ones: 5 s, 10 s, 20 s, ... at
/// most an hour (the first retry comes within 10 s).
pub fn backoff(attempts: i64) -> time::Duration {
    let exp = attempts.clamp(1, 20) - 1;
    time::Duration::seconds((5i64 << exp).min(3600))
}

/// The event an audit entry is, as webhooks receive it: `id` names the event and is the same
/// on every retry.
pub fn event(entry: &AuditEntry, request: Option<Value>) -> Value {
    let detail: Value = serde_json::from_str(&entry.detail).unwrap_or(Value::Null);
    json!({
        "id": format!("evt_{}", entry.seq),
        "type": entry.action,
        "at": entry.at,
        "actor": entry.actor,
        "request": request,
        "detail": detail,
    })
}

/// An e-mail as tidegate decides it: to whom, the subject, its paragraphs, and a link. The
/// sender renders it as plain text and HTML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub paragraphs: Vec<String>,
    /// (label, URL): the page where the reader acts.
    pub link: Option<(String, String)>,
}

/// The e-mails one event sends: a new request to its approvers, a decision to the requester,
/// a reminder before access ends. The login is the address mailed.
pub fn mails(
    entry: &AuditEntry,
    request: Option<&Request>,
    config: &crate::config::Config,
    dir: &crate::entitlement::Directory,
    now: time::OffsetDateTime,
) -> Vec<Mail> {
    let base = config.base_url();
    if entry.action == "review.assigned" || entry.action == "review.reminder" {
        return review_mails(entry, &base, dir);
    }
    let Some(r) = request else {
        return Vec::new();
    };
    let page = format!("{base}/requests/{}", r.id);
    let detail: Value = serde_json::from_str(&entry.detail).unwrap_or(Value::Null);
    let mail = |to: &str, subject: String, paragraphs: Vec<String>, label: &str| Mail {
        to: to.to_owned(),
        subject,
        paragraphs,
        link: Some((label.to_owned(), page.clone())),
    };
    match entry.action.as_str() {
        // Only while it waits: an auto-approved or break-glass request needs nobody.
        "request.created" if r.state == crate::request::State::Pending => {
            let Some(e) = config.entitlement(&r.entitlement) else {
                return Vec::new();
            };
            let mut paragraphs = vec![format!(
                "{} asks for {} for {}.",
                r.requester, r.entitlement, r.duration
            )];
            if !r.reason.is_empty() {
                paragraphs.push(format!("Reason: {}", r.reason));
            }
            paragraphs.push(format!(
                "It lapses at {} if nobody decides.",
                time_text(r.pending_until)
            ));
            crate::access::eligible_approvers(e, &r.requester, dir)
                .iter()
                .filter(|login| login.contains('@'))
                .map(|login| {
                    mail(
                        login,
                        format!(
                            "{} requests {} for {}",
                            r.requester, r.entitlement, r.duration
                        ),
                        paragraphs.clone(),
                        "Approve or deny",
                    )
                })
                .collect()
        }
        "request.reminder" | "request.escalated" if r.state == crate::request::State::Pending => {
            let escalated = entry.action == "request.escalated";
            let to: Vec<String> = if escalated {
                detail["to"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            } else {
                let Some(e) = config.entitlement(&r.entitlement) else {
                    return Vec::new();
                };
                crate::access::eligible_approvers(e, &r.requester, dir)
            };
            let subject = format!(
                "{}: {} requests {} for {}",
                if escalated {
                    "Escalated"
                } else {
                    "Still waiting"
                },
                r.requester,
                r.entitlement,
                r.duration
            );
            let paragraphs = vec![
                format!(
                    "{} asked for {} for {} at {} and nobody has decided yet.",
                    r.requester,
                    r.entitlement,
                    r.duration,
                    time_text(r.created_at)
                ),
                format!("Reason: {}", r.reason),
                format!("It lapses at {}.", time_text(r.pending_until)),
            ];
            to.iter()
                .filter(|login| login.contains('@'))
                .map(|login| {
                    mail(
                        login,
                        subject.clone(),
                        paragraphs.clone(),
                        "Approve or deny",
                    )
                })
                .collect()
        }
        "request.approved" => vec![mail(
            &r.requester,
            format!("Approved: {}", r.entitlement),
            vec![format!(
                "{} approved your request for {} ({}). tidegate is applying it.",
                entry.actor, r.entitlement, r.duration
            )],
            "Your request",
        )],
        "request.denied" => {
            let comment = detail["comment"].as_str().unwrap_or_default();
            let mut paragraphs = vec![format!(
                "{} denied your request for {}.",
                entry.actor, r.entitlement
            )];
            if !comment.is_empty() {
                paragraphs.push(format!("Their comment: {comment}"));
            }
            vec![mail(
                &r.requester,
                format!("Denied: {}", r.entitlement),
                paragraphs,
                "Your request",
            )]
        }
        "grant.expiring" => {
            let ends = r.expires_at.unwrap_or(now);
            vec![mail(
                &r.requester,
                format!("{} ends {}", r.entitlement, crate::relative(ends, now)),
                vec![format!(
                    "Your {} access ends at {}. If you need longer, ask for more time before then.",
                    r.entitlement,
                    time_text(ends)
                )],
                "More time",
            )]
        }
        _ => Vec::new(),
    }
}

/// The events Slack hears about: approvers' messages are posted and updated in place as the
/// request moves; requesters get DMs; break-glass is announced.
const SLACK_EVENTS: &[&str] = &[
    "request.created",
    "request.reminder",
    "request.escalated",
    "request.approval",
    "request.approved",
    "request.auto_approved",
    "request.denied",
    "request.cancelled",
    "request.lapsed",
    "request.break_glass",
    "grant.applied",
    "grant.failed",
    "grant.expiring",
    "grant.overdue",
    "grant.expired",
    "grant.revoked",
    "grant.dropped",
    "review.assigned",
    "review.reminder",
];

/// The logins a review item's reviewer stands for: the login, or everyone a selector
/// (`group:security`, `role:admin`) selects.
pub fn reviewer_logins(reviewer: &str, dir: &crate::entitlement::Directory) -> Vec<String> {
    match reviewer.parse::<crate::entitlement::Selector>() {
        Ok(crate::entitlement::Selector::Login(login)) => vec![login],
        Ok(selector) => dir
            .roles
            .keys()
            .filter(|l| dir.matches(&selector, l))
            .cloned()
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// An access review's news for its reviewers: their share when it starts, a reminder when it
/// is due soon.
fn review_mails(entry: &AuditEntry, base: &str, dir: &crate::entitlement::Directory) -> Vec<Mail> {
    let detail: Value = serde_json::from_str(&entry.detail).unwrap_or(Value::Null);
    let (campaign, name) = (
        detail["campaign"].as_str().unwrap_or_default(),
        detail["name"].as_str().unwrap_or_default(),
    );
    let items = detail["items"].as_u64().unwrap_or(0);
    let due = detail["due_at"].as_str().unwrap_or_default();
    let reminder = entry.action == "review.reminder";
    let subject = if reminder {
        format!(
            "Reminder: {items} access{} to review in {name}, due {due}",
            if items == 1 { "" } else { "es" }
        )
    } else {
        format!(
            "{items} access{} to review: {name}",
            if items == 1 { "" } else { "es" }
        )
    };
    let paragraphs = vec![
        format!(
            "{} {items} {} in the access review {name}: keep or revoke each, with a reason.",
            if reminder {
                "Still undecided:"
            } else {
                "For you to review:"
            },
            if items == 1 { "access" } else { "accesses" }
        ),
        format!("It is due {due}; what is undecided then follows the campaign's rule."),
    ];
    reviewer_logins(detail["reviewer"].as_str().unwrap_or_default(), dir)
        .into_iter()
        .filter(|l| l.contains('@'))
        .map(|to| Mail {
            to,
            subject: subject.clone(),
            paragraphs: paragraphs.clone(),
            link: Some((
                "Review them".to_owned(),
                format!("{base}/reviews/{campaign}?show=mine"),
            )),
        })
        .collect()
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub queued: u64,
    pub delivered: usize,
    pub failed: usize,
}

impl Service {
    /// Whether anything is configured to hear about events.
    pub fn notifies(&self) -> bool {
        !self.config().webhooks.is_empty()
            || self.config().email.is_some()
            || self.config().slack.is_some()
    }

    /// Turns audit entries after the cursor into deliveries for every channel that wants
    /// them. The first time, the cursor starts at the log's end: a new endpoint hears what
    /// happens from now on, not the whole history.
    pub async fn fan_out(&self) -> Result<u64, ServiceError> {
        let cursor = match self.store().get_state(CURSOR).await? {
            Some(text) => text.trim().parse::<i64>().unwrap_or(0),
            None => {
                let end = self.store().audit_length().await?;
                let at = time_text(self.now());
                self.store()
                    .put_state(CURSOR, &end.to_string(), &at)
                    .await?;
                end
            }
        };
        let entries = self.store().audit(cursor, FAN_OUT_BATCH).await?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            return Ok(0);
        };
        let now = time_text(self.now());
        let clock_now = self.now();
        let dir = match self.config().email {
            Some(_) => Some(self.directory().await?),
            None => None,
        };
        let mut deliveries = Vec::new();
        for entry in &entries {
            let wanted: Vec<String> = self
                .config()
                .webhooks
                .iter()
                .filter(|w| w.wants(&entry.action))
                .map(|w| format!("webhook:{}", w.name))
                .collect();
            let mailing = dir.is_some()
                && matches!(
                    entry.action.as_str(),
                    "request.created"
                        | "request.reminder"
                        | "request.escalated"
                        | "request.approved"
                        | "request.denied"
                        | "grant.expiring"
                        | "review.assigned"
                        | "review.reminder"
                );
            let slacking =
                self.config().slack.is_some() && SLACK_EVENTS.contains(&entry.action.as_str());
            if wanted.is_empty() && !mailing && !slacking {
                continue;
            }
            let request = match &entry.request {
                Some(id) => self.store().request(id).await?,
                None => None,
            };
            if !wanted.is_empty() || slacking {
                let value = request.as_ref().and_then(|r| serde_json::to_value(r).ok());
                let payload = event(entry, value).to_string();
                if slacking {
                    deliveries.push(NewDelivery {
                        channel: "slack".into(),
                        event_id: format!("evt_{}", entry.seq),
                        payload: payload.clone(),
                        created_at: now.clone(),
                        next_at: now.clone(),
                    });
                }
                for channel in wanted {
                    deliveries.push(NewDelivery {
                        channel,
                        event_id: format!("evt_{}", entry.seq),
                        payload: payload.clone(),
                        created_at: now.clone(),
                        next_at: now.clone(),
                    });
                }
            }
            if let Some(dir) = dir.as_deref().filter(|_| mailing) {
                for mail in mails(entry, request.as_ref(), self.config(), dir, clock_now) {
                    deliveries.push(NewDelivery {
                        channel: "email".into(),
                        event_id: format!("evt_{}:{}", entry.seq, mail.to),
                        payload: serde_json::to_string(&mail).unwrap_or_default(),
                        created_at: now.clone(),
                        next_at: now.clone(),
                    });
                }
            }
        }
        // Queued before the cursor moves: after a crash between the two, the same events are
        // queued again, which changes nothing (one per channel and event).
        let queued = self.store().enqueue_deliveries(&deliveries).await?;
        self.store()
            .put_state(CURSOR, &last.to_string(), &now)
            .await?;
        if queued > 0 {
            tracing::debug!(queued, through = last, "events queued for delivery");
        }
        Ok(queued)
    }

    /// Sends the deliveries due now, [`SEND_CONCURRENCY`] at a time, and records each attempt:
    /// delivered, retried later with [`backoff`], or given up after [`GIVE_UP_AFTER`].
    pub async fn deliver_due(&self, sender: &dyn Sender) -> Result<Round, ServiceError> {
        use futures_util::StreamExt;
        let now = self.now();
        let due = self
            .store()
            .due_deliveries(&time_text(now), SEND_BATCH)
            .await?;
        let outcomes: Vec<(Delivery, Result<(), String>)> =
            futures_util::stream::iter(due.into_iter().map(|d| async move {
                let outcome = sender.send(&d.channel, &d.payload).await;
                (d, outcome)
            }))
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        let mut round = Round::default();
        let attempts: Vec<Attempt> = outcomes
            .into_iter()
            .map(|(d, outcome)| self.attempt(&d, outcome, &mut round))
            .collect();
        // Recorded together: the store commits concurrent writes at once.
        let recorded = attempts.iter().map(|a| self.store().record_attempt(a));
        for result in futures_util::future::join_all(recorded).await {
            result?;
        }
        Ok(round)
    }

    fn attempt(&self, d: &Delivery, outcome: Result<(), String>, round: &mut Round) -> Attempt {
        let now = crate::now(self.clock().as_ref());
        match outcome {
            Ok(()) => {
                round.delivered += 1;
                tracing::debug!(channel = %d.channel, event = %d.event_id, "delivered");
                Attempt {
                    id: d.id,
                    state: "delivered".into(),
                    next_at: d.next_at.clone(),
                    last_error: None,
                    done_at: Some(time_text(now)),
                }
            }
            Err(error) => {
                round.failed += 1;
                let created = tailnet::clock::parse_rfc3339(&d.created_at).unwrap_or(now);
                let attempts = d.attempts + 1;
                let next = now + backoff(attempts);
                if next - created > GIVE_UP_AFTER {
                    tracing::error!(channel = %d.channel, event = %d.event_id, attempts, error = %error, "delivery given up after a day of retries");
                    Attempt {
                        id: d.id,
                        state: "failed".into(),
                        next_at: d.next_at.clone(),
                        last_error: Some(error),
                        done_at: Some(time_text(now)),
                    }
                } else {
                    tracing::warn!(channel = %d.channel, event = %d.event_id, attempts, error = %error, retry_at = %time_text(next), "delivery failed; retrying");
                    Attempt {
                        id: d.id,
                        state: "pending".into(),
                        next_at: time_text(next),
                        last_error: Some(error),
                        done_at: None,
                    }
                }
            }
        }
    }

    /// `[notifications] remind_before_expiry`: each active grant ending within that time gets a
    /// `grant.expiring` event once per end time (an extension moves the end, and reminds
    /// again). Claimed in the store, so one reminder even across replicas and restarts.
    pub async fn remind_expiring(&self) -> Result<usize, ServiceError> {
        let Some(before) = self.config().notifications.remind_before_expiry else {
            return Ok(0);
        };
        let now = crate::now(self.clock().as_ref());
        let soon = self
            .store()
            .requests(&crate::store::RequestFilter {
                states: vec![crate::request::State::Active],
                due_before: Some(now + before.to_time()),
                ..Default::default()
            })
            .await?;
        let at = time_text(now);
        let mut reminded = 0;
        for r in soon {
            let Some(ends) = r.expires_at.filter(|e| *e > now) else {
                continue;
            };
            let key = format!("reminded:{}:{}", r.id, time_text(ends));
            if !self.store().claim_state(&key, &at, &at).await? {
                continue;
            }
            self.store()
                .append_audit(&[crate::audit::NewAuditEntry {
                    at: at.clone(),
                    actor: crate::request::SYSTEM.to_owned(),
                    action: "grant.expiring".into(),
                    request: Some(r.id.clone()),
                    detail: json!({"expires_at": time_text(ends), "requester": r.requester})
                        .to_string(),
                }])
                .await?;
            tracing::info!(request = %r.id, requester = %r.requester, expires_at = %time_text(ends), "grant.expiring");
            reminded += 1;
        }
        Ok(reminded)
    }

    /// Requests still waiting: their approvers are reminded once after
    /// `remind_approvers_after` (`request.reminder`), and `escalate_to` hears of them after
    /// `escalate_after` (`request.escalated`). Looked at every few seconds; each claimed in the
    /// store, so once across replicas and restarts.
    pub async fn remind_approvers(&self) -> Result<usize, ServiceError> {
        const EVERY: time::Duration = time::Duration::seconds(5);
        let now = crate::now(self.clock().as_ref());
        {
            let mut last = match self.pending_scanned.lock() {
                Ok(l) => l,
                Err(poisoned) => poisoned.into_inner(),
            };
            if last.is_some_and(|t| now - t < EVERY) {
                return Ok(0);
            }
            *last = Some(now);
        }
        let n = &self.config().notifications;
        let pending = self
            .store()
            .requests(&crate::store::RequestFilter {
                states: vec![crate::request::State::Pending],
                ..Default::default()
            })
            .await?;
        let at = time_text(now);
        let mut events = Vec::new();
        let dir = if n.escalate_after.is_some() {
            Some(self.directory().await?)
        } else {
            None
        };
        for r in pending {
            let waited = now - r.created_at;
            if waited >= n.remind_approvers_after.to_time()
                && self
                    .store()
                    .claim_state(&format!("reminded-approvers:{}", r.id), &at, &at)
                    .await?
            {
                events.push((
                    r.id.clone(),
                    "request.reminder",
                    json!({"waiting_seconds": waited.whole_seconds()}),
                ));
            }
            if let (Some(after), Some(dir)) = (n.escalate_after, dir.as_deref())
                && waited >= after.to_time()
                && self
                    .store()
                    .claim_state(&format!("escalated:{}", r.id), &at, &at)
                    .await?
            {
                let to: Vec<&String> = dir
                    .roles
                    .keys()
                    .filter(|l| dir.matches_any(&n.escalate_to, l) && **l != r.requester)
                    .collect();
                events.push((
                    r.id.clone(),
                    "request.escalated",
                    json!({"to": to, "waiting_seconds": waited.whole_seconds()}),
                ));
            }
        }
        // Access still in the tailnet a minute past its end: announced once (`grant.overdue`).
        let overdue = self
            .store()
            .requests(&crate::store::RequestFilter {
                overdue_at: Some(now - time::Duration::minutes(1)),
                ..Default::default()
            })
            .await?;
        for r in overdue {
            if self
                .store()
                .claim_state(&format!("announced-overdue:{}", r.id), &at, &at)
                .await?
            {
                let ends = r.access_ends_at().map(time_text);
                events.push((
                    r.id.clone(),
                    "grant.overdue",
                    json!({"access_ended_at": ends}),
                ));
            }
        }
        let entries: Vec<crate::audit::NewAuditEntry> = events
            .into_iter()
            .map(|(id, action, detail)| {
                tracing::info!(request = %id, "{action}");
                crate::audit::NewAuditEntry {
                    at: at.clone(),
                    actor: crate::request::SYSTEM.to_owned(),
                    action: action.to_owned(),
                    request: Some(id),
                    detail: detail.to_string(),
                }
            })
            .collect();
        if !entries.is_empty() {
            self.store().append_audit(&entries).await?;
        }
        Ok(entries.len())
    }

    /// One round of the leader's notifier: reminders due, new events queued, due deliveries
    /// sent.
    pub async fn notify_round(&self, sender: &dyn Sender) -> Result<Round, ServiceError> {
        self.remind_expiring().await?;
        self.remind_approvers().await?;
        let mut queued = 0;
        // Catch up on a backlog before sending, a batch at a time.
        loop {
            let n = self.fan_out().await?;
            queued += n;
            if n < FAN_OUT_BATCH as u64 {
                break;
            }
        }
        let mut round = self.deliver_due(sender).await?;
        round.queued = queued;
        Ok(round)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_retry_comes_within_ten_seconds_then_backs_off_to_an_hour() {
        assert_eq!(backoff(1), time::Duration::seconds(5));
        assert_eq!(backoff(2), time::Duration::seconds(10));
        assert_eq!(backoff(5), time::Duration::seconds(80));
        assert_eq!(backoff(12), time::Duration::hours(1));
        assert_eq!(backoff(100), time::Duration::hours(1));
    }

    #[test]
    fn globs_pick_event_types() {
        use crate::config::glob_matches;
        assert!(glob_matches("request.*", "request.created"));
        assert!(!glob_matches("request.*", "grant.applied"));
        assert!(glob_matches("*", "check.run"));
        assert!(glob_matches("grant.applied", "grant.applied"));
        assert!(!glob_matches("grant.applied", "grant.applying"));
        assert!(glob_matches("*.removal_*", "grant.removal_verified"));
    }
}
