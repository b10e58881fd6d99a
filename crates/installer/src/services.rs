//! Starting and stopping containerd, k3s and (where kube-proxy cannot run) svcproxy for one
//! install, and waiting until each is usable.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::ServiceProxy;
use crate::cni_host;
use crate::config;
use crate::k3s_settings::Checked;
use crate::kubectl::Kubectl;
use crate::node_ip;
use crate::paths::Paths;
use crate::pod_logs;
use crate::state::{LauncherUse, State};
use crate::supervise::{self, Daemon};

pub const CONTAINERD: &str = "containerd";
pub const K3S: &str = "k3s";
pub const SVCPROXY: &str = "svcproxy";
/// svcproxy's first sync needs the API's first lists of Services and EndpointSlices.
const SVCPROXY_SYNC_TIMEOUT: Duration = Duration::from_secs(60);
pub const NODE_ROUTES: &str = "node-routes";
const CONTAINERD_SOCKET_TIMEOUT: Duration = Duration::from_secs(60);
const K3S_API_TIMEOUT: Duration = Duration::from_secs(240);
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(300);
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TAIL_LINES: usize = 30;

pub fn daemon(paths: &Paths, name: &str) -> Daemon {
    Daemon {
        name: name.to_string(),
        pid_file: paths.pid_file(name),
        log_file: paths.log_file(name),
        program_dir: paths.prefix.join("bin"),
    }
}

/// True when the install has a k3s binary (early bundles carry containerd only).
pub fn has_k3s(paths: &Paths) -> bool {
    paths.bin("k3s").is_file()
}

/// Does the procsys tree hold anything? If not, the launcher has nothing to redirect and k3s
/// runs directly, without ptrace's overhead.
fn procsys_needed(paths: &Paths) -> bool {
    !crate::procsys_overlay::served_files(&paths.procsys_dir()).is_empty()
}

/// `program args`, wrapped in `launcher --procsys DIR --log FILE --` when /proc/sys needs help
/// that the overlay (procsys_overlay.rs) does not give (or `--launcher always` asks for it).
/// Only k3s (its kubelet reads and writes /proc/sys files gVisor lacks or refuses) runs so.
fn launch_command(
    paths: &Paths,
    choice: LauncherUse,
    overlaid: bool,
    program: PathBuf,
    args: Vec<String>,
) -> Result<(PathBuf, Vec<String>)> {
    let needed = procsys_needed(paths) && !overlaid;
    let wrap = match choice {
        LauncherUse::Auto => needed,
        LauncherUse::Always => true,
        LauncherUse::Never => {
            if needed {
                println!(
                    "warning: --launcher never: k3s runs without the launcher although {} holds \
                     /proc/sys files this host lacks or refuses",
                    paths.procsys_dir().display()
                );
            }
            false
        }
    };
    if !wrap {
        return Ok((program, args));
    }
    let launcher = paths.bin("launcher");
    if !launcher.is_file() {
        bail!(
            "this host lacks /proc/sys files ({}), but the bundle has no bin/launcher to serve \
             them: use a complete k3s-gvisor bundle",
            paths.procsys_dir().display()
        );
    }
    let mut wrapped = vec![
        "--procsys".to_string(),
        paths.procsys_dir().display().to_string(),
        "--log".to_string(),
        paths.launcher_log(K3S).display().to_string(),
        "--".to_string(),
        program.display().to_string(),
    ];
    wrapped.extend(args);
    Ok((launcher, wrapped))
}

/// The PATH every daemon gets after our bin dir, whatever shell ran the installer (the one a
/// systemd unit would give).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What every daemon starts with, and nothing else of the installer's shell: PATH with our bin
/// dir first (containerd finds containerd-shim-runc-v2 there, the shim finds runc) and HOME.
fn daemon_env(paths: &Paths) -> Vec<(String, String)> {
    let home = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "/".to_string(), |user| user.dir.display().to_string());
    vec![
        (
            "PATH".to_string(),
            format!("{}:{SYSTEM_PATH}", paths.prefix.join("bin").display()),
        ),
        ("HOME".to_string(), home),
    ]
}

/// k3s's environment: the base and every variable recorded at install (K3S_*, CONTAINERD_*,
/// proxies), as k3s's systemd unit gets them from install.sh's environment file.
fn k3s_env(paths: &Paths, state: &State) -> Vec<(String, String)> {
    let mut env = daemon_env(paths);
    env.extend(state.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// containerd's environment and extra arguments, as k3s makes them for the containerd it runs
/// (pkg/agent/containerd): the proxy variables as they are, `CONTAINERD_X` as `X` (so
/// `CONTAINERD_HTTPS_PROXY` is a proxy for image pulls only), `CONTAINERD_LOG_LEVEL` as
/// `--log-level`.
fn containerd_env(paths: &Paths, state: &State) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = daemon_env(paths);
    let mut args = Vec::new();
    for (name, value) in &state.env {
        if name == "CONTAINERD_LOG_LEVEL" {
            args.extend(["--log-level".to_string(), value.clone()]);
        } else if let Some(stripped) = name.strip_prefix("CONTAINERD_") {
            env.push((stripped.to_string(), value.clone()));
        } else if crate::k3s_settings::is_proxy_var(name) {
            env.push((name.clone(), value.clone()));
        }
    }
    (env, args)
}

fn socket_accepts(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

pub fn containerd_healthy(paths: &Paths) -> bool {
    socket_accepts(&paths.containerd_socket())
}

/// Starts containerd (if not running) and waits for its socket.
pub fn start_containerd(paths: &Paths, state: &State) -> Result<()> {
    let daemon = daemon(paths, CONTAINERD);
    if let Some(pid) = daemon.running_pid() {
        println!("containerd already running (pid {pid})");
        return Ok(());
    }
    let _ = fs::remove_file(paths.containerd_socket());
    let (env, extra_args) = containerd_env(paths, state);
    let mut args = vec![
        "--config".to_string(),
        paths.containerd_config().display().to_string(),
    ];
    args.extend(extra_args);
    // Never under the launcher: its seccomp filter and ptrace would be inherited by every
    // shim, runc and pod for life, and patched containerd and runc read no /proc/sys file a
    // gVisor lacks (containerd 0002 reads the unprivileged-port sysctls only where they exist;
    // runc 0001 probes the last capability where cap_last_cap is missing). Measured: under the
    // launcher, containerd's --log stayed empty through the whole e2e in the current gVisor and
    // in gvisor-2025 (docs/installer.md).
    let pid = daemon.start(&paths.bin("containerd"), &args, &env)?;
    println!(
        "containerd started (pid {pid}), log {}",
        daemon.log_file.display()
    );
    let deadline = Instant::now() + CONTAINERD_SOCKET_TIMEOUT;
    while Instant::now() < deadline {
        if socket_accepts(&paths.containerd_socket()) {
            println!(
                "containerd is serving on {}",
                paths.containerd_socket().display()
            );
            return Ok(());
        }
        // The keeper we just spawned: no reuse is possible while it is our unreaped child.
        if let Some(exit) = daemon.exited() {
            bail!(
                "containerd {exit} during startup (its keeper starts it again: `status`); {}",
                exit_logs(paths, &daemon)
            );
        }
        if !supervise::process_alive(pid) {
            bail!(
                "containerd's keeper exited during startup; {}",
                exit_logs(paths, &daemon)
            );
        }
        sleep(Duration::from_millis(200));
    }
    bail!(
        "containerd did not open {} within {}s; last lines of {}:\n{}",
        paths.containerd_socket().display(),
        CONTAINERD_SOCKET_TIMEOUT.as_secs(),
        daemon.log_file.display(),
        daemon.log_tail(LOG_TAIL_LINES)
    )
}

/// The last lines of a daemon's log and, when it ran under the launcher, of the launcher's log
/// (a launcher that fails before the daemon starts leaves the daemon's log empty).
fn exit_logs(paths: &Paths, daemon: &Daemon) -> String {
    let mut text = format!(
        "last lines of {}:\n{}",
        daemon.log_file.display(),
        daemon.log_tail(LOG_TAIL_LINES)
    );
    let launcher_log = paths.launcher_log(&daemon.name);
    if launcher_log.exists() {
        text.push_str(&format!(
            "\nlast lines of {}:\n{}",
            launcher_log.display(),
            supervise::tail(&launcher_log, LOG_TAIL_LINES)
        ));
    }
    text
}

/// `ctr --address SOCK -n NAMESPACE args...`, returning stdout or an error with stderr.
pub fn ctr(paths: &Paths, namespace: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(paths.bin("ctr"))
        .arg("--address")
        .arg(paths.containerd_socket())
        .args(["-n", namespace])
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", paths.bin("ctr").display()))?;
    if !output.status.success() {
        // ctr repeats containerd's deprecation warnings on every call; they are not the error.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error: Vec<&str> = stderr
            .lines()
            .filter(|line| !line.contains("DEPRECATION"))
            .collect();
        bail!("ctr {} failed: {}", args.join(" "), error.join("\n").trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Starts k3s (if not running): a server waits for the API; a node with a kubelet (server with
/// its agent, or an agent) then waits for k3s to assign its podCIDR, writes the CNI config
/// with that range, and waits for the node to be Ready. A server finally waits for the default
/// service account, which every pod needs before it can be created, and prints how to join.
pub fn start_k3s(paths: &Paths, state: &mut State, settings: &Checked) -> Result<()> {
    let daemon = daemon(paths, K3S);
    if let Some(pid) = daemon.running_pid() {
        println!("k3s already running (pid {pid})");
        // svcproxy may have stopped on its own while k3s kept running.
        return start_service_proxy(paths, state, settings);
    }
    let kubelet_args = fs::read_to_string(paths.prefix.join("etc/k3s/kubelet-args"))
        .map(|text| config::parse_kubelet_args(&text))
        .unwrap_or_default();
    let node_ip = node_ip::prepare(state)?;
    let node_name = state.node_name();
    let options = config::K3sOptions {
        control_plane_only: state.control_plane_only,
        kubelet_args: &kubelet_args,
        node_ip: node_ip.flag,
        kube_proxy: state.kube_proxy_off.is_none(),
        disable: state.addons_off.iter().map(|a| a.name.clone()).collect(),
        node_name: &node_name,
    };
    if !state.control_plane_only {
        pod_logs::write_kubelet_dropin(paths)?;
    }
    let local_storage = crate::local_storage::prepare(paths, state, settings)?;
    crate::traefik::prepare(paths, state, settings)?;
    let mut args = match &state.server {
        Some(server) => config::k3s_agent_args(paths, &options, server),
        None => {
            let mut args = config::k3s_server_args(paths, &options);
            // The HelmChart job image the bundle ships, unless the user chose (helm.rs).
            let manifest = crate::copy_bundle::installed(paths)?.manifest;
            let helm = crate::helm::HelmController::decide(settings, Some(&manifest));
            args.extend(helm.server_arg());
            args
        }
    };
    // The user's, last: checked never to touch a flag the installer sets (k3s_settings.rs).
    args.extend(state.k3s_flags.iter().cloned());
    let (program, args) = launch_command(
        paths,
        state.launcher,
        crate::procsys_overlay::is_laid(state),
        paths.bin("k3s"),
        args,
    )?;
    // A new server's first start: the pod range its node will be given is known (the first /24
    // of the cluster CIDR), so it is written before k3s starts. The kubelet then finds its
    // network ready at once and the node turns Ready without waiting for the
    // controller-manager's range allocator (about 5 s in gVisor); the range is checked below
    // once assigned. Not where the user tunes the controller-manager (its node-cidr-mask-size).
    let first_start_range = if state.server.is_none()
        && !state.control_plane_only
        && !crate::cni_host::has_pod_range(&paths.cni_conf_dir())
        && settings.value("kube-controller-manager-arg").is_none()
    {
        crate::cni_host::first_pod_range(
            &settings
                .value("cluster-cidr")
                .unwrap_or_else(|| "10.42.0.0/16".into()),
        )
    } else {
        None
    };
    let write_pod_range = |pod_cidr: &str| {
        crate::cni_host::write_pod_range(&paths.cni_template_dir(), &paths.cni_conf_dir(), pod_cidr)
    };
    if let Some(range) = &first_start_range {
        write_pod_range(range)?;
    }
    let pid = daemon.start(&program, &args, &k3s_env(paths, state))?;
    println!("k3s started (pid {pid}), log {}", daemon.log_file.display());

    // What the node's own queries authenticate with: a server's admin kubeconfig, or on an
    // agent the kubelet's credentials (an agent has no admin kubeconfig).
    let kubectl = if state.is_agent() {
        Kubectl::with(paths, crate::node_routes::kubelet_kubeconfig(paths))
    } else {
        wait_for(
            paths,
            &daemon,
            pid,
            "the Kubernetes API to answer /readyz",
            K3S_API_TIMEOUT,
            || Kubectl::admin(paths).api_ready(),
        )?;
        println!("Kubernetes API is ready");
        // As soon as the API answers, so that ClusterIPs route before pods need them (coredns
        // reaches the API through 10.43.0.1).
        start_service_proxy(paths, state, settings)?;
        crate::local_storage::lay_down(paths, &local_storage)?;
        Kubectl::admin(paths)
    };
    if !state.control_plane_only {
        let what = match &state.server {
            Some(server) => format!(
                "node {node_name} to register with {server} and get its pod range (if this \
                 times out, check that this sandbox reaches the server and the token is right: \
                 `{} logs k3s`)",
                paths.bin("installer").display()
            ),
            None => format!("node {node_name} to register and get its pod range"),
        };
        let wait_for_pod_range = || -> Result<String> {
            let mut pod_cidr = None;
            wait_for(paths, &daemon, pid, &what, K3S_API_TIMEOUT, || {
                pod_cidr = kubectl
                    .node_field(&node_name, "{.spec.podCIDR}")
                    .filter(|cidr| !cidr.is_empty());
                pod_cidr.is_some()
            })?;
            Ok(pod_cidr.expect("set when the wait succeeds"))
        };
        let wait_for_ready = || -> Result<()> {
            wait_for(
                paths,
                &daemon,
                pid,
                &format!("node {node_name} to be Ready"),
                NODE_READY_TIMEOUT,
                || kubectl.node_ready(&node_name) == Some(true),
            )?;
            println!("node is Ready");
            Ok(())
        };
        match &first_start_range {
            Some(expected) => {
                wait_for_ready()?;
                let pod_cidr = wait_for_pod_range()?;
                if &pod_cidr == expected {
                    println!(
                        "pod range: {pod_cidr} (the node's podCIDR, as written to the CNI config \
                         in {} before k3s started)",
                        paths.cni_conf_dir().display()
                    );
                } else {
                    write_pod_range(&pod_cidr)?;
                    println!(
                        "warning: pod range: {pod_cidr} (the node's podCIDR), not the \
                         {expected} written to the CNI config before k3s started: rewritten; \
                         pods that started before now have addresses of {expected}: delete \
                         them so that they start again"
                    );
                }
            }
            None => {
                let pod_cidr = wait_for_pod_range()?;
                let changed = write_pod_range(&pod_cidr)?;
                println!(
                    "pod range: {pod_cidr} (the node's podCIDR){}",
                    if changed {
                        format!(
                            ", written to the CNI config in {}",
                            paths.cni_conf_dir().display()
                        )
                    } else {
                        String::new()
                    }
                );
                wait_for_ready()?;
            }
        }
    }
    if state.is_agent() {
        // Once the node is Ready: the CNI config names the bridge, and no pod of this node
        // has started yet.
        return start_service_proxy(paths, state, settings);
    }
    // Controllers create the `default` service account and the `kube-root-ca.crt` ConfigMap in
    // each namespace shortly after the API is up. Until the first exists every pod is refused
    // (`serviceaccount "default" not found`); until the second a pod's token volume cannot be
    // mounted and its start waits for the kubelet's next retry.
    wait_for(
        paths,
        &daemon,
        pid,
        "the default service account and kube-root-ca.crt",
        SERVICE_ACCOUNT_TIMEOUT,
        || {
            kubectl.exists("default", "serviceaccount", "default")
                && kubectl.exists("default", "configmap", "kube-root-ca.crt")
        },
    )?;
    println!("default service account and kube-root-ca.crt exist: pods can be created");
    // k3s sets the mode: --write-kubeconfig-mode or K3S_KUBECONFIG_MODE, else 0600.
    let mode = fs::metadata(paths.kubeconfig()).map_or(0, |m| m.permissions().mode() & 0o7777);
    println!(
        "kubeconfig: {} (mode {mode:04o})",
        paths.kubeconfig().display()
    );
    let data_dir_mode = crate::files::data_dir_mode(mode);
    crate::files::set_mode(&paths.data_dir, data_dir_mode)
        .with_context(|| format!("cannot set the mode of {}", paths.data_dir.display()))?;
    if data_dir_mode != crate::files::DATA_DIR_MODE {
        println!(
            "{}: mode {data_dir_mode:04o}, so that those the kubeconfig's mode lets read it can \
             reach it (search only: they cannot list or write the data dir)",
            paths.data_dir.display()
        );
    }
    print_join_command(paths, node_ip.address);
    Ok(())
}

/// Who serves Services on this install (cluster.rs decides; the prefix says whether svcproxy
/// is there).
pub fn service_proxy(paths: &Paths, state: &State) -> ServiceProxy {
    ServiceProxy::decide(
        state.control_plane_only,
        state.kube_proxy_off.as_deref(),
        paths.bin(SVCPROXY).is_file(),
    )
}

/// Where svcproxy writes its JSON summary at every sync (removed when it exits).
pub fn svcproxy_status_file(paths: &Paths) -> PathBuf {
    paths.run_dir().join("svcproxy-status.json")
}

/// Starts svcproxy where it serves Services in place of kube-proxy (else does nothing) and waits
/// for its first sync. Never under the launcher: it reads nothing under /proc/sys, and a traced
/// proxy would pay a ptrace stop on every path syscall of every forwarded connection.
fn start_service_proxy(paths: &Paths, state: &State, settings: &Checked) -> Result<()> {
    // Where kube-proxy serves Services, a server's svcproxy still gives LoadBalancer Services
    // the node's address, as servicelb would (its image is not shipped); kube-proxy's rules
    // then serve that address (docs/services.md). An agent's could not write the status.
    let status_only = service_proxy(paths, state) == ServiceProxy::KubeProxy
        && !state.is_agent()
        && paths.bin(SVCPROXY).is_file();
    if !service_proxy(paths, state).is_svcproxy() && !status_only {
        return Ok(());
    }
    let daemon = daemon(paths, SVCPROXY);
    if let Some(pid) = daemon.running_pid() {
        println!("svcproxy already running (pid {pid})");
        return Ok(());
    }
    let status_file = svcproxy_status_file(paths);
    let _ = fs::remove_file(&status_file);
    // The pods' bridge, from our CNI config: svcproxy puts the ClusterIPs on it, the one place
    // gVisor delivers a pod's packets to (docs/services.md).
    let bridge = cni_host::bridges_in(&paths.cni_conf_dir())
        .into_iter()
        .next()
        .unwrap_or_else(|| "gvcni0".to_string());
    // An agent has no admin kubeconfig. It has kube-proxy's, which k3s's agent writes whether
    // or not kube-proxy runs: user system:kube-proxy, ClusterRole system:node-proxier, which
    // may list and watch Services and EndpointSlices, all that svcproxy reads.
    let kubeconfig = if state.is_agent() {
        paths.k3s_data_dir().join("agent/kubeproxy.kubeconfig")
    } else {
        paths.kubeconfig()
    };
    let mut args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--bridge={bridge}"),
        format!("--status-file={}", status_file.display()),
    ];
    // k3s's --service-cidr where the user set one (svcproxy's default is k3s's, 10.43.0.0/16).
    // On an agent the server decides it; an agent's own flags cannot say.
    if let Some(cidr) = settings.value("service-cidr") {
        args.push(format!("--service-cidr={cidr}"));
    }
    if status_only {
        args.push("--load-balancer-status-only".to_string());
    } else if let Some(address) = node_ip::current_ipv4() {
        // On the bridge beside the ClusterIPs, so pods reach the node's own ports (the
        // kubelet's, which metrics-server scrapes) by the node IP (svcproxy --help).
        args.push(format!("--node-ip={address}"));
    }
    let pid = daemon.start(&paths.bin(SVCPROXY), &args, &daemon_env(paths))?;
    let role = if status_only {
        "for LoadBalancer status only (kube-proxy serves Services)"
    } else {
        "in place of kube-proxy"
    };
    println!(
        "svcproxy started (pid {pid}) {role}, log {}",
        daemon.log_file.display()
    );
    wait_for(
        paths,
        &daemon,
        pid,
        "svcproxy's first sync of Services",
        SVCPROXY_SYNC_TIMEOUT,
        || status_file.is_file(),
    )?;
    if status_only {
        println!("svcproxy gives LoadBalancer Services the node's address; kube-proxy serves them");
    } else {
        println!("svcproxy is serving ClusterIP, NodePort and LoadBalancer Services (ClusterIPs on {bridge})");
    }
    Ok(())
}

/// Starts `installer node-routes` (if not running): routes to the other nodes' pod ranges.
pub fn start_node_routes(paths: &Paths) -> Result<()> {
    let daemon = daemon(paths, NODE_ROUTES);
    if let Some(pid) = daemon.running_pid() {
        println!("node-routes already running (pid {pid})");
        return Ok(());
    }
    let args = vec![
        "node-routes".to_string(),
        "--data-dir".to_string(),
        paths.data_dir.display().to_string(),
    ];
    let pid = daemon.start(&paths.bin("installer"), &args, &daemon_env(paths))?;
    println!(
        "node-routes started (pid {pid}): routes other nodes' pod ranges via their node IPs, \
         log {}",
        daemon.log_file.display()
    );
    Ok(())
}

/// The command that joins another sandbox to this server as an agent, and where the token lives.
/// The token itself is not printed: the command reads it from a file, so it is never in a
/// terminal's scrollback, `ps` or a shell's history.
fn print_join_command(paths: &Paths, address: Option<std::net::IpAddr>) {
    let token_file = paths.server_node_token();
    if !token_file.is_file() {
        println!(
            "to join agents: k3s wrote no join token at {} (see `logs k3s`)",
            token_file.display()
        );
        return;
    };
    let host = match address {
        Some(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        Some(ip) => ip.to_string(),
        None => "<this sandbox's address>".to_string(),
    };
    println!(
        "to join another sandbox as an agent node (it must reach {host}:6443 and this node's pod \
         range must be routable from it: same network segment), copy the join token in {} \
         (mode 0600; anyone who has it can join nodes to this cluster) there as a file, e.g. \
         node-token, and run in the extracted bundle:\n  \
         ./install --server https://{host}:6443 --token-file node-token\n\
         or, the k3s way: K3S_URL=https://{host}:6443 K3S_TOKEN_FILE=node-token ./install",
        token_file.display()
    );
}

fn wait_for(
    paths: &Paths,
    daemon: &Daemon,
    pid: i32,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(100);
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        if let Some(exit) = daemon.exited() {
            bail!(
                "{} {exit} while waiting for {what} (its keeper starts it again: `status`); {}",
                daemon.name,
                exit_logs(paths, daemon)
            );
        }
        if !supervise::process_alive(pid) {
            bail!(
                "{}'s keeper exited while waiting for {what}; {}",
                daemon.name,
                exit_logs(paths, daemon)
            );
        }
        // From 100 ms up to 1 s between checks: a wait that is over at once costs little,
        // and a long one spawns `k3s kubectl` at most once a second. A fixed 2 s made every
        // wait of install end on a 2 s step (BENCHMARKS.md "Where the start goes").
        sleep(interval);
        interval = (interval * 2).min(Duration::from_secs(1));
    }
    bail!(
        "timed out after {}s waiting for {what}; last lines of {}:\n{}",
        timeout.as_secs(),
        daemon.log_file.display(),
        daemon.log_tail(LOG_TAIL_LINES)
    )
}

/// Stops svcproxy, k3s, then every container task, then containerd, then sweeps any process
/// still running from the prefix or data dir (containerd shims run in their own process groups).
/// Returns what was stopped, one line each.
pub fn stop_all(paths: &Paths) -> Vec<String> {
    let mut report = Vec::new();
    // First, while the bridge still exists: on SIGTERM it removes its ClusterIPs from it.
    if daemon(paths, SVCPROXY).stop(Duration::from_secs(10)) {
        report.push("svcproxy stopped".to_string());
    }
    // Routes stay: they are right as long as the other nodes are, and uninstall removes them.
    if daemon(paths, NODE_ROUTES).stop(Duration::from_secs(5)) {
        report.push("node-routes stopped".to_string());
    }
    if daemon(paths, K3S).stop(Duration::from_secs(30)) {
        report.push("k3s stopped".to_string());
    }
    let mut tasks = Vec::new();
    if containerd_healthy(paths) {
        tasks = kill_tasks(paths);
        report.extend(
            tasks
                .iter()
                .map(|(namespace, id)| format!("container task {namespace}/{id} killed")),
        );
    }
    if daemon(paths, CONTAINERD).stop(Duration::from_secs(20)) {
        report.push("containerd stopped".to_string());
    }
    let leftovers = supervise::processes_running_from(&[&paths.prefix, &paths.data_dir]);
    if !leftovers.is_empty() {
        let pids: Vec<i32> = leftovers.iter().map(|(pid, _)| *pid).collect();
        supervise::kill_all(&pids);
        for (pid, cmdline) in leftovers {
            report.push(format!("killed leftover process {pid}: {cmdline}"));
        }
    }
    tasks.extend(shim_bundles(paths));
    let removed = tasks
        .iter()
        .filter(|(namespace, id)| fs::remove_file(shim_socket(paths, namespace, id)).is_ok())
        .count();
    if removed > 0 {
        report.push(format!(
            "removed {removed} socket(s) of stopped shims from {SHIM_SOCKET_DIR}"
        ));
    }
    report
}

/// Kills and deletes every task in every containerd namespace, so no container outlives stop.
/// Returns (namespace, id) of each.
fn kill_tasks(paths: &Paths) -> Vec<(String, String)> {
    let mut killed = Vec::new();
    let namespaces = ctr(paths, "default", &["namespaces", "ls", "-q"]).unwrap_or_default();
    for namespace in namespaces.lines().map(str::trim).filter(|n| !n.is_empty()) {
        let tasks = ctr(paths, namespace, &["tasks", "ls", "-q"]).unwrap_or_default();
        for task in tasks.lines().map(str::trim).filter(|t| !t.is_empty()) {
            let _ = ctr(
                paths,
                namespace,
                &["tasks", "kill", "-a", "-s", "SIGKILL", task],
            );
            sleep(Duration::from_millis(200));
            let _ = ctr(paths, namespace, &["tasks", "delete", "-f", task]);
            killed.push((namespace.to_string(), task.to_string()));
        }
    }
    killed
}

/// Where containerd's shims listen, whatever containerd's own state dir: `SHIM_SOCKET_DIR/
/// <sha256 of ADDRESS/NAMESPACE/ID>` (containerd v2, pkg/shim SocketAddress). A shim that
/// `stop` kills leaves its socket there.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

fn shim_socket(paths: &Paths, namespace: &str, id: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let key = paths.containerd_socket().join(namespace).join(id);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    Path::new(SHIM_SOCKET_DIR).join(hex::encode(digest))
}

/// The ids of the pod sandboxes containerd's CRI made (its per-sandbox root dirs).
pub fn pod_sandboxes(paths: &Paths) -> Vec<String> {
    let dir = paths
        .containerd_root()
        .join("io.containerd.grpc.v1.cri/sandboxes");
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// (namespace, id) of every shim bundle in containerd's state dir: what shims ran, even when
/// containerd was already gone at `stop`.
fn shim_bundles(paths: &Paths) -> Vec<(String, String)> {
    let root = paths
        .containerd_state()
        .join("io.containerd.runtime.v2.task");
    let mut found = Vec::new();
    for namespace in fs::read_dir(&root).into_iter().flatten().flatten() {
        for id in fs::read_dir(namespace.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            found.push((
                namespace.file_name().to_string_lossy().into_owned(),
                id.file_name().to_string_lossy().into_owned(),
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_sockets_are_named_as_containerd_names_them() {
        // From an e2e run's containerd.log: `connecting to shim 3f6b0dee...
        // address="unix:///run/containerd/s/f0af28f7..."`, containerd serving on
        // .../run/data/run/containerd.sock.
        let run = Path::new("/work/wt-k3s/target/k3s-gvisor/e2e/gvisor-current-full/run");
        let paths = Paths::new(&run.join("prefix"), &run.join("data"));
        let id = "3f6b0deeafb18393141451328c2bb5c63cebbdf46d30e706f63099ffb6a9a677";
        assert_eq!(
            shim_socket(&paths, "k8s.io", id),
            Path::new(
                "/run/containerd/s/f0af28f7d0eff1e2c27281d398b1782830e1ff0103693b156cd078f6950afb1f"
            )
        );
    }
}
