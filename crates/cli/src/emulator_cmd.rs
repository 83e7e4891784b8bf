//! `tidegate emulator`: serves a state file as a Tailscale API v2 until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::Failure;

#[derive(Args)]
pub struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// The tailnet to serve: users, devices, policy, tokens, OAuth clients (JSON).
    #[arg(long)]
    state: PathBuf,
    /// Milliseconds added to every API request.
    #[arg(long, default_value_t = 0)]
    latency: u64,
    /// Save the state back to the file after every change.
    #[arg(long)]
    persist: bool,
}

pub fn run(args: EmulatorArgs) -> Result<(), Failure> {
    let state = emulator::load_state(&args.state).map_err(|e| Failure::Usage(e.to_string()))?;
    let options = emulator::Options {
        latency: Duration::from_millis(args.latency),
        persist: args.persist.then(|| args.state.clone()),
        ..emulator::Options::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
        let running = emulator::serve(listener, state, options)
            .await
            .map_err(|e| Failure::Usage(e.to_string()))?;
        println!("{}", running.url());
        println!(
            "Tailscale API v2 emulator for {} (Ctrl-C to stop)",
            args.state.display()
        );
        tokio::signal::ctrl_c().await?;
        running.shutdown().await;
        Ok(())
    })
}
