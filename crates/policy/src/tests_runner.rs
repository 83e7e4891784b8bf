//! The policy's own `tests` and `sshTests`, run with the control plane's rules: a test names
//! one source alias and, per destination, one host and one port.

use std::net::IpAddr;

use serde::Serialize;

use crate::engine::{Engine, Origin};
use crate::syntax::{Alias, AutoGroup, parse_proto, split_host_ports};

/// One failed test, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestFailure {
    /// `tests[2]` or `sshTests[0]`.
    pub test: String,
    pub message: String,
}

impl Engine {
    fn tag_or_group_known(&self, alias: &Alias) -> bool {
        let file = &self.policy.file;
        match alias {
            Alias::Tag(tag) => file.tag_owners.contains_key(tag),
            Alias::Group(group) => file.groups.contains_key(group),
            Alias::Host(host) => file.hosts.contains_key(host),
            _ => true,
        }
    }

    /// Source addresses of a test's `src`.
    fn test_src_ips(&self, src: &str) -> Result<Vec<IpAddr>, String> {
        let alias = Alias::parse(src).map_err(|e| format!("src {src:?}: {e}"))?;
        if !self.tag_or_group_known(&alias) {
            return Err(format!("src {src:?} is not defined in the policy"));
        }
        if matches!(
            alias,
            Alias::Wildcard
                | Alias::AutoGroup(
                    AutoGroup::Internet
                        | AutoGroup::SelfDevices
                        | AutoGroup::NonRoot
                        | AutoGroup::DangerAll
                )
        ) {
            return Err(format!("src {src:?} cannot be used as a test source"));
        }
        let mut ips: Vec<IpAddr> = self
            .alias_nodes(&alias)
            .into_iter()
            .flat_map(|n| self.node(n).ips.clone())
            .collect();
        for net in self.alias_nets(&alias) {
            if !net.is_single() {
                return Err(format!("src {src:?} is a network, not one host"));
            }
            ips.push(net.first_ip());
        }
        if ips.is_empty() {
            return Err(format!("src {src:?} matches no device"));
        }
        Ok(ips)
    }

    /// Destination addresses and port of a test's `host:port`.
    fn test_dst(&self, dst: &str, src: &str) -> Result<(Vec<IpAddr>, u16), String> {
        let (host, port) =
            split_host_ports(dst).ok_or_else(|| format!("dst {dst:?} must be host:port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0 && port.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("dst {dst:?}: the port must be one port number"))?;
        let alias = Alias::parse(&host).map_err(|e| format!("dst {dst:?}: {e}"))?;
        if !self.tag_or_group_known(&alias) {
            return Err(format!("dst {dst:?} is not defined in the policy"));
        }
        let ips: Vec<IpAddr> = match &alias {
            Alias::AutoGroup(AutoGroup::SelfDevices) => {
                let src_alias = Alias::parse(src).map_err(|e| format!("src {src:?}: {e}"))?;
                self.alias_users(&src_alias)
                    .into_iter()
                    .flat_map(|u| self.users[u as usize].nodes.clone())
                    .flat_map(|n| self.node(n).ips.clone())
                    .collect()
            }
            Alias::Wildcard | Alias::AutoGroup(_) | Alias::IpSet(_) => {
                return Err(format!("dst {dst:?} is not one host"));
            }
            Alias::Net(_) | Alias::Host(_)
                if !self.alias_nets(&alias).iter().all(|n| n.is_single()) =>
            {
                return Err(format!("dst {dst:?} is a network, not one host"));
            }
            _ => {
                let mut ips: Vec<IpAddr> = self
                    .alias_nodes(&alias)
                    .into_iter()
                    .flat_map(|n| self.node(n).ips.clone())
                    .collect();
                ips.extend(self.alias_nets(&alias).iter().map(|n| n.first_ip()));
                ips
            }
        };
        if ips.is_empty() {
            return Err(format!("dst {dst:?} matches no device"));
        }
        Ok((ips, port))
    }

    fn run_acl_test(&self, test: &crate::model::AclTest) -> Result<(), String> {
        let src = test
            .src
            .as_deref()
            .or(test.user.as_deref())
            .filter(|s| !s.trim().is_empty())
            .ok_or("src is missing")?;
        let src_ips = self.test_src_ips(src)?;
        let proto = match test.proto.as_deref() {
            None | Some("") => 6,
            Some(p) => *parse_proto(p)?.first().unwrap_or(&6),
        };
        let accept: Vec<&String> = test.accept.iter().chain(&test.allow).collect();
        if accept.is_empty() && test.deny.is_empty() {
            return Err("the test has neither accept nor deny".to_owned());
        }
        for (dsts, want) in [(accept, true), (test.deny.iter().collect(), false)] {
            for dst in dsts {
                let (dst_ips, port) = self.test_dst(dst, src)?;
                for &s in &src_ips {
                    for &d in dst_ips.iter().filter(|d| d.is_ipv4() == s.is_ipv4()) {
                        let allowed = self.allows(s, d, port, proto).is_some();
                        if allowed != want {
                            let verdict = if want { "denied" } else { "allowed" };
                            return Err(format!(
                                "{src} -> {dst}: {verdict} from {s} (expected {})",
                                if want { "accept" } else { "deny" }
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn ssh_test_nodes(&self, alias_text: &str, what: &str) -> Result<Vec<u32>, String> {
        let alias = Alias::parse(alias_text).map_err(|e| format!("{what} {alias_text:?}: {e}"))?;
        if !self.tag_or_group_known(&alias) {
            return Err(format!(
                "{what} {alias_text:?} is not defined in the policy"
            ));
        }
        let mut nodes = self.alias_nodes(&alias);
        for net in self.alias_nets(&alias) {
            if !net.is_single() || (what == "dst" && net.v6) {
                return Err(format!("{what} {alias_text:?} is not one host"));
            }
            nodes.extend(self.ip_index.get(&net.first_ip()).copied());
        }
        if nodes.is_empty() {
            return Err(format!("{what} {alias_text:?} matches no device"));
        }
        Ok(nodes)
    }

    fn run_ssh_test(&self, test: &crate::model::SshTest) -> Result<(), String> {
        let src = test
            .src
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or("src is missing")?;
        let src_nodes = self.ssh_test_nodes(src, "src")?;
        if test.dst.is_empty() {
            return Err("dst is empty".to_owned());
        }
        let mut dst_nodes = Vec::new();
        for dst in &test.dst {
            dst_nodes.extend(self.ssh_test_nodes(dst, "dst")?);
        }
        if test.accept.is_empty() && test.check.is_empty() && test.deny.is_empty() {
            return Err("the test has none of accept, check and deny".to_owned());
        }
        for (users, want) in [
            (&test.accept, "accept"),
            (&test.check, "check"),
            (&test.deny, "deny"),
        ] {
            for user in users {
                if user.trim().is_empty() {
                    return Err("an empty user name".to_owned());
                }
                for &d in &dst_nodes {
                    for &s in &src_nodes {
                        let got = self.ssh_allows(s, d, user);
                        let ok = match want {
                            "accept" => got.is_some(),
                            "check" => got.is_some_and(|(_, check)| check),
                            _ => got.is_none(),
                        };
                        if !ok {
                            return Err(format!(
                                "{src} as {user:?} to {}: expected {want}",
                                self.node(d).name
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Can device `src` SSH to device `dst` as local `user`? The first rule that allows it
    /// (check rules are consulted first, as devices do) and whether it is a `check` rule.
    pub fn ssh_allows(&self, src: u32, dst: u32, user: &str) -> Option<(Origin, bool)> {
        let src_login = self
            .node(src)
            .user
            .map(|u| self.users[u as usize].login.as_str());
        for rule in &self.ssh {
            let Some(sources) = self.ssh_sources_for(rule, dst) else {
                continue;
            };
            if !sources.contains(&src) {
                continue;
            }
            let mapped = rule.users.iter().any(|u| match u.as_str() {
                "autogroup:nonroot" => user != "root",
                u => match u.strip_prefix("localpart:*@") {
                    Some(domain) => src_login
                        .and_then(|l| l.rsplit_once('@'))
                        .is_some_and(|(local, d)| d == domain && local == user),
                    None => u == user,
                },
            });
            if mapped {
                return Some((rule.origin, rule.check));
            }
        }
        None
    }

    /// The addresses of every device a test or SSH test uses as its source. Posture conditions
    /// apply to sources only, so a posture attribute on any other device cannot change a
    /// test's outcome. (A source that resolves to nothing adds nothing.)
    pub fn test_source_ips(&self) -> std::collections::BTreeSet<IpAddr> {
        let file = &self.policy.file;
        let acl = file
            .tests
            .iter()
            .filter_map(|t| t.src.as_deref())
            .filter_map(|src| self.test_src_ips(src).ok())
            .flatten();
        let ssh = file
            .ssh_tests
            .iter()
            .filter_map(|t| t.src.as_deref())
            .filter_map(|src| self.ssh_test_nodes(src, "src").ok())
            .flatten()
            .flat_map(|n| self.node(n).ips.clone());
        acl.chain(ssh).collect()
    }

    /// Runs the policy's `tests` and `sshTests`; the failures, none if all pass.
    pub fn run_tests(&self) -> Vec<crate::TestFailure> {
        let mut failures = Vec::new();
        for (i, test) in self.policy.file.tests.iter().enumerate() {
            if let Err(message) = self.run_acl_test(test) {
                failures.push(TestFailure {
                    test: format!("tests[{i}]"),
                    message,
                });
            }
        }
        for (i, test) in self.policy.file.ssh_tests.iter().enumerate() {
            if let Err(message) = self.run_ssh_test(test) {
                failures.push(TestFailure {
                    test: format!("sshTests[{i}]"),
                    message,
                });
            }
        }
        failures
    }
}
