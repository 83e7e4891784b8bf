//! The tailnet a policy is evaluated against: users and devices with Tailscale API v2 field
//! names, so a snapshot of a real tailnet can be used as it is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub devices: Vec<Device>,
    /// The tailnet's own e-mail domains (for `user:*@domain` and `localpart:*@domain`). When
    /// absent: the domains of the owners, else of the first user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub id: String,
    pub login_name: String,
    #[serde(default)]
    pub display_name: String,
    /// `owner`, `admin`, `member`, `it-admin`, `network-admin`, `billing-admin`, `auditor`.
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub status: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub node_id: String,
    /// The machine name (often the MagicDNS name, `host.tailnet.ts.net`).
    pub name: String,
    #[serde(default)]
    pub hostname: String,
    /// The owner's login name; a tagged device has no user identity whatever this says.
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub advertised_routes: Vec<String>,
    #[serde(default)]
    pub enabled_routes: Vec<String>,
    /// The device's OS as the API reports it (`linux`, `macOS`, ...): `node:os` in postures.
    #[serde(default)]
    pub os: String,
    /// `node:tsVersion` in postures.
    #[serde(default)]
    pub client_version: String,
    /// Posture attributes (`custom:...`, `node:...`) as `GET /device/{id}/attributes` returns
    /// them; tidegate's own addition to the device object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub posture_attributes: BTreeMap<String, serde_json::Value>,
}

impl Inventory {
    pub fn domains(&self) -> Vec<String> {
        if !self.domains.is_empty() {
            return self.domains.clone();
        }
        let domain = |u: &User| u.login_name.rsplit_once('@').map(|(_, d)| d.to_owned());
        let mut owners: Vec<String> = self
            .users
            .iter()
            .filter(|u| u.role == "owner")
            .filter_map(domain)
            .collect();
        if owners.is_empty() {
            owners.extend(self.users.first().and_then(domain));
        }
        owners.dedup();
        owners
    }
}
