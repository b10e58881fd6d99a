//! The installer's one way to ask the Kubernetes API: `k3s kubectl` with a given kubeconfig,
//! for install's waits, `status` and the node-routes daemon.
//!
//! `k3s kubectl` and not a client library: the bundle ships it anyway, and a client in the
//! installer (svcproxy's kube-rs) would grow every install's binary for a handful of questions.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths::Paths;

/// `k3s kubectl --kubeconfig=FILE` of one install.
pub struct Kubectl {
    k3s: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// With the admin kubeconfig k3s writes on a server.
    pub fn admin(paths: &Paths) -> Kubectl {
        Kubectl::with(paths, paths.kubeconfig())
    }

    /// With other credentials: an agent has no admin kubeconfig, only the kubelet's and those
    /// k3s gives its own controllers (node_routes.rs).
    pub fn with(paths: &Paths, kubeconfig: PathBuf) -> Kubectl {
        Kubectl {
            k3s: paths.bin("k3s"),
            kubeconfig,
        }
    }

    /// Runs `k3s kubectl ARGS`: its stdout, or an error with its stderr. A kubeconfig k3s has
    /// not written yet is an error without starting the 200 MB k3s binary for nothing.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        if !self.kubeconfig.is_file() {
            bail!("{} does not exist yet", self.kubeconfig.display());
        }
        let output = Command::new(&self.k3s)
            .arg("kubectl")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", self.k3s.display()))?;
        if !output.status.success() {
            bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `ARGS -o jsonpath=TEMPLATE`.
    pub fn jsonpath(&self, args: &[&str], template: &str) -> Result<String> {
        let output = format!("jsonpath={template}");
        self.run(&[args, &["-o", &output]].concat())
    }

    /// Whether the API server answers /readyz.
    pub fn api_ready(&self) -> bool {
        self.run(&["get", "--raw=/readyz"]).is_ok()
    }

    /// Whether object KIND/NAME exists in NAMESPACE.
    pub fn exists(&self, namespace: &str, kind: &str, name: &str) -> bool {
        self.run(&["-n", namespace, "get", kind, name]).is_ok()
    }

    /// One jsonpath field of node NAME, or None when the API cannot say (yet).
    pub fn node_field(&self, name: &str, field: &str) -> Option<String> {
        let out = self.jsonpath(&["get", "node", name], field).ok()?;
        Some(out.trim().to_string())
    }

    /// Whether node NAME's Ready condition is True (None when the API cannot say).
    pub fn node_ready(&self, name: &str) -> Option<bool> {
        self.node_field(name, "{.status.conditions[?(@.type==\"Ready\")].status}")
            .map(|status| status == "True")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A prefix whose bin/k3s prints its arguments, one per line.
    fn echoing_k3s(root: &Path) -> Paths {
        let paths = Paths::new(&root.join("prefix"), &root.join("data"));
        std::fs::create_dir_all(paths.prefix.join("bin")).unwrap();
        let k3s = paths.bin("k3s");
        std::fs::write(&k3s, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n").unwrap();
        std::fs::set_permissions(&k3s, std::fs::Permissions::from_mode(0o755)).unwrap();
        paths
    }

    #[test]
    fn a_node_field_is_asked_as_k3s_kubectl_with_a_jsonpath() {
        let temp = tempfile::tempdir().unwrap();
        let paths = echoing_k3s(temp.path());
        let kubeconfig = temp.path().join("kubelet.kubeconfig");
        std::fs::write(&kubeconfig, "").unwrap();
        let kubectl = Kubectl::with(&paths, kubeconfig.clone());
        assert_eq!(
            kubectl.node_field("n1", "{.spec.podCIDR}").unwrap(),
            format!(
                "kubectl\n--kubeconfig={}\nget\nnode\nn1\n-o\njsonpath={{.spec.podCIDR}}",
                kubeconfig.display()
            )
        );
    }

    #[test]
    fn a_kubeconfig_not_written_yet_is_an_error_naming_it() {
        let temp = tempfile::tempdir().unwrap();
        let paths = echoing_k3s(temp.path());
        let error = Kubectl::admin(&paths).run(&["get", "nodes"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{} does not exist yet", paths.kubeconfig().display())
        );
        assert!(!Kubectl::admin(&paths).api_ready());
    }
}
