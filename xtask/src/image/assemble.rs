//! The `build` source: an image made of files we have, in one deterministic layer.
//!
//! Determinism is what makes the pause image's digest a fixed fact of the bundle: entries are
//! sorted, every mtime is SOURCE_DATE_EPOCH, owners are 0:0, modes come from bundle.toml (not from
//! the build machine), gzip carries no timestamp or file name, and JSON keys are sorted.

use super::archive::{write_oci_archive, Blob, BlobContent, TopManifest};
use super::digest::{canonical_json, sha256_digest};
use super::{BuildSource, FileOrigin, ImageContext};
use anyhow::{bail, Context, Result};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageManifestBuilder, MediaType,
    Os, RootFsBuilder,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The platform written into the image config.
pub struct Platform {
    pub os: Os,
    pub architecture: Arch,
}

impl Platform {
    #[cfg(test)]
    pub fn linux_amd64() -> Self {
        Self::linux(bundle_format::Arch::Amd64)
    }

    /// `linux/<arch>`: what the image config says, for a bundle of `arch`.
    pub fn linux(arch: bundle_format::Arch) -> Self {
        Platform {
            os: Os::Linux,
            architecture: match arch {
                bundle_format::Arch::Amd64 => Arch::Amd64,
                bundle_format::Arch::Arm64 => Arch::ARM64,
            },
        }
    }
}

/// An assembled image, held in memory (our images are a few MiB at most).
pub struct AssembledImage {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    /// The gzip-compressed layer.
    pub layer: Vec<u8>,
}

impl AssembledImage {
    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    pub fn blobs(&self) -> Vec<Blob> {
        [&self.manifest, &self.config, &self.layer]
            .into_iter()
            .map(|bytes| Blob {
                digest: sha256_digest(bytes),
                size: bytes.len() as u64,
                content: BlobContent::Memory(bytes.clone()),
            })
            .collect()
    }

    pub fn top_manifest(&self) -> TopManifest {
        TopManifest {
            media_type: MediaType::ImageManifest.to_string(),
            digest: self.manifest_digest(),
            size: self.manifest.len() as u64,
        }
    }

    pub fn write_archive(&self, dest: &Path, reference: &str, mtime: u64) -> Result<()> {
        write_oci_archive(dest, &self.top_manifest(), reference, &self.blobs(), mtime)
    }
}

/// What goes into the layer, keyed by path relative to the image root ("bin/busybox").
enum Entry {
    Dir,
    File { bytes: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

pub fn assemble(
    build: &BuildSource,
    ctx: &ImageContext,
    platform: &Platform,
) -> Result<AssembledImage> {
    let entries = collect_entries(build, ctx)?;
    let layer_tar = layer_tar(&entries, ctx.source_date_epoch)?;
    let diff_id = sha256_digest(&layer_tar);
    let layer = gzip(&layer_tar)?;

    let mut runtime = ConfigBuilder::default()
        .entrypoint(build.entrypoint.clone())
        .env(build.env.clone());
    if !build.cmd.is_empty() {
        runtime = runtime.cmd(build.cmd.clone());
    }
    if let Some(dir) = &build.working_dir {
        runtime = runtime.working_dir(dir.clone());
    }
    if let Some(user) = &build.user {
        runtime = runtime.user(user.clone());
    }
    let config = ImageConfigurationBuilder::default()
        .architecture(platform.architecture.clone())
        .os(platform.os.clone())
        .config(runtime.build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id])
                .build()?,
        )
        .build()?;
    let config = canonical_json(&config)?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config)?)
        .layers(vec![descriptor(MediaType::ImageLayerGzip, &layer)?])
        .build()?;
    let manifest = canonical_json(&manifest)?;
    Ok(AssembledImage {
        manifest,
        config,
        layer,
    })
}

fn descriptor(media_type: MediaType, bytes: &[u8]) -> Result<Descriptor> {
    Ok(Descriptor::new(
        media_type,
        bytes.len() as u64,
        sha256_digest(bytes).parse::<oci_spec::image::Digest>()?,
    ))
}

/// "/bin/sh" -> "bin/sh", refusing paths that would escape the image root or are ambiguous.
fn relative_path(path: &str) -> Result<String> {
    let Some(rel) = path.strip_prefix('/') else {
        bail!("image path {path:?} must be absolute (start with '/')");
    };
    if rel.is_empty()
        || rel.ends_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        bail!("image path {path:?} must be a plain absolute path to a file, without '.', '..' or '//'");
    }
    Ok(rel.to_string())
}

fn collect_entries(build: &BuildSource, ctx: &ImageContext) -> Result<BTreeMap<String, Entry>> {
    let mut entries = BTreeMap::new();
    let mut add = |rel: String, entry: Entry| -> Result<()> {
        // Every parent directory gets its own entry, so the layer does not depend on how a
        // runtime creates missing parents.
        let mut parent = String::new();
        for component in rel.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            parent.push_str(component);
            entries.entry(format!("{parent}/")).or_insert(Entry::Dir);
            parent.push('/');
        }
        if entries.insert(rel.clone(), entry).is_some() {
            bail!("/{rel} is listed twice in the image's files and symlinks");
        }
        Ok(())
    };
    for file in &build.files {
        let rel = relative_path(&file.path)?;
        let from = file
            .from
            .for_arch(ctx.arch)
            .with_context(|| file.path.clone())?;
        let source = match from {
            FileOrigin::Built(name) => ctx.built.get(name).cloned().with_context(|| {
                format!(
                    "{}: no binary named `{name}` was built; known: {}",
                    file.path,
                    ctx.built.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?,
            FileOrigin::Host(host) => host.path.clone(),
            FileOrigin::Repo(path) => repo_file(&ctx.repo, path)?,
            FileOrigin::ByArch(_) => unreachable!("for_arch resolves by-arch"),
        };
        let bytes = read_input(&source, from)?;
        if let FileOrigin::Host(host) = from {
            let actual = crate::digest::sha256_bytes(&bytes);
            if actual != host.sha256 {
                bail!(
                    "{} has sha256 {actual}, but bundle.toml pins {} ({}): install exactly \
                     that package (scripts/install-deps.sh does), or re-pin after checking what \
                     changed",
                    host.path.display(),
                    host.sha256,
                    host.package
                );
            }
        }
        if file.mode > 0o7777 {
            bail!(
                "mode {:o} of {} is not a permission mode",
                file.mode,
                file.path
            );
        }
        add(
            rel,
            Entry::File {
                bytes,
                mode: file.mode,
            },
        )?;
    }
    for (path, target) in &build.symlinks {
        if target.is_empty() {
            bail!("symlink {path} has an empty target");
        }
        add(
            relative_path(path)?,
            Entry::Symlink {
                target: target.clone(),
            },
        )?;
    }
    check_interpreters(&entries)?;
    Ok(entries)
}

fn read_input(source: &Path, origin: &FileOrigin) -> Result<Vec<u8>> {
    std::fs::read(source).with_context(|| match origin {
        FileOrigin::Built(name) => format!(
            "cannot read {} (the built binary `{name}`): run `cargo xtask bundle`",
            source.display()
        ),
        FileOrigin::Host(host) => format!(
            "cannot read {} (a `from = {{ host = ... }}` file): install {} \
             (scripts/install-deps.sh does)",
            source.display(),
            host.package
        ),
        FileOrigin::Repo(path) => format!(
            "cannot read {} (a `from = {{ repo = {:?} }}` file of this repository)",
            source.display(),
            path.display()
        ),
        FileOrigin::ByArch(_) => format!("cannot read {}", source.display()),
    })
}

/// `repo`/`path`, for a relative path that stays inside the repository.
pub fn repo_file(repo: &Path, path: &Path) -> Result<std::path::PathBuf> {
    use std::path::Component;
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!(
            "`from = {{ repo = {:?} }}` must be a path inside the repository, relative to its \
             root (e.g. images/klipper-helm/entry)",
            path.display()
        );
    }
    Ok(repo.join(path))
}

/// A dynamically linked binary in an image without its loader fails at run time with a bare
/// "no such file or directory"; catch it here instead.
fn check_interpreters(entries: &BTreeMap<String, Entry>) -> Result<()> {
    for (rel, entry) in entries {
        let Entry::File { bytes, .. } = entry else {
            continue;
        };
        if let Ok(Some(interpreter)) = crate::elf::interpreter(bytes) {
            let in_image = interpreter
                .strip_prefix('/')
                .is_some_and(|p| entries.contains_key(p));
            if !in_image {
                bail!(
                    "/{rel} is dynamically linked (it needs {interpreter}), but the image does not \
                     contain it; use a statically linked binary (Rust: RUSTFLAGS=\"-C \
                     target-feature=+crt-static\"; Debian: busybox-static)"
                );
            }
        }
    }
    Ok(())
}

fn layer_tar(entries: &BTreeMap<String, Entry>, mtime: u64) -> Result<Vec<u8>> {
    let mut tar = crate::tarball::TarWriter::new(Vec::new(), mtime);
    for (rel, entry) in entries {
        match entry {
            Entry::Dir => tar.dir(rel)?,
            Entry::File { bytes, mode } => {
                tar.file(rel, *mode, bytes.len() as u64, bytes.as_slice())?
            }
            Entry::Symlink { target } => tar.symlink(rel, target)?,
        }
    }
    tar.finish()
}

/// gzip with no mtime, no file name and a fixed OS byte, at a fixed level.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}
