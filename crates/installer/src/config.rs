//! Configuration for the daemons: the containerd config rendered from the bundle's template, and
//! the k3s command line.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::paths::Paths;

/// The values a containerd config template may use, as `{{NAME}}`.
pub struct ContainerdSettings<'a> {
    pub paths: &'a Paths,
    pub snapshotter: &'a str,
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

/// The components k3s would otherwise deploy that cannot work in the sandbox or are not wanted:
/// traefik and servicelb need host ports and iptables, metrics-server needs kubelet stats that
/// cAdvisor cannot produce on 9p, local-storage needs hostPath volumes on overlay-capable disk.
pub const K3S_DISABLED_COMPONENTS: &str = "traefik,servicelb,metrics-server,local-storage";

/// The `k3s server` arguments for this install.
pub fn k3s_server_args(
    paths: &Paths,
    control_plane_only: bool,
    kubelet_args: &[String],
) -> Vec<String> {
    let mut args = vec![
        "server".to_string(),
        format!("--data-dir={}", paths.k3s_data_dir().display()),
        format!("--write-kubeconfig={}", paths.kubeconfig().display()),
        "--write-kubeconfig-mode=0600".to_string(),
        "--flannel-backend=none".to_string(),
        "--disable-network-policy".to_string(),
        format!("--disable={K3S_DISABLED_COMPONENTS}"),
    ];
    if control_plane_only {
        args.push("--disable-agent".to_string());
    } else {
        args.push(format!(
            "--container-runtime-endpoint=unix://{}",
            paths.containerd_socket().display()
        ));
        args.push(format!(
            "--kubelet-arg=root-dir={}",
            paths.kubelet_root().display()
        ));
        for arg in kubelet_args {
            args.push(format!("--kubelet-arg={arg}"));
        }
    }
    args
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
        let args = k3s_server_args(&paths, true, &["x=1".to_string()]);
        assert!(args.contains(&"--disable-agent".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--kubelet-arg")));
        let args = k3s_server_args(&paths, false, &["x=1".to_string()]);
        assert!(args
            .contains(&"--container-runtime-endpoint=unix:///d/run/containerd.sock".to_string()));
        assert!(args.contains(&"--kubelet-arg=x=1".to_string()));
    }
}
