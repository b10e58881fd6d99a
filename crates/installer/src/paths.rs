//! Where an installation puts things. Every path the installer writes is derived here, so the
//! layout can be read in one place.
//!
//! prefix (default /opt/k3s-gvisor): what the bundle ships, copied.
//!   bin/            runc containerd containerd-shim-runc-v2 ctr k3s launcher installer
//!   cni/bin/        gvisor-cni (copies, not symlinks: the CNI spec execs them by path)
//!   etc/containerd/config.toml   rendered from the bundle's template; registry credentials
//!                   from registries.yaml are rewritten into it at every start (then mode 0600)
//!   etc/containerd/certs.d/  hosts.toml per registry, from registries.yaml at every start
//!   etc/cni/net.d/  the CNI conflist, with this node's podCIDR as its range (k3s bundles)
//!   etc/cni/templates/  the conflist as shipped, rendered into net.d/ at start
//!   procsys/        /proc/sys values the launcher serves, only for files this host lacks
//!   images/         the OCI archives, kept so `start` can re-import after a data wipe
//! data dir (default /var/lib/k3s-gvisor): what the running system writes.
//!   state.json      everything created or mounted, for uninstall
//!   images/         image archives imported at every start (k3s's airgap images dir)
//!   images-imported.json  what was imported from which archive (images.rs)
//!   run/            pid files, containerd socket, runc state
//!   logs/           containerd.log k3s.log and the launchers' logs
//!   containerd/     containerd root and state
//!   k3s/ kubelet/   k3s data dir, kubelet root dir
//!   pod-logs/       the kubelet's pod logs (a drop-in in k3s/agent/etc/kubelet.conf.d/)
//!   kubeconfig.yaml mode 0600 (servers)
//!   agent-token     the join token, mode 0600 (agents)
//!   run/node-routes.json  routes to other nodes' pods and ip_forward as found (node_routes.rs)

use std::path::{Path, PathBuf};

pub const DEFAULT_PREFIX: &str = "/opt/k3s-gvisor";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/k3s-gvisor";

#[derive(Debug, Clone)]
pub struct Paths {
    pub prefix: PathBuf,
    pub data_dir: PathBuf,
}

impl Paths {
    pub fn new(prefix: &Path, data_dir: &Path) -> Paths {
        Paths {
            prefix: absolute(prefix),
            data_dir: absolute(data_dir),
        }
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.prefix.join("bin").join(name)
    }
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.prefix.join("cni/bin")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.prefix.join("etc/cni/net.d")
    }
    pub fn containerd_config(&self) -> PathBuf {
        self.prefix.join("etc/containerd/config.toml")
    }
    /// containerd's registry `config_path`: one `HOST/hosts.toml` per registry, written from
    /// /etc/rancher/k3s/registries.yaml at every start (registries.rs).
    pub fn containerd_hosts_dir(&self) -> PathBuf {
        self.prefix.join("etc/containerd/certs.d")
    }
    pub fn procsys_dir(&self) -> PathBuf {
        self.prefix.join("procsys")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.prefix.join("images")
    }
    /// The user's image archives, imported at every start beside k3s's own airgap dir.
    pub fn airgap_images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }
    /// What each airgap archive gave at its last import (images.rs).
    pub fn images_record(&self) -> PathBuf {
        self.data_dir.join("images-imported.json")
    }
    pub fn state_file(&self) -> PathBuf {
        self.data_dir.join("state.json")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.data_dir.join("run")
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.run_dir().join("containerd.sock")
    }
    pub fn runc_root(&self) -> PathBuf {
        self.run_dir().join("runc")
    }
    pub fn pid_file(&self, service: &str) -> PathBuf {
        self.run_dir().join(format!("{service}.pid"))
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }
    pub fn log_file(&self, service: &str) -> PathBuf {
        self.logs_dir().join(format!("{service}.log"))
    }
    pub fn launcher_log(&self, service: &str) -> PathBuf {
        self.logs_dir().join(format!("launcher-{service}.log"))
    }
    pub fn containerd_root(&self) -> PathBuf {
        self.data_dir.join("containerd/root")
    }
    pub fn containerd_state(&self) -> PathBuf {
        self.data_dir.join("containerd/state")
    }
    pub fn k3s_data_dir(&self) -> PathBuf {
        self.data_dir.join("k3s")
    }
    pub fn kubelet_root(&self) -> PathBuf {
        self.data_dir.join("kubelet")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }
    /// An agent's join token (mode 0600), handed to k3s as --token-file.
    pub fn agent_token(&self) -> PathBuf {
        self.data_dir.join("agent-token")
    }
    /// Where a server's k3s keeps the token agents join with.
    pub fn server_node_token(&self) -> PathBuf {
        self.k3s_data_dir().join("server/node-token")
    }
    /// The CNI configs as shipped: rendered into the conf dir with this node's podCIDR once
    /// k3s has assigned it (cni_host::write_pod_range).
    pub fn cni_template_dir(&self) -> PathBuf {
        self.prefix.join("etc/cni/templates")
    }
    pub fn pod_logs_dir(&self) -> PathBuf {
        self.data_dir.join("pod-logs")
    }
    /// A kubelet config drop-in in the directory k3s passes as --config-dir.
    pub fn kubelet_dropin(&self) -> PathBuf {
        self.k3s_data_dir()
            .join("agent/etc/kubelet.conf.d/50-k3s-gvisor.conf")
    }
}

/// Paths are stored in the state file and handed to daemons, so they must not depend on the cwd.
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}
