//! How a user's shell reaches the install's kubectl, helm, crictl and ctr.
//!
//! k3s's own installer symlinks them into /usr/local/bin and relies on fixed locations (its
//! kubeconfig in /etc/rancher/k3s, its containerd socket in /run/k3s). Ours live where --prefix
//! and --data-dir say (PREFIX/bin/kubectl and crictl are symlinks to k3s, ctr is containerd's),
//! so each tool must be told where its server is: KUBECONFIG for kubectl and helm,
//! CONTAINER_RUNTIME_ENDPOINT for crictl, CONTAINERD_ADDRESS and CONTAINERD_NAMESPACE for ctr
//! (k8s.io: where the kubelet's containers and images are). Two ways, both made at install:
//! - `ToolLinks`: small wrappers in INSTALL_K3S_BIN_DIR (default /usr/local/bin) that set those
//!   defaults and run ours, so a fresh shell (an agent's tool call, a CI step) has the tools
//!   with no set-up. Wrappers rather than k3s's symlinks, since only a wrapper can name our
//!   data dir;
//! - the export line, for a shell that should use this install's tools and no other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::paths::Paths;
use crate::state::State;

/// The first lines of every wrapper: how uninstall (and a later install) knows it is ours.
const WRAPPER_MARK: &str = "# k3s-gvisor tool wrapper";

/// k3s's install.sh settings for its kubectl/crictl/ctr links: INSTALL_K3S_BIN_DIR, and
/// INSTALL_K3S_SYMLINK=skip (make none) or force (replace what is there).
pub struct ToolLinks {
    bin_dir: PathBuf,
    mode: LinkMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkMode {
    /// Make each that is not in the bin dir already.
    Missing,
    Skip,
    /// Replace what is there (kept beside as NAME.k3s-gvisor-saved, put back by uninstall).
    Force,
}

impl ToolLinks {
    pub fn from_env(env: &BTreeMap<String, String>) -> ToolLinks {
        ToolLinks {
            bin_dir: PathBuf::from(
                env.get("INSTALL_K3S_BIN_DIR")
                    .map_or("/usr/local/bin", String::as_str),
            ),
            mode: match env.get("INSTALL_K3S_SYMLINK").map(String::as_str) {
                Some("skip") => LinkMode::Skip,
                Some("force") => LinkMode::Force,
                _ => LinkMode::Missing,
            },
        }
    }

    /// Writes the wrappers this install's kind needs (a server: all three; control-plane-only:
    /// kubectl; an agent, which has no admin kubeconfig: crictl and ctr), recording each.
    pub fn write(&self, state: &mut State) -> Result<()> {
        if self.mode == LinkMode::Skip {
            println!(
                "INSTALL_K3S_SYMLINK=skip: no kubectl, helm, crictl or ctr in {}",
                self.bin_dir.display()
            );
            return Ok(());
        }
        let paths = state.paths();
        if !paths.bin("k3s").is_file() {
            return Ok(());
        }
        let tools: &[&str] = match (state.is_agent(), state.control_plane_only) {
            (true, _) => &["crictl", "ctr"],
            (false, true) => &["kubectl", "helm"],
            (false, false) => &["kubectl", "helm", "crictl", "ctr"],
        };
        // helm: only from a bundle that ships it (older ones did not).
        for tool in tools.iter().filter(|t| paths.bin(t).exists()) {
            let link = self.bin_dir.join(tool);
            if link.symlink_metadata().is_ok() && !is_stale_wrapper(&link) {
                if self.mode != LinkMode::Force {
                    println!(
                        "{} exists: left as it is (INSTALL_K3S_SYMLINK=force replaces it)",
                        link.display()
                    );
                    continue;
                }
                if !is_wrapper(&link) {
                    std::fs::rename(&link, saved(&link))
                        .with_context(|| format!("cannot move {} aside", link.display()))?;
                }
            }
            if !self.bin_dir.is_dir() {
                state.create_dir_all_recorded(&self.bin_dir)?;
            }
            write_wrapper(&link, &wrapper(&paths, tool))?;
            if !state.tool_links.contains(&link) {
                state.tool_links.push(link.clone());
            }
            state.save()?;
            println!("{}: runs this install's {tool}", link.display());
        }
        Ok(())
    }
}

fn saved(link: &Path) -> PathBuf {
    PathBuf::from(format!("{}.k3s-gvisor-saved", link.display()))
}

fn is_wrapper(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.lines().nth(1) == Some(WRAPPER_MARK))
}

/// A wrapper of ours whose install is gone (its program no longer exists): left by an install
/// that was never uninstalled, so it is no one's and may be replaced.
fn is_stale_wrapper(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    is_wrapper(path)
        && text
            .lines()
            .find_map(|line| line.strip_prefix("exec '"))
            .and_then(|rest| rest.split('\'').next())
            .is_some_and(|program| !Path::new(program).exists())
}

/// The sh script for `tool`: its server's defaults unless the caller set them, then ours.
fn wrapper(paths: &Paths, tool: &str) -> String {
    let socket = paths.containerd_socket().display().to_string();
    let defaults = match tool {
        // helm reads KUBECONFIG as kubectl does.
        "kubectl" | "helm" => format!(
            "[ -n \"${{KUBECONFIG:-}}\" ] || export KUBECONFIG={}\n",
            quote(&paths.kubeconfig().display().to_string())
        ),
        // k3s's own crictl reads the crictl.yaml its agent writes (k3s's cmd/k3s), which names
        // our socket; without a config crictl warns on every call.
        "crictl" => format!(
            "[ -n \"${{CRI_CONFIG_FILE:-}}\" ] || export CRI_CONFIG_FILE={}\n\
             [ -n \"${{CONTAINER_RUNTIME_ENDPOINT:-}}\" ] || export CONTAINER_RUNTIME_ENDPOINT={}\n",
            quote(&paths.k3s_data_dir().join("agent/etc/crictl.yaml").display().to_string()),
            quote(&format!("unix://{socket}"))
        ),
        _ => format!(
            "[ -n \"${{CONTAINERD_ADDRESS:-}}\" ] || export CONTAINERD_ADDRESS={}\n\
             [ -n \"${{CONTAINERD_NAMESPACE:-}}\" ] || export CONTAINERD_NAMESPACE=k8s.io\n",
            quote(&socket)
        ),
    };
    format!(
        "#!/bin/sh\n{WRAPPER_MARK}\n# {tool} of the k3s-gvisor install in {} (data {}); its \
         uninstall removes this file.\n{defaults}exec {} \"$@\"\n",
        paths.prefix.display(),
        paths.data_dir.display(),
        sh_quote_always(&paths.bin(tool).display().to_string())
    )
}

fn write_wrapper(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Removes the wrappers the install wrote, if they are still ours, and puts back what
/// INSTALL_K3S_SYMLINK=force moved aside. Returns what it did, one line each.
pub fn remove_tool_links(state: &State) -> Vec<String> {
    let mut report = Vec::new();
    for link in &state.tool_links {
        if is_wrapper(link) && std::fs::remove_file(link).is_ok() {
            report.push(format!("removed {}", link.display()));
        }
        if std::fs::rename(saved(link), link).is_ok() {
            report.push(format!("put back {}", link.display()));
        }
    }
    report
}

/// `export PATH=...:"$PATH" KUBECONFIG=... [CONTAINER_RUNTIME_ENDPOINT=... CONTAINERD_...]`.
/// `with_runtime` is false for a control-plane-only install (no containerd runs).
pub fn export_line(paths: &Paths, with_runtime: bool) -> String {
    let socket = paths.containerd_socket().display().to_string();
    let mut line = format!(
        "export PATH={}:\"$PATH\" KUBECONFIG={}",
        quote(&paths.prefix.join("bin").display().to_string()),
        quote(&paths.kubeconfig().display().to_string())
    );
    if with_runtime {
        line.push_str(&format!(
            " CONTAINER_RUNTIME_ENDPOINT={} CONTAINERD_ADDRESS={} CONTAINERD_NAMESPACE=k8s.io",
            quote(&format!("unix://{socket}")),
            quote(&socket)
        ));
    }
    line
}

/// An agent's line: crictl and ctr only. An agent has no admin kubeconfig (kubectl is used on
/// the server), and a KUBECONFIG naming a file that does not exist would only mislead.
pub fn agent_export_line(paths: &Paths) -> String {
    let socket = paths.containerd_socket().display().to_string();
    format!(
        "export PATH={}:\"$PATH\" CONTAINER_RUNTIME_ENDPOINT={} CONTAINERD_ADDRESS={} \
         CONTAINERD_NAMESPACE=k8s.io",
        quote(&paths.prefix.join("bin").display().to_string()),
        quote(&format!("unix://{socket}")),
        quote(&socket)
    )
}

/// Single-quotes a value for sh when it holds anything but plain path characters.
fn quote(value: &str) -> String {
    let plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        value.to_string()
    } else {
        sh_quote_always(value)
    }
}

fn sh_quote_always(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn an_agents_line_has_no_kubeconfig() {
        let paths = Paths::new(Path::new("/p"), Path::new("/d"));
        assert_eq!(
            agent_export_line(&paths),
            "export PATH=/p/bin:\"$PATH\" CONTAINER_RUNTIME_ENDPOINT=unix:///d/run/containerd.sock \
             CONTAINERD_ADDRESS=/d/run/containerd.sock CONTAINERD_NAMESPACE=k8s.io"
        );
    }

    #[test]
    fn the_line_names_every_tool_setting() {
        let paths = Paths::new(
            Path::new("/opt/k3s-gvisor"),
            Path::new("/var/lib/k3s-gvisor"),
        );
        assert_eq!(
            export_line(&paths, true),
            "export PATH=/opt/k3s-gvisor/bin:\"$PATH\" \
             KUBECONFIG=/var/lib/k3s-gvisor/kubeconfig.yaml \
             CONTAINER_RUNTIME_ENDPOINT=unix:///var/lib/k3s-gvisor/run/containerd.sock \
             CONTAINERD_ADDRESS=/var/lib/k3s-gvisor/run/containerd.sock \
             CONTAINERD_NAMESPACE=k8s.io"
        );
        assert_eq!(
            export_line(&paths, false),
            "export PATH=/opt/k3s-gvisor/bin:\"$PATH\" \
             KUBECONFIG=/var/lib/k3s-gvisor/kubeconfig.yaml"
        );
    }

    /// An install's state with just what the wrappers read.
    fn state_at(root: &Path, agent: bool) -> State {
        serde_json::from_value(serde_json::json!({
            "bundle_name": "k3s-gvisor", "bundle_version": "v0", "snapshotter": "native",
            "prefix": root.join("prefix"), "data_dir": root.join("data"),
            "control_plane_only": false, "server": agent.then_some("https://x:6443"),
            "created_dirs": [], "created_files": [], "mounts": [], "absent_before": [],
            "workarounds": [],
        }))
        .unwrap()
    }

    /// PREFIX/bin/TOOL as a script that prints what the wrapper gave it.
    fn fake_tools(state: &State) {
        let bin = state.prefix.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&state.data_dir).unwrap();
        for tool in ["k3s", "kubectl", "helm", "crictl", "ctr"] {
            let script = "#!/bin/sh\necho \"$KUBECONFIG|$CONTAINER_RUNTIME_ENDPOINT|$CONTAINERD_ADDRESS|$*\"\n";
            write_wrapper(&bin.join(tool), script).unwrap();
        }
    }

    fn run(path: &Path, env: &[(&str, &str)]) -> String {
        let output = std::process::Command::new(path)
            .arg("get")
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    #[test]
    fn wrappers_point_a_fresh_shell_at_the_install_and_uninstall_removes_only_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = state_at(dir.path(), false);
        fake_tools(&state);
        let bin_dir = dir.path().join("usr-local-bin");
        std::fs::create_dir(&bin_dir).unwrap();
        // Someone else's ctr, and a wrapper of an install that is gone.
        std::fs::write(bin_dir.join("ctr"), "theirs").unwrap();
        write_wrapper(
            &bin_dir.join("crictl"),
            &format!("#!/bin/sh\n{WRAPPER_MARK}\nexec '/gone/bin/crictl' \"$@\"\n"),
        )
        .unwrap();
        let env = |mode: &str| {
            BTreeMap::from([
                (
                    "INSTALL_K3S_BIN_DIR".to_string(),
                    bin_dir.display().to_string(),
                ),
                ("INSTALL_K3S_SYMLINK".to_string(), mode.to_string()),
            ])
        };
        ToolLinks::from_env(&env("")).write(&mut state).unwrap();
        assert_eq!(
            state.tool_links,
            [
                bin_dir.join("kubectl"),
                bin_dir.join("helm"),
                bin_dir.join("crictl")
            ]
        );
        assert_eq!(
            std::fs::read_to_string(bin_dir.join("ctr")).unwrap(),
            "theirs"
        );
        let kubeconfig = state.data_dir.join("kubeconfig.yaml");
        assert_eq!(
            run(&bin_dir.join("kubectl"), &[]),
            format!("{}|||get", kubeconfig.display())
        );
        assert_eq!(
            run(&bin_dir.join("kubectl"), &[("KUBECONFIG", "/mine")]),
            "/mine|||get"
        );
        assert_eq!(
            run(&bin_dir.join("helm"), &[]),
            format!("{}|||get", kubeconfig.display())
        );
        let socket = state.data_dir.join("run/containerd.sock");
        assert_eq!(
            run(&bin_dir.join("crictl"), &[]),
            format!("|unix://{}||get", socket.display())
        );

        // force: their ctr is moved aside and put back by uninstall.
        ToolLinks::from_env(&env("force"))
            .write(&mut state)
            .unwrap();
        assert_eq!(
            run(&bin_dir.join("ctr"), &[]),
            format!("||{}|get", socket.display())
        );
        remove_tool_links(&state);
        let left: Vec<_> = std::fs::read_dir(&bin_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["ctr"]);
        assert_eq!(
            std::fs::read_to_string(bin_dir.join("ctr")).unwrap(),
            "theirs"
        );

        let mut agent = state_at(dir.path(), true);
        ToolLinks::from_env(&env("")).write(&mut agent).unwrap();
        assert_eq!(
            agent.tool_links,
            [bin_dir.join("crictl")],
            "an agent has no admin kubeconfig: no kubectl"
        );
        let mut skip = state_at(dir.path(), false);
        ToolLinks::from_env(&env("skip")).write(&mut skip).unwrap();
        assert!(skip.tool_links.is_empty());
    }

    #[test]
    fn odd_paths_are_quoted_for_sh() {
        assert_eq!(quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(quote("/plain/path"), "/plain/path");
    }
}
