//! How tidegate talks to a tailnet: the `Tailnet` trait its core uses, and the Tailscale API v2
//! client that implements it (API token or OAuth client, typed errors, retries with jittered
//! backoff that honour `Retry-After`, a request timeout, secrets that never print).

pub mod client;
pub mod clock;
mod error;
mod secret;
pub mod types;

pub use client::{ApiClient, ApiConfig, Credentials, IdTokenSource, RetryPolicy};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::Error;
pub use secret::Secret;
pub use types::*;

use serde_json::Value as Json;

pub type Result<T> = std::result::Result<T, Error>;

/// One posture attribute change on one device: set to a value (with an RFC 3339 expiry), or
/// deleted (`set: None`).
#[derive(Debug, Clone, PartialEq)]
pub struct PostureChange {
    pub device: String,
    pub key: String,
    pub set: Option<(Json, Option<String>)>,
}

/// The operations tidegate needs from a tailnet. Devices are named by `nodeId` or numeric `id`.
#[async_trait::async_trait]
pub trait Tailnet: Send + Sync {
    /// Calls made so far by outcome (HTTP status, or "error" when no answer came), for
    /// metrics; empty where not counted.
    fn call_counts(&self) -> std::collections::BTreeMap<String, u64> {
        std::collections::BTreeMap::new()
    }
    /// The policy file as stored (HuJSON, byte for byte) and its ETag.
    async fn policy(&self) -> Result<PolicyText>;
    /// Replaces the policy. With `if_match`, only if it is still that version
    /// ([`Error::PreconditionFailed`] otherwise). Returns the new version.
    async fn set_policy(&self, text: &str, if_match: Option<&str>) -> Result<PolicyText>;
    /// Validates a candidate policy and runs its tests without changing anything.
    async fn validate_policy(&self, text: &str) -> Result<ValidationResult>;

    async fn users(&self) -> Result<Vec<User>>;
    async fn user(&self, id: &str) -> Result<User>;
    async fn set_user_role(&self, id: &str, role: &str) -> Result<()>;

    /// Every device, with routes (`fields=all`).
    async fn devices(&self) -> Result<Vec<Device>>;
    async fn device(&self, id: &str) -> Result<Device>;
    async fn set_device_tags(&self, id: &str, tags: &[String]) -> Result<()>;
    /// `DELETE /device/{id}`: removes the device from the tailnet.
    async fn delete_device(&self, id: &str) -> Result<()>;

    async fn posture_attributes(&self, device: &str) -> Result<PostureAttributes>;
    /// Sets a `custom:` posture attribute; with `expiry` (RFC 3339) the control plane removes
    /// it then, whether or not tidegate is running.
    async fn set_posture_attribute(
        &self,
        device: &str,
        key: &str,
        value: Json,
        expiry: Option<&str>,
        comment: Option<&str>,
    ) -> Result<()>;
    async fn delete_posture_attribute(&self, device: &str, key: &str) -> Result<()>;
    /// Sets or deletes posture attributes on many devices at once (Tailscale's batch
    /// `PATCH /tailnet/{t}/device-attributes`). This default makes one call per change.
    async fn patch_posture_attributes(
        &self,
        changes: &[PostureChange],
        comment: Option<&str>,
    ) -> Result<()> {
        for change in changes {
            match &change.set {
                Some((value, expiry)) => {
                    self.set_posture_attribute(
                        &change.device,
                        &change.key,
                        value.clone(),
                        expiry.as_deref(),
                        comment,
                    )
                    .await?
                }
                None => match self
                    .delete_posture_attribute(&change.device, &change.key)
                    .await
                {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                },
            }
        }
        Ok(())
    }

    /// Creates an auth key; the returned `key` field holds the secret, shown only now.
    async fn create_auth_key(&self, request: &CreateAuthKey) -> Result<Key>;
    async fn key(&self, id: &str) -> Result<Key>;
    async fn delete_key(&self, id: &str) -> Result<()>;

    /// Configuration audit log entries between two RFC 3339 times.
    async fn audit_log(&self, start: &str, end: &str) -> Result<Vec<AuditLogEntry>>;

    /// Every key of the tailnet (`?all=true`): auth keys, API tokens, OAuth clients,
    /// federated identities.
    async fn keys(&self) -> Result<Vec<Key>>;
    /// Pending user invites.
    async fn user_invites(&self) -> Result<Vec<UserInvite>>;
    /// The tailnet's settings (whether the policy is managed externally, among others).
    async fn settings(&self) -> Result<TailnetSettings>;
    /// Suspends a user: their devices lose access until restored.
    async fn suspend_user(&self, id: &str) -> Result<()>;
}
