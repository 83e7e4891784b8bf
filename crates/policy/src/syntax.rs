//! The small languages inside a policy: aliases, `alias:ports` destinations, port ranges and
//! protocols, with Tailscale's error wording.

use crate::ip::Net;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AutoGroup {
    Member,
    Tagged,
    Internet,
    SelfDevices,
    DangerAll,
    NonRoot,
    Shared,
    /// Users by admin-console role: `owner`, `admin`, `it-admin`, ...
    Role(&'static str),
}

const ROLES: [&str; 6] = [
    "owner",
    "admin",
    "it-admin",
    "network-admin",
    "billing-admin",
    "auditor",
];

impl AutoGroup {
    pub fn parse(name: &str) -> Option<AutoGroup> {
        Some(match name {
            "member" => AutoGroup::Member,
            "tagged" => AutoGroup::Tagged,
            "internet" => AutoGroup::Internet,
            "self" => AutoGroup::SelfDevices,
            "danger-all" => AutoGroup::DangerAll,
            "nonroot" => AutoGroup::NonRoot,
            "shared" => AutoGroup::Shared,
            other => AutoGroup::Role(ROLES.iter().find(|r| **r == other)?),
        })
    }
}

/// One selector in a rule's `src`, `dst`, a test or a `nodeAttrs` target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Alias {
    Wildcard,
    User(String),
    /// `user:*@domain`: every user of that domain.
    UserDomain(String),
    Group(String),
    Tag(String),
    AutoGroup(AutoGroup),
    IpSet(String),
    Host(String),
    Net(Net),
}

impl Alias {
    /// Parses an alias in Tailscale's order: IP/CIDR, `*`, user (has `@`), `group:`, `tag:`,
    /// `autogroup:`, `ipset:`, else a host name. Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Alias, String> {
        let text = text.trim();
        if let Some(net) = Net::parse(text) {
            return Ok(Alias::Net(net));
        }
        if text == "*" {
            return Ok(Alias::Wildcard);
        }
        if let Some(domain) = text.strip_prefix("user:*@") {
            return Ok(Alias::UserDomain(domain.to_owned()));
        }
        if text.contains('@') {
            let login = text.strip_prefix("user:").unwrap_or(text);
            return Ok(Alias::User(login.to_owned()));
        }
        if text.starts_with("group:") {
            return Ok(Alias::Group(text.to_owned()));
        }
        if text.starts_with("tag:") {
            return Ok(Alias::Tag(text.to_owned()));
        }
        if let Some(name) = text.strip_prefix("autogroup:") {
            return AutoGroup::parse(name)
                .map(Alias::AutoGroup)
                .ok_or_else(|| format!("invalid autogroup {text:?}"));
        }
        if text.starts_with("ipset:") {
            return Ok(Alias::IpSet(text.to_owned()));
        }
        if text.is_empty() || text.contains(':') || text.contains('/') {
            return Err(format!("{text:?}: invalid address"));
        }
        Ok(Alias::Host(text.to_owned()))
    }
}

pub type PortRange = (u16, u16);

pub const ALL_PORTS: PortRange = (0, 65535);

/// Parses `*`, `22`, `8000-8100` and comma lists of those.
pub fn parse_ports(text: &str) -> Result<Vec<PortRange>, String> {
    if text == "*" {
        return Ok(vec![ALL_PORTS]);
    }
    let mut ranges = Vec::new();
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a, Some(b)),
            None => (part, None),
        };
        let first: u16 = parse_port(first)
            .ok_or_else(|| format!("port range {part:?}: invalid first integer"))?;
        let last: u16 = match last {
            Some(b) => {
                parse_port(b).ok_or_else(|| format!("port range {part:?}: invalid last integer"))?
            }
            None => first,
        };
        if first == 0 && last == 0 {
            return Err(format!(
                "port range {part:?}: first port must be >0, or use '*' for wildcard"
            ));
        }
        if first > last {
            return Err(format!(
                "port range {part:?}: invalid port range: first port is greater than last port"
            ));
        }
        ranges.push((first, last));
    }
    Ok(ranges)
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Splits `alias:ports` at the last colon; `[v6]:ports` and `[v6]/len:ports` for IPv6.
pub fn split_host_ports(dst: &str) -> Option<(String, &str)> {
    let (host, ports) = dst.rsplit_once(':')?;
    if let Some(inner) = host.strip_prefix('[') {
        let (addr, rest) = inner.split_once(']')?;
        return Some((format!("{addr}{rest}"), ports));
    }
    Some((host.to_owned(), ports))
}

const PROTOCOLS: [(&str, u8); 14] = [
    ("icmp", 1),
    ("igmp", 2),
    ("ipv4", 4),
    ("ip-in-ip", 4),
    ("tcp", 6),
    ("egp", 8),
    ("igp", 9),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ipv6-icmp", 58),
    ("sctp", 132),
    ("fc", 133),
];

/// The IANA protocol numbers for a protocol name or number. `icmp` is ICMPv4 only.
pub fn parse_proto(text: &str) -> Result<Vec<u8>, String> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, n)) = PROTOCOLS.iter().find(|(name, _)| *name == lower) {
        return Ok(vec![*n]);
    }
    if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
        if lower.len() > 1 && lower.starts_with('0') {
            return Err(format!(
                "leading 0 not permitted in protocol number {text:?}"
            ));
        }
        return lower
            .parse::<u8>()
            .map(|n| vec![n])
            .map_err(|_| format!("protocol number {text:?} out of range"));
    }
    Err(format!("proto name {text:?} not known"))
}

/// Protocols that have ports.
pub fn proto_has_ports(protos: &[u8]) -> bool {
    protos.is_empty() || protos.iter().all(|p| matches!(p, 6 | 17 | 132))
}

/// `domain/path`, no scheme, and not in `tailscale.com/` unless allow-listed.
pub fn check_cap_name(name: &str) -> Result<(), String> {
    let Some((domain, path)) = name.split_once('/') else {
        return Err("capability name must have the form {domain}/{path}".to_owned());
    };
    if domain.is_empty() || path.is_empty() || domain.contains(':') || name.contains("://") {
        return Err("capability name must have the form {domain}/{path}".to_owned());
    }
    const ALLOWED: [&str; 6] = ["drive", "relay", "webui", "kubernetes", "tsidp", "secrets"];
    if domain == "tailscale.com" {
        let allowed = path
            .strip_prefix("cap/")
            .is_some_and(|cap| ALLOWED.contains(&cap));
        if !allowed {
            return Err("capability name must not be in the tailscale.com domain".to_owned());
        }
    }
    Ok(())
}
