//! Preflight: before a request is stored, its grant is simulated with the policy engine on the
//! live policy and inventory, and the policy's own `tests` and `sshTests` are run. A grant they
//! would refuse is refused when asked, naming the test, instead of after approval (when the
//! control plane refuses the write).

use crate::entitlement::Strategy;
use crate::live::{Baseline, Live};

/// Why the policy's own tests refuse a grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy's own {test} refuses this grant: {message}")]
pub struct Refusal {
    /// `tests[N]` or `sshTests[N]`.
    pub test: String,
    pub message: String,
}

/// The policy's engine on `text` and `inventory`, or `None` when it cannot be built (a policy
/// the engine cannot build is not this grant's to judge: the write will say).
fn engine(text: &str, inventory: &policy::Inventory) -> Option<policy::Engine> {
    let parsed = policy::Policy::parse(text).ok()?;
    policy::Engine::build(parsed, inventory).ok()
}

fn baseline(live: &Live) -> &Baseline {
    live.baseline(|| match engine(&live.policy_text, &live.inventory) {
        Some(engine) => Baseline {
            failures: engine.run_tests(),
            test_sources: engine.test_source_ips(),
        },
        None => Baseline::default(),
    })
}

/// Runs the policy's tests with the grant in place. `Ok` when they pass, or when the grant
/// does not change what they look at (roles, keys, a posture attribute on a device no test
/// starts from); a test that already fails without the grant is not blamed on it.
pub fn check(
    live: &Live,
    strategy: &Strategy,
    login: &str,
    devices: &[String],
) -> Result<(), Refusal> {
    if !live.has_tests {
        return Ok(());
    }
    let failures =
        |text: &str, inventory: &policy::Inventory| engine(text, inventory).map(|e| e.run_tests());
    let with = match strategy {
        Strategy::Group { .. } | Strategy::Rule { .. } => {
            let Ok(mut doc) = hujson::Document::parse(&live.policy_text) else {
                return Ok(());
            };
            let Some(Ok(located)) = strategy.policy_list().map(|l| l.locate(&doc)) else {
                return Ok(());
            };
            if doc.add_strings(&located.path(), &[login]).is_err() {
                return Ok(());
            }
            failures(doc.text(), &live.inventory)
        }
        Strategy::Posture { attribute, value } => {
            let granted =
                |d: &policy::Device| devices.contains(&d.node_id) || devices.contains(&d.id);
            // Postures apply to sources only: without a test starting from these devices,
            // the engine need not be built again (the common case, and most of the cost).
            let sources = &baseline(live).test_sources;
            let tested = live
                .inventory
                .devices
                .iter()
                .filter(|d| granted(d))
                .flat_map(|d| &d.addresses)
                .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
                .any(|ip| sources.contains(&ip));
            if !tested {
                return Ok(());
            }
            let mut inventory = live.inventory.clone();
            for d in inventory.devices.iter_mut().filter(|d| granted(d)) {
                d.posture_attributes
                    .insert(attribute.clone(), value.clone());
            }
            failures(&live.policy_text, &inventory)
        }
        Strategy::Tag { tag } => {
            let mut inventory = live.inventory.clone();
            for d in inventory
                .devices
                .iter_mut()
                .filter(|d| devices.contains(&d.node_id) || devices.contains(&d.id))
            {
                if !d.tags.contains(tag) {
                    d.tags.push(tag.clone());
                }
            }
            failures(&live.policy_text, &inventory)
        }
        Strategy::Role { .. } | Strategy::AuthKey { .. } => return Ok(()),
    };
    let Some(with) = with else {
        return Ok(());
    };
    if with.is_empty() {
        return Ok(());
    }
    let before = &baseline(live).failures;
    match with
        .iter()
        .find(|f| !before.iter().any(|b| b.test == f.test))
    {
        Some(new) => Err(refusal(new)),
        None => Ok(()),
    }
}

fn refusal(f: &policy::TestFailure) -> Refusal {
    Refusal {
        test: f.test.clone(),
        message: f.message.clone(),
    }
}
