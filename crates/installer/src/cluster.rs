//! Which parts of k3s run on this host, decided once at install (by probing), recorded in the
//! state file, printed by install and shown by `doctor`:
//! - kube-proxy runs only where its iptables rules can be written; elsewhere the bundle's
//!   svcproxy serves ClusterIP and NodePort Services in its place (`ServiceProxy`);
//! - each packaged add-on runs only where it can work: its image is in the bundle (a sandbox
//!   cannot pull), there is a node for its pods, and the Services it needs route (coredns);
//!   a few never run here (below, with the reason).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::bundle::Manifest;

/// A part of k3s that is turned off, and why (one line, printed as is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnedOff {
    pub name: String,
    pub reason: String,
}

/// k3s's packaged add-ons (its manifests/ directory, k3s v1.34.1+k3s1) and what each needs.
struct Addon {
    /// The name `k3s server --disable` takes.
    name: &'static str,
    needs: Needs,
}

enum Needs {
    /// Pods of these images (as containerd names them once imported), which reach the API
    /// and serve through ClusterIP Services.
    ImageAndServices(&'static [&'static str]),
    /// As ImageAndServices, and the kubelets serve resource metrics (`/metrics/resource`),
    /// which needs the cgroup files cAdvisor reads (`kubelet_stats_blocker`).
    ImageServicesAndKubeletStats(&'static [&'static str]),
    /// It cannot work in a sandbox even with its image: why.
    Never(&'static str),
}

const ADDONS: [Addon; 5] = [
    Addon {
        name: "coredns",
        needs: Needs::ImageAndServices(&["docker.io/rancher/mirrored-coredns-coredns:1.12.3"]),
    },
    // Its HelmChart (traefik.rs) is installed by a Job of k3s's helm job image, and its
    // LoadBalancer Service is served on the node by kube-proxy or svcproxy (docs/services.md).
    Addon {
        name: crate::traefik::ADDON,
        needs: Needs::ImageAndServices(&[crate::traefik::IMAGE, HELM_JOB_IMAGE]),
    },
    Addon {
        name: "servicelb",
        // Its DaemonSet runs rancher/klipper-lb (an Alpine image of iptables and a script,
        // DNAT rules for host ports): not Go source, github.com/k3s-io/klipper-lb is not on
        // the Go module proxy nor in the mirror, so it cannot be built here and is not shipped.
        needs: Needs::Never(
            "its image rancher/klipper-lb:v0.4.13 is not in this bundle (klipper-lb cannot be \
             built here: github.com/k3s-io/klipper-lb is not on the Go module proxy); svcproxy \
             gives LoadBalancer Services the node's address in its place (docs/services.md)",
        ),
    },
    // It scrapes each kubelet's /metrics/resource at the node's address and serves the
    // Metrics API through its Service (the API server proxies to its ClusterIP).
    Addon {
        name: "metrics-server",
        needs: Needs::ImageServicesAndKubeletStats(&[
            "docker.io/rancher/mirrored-metrics-server:v0.8.0",
        ]),
    },
    // k3s's manifest with the bundle's images (local_storage.rs): the provisioner, and the
    // busybox its helper pods run in.
    Addon {
        name: crate::local_storage::ADDON,
        needs: Needs::ImageAndServices(&[
            crate::local_storage::PROVISIONER_IMAGE,
            crate::local_storage::HELPER_IMAGE,
        ]),
    },
];

/// The bundle's image for k3s's helm-controller Jobs (bundle.toml's `klipper-helm`, which
/// helm.rs passes as --helm-job-image): a HelmChart is installed by a Job of it.
const HELM_JOB_IMAGE: &str = "docker.io/k3s-gvisor/klipper-helm:v3.21.4-1";

/// What else decides whether an add-on can work on this install.
pub struct Install {
    /// `--control-plane-only`: no kubelet, so no node for any pod.
    pub control_plane_only: bool,
    /// Neither kube-proxy nor svcproxy serves Services (the reason is printed separately):
    /// ClusterIPs do not route.
    pub no_service_proxy: bool,
    /// Why the kubelet serves no resource metrics here (`kubelet_stats_blocker`), or None.
    pub kubelet_stats_blocker: Option<String>,
}

/// Who makes ClusterIP and NodePort Services work on an install. Not stored: it follows from
/// what the state file records (control-plane-only, why kube-proxy is off) and whether the
/// prefix has bin/svcproxy, so installs made before svcproxy existed keep their behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceProxy {
    /// k3s's own kube-proxy: its iptables rules can be written here.
    KubeProxy,
    /// bin/svcproxy, a daemon next to k3s: kube-proxy cannot run here, for this reason.
    Svcproxy { kube_proxy_blocker: String },
    /// Nothing serves Services, for this reason.
    Nothing { reason: String },
}

impl ServiceProxy {
    /// `kube_proxy_blocker`: from `kube_proxy_blocker()` (None: kube-proxy can run);
    /// `has_svcproxy`: the bundle or prefix has bin/svcproxy. Servers and agents alike: each
    /// node serves Services to its own pods.
    pub fn decide(
        control_plane_only: bool,
        kube_proxy_blocker: Option<&str>,
        has_svcproxy: bool,
    ) -> ServiceProxy {
        match (control_plane_only, kube_proxy_blocker) {
            (true, _) => ServiceProxy::Nothing {
                reason: "control-plane-only: no node, so no pods to serve".into(),
            },
            (false, None) => ServiceProxy::KubeProxy,
            (false, Some(blocker)) if has_svcproxy => ServiceProxy::Svcproxy {
                kube_proxy_blocker: blocker.to_string(),
            },
            (false, Some(blocker)) => ServiceProxy::Nothing {
                reason: format!("{blocker}, and this bundle has no bin/svcproxy"),
            },
        }
    }

    pub fn is_svcproxy(&self) -> bool {
        matches!(self, ServiceProxy::Svcproxy { .. })
    }

    /// One line: which proxy and why (install, status and doctor print it).
    pub fn describe(&self) -> String {
        match self {
            ServiceProxy::KubeProxy => {
                "kube-proxy (k3s's own): its iptables rules can be written here".into()
            }
            ServiceProxy::Svcproxy { kube_proxy_blocker } => format!(
                "svcproxy (userspace, bin/svcproxy next to k3s) in place of kube-proxy: \
                 {kube_proxy_blocker}"
            ),
            ServiceProxy::Nothing { reason } => {
                format!("none, ClusterIP Services do not route: {reason}")
            }
        }
    }
}

/// The add-ons to turn off for a bundle with this manifest, each with its reason.
pub fn addons_off(manifest: &Manifest, install: &Install) -> Vec<TurnedOff> {
    ADDONS
        .iter()
        .filter_map(|addon| {
            let reason = match addon.needs {
                Needs::Never(why) => why.to_string(),
                Needs::ImageAndServices(images) | Needs::ImageServicesAndKubeletStats(images) => {
                    let missing: Vec<&str> = images
                        .iter()
                        .copied()
                        .filter(|image| {
                            !manifest
                                .images
                                .iter()
                                .any(|shipped| normalize(&shipped.reference) == *image)
                        })
                        .collect();
                    if !missing.is_empty() {
                        match missing.as_slice() {
                            [image] => format!(
                                "its image {image} is not in this bundle, and the sandbox \
                                 cannot pull it"
                            ),
                            _ => format!(
                                "its images {} are not in this bundle, and the sandbox cannot \
                                 pull them",
                                missing.join(" and ")
                            ),
                        }
                    } else if install.control_plane_only {
                        "control-plane-only: no node to run its pod".to_string()
                    } else if install.no_service_proxy && addon.name == "coredns" {
                        // Measured in the current gVisor: the pod runs, never Ready, logging
                        // `plugin/ready: Plugins not ready: "kubernetes"`.
                        "it reaches the API through the kubernetes Service (10.43.0.1) and \
                         serves through its own (10.43.0.10), and ClusterIPs do not route \
                         without a service proxy: it would run but never be Ready"
                            .to_string()
                    } else if install.no_service_proxy {
                        // In-cluster clients find the API at KUBERNETES_SERVICE_HOST.
                        "it reaches the API through the kubernetes Service (10.43.0.1), and \
                         ClusterIPs do not route without a service proxy"
                            .to_string()
                    } else if let (Needs::ImageServicesAndKubeletStats(_), Some(blocker)) =
                        (&addon.needs, &install.kubelet_stats_blocker)
                    {
                        blocker.clone()
                    } else {
                        return None;
                    }
                }
            };
            Some(TurnedOff {
                name: addon.name.to_string(),
                reason,
            })
        })
        .collect()
}

/// `rancher/x:1` and `docker.io/rancher/x:1` name the same image.
fn normalize(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or("");
    let has_registry = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_registry, reference.contains('/')) {
        (true, _) => reference.to_string(),
        (false, true) => format!("docker.io/{reference}"),
        (false, false) => format!("docker.io/library/{reference}"),
    }
}

/// The cgroup v1 files the bundle's kubelet needs to serve resource metrics, per controller
/// (measured in the current gVisor, docs/installer.md "Add-ons"). cAdvisor reads every cgroup
/// through opencontainers/cgroups, which fails a cgroup's whole stats without the cpuacct
/// totals; with patches/k3s 0002-0003 the per-CPU file (`cpuacct.usage_percpu`) and
/// `memory.stat` are optional, and the memory usage comes from `memory.usage_in_bytes` where
/// `memory.stat` is missing (gVisor), so that file is what makes MEMORY in `kubectl top` real.
const KUBELET_STATS_FILES: &[(&str, &[&str])] = &[
    ("cpuacct", &["cpuacct.usage", "cpuacct.stat"]),
    ("memory", &["memory.usage_in_bytes"]),
];

/// Why the kubelet serves no resource metrics here, or None when it does. The kubelet's
/// `/metrics/resource` (what metrics-server scrapes) starts from cAdvisor's stats of the root
/// cgroup; without them the endpoint returns no sample at all. Each controller is looked at
/// where it is mounted; where no cgroup hierarchy is mounted yet (gVisor: the installer
/// mounts cgroup v1 itself) the probe mounts the controller in a scratch directory and
/// unmounts it again. cgroup v2 is read by other code (fs2) and not probed.
pub fn kubelet_stats_blocker() -> Option<String> {
    let mounts = crate::probe::parse_mountinfo(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    );
    if mounts.iter().any(|m| m.fs_type == "cgroup2")
        && !mounts.iter().any(|m| m.fs_type == "cgroup")
    {
        return None;
    }
    let mut missing = Vec::new();
    for (controller, files) in KUBELET_STATS_FILES {
        let mounted = mounts.iter().find(|m| {
            m.fs_type == "cgroup" && m.super_options.split(',').any(|o| o == *controller)
        });
        let absent = match mounted {
            Some(mount) => absent_files(&mount.mount_point, files),
            // No such controller at all (it cannot be mounted): nothing measured, nothing
            // claimed.
            None => absent_in_scratch_mount(controller, files)?,
        };
        missing.extend(absent.into_iter().map(|f| f.to_string()));
    }
    (!missing.is_empty()).then(|| {
        format!(
            "the kubelet serves no resource metrics here: cAdvisor reads each cgroup's CPU \
             and memory from {}, which this kernel's cgroup controllers lack, so \
             metrics-server would have no metrics to serve",
            missing.join(", ")
        )
    })
}

/// The files of `files` that `dir` lacks.
fn absent_files<'a>(dir: &Path, files: &[&'a str]) -> Vec<&'a str> {
    files
        .iter()
        .copied()
        .filter(|f| !dir.join(f).exists())
        .collect()
}

/// `absent_files` in `controller` mounted on a scratch directory (unmounted and removed again);
/// None when the controller cannot be mounted.
fn absent_in_scratch_mount<'a>(controller: &str, files: &[&'a str]) -> Option<Vec<&'a str>> {
    let scratch = std::env::temp_dir().join(format!(
        "k3s-gvisor-{controller}-probe-{}",
        std::process::id()
    ));
    // Private and new (not one another user made there first): files.rs.
    crate::files::new_private_dir(&scratch).ok()?;
    let mounted = crate::mounts::mount(
        "cgroup",
        &scratch,
        "cgroup",
        crate::mounts::MsFlags::empty(),
        controller,
    );
    let absent = mounted.is_ok().then(|| absent_files(&scratch, files));
    if mounted.is_ok() {
        let _ = crate::mounts::unmount(&scratch);
    }
    let _ = std::fs::remove_dir(&scratch);
    absent
}

/// The scratch chain the kube-proxy probe creates and deletes again.
const PROBE_CHAIN: &str = "K3S-GVISOR-PROBE";

/// Why kube-proxy cannot run here, or None when it can. kube-proxy (iptables mode, k3s's
/// default) runs the `iptables` found on PATH; it checks the nat table first and then writes
/// rules with the `comment` and `statistic` matches. The probe does the same in a scratch chain
/// and removes it. Measured in gVisor (docs/installer.md): iptables-nft fails with `Failed to
/// initialize nft: Protocol not supported`; iptables-legacy finds no nat table unless runsc has
/// --net-raw, and then refuses both matches and MASQUERADE.
pub fn kube_proxy_blocker() -> Option<String> {
    let Some(iptables) = find_on_path("iptables") else {
        return Some(
            "no iptables on PATH: kube-proxy's iptables mode needs one (install iptables \
             and run `install` again to get ClusterIP Services)"
                .into(),
        );
    };
    let run = |args: &[&str]| -> Result<(), String> {
        let output = Command::new(&iptables)
            .args(["-w", "5", "-t", "nat"])
            .args(args)
            .output()
            .map_err(|error| format!("cannot run {}: {error}", iptables.display()))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Err(format!(
            "`iptables -t nat {}`: {}",
            args.join(" "),
            message.join(" / ")
        ))
    };
    let result = run(&["-S", "POSTROUTING"])
        .and_then(|()| run(&["-N", PROBE_CHAIN]))
        .and_then(|()| {
            let rule = [
                "-A",
                PROBE_CHAIN,
                "-m",
                "comment",
                "--comment",
                "k3s-gvisor probe",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.5",
                "-j",
                "RETURN",
            ];
            let added = run(&rule);
            let _ = run(&["-F", PROBE_CHAIN]);
            let _ = run(&["-X", PROBE_CHAIN]);
            added
        });
    result
        .err()
        .map(|error| format!("kube-proxy's iptables rules cannot be written here: {error}"))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            Path::new(candidate)
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Image;

    fn manifest(images: &[&str]) -> Manifest {
        Manifest {
            name: "k3s-gvisor".into(),
            version: "0".into(),
            arch: bundle_format::Arch::Amd64,
            source_date_epoch: 0,
            components: vec![],
            omitted: vec![],
            not_on_this_arch: Vec::new(),
            images: images
                .iter()
                .map(|reference| Image {
                    name: "x".into(),
                    reference: reference.to_string(),
                    source: bundle_format::ImageSource::Build,
                    digest: "sha256:0".into(),
                    file: "images/x.oci.tar".into(),
                    sha256: "0".into(),
                    sandbox: false,
                })
                .collect(),
        }
    }

    const FULL: Install = Install {
        control_plane_only: false,
        no_service_proxy: false,
        kubelet_stats_blocker: None,
    };

    const COREDNS: &str = "docker.io/rancher/mirrored-coredns-coredns:1.12.3";
    const METRICS_SERVER: &str = "docker.io/rancher/mirrored-metrics-server:v0.8.0";

    /// What is turned off where nothing can run, in the order install reports it.
    const EVERY_ADDON: [&str; 5] = [
        "coredns",
        "traefik",
        "servicelb",
        "metrics-server",
        "local-storage",
    ];

    fn off_names(off: &[TurnedOff]) -> Vec<&str> {
        off.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn coredns_runs_only_where_its_image_is_shipped_and_services_route() {
        let off = addons_off(&manifest(&["docker.io/k3s-gvisor/pause:0.1.0"]), &FULL);
        assert_eq!(off_names(&off), EVERY_ADDON);
        assert!(off[0]
            .reason
            .contains("rancher/mirrored-coredns-coredns:1.12.3"));
        for reference in [COREDNS, "rancher/mirrored-coredns-coredns:1.12.3"] {
            let off = addons_off(&manifest(&[reference]), &FULL);
            assert!(off.iter().all(|t| t.name != "coredns"), "{reference}");
            assert_eq!(off.len(), 4);
        }
        let shipped = manifest(&[COREDNS]);
        for (install, why) in [
            (
                Install {
                    no_service_proxy: true,
                    ..FULL
                },
                "never be Ready",
            ),
            (
                Install {
                    control_plane_only: true,
                    ..FULL
                },
                "no node",
            ),
        ] {
            let off = addons_off(&shipped, &install);
            assert!(
                off[0].name == "coredns" && off[0].reason.contains(why),
                "{off:?}"
            );
        }
    }

    #[test]
    fn metrics_server_and_local_storage_run_where_their_images_are_shipped() {
        let all = manifest(&[
            COREDNS,
            METRICS_SERVER,
            crate::local_storage::PROVISIONER_IMAGE,
            crate::local_storage::HELPER_IMAGE,
        ]);
        assert_eq!(
            off_names(&addons_off(&all, &FULL)),
            ["traefik", "servicelb"]
        );
        // local-storage needs both of its images; the reason names the one missing.
        let no_helper = manifest(&[crate::local_storage::PROVISIONER_IMAGE]);
        let off = addons_off(&no_helper, &FULL);
        let local = off.iter().find(|t| t.name == "local-storage").unwrap();
        assert!(
            local
                .reason
                .contains("its image docker.io/library/busybox:1.35.0-debian is not"),
            "{local:?}"
        );
        let none = addons_off(&manifest(&[]), &FULL);
        let local = none.iter().find(|t| t.name == "local-storage").unwrap();
        assert!(local.reason.contains("its images "), "{local:?}");
        assert!(
            local.reason.contains(" are not in this bundle"),
            "{local:?}"
        );
        let no_proxy = Install {
            no_service_proxy: true,
            ..FULL
        };
        let off = addons_off(&all, &no_proxy);
        assert_eq!(off_names(&off), EVERY_ADDON);
        assert!(off[3].reason.contains("ClusterIPs do not route"), "{off:?}");
        assert!(!off[3].reason.contains("10.43.0.10"), "{off:?}");
        // Without resource metrics only metrics-server is off, with the probe's reason.
        let no_stats = Install {
            kubelet_stats_blocker: Some("no cpuacct.usage".into()),
            ..FULL
        };
        let off = addons_off(&all, &no_stats);
        assert_eq!(off_names(&off), ["traefik", "servicelb", "metrics-server"]);
        assert_eq!(off[2].reason, "no cpuacct.usage");
    }

    #[test]
    fn gvisors_cgroup_files_are_enough_for_the_patched_kubelet() {
        // The files each controller has in the current gVisor (docs/installer.md "Add-ons").
        let gvisor: &[(&str, &[&str])] = &[
            (
                "cpuacct",
                &[
                    "cgroup.procs",
                    "cpuacct.stat",
                    "cpuacct.usage",
                    "cpuacct.usage_sys",
                    "cpuacct.usage_user",
                    "tasks",
                ],
            ),
            (
                "memory",
                &[
                    "cgroup.procs",
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                    "tasks",
                ],
            ),
        ];
        for (controller, present) in gvisor {
            let dir = tempfile::tempdir().unwrap();
            for file in *present {
                std::fs::write(dir.path().join(file), "0\n").unwrap();
            }
            let (_, needed) = KUBELET_STATS_FILES
                .iter()
                .find(|(c, _)| c == controller)
                .unwrap();
            assert!(absent_files(dir.path(), needed).is_empty(), "{controller}");
        }
        // A cpuacct controller without the totals leaves cAdvisor nothing to read.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpuacct.usage"), "0\n").unwrap();
        assert_eq!(
            absent_files(dir.path(), &["cpuacct.usage", "cpuacct.stat"]),
            ["cpuacct.stat"]
        );
    }

    #[test]
    fn svcproxy_serves_services_only_where_kube_proxy_cannot_and_it_is_shipped() {
        let blocker = "kube-proxy's iptables rules cannot be written here: x";
        assert_eq!(
            ServiceProxy::decide(false, None, true),
            ServiceProxy::KubeProxy
        );
        let svcproxy = ServiceProxy::decide(false, Some(blocker), true);
        assert!(svcproxy.is_svcproxy());
        assert!(svcproxy.describe().starts_with("svcproxy"));
        assert!(svcproxy.describe().ends_with(blocker));
        let without = ServiceProxy::decide(false, Some(blocker), false);
        assert!(!without.is_svcproxy());
        assert!(without.describe().contains("no bin/svcproxy"));
        for kube_proxy_blocker in [None, Some(blocker)] {
            let proxy = ServiceProxy::decide(true, kube_proxy_blocker, true);
            assert!(proxy.describe().contains("control-plane-only"), "{proxy:?}");
        }
    }

    #[test]
    fn image_references_are_normalized_like_containerd_does() {
        assert_eq!(normalize("busybox:1"), "docker.io/library/busybox:1");
        assert_eq!(normalize("rancher/x:1"), "docker.io/rancher/x:1");
        assert_eq!(
            normalize("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(normalize("localhost:5000/x:1"), "localhost:5000/x:1");
    }
}
