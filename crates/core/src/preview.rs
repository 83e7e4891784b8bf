//! "What it gives": before a request is sent or approved, the policy engine compares what the
//! requester can reach now with what they could reach with the grant, on the live policy and
//! inventory, and says it in plain words.

use std::collections::{BTreeMap, BTreeSet};

use crate::entitlement::{Entitlement, Strategy};
use crate::service::Service;
use policy::{Engine, Inventory, Policy, Reachable};

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
            if let Err(refusal) = crate::preflight::check(&live, &entitlement.strategy, login, &ids)
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
            Strategy::Group { .. } | Strategy::Rule { .. } => {
                let mut doc = hujson::Document::parse(&live.text).map_err(|e| e.to_string())?;
                let list = entitlement
                    .strategy
                    .policy_list()
                    .ok_or_else(|| "no policy list".to_owned())?;
                let located = list.locate(&doc)?;
                doc.add_strings(&located.path(), &[login])
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

/// The requester's devices a device grant can be set on (their own, untagged), among `names`
/// (all of them when none is named).
pub fn chosen_devices<'a>(
    all: &'a [tailnet::Device],
    login: &'a str,
    names: &'a [String],
) -> impl Iterator<Item = &'a tailnet::Device> {
    all.iter().filter(move |d| {
        d.user == login
            && d.tags.is_empty()
            && (names.is_empty() || names.iter().any(|n| crate::service::device_matches(d, n)))
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

/// Everything a person sees before asking for an entitlement: the read model of the request
/// form, `GET /api/entitlements/{name}/preview` and `tidegate preview`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestPreview {
    pub entitlement: String,
    pub description: String,
    pub requester: String,
    pub strategy: &'static str,
    pub default_duration: crate::Span,
    pub min_duration: crate::Span,
    pub max_duration: crate::Span,
    /// Presets within the entitlement's bounds, for quick choice.
    pub duration_presets: Vec<crate::Span>,
    pub reason_required: bool,
    pub break_glass_allowed: bool,
    /// The requester's devices a device grant can go on (posture and tag strategies).
    pub devices: Vec<DeviceChoice>,
    /// The devices the preview was worked out for (the chosen one, or all of them).
    pub for_devices: Vec<String>,
    /// What the grant adds, in plain statements.
    pub gives: Vec<String>,
    /// Approved as soon as asked: the requester matches `auto_approve`.
    pub auto_approved: bool,
    pub approvals: u32,
    pub approvers: Vec<String>,
    /// An active grant of the same entitlement the requester already holds ("extend instead?").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holding: Option<Holding>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceChoice {
    pub id: String,
    /// The short name (MagicDNS name's first label).
    pub name: String,
    pub hostname: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Holding {
    pub request: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<time::OffsetDateTime>,
}

impl Service {
    /// The preview of `entitlement` for `login`, on the chosen devices (all their own when
    /// none). Unknown entitlements get the service's "did you mean" error.
    pub async fn preview(
        &self,
        login: &str,
        entitlement: &str,
        devices: &[String],
    ) -> Result<RequestPreview, crate::service::ServiceError> {
        let e = self.entitlement(entitlement)?.clone();
        let eligible = self.entitlements_for(login).await?;
        if !eligible.iter().any(|x| x.name == e.name) {
            return Err(crate::service::ServiceError::Invalid(format!(
                "{login} may not request {}: not in its requesters",
                e.name
            )));
        }
        let live = self.live().await?;
        let takes_devices = matches!(e.strategy, Strategy::Posture { .. } | Strategy::Tag { .. });
        let choices: Vec<DeviceChoice> = if takes_devices {
            chosen_devices(&live.devices, login, &[])
                .map(|d| DeviceChoice {
                    id: d.node_id.clone(),
                    name: d.name.split('.').next().unwrap_or(&d.name).to_owned(),
                    hostname: d.hostname.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let chosen: Vec<String> = devices.iter().filter(|d| !d.is_empty()).cloned().collect();
        if let Some(unknown) = chosen
            .iter()
            .find(|n| !chosen_devices(&live.devices, login, std::slice::from_ref(*n)).any(|_| true))
        {
            return Err(crate::service::ServiceError::Invalid(format!(
                "{unknown:?} is not one of {login}'s own devices (tagged servers cannot take a personal grant); choose one of: {}",
                choices
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let for_devices = if takes_devices {
            chosen_devices(&live.devices, login, &chosen)
                .map(|d| d.name.split('.').next().unwrap_or(&d.name).to_owned())
                .collect()
        } else {
            Vec::new()
        };
        let gives = Snapshot::default()
            .what_it_gives(self, &e, login, &chosen)
            .await;
        let auto_approved = live.directory.matches_any(&e.auto_approve, login);
        let holding = self
            .store()
            .requests(&crate::store::RequestFilter {
                states: vec![crate::request::State::Active],
                requester: Some(login.to_owned()),
                entitlement: Some(e.name.clone()),
                limit: Some(1),
                ..Default::default()
            })
            .await?
            .into_iter()
            .next()
            .map(|r| Holding {
                request: r.id,
                expires_at: r.expires_at,
            });
        Ok(RequestPreview {
            entitlement: e.name.clone(),
            description: e.description.clone(),
            requester: login.to_owned(),
            strategy: e.strategy.name(),
            default_duration: e.default_duration,
            min_duration: e.min_duration,
            max_duration: e.max_duration,
            duration_presets: presets(e.min_duration, e.max_duration, e.default_duration),
            reason_required: matches!(e.reason, crate::entitlement::ReasonRule::Required),
            break_glass_allowed: e.break_glass,
            devices: choices,
            for_devices,
            gives,
            auto_approved,
            approvals: if auto_approved { 0 } else { e.approvals },
            approvers: e.approvers.iter().map(|s| s.to_string()).collect(),
            holding,
        })
    }
}

/// Common durations within `[min, max]`, with the default among them.
fn presets(min: crate::Span, max: crate::Span, default: crate::Span) -> Vec<crate::Span> {
    let mut out: Vec<crate::Span> = [15 * 60, 30 * 60, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86_400]
        .into_iter()
        .map(crate::Span::seconds)
        .filter(|s| s.as_secs() >= min.as_secs() && s.as_secs() <= max.as_secs())
        .collect();
    if !out.contains(&default) {
        out.push(default);
        out.sort_by_key(|s| s.as_secs());
    }
    out
}
