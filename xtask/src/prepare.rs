//! Project-specific preparation of a patched tree, between the patch and build stages: the steps
//! an upstream's own build scripts do before `go build` (`prepare = ...` in bundle.toml).

use crate::config::Prepare;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// What a prepare step did: placeholder values for the build, and notes for the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    pub placeholders: BTreeMap<String, String>,
    pub notes: Vec<String>,
}

pub fn prepare(step: Option<Prepare>, tree: &Path) -> Result<Prepared> {
    match step {
        None => Ok(Prepared::default()),
        Some(Prepare::K3sEmbed) => k3s_embed(tree),
    }
}

/// A manifest that installs one of the Helm charts k3s's build downloads from GitHub
/// (scripts/download) into its embedded `static/charts`.
fn needs_downloaded_chart(manifest: &str) -> bool {
    manifest.contains("/static/charts/")
}

/// k3s's scripts/build: `cp manifests/* pkg/deploy/embed/` and `cp build/static/*
/// pkg/static/embed/`, leaving out the manifests whose Helm charts we do not have (they come
/// from GitHub at k3s's build time). Also reads the helm job image that scripts/version.sh
/// stamps (`{helm_job_image}`).
fn k3s_embed(tree: &Path) -> Result<Prepared> {
    let mut prepared = Prepared::default();
    let manifests = tree.join("manifests");
    if !manifests.is_dir() {
        bail!(
            "{} has no manifests/ directory: not a k3s source tree",
            tree.display()
        );
    }
    let deploy_embed = tree.join("pkg/deploy/embed");
    let mut left_out = Vec::new();
    for entry in walkdir::WalkDir::new(&manifests).sort_by_file_name() {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(&manifests)?.to_path_buf();
        let bytes = std::fs::read(entry.path())?;
        if needs_downloaded_chart(&String::from_utf8_lossy(&bytes)) {
            left_out.push(rel.display().to_string());
            continue;
        }
        let dest = deploy_embed.join(&rel);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::write(&dest, bytes)?;
    }
    if !left_out.is_empty() {
        prepared.notes.push(format!(
            "manifests left out (their Helm charts come from GitHub at k3s build time): {}",
            left_out.join(", ")
        ));
    }

    // `//go:embed embed/*` needs at least one file. Upstream fills pkg/static/embed with the
    // downloaded charts; a tree without them gets a note saying why the directory is empty.
    let static_embed = tree.join("pkg/static/embed");
    let build_static = tree.join("build/static");
    if build_static.is_dir() {
        crate::fsutil::copy_tree(&build_static, &static_embed)?;
    }
    std::fs::create_dir_all(&static_embed)?;
    if std::fs::read_dir(&static_embed)?.next().is_none() {
        std::fs::write(
            static_embed.join("README.k3s-gvisor"),
            "k3s-gvisor builds k3s without the Helm charts k3s downloads at build time;\n\
             the manifests that install them are left out of pkg/deploy/embed.\n",
        )?;
    }

    let image_list = tree.join("scripts/airgap/image-list.txt");
    let list = std::fs::read_to_string(&image_list).unwrap_or_default();
    let Some(helm) = helm_job_image(&list) else {
        bail!(
            "{} names no rancher/klipper-helm image: k3s's scripts/version.sh reads the helm \
             job image from it",
            image_list.display()
        );
    };
    prepared.placeholders.insert("helm_job_image".into(), helm);
    Ok(prepared)
}

/// `rancher/klipper-helm:<tag>` from k3s's airgap image list, as scripts/version.sh reads it.
fn helm_job_image(list: &str) -> Option<String> {
    list.lines()
        .map(str::trim)
        .find(|l| l.contains("rancher/klipper-helm:"))
        .and_then(|l| l.rsplit_once('/'))
        .map(|(_, name_tag)| format!("rancher/{name_tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helm_job_image_is_read_as_version_sh_reads_it() {
        let list = "docker.io/rancher/klipper-lb:v0.4.13\ndocker.io/rancher/klipper-helm:v0.9.8-build20250709\n";
        assert_eq!(
            helm_job_image(list).as_deref(),
            Some("rancher/klipper-helm:v0.9.8-build20250709")
        );
        assert_eq!(helm_job_image("docker.io/rancher/other:v1\n"), None);
    }

    #[test]
    fn chart_manifests_are_left_out_and_the_rest_embedded() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        std::fs::create_dir_all(t.join("manifests/metrics-server")).unwrap();
        std::fs::create_dir_all(t.join("scripts/airgap")).unwrap();
        std::fs::write(t.join("manifests/coredns.yaml"), "kind: Deployment\n").unwrap();
        std::fs::write(t.join("manifests/metrics-server/a.yaml"), "kind: Service\n").unwrap();
        std::fs::write(
            t.join("manifests/traefik.yaml"),
            "chart: https://%{KUBERNETES_API}%/static/charts/traefik.tgz\n",
        )
        .unwrap();
        std::fs::write(
            t.join("scripts/airgap/image-list.txt"),
            "docker.io/rancher/klipper-helm:v1\n",
        )
        .unwrap();
        let p = k3s_embed(t).unwrap();
        assert!(t.join("pkg/deploy/embed/coredns.yaml").is_file());
        assert!(t.join("pkg/deploy/embed/metrics-server/a.yaml").is_file());
        assert!(!t.join("pkg/deploy/embed/traefik.yaml").exists());
        assert!(t.join("pkg/static/embed/README.k3s-gvisor").is_file());
        assert_eq!(p.placeholders["helm_job_image"], "rancher/klipper-helm:v1");
        assert!(p.notes[0].contains("traefik.yaml"), "{:?}", p.notes);
    }
}
