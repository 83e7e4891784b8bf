//! The policy file as typed data, with the line of every rule so answers can point at it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::PolicyError;

/// Every top-level key of a Tailscale policy file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyFile {
    #[serde(default)]
    pub acls: Option<Vec<Acl>>,
    #[serde(default)]
    pub grants: Option<Vec<Grant>>,
    #[serde(default)]
    pub ssh: Vec<SshRule>,
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub tag_owners: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub hosts: BTreeMap<String, String>,
    #[serde(default)]
    pub ipsets: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub postures: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub default_src_posture: Vec<String>,
    #[serde(default)]
    pub node_attrs: Vec<NodeAttr>,
    #[serde(default)]
    pub auto_approvers: AutoApprovers,
    #[serde(default)]
    pub tests: Vec<AclTest>,
    #[serde(default)]
    pub ssh_tests: Vec<SshTest>,
    #[serde(default)]
    pub randomize_client_port: bool,
    #[serde(default, rename = "disableIPv4")]
    pub disable_ipv4: bool,
    #[serde(
        default,
        rename = "OneCGNATRoute",
        skip_serializing_if = "Option::is_none"
    )]
    pub one_cgnat_route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derp_map: Option<Json>,
    /// Declared posture attribute types; not evaluated here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr_config: Option<Json>,
    /// Keys this model does not know; kept so nothing is lost, reported by `check` as warnings.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Acl {
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub src: Vec<String>,
    #[serde(default)]
    pub dst: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Legacy spelling of `src`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Legacy spelling of `dst`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src_posture: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    #[serde(default)]
    pub src: Vec<String>,
    #[serde(default)]
    pub dst: Vec<String>,
    #[serde(default)]
    pub ip: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<serde_json::Map<String, Json>>,
    #[serde(default)]
    pub via: Vec<String>,
    #[serde(default)]
    pub src_posture: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshRule {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub src: Vec<String>,
    #[serde(default)]
    pub dst: Vec<String>,
    #[serde(default)]
    pub users: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_env: Option<Vec<String>>,
    #[serde(default)]
    pub src_posture: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAttr {
    #[serde(default)]
    pub target: Vec<String>,
    #[serde(default)]
    pub attr: Vec<String>,
    #[serde(default)]
    pub ip_pool: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<Json>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoApprovers {
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub exit_node: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Json>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AclTest {
    #[serde(default)]
    pub src: Option<String>,
    /// Legacy spelling of `src`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(default)]
    pub accept: Vec<String>,
    /// Legacy spelling of `accept`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshTest {
    #[serde(default)]
    pub src: Option<String>,
    #[serde(default)]
    pub dst: Vec<String>,
    #[serde(default)]
    pub accept: Vec<String>,
    #[serde(default)]
    pub check: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A parsed policy: the typed file, its text, and the line of each rule.
#[derive(Debug, Clone)]
pub struct Policy {
    pub file: PolicyFile,
    pub text: String,
    pub acl_lines: Vec<usize>,
    pub grant_lines: Vec<usize>,
    pub ssh_lines: Vec<usize>,
}

impl Policy {
    /// Parses HuJSON policy text. Syntax errors carry line and column; a value of the wrong
    /// type is reported with the line and column serde found it at.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let doc = hujson::Document::parse(text)?;
        let json = doc.standardize();
        let file: PolicyFile = serde_json::from_str(&json).map_err(|e| PolicyError::Shape {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let lines = hujson::LineIndex::new(text);
        let lines_of = |key: &str| -> Vec<usize> {
            doc.root()
                .get(key)
                .and_then(|n| n.as_array())
                .map(|rules| rules.iter().map(|r| lines.line_col(r.start).0).collect())
                .unwrap_or_default()
        };
        Ok(Policy {
            acl_lines: lines_of("acls"),
            grant_lines: lines_of("grants"),
            ssh_lines: lines_of("ssh"),
            file,
            text: text.to_owned(),
        })
    }

    /// Parses policy bytes as read from a file. Bytes that are not UTF-8 are a syntax error
    /// at the first bad byte, located like every other syntax error.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Policy, PolicyError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Policy::parse(text),
            Err(e) => {
                let valid = e.valid_up_to();
                // The prefix before the bad byte is valid UTF-8 by definition.
                let prefix = String::from_utf8_lossy(&bytes[..valid]);
                let (line, column) = hujson::line_col(&prefix, valid);
                Err(PolicyError::Syntax {
                    line,
                    column,
                    reason: "invalid UTF-8".to_owned(),
                })
            }
        }
    }

    pub fn from_file(file: PolicyFile) -> Policy {
        Policy {
            file,
            text: String::new(),
            acl_lines: Vec::new(),
            grant_lines: Vec::new(),
            ssh_lines: Vec::new(),
        }
    }
}
