//! Tailscale policy files: a typed model of every top-level key, validation with Tailscale's own
//! error messages, compilation for an inventory of users and devices into each device's packet
//! filter and SSH rules in Tailscale's wire format, the file's `tests` and `sshTests`, and the
//! questions people ask of a policy (who can reach this, what can X reach, which rule allows it).

mod engine;
pub mod inventory;
pub mod ip;
pub mod model;
pub mod posture;
mod query;
pub mod syntax;
mod tests_runner;
pub mod validate;
pub mod wire;

pub use engine::{Engine, Origin, Section};
pub use inventory::{Device, Inventory, User};
pub use model::{Policy, PolicyFile};
pub use query::{Access, Grantee, Reachable};
pub use tests_runner::TestFailure;

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not HuJSON: the line and column where parsing stopped.
    #[error("line {line}, column {column}: {reason}")]
    Syntax {
        line: usize,
        column: usize,
        reason: String,
    },
    /// HuJSON, but a value has the wrong shape (e.g. a string where a list belongs).
    #[error("line {line}, column {column}: {message}")]
    Shape {
        line: usize,
        column: usize,
        message: String,
    },
    /// A semantic error, worded as Tailscale's control plane words it.
    #[error("{0}")]
    Invalid(String),
    /// The inventory itself is malformed.
    #[error("inventory: {0}")]
    Inventory(String),
    /// A query named a user, device or address the tailnet does not have.
    #[error("{0}")]
    NotFound(String),
    /// The policy's own `tests` or `sshTests` failed.
    #[error("test(s) failed")]
    TestsFailed(Vec<TestFailure>),
}

impl From<hujson::Error> for PolicyError {
    fn from(e: hujson::Error) -> Self {
        PolicyError::Syntax {
            line: e.line,
            column: e.column,
            reason: e.reason,
        }
    }
}

impl PolicyError {
    /// The message the control plane's API would return in its error body.
    pub fn api_message(&self) -> String {
        match self {
            PolicyError::TestsFailed(_) => "test(s) failed".to_owned(),
            other => other.to_string(),
        }
    }
}

/// Parses, validates and compiles a policy for an inventory, then runs its `tests` and
/// `sshTests`, as the control plane does on every write.
pub fn load(text: &str, inventory: &Inventory) -> Result<Engine, PolicyError> {
    let engine = Engine::build(Policy::parse(text)?, inventory)?;
    let failures = engine.run_tests();
    if failures.is_empty() {
        Ok(engine)
    } else {
        Err(PolicyError::TestsFailed(failures))
    }
}
