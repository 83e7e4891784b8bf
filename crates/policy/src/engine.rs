//! A validated policy indexed against an inventory: per-device packet filters and SSH rules in
//! Tailscale's wire format, and fast access checks.
//!
//! Rules are expanded once, at build time, into `Expansion`s (one per grant × `ip` entry, or
//! per ACL × destination), each with an interned, de-duplicated source set. An inverted index
//! maps each device to the destination entries that name it, so a device's filter or an access
//! check only looks at the rules that can concern it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde_json::Value as Json;

use crate::PolicyError;
use crate::inventory::Inventory;
use crate::ip::{self, Net};
use crate::model::Policy;
use crate::syntax::{Alias, AutoGroup, PortRange, parse_ports, parse_proto, split_host_ports};
use crate::validate::{parse_ip_spec, validate};
use crate::wire::{self, CapGrant, FilterRule, NetPortRange};

/// Where a rule came from, for answers that cite it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    pub section: Section,
    /// Index of the rule in its section.
    pub index: usize,
    /// 1-based line of the rule in the policy text (0 when unknown).
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Section {
    Acls,
    Grants,
    Ssh,
    /// The implicit allow-all of a policy with neither `acls` nor `grants`.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let section = match self.section {
            Section::Acls => "acls",
            Section::Grants => "grants",
            Section::Ssh => "ssh",
            Section::Default => return write!(f, "default allow-all (no acls or grants)"),
        };
        if self.line > 0 {
            write!(f, "{section}[{}] (line {})", self.index, self.line)
        } else {
            write!(f, "{section}[{}]", self.index)
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    pub name: String,
    pub ips: Vec<IpAddr>,
    /// Interned strings of `ips`.
    pub ip_ids: Vec<u32>,
    pub user: Option<u32>,
    pub tags: Vec<String>,
    /// Approved subnet routes, exit routes excluded.
    pub routes: Vec<Net>,
    pub exit: bool,
    /// Posture attributes, `node:os` and `node:tsVersion` included.
    pub attrs: BTreeMap<String, Json>,
}

#[derive(Debug, Clone)]
pub(crate) struct UserInfo {
    pub login: String,
    pub role: String,
    /// Untagged devices of the user.
    pub nodes: Vec<u32>,
}

/// A resolved source: interned address strings (sorted) plus the networks among them, for
/// containment checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SrcSet {
    pub ids: Vec<u32>,
    pub nets: Vec<Net>,
    pub all: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The `*` destination.
    Star,
    /// One address of a device: (device, index into its `ips`).
    NodeIp(u32, u8),
    Net(Net),
}

#[derive(Debug, Clone)]
pub(crate) enum ExpKind {
    Ports {
        dsts: Vec<(Target, PortRange)>,
        via: Vec<String>,
    },
    /// `autogroup:self` destinations: the ports; the addresses depend on the device.
    SelfPorts(Vec<PortRange>),
    /// App capabilities granted to `autogroup:self`.
    SelfCap(serde_json::Map<String, Json>),
    Cap {
        dsts: Vec<Target>,
        cap_map: serde_json::Map<String, Json>,
        via: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Expansion {
    pub origin: Origin,
    pub src: u32,
    pub proto: Vec<u8>,
    pub kind: ExpKind,
    /// Port rules with the same sources, protocols and `via` merge on the wire at the place
    /// of the first one: its position (this one's own if it is first).
    pub merge_first: u32,
}

/// An SSH rule with resolved sources.
#[derive(Debug, Clone)]
pub(crate) struct SshCompiled {
    pub origin: Origin,
    pub check: bool,
    /// Source devices, in principal order (a device can repeat, once per matching alias).
    pub src_nodes: Vec<u32>,
    pub dst: Vec<Alias>,
    pub users: Vec<String>,
    pub accept_env: Vec<String>,
}

/// A policy compiled for one inventory.
#[derive(Debug, Clone)]
pub struct Engine {
    pub policy: Policy,
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) users: Vec<UserInfo>,
    pub(crate) user_index: HashMap<String, u32>,
    pub(crate) node_index: HashMap<String, u32>,
    pub(crate) ip_index: HashMap<IpAddr, u32>,
    /// The device of each interned device address (device addresses are interned first).
    pub(crate) id_node: Vec<u32>,
    pub(crate) strings: Vec<String>,
    string_ids: HashMap<String, u32>,
    pub(crate) src_sets: Vec<SrcSet>,
    src_set_ids: HashMap<SrcSet, u32>,
    pub(crate) expansions: Vec<Expansion>,
    /// Per device: (expansion, destination entry) pairs that name one of its addresses.
    pub(crate) node_hits: Vec<Vec<(u32, u32)>>,
    /// Entries whose destination is `*`.
    pub(crate) star_hits: Vec<(u32, u32)>,
    /// Devices carrying each tag.
    pub(crate) tag_nodes: HashMap<String, Vec<u32>>,
    /// Expansions with `autogroup:self` destinations.
    pub(crate) self_exps: Vec<u32>,
    pub(crate) ssh: Vec<SshCompiled>,
    hosts: HashMap<String, Net>,
    postures: HashMap<String, Vec<crate::posture::Condition>>,
}

impl Engine {
    /// Validates `policy` and compiles it for `inventory`.
    pub fn build(policy: Policy, inventory: &Inventory) -> Result<Engine, PolicyError> {
        let domains = inventory.domains();
        validate(&policy, &domains)?;
        let mut engine = Engine {
            nodes: Vec::new(),
            users: Vec::new(),
            user_index: HashMap::new(),
            node_index: HashMap::new(),
            ip_index: HashMap::new(),
            id_node: Vec::new(),
            strings: Vec::new(),
            string_ids: HashMap::new(),
            src_sets: Vec::new(),
            src_set_ids: HashMap::new(),
            expansions: Vec::new(),
            node_hits: Vec::new(),
            star_hits: Vec::new(),
            tag_nodes: HashMap::new(),
            self_exps: Vec::new(),
            ssh: Vec::new(),
            hosts: HashMap::new(),
            postures: HashMap::new(),
            policy,
        };
        engine.load_inventory(inventory)?;
        engine.id_node = vec![u32::MAX; engine.strings.len()];
        for (n, node) in engine.nodes.iter().enumerate() {
            for &id in &node.ip_ids {
                engine.id_node[id as usize] = n as u32;
            }
        }
        for (name, address) in &engine.policy.file.hosts {
            if let Some(net) = Net::parse(address) {
                engine.hosts.insert(name.clone(), net);
            }
        }
        for (name, conditions) in &engine.policy.file.postures {
            let parsed = conditions
                .iter()
                .filter_map(|c| crate::posture::Condition::parse(c).ok())
                .collect();
            engine.postures.insert(name.clone(), parsed);
        }
        engine.expand_rules()?;
        engine.index();
        engine.compile_ssh()?;
        Ok(engine)
    }

    fn intern(&mut self, text: String) -> u32 {
        if let Some(&id) = self.string_ids.get(&text) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(text.clone());
        self.string_ids.insert(text, id);
        id
    }

    fn load_inventory(&mut self, inventory: &Inventory) -> Result<(), PolicyError> {
        for user in &inventory.users {
            let id = self.users.len() as u32;
            self.user_index.insert(user.login_name.clone(), id);
            self.users.push(UserInfo {
                login: user.login_name.clone(),
                role: user.role.clone(),
                nodes: Vec::new(),
            });
        }
        for device in &inventory.devices {
            let id = self.nodes.len() as u32;
            let mut ips = Vec::new();
            for address in &device.addresses {
                let ip: IpAddr = address.parse().map_err(|_| {
                    PolicyError::Inventory(format!(
                        "device {:?}: address {address:?} is not an IP address",
                        device.name
                    ))
                })?;
                ips.push(ip);
            }
            let ip_ids = ips.iter().map(|ip| self.intern(ip.to_string())).collect();
            for ip in &ips {
                self.ip_index.insert(*ip, id);
            }
            let mut routes = Vec::new();
            let mut exit = false;
            for route in &device.enabled_routes {
                let net = Net::parse(route).ok_or_else(|| {
                    PolicyError::Inventory(format!(
                        "device {:?}: route {route:?} is not a CIDR prefix",
                        device.name
                    ))
                })?;
                if net.is_all() {
                    exit = true;
                } else {
                    routes.push(net);
                }
            }
            let user = if device.tags.is_empty() && !device.user.is_empty() {
                let user = match self.user_index.get(&device.user) {
                    Some(&u) => u,
                    None => {
                        // A device of a user missing from the user list still belongs to them.
                        let u = self.users.len() as u32;
                        self.user_index.insert(device.user.clone(), u);
                        self.users.push(UserInfo {
                            login: device.user.clone(),
                            role: String::new(),
                            nodes: Vec::new(),
                        });
                        u
                    }
                };
                self.users[user as usize].nodes.push(id);
                Some(user)
            } else {
                None
            };
            for name in [&device.name, &device.hostname, &device.id, &device.node_id] {
                if !name.is_empty() {
                    self.node_index.entry(name.clone()).or_insert(id);
                }
            }
            if let Some((short, _)) = device.name.split_once('.') {
                self.node_index.entry(short.to_owned()).or_insert(id);
            }
            for tag in &device.tags {
                self.tag_nodes.entry(tag.clone()).or_default().push(id);
            }
            let mut attrs = device.posture_attributes.clone();
            if !device.os.is_empty() {
                attrs
                    .entry("node:os".to_owned())
                    .or_insert_with(|| Json::from(device.os.to_lowercase()));
            }
            if !device.client_version.is_empty() {
                let version = device.client_version.split('-').next().unwrap_or_default();
                attrs
                    .entry("node:tsVersion".to_owned())
                    .or_insert_with(|| Json::from(version));
            }
            self.nodes.push(NodeInfo {
                name: device.name.clone(),
                ips,
                ip_ids,
                user,
                tags: device.tags.clone(),
                routes,
                exit,
                attrs,
            });
        }
        Ok(())
    }

    /// Users an alias names (for user-like aliases).
    pub(crate) fn alias_users(&self, alias: &Alias) -> Vec<u32> {
        let file = &self.policy.file;
        match alias {
            Alias::User(login) => self.user_index.get(login).copied().into_iter().collect(),
            Alias::UserDomain(domain) => (0..self.users.len() as u32)
                .filter(|&u| {
                    self.users[u as usize]
                        .login
                        .rsplit_once('@')
                        .is_some_and(|(_, d)| d == domain)
                })
                .collect(),
            Alias::Group(group) => {
                let mut out: Vec<u32> = Vec::new();
                for member in file.groups.get(group).into_iter().flatten() {
                    if let Ok(a) = Alias::parse(member) {
                        for u in self.alias_users(&a) {
                            if !out.contains(&u) {
                                out.push(u);
                            }
                        }
                    }
                }
                out
            }
            Alias::AutoGroup(AutoGroup::Member) => (0..self.users.len() as u32).collect(),
            Alias::AutoGroup(AutoGroup::Role(role)) => (0..self.users.len() as u32)
                .filter(|&u| {
                    let r = self.users[u as usize].role.as_str();
                    r == *role || (*role == "admin" && r == "owner")
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Devices an alias names by identity (users' untagged devices, tagged devices), in
    /// inventory order per user.
    pub(crate) fn alias_nodes(&self, alias: &Alias) -> Vec<u32> {
        match alias {
            Alias::Tag(tag) => self.tag_nodes.get(tag).cloned().unwrap_or_default(),
            Alias::AutoGroup(AutoGroup::Tagged) => (0..self.nodes.len() as u32)
                .filter(|&n| !self.nodes[n as usize].tags.is_empty())
                .collect(),
            Alias::AutoGroup(AutoGroup::Member) => (0..self.nodes.len() as u32)
                .filter(|&n| self.nodes[n as usize].user.is_some())
                .collect(),
            _ => self
                .alias_users(alias)
                .into_iter()
                .flat_map(|u| self.users[u as usize].nodes.clone())
                .collect(),
        }
    }

    /// Networks an alias names literally (hosts, CIDRs, ipsets, autogroup:internet).
    pub(crate) fn alias_nets(&self, alias: &Alias) -> Vec<Net> {
        match alias {
            Alias::Net(net) => vec![*net],
            Alias::Host(host) => self.hosts.get(host).copied().into_iter().collect(),
            Alias::AutoGroup(AutoGroup::Internet) => ip::internet(),
            Alias::IpSet(name) => self.ipset(name, 0),
            _ => Vec::new(),
        }
    }

    fn ipset(&self, name: &str, depth: usize) -> Vec<Net> {
        let mut nets: Vec<Net> = Vec::new();
        if depth > 16 {
            return nets;
        }
        for op in self.policy.file.ipsets.get(name).into_iter().flatten() {
            let (remove, target) = match op.strip_prefix("remove ") {
                Some(t) => (true, t),
                None => (false, op.strip_prefix("add ").unwrap_or(op)),
            };
            let targets = match Alias::parse(target) {
                Ok(Alias::IpSet(inner)) => self.ipset(&inner, depth + 1),
                Ok(a) => self.alias_nets(&a),
                Err(_) => Vec::new(),
            };
            if remove {
                for t in targets {
                    nets = nets.into_iter().flat_map(|n| subtract(n, t)).collect();
                }
            } else {
                nets.extend(targets);
            }
        }
        nets
    }

    /// The postures that apply to a rule: its own `srcPosture`, else `defaultSrcPosture`.
    fn effective_postures(&self, own: &[String]) -> Vec<String> {
        if own.is_empty() {
            self.policy.file.default_src_posture.clone()
        } else {
            own.to_vec()
        }
    }

    /// Does device `n` satisfy at least one of `postures` (trivially, if there are none)?
    pub(crate) fn posture_ok(&self, n: u32, postures: &[String]) -> bool {
        postures.is_empty()
            || postures.iter().any(|p| {
                self.postures.get(p).is_some_and(|conditions| {
                    conditions
                        .iter()
                        .all(|c| c.holds(&self.nodes[n as usize].attrs))
                })
            })
    }

    /// Resolves a rule's sources into an interned source set; with postures, only devices
    /// that satisfy one of them count.
    fn src_set(&mut self, srcs: &[String], postures: &[String]) -> u32 {
        let mut ids: Vec<u32> = Vec::new();
        let mut nets: Vec<Net> = Vec::new();
        let mut all = false;
        for text in srcs {
            let Ok(alias) = Alias::parse(text) else {
                continue;
            };
            match &alias {
                Alias::Wildcard => {
                    let mut space: Vec<Net> = ip::tailnet_space().to_vec();
                    for node in &self.nodes {
                        space.extend(node.routes.iter().copied());
                    }
                    nets.extend(space);
                }
                Alias::AutoGroup(AutoGroup::DangerAll) => {
                    all = true;
                    let id = self.intern("*".to_owned());
                    ids.push(id);
                }
                _ => {
                    for n in self.alias_nodes(&alias) {
                        if self.posture_ok(n, postures) {
                            ids.extend(self.nodes[n as usize].ip_ids.iter().copied());
                        }
                    }
                    nets.extend(self.alias_nets(&alias));
                }
            }
        }
        for net in &nets {
            let id = self.intern(net.to_string());
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        nets.sort();
        nets.dedup();
        let set = SrcSet { ids, nets, all };
        if let Some(&id) = self.src_set_ids.get(&set) {
            return id;
        }
        let id = self.src_sets.len() as u32;
        self.src_sets.push(set.clone());
        self.src_set_ids.insert(set, id);
        id
    }

    fn dst_targets(&self, alias: &Alias) -> Vec<Target> {
        if *alias == Alias::Wildcard {
            return vec![Target::Star];
        }
        let mut out = Vec::new();
        for n in self.alias_nodes(alias) {
            for i in 0..self.nodes[n as usize].ips.len() {
                out.push(Target::NodeIp(n, i as u8));
            }
        }
        out.extend(self.alias_nets(alias).into_iter().map(Target::Net));
        out
    }

    fn push_expansion(&mut self, origin: Origin, src: u32, proto: Vec<u8>, kind: ExpKind) {
        self.expansions.push(Expansion {
            origin,
            src,
            proto,
            kind,
            merge_first: self.expansions.len() as u32,
        });
    }

    /// An app grant: the capability rule, then for `drive` and `relay` the reversed companion
    /// rule the peers need (`drive-sharer`, `relay-target`).
    fn expand_app(
        &mut self,
        origin: Origin,
        src: u32,
        grant: &crate::model::Grant,
        dst_aliases: &[Alias],
        app: &serde_json::Map<String, Json>,
    ) {
        let self_dst = Alias::AutoGroup(AutoGroup::SelfDevices);
        let dsts: Vec<Target> = dst_aliases
            .iter()
            .filter(|a| **a != self_dst)
            .flat_map(|a| self.dst_targets(a))
            .collect();
        let has_self = dst_aliases.contains(&self_dst);
        let has_other = dst_aliases.iter().any(|a| *a != self_dst);
        let via = grant.via.clone();
        if has_other {
            let kind = ExpKind::Cap {
                dsts,
                cap_map: app.clone(),
                via: via.clone(),
            };
            self.push_expansion(origin, src, Vec::new(), kind);
        }
        if has_self {
            self.push_expansion(origin, src, Vec::new(), ExpKind::SelfCap(app.clone()));
        }
        const COMPANIONS: [(&str, &str); 2] = [
            ("tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"),
            ("tailscale.com/cap/relay", "tailscale.com/cap/relay-target"),
        ];
        for (cap, companion) in COMPANIONS {
            if !app.contains_key(cap) {
                continue;
            }
            let mut cap_map = serde_json::Map::new();
            cap_map.insert(companion.to_owned(), Json::Null);
            if has_other {
                let other_dsts: Vec<String> = grant
                    .dst
                    .iter()
                    .filter(|d| Alias::parse(d).ok().as_ref() != Some(&self_dst))
                    .cloned()
                    .collect();
                let reversed_src = self.src_set(&other_dsts, &[]);
                let reversed_dsts = grant
                    .src
                    .iter()
                    .filter_map(|s| Alias::parse(s).ok())
                    .flat_map(|a| self.dst_targets(&a))
                    .collect();
                let kind = ExpKind::Cap {
                    dsts: reversed_dsts,
                    cap_map: cap_map.clone(),
                    via: via.clone(),
                };
                self.push_expansion(origin, reversed_src, Vec::new(), kind);
            }
            if has_self {
                self.push_expansion(origin, src, Vec::new(), ExpKind::SelfCap(cap_map));
            }
        }
    }

    fn expand_rules(&mut self) -> Result<(), PolicyError> {
        let file = self.policy.file.clone();
        // Grants first, then ACLs, each in policy order.
        for (index, grant) in file.grants.iter().flatten().enumerate() {
            let origin = Origin {
                section: Section::Grants,
                index,
                line: self.policy.grant_lines.get(index).copied().unwrap_or(0),
            };
            let postures = self.effective_postures(&grant.src_posture);
            let src = self.src_set(&grant.src, &postures);
            let dst_aliases: Vec<Alias> = grant
                .dst
                .iter()
                .filter_map(|d| Alias::parse(d).ok())
                .collect();
            for spec in &grant.ip {
                let (proto, ranges) = parse_ip_spec(spec).map_err(PolicyError::Invalid)?;
                let mut dsts = Vec::new();
                let mut self_ports = false;
                for alias in &dst_aliases {
                    if *alias == Alias::AutoGroup(AutoGroup::SelfDevices) {
                        self_ports = true;
                        continue;
                    }
                    for target in self.dst_targets(alias) {
                        for &range in &ranges {
                            dsts.push((target, range));
                        }
                    }
                }
                let via = grant.via.clone();
                self.push_expansion(origin, src, proto.clone(), ExpKind::Ports { dsts, via });
                if self_ports {
                    self.push_expansion(origin, src, proto, ExpKind::SelfPorts(ranges.clone()));
                }
            }
            if let Some(app) = &grant.app
                && !app.is_empty()
            {
                self.expand_app(origin, src, grant, &dst_aliases, app);
            }
        }
        let default_acl;
        let acls: Vec<(Section, &crate::model::Acl)> = match (&file.acls, &file.grants) {
            (None, None) => {
                default_acl = crate::model::Acl {
                    action: "accept".to_owned(),
                    src: vec!["*".to_owned()],
                    dst: vec!["*:*".to_owned()],
                    ..Default::default()
                };
                vec![(Section::Default, &default_acl)]
            }
            (acls, _) => acls.iter().flatten().map(|a| (Section::Acls, a)).collect(),
        };
        for (index, (section, acl)) in acls.into_iter().enumerate() {
            let origin = Origin {
                section,
                index,
                line: self.policy.acl_lines.get(index).copied().unwrap_or(0),
            };
            let srcs = if acl.src.is_empty() {
                &acl.users
            } else {
                &acl.src
            };
            let postures = self.effective_postures(&acl.src_posture);
            let src = self.src_set(srcs, &postures);
            let proto = match &acl.proto {
                Some(p) if !p.is_empty() => parse_proto(p).map_err(PolicyError::Invalid)?,
                _ => Vec::new(),
            };
            let dsts = if acl.dst.is_empty() {
                &acl.ports
            } else {
                &acl.dst
            };
            // Self destinations go last when the ACL also names something that is not an
            // autogroup; otherwise every destination keeps its place.
            let defer_self = dsts.iter().any(|d| {
                split_host_ports(d)
                    .and_then(|(host, _)| Alias::parse(&host).ok())
                    .is_some_and(|a| !matches!(a, Alias::AutoGroup(_)))
            });
            let mut self_dsts = Vec::new();
            for dst in dsts {
                let Some((host, ports)) = split_host_ports(dst) else {
                    continue;
                };
                let ranges = parse_ports(ports).map_err(PolicyError::Invalid)?;
                let Ok(alias) = Alias::parse(&host) else {
                    continue;
                };
                if alias == Alias::AutoGroup(AutoGroup::SelfDevices) {
                    if defer_self {
                        self_dsts.push(ranges);
                    } else {
                        self.push_expansion(origin, src, proto.clone(), ExpKind::SelfPorts(ranges));
                    }
                    continue;
                }
                let mut entries = Vec::new();
                for target in self.dst_targets(&alias) {
                    for &range in &ranges {
                        entries.push((target, range));
                    }
                }
                let kind = ExpKind::Ports {
                    dsts: entries,
                    via: Vec::new(),
                };
                self.push_expansion(origin, src, proto.clone(), kind);
            }
            for ranges in self_dsts {
                self.push_expansion(origin, src, proto.clone(), ExpKind::SelfPorts(ranges));
            }
        }
        let mut first: HashMap<(u32, Vec<u8>, Vec<String>), u32> = HashMap::new();
        for (position, exp) in self.expansions.iter_mut().enumerate() {
            if let ExpKind::Ports { via, .. } = &exp.kind {
                exp.merge_first = *first
                    .entry((exp.src, exp.proto.clone(), via.clone()))
                    .or_insert(position as u32);
            }
        }
        Ok(())
    }

    /// Builds the inverted index: for each device, the destination entries that concern it.
    fn index(&mut self) {
        self.node_hits = vec![Vec::new(); self.nodes.len()];
        // Every device address, sorted, to find the devices inside a network quickly.
        let mut addresses: Vec<(bool, u128, u32)> = Vec::with_capacity(self.nodes.len() * 2);
        for (n, node) in self.nodes.iter().enumerate() {
            for ip in &node.ips {
                let net = Net::addr(*ip);
                addresses.push((net.v6, net.first, n as u32));
            }
        }
        addresses.sort_unstable();
        // Devices that route for others (subnet routers, exit nodes).
        let routers: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&n| !self.nodes[n as usize].routes.is_empty() || self.nodes[n as usize].exit)
            .collect();
        let mut hit_nodes: Vec<u32> = Vec::new();
        for e in 0..self.expansions.len() {
            let exp = &self.expansions[e];
            let (targets, via): (Vec<Target>, &[String]) = match &exp.kind {
                ExpKind::Ports { dsts, via } => (dsts.iter().map(|(t, _)| *t).collect(), via),
                ExpKind::Cap { dsts, via, .. } => (dsts.clone(), via),
                ExpKind::SelfPorts(_) | ExpKind::SelfCap(_) => {
                    self.self_exps.push(e as u32);
                    continue;
                }
            };
            for (k, target) in targets.iter().enumerate() {
                let hit = (e as u32, k as u32);
                hit_nodes.clear();
                if !via.is_empty() {
                    for tag in via {
                        for &n in self.tag_nodes.get(tag).into_iter().flatten() {
                            if self.target_hits(n, target, via) {
                                hit_nodes.push(n);
                            }
                        }
                    }
                } else {
                    match target {
                        Target::Star => {
                            self.star_hits.push(hit);
                            continue;
                        }
                        Target::NodeIp(n, _) => hit_nodes.push(*n),
                        Target::Net(net) => {
                            let from =
                                addresses.partition_point(|a| (a.0, a.1) < (net.v6, net.first));
                            for a in &addresses[from..] {
                                if (a.0, a.1) > (net.v6, net.last) {
                                    break;
                                }
                                hit_nodes.push(a.2);
                            }
                            for &n in &routers {
                                if self.target_hits(n, target, via) {
                                    hit_nodes.push(n);
                                }
                            }
                        }
                    }
                }
                hit_nodes.sort_unstable();
                hit_nodes.dedup();
                for &n in &hit_nodes {
                    self.node_hits[n as usize].push(hit);
                }
            }
        }
    }

    /// Does a destination target concern device `n` (and which of its addresses or routes)?
    pub(crate) fn target_hits(&self, n: u32, target: &Target, via: &[String]) -> bool {
        let node = &self.nodes[n as usize];
        if !via.is_empty() {
            if !node.tags.iter().any(|t| via.contains(t)) {
                return false;
            }
            return match target {
                Target::Net(net) => {
                    node.routes.iter().any(|r| r.overlaps(net))
                        || (node.exit && ip::internet().iter().any(|i| i.covers(net)))
                }
                _ => false,
            };
        }
        match target {
            Target::Star => true,
            Target::NodeIp(m, _) => *m == n,
            Target::Net(net) => {
                node.ips.iter().any(|ip| net.contains_ip(*ip))
                    || node.routes.iter().any(|r| r.overlaps(net))
                    || (node.exit && ip::internet().iter().any(|i| i.covers(net)))
            }
        }
    }

    pub(crate) fn src_contains(&self, set: u32, ip: IpAddr) -> bool {
        let set = &self.src_sets[set as usize];
        if set.all {
            return true;
        }
        if let Some(&n) = self.ip_index.get(&ip) {
            let node = &self.nodes[n as usize];
            if let Some(pos) = node.ips.iter().position(|a| *a == ip)
                && set.ids.binary_search(&node.ip_ids[pos]).is_ok()
            {
                return true;
            }
        }
        set.nets.iter().any(|net| net.contains_ip(ip))
    }

    /// The strings of a source set, in the control plane's order.
    fn src_strings(&self, ids: &[u32]) -> Vec<String> {
        let mut out: Vec<String> = ids
            .iter()
            .map(|&i| self.strings[i as usize].clone())
            .collect();
        out.sort();
        out
    }

    /// `autogroup:self` sources for device `n`: the source set narrowed to the addresses of
    /// the device owner's untagged devices.
    fn self_src_ids(&self, set: u32, n: u32) -> Vec<u32> {
        let Some(user) = self.nodes[n as usize].user else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        for &m in &self.users[user as usize].nodes {
            let node = &self.nodes[m as usize];
            for (i, ip) in node.ips.iter().enumerate() {
                if self.src_contains(set, *ip) {
                    ids.push(node.ip_ids[i]);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Every (expansion, entry) that concerns device `n`, sorted.
    pub(crate) fn hits_for(&self, n: u32) -> Vec<(u32, u32)> {
        let mut hits = self.node_hits[n as usize].clone();
        hits.extend_from_slice(&self.star_hits);
        hits.sort_unstable();
        hits
    }

    fn target_string(&self, target: &Target) -> String {
        match target {
            Target::Star => "*".to_owned(),
            Target::NodeIp(n, i) => {
                self.strings[self.nodes[*n as usize].ip_ids[*i as usize] as usize].clone()
            }
            Target::Net(net) => net.to_string(),
        }
    }

    /// The packet filter device `n` receives. Rules are emitted in expansion order; port
    /// rules with the same sources and protocols merge into the first one on this device.
    pub(crate) fn filter_for(&self, n: u32) -> Vec<FilterRule> {
        let node = &self.nodes[n as usize];
        let mut hits = self.hits_for(n);
        if node.user.is_some() {
            hits.extend(self.self_exps.iter().map(|&e| (e, u32::MAX)));
            hits.sort_unstable();
        }
        // Rules by position; port rules of one merge group share the first one's position.
        let mut rules: BTreeMap<u32, (Vec<u32>, FilterRule)> = BTreeMap::new();
        let port = |first: u16, last: u16| wire::PortRange { first, last };
        let own_dsts = || -> Vec<String> {
            node.ips
                .iter()
                .map(|ip| Net::addr(*ip).cidr_string())
                .collect()
        };
        let new_rule = |ids: &[u32], proto: &[u8], cap: Option<CapGrant>| FilterRule {
            src_ips: self.src_strings(ids),
            dst_ports: Vec::new(),
            ip_proto: proto.to_vec(),
            cap_grant: cap.into_iter().collect(),
        };
        // Narrowed `autogroup:self` rules, keyed as in `rules`; and where each merge group of
        // port rules landed on this device.
        let mut self_keys: Vec<u32> = Vec::new();
        let mut landed: HashMap<u32, u32> = HashMap::new();
        for (e, k) in hits {
            let exp = &self.expansions[e as usize];
            let ids = &self.src_sets[exp.src as usize].ids;
            match &exp.kind {
                ExpKind::Ports { dsts, .. } => {
                    let (target, (first, last)) = &dsts[k as usize];
                    // A self rule placed earlier whose narrowed sources are exactly these has
                    // the same SrcIPs on the wire, so the control plane merges into it.
                    let key = *landed.entry(exp.merge_first).or_insert_with(|| {
                        self_keys
                            .iter()
                            .copied()
                            .find(|key| {
                                rules.get(key).is_some_and(|(other, r)| {
                                    other == ids && r.ip_proto == exp.proto
                                })
                            })
                            .unwrap_or(exp.merge_first)
                    });
                    let (_, rule) = rules
                        .entry(key)
                        .or_insert_with(|| (ids.clone(), new_rule(ids, &exp.proto, None)));
                    rule.dst_ports.push(NetPortRange {
                        ip: self.target_string(target),
                        ports: port(*first, *last),
                    });
                }
                ExpKind::SelfPorts(ranges) => {
                    let ids = self.self_src_ids(exp.src, n);
                    if ids.is_empty() {
                        continue;
                    }
                    let mut entries = Vec::new();
                    for &id in &node.ip_ids {
                        for &(first, last) in ranges {
                            entries.push(NetPortRange {
                                ip: self.strings[id as usize].clone(),
                                ports: port(first, last),
                            });
                        }
                    }
                    // Merges with a rule of this device that has the very same sources.
                    let same = rules.iter().find(|(_, (other, r))| {
                        *other == ids && r.ip_proto == exp.proto && r.cap_grant.is_empty()
                    });
                    let key = same.map_or(e, |(key, _)| *key);
                    if same.is_none() {
                        self_keys.push(key);
                    }
                    let (_, rule) = rules
                        .entry(key)
                        .or_insert_with(|| (ids.clone(), new_rule(&ids, &exp.proto, None)));
                    rule.dst_ports.extend(entries);
                }
                ExpKind::Cap { dsts, cap_map, .. } => {
                    let dst = match &dsts[k as usize] {
                        Target::Net(net) if !node.ips.iter().any(|ip| net.contains_ip(*ip)) => {
                            vec![net.cidr_string()]
                        }
                        Target::NodeIp(m, i) => {
                            vec![Net::addr(self.nodes[*m as usize].ips[*i as usize]).cidr_string()]
                        }
                        _ => own_dsts(),
                    };
                    let (_, rule) = rules.entry(e).or_insert_with(|| {
                        let cap = CapGrant {
                            dsts: Vec::new(),
                            cap_map: cap_map.clone(),
                        };
                        (ids.clone(), new_rule(ids, &[], Some(cap)))
                    });
                    if let Some(grant) = rule.cap_grant.first_mut() {
                        for d in dst {
                            if !grant.dsts.contains(&d) {
                                grant.dsts.push(d);
                            }
                        }
                    }
                }
                ExpKind::SelfCap(cap_map) => {
                    let ids = self.self_src_ids(exp.src, n);
                    if ids.is_empty() {
                        continue;
                    }
                    let cap = CapGrant {
                        dsts: own_dsts(),
                        cap_map: cap_map.clone(),
                    };
                    rules.insert(e, (Vec::new(), new_rule(&ids, &[], Some(cap))));
                }
            }
        }
        let mut rules: Vec<FilterRule> = rules.into_values().map(|(_, r)| r).collect();
        rules.retain(|r| !r.src_ips.is_empty());
        rules
    }

    fn compile_ssh(&mut self) -> Result<(), PolicyError> {
        let rules = self.policy.file.ssh.clone();
        let mut compiled = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let origin = Origin {
                section: Section::Ssh,
                index,
                line: self.policy.ssh_lines.get(index).copied().unwrap_or(0),
            };
            let postures = self.effective_postures(&rule.src_posture);
            let mut src_nodes = Vec::new();
            for src in &rule.src {
                match Alias::parse(src) {
                    // Each tag of a tagged device makes it a principal once more.
                    Ok(Alias::AutoGroup(AutoGroup::Tagged)) => {
                        for n in self.alias_nodes(&Alias::AutoGroup(AutoGroup::Tagged)) {
                            let count = self.nodes[n as usize].tags.len();
                            src_nodes.extend(std::iter::repeat_n(n, count));
                        }
                    }
                    Ok(alias) => src_nodes.extend(self.alias_nodes(&alias)),
                    Err(_) => {}
                }
            }
            src_nodes.retain(|&n| self.posture_ok(n, &postures));
            compiled.push(SshCompiled {
                origin,
                check: rule.action.as_deref().map(str::trim) == Some("check"),
                src_nodes,
                dst: rule
                    .dst
                    .iter()
                    .filter_map(|d| Alias::parse(d).ok())
                    .collect(),
                users: rule
                    .users
                    .iter()
                    .flatten()
                    .map(|u| u.trim().to_owned())
                    .collect(),
                accept_env: rule.accept_env.clone().unwrap_or_default(),
            });
        }
        // Check rules come before accept rules.
        compiled.sort_by_key(|r| !r.check);
        self.ssh = compiled;
        Ok(())
    }

    /// Does SSH rule `rule`'s destination include device `n`? Returns the allowed source
    /// devices, narrowed for `autogroup:self`.
    pub(crate) fn ssh_sources_for(&self, rule: &SshCompiled, n: u32) -> Option<Vec<u32>> {
        let node = &self.nodes[n as usize];
        let mut direct = false;
        let mut via_self = false;
        for alias in &rule.dst {
            match alias {
                Alias::AutoGroup(AutoGroup::SelfDevices) => via_self |= node.user.is_some(),
                Alias::AutoGroup(AutoGroup::Tagged) => direct |= !node.tags.is_empty(),
                Alias::Tag(tag) => direct |= node.tags.contains(tag),
                other => {
                    if let Some(user) = node.user {
                        direct |= self.alias_users(other).contains(&user);
                    }
                }
            }
        }
        if direct {
            return Some(rule.src_nodes.clone());
        }
        // `autogroup:self`, and (as the control plane does) any rule mapping `localpart:`
        // users, reach the source users' own devices.
        let localpart = rule.users.iter().any(|u| u.starts_with("localpart:*@"));
        if via_self || (localpart && node.user.is_some()) {
            let user = node.user;
            let srcs: Vec<u32> = rule
                .src_nodes
                .iter()
                .copied()
                .filter(|&m| self.nodes[m as usize].user == user)
                .collect();
            return (via_self || !srcs.is_empty()).then_some(srcs);
        }
        None
    }

    /// The SSH rules device `n` receives.
    pub(crate) fn ssh_for(&self, n: u32) -> Vec<wire::SshRule> {
        let mut out = Vec::new();
        for rule in &self.ssh {
            let Some(srcs) = self.ssh_sources_for(rule, n) else {
                continue;
            };
            if srcs.is_empty() {
                continue;
            }
            let mut common: BTreeMap<String, String> = BTreeMap::new();
            common.insert("root".to_owned(), String::new());
            let mut localpart_domains = Vec::new();
            for user in &rule.users {
                match user.as_str() {
                    "root" => {
                        common.insert("root".to_owned(), "root".to_owned());
                    }
                    "autogroup:nonroot" => {
                        common.insert("*".to_owned(), "=".to_owned());
                    }
                    u => match u.strip_prefix("localpart:*@") {
                        Some(domain) => localpart_domains.push(domain.to_owned()),
                        None => {
                            common.insert(u.to_owned(), u.to_owned());
                        }
                    },
                }
            }
            let action = if rule.check {
                wire::SshAction::check()
            } else {
                wire::SshAction::accept()
            };
            let principals = |nodes: &[u32]| -> Vec<wire::SshPrincipal> {
                nodes
                    .iter()
                    .flat_map(|&m| self.nodes[m as usize].ips.iter())
                    .map(|ip| wire::SshPrincipal {
                        node_ip: ip.to_string(),
                    })
                    .collect()
            };
            let make = |principals, users| wire::SshRule {
                principals,
                ssh_users: users,
                action: action.clone(),
                accept_env: rule.accept_env.clone(),
            };
            if localpart_domains.is_empty() {
                out.push(make(principals(&srcs), common));
                continue;
            }
            // With localpart mappings: per source user (in user order) a common rule and a
            // rule mapping the login's local part; tagged sources last.
            let mut by_user: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            let mut tagged = Vec::new();
            for &m in &srcs {
                match self.nodes[m as usize].user {
                    Some(u) => by_user.entry(u).or_default().push(m),
                    None => tagged.push(m),
                }
            }
            for (u, nodes) in by_user {
                out.push(make(principals(&nodes), common.clone()));
                let login = &self.users[u as usize].login;
                if let Some((local, domain)) = login.rsplit_once('@')
                    && localpart_domains.iter().any(|d| d == domain)
                {
                    let mut users = BTreeMap::new();
                    users.insert(local.to_owned(), local.to_owned());
                    out.push(make(principals(&nodes), users));
                }
            }
            if !tagged.is_empty() {
                out.push(make(principals(&tagged), common));
            }
        }
        out
    }

    /// Device index by name, hostname, MagicDNS short name, ID or address.
    pub fn find_device(&self, name: &str) -> Option<u32> {
        self.node_index.get(name).copied().or_else(|| {
            name.parse::<IpAddr>()
                .ok()
                .and_then(|ip| self.ip_index.get(&ip).copied())
        })
    }

    pub fn device_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.name.as_str())
    }

    /// The packet filter device `name` receives.
    pub fn packet_filter(&self, name: &str) -> Option<Vec<FilterRule>> {
        Some(self.filter_for(self.find_device(name)?))
    }

    /// What device `name` receives from the control plane.
    pub fn device_wire(&self, name: &str) -> Option<wire::DeviceWire> {
        let n = self.find_device(name)?;
        Some(wire::DeviceWire {
            packet_filter: self.filter_for(n),
            ssh_rules: self.ssh_for(n),
        })
    }

    /// Every device's packet filter and SSH rules, keyed by device name.
    pub fn compile_all(&self) -> BTreeMap<String, wire::DeviceWire> {
        (0..self.nodes.len() as u32)
            .map(|n| {
                (
                    self.nodes[n as usize].name.clone(),
                    wire::DeviceWire {
                        packet_filter: self.filter_for(n),
                        ssh_rules: self.ssh_for(n),
                    },
                )
            })
            .collect()
    }

    /// Does `alias` (a `nodeAttrs` target) select device `n`?
    fn target_selects(&self, alias: &Alias, n: u32) -> bool {
        let node = &self.nodes[n as usize];
        match alias {
            Alias::Wildcard => true,
            Alias::Net(_) | Alias::Host(_) | Alias::IpSet(_) => self
                .alias_nets(alias)
                .iter()
                .any(|net| node.ips.iter().any(|ip| net.contains_ip(*ip))),
            _ => self.alias_nodes(alias).contains(&n),
        }
    }

    /// The node capabilities (`nodeAttrs` and tailnet-wide switches) device `n` receives.
    pub fn node_attrs(&self, name: &str) -> Option<Vec<String>> {
        let n = self.find_device(name)?;
        let file = &self.policy.file;
        let mut attrs: Vec<String> = Vec::new();
        for rule in &file.node_attrs {
            let selected = rule
                .target
                .iter()
                .filter_map(|t| Alias::parse(t).ok())
                .any(|a| self.target_selects(&a, n));
            if selected {
                attrs.extend(rule.attr.iter().cloned());
            }
        }
        if file.randomize_client_port {
            attrs.push("randomize-client-port".to_owned());
        }
        if file.disable_ipv4 {
            attrs.push("disable-ipv4".to_owned());
        }
        attrs.sort();
        attrs.dedup();
        Some(attrs)
    }

    pub(crate) fn node(&self, n: u32) -> &NodeInfo {
        &self.nodes[n as usize]
    }
}

/// `a` without `b`, as ranges (prefixes are kept when untouched).
fn subtract(a: Net, b: Net) -> Vec<Net> {
    if !a.overlaps(&b) {
        return vec![a];
    }
    let mut out = Vec::new();
    if a.first < b.first {
        out.push(Net {
            v6: a.v6,
            first: a.first,
            last: b.first - 1,
            bits: None,
        });
    }
    if b.last < a.last {
        out.push(Net {
            v6: a.v6,
            first: b.last + 1,
            last: a.last,
            bits: None,
        });
    }
    out
}
