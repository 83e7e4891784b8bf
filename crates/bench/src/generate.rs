//! A generated tailnet at scale: users in teams, their laptops, tagged services, subnet
//! routers, and a policy that mixes grants, ACLs and SSH rules the way real ones do.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy::{Device, Inventory, User};
use serde_json::json;

const TEAMS: usize = 200;
const SERVICES: usize = 100;
const HOSTS: usize = 50;
const ROUTERS: usize = 20;

pub struct Tailnet {
    users: usize,
    user_devices: usize,
    tagged_devices: usize,
    rules: usize,
}

fn v4(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + index as u32)
}

fn v6(index: usize) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 1)) + index as u128)
}

impl Tailnet {
    /// `devices` are split 4:1 between users' devices and tagged services.
    pub fn new(users: usize, devices: usize, rules: usize) -> Tailnet {
        let tagged_devices = devices / 5;
        Tailnet {
            users,
            user_devices: devices - tagged_devices,
            tagged_devices,
            rules,
        }
    }

    pub fn rule_count(&self) -> usize {
        self.rules
    }

    pub fn user_devices(&self) -> usize {
        self.user_devices
    }

    fn login(&self, user: usize) -> String {
        format!("user{user}@example.com")
    }

    pub fn user_device_ip(&self, index: usize) -> IpAddr {
        IpAddr::V4(v4(index))
    }

    /// The first device of service `service`.
    pub fn tagged_device_name(&self, service: usize) -> String {
        format!("svc{}-0.example.ts.net", service % SERVICES)
    }

    pub fn inventory(&self) -> Inventory {
        let users = (0..self.users)
            .map(|u| User {
                id: u.to_string(),
                login_name: self.login(u),
                display_name: format!("User {u}"),
                role: if u < 5 { "admin" } else { "member" }.to_owned(),
                status: "active".to_owned(),
            })
            .collect();
        let mut devices = Vec::with_capacity(self.user_devices + self.tagged_devices);
        for d in 0..self.user_devices {
            let user = d % self.users;
            devices.push(Device {
                id: d.to_string(),
                name: format!("laptop{d}.example.ts.net"),
                hostname: format!("laptop{d}"),
                user: self.login(user),
                addresses: vec![v4(d).to_string(), v6(d).to_string()],
                ..Device::default()
            });
        }
        for t in 0..self.tagged_devices {
            let index = self.user_devices + t;
            let service = t % SERVICES;
            let replica = t / SERVICES;
            let routes: Vec<String> = if t < ROUTERS {
                vec![format!("10.{t}.0.0/16")]
            } else {
                Vec::new()
            };
            devices.push(Device {
                id: index.to_string(),
                name: format!("svc{service}-{replica}.example.ts.net"),
                hostname: format!("svc{service}-{replica}"),
                tags: vec![format!("tag:svc{service}")],
                addresses: vec![v4(index).to_string(), v6(index).to_string()],
                advertised_routes: routes.clone(),
                enabled_routes: routes,
                ..Device::default()
            });
        }
        Inventory {
            users,
            devices,
            domains: vec!["example.com".to_owned()],
        }
    }

    /// The policy as a JSON value: teams, services, hosts, and `rules` rules split
    /// 40% grants, 40% ACLs, 20% SSH.
    fn policy_value(&self, members_per_team: usize) -> serde_json::Value {
        let mut groups = serde_json::Map::new();
        for g in 0..TEAMS {
            let members: Vec<String> = (0..members_per_team)
                .map(|i| self.login((g + i * TEAMS) % self.users))
                .collect();
            groups.insert(format!("group:team{g}"), json!(members));
        }
        let mut tag_owners = serde_json::Map::new();
        for t in 0..SERVICES {
            tag_owners.insert(
                format!("tag:svc{t}"),
                json!([format!("group:team{}", t % TEAMS)]),
            );
        }
        let mut hosts = serde_json::Map::new();
        for h in 0..HOSTS {
            hosts.insert(
                format!("host{h}"),
                json!(format!("10.{}.1.0/24", h % ROUTERS)),
            );
        }
        let grants = self.rules * 2 / 5;
        let acls = self.rules * 2 / 5;
        let ssh = self.rules - grants - acls;
        let grant_rules: Vec<_> = (0..grants)
            .map(|k| {
                json!({
                    "src": [format!("group:team{}", k % TEAMS)],
                    "dst": [format!("tag:svc{}", k % SERVICES)],
                    "ip": ["tcp:443", "tcp:8000-8100"],
                })
            })
            .collect();
        let mut acl_rules: Vec<_> = (0..acls)
            .map(|k| {
                json!({
                    "action": "accept",
                    "src": [format!("group:team{}", (k * 3) % TEAMS), self.login(k * 7 % self.users)],
                    "dst": [
                        format!("tag:svc{}:22,5432", (k + 50) % SERVICES),
                        format!("host{}:80", k % HOSTS),
                    ],
                })
            })
            .collect();
        // A few broad rules, as every real policy has.
        if let Some(first) = acl_rules.first_mut() {
            *first = json!({"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]});
        }
        if let Some(second) = acl_rules.get_mut(1) {
            *second =
                json!({"action": "accept", "src": ["*"], "dst": ["tag:svc0:53"], "proto": "udp"});
        }
        let ssh_rules: Vec<_> = (0..ssh)
            .map(|k| {
                json!({
                    "action": if k % 4 == 0 { "check" } else { "accept" },
                    "src": [format!("group:team{}", (k * 5) % TEAMS)],
                    "dst": [format!("tag:svc{}", k % SERVICES)],
                    "users": ["root", "autogroup:nonroot"],
                })
            })
            .collect();
        json!({
            "groups": groups,
            "tagOwners": tag_owners,
            "hosts": hosts,
            "grants": grant_rules,
            "acls": acl_rules,
            "ssh": ssh_rules,
        })
    }

    /// The policy as HuJSON, with a comment above each section as people write them.
    pub fn policy_text(&self) -> String {
        let members = self.users / TEAMS;
        let value = self.policy_value(members);
        let mut out = String::from("// Generated tailnet policy for benchmarks.\n{\n");
        if let Some(object) = value.as_object() {
            for (key, section) in object {
                let _ = writeln!(out, "\t// {key}");
                let body = serde_json::to_string_pretty(section).unwrap_or_default();
                let _ = writeln!(out, "\t{}: {},", json!(key), body.replace('\n', "\n\t"));
            }
        }
        out.push_str("}\n");
        out
    }

    /// The policy as plain pretty JSON (valid HuJSON too), with team sizes raised until the
    /// file reaches `bytes`.
    pub fn large_policy_json(&self, bytes: usize) -> String {
        let mut members = self.users / TEAMS;
        loop {
            let text =
                serde_json::to_string_pretty(&self.policy_value(members)).unwrap_or_default();
            if text.len() >= bytes || members >= self.users {
                return text;
            }
            members += 10;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator at a small scale yields a policy the engine accepts and whose rules reach
    /// the devices the benchmark measures.
    #[test]
    fn small_tailnet_builds_and_has_traffic() {
        let tailnet = Tailnet::new(400, 2_000, 200);
        let inventory = tailnet.inventory();
        assert_eq!(inventory.devices.len(), 2_000);
        let engine = policy::Engine::build(
            policy::Policy::parse(&tailnet.policy_text()).unwrap(),
            &inventory,
        )
        .unwrap();
        let device = tailnet.tagged_device_name(7);
        assert!(!engine.packet_filter(&device).unwrap().is_empty());
        assert!(!engine.who_can(&device, 443, 6).unwrap().is_empty());

        let big = tailnet.large_policy_json(100_000);
        assert!(big.len() >= 100_000);
        let mut doc = hujson::Document::parse(&big).unwrap();
        let path = [hujson::Seg::Key("groups"), hujson::Seg::Key("group:team7")];
        assert!(doc.add_string(&path, "new-hire@example.com").unwrap());
        let edited: serde_json::Value = serde_json::from_str(doc.text()).unwrap();
        let members = edited["groups"]["group:team7"].as_array().unwrap();
        assert_eq!(members.last().unwrap(), "new-hire@example.com");
    }
}
