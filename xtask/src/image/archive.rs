//! The archive every image ends as: an OCI image layout in an uncompressed tar, which
//! `ctr images import` (and skopeo's `oci-archive:`) reads.
//!
//! ```text
//! oci-layout                  {"imageLayoutVersion":"1.0.0"}
//! index.json                  one manifest descriptor, annotated with the image name
//! blobs/sha256/<hex>          manifest, config, layers
//! ```
//!
//! The name annotations follow containerd's own exporter: `io.containerd.image.name` holds the
//! full name ("docker.io/rancher/mirrored-pause:3.6") and is what `ctr images import` names the
//! image; `org.opencontainers.image.ref.name` holds the tag ("3.6"), as the OCI spec intends.
//!
//! The tar is deterministic: fixed entry order, mtime, owner and modes.

use super::blob_store::verify_file;
use super::digest::{canonical_json, sha256_hex};
use crate::tarball::TarWriter;
use anyhow::{Context, Result};
use oci_spec::image::{Descriptor, ImageIndexBuilder, MediaType};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A blob to put into the archive.
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub content: BlobContent,
}

pub enum BlobContent {
    Memory(Vec<u8>),
    /// A file of the blob cache; re-verified while it is copied.
    File(PathBuf),
}

/// The top-level descriptor the archive's index.json points at.
pub struct TopManifest {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// Write the archive to `dest` atomically (a temporary file renamed into place).
pub fn write_oci_archive(
    dest: &Path,
    top: &TopManifest,
    reference: &str,
    blobs: &[Blob],
    mtime: u64,
) -> Result<()> {
    let dir = dest
        .parent()
        .context("archive path has no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut tar = TarWriter::new(std::io::BufWriter::new(tmp.as_file()), mtime);
    let file = |tar: &mut TarWriter<_>, name: &str, bytes: &[u8]| {
        tar.file(name, 0o644, bytes.len() as u64, bytes)
    };
    file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    file(&mut tar, "index.json", &index_json(top, reference)?)?;
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    // Sorted and de-duplicated by digest (two layers may be the same blob).
    let by_digest: BTreeMap<&str, &Blob> = blobs.iter().map(|b| (b.digest.as_str(), b)).collect();
    for (digest, blob) in by_digest {
        let name = format!("blobs/sha256/{}", sha256_hex(digest)?);
        match &blob.content {
            BlobContent::Memory(bytes) => file(&mut tar, &name, bytes)?,
            BlobContent::File(path) => {
                verify_file(path, digest, blob.size)?;
                let data = std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                tar.file(&name, 0o644, blob.size, data)?;
            }
        }
    }
    tar.finish()?.flush()?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest)
        .with_context(|| format!("cannot move the archive into {}", dest.display()))?;
    Ok(())
}

fn index_json(top: &TopManifest, reference: &str) -> Result<Vec<u8>> {
    let tag = super::split_tag(reference).map_or(reference, |(_, tag)| tag);
    let mut descriptor = Descriptor::new(
        MediaType::from(top.media_type.as_str()),
        top.size,
        top.digest.parse::<oci_spec::image::Digest>()?,
    );
    descriptor.set_annotations(Some(HashMap::from([
        (
            "io.containerd.image.name".to_string(),
            reference.to_string(),
        ),
        (
            "org.opencontainers.image.ref.name".to_string(),
            tag.to_string(),
        ),
    ])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor])
        .build()?;
    canonical_json(&index)
}
