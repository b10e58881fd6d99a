//! k3s's helm-controller (it runs inside the k3s server): which image its HelmChart jobs run.
//!
//! k3s names rancher/klipper-helm, which the bundle cannot ship (its source cannot be had here:
//! docs/installer.md, "helm-controller"); the bundle ships its own job image instead, under its
//! own reference, and a server gets it as k3s's `--helm-job-image` at every start, unless the
//! user gave that flag (then theirs is used) or `--disable-helm-controller` (k3s's flag, passed
//! through: then no HelmChart is handled at all). The decision is printed by install and status.

use crate::bundle::Manifest;
use crate::k3s_settings::Checked;

/// The `[[image]]` name in bundle.toml of the HelmChart job image.
pub const JOB_IMAGE_NAME: &str = "klipper-helm";

/// k3s's flags this module reads.
const DISABLE_FLAG: &str = "disable-helm-controller";
const JOB_IMAGE_FLAG: &str = "helm-job-image";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelmController {
    /// Runs, with the bundle's job image (the installer passes `--helm-job-image`).
    BundleImage(String),
    /// Runs, with the job image the user gave (`--helm-job-image`).
    UserImage(String),
    /// Runs with k3s's default job image, which this bundle does not ship: a HelmChart's job
    /// waits on a pull that a sandbox without a registry cannot make.
    NoImage,
    /// `--disable-helm-controller`.
    Off,
}

impl HelmController {
    /// For a server with these settings and this bundle (None: no manifest to read).
    pub fn decide(settings: &Checked, manifest: Option<&Manifest>) -> HelmController {
        if settings.is_on(DISABLE_FLAG) {
            return HelmController::Off;
        }
        if let Some(image) = settings.value(JOB_IMAGE_FLAG) {
            return HelmController::UserImage(image);
        }
        manifest
            .and_then(|m| m.images.iter().find(|i| i.name == JOB_IMAGE_NAME))
            .map_or(HelmController::NoImage, |image| {
                HelmController::BundleImage(image.reference.clone())
            })
    }

    /// The flag the installer adds to `k3s server`, if any.
    pub fn server_arg(&self) -> Option<String> {
        match self {
            HelmController::BundleImage(image) => Some(format!("--{JOB_IMAGE_FLAG}={image}")),
            _ => None,
        }
    }

    /// One line for install and status.
    pub fn describe(&self) -> String {
        match self {
            HelmController::BundleImage(image) => format!(
                "on: HelmChart jobs run the bundle's {image} (--{JOB_IMAGE_FLAG}; docs/installer.md)"
            ),
            HelmController::UserImage(image) => {
                format!("on: HelmChart jobs run {image} (your --{JOB_IMAGE_FLAG})")
            }
            HelmController::NoImage => "on, but this bundle ships no HelmChart job image: a \
                 HelmChart's job waits on a pull of k3s's rancher/klipper-helm"
                .to_string(),
            HelmController::Off => format!("off: turned off by the user (--{DISABLE_FLAG})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k3s_settings::{K3sCommand, KnownFlags, Settings};
    use std::collections::BTreeMap;

    const HELP: &str = "
   --helm-job-image value                     (helm) Default image to use for helm jobs
   --disable-helm-controller                  (experimental/components) Disable Helm controller [$K3S_DISABLE_HELM_CONTROLLER]
   --debug                                    (logging) Turn on debug logs [$K3S_DEBUG]
";

    fn checked(args: &[&str], env: &[(&str, &str)]) -> Checked {
        let known = KnownFlags::from_help(K3sCommand::Server, HELP);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([(
                "K3S_CONFIG_FILE".to_string(),
                "/nonexistent/config.yaml".to_string(),
            )])
            .collect();
        let settings = Settings::check(&known, None, &args, &env).unwrap();
        Checked { known, settings }
    }

    fn manifest(images: &[(&str, &str)]) -> Manifest {
        Manifest {
            name: "k3s-gvisor".into(),
            version: "v1".into(),
            arch: bundle_format::Arch::Amd64,
            source_date_epoch: 0,
            components: Vec::new(),
            images: images
                .iter()
                .map(|(name, reference)| crate::bundle::Image {
                    name: name.to_string(),
                    reference: reference.to_string(),
                    source: bundle_format::ImageSource::Build,
                    digest: "sha256:00".into(),
                    file: format!("images/{name}.oci.tar"),
                    sha256: "00".into(),
                    sandbox: false,
                })
                .collect(),
            omitted: Vec::new(),
            not_on_this_arch: Vec::new(),
        }
    }

    #[test]
    fn the_bundles_job_image_is_passed_unless_the_user_chose() {
        let shipped = manifest(&[
            ("busybox", "docker.io/library/busybox:1"),
            (
                JOB_IMAGE_NAME,
                "docker.io/k3s-gvisor/klipper-helm:v3.21.4-1",
            ),
        ]);
        let helm = HelmController::decide(&checked(&[], &[]), Some(&shipped));
        assert_eq!(
            helm.server_arg().as_deref(),
            Some("--helm-job-image=docker.io/k3s-gvisor/klipper-helm:v3.21.4-1")
        );
        assert!(helm.describe().starts_with("on: "), "{}", helm.describe());

        let mine = checked(&["--helm-job-image=registry.example/helm:1"], &[]);
        let helm = HelmController::decide(&mine, Some(&shipped));
        assert_eq!(
            helm,
            HelmController::UserImage("registry.example/helm:1".into())
        );
        assert_eq!(helm.server_arg(), None);

        for off in [
            checked(&["--disable-helm-controller"], &[]),
            checked(&[], &[("K3S_DISABLE_HELM_CONTROLLER", "true")]),
        ] {
            let helm = HelmController::decide(&off, Some(&shipped));
            assert_eq!(helm, HelmController::Off);
            assert_eq!(helm.server_arg(), None);
            assert!(helm.describe().contains("--disable-helm-controller"));
        }

        let helm = HelmController::decide(&checked(&[], &[]), Some(&manifest(&[])));
        assert_eq!(helm, HelmController::NoImage);
        assert_eq!(helm.server_arg(), None);
        assert!(helm.describe().contains("waits on a pull"));
    }
}
