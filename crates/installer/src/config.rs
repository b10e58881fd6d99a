//! Configuration for the daemons: the containerd config rendered from the bundle's template, and
//! the k3s command line.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};

use bundle_format::Snapshotter;

use crate::paths::Paths;

/// The values a containerd config template may use, as `{{NAME}}`.
pub struct ContainerdSettings<'a> {
    pub paths: &'a Paths,
    pub snapshotter: Snapshotter,
    pub sandbox_image: &'a str,
    pub enable_unprivileged_ports: bool,
    pub enable_unprivileged_icmp: bool,
    pub restrict_oom_score_adj: bool,
}

impl ContainerdSettings<'_> {
    pub fn placeholders(&self) -> BTreeMap<&'static str, String> {
        let p = self.paths;
        let text = |path: &Path| path.display().to_string();
        BTreeMap::from([
            ("PREFIX", text(&p.prefix)),
            ("DATA_DIR", text(&p.data_dir)),
            ("CONTAINERD_ROOT", text(&p.containerd_root())),
            ("CONTAINERD_STATE", text(&p.containerd_state())),
            ("CONTAINERD_SOCKET", text(&p.containerd_socket())),
            ("RUNC", text(&p.bin("runc"))),
            ("RUNC_ROOT", text(&p.runc_root())),
            ("CNI_BIN_DIR", text(&p.cni_bin_dir())),
            ("CNI_CONF_DIR", text(&p.cni_conf_dir())),
            ("SNAPSHOTTER", self.snapshotter.to_string()),
            ("PLATFORM", format!("linux/{}", crate::probe::host_arch())),
            ("SANDBOX_IMAGE", self.sandbox_image.to_string()),
            ("REGISTRY_CONFIG_PATH", text(&p.containerd_hosts_dir())),
            // Empty until `start` fills it from registries.yaml (registries::apply).
            ("REGISTRY_AUTH", crate::registries::render_auth_block(None)),
            (
                "ENABLE_UNPRIVILEGED_PORTS",
                self.enable_unprivileged_ports.to_string(),
            ),
            (
                "ENABLE_UNPRIVILEGED_ICMP",
                self.enable_unprivileged_icmp.to_string(),
            ),
            (
                "RESTRICT_OOM_SCORE_ADJ",
                self.restrict_oom_score_adj.to_string(),
            ),
        ])
    }
}

/// Replaces every `{{NAME}}`; an unknown or unterminated placeholder is an error, so a template
/// and installer that drift apart fail at install rather than producing a broken config.
pub fn render(template: &str, values: &BTreeMap<&'static str, String>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .context("template has an unterminated {{ placeholder")?;
        let name = after[..end].trim();
        match values.get(name) {
            Some(value) => out.push_str(value),
            None => bail!(
                "template uses unknown placeholder {{{{{name}}}}}; known: {}",
                values.keys().copied().collect::<Vec<_>>().join(", ")
            ),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Kubelet flags from the bundle's etc/k3s/kubelet-args: one `name=value` per line, `#` comments.
pub fn parse_kubelet_args(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.trim_start_matches("--").to_string())
        .collect()
}

/// What varies in the `k3s server` command line between installs and starts.
pub struct K3sOptions<'a> {
    pub control_plane_only: bool,
    /// From the bundle's etc/k3s/kubelet-args.
    pub kubelet_args: &'a [String],
    /// Passed as --node-ip where the sandbox has no default route (node_ip.rs).
    pub node_ip: Option<IpAddr>,
    /// False where kube-proxy cannot write its rules (cluster.rs).
    pub kube_proxy: bool,
    /// Add-ons to turn off (cluster.rs).
    pub disable: Vec<String>,
    /// Always passed: the installer must know its node's name to find its podCIDR, and two
    /// nodes on one host (or sandboxes with the same host name) need distinct names.
    pub node_name: &'a str,
}

/// kube-proxy's conntrack settings, which k3s applies itself (as sysctls under
/// net/netfilter/) at agent start whether or not kube-proxy runs. 0 means "leave the kernel's
/// values alone" to both: gVisor has no net/netfilter at all, and Linux refuses those sysctls
/// in any network namespace but the host's, so setting them only ever logged errors.
const KUBE_PROXY_CONNTRACK_ARGS: [&str; 3] = [
    "conntrack-max-per-core=0",
    "conntrack-tcp-timeout-established=0s",
    "conntrack-tcp-timeout-close-wait=0s",
];

/// The `k3s server` arguments for this install.
pub fn k3s_server_args(paths: &Paths, options: &K3sOptions) -> Vec<String> {
    let mut args = vec![
        "server".to_string(),
        format!("--data-dir={}", paths.k3s_data_dir().display()),
        format!("--write-kubeconfig={}", paths.kubeconfig().display()),
        "--flannel-backend=none".to_string(),
        "--disable-network-policy".to_string(),
    ];
    if !options.disable.is_empty() {
        args.push(format!("--disable={}", options.disable.join(",")));
    }
    if let Some(ip) = options.node_ip {
        args.push(format!("--node-ip={ip}"));
    }
    // A server flag that k3s hands to every agent that joins, so a control-plane-only server
    // sets it too: an agent cannot turn kube-proxy off itself, and in a sandbox that cannot
    // write its rules a kube-proxy makes k3s exit.
    if !options.kube_proxy {
        args.push("--disable-kube-proxy".to_string());
    }
    if options.control_plane_only {
        args.push("--disable-agent".to_string());
        return args;
    }
    args.push(format!("--node-name={}", options.node_name));
    push_agent_args(&mut args, paths, options);
    args
}

/// The `k3s agent` arguments for an agent node joining `server`. Whether kube-proxy runs, the
/// cluster and service ranges and the add-ons are the server's to decide (k3s hands them to
/// its agents), so only the node's own settings are here. The token is read from a file
/// (mode 0600), never put on a command line that `ps` shows.
pub fn k3s_agent_args(paths: &Paths, options: &K3sOptions, server: &str) -> Vec<String> {
    let mut args = vec![
        "agent".to_string(),
        format!("--data-dir={}", paths.k3s_data_dir().display()),
        format!("--server={server}"),
        format!("--token-file={}", paths.agent_token().display()),
        format!("--node-name={}", options.node_name),
    ];
    if let Some(ip) = options.node_ip {
        args.push(format!("--node-ip={ip}"));
    }
    push_agent_args(&mut args, paths, options);
    args
}

/// What the kubelet side needs, on a server with an agent and on an agent alike.
fn push_agent_args(args: &mut Vec<String>, paths: &Paths, options: &K3sOptions) {
    // A path, as k3s documents the flag: k3s adds `unix://` for the kubelet and hands the
    // value as it is to cAdvisor's `--containerd`, which dials it as a path. Given
    // `unix:///...`, cAdvisor's containerd factory failed ("dial unix unix:///.../
    // containerd.sock"), so it knew no container: no pod metrics (e2e `kubectl-top`).
    args.push(format!(
        "--container-runtime-endpoint={}",
        paths.containerd_socket().display()
    ));
    args.push(format!(
        "--kubelet-arg=root-dir={}",
        paths.kubelet_root().display()
    ));
    for arg in options.kubelet_args {
        args.push(format!("--kubelet-arg={arg}"));
    }
    for arg in KUBE_PROXY_CONNTRACK_ARGS {
        args.push(format!("--kube-proxy-arg={arg}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_placeholders_and_rejects_unknown_ones() {
        let values = BTreeMap::from([("A", "1".to_string())]);
        assert_eq!(render("x={{A}} y={{ A }}", &values).unwrap(), "x=1 y=1");
        let error = render("{{B}}", &values).unwrap_err().to_string();
        assert!(error.contains("unknown placeholder {{B}}"), "{error}");
        assert!(render("{{A", &values).is_err());
    }

    #[test]
    fn kubelet_args_skip_comments_and_leading_dashes() {
        let args =
            parse_kubelet_args("# why\n--cgroups-per-qos=false\n\nenforce-node-allocatable=\n");
        assert_eq!(args, ["cgroups-per-qos=false", "enforce-node-allocatable="]);
    }

    #[test]
    fn control_plane_only_has_no_kubelet_or_runtime_flags() {
        let paths = Paths::new(Path::new("/p"), Path::new("/d"));
        let kubelet_args = ["x=1".to_string()];
        let mut options = K3sOptions {
            control_plane_only: true,
            kubelet_args: &kubelet_args,
            node_ip: Some("10.255.255.254".parse().unwrap()),
            kube_proxy: false,
            disable: vec!["coredns".into(), "traefik".into()],
            node_name: "n1",
        };
        let args = k3s_server_args(&paths, &options);
        assert!(args.contains(&"--disable-agent".to_string()));
        assert!(args.contains(&"--node-ip=10.255.255.254".to_string()));
        assert!(args.contains(&"--disable=coredns,traefik".to_string()));
        // For the agents that join it.
        assert!(args.contains(&"--disable-kube-proxy".to_string()));
        assert!(!args
            .iter()
            .any(|a| a.starts_with("--kubelet-arg") || a.starts_with("--kube-proxy-arg")));

        options.control_plane_only = false;
        let args = k3s_server_args(&paths, &options);
        assert!(args.contains(&"--container-runtime-endpoint=/d/run/containerd.sock".to_string()));
        assert!(args.contains(&"--kubelet-arg=x=1".to_string()));
        assert!(args.contains(&"--disable-kube-proxy".to_string()));
        assert!(args.contains(&"--kube-proxy-arg=conntrack-max-per-core=0".to_string()));
        assert!(args.contains(&"--node-name=n1".to_string()));

        options.kube_proxy = true;
        options.node_ip = None;
        let args = k3s_server_args(&paths, &options);
        assert!(!args.contains(&"--disable-kube-proxy".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--node-ip")));
    }

    #[test]
    fn agent_joins_with_a_token_file_and_leaves_cluster_settings_to_the_server() {
        let paths = Paths::new(Path::new("/p"), Path::new("/d"));
        let kubelet_args = ["x=1".to_string()];
        let options = K3sOptions {
            control_plane_only: false,
            kubelet_args: &kubelet_args,
            node_ip: None,
            kube_proxy: false,
            disable: vec!["traefik".into()],
            node_name: "agent-1",
        };
        let args = k3s_agent_args(&paths, &options, "https://10.0.0.1:6443");
        assert_eq!(args[0], "agent");
        for expected in [
            "--server=https://10.0.0.1:6443",
            "--token-file=/d/agent-token",
            "--node-name=agent-1",
            "--container-runtime-endpoint=/d/run/containerd.sock",
            "--kubelet-arg=x=1",
            "--data-dir=/d/k3s",
        ] {
            assert!(
                args.contains(&expected.to_string()),
                "{expected} in {args:?}"
            );
        }
        // Server-only flags would make `k3s agent` exit at start.
        for server_only in [
            "--disable",
            "--flannel-backend",
            "--write-kubeconfig",
            "--token=",
        ] {
            assert!(
                !args.iter().any(|a| a.starts_with(server_only)),
                "{server_only} in {args:?}"
            );
        }
    }
}
