//! A client written by others: the `tailscale` package from PyPI drives the emulator
//! (crates/emulator/tests/python/tailscale_client.py). scripts/test.sh installs it and sets
//! TIDEGATE_PYTHON; without it the test fails in CI and says it is skipped elsewhere.

use std::path::Path;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pypi_tailscale_client_works_against_the_emulator() {
    let Some(python) = std::env::var_os("TIDEGATE_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "TIDEGATE_PYTHON is not set: run the tests with scripts/test.sh, which installs the client"
        );
        eprintln!("skipped: TIDEGATE_PYTHON is not set (scripts/test.sh sets it)");
        return;
    };
    let emu = start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/tailscale_client.py");
    let url = emu.running.url().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .env("EMULATOR_URL", url)
            .env("API_TOKEN", ALICE)
            .env("OAUTH_ID", CLIENT_ID)
            .env("OAUTH_SECRET", CLIENT_SECRET)
            .env("DEVICE_ID", "n0005CNTRL")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all passed"), "{stdout}\n{stderr}");
}
