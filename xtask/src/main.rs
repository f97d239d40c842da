//! `cargo xtask <task>`: the project's own automation, in Rust so that it runs wherever
//! cargo does.
//!
//! - `ci`: what CI runs: install what the tests need (the default model), then
//!   `cargo fmt --check`, `cargo clippy -D warnings`, `cargo doc` with `-D warnings`, and
//!   every test of the workspace.
//! - `fetch-model`: download the default model into the cache (as `greta generate` would).
//! - `build-kernels`: compile kernels/*.hip for gfx942, gfx90a and sm_90a (see kernels.rs).
//! - `gen-wgmma`: write kernels/greta_wgmma.h, the wgmma inline-asm wrappers (wgmma.rs).
//! - `repro NAME` / `repro --check DIR`: run an experiment of experiments/ into an artifact
//!   directory, or re-run and compare one (see repro.rs, docs/reproducibility.md).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

mod kernels;
mod plots;
mod repro;
mod wgmma;

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
            let timeline = match args.get(1).map(String::as_str) {
                None => false,
                Some("--timeline") => true,
                Some(other) => bail!(
                    "build-kernels: unknown argument {other:?}; accepted: --timeline (the NVIDIA objects with every block's wait stamped, into target/kernels-timeline)"
                ),
            };
            kernels::build(&root(), timeline).map(|m| eprintln!("manifest: {}", m.display()))
        }
        Some("gen-wgmma") => wgmma::write(&root()),
        Some("repro") => {
            let code = repro::main(&args[1..])?;
            std::process::exit(code)
        }
        Some(other) => {
            bail!("unknown task {other:?}; accepted: ci, fetch-model, build-kernels, gen-wgmma, repro")
        }
        None => bail!(
            "usage: cargo xtask <task>; tasks: ci, fetch-model, build-kernels, gen-wgmma, repro"
        ),
    }
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}

pub(crate) fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {what}");
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

pub(crate) fn fetch_model() -> Result<()> {
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

/// System packages the tests and the kernel build need (llvm-19 twice: objdump for the MFMA
/// check, readelf for the spill check; apt takes a package named twice once): Debian's clang-19/lld-19/llvm-19
/// (kernels for gfx942/gfx90a, their disassembly) and libamdhip64-5 (the HIP runtime the
/// hiprt tests load; no GPU needed). Installed with apt-get when missing and running as root.
fn install_system_packages() -> Result<()> {
    let have_cmd = |c: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let have_lib = Command::new("sh")
        .args(["-c", "ldconfig -p | grep -q libamdhip64.so"])
        .status()
        .is_ok_and(|s| s.success());
    let mut need: Vec<&str> = Vec::new();
    for (cmd, pkg) in [
        ("clang-19", "clang-19"),
        ("ld.lld-19", "lld-19"),
        ("llvm-objdump-19", "llvm-19"),
        ("llvm-readelf-19", "llvm-19"),
    ] {
        if !have_cmd(cmd) {
            need.push(pkg);
        }
    }
    if !have_lib {
        need.push("libamdhip64-5");
    }
    // The repro report's plots draw their text with DejaVu Sans.
    if !std::path::Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists()
        && std::env::var_os("GRETA_FONT").is_none()
    {
        need.push("fonts-dejavu-core");
    }
    if need.is_empty() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        bail!(
            "missing system packages {need:?}: run `sudo apt-get install {}` and try again",
            need.join(" ")
        );
    }
    run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    run(
        &format!("apt-get install {}", need.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&need)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn ci() -> Result<()> {
    install_system_packages()?;
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
    // The API docs build without a warning: a link to a renamed or private item, or an
    // index read as a link, fails here rather than rotting (session 65 found 15).
    run(
        "cargo doc (RUSTDOCFLAGS=-D warnings)",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // Every kernel for every target (gfx942, gfx90a, sm_90a), with the matrix-unit check.
    eprintln!("==> cargo xtask build-kernels");
    let manifest = kernels::build(&root(), false)?;
    eprintln!("kernel manifest: {}", manifest.display());
    // The parity tests need the default model: fetch it once, up front, with its progress
    // shown, rather than inside a test whose output is captured.
    fetch_model()?;
    run("cargo test", cargo().args(["test", "--workspace"]))?;
    // The smoke experiment, then its re-check: a reproducible run must reproduce.
    eprintln!("==> cargo xtask repro smoke");
    let exp = repro::load(&root().join("experiments/smoke.toml"))?;
    let text = std::fs::read_to_string(root().join("experiments/smoke.toml"))?;
    let (dir, complete) = repro::run_experiment(&exp, &text, "", &repro::artifacts_root())?;
    if !complete {
        bail!("the smoke experiment is incomplete: {}", dir.display());
    }
    eprintln!("==> cargo xtask repro --check {}", dir.display());
    if !repro::check(&dir)? {
        bail!("re-running the smoke experiment gave different results");
    }
    Ok(())
}
