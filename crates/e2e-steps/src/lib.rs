//! The e2e's steps, in one place: every name tests/e2e's scripts and the e2e driver
//! (crates/e2e-driver) print on a `STEP <name> <status> [detail]` line, and the ones xtask adds
//! itself (`sandbox`, `k3s-log-errors`, `runsc-pause`, ...). xtask's parser refuses a name that
//! is not here (its run fails with `unknown-step`), and the README table (xtask/src/e2e.rs
//! `TABLE_ROWS`) names its steps as variants: a step renamed here without the table fails to
//! compile.
//!
//! The line format is lib.sh's `step`: `STEP name status detail` (a trailing space when the
//! detail is empty).

use std::fmt;
use std::str::FromStr;

/// The first line of every file the e2e writes outside its run directory (k3s's config files
/// under /etc/rancher/k3s): where a sandbox dies before the cleanup, xtask removes the files so
/// marked (xtask/src/sandbox.rs). tests/e2e/lib.sh has the same words for the shell.
pub const E2E_FILE_MARK: &str = "# written by the k3s-gvisor e2e";

/// Declares [`Step`] with each variant's name as printed.
macro_rules! steps {
    ($($variant:ident => $name:literal,)*) => {
        /// One e2e step (its name as printed: [`Step::as_str`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Step {
            $($variant,)*
        }

        impl Step {
            /// Every step, in name order.
            pub const ALL: &'static [Step] = &[$(Step::$variant,)*];

            /// The name the scripts print.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Step::$variant => $name,)*
                }
            }
        }
    };
}

steps! {
    Addons => "addons",
    AddressesRestored => "addresses-restored",
    AgentExecAfterRestart => "agent-exec-after-restart",
    AgentInstalled => "agent-installed",
    AgentPodExec => "agent-pod-exec",
    AgentPodLogs => "agent-pod-logs",
    AgentPodRunning => "agent-pod-running",
    AgentPodServices => "agent-pod-services",
    AgentReady => "agent-ready",
    AgentReconnected => "agent-reconnected",
    AgentUninstalled => "agent-uninstalled",
    AirgapImport => "airgap-import",
    BadConfigRefused => "bad-config-refused",
    CheckpointRestoreExec => "checkpoint-restore-exec",
    CheckpointRestorePods => "checkpoint-restore-pods",
    CheckpointRestoreReady => "checkpoint-restore-ready",
    CheckpointRestoreService => "checkpoint-restore-service",
    Configmap => "configmap",
    ContainerLogs => "container-logs",
    ContainerRunning => "container-running",
    CorednsReady => "coredns-ready",
    CriCreate => "cri-create",
    CriDelete => "cri-delete",
    CriExec => "cri-exec",
    CriRunp => "cri-runp",
    CriStart => "cri-start",
    DaemonEnv => "daemon-env",
    DaemonEnvAfterStart => "daemon-env-after-start",
    Delete => "delete",
    DeleteAgentPod => "delete-agent-pod",
    Deployment => "deployment",
    DeploymentBack => "deployment-back",
    DnsKubernetes => "dns-kubernetes",
    Doctor => "doctor",
    DowngradeRefused => "downgrade-refused",
    Driver => "driver",
    DryRun => "dry-run",
    EnvKeptAcrossStart => "env-kept-across-start",
    Exec => "exec",
    ExecAfterRestart => "exec-after-restart",
    ExportLine => "export-line",
    Extract => "extract",
    HelmCli => "helm-cli",
    HelmchartInstalls => "helmchart-installs",
    HostFilesRestored => "host-files-restored",
    HpaScales => "hpa-scales",
    ImagesImport => "images-import",
    IngressRoutes => "ingress-routes",
    Install => "install",
    Join => "join",
    JoinCommand => "join-command",
    JoinToReady => "join-to-ready",
    K3s => "k3s",
    K3sFlags => "k3s-flags",
    K3sLog => "k3s-log",
    K3sLogErrors => "k3s-log-errors",
    K3sSteps => "k3s-steps",
    K3sUntraced => "k3s-untraced",
    Kubeconfig => "kubeconfig",
    KubeconfigMode => "kubeconfig-mode",
    KubectlTop => "kubectl-top",
    Lifecycle => "lifecycle",
    LoadbalancerIp => "loadbalancer-ip",
    LogsK3s => "logs-k3s",
    MountsRestored => "mounts-restored",
    Namespace => "namespace",
    NamespacesList => "namespaces-list",
    NoProcesses => "no-processes",
    NodeReady => "node-ready",
    NodeStillReady => "node-still-ready",
    NothingLeft => "nothing-left",
    OneShim => "one-shim",
    PauseResumeExec => "pause-resume-exec",
    PauseResumePods => "pause-resume-pods",
    PauseResumeReady => "pause-resume-ready",
    PauseResumeService => "pause-resume-service",
    PodIp => "pod-ip",
    PodLogs => "pod-logs",
    PodRange => "pod-range",
    PodRunning => "pod-running",
    PodToPod => "pod-to-pod",
    PodToPodAfterRestart => "pod-to-pod-after-restart",
    PodUntraced => "pod-untraced",
    PodsBack => "pods-back",
    ProxyPull => "proxy-pull",
    PvcBound => "pvc-bound",
    PvcDataSurvives => "pvc-data-survives",
    ReadyGoal10s => "ready-goal-10s",
    ReadyWithin60s => "ready-within-60s",
    Readyz => "readyz",
    RefusedFlag => "refused-flag",
    RegistriesMirror => "registries-mirror",
    RestartContainerd => "restart-containerd",
    RestartK3s => "restart-k3s",
    RestartSvcproxy => "restart-svcproxy",
    Role => "role",
    RoutesRemoved => "routes-removed",
    RunscCheckpoint => "runsc-checkpoint",
    RunscPause => "runsc-pause",
    Sandbox => "sandbox",
    SecondInstall => "second-install",
    ServerDone => "server-done",
    ServerPodRunning => "server-pod-running",
    ServerRoutes => "server-routes",
    ServerStart => "server-start",
    ServerStop => "server-stop",
    ServiceBefore => "service-before",
    ServiceKubernetes => "service-kubernetes",
    ServiceProxy => "service-proxy",
    Start => "start",
    Status => "status",
    StatusK3sSettings => "status-k3s-settings",
    StatusRestarts => "status-restarts",
    Stop => "stop",
    StoppedNothingRuns => "stopped-nothing-runs",
    SvcClusterip => "svc-clusterip",
    SvcDeploy => "svc-deploy",
    SvcDns => "svc-dns",
    SvcNodeport => "svc-nodeport",
    SvcScaleDown => "svc-scale-down",
    SvcToAgentPod => "svc-to-agent-pod",
    TlsSan => "tls-san",
    TokenFile => "token-file",
    TokenLocation => "token-location",
    TokenNotInPs => "token-not-in-ps",
    TokenNotPrinted => "token-not-printed",
    Tools => "tools",
    ToolsFreshShell => "tools-fresh-shell",
    ToolsRemoved => "tools-removed",
    UmaskModes => "umask-modes",
    Uninstall => "uninstall",
    UninstallKeepsOutsideFiles => "uninstall-keeps-outside-files",
    UnknownStep => "unknown-step",
    Upgrade => "upgrade",
    UpgradeKeepsState => "upgrade-keeps-state",
    UpgradeStatus => "upgrade-status",
    Workload => "workload",
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`Step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStep(pub String);

impl fmt::Display for UnknownStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is no e2e step (crates/e2e-steps: Step)", self.0)
    }
}

impl std::error::Error for UnknownStep {}

impl FromStr for Step {
    type Err = UnknownStep;

    fn from_str(name: &str) -> Result<Step, UnknownStep> {
        Step::ALL
            .iter()
            .copied()
            .find(|step| step.as_str() == name)
            .ok_or_else(|| UnknownStep(name.to_string()))
    }
}

/// A step's outcome as printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Ok,
    /// Fails the run.
    Fail,
    /// Cannot be run with this bundle (no k3s): reported, not a failure.
    Blocked,
    /// A goal missed (the 10 s Ready goal): reported, not a failure.
    Miss,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Ok, Status::Fail, Status::Blocked, Status::Miss];

    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Blocked => "BLOCKED",
            Status::Miss => "MISS",
        }
    }

    /// `ok` when `pass`, else `FAIL`.
    pub fn of(pass: bool) -> Status {
        if pass {
            Status::Ok
        } else {
            Status::Fail
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(text: &str) -> Result<Status, String> {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| format!("{text:?} is no step status (ok, FAIL, BLOCKED, MISS)"))
    }
}

/// The node of a two-nodes run whose script printed the step: xtask prefixes its steps'
/// names with `server:` or `agent:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    Server,
    Agent,
}

impl Node {
    pub const fn prefix(self) -> &'static str {
        match self {
            Node::Server => "server:",
            Node::Agent => "agent:",
        }
    }
}

/// A step as a run's outcome names it: the step, on one node of a two-nodes run or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StepName {
    pub node: Option<Node>,
    pub step: Step,
}

impl Step {
    /// This step as printed by `node`'s script in a two-nodes run.
    pub const fn on(self, node: Node) -> StepName {
        StepName {
            node: Some(node),
            step: self,
        }
    }

    /// This step of a single-node run.
    pub const fn alone(self) -> StepName {
        StepName {
            node: None,
            step: self,
        }
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(node) = self.node {
            f.write_str(node.prefix())?;
        }
        f.write_str(self.step.as_str())
    }
}

impl FromStr for StepName {
    type Err = UnknownStep;

    fn from_str(name: &str) -> Result<StepName, UnknownStep> {
        for node in [Node::Server, Node::Agent] {
            if let Some(rest) = name.strip_prefix(node.prefix()) {
                return Ok(rest.parse::<Step>()?.on(node));
            }
        }
        Ok(name.parse::<Step>()?.alone())
    }
}

/// One `STEP` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLine {
    pub step: Step,
    pub status: Status,
    pub detail: String,
}

impl StepLine {
    pub fn new(step: Step, status: Status, detail: impl Into<String>) -> StepLine {
        StepLine {
            step,
            status,
            detail: detail.into(),
        }
    }

    /// Parses what [`fmt::Display`] prints (and lib.sh's `step`): None for any other line,
    /// an error for a `STEP` line whose name or status is unknown.
    pub fn parse(line: &str) -> Option<Result<StepLine, String>> {
        let rest = line.strip_prefix("STEP ")?;
        let mut fields = rest.splitn(3, ' ');
        let (Some(name), Some(status)) = (fields.next(), fields.next()) else {
            return Some(Err(format!(
                "{line:?}: a STEP line needs a name and a status"
            )));
        };
        let detail = fields.next().unwrap_or("").to_string();
        Some((|| {
            Ok(StepLine {
                step: name.parse().map_err(|e: UnknownStep| e.to_string())?,
                status: status.parse()?,
                detail,
            })
        })())
    }
}

/// Exactly lib.sh's `echo "STEP $1 $2 ${3:-}"`: one line, the detail's newlines turned into
/// spaces (a detail is one line in the summary).
impl fmt::Display for StepLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "STEP {} {} {}",
            self.step,
            self.status,
            self.detail.replace('\n', " ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_step_and_names_are_unique() {
        for (i, step) in Step::ALL.iter().enumerate() {
            assert_eq!(step.as_str().parse::<Step>(), Ok(*step));
            assert!(
                step.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{step}"
            );
            assert!(!Step::ALL[i + 1..]
                .iter()
                .any(|s| s.as_str() == step.as_str()));
        }
        assert_eq!(
            "no-such".parse::<Step>(),
            Err(UnknownStep("no-such".into()))
        );
    }

    #[test]
    fn node_prefixes_parse_and_print() {
        let name: StepName = "server:agent-ready".parse().unwrap();
        assert_eq!(name, Step::AgentReady.on(Node::Server));
        assert_eq!(name.to_string(), "server:agent-ready");
        assert_eq!(
            "install".parse::<StepName>().unwrap(),
            Step::Install.alone()
        );
        assert!("server:nope".parse::<StepName>().is_err());
    }

    #[test]
    fn lines_print_as_lib_sh_does_and_parse_back() {
        let line = StepLine::new(Step::Install, Status::Ok, "");
        assert_eq!(line.to_string(), "STEP install ok ");
        let line = StepLine::new(Step::K3sFlags, Status::Fail, "missing: e2e-flag\nand more");
        assert_eq!(
            line.to_string(),
            "STEP k3s-flags FAIL missing: e2e-flag and more"
        );
        assert_eq!(
            StepLine::parse("STEP k3s-flags FAIL missing: a b"),
            Some(Ok(StepLine::new(
                Step::K3sFlags,
                Status::Fail,
                "missing: a b"
            )))
        );
        assert_eq!(
            StepLine::parse("STEP ready-goal-10s MISS 12.0s"),
            Some(Ok(StepLine::new(Step::ReadyGoal10s, Status::Miss, "12.0s")))
        );
        assert_eq!(StepLine::parse("TIME installed 3.0"), None);
        assert!(StepLine::parse("STEP nope ok").unwrap().is_err());
        assert!(StepLine::parse("STEP install maybe").unwrap().is_err());
        assert!(StepLine::parse("STEP install").unwrap().is_err());
    }
}

/// Every literal step name in tests/e2e's scripts is a [`Step`] (the parser would fail the run
/// on one that is not; this says so before any run).
#[cfg(test)]
mod scripts {
    use super::*;

    #[test]
    fn every_step_the_scripts_print_is_a_variant() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "sh") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let words: Vec<&str> = text.split_whitespace().collect();
            for pair in words.windows(3) {
                let [call, name, status] = pair else { continue };
                let literal = name.trim_matches('"');
                if *call != "step"
                    || literal.contains('$')
                    || status.trim_matches('"').parse::<Status>().is_err()
                {
                    continue;
                }
                assert!(
                    literal.parse::<Step>().is_ok(),
                    "{}: step {literal} is no Step variant",
                    path.display()
                );
                seen += 1;
            }
        }
        // The scan works: lib.sh's own steps (extract ok and FAIL, driver FAIL) stay in shell
        // whatever else is ported to the driver (issue 28), whose steps are the enum itself.
        assert!(
            seen >= 3,
            "only {seen} step calls found in {}",
            dir.display()
        );
    }
}
