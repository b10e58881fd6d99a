//! local-path storage, k3s's `local-storage` add-on, with the images this bundle ships.
//!
//! k3s v1.34.1 deploys rancher/local-path-provisioner:v0.0.32 with the helper image
//! rancher/mirrored-library-busybox:1.36.1. The Go module proxy refuses v0.0.32 (403) and no
//! mirror has it, so the bundle builds v0.0.30 (the newest the proxy serves) and ships it under
//! its own reference; the helper pod (`mkdir`, `chmod`, `rm -rf` in `/bin/sh`) runs in the
//! bundle's busybox. An image is never shipped under a reference whose version it is not, so
//! k3s's manifest cannot be used as it is. The installer uses it with the two references
//! changed, by k3s's own manifest mechanisms (docs.k3s.io, "Auto-Deploying Manifests"):
//! - before k3s starts, `server/manifests/local-storage.yaml.skip` makes k3s's deploy
//!   controller ignore the manifest k3s stages, and the staged manifest of the last start is
//!   removed, so that the one read afterwards is this start's;
//! - once the API is up, k3s has staged its manifest with its own template values filled in
//!   (`--default-local-storage-path`, default DATA_DIR/k3s/storage; `--system-default-registry`);
//!   the installer writes it, with the references changed, to
//!   `server/manifests/local-storage/local-path.yaml`, which k3s deploys as any manifest.
//!
//! `--disable local-storage` (the user's, or the installer's where the add-on cannot run) keeps
//! k3s's meaning: k3s then stages nothing, and deletes every manifest under
//! `server/manifests/local-storage/` together with what it deployed.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::k3s_settings::Checked;
use crate::paths::Paths;
use crate::state::State;

/// The add-on's name, as `k3s server --disable` takes it.
pub const ADDON: &str = "local-storage";
/// What the bundle ships for the provisioner (bundle.toml), and for its helper pods.
pub const PROVISIONER_IMAGE: &str = "docker.io/rancher/local-path-provisioner:v0.0.30";
pub const HELPER_IMAGE: &str = "docker.io/library/busybox:1.35.0-debian";
/// What k3s v1.34.1's manifests/local-storage.yaml names, after `%{SYSTEM_DEFAULT_REGISTRY}%`.
const K3S_PROVISIONER_IMAGE: &str = "rancher/local-path-provisioner:v0.0.32";
const K3S_HELPER_IMAGE: &str = "rancher/mirrored-library-busybox:1.36.1";
/// k3s stages its manifests right after the API server is ready (pkg/server runControllers).
const STAGE_TIMEOUT: Duration = Duration::from_secs(60);

fn manifests_dir(paths: &Paths) -> PathBuf {
    paths.k3s_data_dir().join("server/manifests")
}

fn staged(paths: &Paths) -> PathBuf {
    manifests_dir(paths).join(format!("{ADDON}.yaml"))
}

fn skip_file(paths: &Paths) -> PathBuf {
    manifests_dir(paths).join(format!("{ADDON}.yaml.skip"))
}

/// Ours: in a directory named after the add-on, so that k3s's `--disable local-storage`
/// deletes it too, and not named `local-storage.yaml`, which the .skip file would match.
pub fn bundle_manifest(paths: &Paths) -> PathBuf {
    manifests_dir(paths).join(ADDON).join("local-path.yaml")
}

/// What to do for local-path storage at this start.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Not a server, or the installer turned the add-on off (k3s gets `--disable`).
    Nothing,
    /// The user's `--disable local-storage` (flag, config file or variable).
    DisabledByUser,
    /// Lay down k3s's manifest with the bundle's images once k3s has staged it.
    LayDown,
}

/// Before k3s starts: decide, and prepare the manifests directory for this start.
pub fn prepare(paths: &Paths, state: &State, settings: &Checked) -> Result<Plan> {
    let ours = state.server.is_none() && !state.addons_off.iter().any(|a| a.name == ADDON);
    let plan = if !ours {
        Plan::Nothing
    } else if disabled_by_user(settings, ADDON) {
        Plan::DisabledByUser
    } else {
        Plan::LayDown
    };
    let skip = skip_file(paths);
    if plan == Plan::LayDown {
        let dir = manifests_dir(paths);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::write(
            &skip,
            "# k3s-gvisor: the installer deploys this manifest as local-storage/local-path.yaml,\n\
             # with the images the bundle ships in place of the ones k3s names.\n",
        )
        .with_context(|| format!("cannot write {}", skip.display()))?;
        remove_if_present(&staged(paths))?;
    } else {
        remove_if_present(&skip)?;
    }
    Ok(plan)
}

/// Once the API is up: wait for k3s to stage its manifest, then lay down ours.
pub fn lay_down(paths: &Paths, plan: &Plan) -> Result<()> {
    if *plan != Plan::LayDown {
        if *plan == Plan::DisabledByUser {
            println!("k3s: add-on {ADDON} off: turned off by the user (--disable {ADDON})");
        }
        return Ok(());
    }
    let staged = staged(paths);
    let start = Instant::now();
    let text = loop {
        // Complete once both references are in it (k3s may be writing it).
        if let Ok(text) = fs::read_to_string(&staged) {
            if text.contains(K3S_PROVISIONER_IMAGE) && text.contains(K3S_HELPER_IMAGE) {
                break text;
            }
            if start.elapsed() > STAGE_TIMEOUT {
                bail!(
                    "k3s's {} does not name {K3S_PROVISIONER_IMAGE} and {K3S_HELPER_IMAGE}: this \
                     installer does not know this k3s's local-storage manifest (see \
                     docs/installer.md, \"Add-ons\")",
                    staged.display()
                );
            }
        } else if start.elapsed() > STAGE_TIMEOUT {
            bail!(
                "k3s did not stage {} within {}s of the API answering (see `installer logs k3s`)",
                staged.display(),
                STAGE_TIMEOUT.as_secs()
            );
        }
        sleep(Duration::from_millis(200));
    };
    let ours = bundle_manifest(paths);
    write_if_changed(&ours, &with_bundle_images(&text))?;
    println!(
        "k3s: add-on {ADDON}: k3s's manifest with the bundle's images ({PROVISIONER_IMAGE} in \
         place of {K3S_PROVISIONER_IMAGE}, which cannot be built from source here; helper \
         {HELPER_IMAGE}), as {}",
        ours.display()
    );
    Ok(())
}

/// k3s's manifest with the two image references changed; whatever registry prefix
/// `--system-default-registry` put in front of them goes too, since the images are imported
/// under the bundle's names.
fn with_bundle_images(text: &str) -> String {
    text.lines()
        .map(|line| {
            for (theirs, ours) in [
                (K3S_PROVISIONER_IMAGE, PROVISIONER_IMAGE),
                (K3S_HELPER_IMAGE, HELPER_IMAGE),
            ] {
                if let Some(at) = line.find("image:").filter(|_| line.contains(theirs)) {
                    return format!("{}image: \"{ours}\"", &line[..at]);
                }
            }
            line.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Whether `--disable` lists `addon` anywhere k3s reads it: the flags, the config files
/// (list flags add up, as k3s's configfilearg does) or its variable.
pub(crate) fn disabled_by_user(settings: &Checked, addon: &str) -> bool {
    let listed = |value: &str| value.split(',').any(|item| item.trim() == addon);
    let given = &settings.settings;
    given
        .flags
        .iter()
        .chain(&given.config)
        .filter(|flag| flag.name == "disable")
        .any(|flag| flag.value.as_deref().is_some_and(listed))
        || settings.value("disable").is_some_and(|v| listed(&v))
}

/// k3s's deploy controller reapplies a manifest when its modification time changes.
pub(crate) fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::files::write_replacing(path, text.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of k3s v1.34.1's manifests/local-storage.yaml that name images, as k3s
    /// stages them (empty `%{SYSTEM_DEFAULT_REGISTRY}%`), and one with a registry.
    #[test]
    fn both_references_are_changed_and_nothing_else() {
        let staged = "      containers:\n      - name: local-path-provisioner\n        \
                      image: \"rancher/local-path-provisioner:v0.0.32\"\n        \
                      imagePullPolicy: IfNotPresent\n    \
                      \"paths\":[\"/data/k3s/storage\"]\n        \
                      image: \"reg.example:5000/rancher/mirrored-library-busybox:1.36.1\"\n";
        let ours = with_bundle_images(staged);
        assert_eq!(
            ours,
            "      containers:\n      - name: local-path-provisioner\n        \
             image: \"docker.io/rancher/local-path-provisioner:v0.0.30\"\n        \
             imagePullPolicy: IfNotPresent\n    \
             \"paths\":[\"/data/k3s/storage\"]\n        \
             image: \"docker.io/library/busybox:1.35.0-debian\"\n"
        );
    }

    fn checked(flags: &[(&str, &str)], config: &[(&str, &str)]) -> Checked {
        Checked::for_test(
            "   --disable value   (components) Do not deploy packaged components\n",
            flags,
            config,
            &[],
        )
    }

    #[test]
    fn the_users_disable_is_found_in_flags_and_config_files_as_k3s_adds_them_up() {
        assert!(!disabled_by_user(&checked(&[], &[]), ADDON));
        assert!(!disabled_by_user(
            &checked(
                &[("disable", "traefik"), ("node-label", "local-storage")],
                &[]
            ),
            ADDON
        ));
        assert!(disabled_by_user(
            &checked(&[("disable", "traefik, local-storage")], &[]),
            ADDON
        ));
        // A later --disable of something else does not undo an earlier one (a list flag).
        assert!(disabled_by_user(
            &checked(
                &[("disable", "local-storage"), ("disable", "traefik")],
                &[("disable", "servicelb")]
            ),
            ADDON
        ));
        assert!(disabled_by_user(
            &checked(&[], &[("disable", "local-storage")]),
            ADDON
        ));
        assert!(disabled_by_user(
            &checked(&[("disable", "traefik, local-storage")], &[]),
            "traefik"
        ));
    }

    #[test]
    fn k3s_deletes_ours_on_disable_and_the_skip_file_does_not_hide_it() {
        let paths = Paths::new(Path::new("/p"), Path::new("/d"));
        let ours = bundle_manifest(&paths);
        // k3s's shouldDisableFile: a file in a directory named after a disabled add-on.
        assert_eq!(
            ours.parent().unwrap().file_name().unwrap().to_str(),
            Some(ADDON)
        );
        // k3s's .skip matching is by file name: ours must not be `local-storage.yaml`.
        let skip = skip_file(&paths);
        let skipped = skip.file_name().unwrap().to_str().unwrap();
        assert_ne!(
            Some(skipped.trim_end_matches(".skip")),
            ours.file_name().unwrap().to_str()
        );
        assert_eq!(skipped.trim_end_matches(".skip"), "local-storage.yaml");
    }
}
