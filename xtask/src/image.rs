//! The image stage: produce every container image the bundle ships, as an OCI archive that
//! `ctr -n k8s.io images import` loads under the right name, so that no pod waits on a pull.
//!
//! Each `[[image]]` table of bundle.toml names one image and where it comes from:
//! - `kind = "build"` assembles an image from files we have (binaries the pipeline built, such
//!   as `pause` and `coredns`, pinned files of the build machine such as Debian's
//!   busybox-static, and files of this repository such as images/klipper-helm/entry). Works offline and is byte-reproducible: one layer, sorted entries,
//!   mtime = SOURCE_DATE_EPOCH, owner 0:0, gzip without a timestamp, canonical JSON.
//! - `kind = "registry"` pulls an image by pinned digest through the OCI distribution API
//!   (anonymous bearer token as Docker Hub wants), resolves an index to the bundle's platform
//!   (`linux/<arch>`, unless the table names another), verifies every
//!   blob's digest and size, and keeps the blobs in a content-addressed cache.
//!
//! Both end in the same archive format (see `archive`).
//!
//! Every image is for the bundle's architecture (bundle.toml `arch`, `--arch`): its config says
//! so, binaries built by the pipeline are built for it, and a file that differs by architecture
//! names one pinned file per architecture (`from = { by-arch = { amd64 = ..., arm64 = ... } }`,
//! e.g. Debian's busybox-static of each).
//!
//! ```toml
//! [[image]]
//! name = "pause"                                        # images/pause.oci.tar in the bundle
//! reference = "docker.io/k3s-gvisor/pause:0.1.0"        # the name containerd and the CRI see
//! sandbox = true                                        # the CRI's sandbox (pause) image
//! source = { kind = "build", entrypoint = ["/pause"], files = [
//!     { path = "/pause", from = { built = "pause" } } ] }
//!
//! [[image]]
//! name = "busybox"
//! reference = "docker.io/library/busybox:1.35.0-debian"
//! source = { kind = "build", entrypoint = ["/bin/sh"], files = [
//!     { path = "/bin/busybox", from = { host = { path = "/bin/busybox", sha256 = "...",
//!       package = "busybox-static=1:1.35.0-4+deb12u1+b1" } } },
//! ], symlinks = { "/bin/sh" = "busybox", "/bin/sleep" = "busybox" } }  # TOML: no newline here
//!
//! [[image]]
//! name = "mirrored-pause"
//! reference = "docker.io/rancher/mirrored-pause:3.6"
//! source = { kind = "registry", digest = "sha256:..." }  # pinned: an index or a manifest
//! ```

mod archive;
mod assemble;
pub mod bench_image;
mod blob_store;
mod digest;
mod registry;
#[cfg(test)]
mod tests;

use anyhow::{bail, Context, Result};
use bundle_format::Arch;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub use assemble::repo_file;

/// One `[[image]]` table of bundle.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Short name; the archive is `<name>.oci.tar`.
    pub name: String,
    /// The fully qualified name containerd records, e.g. "docker.io/rancher/mirrored-pause:3.6".
    pub reference: String,
    pub source: ImageSource,
    /// True for the pod sandbox (pause) image that the shipped containerd config pins.
    #[serde(default)]
    pub sandbox: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ImageSource {
    Build(BuildSource),
    Registry(RegistrySource),
}

/// An image assembled from files, for the bundle's architecture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSource {
    pub files: Vec<ImageFile>,
    /// Path in the image -> link target, e.g. "/bin/sh" = "busybox".
    #[serde(default)]
    pub symlinks: BTreeMap<String, String>,
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default = "default_env")]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The image config's `User` (`"1000"`): a numeric user lets the kubelet check a pod's
    /// `runAsNonRoot` against the image, as it must for k3s's HelmChart jobs.
    #[serde(default)]
    pub user: Option<String>,
}

fn default_env() -> Vec<String> {
    vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()]
}

/// One regular file of a built image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFile {
    /// Absolute path inside the image.
    pub path: String,
    pub from: FileOrigin,
    /// Permission bits in the image; the host file's own mode is not used, so the image does not
    /// depend on the builder's umask.
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    0o755
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileOrigin {
    /// A binary the build stage made (a crate or a component binary), by name: `pause`.
    Built(String),
    /// A file of the build machine, e.g. Debian's /bin/busybox, pinned by its sha256.
    Host(HostFile),
    /// A file of this repository, by its path from the repository root
    /// (`images/klipper-helm/entry`); its content is part of the image stage's stamp.
    Repo(PathBuf),
    /// One of the above per architecture, for a file that is a program of the build machine's
    /// kind (busybox): `{ by-arch = { amd64 = { host = ... }, arm64 = { host = ... } } }`.
    ByArch(BTreeMap<Arch, FileOrigin>),
}

impl FileOrigin {
    /// Where the file comes from in a bundle for `arch`.
    pub fn for_arch(&self, arch: Arch) -> Result<&FileOrigin> {
        let FileOrigin::ByArch(by_arch) = self else {
            return Ok(self);
        };
        let origin = by_arch.get(&arch).with_context(|| {
            format!(
                "this file has no origin for {arch}: its `by-arch` names only {}",
                by_arch
                    .keys()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        if matches!(origin, FileOrigin::ByArch(_)) {
            bail!("`by-arch` of {arch} is another `by-arch`: name the file itself");
        }
        Ok(origin)
    }
}

/// A file the build machine provides, pinned so that two machines build the same image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    pub path: PathBuf,
    /// sha256 of the file; a machine with another version refuses to build.
    pub sha256: String,
    /// The Debian package and version that provides exactly this file (`apt-get install`).
    pub package: String,
}

/// An image pulled from a registry by pinned digest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySource {
    /// "sha256:<hex>" of an image index or of an image manifest.
    pub digest: String,
    /// Where to pull from, e.g. "docker.io/rancher/mirrored-pause" or a mirror; defaults to the
    /// repository part of `reference`. Loopback registries are spoken to over plain http.
    #[serde(default)]
    pub repository: Option<String>,
    /// Platform chosen from an index, "os/arch"; the bundle's (`linux/<arch>`) by default.
    #[serde(default)]
    pub platform: Option<String>,
}

impl RegistrySource {
    /// The platform pulled for a bundle of `arch`.
    pub fn platform_for(&self, arch: Arch) -> String {
        self.platform
            .clone()
            .unwrap_or_else(|| format!("linux/{arch}"))
    }
}

/// What the stage needs from the pipeline.
#[derive(Debug, Clone)]
pub struct ImageContext {
    /// Registry blobs are cached in `<cache_dir>/images/blobs/sha256/<hex>`.
    pub cache_dir: PathBuf,
    /// Archives are written to `<out_dir>/<name>.oci.tar`.
    pub out_dir: PathBuf,
    pub source_date_epoch: u64,
    /// Never touch the network: registry images must come from the cache.
    pub offline: bool,
    /// The binaries the build stage made, by name (`FileOrigin::Built`).
    pub built: BTreeMap<String, PathBuf>,
    /// The repository checkout (`FileOrigin::Repo` paths are relative to it).
    pub repo: PathBuf,
    /// The bundle's architecture: the images' platform, and which `by-arch` file is used.
    pub arch: Arch,
}

/// One finished image archive (also the images stage's stamp record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageOutput {
    pub name: String,
    pub reference: String,
    /// Digest of the image manifest in the archive: what `ctr images ls` shows as the image's
    /// target. For a registry image pinned by index digest this is the chosen platform's manifest.
    pub digest: String,
    pub file: PathBuf,
    pub sandbox: bool,
    pub origin: ImageOrigin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ImageOrigin {
    Build,
    Registry {
        repository: String,
        /// The digest bundle.toml pins (index or manifest).
        pinned_digest: String,
        platform: String,
    },
}

/// Build or pull every image, in the order given.
pub fn build_images(specs: &[ImageSpec], ctx: &ImageContext) -> Result<Vec<ImageOutput>> {
    check_specs(specs)?;
    std::fs::create_dir_all(&ctx.out_dir)
        .with_context(|| format!("cannot create {}", ctx.out_dir.display()))?;
    specs
        .iter()
        .map(|spec| {
            build_image(spec, ctx)
                .with_context(|| format!("image {:?} ({}) failed", spec.name, spec.reference))
        })
        .collect()
}

/// Build or pull one image.
pub fn build_image(spec: &ImageSpec, ctx: &ImageContext) -> Result<ImageOutput> {
    let file = ctx.out_dir.join(format!("{}.oci.tar", spec.name));
    let (digest, origin) = match &spec.source {
        ImageSource::Build(build) => {
            let image = assemble::assemble(build, ctx, &assemble::Platform::linux(ctx.arch))?;
            image.write_archive(&file, &spec.reference, ctx.source_date_epoch)?;
            (image.manifest_digest(), ImageOrigin::Build)
        }
        ImageSource::Registry(source) => {
            let pulled = registry::pull(spec, source, ctx)?;
            pulled.write_archive(&file, &spec.reference, ctx.source_date_epoch)?;
            (pulled.manifest_digest.clone(), pulled.origin.clone())
        }
    };
    Ok(ImageOutput {
        name: spec.name.clone(),
        reference: spec.reference.clone(),
        digest,
        file,
        sandbox: spec.sandbox,
        origin,
    })
}

/// Catch mistakes in bundle.toml before any work is done.
fn check_specs(specs: &[ImageSpec]) -> Result<()> {
    let mut names = BTreeSet::new();
    let mut references = BTreeSet::new();
    for spec in specs {
        let valid_name = !spec.name.is_empty()
            && spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            bail!(
                "image name {:?} must be non-empty and use only letters, digits, '-', '_', '.' \
                 (it becomes the file name <name>.oci.tar)",
                spec.name
            );
        }
        if !names.insert(spec.name.as_str()) {
            bail!(
                "two [[image]] tables are named {:?}; names must be unique",
                spec.name
            );
        }
        check_reference(&spec.reference)
            .with_context(|| format!("image {:?}: bad reference", spec.name))?;
        if !references.insert(spec.reference.as_str()) {
            bail!(
                "two [[image]] tables use the reference {:?}",
                spec.reference
            );
        }
    }
    let sandboxes: Vec<_> = specs
        .iter()
        .filter(|s| s.sandbox)
        .map(|s| &s.name)
        .collect();
    if sandboxes.len() > 1 {
        bail!("only one image can be the sandbox image, but {sandboxes:?} all say sandbox = true");
    }
    Ok(())
}

/// containerd records the name as written, and the CRI looks images up by their fully qualified
/// name, so a short name like "pause:3.6" would never match: insist on "domain/path:tag".
pub fn check_reference(reference: &str) -> Result<()> {
    let (repository, tag) = split_tag(reference).with_context(|| {
        format!("{reference:?} has no tag; write it as domain/path:tag, e.g. docker.io/library/busybox:1.36")
    })?;
    let domain = repository.split('/').next().unwrap_or_default();
    let has_domain = repository.contains('/')
        && (domain.contains('.') || domain.contains(':') || domain == "localhost");
    if !has_domain {
        bail!(
            "{reference:?} is not fully qualified; containerd and the CRI need the registry \
             domain, e.g. docker.io/{repository}:{tag}"
        );
    }
    if repository
        .chars()
        .any(|c| c.is_ascii_uppercase() || c.is_whitespace())
    {
        bail!("{reference:?}: repository names are lower case without spaces");
    }
    Ok(())
}

/// "docker.io/rancher/pause:3.6" -> ("docker.io/rancher/pause", "3.6"); a ':' before the last
/// '/' is a registry port, not a tag.
pub fn split_tag(reference: &str) -> Option<(&str, &str)> {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let colon = without_digest[last_slash..].rfind(':')? + last_slash;
    let tag = &without_digest[colon + 1..];
    (!tag.is_empty()).then_some((&without_digest[..colon], tag))
}
