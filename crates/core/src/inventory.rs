//! The tailnet's inventory: users, pending invites, devices, keys, and the policy's entities
//! (groups, tagOwners, hosts, postures, and every `acls`, `grants` and `ssh` rule with its
//! section, index and line). A sync reads it all, compares it with the last snapshot, and
//! stores the changes; an unchanged re-sync stores only a small record.
//!
//! Storage, in the store's named records: `inventory:snapshot` the latest snapshot,
//! `inventory:changes` the last sync that changed something (its diff), and
//! `inventory:run:<time>` one small record per sync. `last_seen` times are kept but are not a
//! change by themselves (they move all day), so they are as fresh as the last real change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::service::{Service, ServiceError};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub taken_at: String,
    pub users: Vec<InvUser>,
    pub invites: Vec<InvInvite>,
    pub devices: Vec<InvDevice>,
    pub keys: Vec<InvKey>,
    pub groups: BTreeMap<String, Vec<String>>,
    pub tag_owners: BTreeMap<String, Vec<String>>,
    pub hosts: BTreeMap<String, String>,
    pub postures: BTreeMap<String, Vec<String>>,
    pub rules: Vec<Rule>,
    /// The policy is managed by GitOps (`aclsExternallyManagedOn`).
    #[serde(default)]
    pub policy_managed_externally: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvUser {
    pub id: String,
    pub login: String,
    pub name: String,
    pub role: String,
    pub status: String,
    /// `member` or `shared`.
    pub kind: String,
    pub last_seen: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvInvite {
    pub id: String,
    pub email: String,
    pub role: String,
    pub last_email_sent_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvDevice {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub owner: String,
    pub tags: Vec<String>,
    pub os: String,
    pub last_seen: String,
    pub connected: bool,
    pub expires: String,
    pub key_expiry_disabled: bool,
    pub authorized: bool,
    pub ephemeral: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvKey {
    pub id: String,
    /// `auth`, `api`, `client` (OAuth), `federated`.
    pub kind: String,
    pub description: String,
    pub created: String,
    pub expires: String,
    pub tags: Vec<String>,
    pub reusable: bool,
    pub user_id: String,
    pub invalid: bool,
}

/// A rule of the policy, where it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// `acls`, `grants` or `ssh`.
    pub section: String,
    pub index: usize,
    pub line: usize,
    pub src: Vec<String>,
    pub dst: Vec<String>,
    /// Ports (acls), `ip` (grants) or local users (ssh).
    pub what: Vec<String>,
    /// The postures a source must satisfy (grants and ssh).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src_posture: Vec<String>,
    /// Its `// tidegate:rule NAME` marker: a `rule` entitlement adds logins to its `src`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

impl Rule {
    /// `acls[2] (line 31)`.
    pub fn label(&self) -> String {
        format!("{}[{}] (line {})", self.section, self.index, self.line)
    }
}

/// A field of an inventory item as one line of text (lists joined by spaces), for tables.
pub fn field_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// `user`, `invite`, `device`, `key`, `group`, `tag_owner`, `host`, `posture`, `rule`.
    pub kind: String,
    /// The login, hostname, key id, group name or rule label.
    pub subject: String,
    /// `added`, `removed` or `changed`.
    pub change: String,
    /// Changed field → `[old, new]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, (Value, Value)>,
}

/// What a sync found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncReport {
    pub at: String,
    pub users: usize,
    pub devices: usize,
    pub invites: usize,
    pub keys: usize,
    pub groups: usize,
    /// acls + grants + ssh.
    pub rules: usize,
    pub unchanged: bool,
    pub changes: usize,
    /// Parts that could not be read (their previous values are kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

const SNAPSHOT: &str = "inventory:snapshot";
const CHANGES: &str = "inventory:changes";
const HASH: &str = "inventory:hash";
const RUN: &str = "inventory:run:";

/// What a sync stores when something changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub at: String,
    pub previous_at: String,
    pub changes: Vec<Change>,
}

impl Snapshot {
    /// The rules of a parsed policy, with their sections, indexes and lines.
    pub fn rules_of(policy: &policy::Policy) -> Vec<Rule> {
        let markers: BTreeMap<(&str, usize), String> = hujson::Document::parse(&policy.text)
            .map(|doc| {
                crate::entitlement::rule_markers(&doc)
                    .into_iter()
                    .flat_map(|(name, at)| at.into_iter().map(move |a| (a, name.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let mut rules = Vec::new();
        for (i, a) in policy.file.acls.iter().flatten().enumerate() {
            rules.push(Rule {
                section: "acls".into(),
                index: i,
                line: policy.acl_lines.get(i).copied().unwrap_or(0),
                src: if a.src.is_empty() {
                    a.users.clone()
                } else {
                    a.src.clone()
                },
                dst: if a.dst.is_empty() {
                    a.ports.clone()
                } else {
                    a.dst.clone()
                },
                what: a.proto.iter().cloned().collect(),
                src_posture: Vec::new(),
                marker: markers.get(&("acls", i)).cloned(),
            });
        }
        for (i, g) in policy.file.grants.iter().flatten().enumerate() {
            rules.push(Rule {
                section: "grants".into(),
                index: i,
                line: policy.grant_lines.get(i).copied().unwrap_or(0),
                src: g.src.clone(),
                dst: g.dst.clone(),
                what: g.ip.clone(),
                src_posture: g.src_posture.clone(),
                marker: markers.get(&("grants", i)).cloned(),
            });
        }
        for (i, r) in policy.file.ssh.iter().enumerate() {
            rules.push(Rule {
                section: "ssh".into(),
                index: i,
                line: policy.ssh_lines.get(i).copied().unwrap_or(0),
                src: r.src.clone(),
                dst: r.dst.clone(),
                what: r.users.clone().unwrap_or_default(),
                src_posture: r.src_posture.clone(),
                marker: markers.get(&("ssh", i)).cloned(),
            });
        }
        rules
    }

    /// The snapshot's content hash, without times that move on their own. They are taken out
    /// for the hashing and put back, rather than hashing a copy: a large tailnet's snapshot is
    /// tens of megabytes.
    pub fn content_hash(&mut self) -> String {
        let taken_at = std::mem::take(&mut self.taken_at);
        let users: Vec<String> = self
            .users
            .iter_mut()
            .map(|u| std::mem::take(&mut u.last_seen))
            .collect();
        let devices: Vec<(String, bool)> = self
            .devices
            .iter_mut()
            .map(|d| {
                (
                    std::mem::take(&mut d.last_seen),
                    std::mem::take(&mut d.connected),
                )
            })
            .collect();
        let mut hasher = Sha256::new();
        let _ = serde_json::to_writer(&mut hasher, &*self);
        self.taken_at = taken_at;
        for (u, seen) in self.users.iter_mut().zip(users) {
            u.last_seen = seen;
        }
        for (d, (seen, connected)) in self.devices.iter_mut().zip(devices) {
            d.last_seen = seen;
            d.connected = connected;
        }
        hex::encode(hasher.finalize())
    }

    pub fn report(&self) -> SyncReport {
        SyncReport {
            at: self.taken_at.clone(),
            users: self.users.len(),
            devices: self.devices.len(),
            invites: self.invites.len(),
            keys: self.keys.len(),
            groups: self.groups.len(),
            rules: self.rules.len(),
            ..SyncReport::default()
        }
    }
}

/// Fields that move on their own and are not a change.
const VOLATILE: &[&str] = &["last_seen", "connected"];

/// The differences between two lists of one kind, keyed by subject. Items are compared as
/// they are; only a changed item is turned into JSON to name its fields.
fn compare<T: Serialize + PartialEq>(
    kind: &str,
    old: &[T],
    new: &[T],
    subject: impl Fn(&T) -> String,
    out: &mut Vec<Change>,
) {
    let old: BTreeMap<String, &T> = old.iter().map(|i| (subject(i), i)).collect();
    let new: BTreeMap<String, &T> = new.iter().map(|i| (subject(i), i)).collect();
    for (name, n) in &new {
        match old.get(name) {
            None => out.push(Change {
                kind: kind.into(),
                subject: name.clone(),
                change: "added".into(),
                fields: BTreeMap::new(),
            }),
            Some(o) if *o != *n => {
                let (o, n) = (
                    serde_json::to_value(o).unwrap_or(Value::Null),
                    serde_json::to_value(n).unwrap_or(Value::Null),
                );
                let mut fields = BTreeMap::new();
                match (&o, &n) {
                    (Value::Object(o), Value::Object(n)) => {
                        for (k, nv) in n {
                            let ov = o.get(k).cloned().unwrap_or(Value::Null);
                            if ov != *nv && !VOLATILE.contains(&k.as_str()) {
                                fields.insert(k.clone(), (ov, nv.clone()));
                            }
                        }
                    }
                    _ => {
                        fields.insert("value".into(), (o.clone(), n.clone()));
                    }
                }
                if !fields.is_empty() {
                    out.push(Change {
                        kind: kind.into(),
                        subject: name.clone(),
                        change: "changed".into(),
                        fields,
                    });
                }
            }
            Some(_) => {}
        }
    }
    for name in old.keys().filter(|s| !new.contains_key(*s)) {
        out.push(Change {
            kind: kind.into(),
            subject: name.clone(),
            change: "removed".into(),
            fields: BTreeMap::new(),
        });
    }
}

/// A map's entries as a list, for [`compare`].
fn entries<V: Clone>(map: &BTreeMap<String, V>) -> Vec<(String, V)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Every difference from `old` to `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Change> {
    let mut out = Vec::new();
    compare(
        "user",
        &old.users,
        &new.users,
        |u| u.login.clone(),
        &mut out,
    );
    let invite = |i: &InvInvite| {
        if i.email.is_empty() {
            i.id.clone()
        } else {
            i.email.clone()
        }
    };
    compare("invite", &old.invites, &new.invites, invite, &mut out);
    compare(
        "device",
        &old.devices,
        &new.devices,
        |d| d.hostname.clone(),
        &mut out,
    );
    compare("key", &old.keys, &new.keys, |k| k.id.clone(), &mut out);
    let key = |e: &(String, _)| e.0.clone();
    compare(
        "group",
        &entries(&old.groups),
        &entries(&new.groups),
        key,
        &mut out,
    );
    compare(
        "tag_owner",
        &entries(&old.tag_owners),
        &entries(&new.tag_owners),
        key,
        &mut out,
    );
    compare(
        "host",
        &entries(&old.hosts),
        &entries(&new.hosts),
        |e: &(String, String)| e.0.clone(),
        &mut out,
    );
    compare(
        "posture",
        &entries(&old.postures),
        &entries(&new.postures),
        key,
        &mut out,
    );
    let rule = |r: &Rule| format!("{}[{}]", r.section, r.index);
    compare("rule", &old.rules, &new.rules, rule, &mut out);
    out
}

impl Service {
    /// Reads the whole inventory from the tailnet (`progress` hears each part as it is read).
    /// A part that cannot be read (keys, invites, settings: scopes a credential may lack) is
    /// left empty and said in the warnings.
    pub async fn read_inventory(
        &self,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(Snapshot, Vec<String>), ServiceError> {
        let t = self.tailnet();
        let (users, devices, policy) = tokio::try_join!(t.users(), t.devices(), t.policy())?;
        progress("users, devices and policy read");
        let (keys, invites, settings) = tokio::join!(t.keys(), t.user_invites(), t.settings());
        progress("keys, invites and settings read");
        let mut warnings = Vec::new();
        let parsed = policy::Policy::parse(&policy.text).map_err(|e| {
            ServiceError::Invalid(format!("the tailnet's policy does not parse: {e}"))
        })?;
        let mut snap = Snapshot {
            taken_at: crate::time_text(self.now()),
            // Moved, not copied: a large tailnet's lists are big.
            users: users
                .into_iter()
                .map(|u| InvUser {
                    id: u.id,
                    login: u.login_name,
                    name: u.display_name,
                    role: u.role,
                    status: u.status,
                    kind: u.kind,
                    last_seen: u.last_seen,
                })
                .collect(),
            devices: devices
                .into_iter()
                .map(|d| InvDevice {
                    id: d.node_id,
                    name: d.name,
                    hostname: d.hostname,
                    owner: d.user,
                    tags: d.tags,
                    os: d.os,
                    last_seen: d.last_seen.unwrap_or_default(),
                    connected: d.connected_to_control,
                    expires: d.expires,
                    key_expiry_disabled: d.key_expiry_disabled,
                    authorized: d.authorized,
                    ephemeral: d.is_ephemeral,
                })
                .collect(),
            rules: Snapshot::rules_of(&parsed),
            groups: parsed.file.groups,
            tag_owners: parsed.file.tag_owners,
            hosts: parsed.file.hosts,
            postures: parsed.file.postures,
            ..Snapshot::default()
        };
        match keys {
            Ok(keys) => {
                snap.keys = keys
                    .iter()
                    .map(|k| InvKey {
                        id: k.id.clone(),
                        kind: k.key_type.clone(),
                        description: k.description.clone(),
                        created: k.created.clone(),
                        expires: k.expires.clone().unwrap_or_default(),
                        tags: k
                            .capabilities
                            .as_ref()
                            .map(|c| c.devices.create.tags.clone())
                            .or_else(|| k.tags.clone())
                            .unwrap_or_default(),
                        reusable: k
                            .capabilities
                            .as_ref()
                            .is_some_and(|c| c.devices.create.reusable),
                        user_id: k.user_id.clone().unwrap_or_default(),
                        invalid: k.invalid,
                    })
                    .collect();
            }
            Err(e) => {
                warnings.push(format!("keys: {e}"));
            }
        }
        match invites {
            Ok(invites) => {
                snap.invites = invites
                    .iter()
                    .map(|i| InvInvite {
                        id: i.id.clone(),
                        email: i.email.clone().unwrap_or_default(),
                        role: i.role.clone(),
                        last_email_sent_at: i.last_email_sent_at.clone().unwrap_or_default(),
                    })
                    .collect();
            }
            Err(e) => {
                warnings.push(format!("invites: {e}"));
            }
        }
        match settings {
            Ok(s) => snap.policy_managed_externally = s.acls_externally_managed_on,
            Err(e) => {
                warnings.push(format!("settings: {e}"));
            }
        }
        for w in &warnings {
            tracing::warn!(warning = %w, "inventory: a part could not be read; its last values are kept");
        }
        Ok((snap, warnings))
    }

    /// The latest stored snapshot, if any sync ran.
    pub async fn inventory(&self) -> Result<Option<Snapshot>, ServiceError> {
        match self.store().get_state(SNAPSHOT).await? {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ServiceError::Invalid(format!("stored inventory snapshot: {e}"))),
            None => Ok(None),
        }
    }

    /// The changes the last changing sync found.
    pub async fn inventory_changes(&self) -> Result<ChangeRecord, ServiceError> {
        match self.store().get_state(CHANGES).await? {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| ServiceError::Invalid(format!("stored inventory changes: {e}"))),
            None => Ok(ChangeRecord::default()),
        }
    }

    /// Syncs the inventory: reads it, compares it with the last snapshot, stores the snapshot
    /// and its changes when something changed, and a small record either way.
    pub async fn sync_inventory(
        &self,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<SyncReport, ServiceError> {
        Ok(self.sync_and_keep(progress).await?.0)
    }

    /// The last stored snapshot, or a sync's when none is stored yet.
    pub async fn inventory_or_sync(&self) -> Result<Snapshot, ServiceError> {
        match self.inventory().await? {
            Some(s) => Ok(s),
            None => Ok(self.sync_and_keep(&|_| {}).await?.1),
        }
    }

    /// A sync that also hands back the snapshot it read (the checks use it without reading
    /// it back from the store).
    pub async fn sync_and_keep(
        &self,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(SyncReport, Snapshot), ServiceError> {
        // The last snapshot is read only when needed (a part could not be read now, or
        // something changed): on a large tailnet it is tens of megabytes.
        let (mut snap, warnings) = self.read_inventory(progress).await?;
        let mut previous: Option<Option<Snapshot>> = None;
        if !warnings.is_empty() {
            let last = self.inventory().await?;
            if let Some(last) = &last {
                for w in &warnings {
                    match w.split(':').next() {
                        Some("keys") => snap.keys = last.keys.clone(),
                        Some("invites") => snap.invites = last.invites.clone(),
                        Some("settings") => {
                            snap.policy_managed_externally = last.policy_managed_externally
                        }
                        _ => {}
                    }
                }
            }
            previous = Some(last);
        }
        let hash = snap.content_hash();
        let previous_hash = self.store().get_state(HASH).await?;
        let mut report = snap.report();
        report.warnings = warnings;
        let at = snap.taken_at.clone();
        if previous_hash.as_deref() == Some(hash.as_str()) {
            report.unchanged = true;
        } else {
            let previous = match previous {
                Some(p) => p,
                None => self.inventory().await?,
            };
            let changes = match &previous {
                Some(p) => diff(p, &snap),
                // The first sync: everything is new; the diff would only repeat the snapshot.
                None => Vec::new(),
            };
            report.changes = changes.len();
            let record = ChangeRecord {
                at: at.clone(),
                previous_at: previous
                    .as_ref()
                    .map(|p| p.taken_at.clone())
                    .unwrap_or_default(),
                changes,
            };
            // The last snapshot goes before the new one is encoded: one fewer copy at the peak.
            drop(previous);
            self.store()
                .put_state(SNAPSHOT, &encode(&snap)?, &at)
                .await?;
            self.store()
                .put_state(CHANGES, &encode(&record)?, &at)
                .await?;
            self.store().put_state(HASH, &hash, &at).await?;
            for c in record.changes.iter().take(20) {
                tracing::info!(kind = %c.kind, subject = %c.subject, change = %c.change, "inventory change");
            }
        }
        let run = serde_json::json!({
            "at": at,
            "hash": hash,
            "unchanged": report.unchanged,
            "changes": report.changes,
            "users": report.users,
            "devices": report.devices,
        });
        // Keyed by time and a number claimed in the store: syncs within one second (from any
        // replica) keep a record each, in order.
        let text = run.to_string();
        let mut n = 0u32;
        while !self
            .store()
            .claim_state(&format!("{RUN}{at}.{n:04}"), &text, &at)
            .await?
        {
            n += 1;
        }
        tracing::info!(
            users = report.users,
            devices = report.devices,
            keys = report.keys,
            invites = report.invites,
            rules = report.rules,
            changes = report.changes,
            unchanged = report.unchanged,
            "inventory synced"
        );
        Ok((report, snap))
    }
}

/// JSON text of what a sync stores.
fn encode<T: Serialize>(value: &T) -> Result<String, ServiceError> {
    serde_json::to_string(value)
        .map_err(|e| ServiceError::Invalid(format!("cannot encode the inventory: {e}")))
}
