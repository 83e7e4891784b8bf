//! What tidegate keeps: requests (desired state), the audit log, API tokens. One trait; the
//! `store` crate implements it on SQLite and PostgreSQL and runs one conformance suite on both.

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::audit::{AuditEntry, NewAuditEntry};
use crate::request::{Request, State};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The request changed since it was read (its version moved on); re-read and retry.
    #[error("request {0} was changed by someone else; try again")]
    Conflict(String),
    #[error("{0} already exists")]
    Duplicate(String),
    #[error("database: {0}")]
    Database(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Which requests to list. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFilter {
    pub states: Vec<State>,
    pub requester: Option<String>,
    pub entitlement: Option<String>,
    /// Only requests the reconciler still has work on (see [`Request::open`]).
    pub open_only: bool,
    /// Only requests due by this time (see [`Request::due_at`]); implies `open_only`.
    pub due_before: Option<time::OffsetDateTime>,
    /// Only requests overdue at this time (see [`Request::overdue`]).
    pub overdue_at: Option<time::OffsetDateTime>,
    pub limit: Option<usize>,
}

/// What a stored secret is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// A bearer token for the API and the CLI.
    #[default]
    Api,
    /// A web session (a browser's cookie); never accepted as a bearer token.
    Session,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Api => "api",
            TokenKind::Session => "session",
        }
    }

    pub fn parse(text: &str) -> Option<TokenKind> {
        match text {
            "api" => Some(TokenKind::Api),
            "session" => Some(TokenKind::Session),
            _ => None,
        }
    }
}

/// An API token or web session, stored as a hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// SHA-256 hex of the token.
    pub hash: String,
    pub user: String,
    pub description: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    #[serde(default)]
    pub kind: TokenKind,
    /// When it was last used (to the minute).
    #[serde(default)]
    pub last_used_at: Option<String>,
}

impl ApiToken {
    /// A public name for the token, to list and revoke it by: `tok_` and the first 12 hex
    /// digits of its hash (which says nothing of the secret).
    pub fn id(&self) -> String {
        format!("tok_{}", self.hash.get(..12).unwrap_or(&self.hash))
    }
}

impl Request {
    /// When the reconciler must next look at this request: the end of a pending request's
    /// TTL, an approved request's start, an active grant's expiry; at once (a time in the past)
    /// for an ended grant whose removal is not yet verified, or a posture grant whose expiry
    /// moved. `None` once nothing is left to do.
    pub fn due_at(&self) -> Option<time::OffsetDateTime> {
        if !self.open() {
            return None;
        }
        let due = match self.state {
            State::Pending => Some(self.pending_until),
            State::Approved => Some(self.start_at.unwrap_or(self.created_at)),
            State::Active => {
                let moved = self.tailnet.applied_until.is_some()
                    && self.tailnet.applied_until != self.expires_at;
                if moved {
                    Some(self.created_at)
                } else {
                    self.expires_at
                }
            }
            _ => Some(self.ended_at.unwrap_or(self.created_at)),
        };
        // After a failure, not before the backoff says.
        match (due, self.tailnet.retry_at) {
            (Some(d), Some(retry)) if retry > d => Some(retry),
            (d, _) => d,
        }
    }

    /// Still needs the reconciler: not final, or final with access applied and its removal
    /// not yet verified.
    pub fn open(&self) -> bool {
        !self.state.is_final()
            || (self.may_hold_access() && self.tailnet.removal_verified_at.is_none())
    }
}

/// An event to deliver to one channel (a webhook endpoint, e-mail, Slack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// `webhook:<name>`, `email`, `slack`.
    pub channel: String,
    /// The event's id: one delivery per channel and event, the same on every retry.
    pub event_id: String,
    pub payload: String,
    pub created_at: String,
    /// When to send it (RFC 3339, as stored).
    pub next_at: String,
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub channel: String,
    pub event_id: String,
    #[serde(skip)]
    pub payload: String,
    pub created_at: String,
    pub next_at: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    pub done_at: Option<String>,
}

/// What became of one attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: i64,
    /// `pending` (to retry at `next_at`), `delivered` or `failed`.
    pub state: String,
    pub next_at: String,
    pub last_error: Option<String>,
    pub done_at: Option<String>,
}

/// Leadership, as the store provides it.
#[async_trait::async_trait]
pub trait LeaderLock: Send + Sync {
    /// Takes leadership if nobody holds it; `Ok(true)` if this process now holds it.
    async fn try_acquire(&self) -> Result<bool, StoreError>;
    /// Whether this process still holds it, checked against the database now.
    async fn held(&self) -> bool;
    /// Gives it up.
    async fn release(&self);
}

/// The lock of a store only one process uses (SQLite): always held.
pub struct SoleProcess;

#[async_trait::async_trait]
impl LeaderLock for SoleProcess {
    async fn try_acquire(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn held(&self) -> bool {
        true
    }
    async fn release(&self) {}
}

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Stores a new request (version 0) and its audit entries in one transaction.
    async fn insert_request(
        &self,
        request: &Request,
        audit: &[NewAuditEntry],
    ) -> Result<(), StoreError>;
    /// Stores a changed request and its audit entries in one transaction. `request.version`
    /// must be one more than the stored version, else [`StoreError::Conflict`] and nothing is
    /// written.
    async fn update_request(
        &self,
        request: &Request,
        audit: &[NewAuditEntry],
    ) -> Result<(), StoreError>;
    async fn request(&self, id: &str) -> Result<Option<Request>, StoreError>;
    /// Newest first.
    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError>;

    /// Appends entries to the audit log, chaining each to the previous one.
    async fn append_audit(&self, audit: &[NewAuditEntry]) -> Result<Vec<AuditEntry>, StoreError>;
    /// Entries with `seq > after`, oldest first, at most `limit`.
    async fn audit(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    async fn insert_token(&self, token: &ApiToken) -> Result<(), StoreError>;
    /// Removes a token (or web session); `false` if there was none.
    async fn delete_token(&self, hash: &str) -> Result<bool, StoreError>;
    /// Removes the tokens (and web sessions) that expired before `before` (RFC 3339, as
    /// stored); how many.
    async fn purge_expired_tokens(&self, before: &str) -> Result<u64, StoreError>;
    /// The audit entries about one request, oldest first.
    async fn audit_of_request(&self, request: &str) -> Result<Vec<AuditEntry>, StoreError>;

    /// Stores many new requests and their audit entries. Backends do it in one transaction; this
    /// default stores them one by one.
    async fn insert_requests(
        &self,
        batch: &[(Request, Vec<NewAuditEntry>)],
    ) -> Result<(), StoreError> {
        for (request, audit) in batch {
            self.insert_request(request, audit).await?;
        }
        Ok(())
    }

    /// Stores many changed requests with their audit entries; per request `true` if stored,
    /// `false` on a version conflict (that one is not written, the others are). Backends do it
    /// in one transaction; this default stores them one by one.
    async fn update_requests(
        &self,
        batch: &[(Request, Vec<NewAuditEntry>)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut stored = Vec::with_capacity(batch.len());
        for (request, audit) in batch {
            match self.update_request(request, audit).await {
                Ok(()) => stored.push(true),
                Err(StoreError::Conflict(_)) => stored.push(false),
                Err(e) => return Err(e),
            }
        }
        Ok(stored)
    }

    /// The earliest `due_at` of the open requests. This default reads them all.
    async fn next_due(&self) -> Result<Option<time::OffsetDateTime>, StoreError> {
        let open = self
            .requests(&RequestFilter {
                open_only: true,
                ..RequestFilter::default()
            })
            .await?;
        Ok(open.iter().filter_map(Request::due_at).min())
    }

    /// How many requests are [`Request::overdue`] at `now`: access past its end and not yet
    /// verified gone. This default reads every open request.
    async fn count_overdue(&self, now: time::OffsetDateTime) -> Result<u64, StoreError> {
        let open = self
            .requests(&RequestFilter {
                open_only: true,
                ..RequestFilter::default()
            })
            .await?;
        Ok(open.iter().filter(|r| r.overdue(now)).count() as u64)
    }
    async fn token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError>;
    /// A small named record tidegate keeps about itself (a managed group's standing members,
    /// the last chain head written out): JSON text, or `None` if never written.
    async fn get_state(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Writes a named record (replacing it).
    async fn put_state(&self, key: &str, value: &str, at: &str) -> Result<(), StoreError>;
    /// Writes a named record unless one with that key exists; whether it was written (so
    /// that, among replicas, exactly one caller claims a key).
    async fn claim_state(&self, key: &str, value: &str, at: &str) -> Result<bool, StoreError>;
    /// Removes a named record; whether there was one.
    async fn delete_state(&self, key: &str) -> Result<bool, StoreError>;
    /// Every named record whose key starts with `prefix`, by key.
    async fn states(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// How many named records' keys start with `prefix` (without reading them). This default
    /// reads them.
    async fn count_states(&self, prefix: &str) -> Result<u64, StoreError> {
        Ok(self.states(prefix).await?.len() as u64)
    }
    /// Queues deliveries; one already queued for its channel and event is left as it is. How
    /// many were queued.
    async fn enqueue_deliveries(&self, deliveries: &[NewDelivery]) -> Result<u64, StoreError>;
    /// Pending deliveries due by `now` (RFC 3339), the earliest first, at most `limit`.
    async fn due_deliveries(&self, now: &str, limit: usize) -> Result<Vec<Delivery>, StoreError>;
    /// Records an attempt: counts it and sets the delivery's state, next time and error.
    async fn record_attempt(&self, attempt: &Attempt) -> Result<(), StoreError>;
    /// A channel's deliveries, newest first, at most `limit` (its delivery log).
    async fn deliveries(&self, channel: &str, limit: usize) -> Result<Vec<Delivery>, StoreError>;
    /// How many deliveries are pending, per channel.
    async fn pending_deliveries(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError>;
    /// A user's tokens and sessions, newest first.
    async fn tokens_of(&self, user: &str) -> Result<Vec<ApiToken>, StoreError>;
    /// Records that a token was used at `at`, unless it was already recorded as used since
    /// `unless_since` (so a busy token is not written on every call).
    async fn touch_token(&self, hash: &str, at: &str, unless_since: &str)
    -> Result<(), StoreError>;

    /// Open requests by state (requests that need nothing more are not counted).
    async fn count_open_by_state(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError>;

    /// How many entries the audit log holds (the last one's `seq`).
    async fn audit_length(&self) -> Result<i64, StoreError>;

    /// The database answers and every migration this build knows is applied.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Leadership among the processes sharing this store. This default suits a store only one
    /// process uses: always held.
    async fn leader_lock(&self) -> Result<Arc<dyn LeaderLock>, StoreError> {
        Ok(Arc::new(SoleProcess))
    }
}
