//! Preflight: before a request is stored, its grant is simulated with the policy engine on the
//! live policy and inventory, and the policy's own `tests` and `sshTests` are run. A grant they
//! would refuse is refused when asked, naming the test, instead of after approval (when the
//! control plane refuses the write).

use crate::entitlement::Strategy;
use crate::live::Live;

/// Why the policy's own tests refuse a grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy's own {test} refuses this grant: {message}")]
pub struct Refusal {
    /// `tests[N]` or `sshTests[N]`.
    pub test: String,
    pub message: String,
}

/// Runs the policy's tests with the grant in place. `Ok` when they pass, or when the grant
/// does not change what they look at (roles, keys); a test that already fails without the
/// grant is not blamed on it.
pub fn check(
    live: &Live,
    strategy: &Strategy,
    login: &str,
    devices: &[String],
) -> Result<(), Refusal> {
    if !live.has_tests {
        return Ok(());
    }
    let refusal = |f: &policy::TestFailure| Refusal {
        test: f.test.clone(),
        message: f.message.clone(),
    };
    let failures =
        |text: &str, inventory: &policy::Inventory| -> Option<Vec<policy::TestFailure>> {
            // A policy the engine cannot build is not this grant's to judge: the write will say.
            let parsed = policy::Policy::parse(text).ok()?;
            let engine = policy::Engine::build(parsed, inventory).ok()?;
            Some(engine.run_tests())
        };
    let with = match strategy {
        Strategy::Group { group, .. } => {
            let Ok(mut doc) = hujson::Document::parse(&live.policy_text) else {
                return Ok(());
            };
            let path = [hujson::Seg::Key("groups"), hujson::Seg::Key(group)];
            if doc.add_strings(&path, &[login]).is_err() {
                return Ok(());
            }
            failures(doc.text(), &live.inventory)
        }
        Strategy::Posture { attribute, value } => {
            let mut inventory = live.inventory.clone();
            for d in &mut inventory.devices {
                if devices.contains(&d.node_id) || devices.contains(&d.id) {
                    d.posture_attributes
                        .insert(attribute.clone(), value.clone());
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
    let before =
        live.baseline_failures(|| failures(&live.policy_text, &live.inventory).unwrap_or_default());
    match with
        .iter()
        .find(|f| !before.iter().any(|b| b.test == f.test))
    {
        Some(new) => Err(refusal(new)),
        None => Ok(()),
    }
}
