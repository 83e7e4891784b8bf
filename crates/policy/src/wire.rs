//! What the control plane sends each device, in Tailscale's wire format (`tailcfg` JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    #[serde(rename = "First")]
    pub first: u16,
    #[serde(rename = "Last")]
    pub last: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPortRange {
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "Ports")]
    pub ports: PortRange,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapGrant {
    #[serde(rename = "Dsts")]
    pub dsts: Vec<String>,
    #[serde(rename = "CapMap")]
    pub cap_map: serde_json::Map<String, Json>,
}

/// `tailcfg.FilterRule`. `IPProto` is omitted for the default protocol set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterRule {
    #[serde(rename = "SrcIPs")]
    pub src_ips: Vec<String>,
    #[serde(rename = "DstPorts", default, skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<NetPortRange>,
    #[serde(rename = "IPProto", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_proto: Vec<u8>,
    #[serde(rename = "CapGrant", default, skip_serializing_if = "Vec::is_empty")]
    pub cap_grant: Vec<CapGrant>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SshPrincipal {
    #[serde(rename = "nodeIP")]
    pub node_ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshAction {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_agent_forwarding: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_local_port_forwarding: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_remote_port_forwarding: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hold_and_delegate: String,
}

/// `tailcfg.SSHRule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshRule {
    pub principals: Vec<SshPrincipal>,
    pub ssh_users: BTreeMap<String, String>,
    pub action: SshAction,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accept_env: Vec<String>,
}

/// The base URL of `check` actions; devices call back here to have the session approved.
pub const CHECK_URL_BASE: &str = "https://unused";

impl SshAction {
    pub fn accept() -> SshAction {
        SshAction {
            accept: true,
            allow_agent_forwarding: true,
            allow_local_port_forwarding: true,
            allow_remote_port_forwarding: true,
            hold_and_delegate: String::new(),
        }
    }

    pub fn check() -> SshAction {
        SshAction {
            accept: false,
            allow_agent_forwarding: false,
            allow_local_port_forwarding: false,
            allow_remote_port_forwarding: false,
            hold_and_delegate: format!(
                "{CHECK_URL_BASE}/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER"
            ),
        }
    }
}

/// Everything one device receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceWire {
    pub packet_filter: Vec<FilterRule>,
    pub ssh_rules: Vec<SshRule>,
}
