//! The tailnet as tidegate last read it: users, devices and the policy file, with the directory
//! and the policy engine's inventory built from them. Read at most every 30 seconds and shared
//! by every request in between, so creating a request makes no tailnet call of its own.

use std::sync::Arc;

use crate::entitlement::Directory;

/// One reading of the tailnet.
#[derive(Debug)]
pub struct Live {
    pub users: Vec<tailnet::User>,
    pub devices: Vec<tailnet::Device>,
    pub policy_text: String,
    pub directory: Arc<Directory>,
    /// Users and devices as the policy engine takes them.
    pub inventory: policy::Inventory,
    /// Whether the policy has any `tests` or `sshTests` (without, there is nothing to preflight).
    pub has_tests: bool,
    /// The policy's own tests as it stands (worked out once per reading).
    baseline: std::sync::OnceLock<Baseline>,
}

/// The policy's tests on the tailnet as read, before any grant.
#[derive(Debug, Default)]
pub struct Baseline {
    /// The tests that already fail (none, normally): not blamed on a grant.
    pub failures: Vec<policy::TestFailure>,
    /// The addresses of the devices the tests use as sources (see
    /// [`policy::Engine::test_source_ips`]).
    pub test_sources: std::collections::BTreeSet<std::net::IpAddr>,
}

impl Live {
    /// Builds the directory and inventory; the error says what did not read.
    pub fn new(
        users: Vec<tailnet::User>,
        devices: Vec<tailnet::Device>,
        policy_text: String,
    ) -> Result<Live, String> {
        let policy = policy::Policy::parse(&policy_text)
            .map_err(|e| format!("the tailnet's policy file does not parse: {e}"))?;
        let directory = Arc::new(Directory::from_tailnet(&users, &policy.file));
        let has_tests = !policy.file.tests.is_empty() || !policy.file.ssh_tests.is_empty();
        let inventory: policy::Inventory = serde_json::from_value(serde_json::json!({
            "users": users,
            "devices": devices,
        }))
        .map_err(|e| format!("the tailnet's users and devices do not read as an inventory: {e}"))?;
        Ok(Live {
            users,
            devices,
            policy_text,
            directory,
            inventory,
            has_tests,
            baseline: std::sync::OnceLock::new(),
        })
    }

    /// The policy's tests as they stand; `compute` works them out the first time they are
    /// asked for.
    pub fn baseline(&self, compute: impl FnOnce() -> Baseline) -> &Baseline {
        self.baseline.get_or_init(compute)
    }
}
