//! Tailscale API v2 objects, with the API's own field names. Parsing is lenient (missing fields
//! take defaults) because the API adds and omits fields by projection and plan.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A user of the tailnet (`GET /tailnet/{t}/users`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct User {
    pub id: String,
    pub display_name: String,
    pub login_name: String,
    pub profile_pic_url: String,
    pub tailnet_id: String,
    /// RFC 3339.
    pub created: String,
    /// `member` or `shared`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `owner`, `member`, `admin`, `it-admin`, `network-admin`, `billing-admin`, `auditor`.
    pub role: String,
    /// `active`, `idle`, `suspended`, `needs-approval`, `over-billing-limit`.
    pub status: String,
    pub device_count: u32,
    pub last_seen: String,
    pub currently_connected: bool,
}

/// A device (`GET /tailnet/{t}/devices?fields=all`). Route fields are only present with
/// `fields=all`; `lastSeen` is omitted while the device is connected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Device {
    pub addresses: Vec<String>,
    pub id: String,
    pub node_id: String,
    /// The login of the user who registered it.
    pub user: String,
    /// MagicDNS name, `host.tailnet.ts.net`.
    pub name: String,
    pub hostname: String,
    pub client_version: String,
    pub update_available: bool,
    pub os: String,
    pub created: String,
    pub connected_to_control: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    pub key_expiry_disabled: bool,
    pub expires: String,
    pub authorized: bool,
    pub is_external: bool,
    pub machine_key: String,
    pub node_key: String,
    pub blocks_incoming_connections: bool,
    pub tailnet_lock_key: String,
    pub tailnet_lock_error: String,
    pub tags: Vec<String>,
    pub is_ephemeral: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled_routes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_routes: Option<Vec<String>>,
}

/// `GET /device/{id}/attributes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostureAttributes {
    pub attributes: BTreeMap<String, Json>,
    /// RFC 3339 expiry per attribute that has one.
    pub expiries: BTreeMap<String, String>,
}

/// `capabilities.devices.create` of an auth key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceCreateCapabilities {
    pub reusable: bool,
    pub ephemeral: bool,
    pub preauthorized: bool,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceCapabilities {
    pub create: DeviceCreateCapabilities,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyCapabilities {
    pub devices: DeviceCapabilities,
}

/// An auth key, OAuth client or other key (`/tailnet/{t}/keys`). `key` (the secret) is only
/// present in the response that created it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Key {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `auth`, `client`, `api`, `federated`.
    pub key_type: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_seconds: Option<u64>,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
    pub invalid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<KeyCapabilities>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Federated identities: the OIDC issuer whose tokens it accepts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Federated identities: the `sub` pattern (`*` wildcards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Federated identities: claim → pattern, every one must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_claim_rules: Option<std::collections::BTreeMap<String, String>>,
}

/// A request to create an auth key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAuthKey {
    pub capabilities: KeyCapabilities,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_seconds: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A webhook endpoint. `secret` only in the create and rotate responses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Webhook {
    pub endpoint_id: String,
    pub endpoint_url: String,
    pub provider_type: String,
    pub creator_login_name: String,
    pub created: String,
    pub last_modified: String,
    pub subscriptions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One webhook event as delivered (bodies are JSON arrays of these).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookEvent {
    pub timestamp: String,
    pub version: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub tailnet: String,
    pub message: String,
    pub data: Json,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuditActor {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub login_name: String,
    pub display_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuditTarget {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_ephemeral: Option<bool>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub property: String,
}

/// One configuration audit log entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuditLogEntry {
    pub event_time: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub deferred_at: String,
    #[serde(rename = "eventGroupID")]
    pub event_group_id: String,
    pub origin: String,
    pub actor: AuditActor,
    pub target: AuditTarget,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Json>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub action_details: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// `GET /tailnet/{t}/logging/configuration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditLog {
    pub version: String,
    pub tailnet: String,
    pub logs: Vec<AuditLogEntry>,
}

/// The policy file as stored (HuJSON text) and its version tag (the ETag, quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyText {
    pub text: String,
    pub etag: String,
}

/// The answer of `POST /acl/validate`: `None` message means it passed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ValidationResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Json>,
}

/// A pending user invite (`GET /tailnet/{t}/user-invites`). Unlike user and device ids,
/// `tailnetId` and `inviterId` are JSON numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserInvite {
    pub id: String,
    pub role: String,
    pub tailnet_id: i64,
    pub inviter_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_email_sent_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite_url: Option<String>,
}

/// The tailnet's settings (`GET /tailnet/{t}/settings`); the fields tidegate reads, and the
/// rest kept as they came.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TailnetSettings {
    /// The policy file is managed by GitOps: edits made through the API are undone by its
    /// next apply.
    pub acls_externally_managed_on: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acls_external_link: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}
