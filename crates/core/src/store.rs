//! What tidegate keeps: requests (desired state), the audit log, API tokens. One trait; the
//! `store` crate implements it on SQLite and PostgreSQL and runs one conformance suite on both.

use serde::{Deserialize, Serialize};

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
    pub limit: Option<usize>,
}

/// An API token, stored as a hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// SHA-256 hex of the token.
    pub hash: String,
    pub user: String,
    pub description: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

impl Request {
    /// Still needs the reconciler: not final, or final with access applied and its removal
    /// not yet verified.
    pub fn open(&self) -> bool {
        !self.state.is_final()
            || (self.tailnet.applied_at.is_some() && self.tailnet.removal_verified_at.is_none())
    }
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
    async fn token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError>;
}
