//! Builds small single-layer OCI image archives (for `ctr images import`) from a static binary:
//! the CRI test needs a sandbox image and a busybox image without any registry.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_path(path).unwrap();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    header
}

/// A root filesystem holding static busybox at /bin/busybox with `applets` linked to it.
fn busybox_layer(busybox: &Path, applets: &[&str]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for dir in ["bin/", "dev/", "etc/", "proc/", "sys/", "tmp/"] {
        let h = header(dir, tar::EntryType::Directory, 0o755, 0);
        builder.append(&h, std::io::empty()).unwrap();
    }
    let binary = fs::read(busybox).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): install busybox-static (apt-get install busybox-static)",
            busybox.display()
        )
    });
    let h = header(
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        binary.len() as u64,
    );
    builder.append(&h, binary.as_slice()).unwrap();
    for applet in applets {
        let mut h = header(&format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("busybox").unwrap();
        h.set_cksum();
        builder.append(&h, std::io::empty()).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Writes an OCI archive at `out` whose image is named `reference` and runs `entrypoint`.
pub fn write_busybox_image(out: &Path, reference: &str, entrypoint: &[&str]) {
    let layer = busybox_layer(Path::new("/bin/busybox"), &["sh", "echo", "sleep", "cat"]);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": entrypoint, "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [digest(&layer)] },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(&config), "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest(&layer), "size": layer.len(),
        }],
    }))
    .unwrap();
    let tag = reference.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest), "size": manifest.len(),
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": {
                "io.containerd.image.name": reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))
    .unwrap();

    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        let h = header(path, tar::EntryType::Regular, 0o644, bytes.len() as u64);
        archive.append(&h, bytes).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in [&layer, &config, &manifest] {
        let name = digest(blob).replace("sha256:", "blobs/sha256/");
        add(&name, blob);
    }
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    fs::write(out, archive.into_inner().unwrap()).unwrap();
}
