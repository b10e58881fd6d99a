//! The one line a user pastes to use the install's kubectl, crictl and ctr.
//!
//! k3s's own installer symlinks them into /usr/local/bin and relies on fixed locations (its
//! kubeconfig in /etc/rancher/k3s, its containerd socket in /run/k3s). Ours live where --prefix
//! and --data-dir say (PREFIX/bin/kubectl and crictl are symlinks to k3s, ctr is containerd's),
//! so the same line that puts PREFIX/bin on PATH also tells each tool where its server is:
//! KUBECONFIG for kubectl, CONTAINER_RUNTIME_ENDPOINT for crictl, CONTAINERD_ADDRESS and
//! CONTAINERD_NAMESPACE for ctr (k8s.io: where the kubelet's containers and images are).

use crate::paths::Paths;

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
        format!("'{}'", value.replace('\'', r"'\''"))
    }
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

    #[test]
    fn odd_paths_are_quoted_for_sh() {
        assert_eq!(quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(quote("/plain/path"), "/plain/path");
    }
}
