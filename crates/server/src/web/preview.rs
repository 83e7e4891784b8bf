//! "What it gives": before a request is sent or approved, the policy engine compares what the
//! requester can reach now with what they could reach with the grant, on the live policy and
//! inventory, and says it in plain words.

use std::collections::{BTreeMap, BTreeSet};

use policy::{Engine, Inventory, Policy, Reachable};
use tidegate_core::entitlement::{Entitlement, Strategy};
use tidegate_core::service::Service;

/// The live policy and inventory the statements are worked out on: read from the tailnet at
/// most once per page, and only when a statement needs them.
#[derive(Default)]
pub struct Snapshot(tokio::sync::OnceCell<Result<Live, String>>);

struct Live {
    text: String,
    policy: Policy,
    inventory: Inventory,
    devices: Vec<tailnet::Device>,
}

impl Snapshot {
    async fn live(&self, service: &Service) -> Result<&Live, String> {
        self.0
            .get_or_init(|| async {
                let text = service
                    .tailnet()
                    .policy()
                    .await
                    .map_err(|e| e.to_string())?
                    .text;
                let users = service.tailnet().users().await.map_err(|e| e.to_string())?;
                let devices = service
                    .tailnet()
                    .devices()
                    .await
                    .map_err(|e| e.to_string())?;
                let inventory: Inventory = serde_json::from_value(serde_json::json!({
                    "users": users,
                    "devices": devices,
                }))
                .map_err(|e| e.to_string())?;
                let policy = Policy::parse(&text).map_err(|e| e.to_string())?;
                Ok(Live {
                    text,
                    policy,
                    inventory,
                    devices,
                })
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Plain statements of the access a grant adds, or why that could not be worked out.
    pub async fn what_it_gives(
        &self,
        service: &Service,
        entitlement: &Entitlement,
        login: &str,
        devices: &[String],
    ) -> Vec<String> {
        // What the policy's own tests say comes first: such a request would be refused.
        if let Ok(live) = service.live().await {
            let ids: Vec<String> = chosen_devices(&live.devices, login, devices)
                .map(|d| d.node_id.clone())
                .collect();
            if let Err(refusal) =
                tidegate_core::preflight::check(&live, &entitlement.strategy, login, &ids)
            {
                return vec![format!("refused: {refusal}")];
            }
        }
        match self.compute(service, entitlement, login, devices).await {
            Ok(lines) if lines.is_empty() => {
                vec!["no new network access under the current policy".to_owned()]
            }
            Ok(lines) => lines,
            Err(e) => vec![format!("cannot work out what it gives: {e}")],
        }
    }

    async fn compute(
        &self,
        service: &Service,
        entitlement: &Entitlement,
        login: &str,
        devices: &[String],
    ) -> Result<Vec<String>, String> {
        match &entitlement.strategy {
            Strategy::Role { role } => {
                return Ok(vec![format!(
                    "the tailnet role {role} (the previous role comes back at the end)"
                )]);
            }
            Strategy::AuthKey { tags, .. } => {
                return Ok(vec![format!(
                    "an auth key that joins one device tagged {}",
                    tags.join(", ")
                )]);
            }
            _ => {}
        }
        let live = self.live(service).await?;
        let (parsed, inventory, all_devices) = (&live.policy, &live.inventory, &live.devices);
        // The live policy is parsed once; only the group strategy's edited text needs another.
        let engine = |policy: Policy, inventory: &Inventory| -> Result<Engine, String> {
            Engine::build(policy, inventory).map_err(|e| e.to_string())
        };
        let (before, after, ssh) = match &entitlement.strategy {
            Strategy::Group { group, .. } => {
                let mut doc = hujson::Document::parse(&live.text).map_err(|e| e.to_string())?;
                let path = [hujson::Seg::Key("groups"), hujson::Seg::Key(group)];
                doc.add_strings(&path, &[login])
                    .map_err(|e| e.to_string())?;
                let now = engine(parsed.clone(), inventory)?;
                let edited = Policy::parse(doc.text()).map_err(|e| e.to_string())?;
                let with = engine(edited, inventory)?;
                // SSH from one of the requester's own devices, if they have one.
                let ssh = all_devices
                    .iter()
                    .find(|d| d.user == login)
                    .map(|d| ssh_gained(&now, &with, &d.name, login, parsed))
                    .unwrap_or_default();
                (
                    now.reach(login).map_err(|e| e.to_string())?,
                    with.reach(login).map_err(|e| e.to_string())?,
                    ssh,
                )
            }
            Strategy::Posture { attribute, value } => {
                // From the requester's chosen devices (or all their own), with the attribute set.
                let mine: Vec<&tailnet::Device> =
                    chosen_devices(all_devices, login, devices).collect();
                let Some(first) = mine.first() else {
                    return Ok(vec![format!("{login} has no device this could be set on")]);
                };
                let mut with_attr = inventory.clone();
                let chosen: BTreeSet<&str> = mine.iter().map(|d| d.node_id.as_str()).collect();
                for d in &mut with_attr.devices {
                    if chosen.contains(d.node_id.as_str()) {
                        d.posture_attributes
                            .insert(attribute.clone(), value.clone());
                    }
                }
                let now = engine(parsed.clone(), inventory)?;
                let with = engine(parsed.clone(), &with_attr)?;
                (
                    now.reach(&first.name).map_err(|e| e.to_string())?,
                    with.reach(&first.name).map_err(|e| e.to_string())?,
                    ssh_gained(&now, &with, &first.name, login, parsed),
                )
            }
            Strategy::Tag { tag } => {
                // The requester's chosen devices (or all their own), carrying the tag.
                let mine: Vec<&tailnet::Device> =
                    chosen_devices(all_devices, login, devices).collect();
                let Some(first) = mine.first() else {
                    return Ok(vec![format!("{login} has no device this could be set on")]);
                };
                let mut tagged = inventory.clone();
                let chosen: BTreeSet<&str> = mine.iter().map(|d| d.node_id.as_str()).collect();
                for d in &mut tagged.devices {
                    if chosen.contains(d.node_id.as_str()) && !d.tags.contains(tag) {
                        d.tags.push(tag.clone());
                    }
                }
                let now = engine(parsed.clone(), inventory)?;
                let with = engine(parsed.clone(), &tagged)?;
                (
                    now.reach(&first.name).map_err(|e| e.to_string())?,
                    with.reach(&first.name).map_err(|e| e.to_string())?,
                    ssh_gained(&now, &with, &first.name, login, parsed),
                )
            }
            _ => return Ok(Vec::new()),
        };
        let mut lines = ssh;
        lines.extend(describe(&gained(&before, &after)));
        Ok(lines)
    }
}

/// The requester's devices among `names` (all of their own when none is named).
fn chosen_devices<'a>(
    all: &'a [tailnet::Device],
    login: &'a str,
    names: &'a [String],
) -> impl Iterator<Item = &'a tailnet::Device> {
    all.iter().filter(move |d| {
        d.user == login
            && (names.is_empty()
                || names
                    .iter()
                    .any(|n| tidegate_core::service::device_matches(d, n)))
    })
}

/// "SSH as ec2-user to 3 devices: db-1, db-2, api-1 (with a check)": the local users the grant
/// lets `login` SSH in as from device `src`, one line per user.
fn ssh_gained(now: &Engine, with: &Engine, src: &str, login: &str, policy: &Policy) -> Vec<String> {
    let (Some(src_now), Some(src_with)) = (now.find_device(src), with.find_device(src)) else {
        return Vec::new();
    };
    let named: BTreeSet<String> = policy
        .file
        .ssh
        .iter()
        .flat_map(|r| r.users.clone().unwrap_or_default())
        .collect();
    let mut users: BTreeSet<String> = named
        .iter()
        .filter(|u| !u.starts_with("autogroup:") && !u.starts_with("localpart:"))
        .cloned()
        .collect();
    if named
        .iter()
        .any(|u| u == "autogroup:nonroot" || u.starts_with("localpart:"))
        && let Some((local, _)) = login.split_once('@')
    {
        users.insert(local.to_owned());
    }
    let mut per_user: BTreeMap<(String, bool), Vec<String>> = BTreeMap::new();
    for name in with.device_names() {
        let (Some(dst_now), Some(dst_with)) = (now.find_device(name), with.find_device(name))
        else {
            continue;
        };
        for user in &users {
            if let Some((_, check)) = with.ssh_allows(src_with, dst_with, user)
                && now.ssh_allows(src_now, dst_now, user).is_none()
            {
                per_user
                    .entry((user.clone(), check))
                    .or_default()
                    .push(name.to_owned());
            }
        }
    }
    per_user
        .into_iter()
        .map(|((user, check), devices)| {
            let n = devices.len();
            let what = if n == 1 {
                "1 device".to_owned()
            } else {
                format!("{n} devices")
            };
            format!(
                "SSH as {user} to {what}: {}{}",
                devices.join(", "),
                if check { " (with a check)" } else { "" }
            )
        })
        .collect()
}

/// What `after` reaches that `before` does not, port by port.
fn gained(before: &[Reachable], after: &[Reachable]) -> Vec<(String, String, String)> {
    let key = |r: &Reachable| -> Vec<(String, String, String)> {
        r.ports
            .iter()
            .map(|p| (r.proto.clone(), p.clone(), format!("{}:{}", r.kind, r.name)))
            .collect()
    };
    let had: BTreeSet<_> = before.iter().flat_map(key).collect();
    after
        .iter()
        .flat_map(key)
        .filter(|k| !had.contains(k))
        .collect()
}

/// "TCP 22, 5432 to 2 devices: db-1, db-2", one line per set of ports.
fn describe(gained: &[(String, String, String)]) -> Vec<String> {
    // target → its new (proto, port)s; then targets grouped by identical port sets.
    let mut per_target: BTreeMap<&str, BTreeSet<(String, String)>> = BTreeMap::new();
    for (proto, port, target) in gained {
        per_target
            .entry(target.as_str())
            .or_default()
            .insert((proto.clone(), port.clone()));
    }
    let mut per_ports: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (target, ports) in per_target {
        let mut by_proto: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (proto, port) in &ports {
            by_proto
                .entry(proto.as_str())
                .or_default()
                .push(port.as_str());
        }
        let label = by_proto
            .iter()
            .map(|(proto, ports)| {
                let proto = if *proto == "any" {
                    "all protocols".to_owned()
                } else {
                    proto.to_uppercase()
                };
                let ports = if ports == &["*"] {
                    "all ports".to_owned()
                } else {
                    ports.join(", ")
                };
                format!("{proto} {ports}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        let name = target.split_once(':').map_or(target, |(_, n)| n);
        per_ports.entry(label).or_default().push(name.to_owned());
    }
    per_ports
        .into_iter()
        .map(|(ports, targets)| {
            let n = targets.len();
            let what = if n == 1 {
                "1 destination".to_owned()
            } else {
                format!("{n} destinations")
            };
            format!("{ports} to {what}: {}", targets.join(", "))
        })
        .collect()
}
