//! Why the emulator could not start or load its state.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file: {0}")]
    StateJson(#[from] serde_json::Error),
    #[error("state file: {0}")]
    State(String),
    #[error("state file: the policy is refused: {0}")]
    Policy(String),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
