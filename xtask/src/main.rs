//! `cargo xtask <task>`: the project's own automation, in Rust so that it runs wherever
//! cargo does.
//!
//! - `ci`: what CI runs: install what the tests need (the default model), then
//!   `cargo fmt --check`, `cargo clippy -D warnings`, and every test of the workspace.
//! - `fetch-model`: download the default model into the cache (as `greta generate` would).
//! - `build-kernels`: compile kernels/*.hip for gfx942, gfx90a and sm_90a (see kernels.rs).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

mod kernels;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("fetch-model") => fetch_model(),
        Some("build-kernels") => {
            kernels::build(&root()).map(|m| eprintln!("manifest: {}", m.display()))
        }
        Some(other) => bail!("unknown task {other:?}; accepted: ci, fetch-model, build-kernels"),
        None => bail!("usage: cargo xtask <task>; tasks: ci, fetch-model, build-kernels"),
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {what}");
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn fetch_model() -> Result<()> {
    run(
        "fetch the default model",
        cargo().args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "greta-cli",
            "--",
            "generate",
            "--no-chat",
            "-n",
            "1",
            "--temperature",
            "0",
            "Hello",
        ]),
    )
}

fn ci() -> Result<()> {
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // The parity tests need the default model: fetch it once, up front, with its progress
    // shown, rather than inside a test whose output is captured.
    fetch_model()?;
    run("cargo test", cargo().args(["test", "--workspace"]))?;
    Ok(())
}
