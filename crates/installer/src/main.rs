//! `installer`: what a k3s-gvisor bundle's `./install` runs.
//!
//! With no subcommand it installs; `start`, `stop`, `status`, `logs`, `doctor` and `uninstall`
//! manage an existing install, found through its data dir.
//!
//! Map:
//! - `preflight` refuses bad input before anything is written; `probe` measures the host;
//!   `shape` tells doctor what sandbox this is (overlay, platform, memory, CPUs, disk);
//!   `blockers` is the one table of gVisor blockers (preflight's workarounds, `doctor`);
//! - `cluster` decides which parts of k3s can run (kube-proxy, the service proxy, add-ons);
//!   `k3s_settings` checks what the user brings for k3s (flags, config files, `K3S_*`);
//! - `copy_bundle` copies the bundle under the prefix;
//! - `mounts` makes the host changes (/dev/kmsg, cgroups);
//! - `node_ip` (with the `netif` crate) gives k3s a node IP where the sandbox has no default route,
//!   `loopback` brings lo up where it is down;
//! - `node_routes` routes other nodes' pod ranges via their node IPs (host-gw), as a daemon;
//! - `images` gets images into containerd (shipped, airgap dirs, `images import`);
//!   `registries` turns k3s's registries.yaml into containerd's hosts.toml and credentials;
//! - `services` (one module per daemon) and `supervise` run containerd, k3s, svcproxy and
//!   node-routes, each under `keeper` (restart with backoff, log rotation) (`pod_logs` keeps the
//!   kubelet's pod logs in the data dir); `kubectl` is the one way the installer asks the API;
//!   `userenv` is the line that puts kubectl, crictl and ctr on PATH;
//! - `lifecycle`: start, stop and uninstall of an existing install; `report`: status and logs;
//!   `upgrade`: a newer bundle over an existing install, keeping its cluster;
//! - `state` records everything for `uninstall`, which also removes what the daemons leave
//!   outside the data dir: the CNI bridge and result cache (`cni_host`), the container log
//!   links (`pod_logs`).

mod blockers;
mod bundle;
mod cluster;
mod cni_host;
mod config;
mod copy_bundle;
mod doctor;
mod files;
mod helm;
mod images;
mod install;
mod k3s_settings;
mod kubectl;
mod lifecycle;
mod local_storage;
mod loopback;
mod mounts;
mod node_ip;
mod node_routes;
mod paths;
mod pod_logs;
mod preflight;
mod probe;
mod procsys_overlay;
mod registries;
mod report;
mod services;
mod shape;
mod state;
mod supervise;
mod traefik;
mod upgrade;
mod userenv;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::paths::{DEFAULT_DATA_DIR, DEFAULT_PREFIX};
use crate::state::{LauncherUse, State};
use bundle_format::paths as in_bundle;

#[derive(Parser)]
#[command(
    name = "install",
    about = "Install and run k3s (containerd + runc + CNI patched for gVisor) from this bundle",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    install: InstallArgs,
}

#[derive(Args)]
struct InstallArgs {
    /// Where binaries and configs go (must be new or empty).
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: PathBuf,
    #[command(flatten)]
    data: DataDirArg,
    /// Run only the Kubernetes control plane (k3s --disable-agent): no kubelet, no pods;
    /// agents join it to run pods.
    #[arg(long, conflicts_with = "server")]
    control_plane_only: bool,
    /// Join the server at this URL as an agent node (k3s agent: kubelet, containerd, CNI, no
    /// control plane), e.g. https://10.0.0.2:6443. The server's install prints the command.
    /// K3S_URL (with K3S_TOKEN or K3S_TOKEN_FILE) does the same, as with k3s's install.sh.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The server's join token (in the server's DATA_DIR/k3s/server/node-token). Kept in
    /// DATA_DIR/agent-token, mode 0600. Prefer --token-file: a token here is in `ps` and in
    /// the shell's history.
    #[arg(long, requires = "server", conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the server's join token (a copy of its DATA_DIR/k3s/server/node-token).
    #[arg(long, value_name = "FILE", requires = "server")]
    token_file: Option<PathBuf>,
    /// This node's name in the cluster (default: the host name, in lower case). Every node
    /// needs its own: sandboxes cloned from one image often share a host name.
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Install and prepare the host, but start nothing.
    #[arg(long)]
    no_start: bool,
    /// The extracted bundle (default: the directory above this executable's bin/).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// How k3s gets the /proc/sys files this host lacks: `auto` lays them over /proc/sys (the
    /// launcher only where the sandbox refuses those mounts), `always` runs k3s under the ptrace
    /// launcher, `never` neither.
    #[arg(long, value_enum, default_value_t = LauncherUse::Auto)]
    launcher: LauncherUse,
    /// Flags for `k3s server` (or `k3s agent` with --server), after `--`, as with k3s's
    /// install.sh (`sh -s - FLAGS`); INSTALL_K3S_EXEC's come first. k3s's config files
    /// (/etc/rancher/k3s/config.yaml, config.yaml.d/*.yaml) are read by k3s itself. Flags the
    /// installer sets are refused, naming the option to use instead.
    #[arg(last = true, value_name = "K3S_FLAGS")]
    k3s_flags: Vec<String>,
    /// Over an existing install: replace it with this bundle even when this bundle is older
    /// (a downgrade), see `upgrade`.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Clone)]
struct DataDirArg {
    /// Where state, logs, containerd and k3s data live.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Start containerd and k3s of an existing install.
    Start(DataDirArg),
    /// Stop node-routes, k3s, all containers, and containerd.
    Stop(DataDirArg),
    /// Show what runs, its health, and versions (exit 1 if something is down).
    Status {
        #[command(flatten)]
        data: DataDirArg,
        /// Print it as one JSON object (the state file's decisions, each daemon's pid and
        /// restarts, nodes, pods: docs/installer.md, "status"), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show the last lines of the daemons' logs.
    Logs {
        #[command(flatten)]
        data: DataDirArg,
        /// Which log (default: all).
        #[arg(value_enum)]
        service: Option<report::Log>,
        /// How many lines to show from the end of each log.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
        /// Keep printing what is added (across rotations), as `tail -F`, until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Check each known gVisor blocker: present or not, handled or not (exit 1 if unhandled).
    Doctor {
        #[command(flatten)]
        data: DataDirArg,
        /// The extracted bundle, when checking before install.
        #[arg(long)]
        bundle: Option<PathBuf>,
    },
    /// Replace an install's binaries and images with this bundle's newer ones, keeping its
    /// cluster (datastore, certificates, token, node identity, settings); a failed upgrade
    /// puts the old version back. `./install` from a newer bundle does the same.
    Upgrade {
        #[command(flatten)]
        data: DataDirArg,
        /// The extracted new bundle (default: the one this installer came in).
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// Also to an older version (a downgrade), or one whose version cannot be compared.
        #[arg(long)]
        force: bool,
        /// Replace the files but start nothing.
        #[arg(long)]
        no_start: bool,
    },
    /// Stop everything and remove all the install created or mounted.
    Uninstall(DataDirArg),
    /// Import image archives into containerd (like `k3s ctr images import`), or list the
    /// images it has.
    Images {
        #[command(subcommand)]
        action: ImagesAction,
    },
    /// Keep routes to the other nodes' pod ranges (run by `start` as the daemon node-routes;
    /// not meant to be run by hand).
    NodeRoutes(DataDirArg),
}

#[derive(Subcommand)]
enum ImagesAction {
    /// Import docker-archive or OCI archives (.tar, .tar.gz, .tar.zst) for pods to use.
    Import {
        #[command(flatten)]
        data: DataDirArg,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// The images containerd's CRI has (what pods can use without a pull).
    List(DataDirArg),
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => install::install(&install::InstallOptions {
            bundle_dir: cli.install.bundle,
            prefix: cli.install.prefix,
            data_dir: cli.install.data.data_dir,
            control_plane_only: cli.install.control_plane_only,
            no_start: cli.install.no_start,
            server: cli.install.server,
            token: cli.install.token,
            token_file: cli.install.token_file,
            node_name: cli.install.node_name,
            launcher: cli.install.launcher,
            k3s_flags: cli.install.k3s_flags,
            env: std::env::vars().collect(),
            force: cli.install.force,
        }),
        Some(Command::Upgrade {
            data,
            bundle,
            force,
            no_start,
        }) => upgrade::over_existing(
            State::require(&data.data_dir)?,
            &upgrade::Request {
                bundle_dir: bundle,
                force,
                no_start,
                prefix: None,
            },
        ),
        Some(Command::NodeRoutes(d)) => node_routes::run(&State::require(&d.data_dir)?),
        Some(Command::Start(d)) => lifecycle::start(&mut State::require(&d.data_dir)?),
        Some(Command::Stop(d)) => lifecycle::stop(&State::require(&d.data_dir)?),
        Some(Command::Status { data, json }) => {
            report::status(&State::require(&data.data_dir)?, json)
        }
        Some(Command::Logs {
            data,
            service,
            lines,
            follow,
        }) => report::logs(&State::require(&data.data_dir)?, service, lines, follow),
        Some(Command::Uninstall(d)) => lifecycle::uninstall(&State::require(&d.data_dir)?),
        Some(Command::Doctor { data, bundle }) => run_doctor(&data.data_dir, bundle),
        Some(Command::Images { action }) => match action {
            ImagesAction::Import { data, files } => {
                images::import(&State::require(&data.data_dir)?, &files)
            }
            ImagesAction::List(d) => images::list(&State::require(&d.data_dir)?),
        },
    }
}

/// Doctor works on an install (its prefix has the manifest and procsys tree) or on a bundle.
fn run_doctor(data_dir: &std::path::Path, bundle_dir: Option<PathBuf>) -> Result<()> {
    if let (None, Some(state)) = (&bundle_dir, State::load(data_dir)?) {
        let paths = state.paths();
        // The prefix keeps the manifest and etc/procsys defaults, so doctor works after the
        // extracted bundle is gone.
        let installed = copy_bundle::installed(&paths)?;
        let candidates = preflight::procsys_candidates(&installed);
        let has_svcproxy = installed.path(in_bundle::SVCPROXY).is_file();
        return doctor::doctor(
            data_dir,
            Some(&installed.manifest),
            &candidates,
            Some(&state),
            has_svcproxy,
        );
    }
    let source = bundle::Bundle::locate(bundle_dir.as_deref())?;
    doctor::doctor(
        data_dir,
        Some(&source.manifest),
        &preflight::procsys_candidates(&source),
        None,
        source.path(in_bundle::SVCPROXY).is_file(),
    )
}

fn main() -> ExitCode {
    // k3s's install.sh runs under systemd's umask 0022; a caller's umask 000 made PREFIX/bin and
    // the data dir 0777 (measured in gVisor), so anyone could forge state.json, whose lists
    // uninstall deletes. Every file and directory the installer and its daemons create (the
    // daemons inherit it) starts from 0022; the data dir is then narrowed to 0700.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
