//! `tidegate policy ...`: the policy engine on files, offline.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use policy::{Engine, Inventory, Origin, Policy, PolicyError};

use crate::Failure;
use crate::table;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Check that a policy file is valid (exit 0) or say why not (exit 1).
    Check {
        /// The policy file (HuJSON).
        file: PathBuf,
        /// Also check it against this tailnet's users (for user:*@domain).
        #[arg(long)]
        inventory: Option<PathBuf>,
    },
    /// Run the policy's own `tests` and `sshTests`.
    Test {
        /// The policy file (HuJSON).
        file: PathBuf,
        /// The tailnet's users and devices as JSON: {"users": [...], "devices": [...]}.
        #[arg(long)]
        inventory: Option<PathBuf>,
    },
    /// Print what each device receives: packet filter and SSH rules, in Tailscale's wire format.
    Compile {
        /// The policy file (HuJSON).
        file: PathBuf,
        /// The tailnet's users and devices as JSON: {"users": [...], "devices": [...]}.
        #[arg(long)]
        inventory: PathBuf,
        /// Only this device (name, hostname, ID or address).
        #[arg(long)]
        device: Option<String>,
    },
    /// Who can reach DEVICE:PORT, and through which rules.
    WhoCan {
        /// The policy file (HuJSON).
        file: PathBuf,
        /// The tailnet's users and devices as JSON: {"users": [...], "devices": [...]}.
        #[arg(long)]
        inventory: PathBuf,
        /// The destination device and port.
        #[arg(long, value_name = "DEVICE:PORT")]
        reach: String,
        /// The IP protocol: tcp, udp, icmp ...
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What a user, device or address can reach.
    Reach {
        /// The policy file (HuJSON).
        file: PathBuf,
        /// The tailnet's users and devices as JSON: {"users": [...], "devices": [...]}.
        #[arg(long)]
        inventory: PathBuf,
        /// A user's login, a device (name or address) or an IP.
        #[arg(long, value_name = "USER_OR_DEVICE")]
        from: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// May SRC reach DEVICE:PORT, and which rules allow it (with their lines).
    Explain {
        /// The policy file (HuJSON).
        file: PathBuf,
        /// The tailnet's users and devices as JSON: {"users": [...], "devices": [...]}.
        #[arg(long)]
        inventory: PathBuf,
        /// The source: a user's login, a device or an IP.
        #[arg(long, value_name = "USER_DEVICE_OR_IP")]
        src: String,
        /// The destination device and port.
        #[arg(long, value_name = "DEVICE:PORT")]
        dst: String,
        /// The IP protocol: tcp, udp, icmp ...
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))
}

fn load_inventory(path: Option<&Path>) -> Result<Inventory, Failure> {
    let Some(path) = path else {
        return Ok(Inventory::default());
    };
    let text = read(path)?;
    serde_json::from_str(&text).map_err(|e| {
        Failure::Usage(format!(
            "{}:{}:{}: not an inventory ({{\"users\": [...], \"devices\": [...]}}): {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

/// Syntax and shape errors point at FILE:LINE:COL; semantic errors are Tailscale's message.
fn rejected(file: &Path, error: PolicyError) -> Failure {
    let f = file.display();
    Failure::Rejected(match error {
        PolicyError::Syntax {
            line,
            column,
            reason,
        } => format!("{f}:{line}:{column}: {reason}"),
        PolicyError::Shape {
            line,
            column,
            message,
        } => format!("{f}:{line}:{column}: {message}"),
        PolicyError::TestsFailed(failures) => failures
            .iter()
            .map(|t| format!("FAIL {}: {}", t.test, t.message))
            .chain(["test(s) failed".to_owned()])
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    })
}

fn parse(file: &Path) -> Result<Policy, Failure> {
    // Bytes, not text: a file that is not UTF-8 is a syntax error at FILE:LINE:COL.
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
    let policy = Policy::parse_bytes(&bytes).map_err(|e| rejected(file, e))?;
    for key in policy.file.unknown.keys() {
        eprintln!("{}: warning: unknown top-level key {key:?}", file.display());
    }
    Ok(policy)
}

fn engine(file: &Path, inventory: Option<&Path>) -> Result<Engine, Failure> {
    let policy = parse(file)?;
    let inventory = load_inventory(inventory)?;
    Engine::build(policy, &inventory).map_err(|e| rejected(file, e))
}

/// Splits `DEVICE:PORT`.
fn device_port(text: &str) -> Result<(&str, u16), Failure> {
    let bad = || Failure::Usage(format!("{text:?}: expected DEVICE:PORT, e.g. db-1:5432"));
    let (device, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    Ok((device, port))
}

fn proto_number(text: &str) -> Result<u8, Failure> {
    match policy::syntax::parse_proto(text) {
        Ok(protos) => protos
            .first()
            .copied()
            .ok_or_else(|| Failure::Usage(format!("unknown protocol {text:?}"))),
        Err(e) => Err(Failure::Usage(e)),
    }
}

fn rules_cell(rules: &[Origin]) -> String {
    rules
        .iter()
        .map(Origin::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::Usage(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn map_query<T>(result: Result<T, PolicyError>) -> Result<T, Failure> {
    result.map_err(|e| Failure::Usage(e.to_string()))
}

pub fn run(command: PolicyCommand) -> Result<(), Failure> {
    match command {
        PolicyCommand::Check { file, inventory } => {
            engine(&file, inventory.as_deref())?;
            println!("{}: ok", file.display());
            Ok(())
        }
        PolicyCommand::Test { file, inventory } => {
            let engine = engine(&file, inventory.as_deref())?;
            let file_tests = &engine.policy.file;
            let total = file_tests.tests.len() + file_tests.ssh_tests.len();
            let failures = engine.run_tests();
            for failure in &failures {
                println!("FAIL {}: {}", failure.test, failure.message);
            }
            let summary = format!(
                "{} tests, {} sshTests: {} passed, {} failed",
                file_tests.tests.len(),
                file_tests.ssh_tests.len(),
                total - failures.len(),
                failures.len()
            );
            if failures.is_empty() {
                println!("{summary}");
                Ok(())
            } else {
                Err(Failure::Rejected(format!("{summary}\ntest(s) failed")))
            }
        }
        PolicyCommand::Compile {
            file,
            inventory,
            device,
        } => {
            let engine = engine(&file, Some(&inventory))?;
            match device {
                Some(name) => {
                    let wire = engine
                        .device_wire(&name)
                        .ok_or_else(|| Failure::Usage(format!("no device named {name:?}")))?;
                    let mut out = serde_json::Map::new();
                    out.insert(
                        name,
                        serde_json::to_value(wire).map_err(|e| Failure::Usage(e.to_string()))?,
                    );
                    print_json(&out)
                }
                None => print_json(&engine.compile_all()),
            }
        }
        PolicyCommand::WhoCan {
            file,
            inventory,
            reach,
            proto,
            json,
        } => {
            let engine = engine(&file, Some(&inventory))?;
            let (device, port) = device_port(&reach)?;
            let grantees = map_query(engine.who_can(device, port, proto_number(&proto)?))?;
            if json {
                return print_json(&grantees);
            }
            if grantees.is_empty() {
                println!("nobody can reach {device}:{port}/{proto}");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = grantees
                .iter()
                .map(|g| vec![g.kind.clone(), g.name.clone(), rules_cell(&g.rules)])
                .collect();
            print!("{}", table::render(&["KIND", "WHO", "RULES"], &rows));
            Ok(())
        }
        PolicyCommand::Reach {
            file,
            inventory,
            from,
            json,
        } => {
            let engine = engine(&file, Some(&inventory))?;
            let reachable = map_query(engine.reach(&from))?;
            if json {
                return print_json(&reachable);
            }
            if reachable.is_empty() {
                println!("{from} can reach nothing");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = reachable
                .iter()
                .map(|r| {
                    vec![
                        r.kind.clone(),
                        r.name.clone(),
                        r.proto.clone(),
                        r.ports.join(","),
                        rules_cell(&r.rules),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["KIND", "TARGET", "PROTO", "PORTS", "RULES"], &rows)
            );
            Ok(())
        }
        PolicyCommand::Explain {
            file,
            inventory,
            src,
            dst,
            proto,
            json,
        } => {
            let engine = engine(&file, Some(&inventory))?;
            let (device, port) = device_port(&dst)?;
            let access = map_query(engine.explain(&src, device, port, proto_number(&proto)?))?;
            if json {
                return print_json(&access);
            }
            let verdict = if access.allowed { "ALLOWED" } else { "DENIED" };
            println!("{src} -> {device}:{port}/{proto}: {verdict}");
            for rule in &access.rules {
                println!("  allowed by {rule}");
            }
            if access.allowed && !access.denied_addresses.is_empty() {
                println!("  but not from {}", access.denied_addresses.join(", "));
            }
            if !access.allowed {
                println!("  no rule allows it");
            }
            Ok(())
        }
    }
}
