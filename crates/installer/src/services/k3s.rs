//! k3s, server or agent: its command line (the installer's flags, the bundle's HelmChart job
//! image, the user's flags, the launcher where needed), the pod range written to the CNI config,
//! and the waits that make install return only once the cluster can take pods.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::wait::{LogFollower, Started};
use super::{daemon, daemon_env, launcher, svcproxy, K3S};
use crate::config;
use crate::k3s_settings::Checked;
use crate::kubectl::{Kubectl, NodeReport};
use crate::node_ip;
use crate::paths::Paths;
use crate::pod_logs;
use crate::state::State;

const API_TIMEOUT: Duration = Duration::from_secs(240);
/// What k3s logs once its apiserver has answered its own `/readyz` (pkg/cli/server/server.go).
const API_RUNNING: &str = "Kube API server is now running";
/// How often install asks `/readyz` itself while k3s's log has not said [`API_RUNNING`].
const API_ASK_EVERY: Duration = Duration::from_secs(10);
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(300);
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts k3s (if not running): a server waits for the API; a node with a kubelet (server with
/// its agent, or an agent) then waits for k3s to assign its podCIDR, writes the CNI config
/// with that range, and waits for the node to be Ready. A server finally waits for the default
/// service account, which every pod needs before it can be created, and prints how to join.
/// `node_ready` is told once the node is Ready (dropped unused where there is no node).
pub fn start(
    paths: &Paths,
    state: &mut State,
    settings: &Checked,
    node_ready: Sender<()>,
) -> Result<()> {
    let daemon = daemon(paths, K3S);
    if let Some(pid) = daemon.running_pid() {
        println!("k3s already running (pid {pid})");
        // svcproxy may have stopped on its own while k3s kept running.
        return svcproxy::start(paths, state, settings);
    }
    let node_ip = node_ip::prepare(state)?;
    let node_name = state.node_name();
    if !state.control_plane_only {
        pod_logs::write_kubelet_dropin(paths)?;
    }
    let local_storage = crate::local_storage::prepare(paths, state, settings)?;
    crate::traefik::prepare(paths, state, settings)?;
    let (program, args) = command(paths, state, settings, node_ip.flag, &node_name)?;
    let early_range = write_early_pod_range(paths, state, settings)?;
    let mut k3s_log = LogFollower::from_end(&daemon.log_file);
    let pid = daemon.start(&program, &args, &env(paths, state))?;
    println!("k3s started (pid {pid}), log {}", daemon.log_file.display());
    let k3s = Started { paths, daemon, pid };

    // What the node's own queries authenticate with: a server's admin kubeconfig, or on an
    // agent the kubelet's credentials (an agent has no admin kubeconfig).
    let kubectl = if state.is_agent() {
        Kubectl::with(paths, crate::node_routes::kubelet_kubeconfig(paths))
    } else {
        // k3s says when its own ask of `/readyz` (every 250 ms, patches/k3s/0005) has passed,
        // which the kubelet and k3s's controllers wait for too: read from its log, that costs
        // nothing, where each ask of ours starts the 200 MB k3s binary (0.25 s of CPU in runsc,
        // beside k3s's own start). Should a k3s release word it otherwise, install asks
        // itself, once the apiserver listens, every API_ASK_EVERY.
        let apiserver = apiserver_addresses(settings);
        let mut asked = Instant::now();
        k3s.wait_for_often("the Kubernetes API to answer /readyz", API_TIMEOUT, || {
            k3s_log.says(API_RUNNING)
                || (asked.elapsed() >= API_ASK_EVERY
                    && apiserver.as_deref().is_none_or(listening)
                    && {
                        asked = Instant::now();
                        Kubectl::admin(paths).api_ready()
                    })
        })?;
        println!("Kubernetes API is ready");
        Kubectl::admin(paths)
    };
    let state: &State = state;
    // Side by side with the node's wait, so that Ready is reported when it comes: a server's
    // svcproxy, started as soon as the API answers so that ClusterIPs route before pods need
    // them (coredns reaches the API through 10.43.0.1; no pod is placed before Ready), and the
    // local-storage manifest, which k3s stages about when the node turns Ready.
    std::thread::scope(|scope| {
        let proxied =
            (!state.is_agent()).then(|| scope.spawn(|| svcproxy::start(paths, state, settings)));
        let laid_down = (!state.is_agent())
            .then(|| scope.spawn(|| crate::local_storage::lay_down(paths, &local_storage)));
        if !state.control_plane_only {
            let node = Node {
                k3s: &k3s,
                kubectl: &kubectl,
                name: &node_name,
                server: state.server.as_deref(),
            };
            node.wait_until_networked(early_range.as_deref(), node_ready)?;
        }
        proxied.map_or(Ok(()), |start| {
            start.join().expect("svcproxy's start does not panic")
        })?;
        laid_down.map_or(Ok(()), |wait| wait.join().expect("lay_down does not panic"))
    })?;
    if state.is_agent() {
        // Once the node is Ready: the CNI config names the bridge, and no pod of this node
        // has started yet.
        return svcproxy::start(paths, state, settings);
    }
    wait_for_default_service_account(&k3s, &kubectl)?;
    open_data_dir_as_far_as_the_kubeconfig(paths)?;
    print_join_command(paths, node_ip.address);
    Ok(())
}

/// k3s's command line: `k3s server` or `k3s agent` with the installer's flags, then the user's,
/// wrapped in the launcher where /proc/sys needs it (launcher.rs).
fn command(
    paths: &Paths,
    state: &State,
    settings: &Checked,
    node_ip: Option<std::net::IpAddr>,
    node_name: &str,
) -> Result<(PathBuf, Vec<String>)> {
    let kubelet_args = fs::read_to_string(paths.prefix.join("etc/k3s/kubelet-args"))
        .map(|text| config::parse_kubelet_args(&text))
        .unwrap_or_default();
    let options = config::K3sOptions {
        control_plane_only: state.control_plane_only,
        kubelet_args: &kubelet_args,
        node_ip,
        kube_proxy: state.kube_proxy_off.is_none(),
        disable: state.addons_off.iter().map(|a| a.name.clone()).collect(),
        node_name,
    };
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
    launcher::command(
        paths,
        state.launcher,
        crate::procsys_overlay::is_laid(state),
        paths.bin(K3S),
        args,
    )
}

/// Where k3s's own apiserver listens, as k3s's `defaults` (pkg/daemons/control/server.go)
/// chooses: `--apiserver-port`, else `--https-listen-port` + 1 (6444); on
/// `--apiserver-bind-address`, else loopback. Those two are hidden flags, which the settings
/// check refuses (they are not in `k3s server --help`); their variables reach k3s all the same.
/// None (not known) where the user gave `--kube-apiserver-arg`, which can move it too
/// (`secure-port`, `bind-address`).
///
/// The wait for `/readyz` asks through `k3s kubectl`, a 195 MB program whose start costs 0.25 s
/// of CPU in gVisor: while nothing listens there (the first 5 s of a first start in gVisor,
/// the apiserver's setup), /readyz cannot pass, and k3s's start has the CPU to itself.
fn apiserver_addresses(settings: &Checked) -> Option<Vec<SocketAddr>> {
    if settings.value("kube-apiserver-arg").is_some() {
        return None;
    }
    let hidden = |name: &str, variable: &str| {
        settings
            .value(name)
            .or_else(|| settings.settings.env.get(variable).cloned())
    };
    let port = hidden("apiserver-port", "K3S_APISERVER_PORT")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p != 0)
        .unwrap_or_else(|| {
            let https: u16 = settings
                .value("https-listen-port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(6443);
            https.saturating_add(1)
        });
    Some(
        match hidden("apiserver-bind-address", "K3S_APISERVER_BIND_ADDRESS")
            .and_then(|a| a.parse::<IpAddr>().ok())
            .filter(|a| !a.is_unspecified())
        {
            Some(address) => vec![SocketAddr::new(address, port)],
            None => vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
            ],
        },
    )
}

/// Whether something accepts connections at one of `addresses`. The connection is closed
/// unused; the apiserver logs such a failed handshake only at `-v=5`.
fn listening(addresses: &[SocketAddr]) -> bool {
    addresses
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok())
}

/// k3s's Go garbage collector target where the user set none. Measured at rest in the current
/// gVisor (`cargo xtask bench --memory`, BENCHMARKS.md), with k3s's idle CPU and the API's
/// latency unchanged within the rounds' spread: `GOGC=50` kept k3s 51 MiB smaller than Go's
/// default 100, and `GOGC=25` 25-40 MiB smaller again (its live heap is about 140 MiB, so the
/// goal drops from 210 to 175 MiB); `GOMEMLIMIT=400MiB` changed nothing.
pub const DEFAULT_GOGC: &str = "25";

/// k3s's environment: the base and every variable recorded at install (K3S_*, CONTAINERD_*,
/// proxies, GOGC/GOMEMLIMIT), as k3s's systemd unit gets them from install.sh's environment
/// file; and [`DEFAULT_GOGC`] unless the user gave GOGC.
fn env(paths: &Paths, state: &State) -> Vec<(String, String)> {
    let mut env = daemon_env(paths);
    env.extend(default_gogc(&state.env));
    env.extend(state.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// `GOGC=`[`DEFAULT_GOGC`], unless the recorded environment has GOGC.
fn default_gogc(recorded: &std::collections::BTreeMap<String, String>) -> Option<(String, String)> {
    (!recorded.contains_key("GOGC")).then(|| ("GOGC".to_string(), DEFAULT_GOGC.to_string()))
}

/// A new server's first start: the pod range its node will be given is known (the first /24
/// of the cluster CIDR), so it is written before k3s starts. The kubelet then finds its
/// network ready at once and the node turns Ready without waiting for the
/// controller-manager's range allocator (about 5 s in gVisor); the range is checked once
/// assigned (`Node::wait_until_networked`). Not where the user tunes the controller-manager
/// (its node-cidr-mask-size). Returns the range written, if any.
fn write_early_pod_range(
    paths: &Paths,
    state: &State,
    settings: &Checked,
) -> Result<Option<String>> {
    let range = if state.server.is_none()
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
    if let Some(range) = &range {
        write_pod_range(paths, range)?;
    }
    Ok(range)
}

/// Writes the CNI config with POD_CIDR; true when that changed the config.
fn write_pod_range(paths: &Paths, pod_cidr: &str) -> Result<bool> {
    crate::cni_host::write_pod_range(&paths.cni_template_dir(), &paths.cni_conf_dir(), pod_cidr)
}

/// This install's node, waited for through k3s.
struct Node<'a> {
    k3s: &'a Started<'a>,
    kubectl: &'a Kubectl,
    name: &'a str,
    /// The server an agent joins (None on a server).
    server: Option<&'a str>,
}

impl Node<'_> {
    /// Waits for the node's podCIDR, puts it in the CNI config, and waits for the node to be
    /// Ready. Where `early` was written before k3s started, Ready comes first (the kubelet
    /// had its network at once), and the range assigned is then checked against it.
    fn wait_until_networked(&self, early: Option<&str>, ready: Sender<()>) -> Result<()> {
        let paths = self.k3s.paths;
        match early {
            Some(expected) => {
                self.wait_for_ready(ready)?;
                let pod_cidr = self.wait_for_pod_range()?;
                if pod_cidr == expected {
                    println!(
                        "pod range: {pod_cidr} (the node's podCIDR, as written to the CNI config \
                         in {} before k3s started)",
                        paths.cni_conf_dir().display()
                    );
                } else {
                    write_pod_range(paths, &pod_cidr)?;
                    println!(
                        "warning: pod range: {pod_cidr} (the node's podCIDR), not the \
                         {expected} written to the CNI config before k3s started: rewritten; \
                         pods that started before now have addresses of {expected}: delete \
                         them so that they start again"
                    );
                }
            }
            None => {
                let pod_cidr = self.wait_for_pod_range()?;
                let changed = write_pod_range(paths, &pod_cidr)?;
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
                self.wait_for_ready(ready)?;
            }
        }
        Ok(())
    }

    /// Waits until k3s has registered the node and assigned its podCIDR; returns it.
    fn wait_for_pod_range(&self) -> Result<String> {
        let name = self.name;
        let what = match self.server {
            Some(server) => format!(
                "node {name} to register with {server} and get its pod range (if this \
                 times out, check that this sandbox reaches the server and the token is right: \
                 `{} logs k3s`)",
                self.k3s.paths.bin("installer").display()
            ),
            None => format!("node {name} to register and get its pod range"),
        };
        let mut pod_cidr = None;
        self.k3s.wait_for_watched(
            &what,
            API_TIMEOUT,
            || self.kubectl.watch_node(name),
            |line| {
                pod_cidr = NodeReport::parse(line).and_then(|report| report.pod_cidr);
                pod_cidr.is_some()
            },
        )?;
        Ok(pod_cidr.expect("set when the wait succeeds"))
    }

    fn wait_for_ready(&self, ready: Sender<()>) -> Result<()> {
        self.k3s.wait_for_watched(
            &format!("node {} to be Ready", self.name),
            NODE_READY_TIMEOUT,
            || self.kubectl.watch_node(self.name),
            |line| NodeReport::parse(line).is_some_and(|report| report.ready),
        )?;
        println!("node is Ready");
        // Nobody may be waiting (the imports were over, or none were deferred).
        let _ = ready.send(());
        Ok(())
    }
}

/// Controllers create the `default` service account and the `kube-root-ca.crt` ConfigMap in
/// each namespace shortly after the API is up. Until the first exists every pod is refused
/// (`serviceaccount "default" not found`); until the second a pod's token volume cannot be
/// mounted and its start waits for the kubelet's next retry.
fn wait_for_default_service_account(k3s: &Started, kubectl: &Kubectl) -> Result<()> {
    for (kind, name) in [
        ("serviceaccount", "default"),
        ("configmap", "kube-root-ca.crt"),
    ] {
        k3s.wait_for_watched(
            &format!("the {kind} {name} in the default namespace"),
            SERVICE_ACCOUNT_TIMEOUT,
            || kubectl.watch_named("default", kind, name),
            |line| line.trim() == name,
        )?;
    }
    println!("default service account and kube-root-ca.crt exist: pods can be created");
    Ok(())
}

/// Prints the kubeconfig's path and mode, and gives the data dir the mode that lets those the
/// kubeconfig's mode lets read it reach it (files.rs).
fn open_data_dir_as_far_as_the_kubeconfig(paths: &Paths) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn server_with(flags: &[(&str, &str)], env: &[(&str, &str)]) -> Checked {
        Checked::for_test(
            "   --https-listen-port value   (listener) HTTPS listen port (default: 6443)\n",
            flags,
            &[],
            env,
        )
    }

    #[test]
    fn the_apiserver_is_looked_for_where_k3s_puts_it() {
        let loopback = |port: u16| {
            Some(vec![
                SocketAddr::from(([127, 0, 0, 1], port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
            ])
        };
        assert_eq!(apiserver_addresses(&server_with(&[], &[])), loopback(6444));
        assert_eq!(
            apiserver_addresses(&server_with(&[("https-listen-port", "7443")], &[])),
            loopback(7444)
        );
        assert_eq!(
            apiserver_addresses(&server_with(
                &[("https-listen-port", "7443")],
                &[("K3S_APISERVER_PORT", "9000")]
            )),
            loopback(9000)
        );
        assert_eq!(
            apiserver_addresses(&server_with(
                &[],
                &[("K3S_APISERVER_BIND_ADDRESS", "10.0.0.5")]
            )),
            Some(vec![SocketAddr::from(([10, 0, 0, 5], 6444))])
        );
        // The apiserver's own flags can move it: not known then, so not waited for.
        assert_eq!(
            apiserver_addresses(&server_with(
                &[("kube-apiserver-arg", "secure-port=7000")],
                &[]
            )),
            None
        );
        assert_eq!(
            apiserver_addresses(&server_with(
                &[],
                &[("K3S_APISERVER_BIND_ADDRESS", "0.0.0.0")]
            )),
            loopback(6444)
        );
    }

    #[test]
    fn listening_means_a_connection_is_accepted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        assert!(listening(&[open]));
        // A port bound but not listening refuses connections, and stays ours meanwhile.
        let bound = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::empty(),
            None,
        )
        .unwrap();
        nix::sys::socket::bind(
            std::os::fd::AsRawFd::as_raw_fd(&bound),
            &nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, 0),
        )
        .unwrap();
        let closed: nix::sys::socket::SockaddrIn =
            nix::sys::socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&bound)).unwrap();
        let closed = SocketAddr::from(([127, 0, 0, 1], closed.port()));
        assert!(!listening(&[closed]));
        assert!(listening(&[closed, open]));
        assert!(!listening(&[]));
    }

    #[test]
    fn k3s_gets_gogc_25_unless_the_user_set_gogc() {
        let mut recorded = std::collections::BTreeMap::new();
        assert_eq!(
            default_gogc(&recorded),
            Some(("GOGC".to_string(), "25".to_string()))
        );
        recorded.insert("GOGC".to_string(), "100".to_string());
        assert_eq!(default_gogc(&recorded), None);
    }
}
