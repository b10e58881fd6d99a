//! `cargo xtask`: the k3s-gvisor build pipeline. See ARCHITECTURE.md for the map.

mod bench;
mod bench_stack;
mod build;
mod cmd;
mod config;
mod digest;
mod e2e;
mod elf;
mod fetch;
mod fsutil;
mod gittree;
mod go;
mod image;
mod k3s_log;
mod layout;
mod next_bundle;
mod outdated;
mod package;
mod patch;
mod pipeline;
mod prepare;
mod release;
mod sandbox;
mod sbom;
mod signing;
mod soak;
#[cfg(test)]
mod stage_tests;
mod stamp;
mod tarball;
mod target;
mod timings;
mod tools;
mod ui;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, verify and release the k3s-gvisor bundle",
    version
)]
struct Cli {
    #[command(flatten)]
    global: cmd::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, patch and build everything, then write dist/<name>.tar.gz and its .sha256.
    Bundle(cmd::bundle::BundleArgs),
    /// The end-to-end proof: bundle (cached), extract, `./install`, a pod, stop, uninstall; on
    /// this host and in gVisor.
    E2e(cmd::e2e::E2eArgs),
    /// Not in CI: one full-mode install sampled every 10 s (node Ready, restarts, RSS) for
    /// MINUTES minutes, then a summary.
    Soak(cmd::soak::SoakArgs),
    /// What the launcher costs a traced program, with every baseline measured in the same run
    /// (native, the seccomp filter alone, a tracer that only resumes, strace), on this host or
    /// inside a gVisor; prints a markdown table, writes JSON.
    Bench(cmd::bench::BenchArgs),
    /// What works where: a markdown table from the saved results of every host and mode
    /// `cargo xtask e2e` last ran (target/k3s-gvisor/e2e/*/outcome.json).
    E2eTable(cmd::e2e_table::E2eTableArgs),
    /// Fetch only: bring every pinned source into the cache, verified, and say who served it.
    Fetch,
    /// Fetch, patch and build the upstream binaries into target/k3s-gvisor/out/<variant>/bin.
    Build(cmd::build::BuildArgs),
    /// Patches: `--check` prints, per component, whether each patch applies to a fresh tree.
    Patch(cmd::patch::PatchArgs),
    /// Check a bundle tarball: outer sha256, SHA256SUMS, no extra file, manifest, links; and
    /// offline, the release files beside it (SHA256SUMS, the SBOM, the signatures' digests),
    /// naming the commands for what needs the network (signature, provenance).
    Verify(cmd::verify::VerifyArgs),
    /// Build (once, cached) a pinned test tool from tests/tools.toml and print its path:
    /// runsc (current gVisor), runsc-2025 and runsc-2023 (older gVisors), runsc-seeds
    /// (gvisor-2025 without cap_last_cap), cnitool, crictl, actionlint.
    Tool(cmd::tool::ToolArgs),
    /// Write the release assets (tarball, .sha256, CycloneDX SBOM) and notes: `--dry-run`.
    Release(release::ReleaseArgs),
    /// For every pinned component (bundle.toml, or the --pins set) and test tool
    /// (tests/tools.toml): the newest release of its line (same major.minor) the Go module proxy
    /// offers, beside the pin.
    Outdated,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The checkout xtask works on: xtask lives at <repo>/xtask.
///
/// `cargo run` (and so `cargo xtask`) sets CARGO_MANIFEST_DIR when it runs the binary, naming
/// the checkout it was invoked in. That is preferred over the path compiled in, because two
/// checkouts sharing one CARGO_TARGET_DIR share one `target/debug/xtask`, and cargo, finding
/// it fresh, may run the binary the other checkout built (the bundle test's second checkout
/// did exactly that, and the next test's `cargo xtask build` went looking for bundle.toml in
/// the deleted temp checkout). The compiled-in path serves a binary run directly.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().unwrap().to_path_buf()
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = cmd::Ctx::new(&repo_root(), cli.global)?;
    match cli.command {
        Command::Bundle(args) => cmd::bundle::run(&ctx, args),
        Command::E2e(args) => cmd::e2e::run(&ctx, args),
        Command::Soak(args) => cmd::soak::run(&ctx, args),
        Command::Bench(args) => cmd::bench::run(&ctx, args),
        Command::E2eTable(args) => cmd::e2e_table::run(&ctx, args),
        Command::Fetch => cmd::fetch::run(&ctx),
        Command::Build(args) => cmd::build::run(&ctx, args),
        Command::Patch(args) => cmd::patch::run(&ctx, args),
        Command::Verify(args) => cmd::verify::run(&ctx, args),
        Command::Tool(args) => cmd::tool::run(&ctx, args),
        Command::Release(args) => release::command(&ctx.config, &ctx.layout, args),
        Command::Outdated => cmd::outdated::run(&ctx),
    }
}
