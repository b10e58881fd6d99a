//! The installer's one way to ask the Kubernetes API: `k3s kubectl` with a given kubeconfig,
//! for install's waits, `status` and the node-routes daemon.
//!
//! `k3s kubectl` and not a client library: the bundle ships it anyway, and a client in the
//! installer (svcproxy's kube-rs) would grow every install's binary for a handful of questions.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

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

    /// Runs `k3s kubectl ARGS`: its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let output = self
            .command(args)?
            .output()
            .with_context(|| format!("cannot run {}", self.k3s.display()))?;
        if !output.status.success() {
            bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `k3s kubectl --kubeconfig=FILE ARGS`; an error, without starting the 200 MB k3s binary
    /// for nothing, while k3s has not written the kubeconfig.
    fn command(&self, args: &[&str]) -> Result<Command> {
        if !self.kubeconfig.is_file() {
            bail!("{} does not exist yet", self.kubeconfig.display());
        }
        let mut command = Command::new(&self.k3s);
        command
            .arg("kubectl")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args);
        Ok(command)
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

    /// `k3s kubectl ARGS --watch -o jsonpath=TEMPLATE` (TEMPLATE ends each object with a
    /// newline): one process for a whole wait, which reports the objects listed and then every
    /// change to them as it happens. A wait that asks again and again starts the 200 MB k3s
    /// binary each time instead, 0.25 s of CPU in runsc that k3s's own start is short of
    /// (BENCHMARKS.md, "Where the start goes").
    fn watch(&self, args: &[&str], template: &str) -> Result<Watch> {
        let mut child = self
            .command(args)?
            .args(["--watch", "-o", &format!("jsonpath={template}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", self.k3s.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Watch { child, lines })
    }

    /// A watch of node NAME: one [`NodeReport`] line per version of it (none while it does not
    /// exist).
    pub fn watch_node(&self, name: &str) -> Result<Watch> {
        self.watch(
            &[
                "get",
                "nodes",
                &format!("--field-selector=metadata.name={name}"),
            ],
            NODE_REPORT,
        )
    }

    /// A watch of object KIND/NAME in NAMESPACE: a line with its name once it exists.
    pub fn watch_named(&self, namespace: &str, kind: &str, name: &str) -> Result<Watch> {
        self.watch(
            &[
                "-n",
                namespace,
                "get",
                kind,
                &format!("--field-selector=metadata.name={name}"),
            ],
            "{.metadata.name}{\"\\n\"}",
        )
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

/// The line [`Kubectl::watch_node`] reports: the node's name, its Ready condition's status and
/// its podCIDR, `|`-separated (a field k3s has not set yet is empty).
const NODE_REPORT: &str =
    "{.metadata.name}|{.status.conditions[?(@.type==\"Ready\")].status}|{.spec.podCIDR}{\"\\n\"}";

/// One line of [`Kubectl::watch_node`].
#[derive(Debug, PartialEq)]
pub struct NodeReport {
    pub ready: bool,
    /// None until k3s's controller manager assigns it.
    pub pod_cidr: Option<String>,
}

impl NodeReport {
    pub fn parse(line: &str) -> Option<NodeReport> {
        let mut fields = line.trim().split('|');
        let (_name, ready, pod_cidr) = (fields.next()?, fields.next()?, fields.next()?);
        Some(NodeReport {
            ready: ready == "True",
            pod_cidr: Some(pod_cidr.to_string()).filter(|cidr| !cidr.is_empty()),
        })
    }
}

/// A running `k3s kubectl get --watch` ([`Kubectl::watch`]); stopped when dropped.
pub struct Watch {
    child: Child,
    lines: Receiver<String>,
}

/// What a [`Watch`] reported within a wait.
#[derive(Debug, PartialEq)]
pub enum Seen {
    Line(String),
    Nothing,
    /// The watch is over: kubectl exited (the API went away, or refused the request).
    Ended,
}

impl Watch {
    /// The next line, waiting at most `wait` for it.
    pub fn next(&self, wait: Duration) -> Seen {
        match self.lines.recv_timeout(wait) {
            Ok(line) => Seen::Line(line),
            Err(RecvTimeoutError::Timeout) => Seen::Nothing,
            Err(RecvTimeoutError::Disconnected) => Seen::Ended,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    fn a_node_report_says_ready_and_the_pod_range_once_k3s_set_them() {
        assert_eq!(
            NodeReport::parse("vm|True|10.42.0.0/24\n"),
            Some(NodeReport {
                ready: true,
                pod_cidr: Some("10.42.0.0/24".into())
            })
        );
        assert_eq!(
            NodeReport::parse("vm||"),
            Some(NodeReport {
                ready: false,
                pod_cidr: None
            })
        );
        assert_eq!(NodeReport::parse("vm|False|").map(|r| r.ready), Some(false));
        assert_eq!(NodeReport::parse("error: the server doesn't have"), None);
    }

    #[test]
    fn a_watch_reports_each_line_as_it_comes_then_its_end() {
        let temp = tempfile::tempdir().unwrap();
        let paths = echoing_k3s(temp.path());
        std::fs::write(
            paths.bin("k3s"),
            "#!/bin/sh\necho first; sleep 0.3; echo second\n",
        )
        .unwrap();
        let kubeconfig = temp.path().join("kubeconfig");
        std::fs::write(&kubeconfig, "").unwrap();
        let watch = Kubectl::with(&paths, kubeconfig)
            .watch_named("default", "serviceaccount", "default")
            .unwrap();
        let wait = Duration::from_secs(5);
        assert_eq!(watch.next(wait), Seen::Line("first".into()));
        assert_eq!(watch.next(Duration::from_millis(10)), Seen::Nothing);
        assert_eq!(watch.next(wait), Seen::Line("second".into()));
        assert_eq!(watch.next(wait), Seen::Ended);
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
        let error = Kubectl::admin(&paths).watch_node("n1").err().unwrap();
        assert_eq!(
            error.to_string(),
            format!("{} does not exist yet", paths.kubeconfig().display())
        );
        assert!(!Kubectl::admin(&paths).api_ready());
    }
}
