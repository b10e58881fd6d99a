//! `cargo xtask`: the k3s-gvisor build pipeline. See ARCHITECTURE.md for the map.

mod bench;
mod bench_stack;
mod build;
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
mod timings;
mod tools;
mod ui;
mod verify;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use config::{BundleConfig, SourceKind};
use fetch::FetchOptions;
use layout::{Layout, Variant};
use pipeline::{Options, Report};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, verify and release the k3s-gvisor bundle",
    version
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// The pinned inputs.
    #[arg(long, global = true, default_value = "bundle.toml")]
    config: PathBuf,
    /// A pin set that replaces some components' releases (bundle-mission.toml: the mission's
    /// runc v1.3.3 and containerd v2.1.4), same recipes and patches. Without --work-dir, its
    /// builds go to target/k3s-gvisor/pins-<file stem>, and its tarballs there too.
    #[arg(long, global = true, env = "K3S_GVISOR_PINS")]
    pins: Option<PathBuf>,
    /// Content-addressed download cache (shareable between checkouts).
    #[arg(long, global = true, env = "K3S_GVISOR_CACHE")]
    cache_dir: Option<PathBuf>,
    /// Build state: patched trees, binaries, logs, stamps.
    #[arg(long, global = true, env = "K3S_GVISOR_WORK")]
    work_dir: Option<PathBuf>,
    /// Where tarballs go.
    #[arg(long, global = true)]
    dist_dir: Option<PathBuf>,
    /// Use only the caches and `file://` mirrors; fail naming whatever is missing.
    #[arg(long, global = true)]
    offline: bool,
    /// A mirror of GitHub's commit archives, tried before GitHub: it replaces the
    /// `https://github.com/` prefix (a directory or `file://` URL laid out like the URL path,
    /// or an `http(s)://` base). Repeatable; K3S_GVISOR_MIRROR adds more (space-separated).
    #[arg(long, global = true)]
    mirror: Vec<String>,
    /// Where upstream sources may come from: only commit archives (mirrors, GitHub), only a git
    /// fetch, or only the Go module proxy (default: all of them, in that order).
    #[arg(long, global = true, value_enum)]
    source: Option<SourceKind>,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, patch and build everything, then write dist/<name>.tar.gz and its .sha256.
    Bundle {
        /// Print how long each stage took, and this run against the last run that did work.
        #[arg(long)]
        timings: bool,
        /// Build a bundle without k3s on purpose (quick work on the rest); its file name and
        /// manifest say so.
        #[arg(long)]
        without_k3s: bool,
    },
    /// The end-to-end proof: bundle (cached), extract, `./install`, a pod, stop, uninstall; on
    /// this host and in gVisor.
    E2e {
        /// Where: `plain` (this host), `current` (gVisor built from the module proxy), the
        /// current gVisor in the shapes providers give it (`current-overlay`,
        /// `current-overlay-memory`, `current-ptrace`, `current-kvm`, `current-hostnet`,
        /// `current-small`), `gvisor-2025` / `gvisor-2023` (older gVisors users run, built from
        /// the module proxy: tests/tools.toml, docs/gvisor-generations.md), `seeds` (gvisor-2025
        /// without cap_last_cap: the seeds' provider's sandbox), `debian` (Debian's 2022 runsc),
        /// or a path to a runsc binary. The list: xtask/src/e2e.rs HOSTS.
        #[arg(long, default_values = ["current", "plain", "debian"])]
        host: Vec<String>,
        #[arg(long, value_enum, default_values_t = [e2e::Mode::Full, e2e::Mode::ControlPlaneOnly])]
        mode: Vec<e2e::Mode>,
        /// The sandbox's network: `interface` (eth0 with an address and a default route to a
        /// peer that routes nowhere, as users' sandboxes have) or `loopback` (no route: the
        /// installer picks the node IP).
        #[arg(long, value_enum, default_value_t = sandbox::Network::Interface)]
        network: sandbox::Network,
        /// `single` (one sandbox) or `two-nodes` (a server and an agent in two sandboxes on one
        /// bridge, tests/e2e/two-nodes.sh; `--mode control-plane-only` makes the server
        /// control-plane-only).
        #[arg(long, value_enum, default_value_t = e2e::Topology::Single)]
        topology: e2e::Topology,
        /// Instead of the scenario, a lifecycle run in each gVisor host (tests/e2e/lifecycle.sh):
        /// `pause` installs, starts pods and a Service, pauses the sandbox (`runsc pause`) for
        /// --pause-minutes, resumes it and checks that everything is back within 30 s;
        /// `checkpoint` does the same with `runsc checkpoint` and `runsc restore`.
        #[arg(long, value_enum)]
        lifecycle: Option<e2e::Lifecycle>,
        /// How long `--lifecycle` keeps the sandbox paused, or checkpointed before its restore
        /// (the recorded runs: 10).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        pause_minutes: u64,
    },
    /// Not in CI: one full-mode install sampled every 10 s (node Ready, restarts, RSS) for
    /// MINUTES minutes, then a summary.
    Soak {
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        minutes: u32,
        /// Where, as for `e2e --host`.
        #[arg(long, default_value = "current")]
        host: String,
        #[arg(long, value_enum, default_value_t = sandbox::Network::Interface)]
        network: sandbox::Network,
    },
    /// What the launcher costs a traced program, with every baseline measured in the same run
    /// (native, the seccomp filter alone, a tracer that only resumes, strace), on this host or
    /// inside a gVisor; prints a markdown table, writes JSON.
    Bench {
        /// Where: `plain`, `current`, `debian`, or a path to a runsc binary.
        #[arg(long, default_value = "plain")]
        host: String,
        /// Run everything (tracer, tracee, runsc) on this CPU.
        #[arg(long)]
        pin: Option<u32>,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Iterations of the non-path syscall loop (a).
        #[arg(long, default_value_t = 1_000_000)]
        n_syscall: u64,
        /// Iterations of the open loops (b), (b2), (c).
        #[arg(long, default_value_t = 20_000)]
        n_open: u64,
        /// Where the JSON report goes (default target/k3s-gvisor/bench/<host>.json).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Replace the table between `<!-- bench:<host> -->` markers in this file
        /// (`<!-- bench:stack-<host> -->` with --stack).
        #[arg(long)]
        update: Option<PathBuf>,
        /// Measure the installed stack instead (builds the bundle): a pod's loops against a
        /// container with no launcher, and on plain Linux k3s's idle CPU with and without the
        /// launcher.
        #[arg(long)]
        stack: bool,
        /// Measure what k3s's add-ons (traefik, metrics-server, local-storage) cost instead
        /// (builds the bundle): idle memory and node Ready with them on against off, alternating
        /// per round, and the bundle's size with and without them; `<!-- bench:addons-<host> -->`.
        #[arg(long, conflicts_with = "stack")]
        addons: bool,
        /// Measure k3s's Go runtime settings instead (builds the bundle): each SET (comma-
        /// separated VAR=value pairs ./install records for k3s, e.g. `GOGC=50`; repeatable)
        /// against the installer's default, alternating per round: idle RSS, k3s's idle CPU,
        /// the API's latency; `<!-- bench:memory-<host> -->`.
        #[arg(long = "memory", value_name = "SET", conflicts_with_all = ["stack", "addons"])]
        memory_sets: Vec<String>,
        /// With --stack: seconds of each idle-CPU window; with --addons and --memory: the idle
        /// wait before memory is read (and with --memory, the CPU window).
        #[arg(long, default_value_t = 60)]
        idle_seconds: u32,
        /// With --stack, in a sandbox: its network (as for e2e).
        #[arg(long, value_enum, default_value_t = sandbox::Network::Interface)]
        network: sandbox::Network,
    },
    /// What works where: a markdown table from the saved results of every host and mode
    /// `cargo xtask e2e` last ran (target/k3s-gvisor/e2e/*/outcome.json).
    E2eTable {
        /// Write it between `<!-- e2e:compatibility -->` markers in this file (README.md).
        #[arg(long)]
        update: Option<PathBuf>,
        /// Also write node Ready and memory per sandbox shape (full-mode runs) between
        /// `<!-- bench:shapes -->` markers in this file (BENCHMARKS.md).
        #[arg(long)]
        shapes: Option<PathBuf>,
    },
    /// Fetch only: bring every pinned source into the cache, verified, and say who served it.
    Fetch,
    /// Fetch, patch and build the upstream binaries into target/k3s-gvisor/out/<variant>/bin.
    Build {
        /// Build upstream as released, without our patches (for the patch proofs).
        #[arg(long)]
        unpatched: bool,
        /// Only this component (repeatable; default: all).
        #[arg(long)]
        component: Vec<String>,
    },
    /// Patches: `--check` prints, per component, whether each patch applies to a fresh tree.
    Patch {
        #[arg(long)]
        check: bool,
        /// Only this component.
        #[arg(long)]
        component: Option<String>,
    },
    /// Check a bundle tarball: outer sha256, SHA256SUMS, no extra file, manifest, links; and
    /// offline, the release files beside it (SHA256SUMS, the SBOM, the signatures' digests),
    /// naming the commands for what needs the network (signature, provenance).
    Verify {
        tarball: PathBuf,
        /// The GitHub repository (`owner/name`) the release came from, for the signing
        /// identity (default: $GITHUB_REPOSITORY).
        #[arg(long)]
        repository: Option<String>,
    },
    /// Build (once, cached) a pinned test tool from tests/tools.toml and print its path:
    /// runsc (current gVisor), runsc-2025 and runsc-2023 (older gVisors), runsc-seeds
    /// (gvisor-2025 without cap_last_cap), cnitool, crictl, actionlint.
    Tool { name: String },
    /// Write the release assets (tarball, .sha256, CycloneDX SBOM) and notes: `--dry-run`.
    Release(release::ReleaseArgs),
    /// For every pinned component (bundle.toml, or the --pins set) and test tool
    /// (tests/tools.toml): the newest release of its line (same major.minor) the Go module proxy
    /// offers, beside the pin.
    Outdated,
}

/// The whole pipeline, timed; returns the tarball.
fn bundle(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    timings: bool,
) -> Result<PathBuf> {
    let start = Instant::now();
    let mut report = Report::default();
    let tarball = pipeline::bundle(config, layout, opts, &mut report)?;
    let total = start.elapsed();
    if !report.did_work() {
        ui::step(
            "bundle",
            "nothing changed: no fetch, patch, build or package work done",
        );
    }
    let history = timings::record(layout, total, report.did_work())?;
    if timings {
        eprint!("{}", timings::render(&report, total, &history));
    }
    Ok(tarball)
}

fn e2e_host(name: &str, layout: &Layout, offline: bool) -> Result<e2e::Host> {
    e2e::host(name, |tool| tools::tool_path(tool, &layout.cache, offline))
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

fn run(cli: Cli) -> Result<()> {
    let repo = repo_root();
    let in_repo = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            repo.join(p)
        }
    };
    let pins = cli.global.pins.as_ref().map(in_repo);
    // Another pin set builds other binaries: never into the same place as bundle.toml's.
    let pinned_work = pins.as_ref().map(|p| {
        let stem = p.file_stem().unwrap_or_default().to_string_lossy();
        repo.join("target/k3s-gvisor").join(format!("pins-{stem}"))
    });
    let mut layout = Layout::new(
        &repo,
        cli.global.cache_dir,
        cli.global.work_dir.or(pinned_work.clone()),
    );
    if let Some(d) = cli.global.dist_dir {
        layout.dist = d;
    } else if pinned_work.is_some() {
        layout.dist = layout.work.join("dist");
    }
    let config_path = in_repo(&cli.global.config);
    let config = BundleConfig::load_with_pins(&config_path, pins.as_deref())?;
    let offline = cli.global.offline;
    let opts = |without: Vec<String>, only: Vec<String>| -> Result<Options> {
        Ok(Options {
            fetch: FetchOptions::new(
                fetch::mirrors_from(&cli.global.mirror)?,
                offline,
                cli.global.source,
            ),
            without,
            only,
        })
    };
    match cli.command {
        Command::Bundle {
            timings,
            without_k3s,
        } => {
            let without = if without_k3s {
                vec!["k3s".to_string()]
            } else {
                Vec::new()
            };
            let tarball = bundle(&config, &layout, &opts(without, Vec::new())?, timings)?;
            println!("{}", tarball.display());
        }
        Command::E2e {
            host,
            mode,
            network,
            topology,
            lifecycle,
            pause_minutes,
        } => {
            if lifecycle.is_some() && topology != e2e::Topology::Single {
                bail!("--lifecycle runs one node: leave out --topology two-nodes");
            }
            // Hosts first: a mistyped name fails before minutes of bundling.
            let hosts = host
                .iter()
                .map(|h| e2e_host(h, &layout, offline))
                .collect::<Result<Vec<_>>>()?;
            // Hosts this machine cannot give (their probes said why) need no bundle.
            if hosts.iter().all(|h| h.skipped.is_some()) {
                let mut outcomes = Vec::new();
                for h in &hosts {
                    for m in &mode {
                        outcomes.push(e2e::skip(&layout.work.join("e2e"), h, *m)?);
                    }
                }
                eprint!("{}", e2e::render(&outcomes, 0));
                return Ok(());
            }
            let tarball = bundle(&config, &layout, &opts(Vec::new(), Vec::new())?, false)?;
            // The upgrade steps (tests/e2e/upgrade.sh, single node, full mode) install a second
            // bundle, the same with the next version, over the first.
            let next = if topology == e2e::Topology::Single
                && mode.contains(&e2e::Mode::Full)
                && lifecycle.is_none()
            {
                let next = next_bundle::build(
                    &config_path,
                    pins.as_deref(),
                    &config,
                    &layout,
                    &opts(Vec::new(), Vec::new())?,
                    &layout.work.join("e2e/next-bundle"),
                )?;
                let stages: Vec<String> = next
                    .stages
                    .iter()
                    .map(|(name, took)| format!("{name} {:.0?}", took))
                    .collect();
                ui::step(
                    "e2e",
                    format!(
                        "second bundle {} for the upgrade steps: {:.0?} ({})",
                        next.version,
                        next.took,
                        if stages.is_empty() {
                            "nothing rebuilt".to_string()
                        } else {
                            stages.join(", ")
                        }
                    ),
                );
                Some(next.tarball)
            } else {
                None
            };
            // The scenario installs the .tar.zst where the bundle has one, and the upgrade
            // steps the next bundle's .tar.gz, so each e2e run unpacks both formats.
            let zst = tarball.with_extension("zst");
            let installed = if zst.is_file() { &zst } else { &tarball };
            let crictl = tools::tool_path("crictl", &layout.cache, offline)?;
            let inputs = e2e::Inputs {
                tarball: installed,
                tarball_next: next.as_deref(),
                work: &layout.work.join("e2e"),
                crictl: &crictl,
                scripts: &layout.repo.join("tests/e2e"),
                known_errors: &layout.repo.join("docs/k3s-log.md"),
                network,
            };
            let mut outcomes = Vec::new();
            for h in hosts.iter().filter(|_| lifecycle.is_some()) {
                let pause = std::time::Duration::from_secs(pause_minutes * 60);
                let lifecycle = lifecycle.expect("filtered");
                outcomes.push(e2e::run_lifecycle(&inputs, h, lifecycle, pause)?);
            }
            for h in hosts.iter().filter(|_| lifecycle.is_none()) {
                for m in &mode {
                    outcomes.push(match topology {
                        e2e::Topology::Single => e2e::run(&inputs, h, *m)?,
                        e2e::Topology::TwoNodes => e2e::run_two_nodes(&inputs, h, *m)?,
                    });
                }
            }
            eprint!(
                "{}",
                e2e::render(&outcomes, std::fs::metadata(&tarball)?.len())
            );
            let failed: Vec<&str> = outcomes
                .iter()
                .filter(|o| o.failed() && !o.gaps_allowed)
                .map(|o| o.label.as_str())
                .collect();
            if !failed.is_empty() {
                bail!("e2e failed on: {}", failed.join(", "));
            }
        }
        Command::Soak {
            minutes,
            host,
            network,
        } => {
            let host = e2e_host(&host, &layout, offline)?;
            let tarball = bundle(&config, &layout, &opts(Vec::new(), Vec::new())?, false)?;
            soak::run(
                &tarball,
                &layout.work.join("e2e"),
                &layout.repo.join("tests/e2e"),
                &layout.repo.join("docs/k3s-log.md"),
                &host,
                network,
                minutes,
            )?;
        }
        Command::Bench {
            host,
            pin,
            rounds,
            n_syscall,
            n_open,
            json,
            update,
            stack,
            addons,
            memory_sets,
            idle_seconds,
            network,
        } => {
            let host_arg = host;
            let host = e2e_host(&host_arg, &layout, offline)?;
            if stack || addons || !memory_sets.is_empty() {
                let tarball = bundle(&config, &layout, &opts(Vec::new(), Vec::new())?, false)?;
                let stack_opts = bench_stack::StackOptions {
                    tarball: &tarball,
                    work: &layout.work.join("bench"),
                    scripts: &layout.repo.join("tests/e2e"),
                    loop_sources: &layout.repo.join("crates/launcher/benches"),
                    host: &host,
                    host_arg: &host_arg,
                    network,
                    rounds,
                    n_syscall,
                    n_open,
                    idle_seconds,
                    memory_sets: &memory_sets,
                };
                let (report, label) = if addons {
                    (bench_stack::run_addons(&stack_opts)?, "addons")
                } else if !memory_sets.is_empty() {
                    (bench_stack::run_memory(&stack_opts)?, "memory")
                } else {
                    (bench_stack::run(&stack_opts)?, "stack")
                };
                let label = format!("{label}-{}", host.label);
                let json =
                    json.unwrap_or_else(|| layout.work.join("bench").join(format!("{label}.json")));
                std::fs::write(&json, serde_json::to_vec_pretty(&report)?)?;
                let table = bench_stack::markdown(&report);
                print!("{table}");
                eprintln!("JSON: {}", json.display());
                if let Some(file) = update {
                    bench::update(&file, &label, &table)?;
                    eprintln!("updated the {label} table in {}", file.display());
                }
                return Ok(());
            }
            let mut report = Report::default();
            let crates = pipeline::build_crates(&config, &layout, &mut report)?;
            let launcher = crates
                .iter()
                .find(|p| p.ends_with("launcher"))
                .context("bundle.toml builds no launcher crate")?;
            let result = bench::run(
                &bench::BenchOptions {
                    launcher,
                    runsc: host.runsc.as_deref(),
                    label: &host.label,
                    host: &host_arg,
                    pin,
                    rounds,
                    n_syscall,
                    n_open,
                },
                &layout.repo.join("crates/launcher/benches"),
            )?;
            let json = json.unwrap_or_else(|| {
                layout
                    .work
                    .join("bench")
                    .join(format!("{}.json", host.label))
            });
            std::fs::create_dir_all(json.parent().unwrap())?;
            std::fs::write(&json, serde_json::to_vec_pretty(&result)?)?;
            let table = bench::markdown(&result);
            print!("{table}");
            eprintln!("JSON: {}", json.display());
            if let Some(file) = update {
                bench::update(&file, &host.label, &table)?;
                eprintln!("updated the {} table in {}", host.label, file.display());
            }
        }
        Command::E2eTable { update, shapes } => {
            let table = e2e::compatibility_table(&layout.work.join("e2e"))?;
            print!("{table}");
            if let Some(file) = update {
                fsutil::replace_between_markers(&file, "e2e:compatibility", &table)?;
                eprintln!("updated the compatibility table in {}", file.display());
            }
            if let Some(file) = shapes {
                let table = e2e::shapes_table(&layout.work.join("e2e"))?;
                print!("\n{table}");
                fsutil::replace_between_markers(&file, "bench:shapes", &table)?;
                eprintln!("updated the shapes table in {}", file.display());
            }
        }
        Command::Fetch => {
            // fetch() says, for each component, who served it.
            let fetch = opts(Vec::new(), Vec::new())?.fetch;
            for c in &config.components {
                fetch::fetch(c, &layout, &fetch)?;
            }
        }
        Command::Build {
            unpatched,
            component,
        } => {
            let variant = if unpatched {
                Variant::Unpatched
            } else {
                Variant::Patched
            };
            let mut report = Report::default();
            pipeline::build_components(
                &config,
                &layout,
                &opts(Vec::new(), component)?,
                variant,
                &mut report,
            )?;
            println!("{}", layout.out_bin(variant).display());
        }
        Command::Patch { check, component } => {
            if !check {
                bail!("`cargo xtask patch` only checks (--check); `cargo xtask bundle` applies patches");
            }
            let mut all_ok = true;
            let fetch = opts(Vec::new(), Vec::new())?.fetch;
            for c in &config.components {
                if component.as_ref().is_some_and(|n| n != &c.name) {
                    continue;
                }
                let patches = patch::component_patches(&layout, &c.name, &c.version)?;
                println!("{} {} ({} patches):", c.name, c.version, patches.len());
                let tree = fetch::fetch(c, &layout, &fetch)?;
                all_ok &= patch::check(
                    &tree.dir,
                    c.vendor,
                    &patches,
                    &layout,
                    &mut std::io::stdout(),
                )?;
            }
            if !all_ok {
                bail!("some patches do not apply (see above)");
            }
        }
        Command::Release(args) => release::command(&config, &layout, args)?,
        Command::Outdated => {
            let tools = tools::pins::load(&tools::pins::default_pin_file())?;
            let go = go::Go::new(&layout, offline);
            let rows = outdated::rows(
                &outdated::pins(&config, &tools),
                &outdated::GoProxy { go: &go },
            );
            print!("{}", outdated::render(&rows));
        }
        Command::Tool { name } => {
            println!(
                "{}",
                tools::tool_path(&name, &layout.cache, offline)?.display()
            );
        }
        Command::Verify {
            tarball,
            repository,
        } => {
            let v = verify::verify(&tarball)
                .with_context(|| format!("verify {}", tarball.display()))?;
            println!(
                "{}: OK ({} files; {} {} for {})",
                tarball.display(),
                v.files,
                v.manifest.name,
                v.manifest.version,
                v.manifest.arch
            );
            // The release's own files, as far as they can be checked here (issue 29).
            let signer = signing::Signer::new(repository, &v.manifest.version);
            for finding in signing::check_beside(&tarball, &signer)
                .with_context(|| format!("verify the release files beside {}", tarball.display()))?
            {
                match finding {
                    signing::Finding::Checked(what) => println!("  checked: {what}"),
                    signing::Finding::NotChecked(what) => println!("  not checked here: {what}"),
                }
            }
        }
    }
    Ok(())
}
