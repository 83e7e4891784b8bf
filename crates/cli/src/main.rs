//! `tidegate`: just-in-time access and access governance for Tailscale tailnets.
//!
//! This binary is the edge: it parses arguments, reads files, prints, and maps outcomes to exit
//! codes (0 success, 1 a policy or test failure, 2 usage or I/O errors).

mod client_cmd;
mod emulator_cmd;
mod machine_cmd;
mod policy_cmd;
mod server_cmd;
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
    #[command(flatten)]
    connection: client_cmd::Connection,
    /// Log lines on standard error: readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The log level (error, warn, info, debug, trace) or a filter directive such as
    /// `tidegate_core=debug,info`; also from TIDEGATE_LOG. Default: info for the server, warn
    /// for other commands.
    #[arg(long, global = true, env = "TIDEGATE_LOG")]
    log_level: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to standard error so that a command's output (a token, JSON) stays clean.
fn init_logging(format: LogFormat, level: Option<&str>, default: &str) -> Result<(), Failure> {
    let directive = level.unwrap_or(default);
    let filter = tracing_subscriber::EnvFilter::try_new(directive).map_err(|e| {
        Failure::Usage(format!(
            "--log-level {directive:?} is neither a level nor a filter directive: {e}"
        ))
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| Failure::Usage(format!("cannot start logging: {e}")))
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
    /// Run the tidegate server (API and reconciler).
    Serve {
        #[arg(long)]
        config: std::path::PathBuf,
        /// Listen here instead of the config's `[server] listen` (replicas on one machine).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Try tidegate locally: an emulated tailnet, the server on SQLite, tokens for the example
    /// users.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Stop after this many seconds (default: at Ctrl-C).
        #[arg(long)]
        for_seconds: Option<u64>,
    },
    /// API tokens for the CLI and scripts.
    Token {
        #[command(subcommand)]
        command: server_cmd::TokenCommand,
    },
    /// Adopt a managed group: its standing members (there before tidegate managed it) lose
    /// their standing and become drift, removed where the entitlement says remove_drift.
    Adopt {
        group: String,
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Machine access for CI: trade the job's OIDC token for an auth key.
    Machine {
        #[command(subcommand)]
        command: machine_cmd::MachineCommand,
    },
    /// The hash-chained audit log: verify it, export it for auditors.
    Audit {
        #[command(subcommand)]
        command: server_cmd::AuditCommand,
    },
    #[command(flatten)]
    Client(client_cmd::ClientCommand),
}

/// Runs an async command on a fresh runtime.
fn block_on<F: std::future::Future<Output = Result<(), Failure>>>(f: F) -> Result<(), Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::from)?
        .block_on(f)
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
    let default_level = match cli.command {
        Command::Serve { .. } | Command::Demo { .. } | Command::Emulator(_) => "info",
        _ => "warn",
    };
    if let Err(Failure::Usage(message) | Failure::Rejected(message)) =
        init_logging(cli.log_format, cli.log_level.as_deref(), default_level)
    {
        eprintln!("tidegate: {message}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Policy { command } => policy_cmd::run(command),
        Command::Emulator(args) => emulator_cmd::run(args),
        Command::Serve { config, listen } => block_on(server_cmd::serve(&config, listen)),
        Command::Demo {
            listen,
            for_seconds,
        } => block_on(server_cmd::demo(&listen, for_seconds)),
        Command::Token { command } => block_on(server_cmd::token(command, &cli.connection)),
        Command::Audit { command } => block_on(server_cmd::audit(command)),
        Command::Machine { command } => block_on(machine_cmd::run(command)),
        Command::Adopt { group, config } => block_on(server_cmd::adopt(&config, &group)),
        Command::Client(command) => block_on(client_cmd::run(&cli.connection, command)),
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
