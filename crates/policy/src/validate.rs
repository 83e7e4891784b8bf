//! Validation with the messages Tailscale's control plane gives (one error, the first found).

use crate::PolicyError;
use crate::ip::Net;
use crate::model::{Policy, PolicyFile};
use crate::syntax::{
    Alias, AutoGroup, check_cap_name, parse_ports, parse_proto, proto_has_ports, split_host_ports,
};

fn invalid(message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid(message.into())
}

struct Checker<'a> {
    file: &'a PolicyFile,
    domains: &'a [String],
}

/// Which side of a rule an alias is on; the wording of errors differs.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Src,
    Dst,
}

impl Checker<'_> {
    fn tag_exists(&self, tag: &str) -> bool {
        self.file.tag_owners.contains_key(tag)
    }

    fn check_domain(&self, domain: &str) -> Result<(), PolicyError> {
        // With no users known (no inventory), the tailnet's domains are unknown: accept.
        if self.domains.is_empty() || self.domains.iter().any(|d| d == domain) {
            Ok(())
        } else {
            Err(invalid(format!(
                "{domain} is not associated with this Tailnet and cannot be used in user:*@<domain> expressions"
            )))
        }
    }

    /// Checks an alias used in an acl/grant `src` or `dst`.
    fn rule_alias(&self, text: &str, side: Side, dst_label: &str) -> Result<Alias, PolicyError> {
        let alias = Alias::parse(text).map_err(invalid)?;
        let prefix = match side {
            Side::Src => "src=".to_owned(),
            Side::Dst => format!("dst={dst_label:?}: "),
        };
        match &alias {
            Alias::Tag(tag) if !self.tag_exists(tag) => {
                return Err(invalid(format!("{prefix}tag not found: {tag:?}")));
            }
            Alias::Group(group) if !self.file.groups.contains_key(group) => {
                return Err(invalid(format!("{prefix}group not found: {group:?}")));
            }
            Alias::Host(host) if !self.file.hosts.contains_key(host) => {
                return Err(invalid(format!("{prefix}host not found: {host:?}")));
            }
            Alias::IpSet(set) if !self.file.ipsets.contains_key(set) => {
                return Err(invalid(format!("{prefix}ipset not found: {set:?}")));
            }
            Alias::UserDomain(domain) => self.check_domain(domain)?,
            Alias::AutoGroup(AutoGroup::SelfDevices) if side == Side::Src => {
                return Err(invalid(
                    "\"autogroup:self\" not valid on the src side of a rule",
                ));
            }
            Alias::AutoGroup(AutoGroup::Internet) if side == Side::Src => {
                return Err(invalid(
                    "autogroup:internet can only be used in ACL destinations",
                ));
            }
            Alias::AutoGroup(AutoGroup::DangerAll) if side == Side::Dst => {
                return Err(invalid("cannot use autogroup:danger-all as a dst"));
            }
            Alias::AutoGroup(AutoGroup::NonRoot) => {
                return Err(invalid(format!(
                    "{prefix}autogroup:nonroot is only valid in ssh users"
                )));
            }
            Alias::Net(net) if side == Side::Dst && net.is_all() => {
                return Err(invalid(format!(
                    "dst {:?}: to allow all IP addresses, use \"*\" or \"autogroup:internet\"",
                    net.cidr_string()
                )));
            }
            _ => {}
        }
        Ok(alias)
    }

    /// autogroup:self needs sources that are users: users, groups, `autogroup:member`, and in
    /// ACLs (not grants) `*`.
    fn check_self_sources(&self, srcs: &[Alias], wildcard_ok: bool) -> Result<(), PolicyError> {
        let ok = srcs.iter().all(|a| match a {
            Alias::User(_) | Alias::Group(_) | Alias::UserDomain(_) => true,
            Alias::AutoGroup(AutoGroup::Member | AutoGroup::Role(_)) => true,
            Alias::Wildcard => wildcard_ok,
            _ => false,
        });
        if ok {
            Ok(())
        } else {
            Err(invalid(
                "autogroup:self can only be used with users, groups, or supported autogroups",
            ))
        }
    }

    fn groups(&self) -> Result<(), PolicyError> {
        for (name, members) in self.file.groups.iter().rev() {
            if !name.starts_with("group:") {
                return Err(invalid(format!(
                    "group {name:?} must start with \"group:\""
                )));
            }
            for member in members {
                if member.starts_with("group:") {
                    return Err(invalid(format!(
                        "groups[{name:?}]: {member:?}: group members cannot be recursive"
                    )));
                }
            }
        }
        for (name, members) in &self.file.groups {
            for member in members {
                match Alias::parse(member) {
                    Ok(Alias::User(_)) => {}
                    Ok(Alias::UserDomain(domain)) => self.check_domain(&domain)?,
                    _ => {
                        return Err(invalid(format!(
                            "groups[{name:?}]: {member:?}: group members must be users"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn tag_owners(&self) -> Result<(), PolicyError> {
        for (tag, owners) in &self.file.tag_owners {
            let name = tag.strip_prefix("tag:").unwrap_or("");
            if !tag.starts_with("tag:") || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return Err(invalid(format!(
                    "tagOwners[{tag:?}]: tag names must start with a letter, after 'tag:'"
                )));
            }
            for owner in owners {
                match Alias::parse(owner) {
                    Ok(Alias::Tag(t)) if !self.tag_exists(&t) => {
                        return Err(invalid(format!(
                            "tag {tag:?} references undefined tag {t:?}"
                        )));
                    }
                    Ok(Alias::Group(g)) if !self.file.groups.contains_key(&g) => {
                        return Err(invalid(format!(
                            "tagOwners[{tag:?}]: group not found: {g:?}"
                        )));
                    }
                    Ok(
                        Alias::Tag(_)
                        | Alias::Group(_)
                        | Alias::User(_)
                        | Alias::AutoGroup(AutoGroup::Role(_) | AutoGroup::Member),
                    ) => {}
                    _ => {
                        return Err(invalid(format!(
                            "tagOwners[{tag:?}]: {owner:?}: owners must be users, groups or tags"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn hosts(&self) -> Result<(), PolicyError> {
        for (name, address) in &self.file.hosts {
            if name.contains('@') || name.contains(':') || name.is_empty() {
                return Err(invalid(format!("hosts[{name:?}]: invalid host name")));
            }
            if Net::parse(address).is_none() {
                return Err(invalid(format!(
                    "hostname contains invalid IP address: hostname {name:?} address {address:?}"
                )));
            }
        }
        Ok(())
    }

    fn ipsets(&self) -> Result<(), PolicyError> {
        for (name, ops) in &self.file.ipsets {
            if !name.starts_with("ipset:") {
                return Err(invalid(format!(
                    "ipset {name:?} must start with \"ipset:\""
                )));
            }
            for op in ops {
                let target = op
                    .strip_prefix("add ")
                    .or_else(|| op.strip_prefix("remove "))
                    .unwrap_or(op);
                match Alias::parse(target) {
                    Ok(Alias::Net(_) | Alias::AutoGroup(AutoGroup::Internet)) => {}
                    Ok(Alias::Host(h)) if self.file.hosts.contains_key(&h) => {}
                    Ok(Alias::IpSet(s)) if self.file.ipsets.contains_key(&s) && &s != name => {}
                    _ => {
                        return Err(invalid(format!(
                            "ipsets[{name:?}]: invalid target {target:?}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn posture_definitions(&self) -> Result<(), PolicyError> {
        for (name, conditions) in &self.file.postures {
            if !name.starts_with("posture:") {
                return Err(invalid(format!(
                    "postures[{name:?}]: names must start with \"posture:\""
                )));
            }
            for condition in conditions {
                crate::posture::Condition::parse(condition)
                    .map_err(|e| invalid(format!("postures[{name:?}]: {e}")))?;
            }
        }
        self.postures(&self.file.default_src_posture)
    }

    fn postures(&self, names: &[String]) -> Result<(), PolicyError> {
        for name in names {
            if !self.file.postures.contains_key(name) {
                return Err(invalid(format!("posture not found: {name:?}")));
            }
        }
        Ok(())
    }

    fn acls(&self) -> Result<(), PolicyError> {
        for acl in self.file.acls.iter().flatten() {
            if acl.action != "accept" {
                return Err(invalid(format!("action={:?} is not supported", acl.action)));
            }
            let protos = match &acl.proto {
                Some(p) if !p.is_empty() => parse_proto(p).map_err(invalid)?,
                _ => Vec::new(),
            };
            let src_texts = if acl.src.is_empty() {
                &acl.users
            } else {
                &acl.src
            };
            let srcs = src_texts
                .iter()
                .map(|s| self.rule_alias(s, Side::Src, ""))
                .collect::<Result<Vec<_>, _>>()?;
            let dst_texts = if acl.dst.is_empty() {
                &acl.ports
            } else {
                &acl.dst
            };
            for dst in dst_texts {
                let (host, ports) = split_host_ports(dst).ok_or_else(|| {
                    invalid(format!("dst={dst:?}: hostport must contain a colon"))
                })?;
                let port_list =
                    parse_ports(ports).map_err(|e| invalid(format!("dst={dst:?}: {e}")))?;
                if !proto_has_ports(&protos) && port_list != [crate::syntax::ALL_PORTS] {
                    return Err(invalid(format!(
                        "protocol does not support specific ports: {:?}, only \"*\" is allowed",
                        acl.proto.clone().unwrap_or_default()
                    )));
                }
                // Port errors above name the whole entry; alias errors name only the alias, as
                // the control plane words them.
                let alias = self.rule_alias(&host, Side::Dst, &host)?;
                if alias == Alias::AutoGroup(AutoGroup::SelfDevices) {
                    self.check_self_sources(&srcs, true)?;
                }
            }
            self.postures(&acl.src_posture)?;
        }
        Ok(())
    }

    fn grants(&self) -> Result<(), PolicyError> {
        for grant in self.file.grants.iter().flatten() {
            let srcs = grant
                .src
                .iter()
                .map(|s| self.rule_alias(s, Side::Src, ""))
                .collect::<Result<Vec<_>, _>>()?;
            let app_empty = grant.app.as_ref().is_none_or(|a| a.is_empty());
            if grant.ip.is_empty() && app_empty {
                return Err(invalid("ip and app can not both be empty"));
            }
            for spec in &grant.ip {
                parse_ip_spec(spec).map_err(invalid)?;
            }
            let mut dsts = Vec::new();
            for dst in &grant.dst {
                let alias = self.rule_alias(dst, Side::Dst, dst)?;
                if let Alias::Net(net) = &alias
                    && net.is_all()
                {
                    return Err(invalid(format!(
                        "dst {dst:?}: to allow all IP addresses, use \"*\" or \"autogroup:internet\""
                    )));
                }
                dsts.push(alias);
            }
            if dsts.contains(&Alias::AutoGroup(AutoGroup::SelfDevices)) {
                self.check_self_sources(&srcs, false)?;
            }
            if let Some(app) = &grant.app {
                for name in app.keys() {
                    check_cap_name(name).map_err(invalid)?;
                }
                if !app.is_empty() && dsts.contains(&Alias::AutoGroup(AutoGroup::Internet)) {
                    return Err(invalid("cannot use app grants with autogroup:internet"));
                }
            }
            for via in &grant.via {
                match Alias::parse(via) {
                    Ok(Alias::Tag(tag)) if self.tag_exists(&tag) => {}
                    Ok(Alias::Tag(tag)) => {
                        return Err(invalid(format!("tag {tag:?} not found")));
                    }
                    _ => return Err(invalid("via can only be a tag")),
                }
            }
            self.postures(&grant.src_posture)?;
        }
        Ok(())
    }

    fn ssh(&self) -> Result<(), PolicyError> {
        for rule in &self.file.ssh {
            match rule.action.as_deref().map(str::trim_start) {
                None | Some("") => return Err(invalid("action must be specified")),
                Some("accept" | "check") => {}
                Some(other) => return Err(invalid(format!("{other:?} is not a valid action"))),
            }
            let users = rule.users.as_deref().unwrap_or_default();
            if users.is_empty() {
                return Err(invalid("users must be specified"));
            }
            for user in users {
                let user = user.trim();
                if user.is_empty() || user == "*" {
                    return Err(invalid(format!("user {user:?} is not valid")));
                }
                if let Some(domain) = user.strip_prefix("localpart:*@") {
                    self.check_domain(domain)
                        .map_err(|e| invalid(format!("[ssh] {e}")))?;
                }
            }
            if let Some(period) = &rule.check_period
                && period != "always"
            {
                let d = parse_go_duration(period)?;
                if d < 0 {
                    return Err(invalid(format!(
                        "checkPeriod {} must be a positive duration",
                        format_go_duration(d)
                    )));
                }
                if d > 168 * 3600 * 1_000_000_000 {
                    return Err(invalid(format!(
                        "checkPeriod {} is above the max (168h)",
                        format_go_duration(d)
                    )));
                }
            }
            if let Some(env) = &rule.accept_env
                && env.iter().any(|e| e.is_empty())
            {
                return Err(invalid("acceptEnv values cannot be empty"));
            }
            let mut srcs = Vec::new();
            for src in &rule.src {
                let alias = self.rule_alias(src, Side::Src, "").map_err(|e| match e {
                    PolicyError::Invalid(m) if m.contains("is not associated") => {
                        invalid(format!("[ssh] {m}"))
                    }
                    other => other,
                })?;
                srcs.push(alias);
            }
            for dst in &rule.dst {
                let alias = Alias::parse(dst).map_err(invalid)?;
                match &alias {
                    Alias::Host(_) | Alias::Net(_) | Alias::IpSet(_) => {
                        return Err(invalid(format!("invalid dst {:?}", dst.trim())));
                    }
                    Alias::Wildcard => {
                        return Err(invalid("wildcard (*) is not supported as SSH destination"));
                    }
                    Alias::Tag(tag) if !self.tag_exists(tag) => {
                        return Err(invalid(format!("dst={dst:?}: tag not found: {tag:?}")));
                    }
                    Alias::Group(group) if !self.file.groups.contains_key(group) => {
                        return Err(invalid(format!("dst={dst:?}: group not found: {group:?}")));
                    }
                    Alias::AutoGroup(AutoGroup::SelfDevices) => {
                        self.check_self_sources(&srcs, false)?;
                    }
                    Alias::AutoGroup(
                        AutoGroup::Internet | AutoGroup::DangerAll | AutoGroup::NonRoot,
                    ) => return Err(invalid(format!("invalid dst {:?}", dst.trim()))),
                    _ => {}
                }
            }
            self.postures(&rule.src_posture)?;
        }
        Ok(())
    }

    fn node_attrs(&self) -> Result<(), PolicyError> {
        for attr in &self.file.node_attrs {
            for target in &attr.target {
                match Alias::parse(target) {
                    Ok(Alias::Tag(tag)) if !self.tag_exists(&tag) => {
                        return Err(invalid(format!("tag not found: {tag:?}")));
                    }
                    Ok(Alias::Group(group)) if !self.file.groups.contains_key(&group) => {
                        return Err(invalid(format!("group not found: {group:?}")));
                    }
                    Ok(Alias::Host(host)) if !self.file.hosts.contains_key(&host) => {
                        return Err(invalid(format!("{target:?}: invalid address")));
                    }
                    Ok(Alias::AutoGroup(AutoGroup::SelfDevices)) => {
                        return Err(invalid("internal server error"));
                    }
                    Ok(_) => {}
                    Err(_) => return Err(invalid(format!("{target:?}: invalid address"))),
                }
            }
            for pool in &attr.ip_pool {
                let net = Net::parse(pool)
                    .ok_or_else(|| invalid(format!("IPPool({pool}): invalid prefix")))?;
                // Quad-100 and the 100.115.92.0/23 block are Tailscale's own.
                let reserved = ["100.100.100.0/24", "100.115.92.0/23"]
                    .iter()
                    .filter_map(|r| Net::parse(r))
                    .any(|r| r.overlaps(&net));
                if reserved {
                    return Err(invalid(format!(
                        "IPPool({}): network within reserved range",
                        net.cidr_string()
                    )));
                }
            }
        }
        Ok(())
    }

    fn ssh_tests(&self) -> Result<(), PolicyError> {
        for test in &self.file.ssh_tests {
            for dst in &test.dst {
                match Alias::parse(dst) {
                    Ok(Alias::Tag(tag)) if !self.tag_exists(&tag) => {
                        return Err(invalid(format!(
                            "SSH tests dst contains unknown tag {dst:?}"
                        )));
                    }
                    Ok(Alias::Net(net)) if !net.is_single() => {
                        return Err(invalid(format!(
                            "SSH tests dst contains disallowed element {dst:?}"
                        )));
                    }
                    Ok(Alias::AutoGroup(_) | Alias::Wildcard | Alias::IpSet(_)) | Err(_) => {
                        return Err(invalid(format!(
                            "SSH tests dst contains disallowed element {dst:?}"
                        )));
                    }
                    Ok(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// Parses a grant `ip` entry: `*`, `<ports>`, or `<proto>:<ports>`.
pub fn parse_ip_spec(spec: &str) -> Result<(Vec<u8>, Vec<crate::syntax::PortRange>), String> {
    if spec == "*" {
        return Ok((Vec::new(), vec![crate::syntax::ALL_PORTS]));
    }
    match spec.split_once(':') {
        Some((proto, ports)) => {
            let protos = parse_proto(proto)?;
            let ranges = parse_ports(ports)?;
            if !proto_has_ports(&protos) && ranges != [crate::syntax::ALL_PORTS] {
                return Err(format!(
                    "protocol does not support specific ports: {proto:?}, only \"*\" is allowed"
                ));
            }
            Ok((protos, ranges))
        }
        None => Ok((Vec::new(), parse_ports(spec)?)),
    }
}

/// Parses a Go `time.Duration` string into nanoseconds, with Go's error wording.
pub fn parse_go_duration(text: &str) -> Result<i128, PolicyError> {
    let bad = || invalid(format!("time: invalid duration {text:?}"));
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * unit;
    }
    let nanos = total.round() as i128;
    Ok(if negative { -nanos } else { nanos })
}

/// Formats nanoseconds like Go's `Duration.String` (whole seconds and above only).
pub fn format_go_duration(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let secs = nanos.abs() / 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{sign}{m}m{s}s")
    } else {
        format!("{sign}{s}s")
    }
}

/// Validates a parsed policy. `domains` are the tailnet's own e-mail domains.
pub fn validate(policy: &Policy, domains: &[String]) -> Result<(), PolicyError> {
    let checker = Checker {
        file: &policy.file,
        domains,
    };
    checker.groups()?;
    checker.tag_owners()?;
    checker.hosts()?;
    checker.ipsets()?;
    checker.posture_definitions()?;
    checker.acls()?;
    checker.grants()?;
    checker.ssh()?;
    checker.node_attrs()?;
    checker.ssh_tests()?;
    Ok(())
}
