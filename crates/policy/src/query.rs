//! Questions people ask of a policy: may X reach device:port, which rule allows it, who can
//! reach a device, what can X reach.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::PolicyError;
use crate::engine::{Engine, ExpKind, Origin, Target};
use crate::ip;

/// The protocols a rule without `proto` allows (Tailscale clients' default set).
const DEFAULT_PROTOS: [u8; 4] = [6, 17, 1, 58];

fn proto_matches(rule: &[u8], proto: u8) -> bool {
    if rule.is_empty() {
        DEFAULT_PROTOS.contains(&proto)
    } else {
        rule.contains(&proto)
    }
}

/// The answer to "may SRC reach DST:PORT?".
#[derive(Debug, Clone, Serialize)]
pub struct Access {
    pub allowed: bool,
    /// Every rule that allows it.
    pub rules: Vec<Origin>,
    /// Source addresses that are not allowed (when some are and some are not).
    pub denied_addresses: Vec<String>,
}

/// Someone who can reach a device, and the rules that let them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Grantee {
    /// `user`, `device` (a tagged device), `network`, or `everyone`.
    pub kind: String,
    pub name: String,
    pub rules: Vec<Origin>,
}

/// Something a principal can reach.
#[derive(Debug, Clone, Serialize)]
pub struct Reachable {
    /// `device`, `network`, or `everything`.
    pub kind: String,
    pub name: String,
    /// `tcp`, `udp`, ... or `any` for the default set.
    pub proto: String,
    pub ports: Vec<String>,
    pub rules: Vec<Origin>,
}

fn proto_label(protos: &[u8]) -> String {
    if protos.is_empty() {
        return "any".to_owned();
    }
    protos
        .iter()
        .map(|p| match p {
            1 => "icmp".to_owned(),
            6 => "tcp".to_owned(),
            17 => "udp".to_owned(),
            58 => "ipv6-icmp".to_owned(),
            132 => "sctp".to_owned(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn port_label((first, last): (u16, u16)) -> String {
    if (first, last) == (0, 65535) {
        "*".to_owned()
    } else if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

impl Engine {
    /// Addresses of a user login, a device (name, ID or address) or a literal IP.
    pub fn principal_ips(&self, who: &str) -> Result<Vec<IpAddr>, PolicyError> {
        if let Some(&u) = self.user_index.get(who) {
            return Ok(self.users[u as usize]
                .nodes
                .iter()
                .flat_map(|&n| self.node(n).ips.clone())
                .collect());
        }
        if let Some(n) = self.find_device(who) {
            return Ok(self.node(n).ips.clone());
        }
        if let Ok(ip) = who.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        // Any other alias: a tag, group or autogroup names the devices it selects.
        if let Ok(alias) = crate::syntax::Alias::parse(who) {
            let ips: Vec<IpAddr> = self
                .alias_nodes(&alias)
                .into_iter()
                .flat_map(|n| self.node(n).ips.clone())
                .collect();
            if !ips.is_empty() {
                return Ok(ips);
            }
        }
        Err(PolicyError::NotFound(format!(
            "{who:?} is not a user, device or IP address of this tailnet"
        )))
    }

    fn device(&self, name: &str) -> Result<u32, PolicyError> {
        self.find_device(name)
            .ok_or_else(|| PolicyError::NotFound(format!("no device named {name:?}")))
    }

    /// Visits every rule entry that lets something reach address `dst_ip` of device `n` on
    /// `port`/`proto`: (expansion index, rule origin).
    fn for_each_grant(
        &self,
        n: u32,
        dst_ip: Option<IpAddr>,
        port: u16,
        proto: u8,
        mut f: impl FnMut(u32, Origin) -> bool,
    ) {
        let node = self.node(n);
        let covers_ip = |target: &Target| match (target, dst_ip) {
            (_, None) | (Target::Star, _) => true,
            (Target::NodeIp(m, i), Some(ip)) => self.node(*m).ips.get(*i as usize) == Some(&ip),
            (Target::Net(net), Some(ip)) => net.contains_ip(ip),
        };
        let mut visit = |e: u32, k: u32| -> bool {
            let exp = &self.expansions[e as usize];
            if let ExpKind::Ports { dsts, .. } = &exp.kind {
                let (target, (first, last)) = &dsts[k as usize];
                if *first <= port
                    && port <= *last
                    && proto_matches(&exp.proto, proto)
                    && covers_ip(target)
                {
                    return f(e, exp.origin);
                }
            }
            true
        };
        for &(e, k) in self.node_hits[n as usize].iter().chain(&self.star_hits) {
            if !visit(e, k) {
                return;
            }
        }
        if node.user.is_some() && dst_ip.is_none_or(|ip| node.ips.contains(&ip)) {
            for &e in &self.self_exps {
                let exp = &self.expansions[e as usize];
                if let ExpKind::SelfPorts(ranges) = &exp.kind
                    && proto_matches(&exp.proto, proto)
                    && ranges.iter().any(|(a, b)| *a <= port && port <= *b)
                    && !f(e, exp.origin)
                {
                    return;
                }
            }
        }
    }

    /// Is `src` in expansion `e`'s sources (narrowed to the owner's devices for
    /// `autogroup:self` rules on device `n`)?
    fn expansion_admits(&self, e: u32, n: u32, src: IpAddr) -> bool {
        let exp = &self.expansions[e as usize];
        if let ExpKind::SelfPorts(_) = exp.kind {
            let owner = self.node(n).user;
            let same_owner = self
                .ip_index
                .get(&src)
                .is_some_and(|&m| owner.is_some() && self.node(m).user == owner);
            return same_owner && self.src_contains(exp.src, src);
        }
        self.src_contains(exp.src, src)
    }

    /// The first rule that lets `src` reach `dst_ip` on `port`/`proto`, if any. `dst_ip` may be
    /// a device's address or an address behind a subnet router or exit node.
    pub fn allows(&self, src: IpAddr, dst_ip: IpAddr, port: u16, proto: u8) -> Option<Origin> {
        let candidates: Vec<u32> = match self.ip_index.get(&dst_ip) {
            Some(&n) => vec![n],
            None => (0..self.nodes.len() as u32)
                .filter(|&n| {
                    let node = self.node(n);
                    node.routes.iter().any(|r| r.contains_ip(dst_ip))
                        || (node.exit && ip::internet().iter().any(|i| i.contains_ip(dst_ip)))
                })
                .collect(),
        };
        let mut found = None;
        for n in candidates {
            self.for_each_grant(n, Some(dst_ip), port, proto, |e, origin| {
                if self.expansion_admits(e, n, src) {
                    found = Some(origin);
                    return false;
                }
                true
            });
            if found.is_some() {
                break;
            }
        }
        found
    }

    /// May a device with address `src` reach device index `dst` on `port`/`proto`? The fast
    /// path for one check.
    pub fn check(
        &self,
        src: IpAddr,
        dst: &str,
        port: u16,
        proto: u8,
    ) -> Result<Option<Origin>, PolicyError> {
        let n = self.device(dst)?;
        let mut found = None;
        self.for_each_grant(n, None, port, proto, |e, origin| {
            if self.expansion_admits(e, n, src) {
                found = Some(origin);
                return false;
            }
            true
        });
        Ok(found)
    }

    /// May `src` (a user, device or IP) reach device `dst` on `port`/`proto`, and by which rules?
    pub fn explain(
        &self,
        src: &str,
        dst: &str,
        port: u16,
        proto: u8,
    ) -> Result<Access, PolicyError> {
        let n = self.device(dst)?;
        let src_ips = self.principal_ips(src)?;
        let mut rules: Vec<Origin> = Vec::new();
        let mut denied = Vec::new();
        for &s in &src_ips {
            let mut any = false;
            self.for_each_grant(n, None, port, proto, |e, origin| {
                if self.expansion_admits(e, n, s) {
                    any = true;
                    if !rules.contains(&origin) {
                        rules.push(origin);
                    }
                }
                true
            });
            if !any {
                denied.push(s.to_string());
            }
        }
        Ok(Access {
            allowed: !rules.is_empty(),
            rules,
            denied_addresses: if src_ips.len() > denied.len() {
                denied
            } else {
                Vec::new()
            },
        })
    }

    /// Everyone who can reach device `dst` on `port`/`proto`.
    pub fn who_can(&self, dst: &str, port: u16, proto: u8) -> Result<Vec<Grantee>, PolicyError> {
        let n = self.device(dst)?;
        let mut out: BTreeMap<(String, String), Vec<Origin>> = BTreeMap::new();
        let mut add = |kind: &str, name: String, origin: Origin| {
            let rules = out.entry((kind.to_owned(), name)).or_default();
            if !rules.contains(&origin) {
                rules.push(origin);
            }
        };
        let space = ip::tailnet_space();
        let owner = self.node(n).user;
        self.for_each_grant(n, None, port, proto, |e, origin| {
            let exp = &self.expansions[e as usize];
            let set = &self.src_sets[exp.src as usize];
            if matches!(exp.kind, ExpKind::SelfPorts(_)) {
                // autogroup:self: only the device's owner, when the rule's sources include them.
                if let Some(u) = owner {
                    let included = self.users[u as usize].nodes.iter().any(|&m| {
                        self.node(m)
                            .ips
                            .iter()
                            .any(|ip| self.src_contains(exp.src, *ip))
                    });
                    if included {
                        add("user", self.users[u as usize].login.clone(), origin);
                    }
                }
                return true;
            }
            let everyone = set.all || space.iter().all(|s| set.nets.contains(s));
            if everyone {
                add("everyone", "*".to_owned(), origin);
            }
            for &id in &set.ids {
                let Some(&m) = self.id_node.get(id as usize).filter(|&&m| m != u32::MAX) else {
                    continue;
                };
                let node = self.node(m);
                match node.user {
                    Some(u) => add("user", self.users[u as usize].login.clone(), origin),
                    None => add("device", node.name.clone(), origin),
                }
            }
            for net in &set.nets {
                if !(everyone && space.contains(net)) {
                    add("network", net.to_string(), origin);
                }
            }
            true
        });
        Ok(out
            .into_iter()
            .map(|((kind, name), rules)| Grantee { kind, name, rules })
            .collect())
    }

    /// Everything `from` (a user, device or IP) can reach.
    pub fn reach(&self, from: &str) -> Result<Vec<Reachable>, PolicyError> {
        let src_ips = self.principal_ips(from)?;
        let from_user = self.user_index.get(from).copied().or_else(|| {
            src_ips
                .iter()
                .find_map(|ip| self.ip_index.get(ip))
                .and_then(|&m| self.node(m).user)
        });
        type Key = (String, String, String);
        let mut out: BTreeMap<Key, (Vec<String>, Vec<Origin>)> = BTreeMap::new();
        let mut add = |kind: &str, name: String, proto: String, port: String, origin: Origin| {
            let (ports, rules) = out.entry((kind.to_owned(), name, proto)).or_default();
            if !ports.contains(&port) {
                ports.push(port);
            }
            if !rules.contains(&origin) {
                rules.push(origin);
            }
        };
        for exp in &self.expansions {
            if !src_ips.iter().any(|&ip| self.src_contains(exp.src, ip)) {
                continue;
            }
            let proto = proto_label(&exp.proto);
            match &exp.kind {
                ExpKind::Ports { dsts, .. } => {
                    for (target, range) in dsts {
                        let (kind, name) = match target {
                            Target::Star => ("everything", "*".to_owned()),
                            Target::NodeIp(m, _) => ("device", self.node(*m).name.clone()),
                            Target::Net(net) => ("network", net.to_string()),
                        };
                        add(kind, name, proto.clone(), port_label(*range), exp.origin);
                    }
                }
                ExpKind::SelfPorts(ranges) => {
                    let Some(u) = from_user else { continue };
                    for &m in &self.users[u as usize].nodes {
                        for range in ranges {
                            let name = self.node(m).name.clone();
                            add(
                                "device",
                                name,
                                proto.clone(),
                                port_label(*range),
                                exp.origin,
                            );
                        }
                    }
                }
                ExpKind::Cap { .. } | ExpKind::SelfCap(_) => {}
            }
        }
        Ok(out
            .into_iter()
            .map(|((kind, name, proto), (ports, rules))| Reachable {
                kind,
                name,
                proto,
                ports,
                rules,
            })
            .collect())
    }
}
