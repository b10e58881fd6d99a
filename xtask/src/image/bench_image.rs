//! A large multi-layer image for `cargo xtask bench --images` (issue 27, "Real images"): the
//! bundle's busybox image (its layers as they are, so `sleep` runs) with N more layers of
//! deterministic pseudo-random data on top, written as the same OCI archive as every other
//! image (`archive`), for `./install images import`. No network: nothing is pulled.
//!
//! The data layers are uncompressed tars (`application/vnd.oci.image.layer.v1.tar`): random
//! data does not compress, and a snapshotter unpacks the same bytes either way. Each layer
//! holds `data/<layer>/<file>.bin` files of at most 10 MiB from an xorshift generator seeded by
//! the layer's number, so the same arguments always give the same bytes and digests.

use super::archive::{write_oci_archive, Blob, BlobContent, TopManifest};
use super::digest::sha256_digest;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

const FILE_BYTES: u64 = 10 << 20;

/// The image's shape: data layers on top of the base, and the bytes in each.
pub struct BenchImage {
    pub layers: u32,
    pub layer_bytes: u64,
}

/// The entries of an OCI archive (as `archive` writes them: small, read into memory).
fn read_archive(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut entries = BTreeMap::new();
    for entry in tar::Archive::new(file).entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        entries.insert(name, bytes);
    }
    Ok(entries)
}

fn blob<'a>(entries: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> Result<&'a [u8]> {
    let hex = super::digest::sha256_hex(digest)?;
    entries
        .get(&format!("blobs/sha256/{hex}"))
        .map(Vec::as_slice)
        .with_context(|| format!("the base archive lacks blob {digest}"))
}

/// Fills `out` from an xorshift64* generator.
fn fill(out: &mut [u8], state: &mut u64) {
    for chunk in out.chunks_mut(8) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// The tar of data layer `n` (0-based): `data/<n>/<i>.bin` files, `bytes` in all.
fn data_layer(n: u32, bytes: u64, mtime: u64) -> Result<Vec<u8>> {
    let mut tar =
        crate::tarball::TarWriter::new(Vec::with_capacity(bytes as usize + (1 << 20)), mtime);
    tar.dir("data/")?;
    tar.dir(&format!("data/{n}/"))?;
    let mut state =
        0x9e37_79b9_7f4a_7c15u64 ^ (u64::from(n) + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut left = bytes;
    let mut i = 0;
    let mut buf = vec![0u8; FILE_BYTES as usize];
    while left > 0 {
        let size = left.min(FILE_BYTES) as usize;
        fill(&mut buf[..size], &mut state);
        tar.file(
            &format!("data/{n}/{i:03}.bin"),
            0o644,
            size as u64,
            &buf[..size],
        )?;
        left -= size as u64;
        i += 1;
    }
    tar.finish()
}

/// Writes the image to `dest`, named `reference`, on top of the image in the OCI archive
/// `base` (one manifest, as the bundle's images are).
pub fn write(
    base: &Path,
    shape: &BenchImage,
    dest: &Path,
    reference: &str,
    mtime: u64,
) -> Result<()> {
    let entries = read_archive(base)?;
    let index: Value = serde_json::from_slice(
        entries
            .get("index.json")
            .context("the base archive has no index.json")?,
    )?;
    let Some(top) = index["manifests"][0]["digest"].as_str() else {
        bail!("{}: index.json names no manifest", base.display());
    };
    let mut manifest: Value = serde_json::from_slice(blob(&entries, top)?)?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .context("manifest without config")?;
    let mut config: Value = serde_json::from_slice(blob(&entries, config_digest)?)?;

    let mut blobs = Vec::new();
    let mut layers = manifest["layers"]
        .as_array()
        .context("manifest without layers")?
        .clone();
    for layer in &layers {
        let digest = layer["digest"].as_str().context("layer without digest")?;
        blobs.push(Blob {
            digest: digest.to_string(),
            size: layer["size"].as_u64().context("layer without size")?,
            content: BlobContent::Memory(blob(&entries, digest)?.to_vec()),
        });
    }
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array_mut()
        .context("config without diff_ids")?;
    for n in 0..shape.layers {
        let tar = data_layer(n, shape.layer_bytes, mtime)?;
        let digest = sha256_digest(&tar);
        // Uncompressed: the layer's digest is its diff_id.
        diff_ids.push(json!(digest));
        layers.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest,
            "size": tar.len(),
        }));
        blobs.push(Blob {
            digest,
            size: tar.len() as u64,
            content: BlobContent::Memory(tar),
        });
    }
    let config = serde_json::to_vec(&config)?;
    manifest["config"]["digest"] = json!(sha256_digest(&config));
    manifest["config"]["size"] = json!(config.len());
    manifest["layers"] = Value::Array(layers);
    let manifest = serde_json::to_vec(&manifest)?;
    let top = TopManifest {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: sha256_digest(&manifest),
        size: manifest.len() as u64,
    };
    for bytes in [config, manifest] {
        blobs.push(Blob {
            digest: sha256_digest(&bytes),
            size: bytes.len() as u64,
            content: BlobContent::Memory(bytes),
        });
    }
    write_oci_archive(dest, &top, reference, &blobs, mtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_layers_are_deterministic_and_differ_per_layer() {
        let a = data_layer(0, FILE_BYTES + 100, 1).unwrap();
        assert_eq!(a, data_layer(0, FILE_BYTES + 100, 1).unwrap());
        assert_ne!(
            sha256_digest(&a),
            sha256_digest(&data_layer(1, FILE_BYTES + 100, 1).unwrap())
        );
        let names: Vec<String> = tar::Archive::new(a.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["data/", "data/0/", "data/0/000.bin", "data/0/001.bin"]
        );
    }

    #[test]
    fn the_image_is_the_base_with_data_layers_on_top() {
        let dir = tempfile::tempdir().unwrap();
        // A base as `archive` writes it: one gzip-less layer, its config, its manifest.
        let layer = crate::tarball::TarWriter::new(Vec::new(), 1)
            .finish()
            .unwrap();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": sha256_digest(&layer), "size": layer.len()}],
        }))
        .unwrap();
        let top = TopManifest {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: sha256_digest(&manifest),
            size: manifest.len() as u64,
        };
        let blobs: Vec<Blob> = [layer, config, manifest]
            .into_iter()
            .map(|b| Blob {
                digest: sha256_digest(&b),
                size: b.len() as u64,
                content: BlobContent::Memory(b),
            })
            .collect();
        let base = dir.path().join("base.oci.tar");
        write_oci_archive(&base, &top, "docker.io/x/base:1", &blobs, 1).unwrap();

        let dest = dir.path().join("big.oci.tar");
        let shape = BenchImage {
            layers: 2,
            layer_bytes: 3000,
        };
        write(&base, &shape, &dest, "docker.io/x/big:1", 1).unwrap();
        let entries = read_archive(&dest).unwrap();
        let index: Value = serde_json::from_slice(&entries["index.json"]).unwrap();
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"],
            "docker.io/x/big:1"
        );
        let manifest: Value = serde_json::from_slice(
            blob(&entries, index["manifests"][0]["digest"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        let config: Value = serde_json::from_slice(
            blob(&entries, manifest["config"]["digest"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!((layers.len(), diff_ids.len()), (3, 3));
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let bytes = blob(&entries, layer["digest"].as_str().unwrap()).unwrap();
            assert_eq!(layer["size"].as_u64().unwrap(), bytes.len() as u64);
            assert_eq!(diff_id, &json!(sha256_digest(bytes)));
        }
        // Same arguments, same bytes.
        let again = dir.path().join("again.oci.tar");
        write(&base, &shape, &again, "docker.io/x/big:1", 1).unwrap();
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }
}
