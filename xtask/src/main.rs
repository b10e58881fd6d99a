//! `cargo xtask`: the k3s-gvisor build pipeline. See ARCHITECTURE.md for the map.

mod build;
mod config;
mod digest;
mod e2e;
mod fetch;
mod fsutil;
mod image;
mod k3s;
mod layout;
mod manifest;
mod package;
mod patch;
mod pipeline;
mod release;
mod sbom;
#[cfg(test)]
mod stage_tests;
mod stamp;
mod timings;
mod tools;
mod ui;
mod verify;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use config::{BundleConfig, SourceKind};
use layout::{Layout, Variant};
use pipeline::{Options, PackageInputs, Report};
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
    /// Content-addressed download cache (shareable between checkouts).
    #[arg(long, global = true, env = "K3S_GVISOR_CACHE")]
    cache_dir: Option<PathBuf>,
    /// Build state: patched trees, binaries, logs, stamps.
    #[arg(long, global = true, env = "K3S_GVISOR_WORK")]
    work_dir: Option<PathBuf>,
    /// Where tarballs go.
    #[arg(long, global = true)]
    dist_dir: Option<PathBuf>,
    /// Use only the cache; fail naming whatever is missing.
    #[arg(long, global = true)]
    offline: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, patch and build everything, then write dist/<name>.tar.gz and its .sha256.
    Bundle {
        /// Where upstream sources come from (default: each component's `source` in bundle.toml).
        #[arg(long, value_enum)]
        source: Option<SourceKind>,
        /// Print how long each stage took, and this run against the last run that did work.
        #[arg(long)]
        timings: bool,
        /// Fail if k3s cannot be built or fetched, instead of bundling without it.
        #[arg(long)]
        require_k3s: bool,
    },
    /// The end-to-end proof: bundle (cached), extract, `./install` and a pod (or, without k3s,
    /// a CRI pod sandbox + busybox container), stop, uninstall; on this host and in gVisor.
    E2e {
        /// Where: `plain` (this host), `current` (gVisor built from the module proxy),
        /// `debian` (Debian's 2022 runsc), or a path to a runsc binary.
        #[arg(long, default_values = ["current", "plain", "debian"])]
        host: Vec<String>,
        /// `full` or `control-plane-only`.
        #[arg(long, default_values = ["full", "control-plane-only"])]
        mode: Vec<String>,
    },
    /// Fetch only: bring every pinned source into the cache, verified.
    Fetch {
        #[arg(long, value_enum)]
        source: Option<SourceKind>,
    },
    /// Fetch, patch and build the upstream binaries into target/k3s-gvisor/out/<variant>/bin.
    Build {
        /// Build upstream as released, without our patches (for the patch proofs).
        #[arg(long)]
        unpatched: bool,
    },
    /// Patches: `--check` prints, per component, whether each patch applies to a fresh tree.
    Patch {
        #[arg(long)]
        check: bool,
        /// Only this component.
        #[arg(long)]
        component: Option<String>,
    },
    /// Check a bundle tarball: outer sha256, SHA256SUMS, no extra file, manifest.
    Verify { tarball: PathBuf },
    /// Build (once, cached) a pinned test tool from tests/tools.toml and print its path:
    /// runsc (current gVisor), cnitool, crictl, actionlint.
    Tool { name: String },
    /// Control-plane smoke test of a k3s binary: `k3s server --disable-agent` must answer
    /// /readyz, on this machine or inside gVisor.
    K3sSmoke {
        /// The k3s binary (default: the one the pipeline built).
        #[arg(long)]
        k3s: Option<PathBuf>,
        /// Run inside this runsc (e.g. `$(cargo xtask tool runsc)`); without it, on the host.
        #[arg(long)]
        runsc: Option<PathBuf>,
        /// Seconds to wait for /readyz.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
    },
    /// Write the release assets (tarball, .sha256, CycloneDX SBOM) and notes: `--dry-run`.
    Release(release::ReleaseArgs),
}

/// The whole pipeline; returns the tarball.
fn bundle(
    config: &BundleConfig,
    layout: &Layout,
    opts: Options,
    require_k3s: bool,
    timings: bool,
) -> Result<PathBuf> {
    let start = Instant::now();
    let mut report = Report::default();
    let components =
        pipeline::build_components(config, layout, &opts, Variant::Patched, &mut report)?;
    let k3s = pipeline::build_k3s(config, layout, &opts, require_k3s, &mut report)?;
    let crates = pipeline::build_crates(config, layout, &mut report)?;
    let pause = layout.crates_bin().join("pause");
    let images = pipeline::build_images(config, layout, &opts, &pause, &mut report)?;
    let inputs = PackageInputs {
        components: &components,
        k3s,
        crates: &crates,
        images,
    };
    let tarball = pipeline::package(config, layout, inputs, &mut report)?;
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
    Ok(match name {
        "plain" => e2e::Host {
            label: "plain-linux".into(),
            runsc: None,
            gaps_allowed: false,
        },
        "current" => e2e::Host {
            label: "gvisor-current".into(),
            runsc: Some(tools::tool_path("runsc", &layout.cache, offline)?),
            gaps_allowed: false,
        },
        "debian" => e2e::Host {
            label: "gvisor-debian-2022".into(),
            runsc: Some("runsc".into()),
            gaps_allowed: true,
        },
        path => e2e::Host {
            label: "gvisor-custom".into(),
            runsc: Some(PathBuf::from(path)),
            gaps_allowed: false,
        },
    })
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn repo_root() -> PathBuf {
    // xtask lives at <repo>/xtask.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cli: Cli) -> Result<()> {
    let repo = repo_root();
    let mut layout = Layout::new(&repo, cli.global.cache_dir, cli.global.work_dir);
    if let Some(d) = cli.global.dist_dir {
        layout.dist = d;
    }
    let config_path = if cli.global.config.is_absolute() {
        cli.global.config.clone()
    } else {
        repo.join(&cli.global.config)
    };
    let config = BundleConfig::load(&config_path)?;
    let offline = cli.global.offline;
    match cli.command {
        Command::Bundle {
            source,
            timings,
            require_k3s,
        } => {
            let tarball = bundle(
                &config,
                &layout,
                Options { offline, source },
                require_k3s,
                timings,
            )?;
            println!("{}", tarball.display());
        }
        Command::E2e { host, mode } => {
            let tarball = bundle(
                &config,
                &layout,
                Options {
                    offline,
                    source: None,
                },
                false,
                false,
            )?;
            let crictl = tools::tool_path("crictl", &layout.cache, offline)?;
            let scenario = layout.repo.join("tests/e2e/scenario.sh");
            let hosts = host
                .iter()
                .map(|h| e2e_host(h, &layout, offline))
                .collect::<Result<Vec<_>>>()?;
            let mut outcomes = Vec::new();
            for h in &hosts {
                for m in &mode {
                    outcomes.push(e2e::run(
                        &tarball,
                        &layout.work.join("e2e"),
                        h,
                        m,
                        &crictl,
                        &scenario,
                    )?);
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
        Command::Fetch { source } => {
            for c in &config.components {
                let tree = fetch::fetch(c, source.unwrap_or(c.source), &layout, offline)?;
                ui::step(
                    "fetch",
                    format!(
                        "{} {}: {} ({})",
                        c.name,
                        c.version,
                        if tree.downloaded {
                            "downloaded and verified"
                        } else {
                            "cached, verified"
                        },
                        tree.dir.display()
                    ),
                );
            }
        }
        Command::Build { unpatched } => {
            let variant = if unpatched {
                Variant::Unpatched
            } else {
                Variant::Patched
            };
            let mut report = Report::default();
            pipeline::build_components(
                &config,
                &layout,
                &Options {
                    offline,
                    source: None,
                },
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
            for c in &config.components {
                if component.as_ref().is_some_and(|n| n != &c.name) {
                    continue;
                }
                let patches = patch::patch_files(&layout.patches(&c.name))?;
                println!("{} {} ({} patches):", c.name, c.version, patches.len());
                let tree = fetch::fetch(c, c.source, &layout, offline)?;
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
        Command::K3sSmoke {
            k3s: binary,
            runsc,
            timeout,
        } => {
            let binary = binary.unwrap_or_else(|| layout.work.join("out/k3s/bin/k3s"));
            let data_dir = tempfile::tempdir()?;
            let host = runsc.map(k3s::Host::Runsc).unwrap_or(k3s::Host::Plain);
            let server_args: Vec<String> =
                vec!["--disable=traefik,servicelb,metrics-server,local-storage,coredns".into()];
            let report = k3s::control_plane_smoke(&k3s::ControlPlaneSmoke {
                k3s: &binary,
                data_dir: data_dir.path(),
                host,
                server_args: &server_args,
                time_limit: std::time::Duration::from_secs(timeout),
            })?;
            println!(
                "/readyz: {} after {}s",
                report.readyz.trim(),
                report.seconds_to_ready
            );
        }
        Command::Tool { name } => {
            println!(
                "{}",
                tools::tool_path(&name, &layout.cache, offline)?.display()
            );
        }
        Command::Verify { tarball } => {
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
        }
    }
    Ok(())
}
