//! Lays the bundle out under the prefix: binaries, CNI plugin and conflist, images, the /proc/sys
//! tree for the launcher, and the rendered containerd config. Everything is a copy, never a
//! symlink into the extracted bundle, so the bundle dir can be deleted after install.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::bundle::{Bundle, MANIFEST_FILE};
use crate::config::{self, ContainerdSettings};
use crate::paths::Paths;
use crate::preflight::Plan;
use bundle_format::paths as in_bundle;

/// Copies `from` to `to` (creating parent dirs), keeping the permission bits.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Copies every regular file directly inside `from` into `to`, and recreates its symlinks
/// (`bin/kubectl -> k3s`: a copy would double the install's size).
fn copy_dir_files(from: &Path, to: &Path) -> Result<usize> {
    let Ok(entries) = fs::read_dir(from) else {
        return Ok(0);
    };
    let mut count = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            let target = fs::read_link(&path)?;
            fs::create_dir_all(to)?;
            let _ = fs::remove_file(&dest);
            std::os::unix::fs::symlink(&target, &dest).with_context(|| {
                format!("cannot link {} to {}", dest.display(), target.display())
            })?;
            count += 1;
        } else if path.is_file() {
            copy_file(&path, &dest)?;
            count += 1;
        }
    }
    Ok(count)
}

/// The install's copy of the bundle (manifest, binaries, etc/procsys), which start, status,
/// doctor and upgrade read after the extracted bundle is gone. Opened as the bundle itself is,
/// so a missing or damaged manifest is an error naming the file, never an empty answer.
pub fn installed(paths: &Paths) -> Result<Bundle> {
    Bundle::open(&paths.prefix)
}

pub fn lay_out(bundle: &Bundle, paths: &Paths, plan: &Plan) -> Result<()> {
    copy_dir_files(&bundle.path(in_bundle::BIN_DIR), &paths.prefix.join("bin"))?;
    copy_dir_files(&bundle.path(in_bundle::CNI_BIN_DIR), &paths.cni_bin_dir())?;
    copy_dir_files(&bundle.path(in_bundle::IMAGES_DIR), &paths.images_dir())?;
    // Helm charts the installer hands k3s as HelmCharts (traefik.rs).
    copy_dir_files(
        &bundle.path(in_bundle::CHARTS_DIR),
        &paths.prefix.join("charts"),
    )?;
    copy_file(
        &bundle.path(MANIFEST_FILE),
        &paths.prefix.join(MANIFEST_FILE),
    )?;
    let kubelet_args = bundle.path(in_bundle::KUBELET_ARGS);
    if kubelet_args.is_file() {
        copy_file(&kubelet_args, &paths.prefix.join(in_bundle::KUBELET_ARGS))?;
    }
    for relative in crate::preflight::procsys_candidates(bundle) {
        let relative = format!("{}/{relative}", in_bundle::PROCSYS_DIR);
        copy_file(&bundle.path(&relative), &paths.prefix.join(&relative))?;
    }
    install_cni_config(bundle, paths)?;
    write_procsys_tree(bundle, paths, &plan.facts.served_procsys())?;
    write_containerd_config(bundle, paths, plan)?;
    fs::create_dir_all(paths.run_dir())?;
    fs::create_dir_all(paths.logs_dir())?;
    Ok(())
}

/// CNI network configs ship under etc/cni/ (the cni crate owns them). Each is copied, with
/// {{PREFIX}}/{{DATA_DIR}} filled in where a config uses them, into the conf dir containerd
/// reads; with k3s in the bundle into the template dir instead: then the range must be the
/// node's podCIDR, known only once k3s has registered the node, and `start` writes the conf
/// dir (a config there earlier would let the node go Ready and pods get addresses outside the
/// range other nodes route here).
fn install_cni_config(bundle: &Bundle, paths: &Paths) -> Result<()> {
    let conf_dir = if bundle.path(in_bundle::K3S).is_file() {
        paths.cni_template_dir()
    } else {
        paths.cni_conf_dir()
    };
    fs::create_dir_all(paths.cni_conf_dir())?;
    fs::create_dir_all(&conf_dir)?;
    let mut stack = vec![bundle.path(in_bundle::CNI_CONF_DIR)];
    let values = std::collections::BTreeMap::from([
        ("PREFIX", paths.prefix.display().to_string()),
        ("DATA_DIR", paths.data_dir.display().to_string()),
    ]);
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let is_config = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            );
            if is_config {
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let text = config::render(&text, &values)
                    .with_context(|| format!("in CNI config {}", path.display()))?;
                let text = keep_cni_state_in_data_dir(&text, paths);
                fs::write(conf_dir.join(entry.file_name()), text)?;
            }
        }
    }
    Ok(())
}

/// Points every plugin's IPAM store ("dataDir") into the install's data dir, so allocations
/// never outlive an uninstall or collide with another CNI user of /var/lib/cni. A config that
/// is not JSON is left as it is.
fn keep_cni_state_in_data_dir(text: &str, paths: &Paths) -> String {
    let Ok(mut conf) = serde_json::from_str::<serde_json::Value>(text) else {
        return text.to_string();
    };
    let store = paths.data_dir.join("cni/networks").display().to_string();
    let mut changed = false;
    let plugins = conf.get_mut("plugins").and_then(|p| p.as_array_mut());
    for plugin in plugins.into_iter().flatten() {
        if let Some(dir) = plugin.get_mut("dataDir") {
            *dir = serde_json::Value::String(store.clone());
            changed = true;
        }
    }
    if !changed {
        return text.to_string();
    }
    serde_json::to_string_pretty(&conf).unwrap_or_else(|_| text.to_string())
}

/// Only the files this host lacks or cannot write: the launcher redirects /proc/sys/X to
/// procsys/X when it exists (reads and writes), and every other file must keep coming from the
/// kernel.
fn write_procsys_tree(bundle: &Bundle, paths: &Paths, served: &[String]) -> Result<()> {
    let root = paths.procsys_dir();
    fs::create_dir_all(&root)?;
    for relative in served {
        let target = root.join(relative);
        match crate::probe::derived_procsys_value(relative) {
            Some(value) => {
                fs::create_dir_all(target.parent().expect("below the procsys root"))?;
                fs::write(&target, value)
                    .with_context(|| format!("cannot write {}", target.display()))?;
            }
            None => copy_file(&bundle.path(in_bundle::PROCSYS_DIR).join(relative), &target)?,
        }
    }
    Ok(())
}

fn write_containerd_config(bundle: &Bundle, paths: &Paths, plan: &Plan) -> Result<()> {
    let template_path = bundle.path(in_bundle::CONTAINERD_CONFIG_TEMPLATE);
    let template = fs::read_to_string(&template_path).with_context(|| {
        format!(
            "{} is missing: the bundle is incomplete",
            template_path.display()
        )
    })?;
    let facts = &plan.facts;
    let sandbox_image = bundle
        .sandbox_image()
        .map(|image| image.reference.clone())
        .unwrap_or_else(|| "registry.k8s.io/pause:3.10".into());
    let settings = ContainerdSettings {
        paths,
        snapshotter: plan.snapshotter,
        sandbox_image: &sandbox_image,
        enable_unprivileged_ports: !facts.kernel_below_4_11()
            && !facts.procsys_missing("net/ipv4/ip_unprivileged_port_start"),
        enable_unprivileged_icmp: !facts.kernel_below_4_11()
            && !facts.procsys_missing("net/ipv4/ping_group_range"),
        restrict_oom_score_adj: !facts.cap_sys_resource,
    };
    let rendered = config::render(&template, &settings.placeholders())
        .with_context(|| format!("in {}", template_path.display()))?;
    let target = paths.containerd_config();
    fs::create_dir_all(target.parent().expect("config has a parent"))?;
    fs::write(&target, rendered).with_context(|| format!("cannot write {}", target.display()))
}
