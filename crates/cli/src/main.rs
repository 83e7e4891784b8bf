//! `tidegate`: just-in-time access and access governance for Tailscale tailnets.
//!
//! This binary is the edge: it parses arguments, reads files, prints, and maps outcomes to exit
//! codes (0 success, 1 a policy or test failure, 2 usage or I/O errors).

mod client_cmd;
mod emulator_cmd;
mod governance_cmd;
mod machine_cmd;
mod policy_cmd;
mod review_cmd;
mod server_cmd;
mod table;

use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tidegate",
    version,
    about = "Just-in-time access for Tailscale tailnets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// The configuration file (TOML; see examples/tidegate.toml).
        #[arg(long)]
        config: std::path::PathBuf,
        /// Listen here instead of the config's `[server] listen` (replicas on one machine).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Try tidegate locally: an emulated tailnet, the server on SQLite, tokens for the example
    /// users.
    Demo {
        /// Where the server listens: ADDRESS:PORT, or a bare PORT on 127.0.0.1.
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
        /// The managed group, e.g. group:prod-access.
        group: String,
        /// The configuration file (TOML).
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
    /// Sync the tailnet's inventory now: users, invites, devices, keys, the policy's rules.
    Sync(governance_cmd::SyncArgs),
    /// The inventory from the last sync (and what changed).
    Inventory {
        #[command(subcommand)]
        command: governance_cmd::InventoryCommand,
    },
    /// Sync and run the compliance checks: exit 0 when all pass, 1 when any fails.
    Check(governance_cmd::SyncArgs),
    /// Evidence for auditors: every grant, check run and access review of a period, as
    /// report.html, CSV and JSON files with a manifest.json of their SHA-256.
    Evidence(review_cmd::EvidenceArgs),
    /// Shell completions: `source <(tidegate completions bash)`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on standard output, or one page per command into a directory.
    Man {
        /// Write tidegate.1 and a page per subcommand (tidegate-request.1, ...) here.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    #[command(flatten)]
    Client(client_cmd::ClientCommand),
}

/// The command line: the derived commands, with the client's connection flags (`--server`,
/// `--token`, `--json`, `--utc`) added to the commands that talk to a server and to no others
/// (global below them, so `token list` and `break-glass review` have them too).
fn cli_command() -> clap::Command {
    let mut cli = Cli::command();
    let client: Vec<String> = cli
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .filter(|name| client_cmd::ClientCommand::has_subcommand(name))
        .collect();
    for name in client {
        cli = cli.mut_subcommand(name, client_cmd::Connection::augment_args);
    }
    // `token list|revoke` talk to the server unless given --config; `token create` ignores them.
    cli.mut_subcommand("token", client_cmd::Connection::augment_args)
}

/// The connection flags of the command that was run (defaults where it has none).
fn connection(matches: &clap::ArgMatches) -> client_cmd::Connection {
    matches
        .subcommand()
        .filter(|(_, sub)| sub.try_get_one::<String>("server").is_ok())
        .and_then(|(_, sub)| {
            // Below a command group (`token list`), the leaf holds the values.
            let leaf = sub.subcommand().map_or(sub, |(_, leaf)| leaf);
            client_cmd::Connection::from_arg_matches(leaf).ok()
        })
        .unwrap_or_default()
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
    /// Waited as long as asked and nothing was decided: exit 3.
    TimedOut(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Usage(e.to_string())
    }
}

fn main() -> ExitCode {
    let matches = cli_command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let connection = connection(&matches);
    let default_level = match cli.command {
        Command::Serve { .. } | Command::Demo { .. } | Command::Emulator(_) => "info",
        _ => "warn",
    };
    if let Err(Failure::Usage(message) | Failure::Rejected(message) | Failure::TimedOut(message)) =
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
        Command::Token { command } => block_on(server_cmd::token(command, &connection)),
        Command::Audit { command } => block_on(server_cmd::audit(command)),
        Command::Machine { command } => block_on(machine_cmd::run(command)),
        Command::Adopt { group, config } => block_on(server_cmd::adopt(&config, &group)),
        Command::Client(command) => block_on(client_cmd::run(&connection, command)),
        Command::Sync(args) => block_on(governance_cmd::sync(args)),
        Command::Inventory { command } => block_on(governance_cmd::inventory(command)),
        Command::Check(args) => block_on(governance_cmd::check(args)),
        Command::Evidence(args) => block_on(review_cmd::evidence(args)),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut cli_command(),
                "tidegate",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { output } => man_pages(output.as_deref()),
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
        Err(Failure::TimedOut(message)) => {
            eprintln!("{message}");
            ExitCode::from(3)
        }
    }
}

/// `tidegate man`: clap's own roff generator over the same command tree the parser uses.
fn man_pages(output: Option<&std::path::Path>) -> Result<(), Failure> {
    let cli = cli_command();
    let Some(dir) = output else {
        return clap_mangen::Man::new(cli)
            .render(&mut std::io::stdout())
            .map_err(Failure::from);
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let write = |name: &str, command: clap::Command| -> Result<(), Failure> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(command).render(&mut out)?;
        std::fs::write(&path, out)
            .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))
    };
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("tidegate-{}", sub.get_name());
        write(
            &name,
            sub.clone()
                .display_name(name.clone())
                .bin_name(format!("tidegate {}", sub.get_name())),
        )?;
    }
    write("tidegate", cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag and argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&cli_command(), "tidegate", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    #[test]
    fn client_flags_are_only_on_client_commands() {
        let cli = cli_command();
        let has_server = |name: &str| {
            cli.find_subcommand(name)
                .is_some_and(|s| s.get_arguments().any(|a| a.get_id() == "server"))
        };
        for client in ["request", "list", "approve", "show", "token"] {
            assert!(has_server(client), "{client} lacks --server");
        }
        for local in ["serve", "demo", "policy", "emulator", "adopt", "audit"] {
            assert!(!has_server(local), "{local} shows --server");
        }
        cli.debug_assert();
    }
}
