//! The emulated tailnet: users, devices, the policy file, keys, webhooks and the audit log, as
//! loaded from (and saved back to) a state file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use tailnet::clock::{parse_rfc3339, rfc3339};
use tailnet::{AuditLogEntry, Device, Key, User, Webhook};
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};

/// The policy a new tailnet starts with (`If-Match: "ts-default"` applies while it is unchanged).
pub const DEFAULT_POLICY: &str = r#"// Example/default ACLs for unrestricted connections.
{
	// Declare static groups of users. Use autogroups for all users or users with a specific role.
	// "groups": {
	//   "group:example": ["alice@example.com", "bob@example.com"],
	// },

	// Define the tags which can be applied to devices and by which users.
	// "tagOwners": {
	//   "tag:example": ["autogroup:admin"],
	// },

	// Define grants that govern access for users, groups, autogroups, tags,
	// Tailscale IP addresses, and subnet ranges.
	"grants": [
		// Allow all connections.
		// Comment this section out if you want to define specific restrictions.
		{"src": ["*"], "dst": ["*"], "ip": ["*"]},
	],

	// Define users and devices that can use Tailscale SSH.
	"ssh": [
		// Allow all users to SSH into their own devices in check mode.
		// Comment this section out if you want to define specific restrictions.
		{
			"action": "check",
			"src":    ["autogroup:member"],
			"dst":    ["autogroup:self"],
			"users":  ["autogroup:nonroot", "root"],
		},
	],
}
"#;

/// Auth keys live 90 days unless asked otherwise.
pub const DEFAULT_KEY_EXPIRY_SECONDS: u64 = 90 * 24 * 3600;

/// Fields of the device object that `tailnet::Device` models; anything else in a state file's
/// device (`clientConnectivity`, `sshEnabled`, `distro`, ...) is kept as is and shown with
/// `fields=all`.
const DEVICE_FIELDS: &[&str] = &[
    "addresses",
    "id",
    "nodeId",
    "user",
    "name",
    "hostname",
    "clientVersion",
    "updateAvailable",
    "os",
    "created",
    "connectedToControl",
    "lastSeen",
    "keyExpiryDisabled",
    "expires",
    "authorized",
    "isExternal",
    "machineKey",
    "nodeKey",
    "blocksIncomingConnections",
    "tailnetLockKey",
    "tailnetLockError",
    "tags",
    "isEphemeral",
    "enabledRoutes",
    "advertisedRoutes",
    "postureAttributes",
    "postureExpiries",
    // The emulator's own record of the key a device joined with (not an API field).
    "authKeyId",
];

/// One posture attribute of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct PostureValue {
    pub value: Json,
    pub expiry: Option<OffsetDateTime>,
}

#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub device: Device,
    /// Fields beyond the default projection, shown with `fields=all`.
    pub extra: Map<String, Json>,
    pub posture: BTreeMap<String, PostureValue>,
    /// The auth key it joined with (`authKey` given to the control API), by id. The
    /// Tailscale API does not show it; the emulator's state file does.
    pub auth_key: Option<String>,
}

/// A key (auth key, OAuth client or API access token) and its secret.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// As the API shows it, without the secret.
    pub key: Key,
    pub secret: String,
}

/// An access token minted by `POST /api/v2/oauth/token`.
#[derive(Debug, Clone)]
pub struct MintedToken {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expires: OffsetDateTime,
}

/// The posture attribute types fixed tailnet-wide by their first write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostureKey {
    /// The key as first written (uniqueness is case-insensitive).
    pub key: String,
    /// `string`, `number` or `boolean`.
    pub kind: String,
}

/// The whole emulated tailnet.
#[derive(Debug, Clone)]
pub struct State {
    /// The tailnet's name (`example.com`); `{tailnet}` in paths may be this, `-` or `tailnet_id`.
    pub tailnet: String,
    pub tailnet_id: String,
    /// MagicDNS suffix, `example.ts.net`.
    pub dns_suffix: String,
    pub users: Vec<User>,
    pub devices: Vec<DeviceRecord>,
    /// The policy file as stored, byte for byte.
    pub policy: String,
    /// Still the tailnet's untouched default policy (for `If-Match: "ts-default"`).
    pub policy_is_default: bool,
    pub keys: Vec<KeyRecord>,
    /// Pending user invites (state file key `userInvites`).
    pub user_invites: Vec<tailnet::UserInvite>,
    /// The tailnet's settings (state file key `settings`).
    pub settings: tailnet::TailnetSettings,
    /// Webhook endpoints, with their secrets.
    pub webhooks: Vec<Webhook>,
    pub audit_log: Vec<AuditLogEntry>,
    /// Lower-cased key → the key's first spelling and type.
    pub posture_keys: BTreeMap<String, PostureKey>,
    pub(crate) tokens: HashMap<String, MintedToken>,
    pub(crate) policy_file: policy::PolicyFile,
    pub(crate) devices_gen: u64,
    pub(crate) next_expiry: Option<OffsetDateTime>,
    next_id: u64,
}

/// A federated identity (`keyType: "federated"`): a workload trades its OIDC token for an
/// access token at `/api/v2/oauth/token-exchange`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FederatedIdentityEntry {
    id: String,
    issuer: String,
    subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audience: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    custom_claim_rules: BTreeMap<String, String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiTokenEntry {
    token: String,
    user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OAuthClientEntry {
    id: String,
    secret: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StateFile {
    tailnet: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    tailnet_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    magic_dns_suffix: String,
    #[serde(default)]
    users: Vec<User>,
    #[serde(default)]
    devices: Vec<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    policy_is_default: bool,
    #[serde(default)]
    api_tokens: Vec<ApiTokenEntry>,
    #[serde(default)]
    oauth_clients: Vec<OAuthClientEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    federated_identities: Vec<FederatedIdentityEntry>,
    /// Auth keys, with `key` (the secret).
    #[serde(default)]
    keys: Vec<Key>,
    /// With `secret`.
    #[serde(default)]
    webhooks: Vec<Webhook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    user_invites: Vec<tailnet::UserInvite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settings: Option<tailnet::TailnetSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    audit_log: Vec<AuditLogEntry>,
    /// Posture attribute key → `string`, `number` or `boolean`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    posture_attribute_types: BTreeMap<String, String>,
}

/// Identifiers and addresses already in use, while devices are added.
#[derive(Default)]
struct Taken {
    ids: BTreeSet<String>,
    addrs: std::collections::HashSet<String>,
    next_v4: u32,
    next_v6: u128,
}

impl Taken {
    fn free_ipv4(&mut self) -> Ipv4Addr {
        let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
        loop {
            self.next_v4 += 1;
            let ip = Ipv4Addr::from(base + (self.next_v4 % (1 << 22)));
            let last = ip.octets()[3];
            if last != 0 && last != 255 && self.addrs.insert(ip.to_string()) {
                return ip;
            }
        }
    }

    fn free_ipv6(&mut self) -> Ipv6Addr {
        let base = u128::from(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0));
        loop {
            self.next_v6 += 1;
            let ip = Ipv6Addr::from(base + self.next_v6);
            if self.addrs.insert(ip.to_string()) {
                return ip;
            }
        }
    }
}

/// Reads a state file (see the crate documentation for its shape), filling in defaults.
pub fn load_state(path: impl AsRef<Path>) -> Result<State> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    State::from_json(&text, tailnet::Clock::now(&tailnet::SystemClock))
}

/// The JSON type of a posture attribute value.
pub fn value_kind(value: &Json) -> &'static str {
    match value {
        Json::String(_) => "string",
        Json::Number(_) => "number",
        Json::Bool(_) => "boolean",
        Json::Null => "null",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn random_hex(bytes: usize) -> String {
    let data: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(data)
}

/// Random letters and digits.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn dns_label(text: &str) -> String {
    let label: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let label = label.trim_matches('-').to_owned();
    if label.is_empty() {
        "device".to_owned()
    } else {
        label
    }
}

impl State {
    /// An empty tailnet with the default policy.
    pub fn new(tailnet: &str) -> State {
        let suffix = {
            let base = tailnet.rsplit('@').next().unwrap_or(tailnet);
            let first = base.split('.').next().unwrap_or(base);
            format!("{}.ts.net", dns_label(first))
        };
        State {
            tailnet: tailnet.to_owned(),
            tailnet_id: String::new(),
            dns_suffix: suffix,
            users: Vec::new(),
            devices: Vec::new(),
            policy: DEFAULT_POLICY.to_owned(),
            policy_is_default: true,
            keys: Vec::new(),
            user_invites: Vec::new(),
            settings: tailnet::TailnetSettings::default(),
            webhooks: Vec::new(),
            audit_log: Vec::new(),
            posture_keys: BTreeMap::new(),
            tokens: HashMap::new(),
            policy_file: policy::PolicyFile::default(),
            devices_gen: 0,
            next_expiry: None,
            next_id: 100_000,
        }
    }

    /// Parses a state file's text; `now` stamps whatever has no creation time.
    pub fn from_json(text: &str, now: OffsetDateTime) -> Result<State> {
        let file: StateFile = serde_json::from_str(text)?;
        if file.tailnet.trim().is_empty() {
            return Err(Error::State("\"tailnet\" is required".to_owned()));
        }
        let mut st = State::new(&file.tailnet);
        if !file.tailnet_id.is_empty() {
            st.tailnet_id = file.tailnet_id.clone();
        }
        if !file.magic_dns_suffix.is_empty() {
            st.dns_suffix = file.magic_dns_suffix.trim_matches('.').to_owned();
        }
        st.next_id = Self::max_numeric_id(&file).map_or(100_000, |m| m.max(99_999) + 1);
        let created = rfc3339(now);

        for mut user in file.users {
            if user.login_name.trim().is_empty() {
                return Err(Error::State("a user has no loginName".to_owned()));
            }
            if st.users.iter().any(|u| u.login_name == user.login_name) {
                return Err(Error::State(format!(
                    "user {} appears twice",
                    user.login_name
                )));
            }
            if user.id.is_empty() {
                user.id = st.fresh_id().to_string();
            }
            if user.display_name.is_empty() {
                user.display_name = user
                    .login_name
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
            if user.tailnet_id.is_empty() {
                user.tailnet_id = st.tailnet.clone();
            }
            if user.created.is_empty() {
                user.created = created.clone();
            }
            if user.last_seen.is_empty() {
                user.last_seen = user.created.clone();
            }
            if user.kind.is_empty() {
                user.kind = "member".to_owned();
            }
            if user.role.is_empty() {
                user.role = "member".to_owned();
            }
            if user.status.is_empty() {
                user.status = "active".to_owned();
            }
            st.users.push(user);
        }

        let mut taken = Taken::default();
        for raw in &file.devices {
            for a in raw
                .get("addresses")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(a) = a.as_str() {
                    taken.addrs.insert(a.to_owned());
                }
            }
        }
        for raw in &file.devices {
            let record = st.device_in(raw, now, &mut taken)?;
            st.devices.push(record);
        }

        match file.policy {
            Some(text) => {
                st.policy_is_default = file.policy_is_default || text == DEFAULT_POLICY;
                st.policy = text;
            }
            None => {
                st.policy = DEFAULT_POLICY.to_owned();
                st.policy_is_default = true;
            }
        }
        match policy::load(&st.policy, &st.inventory()) {
            Ok(engine) => st.policy_file = engine.policy.file,
            Err(e) => return Err(Error::Policy(e.to_string())),
        }

        for t in file.api_tokens {
            let Some(user_id) = st
                .users
                .iter()
                .find(|u| u.login_name == t.user)
                .map(|u| u.id.clone())
            else {
                return Err(Error::State(format!(
                    "API token for unknown user {:?}",
                    t.user
                )));
            };
            if !t.token.starts_with("tskey-api-") {
                return Err(Error::State(
                    "API tokens must look like tskey-api-...".to_owned(),
                ));
            }
            let id = if t.id.is_empty() {
                // The id is embedded in the token when it has the usual shape.
                t.token
                    .strip_prefix("tskey-api-")
                    .and_then(|rest| rest.split_once('-'))
                    .map(|(id, _)| id.to_owned())
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("k{}CNTRL", st.fresh_id()))
            } else {
                t.id
            };
            let key = Key {
                id,
                key_type: "api".to_owned(),
                description: t.description,
                created: if t.created.is_empty() {
                    created.clone()
                } else {
                    t.created
                },
                expires: t.expires,
                revoked: t.revoked,
                scopes: Some(vec!["all".to_owned()]),
                user_id: Some(user_id),
                ..Key::default()
            };
            st.keys.push(KeyRecord {
                key,
                secret: t.token,
            });
        }
        for c in file.oauth_clients {
            if c.id.is_empty() || !c.secret.starts_with("tskey-client-") {
                return Err(Error::State(
                    "OAuth clients need an id and a tskey-client-... secret".to_owned(),
                ));
            }
            let key = Key {
                id: c.id,
                key_type: "client".to_owned(),
                description: c.description,
                created: if c.created.is_empty() {
                    created.clone()
                } else {
                    c.created
                },
                revoked: c.revoked,
                scopes: Some(c.scopes),
                tags: Some(c.tags),
                user_id: None,
                ..Key::default()
            };
            st.keys.push(KeyRecord {
                key,
                secret: c.secret,
            });
        }
        for f in file.federated_identities {
            if f.id.is_empty() || f.issuer.is_empty() || f.subject.is_empty() {
                return Err(Error::State(
                    "federated identities need an id, an issuer and a subject pattern".to_owned(),
                ));
            }
            let key = Key {
                id: f.id,
                key_type: "federated".to_owned(),
                description: f.description,
                created: created.clone(),
                scopes: Some(f.scopes),
                tags: Some(f.tags),
                issuer: Some(f.issuer),
                subject: Some(f.subject),
                audience: f.audience,
                custom_claim_rules: Some(f.custom_claim_rules),
                ..Key::default()
            };
            st.keys.push(KeyRecord {
                key,
                secret: String::new(),
            });
        }
        for mut k in file.keys {
            let secret = k.key.take().unwrap_or_default();
            if k.id.is_empty() {
                k.id = format!("k{}CNTRL", st.fresh_id());
            }
            if k.key_type.is_empty() {
                k.key_type = "auth".to_owned();
            }
            if k.created.is_empty() {
                k.created = created.clone();
            }
            st.keys.push(KeyRecord { key: k, secret });
        }
        let mut seen = BTreeSet::new();
        for k in &st.keys {
            if !seen.insert(k.key.id.clone()) {
                return Err(Error::State(format!("key id {} appears twice", k.key.id)));
            }
        }
        for mut w in file.webhooks {
            if w.endpoint_id.is_empty() {
                w.endpoint_id = format!("{}", st.fresh_id());
            }
            if w.created.is_empty() {
                w.created = created.clone();
            }
            if w.last_modified.is_empty() {
                w.last_modified = w.created.clone();
            }
            if w.secret.as_deref().unwrap_or_default().is_empty() {
                w.secret = Some(format!("tskey-webhook-{}", random_token(32)));
            }
            st.webhooks.push(w);
        }
        st.audit_log = file.audit_log;
        for mut invite in file.user_invites {
            if invite.id.is_empty() {
                invite.id = st.fresh_id().to_string();
            }
            if invite.tailnet_id == 0 {
                invite.tailnet_id = st.tailnet_id.parse().unwrap_or(1);
            }
            st.user_invites.push(invite);
        }
        st.settings = file.settings.unwrap_or_default();

        for (key, kind) in file.posture_attribute_types {
            st.posture_keys
                .insert(key.to_lowercase(), PostureKey { key, kind });
        }
        let mut locks = Vec::new();
        for d in &st.devices {
            for (key, v) in &d.posture {
                locks.push((key.clone(), value_kind(&v.value)));
            }
        }
        for (key, kind) in locks {
            st.posture_keys
                .entry(key.to_lowercase())
                .or_insert_with(|| PostureKey {
                    key: key.clone(),
                    kind: kind.to_owned(),
                });
        }
        st.recompute_next_expiry();
        Ok(st)
    }

    fn max_numeric_id(file: &StateFile) -> Option<u64> {
        let users = file.users.iter().filter_map(|u| u.id.parse::<u64>().ok());
        let devices = file
            .devices
            .iter()
            .filter_map(|d| d.get("id")?.as_str()?.parse::<u64>().ok());
        users.chain(devices).max()
    }

    pub(crate) fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Builds a device from its state-file JSON, with defaults for whatever is missing.
    pub(crate) fn device_from_json(
        &mut self,
        raw: &Json,
        now: OffsetDateTime,
    ) -> Result<DeviceRecord> {
        let mut taken = Taken::default();
        for d in &self.devices {
            taken.ids.insert(d.device.id.clone());
            taken.ids.insert(d.device.node_id.clone());
            taken.addrs.extend(d.device.addresses.iter().cloned());
        }
        self.device_in(raw, now, &mut taken)
    }

    fn device_in(
        &mut self,
        raw: &Json,
        now: OffsetDateTime,
        taken: &mut Taken,
    ) -> Result<DeviceRecord> {
        let Some(object) = raw.as_object() else {
            return Err(Error::State("a device is not a JSON object".to_owned()));
        };
        let mut device: Device = serde_json::from_value(raw.clone())?;
        let has = |k: &str| object.contains_key(k);
        if device.hostname.is_empty() {
            device.hostname = device
                .name
                .split('.')
                .next()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| Error::State("a device has neither hostname nor name".to_owned()))?
                .to_owned();
        }
        if device.id.is_empty() {
            device.id = self.fresh_id().to_string();
        }
        if device.node_id.is_empty() {
            device.node_id = format!("n{}CNTRL", device.id);
        }
        let clash = taken.ids.contains(&device.id)
            || taken.ids.contains(&device.node_id)
            || device.id == device.node_id;
        taken.ids.insert(device.id.clone());
        taken.ids.insert(device.node_id.clone());
        if clash {
            return Err(Error::State(format!(
                "device id {} / {} appears twice",
                device.id, device.node_id
            )));
        }
        if device.name.is_empty() {
            device.name = format!("{}.{}", dns_label(&device.hostname), self.dns_suffix);
        }
        if device.user.is_empty() {
            device.user = self
                .users
                .iter()
                .find(|u| u.role == "owner")
                .or(self.users.first())
                .map(|u| u.login_name.clone())
                .unwrap_or_default();
        }
        if device.client_version.is_empty() && !device.is_external {
            device.client_version = "1.80.2".to_owned();
        }
        if device.os.is_empty() {
            device.os = "linux".to_owned();
        }
        if device.created.is_empty() && !device.is_external {
            device.created = rfc3339(now);
        }
        if !has("keyExpiryDisabled") && !device.tags.is_empty() {
            device.key_expiry_disabled = true;
        }
        if device.expires.is_empty() {
            device.expires = rfc3339(now.saturating_add(Duration::days(180)));
        }
        if !has("connectedToControl") {
            device.connected_to_control = true;
        }
        if !device.connected_to_control && device.last_seen.is_none() {
            device.last_seen = Some(device.created.clone());
        }
        if !has("authorized") {
            device.authorized = true;
        }
        if device.machine_key.is_empty() && !device.is_external {
            device.machine_key = format!("mkey:{}", random_hex(32));
        }
        if device.node_key.is_empty() {
            device.node_key = format!("nodekey:{}", random_hex(32));
        }
        if device.enabled_routes.is_none() {
            device.enabled_routes = Some(Vec::new());
        }
        if device.advertised_routes.is_none() {
            device.advertised_routes = Some(Vec::new());
        }
        if !device
            .addresses
            .iter()
            .any(|a| a.parse::<Ipv4Addr>().is_ok())
        {
            let v4 = taken.free_ipv4();
            device.addresses.insert(0, v4.to_string());
        }
        if !device
            .addresses
            .iter()
            .any(|a| a.parse::<Ipv6Addr>().is_ok())
        {
            let v6 = taken.free_ipv6();
            device.addresses.push(v6.to_string());
        }
        let extra: Map<String, Json> = object
            .iter()
            .filter(|(k, _)| !DEVICE_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut posture = BTreeMap::new();
        if let Some(attrs) = object.get("postureAttributes") {
            let Some(attrs) = attrs.as_object() else {
                return Err(Error::State(format!(
                    "device {}: postureAttributes must be an object",
                    device.hostname
                )));
            };
            let expiries = object.get("postureExpiries").and_then(|e| e.as_object());
            for (key, value) in attrs {
                if !matches!(value, Json::String(_) | Json::Number(_) | Json::Bool(_)) {
                    return Err(Error::State(format!(
                        "device {}: posture attribute {key} must be a string, number or boolean",
                        device.hostname
                    )));
                }
                let expiry = match expiries.and_then(|e| e.get(key)) {
                    Some(Json::String(t)) => Some(parse_rfc3339(t).ok_or_else(|| {
                        Error::State(format!("device {}: bad expiry {t:?}", device.hostname))
                    })?),
                    _ => None,
                };
                posture.insert(
                    key.clone(),
                    PostureValue {
                        value: value.clone(),
                        expiry,
                    },
                );
            }
        }
        let auth_key = object
            .get("authKeyId")
            .and_then(Json::as_str)
            .map(str::to_owned);
        Ok(DeviceRecord {
            device,
            extra,
            posture,
            auth_key,
        })
    }

    /// Users and devices as the policy engine sees them.
    pub fn inventory(&self) -> policy::Inventory {
        policy::Inventory {
            users: self
                .users
                .iter()
                .map(|u| policy::User {
                    id: u.id.clone(),
                    login_name: u.login_name.clone(),
                    display_name: u.display_name.clone(),
                    role: u.role.clone(),
                    status: u.status.clone(),
                })
                .collect(),
            devices: self
                .devices
                .iter()
                .map(|d| policy::Device {
                    id: d.device.id.clone(),
                    node_id: d.device.node_id.clone(),
                    name: d.device.name.clone(),
                    hostname: d.device.hostname.clone(),
                    user: d.device.user.clone(),
                    tags: d.device.tags.clone(),
                    addresses: d.device.addresses.clone(),
                    advertised_routes: d.device.advertised_routes.clone().unwrap_or_default(),
                    enabled_routes: d.device.enabled_routes.clone().unwrap_or_default(),
                    os: d.device.os.clone(),
                    client_version: d.device.client_version.clone(),
                    posture_attributes: d
                        .posture
                        .iter()
                        .map(|(k, v)| (k.clone(), v.value.clone()))
                        .collect(),
                })
                .collect(),
            domains: Vec::new(),
        }
    }

    /// `"<sha256 hex of the policy bytes>"`, quotes included.
    pub fn etag(&self) -> String {
        use sha2::Digest;
        format!(
            "\"{}\"",
            hex::encode(sha2::Sha256::digest(self.policy.as_bytes()))
        )
    }

    pub fn device_index(&self, id: &str) -> Option<usize> {
        self.devices
            .iter()
            .position(|d| d.device.node_id == id || d.device.id == id)
    }

    pub fn user_index(&self, id: &str) -> Option<usize> {
        self.users.iter().position(|u| u.id == id)
    }

    pub fn user_by_login(&self, login: &str) -> Option<&User> {
        self.users.iter().find(|u| u.login_name == login)
    }

    pub(crate) fn touch_devices(&mut self) {
        self.devices_gen += 1;
    }

    pub(crate) fn recompute_next_expiry(&mut self) {
        self.next_expiry = self
            .devices
            .iter()
            .flat_map(|d| d.posture.values().filter_map(|v| v.expiry))
            .min();
    }

    /// The state file for this state (secrets included).
    pub fn to_json(&self) -> Json {
        let devices = self
            .devices
            .iter()
            .map(|d| {
                let mut object = match serde_json::to_value(&d.device) {
                    Ok(Json::Object(o)) => o,
                    _ => Map::new(),
                };
                for (k, v) in &d.extra {
                    object.insert(k.clone(), v.clone());
                }
                if let Some(key) = &d.auth_key {
                    object.insert("authKeyId".to_owned(), Json::String(key.clone()));
                }
                if !d.posture.is_empty() {
                    let attrs: Map<String, Json> = d
                        .posture
                        .iter()
                        .map(|(k, v)| (k.clone(), v.value.clone()))
                        .collect();
                    object.insert("postureAttributes".to_owned(), Json::Object(attrs));
                    let expiries: Map<String, Json> = d
                        .posture
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), Json::String(rfc3339(v.expiry?)))))
                        .collect();
                    if !expiries.is_empty() {
                        object.insert("postureExpiries".to_owned(), Json::Object(expiries));
                    }
                }
                Json::Object(object)
            })
            .collect();
        let mut file = StateFile {
            tailnet: self.tailnet.clone(),
            tailnet_id: self.tailnet_id.clone(),
            magic_dns_suffix: self.dns_suffix.clone(),
            users: self.users.clone(),
            devices,
            policy: Some(self.policy.clone()),
            policy_is_default: self.policy_is_default,
            webhooks: self.webhooks.clone(),
            user_invites: self.user_invites.clone(),
            settings: Some(self.settings.clone()),
            audit_log: self.audit_log.clone(),
            posture_attribute_types: self
                .posture_keys
                .values()
                .map(|p| (p.key.clone(), p.kind.clone()))
                .collect(),
            ..StateFile::default()
        };
        for k in &self.keys {
            match k.key.key_type.as_str() {
                "api" => {
                    let login = k
                        .key
                        .user_id
                        .as_deref()
                        .and_then(|id| self.users.iter().find(|u| u.id == id))
                        .map(|u| u.login_name.clone())
                        .unwrap_or_default();
                    file.api_tokens.push(ApiTokenEntry {
                        token: k.secret.clone(),
                        user: login,
                        id: k.key.id.clone(),
                        description: k.key.description.clone(),
                        created: k.key.created.clone(),
                        expires: k.key.expires.clone(),
                        revoked: k.key.revoked.clone(),
                    });
                }
                "federated" => file.federated_identities.push(FederatedIdentityEntry {
                    id: k.key.id.clone(),
                    issuer: k.key.issuer.clone().unwrap_or_default(),
                    subject: k.key.subject.clone().unwrap_or_default(),
                    audience: k.key.audience.clone(),
                    custom_claim_rules: k.key.custom_claim_rules.clone().unwrap_or_default(),
                    scopes: k.key.scopes.clone().unwrap_or_default(),
                    tags: k.key.tags.clone().unwrap_or_default(),
                    description: k.key.description.clone(),
                }),
                "client" => file.oauth_clients.push(OAuthClientEntry {
                    id: k.key.id.clone(),
                    secret: k.secret.clone(),
                    scopes: k.key.scopes.clone().unwrap_or_default(),
                    tags: k.key.tags.clone().unwrap_or_default(),
                    description: k.key.description.clone(),
                    created: k.key.created.clone(),
                    revoked: k.key.revoked.clone(),
                }),
                _ => {
                    let mut key = k.key.clone();
                    key.key = Some(k.secret.clone());
                    file.keys.push(key);
                }
            }
        }
        serde_json::to_value(&file).unwrap_or(Json::Null)
    }

    /// Saves the state file atomically (a temporary file renamed over the old one).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_json())?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::write(&tmp, text.as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }
}
