//! `tidegate`: just-in-time access and access governance for Tailscale tailnets.
//!
//! This binary is the edge: it parses arguments, reads files, prints, and maps outcomes to exit
//! codes (0 success, 1 a policy or test failure, 2 usage or I/O errors).

mod emulator_cmd;
mod policy_cmd;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tidegate",
    version,
    about = "Just-in-time access for Tailscale tailnets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with a policy file offline: check, test, compile, and ask who can reach what.
    Policy {
        #[command(subcommand)]
        command: policy_cmd::PolicyCommand,
    },
    /// Run a local emulator of the Tailscale API v2 over a state file (for tests and demos).
    Emulator(emulator_cmd::EmulatorArgs),
}

/// How a command ended when it did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// The input was understood and the answer is "no" (invalid policy, failed tests): exit 1.
    Rejected(String),
    /// Bad usage or unreadable input: exit 2.
    Usage(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Usage(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy { command } => policy_cmd::run(command),
        Command::Emulator(args) => emulator_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Rejected(message)) => {
            if !message.is_empty() {
                eprintln!("{message}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("tidegate: {message}");
            ExitCode::from(2)
        }
    }
}
