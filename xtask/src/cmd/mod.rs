//! The commands, one module each with its own `run`; `main.rs` only parses and dispatches.
//! What they share lives here: the global options, turned into a [`Ctx`] (checkout, layout,
//! config, fetch options), and the inputs every proof (e2e, soak, bench) builds the same way.

pub mod bench;
pub mod build;
pub mod bundle;
pub mod e2e;
pub mod e2e_table;
pub mod fetch;
pub mod outdated;
pub mod patch;
pub mod soak;
pub mod tool;
pub mod verify;

use crate::config::{BundleConfig, SourceKind};
use crate::fetch::FetchOptions;
use crate::layout::Layout;
use crate::pipeline::Options;
use anyhow::Result;
use bundle_format::Arch;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct Global {
    /// The pinned inputs.
    #[arg(long, global = true, default_value = "bundle.toml")]
    config: PathBuf,
    /// The architecture to build the bundle for, in place of bundle.toml's `arch` (amd64).
    /// Another architecture than amd64 builds, without --work-dir, in a work dir of its own
    /// (target/k3s-gvisor/linux-<arch>), cross-compiled on an amd64 machine
    /// (scripts/install-deps.sh installs the cross compiler, the target's libraries and qemu).
    #[arg(long, global = true, env = "K3S_GVISOR_ARCH", value_parser = parse_arch)]
    arch: Option<Arch>,
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
    /// Where cargo builds the runtime crates (default: the work dir's `cargo`). Checkouts
    /// given the same one compile their dependencies once (the bundle test's second checkout);
    /// two of them must not build at the same time.
    #[arg(long, global = true, env = "K3S_GVISOR_CARGO_TARGET")]
    cargo_target_dir: Option<PathBuf>,
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

/// What every command starts from: the checkout, where things go, the pinned inputs and how
/// sources may be fetched.
pub struct Ctx {
    pub layout: Layout,
    pub config: BundleConfig,
    /// bundle.toml (or --config), absolute.
    pub config_path: PathBuf,
    /// The pin set (--pins), absolute.
    pub pins: Option<PathBuf>,
    pub offline: bool,
    mirror: Vec<String>,
    source: Option<SourceKind>,
}

impl Ctx {
    pub fn new(repo: &Path, global: Global) -> Result<Ctx> {
        let in_repo = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                repo.join(p)
            }
        };
        let pins = global.pins.as_ref().map(in_repo);
        let config_path = in_repo(&global.config);
        let mut config = BundleConfig::load_with_pins(&config_path, pins.as_deref())?;
        // The bundle's architecture is a fact every stage reads from the config.
        if let Some(arch) = global.arch {
            config.bundle.arch = arch;
        }
        // Another pin set builds other binaries: never into the same place as bundle.toml's.
        let pinned_work = pins.as_ref().map(|p| {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            repo.join("target/k3s-gvisor").join(format!("pins-{stem}"))
        });
        let mut layout = Layout::new(
            repo,
            global.cache_dir,
            global.work_dir.clone().or(pinned_work.clone()),
        );
        if global.work_dir.is_none() {
            layout.work = Layout::work_for_arch(&layout.work, config.bundle.arch);
        }
        layout.shared_cargo_target = global.cargo_target_dir;
        if let Some(d) = global.dist_dir {
            layout.dist = d;
        } else if pinned_work.is_some() {
            layout.dist = layout.work.join("dist");
        }
        Ok(Ctx {
            layout,
            config,
            config_path,
            pins,
            offline: global.offline,
            mirror: global.mirror,
            source: global.source,
        })
    }

    /// How sources are fetched: --mirror and K3S_GVISOR_MIRROR, --offline, --source.
    pub fn fetch_options(&self) -> Result<FetchOptions> {
        Ok(FetchOptions::new(
            crate::fetch::mirrors_from(&self.mirror)?,
            self.offline,
            self.source,
        ))
    }

    /// Pipeline options: the components left out (`without`) or the only ones built (`only`).
    pub fn options(&self, without: Vec<String>, only: Vec<String>) -> Result<Options> {
        Ok(Options {
            fetch: self.fetch_options()?,
            without,
            only,
        })
    }

    /// An e2e/soak/bench `--host` (e2e::HOSTS, or a path to a runsc), its runsc built if it is
    /// a pinned test tool.
    pub fn host(&self, name: &str) -> Result<crate::e2e::Host> {
        crate::e2e::host(name, |tool| {
            crate::tools::tool_path(tool, &self.layout.cache, self.offline)
        })
    }

    /// What the proofs (e2e, soak, bench on the installed stack) run on: the whole bundle
    /// (built, or found up to date) and the repository's files they read.
    pub fn proof_inputs(&self) -> Result<ProofInputs> {
        let target = self.config.target()?;
        if target.is_cross() {
            anyhow::bail!(
                "the proofs install and run the bundle on this machine, which is {}: a linux-{} \
                 bundle cannot run here (build it with `cargo xtask bundle --arch {}`, check it \
                 with `scripts/check-arch.sh {}`)",
                target.host,
                target.arch,
                target.arch,
                target.arch
            );
        }
        let options = self.options(Vec::new(), Vec::new())?;
        let tarball = bundle::timed(&self.config, &self.layout, &options, false)?;
        Ok(ProofInputs {
            tarball,
            scripts: self.layout.repo.join("tests/e2e"),
            known_errors: self.layout.repo.join("docs/k3s-log.md"),
        })
    }
}

/// `--arch`: one of the architectures bundles are built for (the error names them).
fn parse_arch(text: &str) -> Result<Arch, String> {
    text.parse()
}

/// The bundle and the repository's files a proof reads.
pub struct ProofInputs {
    /// The `.tar.gz`.
    pub tarball: PathBuf,
    /// tests/e2e: the scenario and step scripts.
    pub scripts: PathBuf,
    /// docs/k3s-log.md: the error lines k3s may log, each with why it is harmless.
    pub known_errors: PathBuf,
}
