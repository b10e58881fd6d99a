//! Paths inside the bundle (relative to its top directory) that its writer and its readers
//! both name. What a bundle holds beyond these is data: bundle.toml's `to = "bin/..."` and the
//! manifest's outputs.

/// Every program: the upstream binaries, the launcher, the installer, svcproxy.
pub const BIN_DIR: &str = "bin";
/// k3s; a bundle built `--without-k3s` has none, and then installs containerd and CNI only.
pub const K3S: &str = "bin/k3s";
/// The service proxy, run where kube-proxy cannot run; an older bundle may lack it.
pub const SVCPROXY: &str = "bin/svcproxy";
/// The CNI plugins.
pub const CNI_BIN_DIR: &str = "cni/bin";
/// The repository's `overlays/`, as they are.
pub const ETC_DIR: &str = "etc";
/// CNI network configs (the cni crate's), `{{PREFIX}}`/`{{DATA_DIR}}` filled in at install.
pub const CNI_CONF_DIR: &str = "etc/cni";
/// The values served for /proc/sys files the sandbox lacks, one file per /proc/sys path.
pub const PROCSYS_DIR: &str = "etc/procsys";
/// Kubelet flags, one `name=value` per line.
pub const KUBELET_ARGS: &str = "etc/k3s/kubelet-args";
/// containerd's config, `{{SNAPSHOTTER}}` and the paths filled in at install.
pub const CONTAINERD_CONFIG_TEMPLATE: &str = "etc/containerd/config.toml.tmpl";
/// OCI archives for `ctr images import`.
pub const IMAGES_DIR: &str = "images";
/// Our Helm charts, packed (`charts/<name>.tgz`).
pub const CHARTS_DIR: &str = "charts";
