//! The state file: a record of everything an installation created or mounted on the host, so
//! `uninstall` can put the host back exactly as it was. It is rewritten after every change, so
//! an install that fails half-way can still be undone.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use bundle_format::Snapshotter;

use crate::cluster::TurnedOff;
use crate::node_ip::AddedAddress;
use crate::paths::Paths;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub bundle_name: String,
    pub bundle_version: String,
    pub prefix: PathBuf,
    pub data_dir: PathBuf,
    pub control_plane_only: bool,
    /// An agent node: the server it joined (`--server`), None for a server.
    #[serde(default)]
    pub server: Option<String>,
    /// The node name k3s is given (`--node-name`, else this host's name in lower case).
    #[serde(default)]
    pub node_name: Option<String>,
    pub snapshotter: Snapshotter,
    /// Directories the installer created, in creation order. Removed in reverse order;
    /// the prefix and data dir recursively, anything else only when empty.
    pub created_dirs: Vec<PathBuf>,
    /// Files the installer created outside prefix and data dir (e.g. a /dev/kmsg mount target).
    pub created_files: Vec<PathBuf>,
    /// Mount points the installer mounted, in mount order. Unmounted in reverse order.
    pub mounts: Vec<PathBuf>,
    /// Host paths the daemons may create (k3s's /etc/rancher/node, kubelet's /var/log/pods)
    /// that did not exist before install: uninstall removes what is left of them once empty.
    pub absent_before: Vec<PathBuf>,
    /// Network namespaces under /run/netns before install; pod netns created since (containerd
    /// names them cni-*) are unmounted and removed on uninstall.
    #[serde(default)]
    pub netns_before: Vec<String>,
    /// The workaround lines printed at install, for `status` and `doctor`.
    pub workarounds: Vec<String>,
    /// /proc/sys files that existed but refused writes at install, served by the launcher.
    #[serde(default)]
    pub read_only_procsys: Vec<String>,
    /// Why kube-proxy is off (`k3s --disable-kube-proxy`), or None when it runs.
    #[serde(default)]
    pub kube_proxy_off: Option<String>,
    /// The k3s add-ons turned off (`k3s --disable`), each with its reason.
    #[serde(default)]
    pub addons_off: Vec<TurnedOff>,
    /// Addresses the installer added (the node IP on lo where there is no default route).
    /// Removed on uninstall; forgotten when a sandbox restart took them.
    #[serde(default)]
    pub added_addresses: Vec<AddedAddress>,
    /// Network interfaces that existed before install: the CNI bridge is removed on uninstall
    /// only when it is not one of them.
    #[serde(default)]
    pub links_before: Vec<String>,
    /// Set when lo was down and `start` brought it up (a fresh Linux network namespace): the
    /// IPv4 addresses lo had then. Uninstall sets lo down again and removes the others.
    #[serde(default)]
    pub lo_before_up: Option<Vec<AddedAddress>>,
    /// When k3s runs under the launcher (`--launcher`); `start` keeps to it.
    #[serde(default)]
    pub launcher: LauncherUse,
    /// The user's k3s flags (from INSTALL_K3S_EXEC, then after `--`), checked at install and
    /// passed to k3s after the installer's own at every start (k3s_settings.rs).
    #[serde(default)]
    pub k3s_flags: Vec<String>,
    /// The `K3S_*`, `CONTAINERD_*` and proxy variables present at install, as k3s's install.sh
    /// records them in its service's environment file: k3s gets them at every start, containerd
    /// the proxy and `CONTAINERD_*` ones. Nothing else of the installer's environment reaches a
    /// daemon. May hold secrets (K3S_TOKEN): the state file is mode 0600.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The kubectl, helm, crictl and ctr wrappers the install wrote (INSTALL_K3S_BIN_DIR, default
    /// /usr/local/bin); uninstall removes exactly these.
    #[serde(default)]
    pub tool_links: Vec<PathBuf>,
    /// Where `upgrade` keeps the previous version's files (`PREFIX.previous`) until the new
    /// version runs. Recorded before the move, so `uninstall` removes it whatever happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_prefix: Option<PathBuf>,
}

/// When k3s runs under the launcher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LauncherUse {
    /// Where the host lacks or refuses /proc/sys files k3s needs and the sandbox refuses to
    /// have them laid over /proc/sys (procsys_overlay.rs).
    #[default]
    Auto,
    /// Always, even where nothing is redirected (to measure what the launcher costs).
    Always,
    /// Never, even where files are missing (the kubelet may then fail to start).
    Never,
}

/// k3s's default node name: the host name, in lower case (a node name must be a DNS
/// subdomain).
pub fn default_node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_lowercase();
    if rc != 0 || name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

impl State {
    pub fn load(data_dir: &Path) -> Result<Option<State>> {
        let path = data_dir.join("state.json");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let state = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{} is damaged; inspect it, or remove the install by hand",
                        path.display()
                    )
                })?;
                Ok(Some(state))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Loads the state of an existing install or explains how to get one.
    pub fn require(data_dir: &Path) -> Result<State> {
        State::load(data_dir)?.with_context(|| {
            format!(
                "no k3s-gvisor install found at data dir {} (no state.json): run ./install first, \
                 or pass the --data-dir you installed with",
                data_dir.display()
            )
        })
    }

    pub fn is_agent(&self) -> bool {
        self.server.is_some()
    }

    /// The k3s command this install runs.
    pub fn k3s_command(&self) -> crate::k3s_settings::K3sCommand {
        if self.is_agent() {
            crate::k3s_settings::K3sCommand::Agent
        } else {
            crate::k3s_settings::K3sCommand::Server
        }
    }

    /// The node name k3s runs with (installs made before --node-name used the host name,
    /// which is also k3s's default).
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(default_node_name)
    }

    pub fn paths(&self) -> Paths {
        Paths::new(&self.prefix, &self.data_dir)
    }

    /// Creates `dir` and its missing parents, recording each one created, then saves.
    pub fn create_dir_all_recorded(&mut self, dir: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut current = dir.to_path_buf();
        while !current.exists() {
            missing.push(current.clone());
            if !current.pop() {
                break;
            }
        }
        for path in missing.into_iter().rev() {
            fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
            self.created_dirs.push(path);
        }
        self.save()
    }

    /// Writes atomically (temp file + rename) so a crash never leaves half a state file. Mode
    /// 0600: it records the install's environment, which may hold a token.
    pub fn save(&self) -> Result<()> {
        let path = self.data_dir.join("state.json");
        let text = serde_json::to_string_pretty(self)?;
        crate::files::write_replacing(&path, text.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}
