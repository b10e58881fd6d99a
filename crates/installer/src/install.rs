//! `./install`: preflight, then lay out, prepare the host, and start.

use std::path::PathBuf;

use anyhow::Result;

use crate::bundle::Bundle;
use crate::cluster;
use crate::cni_host;
use crate::layout;
use crate::mounts;
use crate::ops;
use crate::paths::Paths;
use crate::preflight;
use crate::state::{LauncherUse, State};

pub struct InstallOptions {
    pub bundle_dir: Option<PathBuf>,
    pub prefix: PathBuf,
    pub data_dir: PathBuf,
    pub control_plane_only: bool,
    pub no_start: bool,
    pub launcher: LauncherUse,
}

/// Host paths the daemons create outside our dirs; if new at install, uninstall removes what is
/// left of them once empty (k3s's /etc/rancher/node/password is removed first).
const DAEMON_HOST_PATHS: [&str; 5] = [
    "/etc/rancher",
    "/run/containerd",
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/cni",
];

pub fn install(options: &InstallOptions) -> Result<()> {
    let paths = Paths::new(&options.prefix, &options.data_dir);

    // A second install on an existing one is harmless: report and, if needed, start it.
    if let Some(mut state) = State::load(&paths.data_dir)? {
        println!(
            "k3s-gvisor {} is already installed (prefix {}, data dir {}); nothing to install.",
            state.bundle_version,
            state.prefix.display(),
            state.data_dir.display()
        );
        if options.no_start {
            return Ok(());
        }
        return ops::start(&mut state);
    }

    let bundle = Bundle::locate(options.bundle_dir.as_deref())?;
    println!(
        "k3s-gvisor {} ({}) from {}",
        bundle.manifest.version,
        bundle.manifest.arch,
        bundle.dir.display()
    );
    let plan = preflight::check(&bundle, &paths, !options.no_start)?;
    println!("preflight passed");
    if plan.workarounds.is_empty() {
        println!("no sandbox workarounds needed on this host");
    }
    for line in &plan.workarounds {
        println!("workaround: {line}");
    }
    // Decided once, here: which parts of k3s this host can run (no agent: no kube-proxy).
    let has_k3s = bundle.path("bin/k3s").is_file();
    let kube_proxy_off = if has_k3s && !options.control_plane_only {
        cluster::kube_proxy_blocker()
    } else {
        None
    };
    let service_proxy = cluster::ServiceProxy::decide(
        options.control_plane_only,
        kube_proxy_off.as_deref(),
        bundle.path("bin/svcproxy").is_file(),
    );
    let addons_off = if has_k3s {
        let install = cluster::Install {
            control_plane_only: options.control_plane_only,
            no_service_proxy: matches!(service_proxy, cluster::ServiceProxy::Nothing { .. }),
        };
        cluster::addons_off(&bundle.manifest, &install)
    } else {
        Vec::new()
    };
    if has_k3s {
        report_turned_off(kube_proxy_off.as_deref(), &service_proxy, &addons_off);
    }
    if bundle.sandbox_image().is_none() {
        println!(
            "warning: this bundle ships no pod sandbox (pause) image: containerd will try to pull \
             registry.k8s.io/pause:3.10 for every pod, which fails without network access"
        );
    }

    let mut state = State {
        bundle_name: bundle.manifest.name.clone(),
        bundle_version: bundle.manifest.version.clone(),
        prefix: paths.prefix.clone(),
        data_dir: paths.data_dir.clone(),
        control_plane_only: options.control_plane_only,
        snapshotter: plan.snapshotter.clone(),
        created_dirs: Vec::new(),
        created_files: Vec::new(),
        mounts: Vec::new(),
        absent_before: DAEMON_HOST_PATHS
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect(),
        netns_before: crate::mounts::pod_netns_names(),
        workarounds: plan.workarounds.clone(),
        read_only_procsys: plan.facts.read_only_procsys.clone(),
        kube_proxy_off,
        addons_off,
        added_addresses: Vec::new(),
        links_before: cni_host::link_names(),
        lo_before_up: None,
        launcher: options.launcher,
    };
    // The data dir comes first: it holds the state file that records everything after it.
    state.create_dir_all_recorded(&paths.data_dir)?;
    state.create_dir_all_recorded(&paths.prefix)?;

    let result = prepare_and_start(&bundle, &paths, &plan, &mut state, options.no_start);
    if result.is_err() {
        eprintln!(
            "install did not finish; what it did is recorded in {}. Fix the problem and run \
             `{} start`, or undo everything with `{} uninstall --data-dir {}`",
            paths.state_file().display(),
            paths.bin("installer").display(),
            paths.bin("installer").display(),
            paths.data_dir.display()
        );
    }
    result
}

/// One line per part of k3s this host cannot run, each with its reason, and who serves Services.
fn report_turned_off(
    kube_proxy_off: Option<&str>,
    service_proxy: &cluster::ServiceProxy,
    addons_off: &[cluster::TurnedOff],
) {
    if let Some(reason) = kube_proxy_off {
        println!("k3s: kube-proxy off (--disable-kube-proxy): {reason}");
    }
    println!("k3s: service proxy: {}", service_proxy.describe());
    for addon in addons_off {
        println!(
            "k3s: add-on {} off (--disable): {}",
            addon.name, addon.reason
        );
    }
}

fn prepare_and_start(
    bundle: &Bundle,
    paths: &Paths,
    plan: &preflight::Plan,
    state: &mut State,
    no_start: bool,
) -> Result<()> {
    layout::lay_out(bundle, paths, plan)?;
    println!("installed files under {}", paths.prefix.display());
    if !plan.facts.has_dev_kmsg {
        mounts::provide_dev_kmsg(state)?;
        println!("/dev/kmsg: bind-mounted /dev/null");
    }
    if plan.facts.needs_cgroup_mounts() {
        let outcome = mounts::mount_cgroups(state)?;
        println!("cgroup v1 mounted: {}", outcome.mounted.join(","));
        for (controller, error) in outcome.refused {
            println!(
                "cgroup v1 {controller}: refused by the kernel ({error}); continuing without it"
            );
        }
    }
    if no_start {
        println!(
            "--no-start: not starting; run `{} start` when ready",
            paths.bin("installer").display()
        );
        return Ok(());
    }
    ops::start(state)
}
