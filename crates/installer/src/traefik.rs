//! traefik, k3s's `traefik` add-on (the cluster's Ingress controller), through k3s's own
//! HelmChart path with the chart this bundle ships.
//!
//! k3s v1.34.1's manifests/traefik.yaml is two HelmChart objects (`traefik-crd`, `traefik` in
//! kube-system) whose `chart:` URLs point at k3s's /static/charts, filled at k3s's build time by
//! a download this build cannot make; so this bundle's k3s embeds neither the charts nor that
//! manifest (xtask/src/prepare.rs), and never stages `server/manifests/traefik.yaml`. The
//! installer writes that file itself, before k3s starts: the HelmChart `traefik` with the
//! bundle's chart (charts/traefik.tgz, from the repository's charts/traefik) as `chartContent`,
//! and k3s's values. k3s's deploy controller applies it and its helm-controller installs the
//! chart, as for any HelmChart. The chart leaves traefik's CRD provider off, so there is no
//! `traefik-crd` HelmChart (docs/installer.md, "traefik").
//!
//! `--disable traefik` (the user's, or the installer's where traefik cannot run) keeps k3s's
//! meaning: the file has the name k3s's would have, so k3s deletes it and what it deployed
//! (helm-controller uninstalls the release), and the installer does not write it again.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine;

use crate::k3s_settings::Checked;
use crate::local_storage::{disabled_by_user, write_if_changed};
use crate::paths::Paths;
use crate::state::State;

/// The add-on's name, as `k3s server --disable` takes it.
pub const ADDON: &str = "traefik";
/// What the bundle ships for traefik (bundle.toml): the reference k3s's values name.
pub const IMAGE: &str = "docker.io/rancher/mirrored-library-traefik:3.3.6";
/// The chart, as the bundle ships it and the installer copies it under the prefix.
pub const CHART: &str = "charts/traefik.tgz";

/// Where k3s would stage its own traefik manifest, so that `--disable traefik` deletes ours.
pub fn manifest(paths: &Paths) -> PathBuf {
    paths
        .k3s_data_dir()
        .join("server/manifests")
        .join(format!("{ADDON}.yaml"))
}

/// Before k3s starts: write the HelmChart where traefik is on; say why where the user turned
/// it off (where the installer did, install says why with the other add-ons).
pub fn prepare(paths: &Paths, state: &State, settings: &Checked) -> Result<()> {
    if state.server.is_some() || state.addons_off.iter().any(|a| a.name == ADDON) {
        return Ok(());
    }
    if disabled_by_user(settings, ADDON) {
        println!("k3s: add-on {ADDON} off: turned off by the user (--disable {ADDON})");
        return Ok(());
    }
    let chart = paths.prefix.join(CHART);
    let bytes = fs::read(&chart).with_context(|| {
        format!(
            "cannot read {}, the traefik chart this bundle ships: reinstall from the bundle, or \
             turn traefik off with --disable {ADDON}",
            chart.display()
        )
    })?;
    write_if_changed(&manifest(paths), &helm_chart(&bytes))?;
    println!(
        "k3s: add-on {ADDON}: HelmChart kube-system/{ADDON} with the bundle's chart ({}), \
         image {IMAGE}",
        chart.display()
    );
    Ok(())
}

/// k3s's HelmChart `traefik` (manifests/traefik.yaml) with `chartContent` in place of its
/// `chart:` URL. Its valuesContent is k3s's, but for `image` (the chart's default is the
/// reference the bundle ships) and `global.systemDefaultRegistry`: the image is imported under
/// docker.io whatever --system-default-registry says, as for k3s's other add-ons here.
fn helm_chart(chart: &[u8]) -> String {
    let content = base64::engine::general_purpose::STANDARD.encode(chart);
    format!(
        "# Written by the k3s-gvisor installer (traefik.rs): k3s's traefik HelmChart with the\n\
         # bundle's chart. `--disable traefik` removes it.\n\
         apiVersion: helm.cattle.io/v1\n\
         kind: HelmChart\n\
         metadata:\n  name: {ADDON}\n  namespace: kube-system\n\
         spec:\n  chartContent: {content}\n  valuesContent: |-\n{VALUES}"
    )
}

/// k3s v1.34.1's valuesContent for traefik, less `image`.
const VALUES: &str = "    deployment:
      podAnnotations:
        prometheus.io/port: \"8082\"
        prometheus.io/scrape: \"true\"
    providers:
      kubernetesIngress:
        publishedService:
          enabled: true
    priorityClassName: \"system-cluster-critical\"
    tolerations:
    - key: \"CriticalAddonsOnly\"
      operator: \"Exists\"
    - key: \"node-role.kubernetes.io/control-plane\"
      operator: \"Exists\"
      effect: \"NoSchedule\"
    service:
      ipFamilyPolicy: \"PreferDualStack\"
";

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_helm_chart_carries_the_chart_and_k3s_s_values() {
        let text = helm_chart(b"chart bytes");
        assert!(text.contains("  name: traefik\n  namespace: kube-system\n"));
        assert!(text.contains("  chartContent: Y2hhcnQgYnl0ZXM=\n"));
        assert!(text.contains("  valuesContent: |-\n    deployment:\n"));
        assert!(text.ends_with("      ipFamilyPolicy: \"PreferDualStack\"\n"));
        assert!(
            !text.contains("chart: "),
            "no chart URL: k3s's cannot be reached"
        );
    }

    #[test]
    fn ours_has_the_name_k3s_deletes_on_disable_traefik() {
        // k3s's shouldDisableFile: a manifest whose base name, less .yaml, is disabled.
        let paths = Paths::new(Path::new("/p"), Path::new("/d"));
        let path = manifest(&paths);
        assert_eq!(path.file_stem().unwrap().to_str(), Some(ADDON));
        assert!(path.ends_with("k3s/server/manifests/traefik.yaml"));
    }
}
