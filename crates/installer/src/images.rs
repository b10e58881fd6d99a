//! Images into containerd's CRI namespace (`k8s.io`, where the kubelet's pulls look): the
//! bundle's shipped images, the archives a user drops into k3s's airgap images directory or
//! `DATA_DIR/images` (imported at every start, as k3s's agent does), and `images import` /
//! `images list`.
//!
//! k3s imports its airgap directory itself only when it runs its embedded containerd; with
//! `--container-runtime-endpoint` (ours) it skips it, so the installer does it, with the
//! bundle's `ctr` and the snapshotter CRI unpacks with. Our ctr (containerd v2.1.4's transfer
//! service) detects gzip and zstd by their magic bytes, so `.tar.gz` and `.tar.zst` go to it
//! as they are (tried: a docker-archive and an OCI archive each, plain, gzip and zstd).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use bundle_format::Snapshotter;

use crate::paths::Paths;
use crate::services::containerd::{self, ctr};
use crate::state::State;

/// Where CRI keeps its images.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// k3s's airgap images directory (`$K3S_DATA_DIR/agent/images`, default data dir).
pub const K3S_AIRGAP_DIR: &str = "/var/lib/rancher/k3s/agent/images";

/// The labels k3s puts on what it imports from the airgap directory: CRI's pin keeps the
/// kubelet's image garbage collection away from them, k3s's own marks them as k3s's to unpin.
const PIN_LABELS: [&str; 2] = [
    "io.cri-containerd.pinned=pinned",
    "io.cattle.k3s.pinned=pinned",
];

/// Imports every shipped image (the pause image among them) and checks containerd then holds
/// each under its reference with the bundle's digest.
///
/// None is unpacked at import: CRI unpacks each when a container first uses it, so the import
/// beside k3s's first start is a copy of the archives' blobs, not their decompression into the
/// snapshotter (BENCHMARKS.md, "Where the start goes"). CRI unpacks a missing snapshot for any
/// snapshotter, the sandbox's too (containerd's internal/cri/opts WithNewSnapshot), so what is
/// imported is known from containerd alone.
///
/// An image containerd already holds under its reference with the bundle's digest is not
/// imported again: containerd keeps its images across its restarts, and an import reads the
/// whole archive (traefik's is 52 MB) beside k3s's start, on the same CPUs. An upgrade's new
/// digests, a `crictl rmi` or a data wipe bring the import back.
///
/// `node_ready`, on a new server's first start: traefik's image (52 MB, 40% of the shipped
/// bytes) waits until the node is Ready (a message, or the sender gone), off the CPUs of
/// k3s's own start. Its pod cannot come sooner: only the `helm-install-traefik` job's pod,
/// placed once the node is Ready and run from another image, creates traefik's Deployment.
pub fn import_shipped(
    paths: &Paths,
    node_ready: Option<std::sync::mpsc::Receiver<()>>,
) -> Result<()> {
    let manifest = crate::copy_bundle::installed(paths)?.manifest;
    let held = listed_digests(paths)?;
    let (after_ready, now): (Vec<_>, Vec<_>) = manifest
        .images
        .iter()
        .partition(|image| node_ready.is_some() && image.reference == crate::traefik::IMAGE);
    import_shipped_images(paths, &held, &now)?;
    if let (Some(node_ready), false) = (node_ready, after_ready.is_empty()) {
        // Err: the start ended before the node was Ready; the image is imported all the same.
        let _ = node_ready.recv();
    }
    import_shipped_images(paths, &held, &after_ready)
}

/// `images`, but those containerd holds already (`held`: reference to digest), in one import;
/// then one listing checks that containerd holds each under its reference with the bundle's
/// digest.
///
/// The archives go to one `ctr images import --local` as one OCI image layout
/// ([`merge_layouts`]), which ctr reads itself rather than streaming it to containerd's
/// transfer service: for the six images imported beside k3s's first start, 2.2-3.5 s of ctr's
/// and containerd's CPU against 5.1-6.6 s one archive at a time through the transfer service,
/// in the current gVisor (tests/e2e/bench-imports.sh; BENCHMARKS.md "Where the start goes").
/// The same images, names and labels either way (`ctr images ls` compared). Only the transfer
/// service decompresses, and the bundle's archives are plain tars.
fn import_shipped_images(
    paths: &Paths,
    held: &BTreeMap<String, String>,
    images: &[&bundle_format::ImageRecord],
) -> Result<()> {
    let (kept, wanted): (Vec<&bundle_format::ImageRecord>, Vec<_>) = images
        .iter()
        .partition(|image| held.get(&image.reference) == Some(&image.digest));
    for image in kept {
        println!(
            "image {} already imported ({}), not imported again",
            image.reference, image.name
        );
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let archives: Vec<PathBuf> = wanted
        .iter()
        .map(|image| paths.prefix.join(&image.file))
        .collect();
    let args = import_args(Reader::Ctr, None, &[], "-");
    containerd::ctr_fed(paths, CRI_NAMESPACE, &args, |stdin| {
        merge_layouts(&archives, stdin)
    })
    .with_context(|| {
        format!(
            "importing the bundle's images from {}",
            archives
                .iter()
                .map(|a| a.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let now_held = listed_digests(paths)?;
    for image in wanted {
        let holds = now_held.get(&image.reference);
        if holds != Some(&image.digest) {
            bail!(
                "after importing {}, containerd holds {} {}, not the digest {} the bundle's \
                 manifest gives: the bundle's image archive is not what its manifest says",
                paths.prefix.join(&image.file).display(),
                image.reference,
                holds.map_or("under no digest", String::as_str),
                image.digest
            );
        }
        println!("image {} imported ({})", image.reference, image.name);
    }
    Ok(())
}

/// The OCI image layouts in `archives` (plain tars) written to `out` as one layout: each blob
/// once, and an index.json naming every manifest the archives' own indexes name, with their
/// annotations (the image names).
fn merge_layouts(archives: &[PathBuf], out: impl std::io::Write) -> Result<()> {
    let mut merged = tar::Builder::new(out);
    let mut blobs = BTreeSet::new();
    let mut manifests = Vec::new();
    for archive in archives {
        let unreadable = || format!("cannot read the image archive {}", archive.display());
        let file = fs::File::open(archive).with_context(unreadable)?;
        let mut tar = tar::Archive::new(file);
        let mut indexed = false;
        for entry in tar.entries().with_context(unreadable)? {
            let mut entry = entry.with_context(unreadable)?;
            let path = entry.path().with_context(unreadable)?;
            let path = path.to_string_lossy();
            let path = path.trim_start_matches("./").to_string();
            if path == "index.json" {
                let index: serde_json::Value =
                    serde_json::from_reader(&mut entry).with_context(unreadable)?;
                let listed = index["manifests"].as_array().cloned().unwrap_or_default();
                manifests.extend(listed);
                indexed = true;
            } else if path.starts_with("blobs/")
                && entry.header().entry_type().is_file()
                && blobs.insert(path.clone())
            {
                let mut header = entry.header().clone();
                merged.append_data(&mut header, &path, &mut entry)?;
            }
            // Else oci-layout (written once below), directories, a blob already written.
        }
        if !indexed {
            bail!(
                "the image archive {} is not an OCI image layout: it has no index.json",
                archive.display()
            );
        }
    }
    let layout = serde_json::json!({"imageLayoutVersion": "1.0.0"});
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    for (name, json) in [("oci-layout", layout), ("index.json", index)] {
        let bytes = serde_json::to_vec(&json)?;
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        merged.append_data(&mut header, name, bytes.as_slice())?;
    }
    merged.into_inner()?.flush()?;
    Ok(())
}

/// What a file in an images directory is to us.
#[derive(Debug, PartialEq)]
enum Kind {
    Archive,
    /// A kind k3s takes that our containerd cannot: why, and what to do.
    Unsupported(&'static str),
    /// Not an image file: ignored, as k3s ignores it.
    Other,
}

fn classify(file: &Path) -> Kind {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let ends = |suffixes: &[&str]| suffixes.iter().any(|s| name.ends_with(s));
    if ends(&[".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"]) {
        Kind::Archive
    } else if ends(&[".tar.lz4", ".tar.bz2", ".tbz"]) {
        Kind::Unsupported(
            "lz4 and bzip2 archives need k3s's own decompression; our containerd's import \
             reads tar, gzip and zstd: decompress it, or recompress it with zstd (.tar.zst)",
        )
    } else if name.ends_with(".txt") {
        Kind::Unsupported(
            "k3s pre-pulls the images a .txt lists through its embedded CRI client; the \
             installer does not: the kubelet pulls each image when a pod needs it",
        )
    } else {
        Kind::Other
    }
}

/// Image files under `dir` and its subdirectories (k3s watches them recursively), hidden
/// files skipped (k3s's own cache file is `.cache.json`), in name order.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() && classify(&path) != Kind::Other {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Marks the images of one import, so they can be listed afterwards: ctr's progress output
/// cannot be read for them (it cuts names at 40 characters and redraws with escape codes), and
/// a re-import replaces an existing image's labels, so the mark is on every image the archive
/// holds, new or not.
const IMPORT_LABEL: &str = "io.k3s-gvisor.import";

/// `ctr images import` of one archive into k8s.io with `labels`, unpacked with `unpack`'s
/// snapshotter or (None) left for CRI to unpack when a container first uses it (its
/// WithNewSnapshot unpacks an image whose snapshot is missing); returns the images it holds.
fn import_archive(
    paths: &Paths,
    unpack: Option<Snapshotter>,
    file: &Path,
    labels: &[&str],
) -> Result<Vec<String>> {
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mark = format!("{}-{nanos}", std::process::id());
    let mark_label = format!("{IMPORT_LABEL}={mark}");
    let file_text = file.display().to_string();
    let labels: Vec<&str> = labels
        .iter()
        .copied()
        .chain([mark_label.as_str()])
        .collect();
    let args = import_args(Reader::Containerd, unpack, &labels, &file_text);
    ctr(paths, CRI_NAMESPACE, &args).map_err(|error| {
        let text = error.to_string();
        let why = text
            .split_once(" failed: ")
            .map_or(text.as_str(), |(_, why)| why);
        anyhow::anyhow!(
            "not a docker-archive or OCI archive containerd can read ({})",
            why.replace('\n', " ")
        )
    })?;
    let filter = format!("labels.\"{IMPORT_LABEL}\"=={mark}");
    let listed = ctr(paths, CRI_NAMESPACE, &["images", "ls", "-q", &filter])?;
    Ok(named(&listed).into_iter().collect())
}

/// Who reads an archive `ctr images import` is given.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// ctr itself (`--local`): cheaper, but plain tars only (the bundle's own archives).
    Ctr,
    /// containerd's transfer service, which also decompresses gzip and zstd (users' archives).
    Containerd,
}

/// `ctr images import`'s arguments.
fn import_args<'a>(
    reader: Reader,
    unpack: Option<Snapshotter>,
    labels: &[&'a str],
    file: &'a str,
) -> Vec<&'a str> {
    let mut args = vec!["images", "import"];
    if let Reader::Ctr = reader {
        args.push("--local");
    }
    match unpack {
        Some(snapshotter) => args.extend(["--snapshotter", snapshotter.as_str()]),
        None => args.push("--no-unpack"),
    }
    for &label in labels {
        args.extend(["--label", label]);
    }
    args.push(file);
    args
}

/// Image names from `ctr images ls -q`, without the digest-only and `NAME@sha256:` entries
/// (what `crictl images` shows as repo digests).
fn named(listed: &str) -> BTreeSet<String> {
    listed
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.starts_with("sha256:") && !name.contains('@'))
        .map(str::to_string)
        .collect()
}

/// Each named image CRI's namespace holds, with its digest.
fn listed_digests(paths: &Paths) -> Result<BTreeMap<String, String>> {
    let listing = ctr(paths, CRI_NAMESPACE, &["images", "ls"])?;
    Ok(parse_listing(&listing)
        .into_iter()
        .map(|row| (row.name, row.digest))
        .collect())
}

/// The image names CRI's namespace holds.
fn image_names(paths: &Paths) -> Result<BTreeSet<String>> {
    Ok(named(&ctr(paths, CRI_NAMESPACE, &["images", "ls", "-q"])?))
}

/// What an airgap archive gave at its last import, and how it looked then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Imported {
    size: u64,
    mtime_secs: u64,
    mtime_nanos: u32,
    images: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    archives: BTreeMap<PathBuf, Imported>,
}

fn stat(file: &Path) -> Option<(u64, u64, u32)> {
    let meta = fs::metadata(file).ok()?;
    let since = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((meta.len(), since.as_secs(), since.subsec_nanos()))
}

fn load_record(file: &Path) -> Record {
    fs::read_to_string(file)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// At every start, after containerd is up and before k3s: imports the archives in k3s's
/// airgap directory and `DATA_DIR/images`, pinned as k3s pins them. Never fails the start: a
/// broken archive is reported by name and skipped.
///
/// Unlike k3s (which re-imports every archive at every start unless its images dir holds a
/// `.cache.json` the user created), an archive whose size and modification time are as at its
/// last import, and whose images are all still there, is not imported again: an import reads
/// and decompresses the whole archive, which on a sandbox's 9p root costs seconds per
/// hundred MB at every start. Hashing the file to be sure would read it all just the same, so
/// the record is k3s's own test (size and mtime, its `.cache.json`), plus the images' presence
/// so a data wipe or `crictl rmi` brings them back. An archive that left the directories gets
/// its images unpinned (k3s drops every pin at start and pins again what it imports).
pub fn import_airgap(paths: &Paths, snapshotter: Snapshotter) {
    import_airgap_from(
        paths,
        snapshotter,
        &[Path::new(K3S_AIRGAP_DIR), &paths.airgap_images_dir()],
    );
}

fn import_airgap_from(paths: &Paths, snapshotter: Snapshotter, dirs: &[&Path]) {
    let record_file = paths.images_record();
    let old = load_record(&record_file);
    let mut new = Record::default();
    let mut present = image_names(paths).unwrap_or_default();
    for dir in dirs {
        for file in files_under(dir) {
            if let Kind::Unsupported(why) = classify(&file) {
                println!("images: skipped {}: {why}", file.display());
                continue;
            }
            let Some((size, mtime_secs, mtime_nanos)) = stat(&file) else {
                continue;
            };
            if let Some(before) = old.archives.get(&file) {
                let unchanged = (before.size, before.mtime_secs, before.mtime_nanos)
                    == (size, mtime_secs, mtime_nanos);
                if unchanged && before.images.iter().all(|i| present.contains(i)) {
                    println!(
                        "images: {} unchanged since its import ({}), not imported again",
                        file.display(),
                        before.images.join(", ")
                    );
                    new.archives.insert(file, before.clone());
                    continue;
                }
            }
            match import_archive(paths, Some(snapshotter), &file, &PIN_LABELS) {
                Ok(images) => {
                    println!(
                        "images: imported {}: {}",
                        file.display(),
                        if images.is_empty() {
                            "no named image".to_string()
                        } else {
                            images.join(", ")
                        }
                    );
                    present.extend(images.iter().cloned());
                    new.archives.insert(
                        file,
                        Imported {
                            size,
                            mtime_secs,
                            mtime_nanos,
                            images,
                        },
                    );
                }
                Err(error) => println!(
                    "images: skipped broken archive {}: {}",
                    file.display(),
                    error.to_string().replace('\n', " ")
                ),
            }
        }
    }
    unpin_gone(paths, &old, &new);
    if old.archives.is_empty() && new.archives.is_empty() {
        return;
    }
    match serde_json::to_string_pretty(&new) {
        Ok(text) => {
            if let Err(error) = fs::write(&record_file, text) {
                println!("images: cannot write {}: {error}", record_file.display());
            }
        }
        Err(error) => println!("images: cannot record imports: {error}"),
    }
}

/// Images of archives that are gone (and not given by another archive) lose their pins.
fn unpin_gone(paths: &Paths, old: &Record, new: &Record) {
    let kept: BTreeSet<&String> = new.archives.values().flat_map(|i| &i.images).collect();
    for (file, imported) in &old.archives {
        if new.archives.contains_key(file) {
            continue;
        }
        let gone: Vec<&String> = imported
            .images
            .iter()
            .filter(|i| !kept.contains(i))
            .collect();
        for image in &gone {
            let _ = ctr(
                paths,
                CRI_NAMESPACE,
                &[
                    "images",
                    "label",
                    image,
                    "io.cri-containerd.pinned=",
                    "io.cattle.k3s.pinned=",
                ],
            );
        }
        if !gone.is_empty() {
            println!(
                "images: {} is no longer there: {} unpinned (the kubelet may now remove them \
                 when unused)",
                file.display(),
                gone.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}

/// containerd must run for `images import` and `images list` (k3s's `k3s ctr` needs its
/// k3s running too).
fn require_containerd(state: &State, paths: &Paths) -> Result<()> {
    if state.control_plane_only {
        bail!(
            "this is a control-plane-only server: it runs no containerd and no pods; import \
             images on the nodes that run pods"
        );
    }
    if !containerd::healthy(paths) {
        bail!(
            "containerd is not running (no socket at {}): run `{} start --data-dir {}` first",
            paths.containerd_socket().display(),
            paths.bin("installer").display(),
            paths.data_dir.display()
        );
    }
    Ok(())
}

/// `images import FILE...`: each archive (docker-archive or OCI, plain, gzip or zstd) into
/// CRI's namespace, as `k3d image import` or `kind load image-archive` do; not pinned (as
/// there). Every file is tried; an error names each that failed.
pub fn import(state: &State, files: &[PathBuf]) -> Result<()> {
    let paths = state.paths();
    require_containerd(state, &paths)?;
    let mut failed = Vec::new();
    for file in files {
        let result = if !file.is_file() {
            Err(anyhow::anyhow!("no such file"))
        } else if let Kind::Unsupported(why) = classify(file) {
            Err(anyhow::anyhow!("{why}"))
        } else {
            import_archive(&paths, Some(state.snapshotter), file, &[])
        };
        match result {
            Ok(images) if images.is_empty() => {
                println!("imported {}: no named image in it", file.display())
            }
            Ok(images) => println!("imported {}: {}", file.display(), images.join(", ")),
            Err(error) => {
                println!("cannot import {}: {error:#}", file.display());
                failed.push(file.display().to_string());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} archive(s) not imported: {}",
            failed.len(),
            files.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// One row of `ctr images ls`: REF TYPE DIGEST SIZE(2 words) PLATFORMS LABELS.
#[derive(Debug, PartialEq)]
struct Listed {
    name: String,
    digest: String,
    size: String,
    pinned: bool,
}

fn parse_listing(text: &str) -> Vec<Listed> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 7 || words[0].starts_with("sha256:") || words[0].contains('@') {
                return None;
            }
            Some(Listed {
                name: words[0].to_string(),
                digest: words[2].to_string(),
                size: format!("{} {}", words[3], words[4]),
                pinned: words[6].contains("io.cri-containerd.pinned=pinned"),
            })
        })
        .collect()
}

/// `images list`: the images CRI has (what `crictl images` shows), with size and whether the
/// kubelet's garbage collection leaves them alone (pinned: the pause image, airgap imports).
pub fn list(state: &State) -> Result<()> {
    let paths = state.paths();
    require_containerd(state, &paths)?;
    let rows = parse_listing(&ctr(&paths, CRI_NAMESPACE, &["images", "ls"])?);
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    println!("{:width$}  {:>10}  PINNED", "IMAGE", "SIZE");
    for row in rows {
        println!(
            "{:width$}  {:>10}  {}",
            row.name,
            row.size,
            if row.pinned { "yes" } else { "" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_recognised_by_their_names_as_k3s_does() {
        for name in ["a.tar", "b.TAR.GZ", "c.tgz", "d.tar.zst", "e.tzst"] {
            assert_eq!(classify(Path::new(name)), Kind::Archive, "{name}");
        }
        for name in ["a.tar.lz4", "b.tar.bz2", "c.tbz", "list.txt"] {
            assert!(
                matches!(classify(Path::new(name)), Kind::Unsupported(_)),
                "{name}"
            );
        }
        for name in ["README", "a.json", "a.tar.xz"] {
            assert_eq!(classify(Path::new(name)), Kind::Other, "{name}");
        }
    }

    #[test]
    fn files_are_found_recursively_without_hidden_ones() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        fs::create_dir_all(dir.join("sub")).unwrap();
        for name in [
            "b.tar",
            "sub/a.tar.zst",
            ".cache.json",
            ".hidden.tar",
            "notes.md",
        ] {
            fs::write(dir.join(name), "x").unwrap();
        }
        assert_eq!(
            files_under(dir),
            [dir.join("b.tar"), dir.join("sub/a.tar.zst")]
        );
        assert!(files_under(&dir.join("missing")).is_empty());
    }

    #[test]
    fn ctr_listing_rows_are_read() {
        // `ctr -n k8s.io images ls` from containerd v2.1.4.
        let text = "REF                     TYPE                                       DIGEST                                                                  SIZE     PLATFORMS   LABELS\n\
docker.io/library/t1:a  application/vnd.oci.image.manifest.v1+json sha256:2b14a3afdbc15e6887447b5285dedd39484059e9bd776381cdaf8da283c7f7f4 10.6 KiB linux/amd64 io.cri-containerd.image=managed,io.cri-containerd.pinned=pinned\n\
sha256:b04fc79ddf2d90d5 application/vnd.oci.image.manifest.v1+json sha256:2b14a3afdbc15e6887447b5285dedd39484059e9bd776381cdaf8da283c7f7f4 10.6 KiB linux/amd64 io.cri-containerd.image=managed\n\
docker.io/library/t2:b  application/vnd.oci.image.manifest.v1+json sha256:2b14a3afdbc15e6887447b5285dedd39484059e9bd776381cdaf8da283c7f7f4 1.2 MiB linux/amd64 -\n";
        assert_eq!(
            parse_listing(text),
            [
                Listed {
                    name: "docker.io/library/t1:a".into(),
                    digest:
                        "sha256:2b14a3afdbc15e6887447b5285dedd39484059e9bd776381cdaf8da283c7f7f4"
                            .into(),
                    size: "10.6 KiB".into(),
                    pinned: true
                },
                Listed {
                    name: "docker.io/library/t2:b".into(),
                    digest:
                        "sha256:2b14a3afdbc15e6887447b5285dedd39484059e9bd776381cdaf8da283c7f7f4"
                            .into(),
                    size: "1.2 MiB".into(),
                    pinned: false
                },
            ]
        );
    }

    #[test]
    fn an_image_left_for_cri_to_unpack_is_imported_with_no_unpack() {
        assert_eq!(
            import_args(
                Reader::Containerd,
                Some(Snapshotter::Native),
                &["a=b", "m=1"],
                "x.tar"
            ),
            [
                "images",
                "import",
                "--snapshotter",
                "native",
                "--label",
                "a=b",
                "--label",
                "m=1",
                "x.tar"
            ]
        );
        assert_eq!(
            import_args(Reader::Containerd, None, &["m=1"], "x.tar"),
            ["images", "import", "--no-unpack", "--label", "m=1", "x.tar"]
        );
    }

    /// An OCI layout archive at `path` with `blobs` and an index naming `image`.
    fn layout_archive(path: &Path, image: &str, blobs: &[(&str, &[u8])]) {
        let mut tar = tar::Builder::new(fs::File::create(path).unwrap());
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", blobs[0].0), "size": blobs[0].1.len(),
            "annotations": {"io.containerd.image.name": image}}]});
        let index = serde_json::to_vec(&index).unwrap();
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        let mut entries: Vec<(String, &[u8])> =
            vec![("oci-layout".into(), layout), ("index.json".into(), &index)];
        entries.extend(
            blobs
                .iter()
                .map(|(hex, bytes)| (format!("blobs/sha256/{hex}"), *bytes)),
        );
        for (name, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, bytes).unwrap();
        }
        tar.finish().unwrap();
    }

    #[test]
    fn archives_merge_into_one_layout_with_each_blob_once_and_every_image_named() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        layout_archive(
            &a,
            "docker.io/x/a:1",
            &[("aa", b"manifest a"), ("cc", b"shared")],
        );
        layout_archive(
            &b,
            "docker.io/x/b:1",
            &[("bb", b"manifest b"), ("cc", b"shared")],
        );
        let mut merged = Vec::new();
        merge_layouts(&[a, b], &mut merged).unwrap();

        let mut files = BTreeMap::new();
        for entry in tar::Archive::new(merged.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            assert!(files.insert(name.clone(), bytes).is_none(), "{name} twice");
        }
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            [
                "blobs/sha256/aa",
                "blobs/sha256/bb",
                "blobs/sha256/cc",
                "index.json",
                "oci-layout"
            ]
        );
        assert_eq!(files["blobs/sha256/cc"], b"shared");
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let names: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(names, ["docker.io/x/a:1", "docker.io/x/b:1"]);
        assert_eq!(index["manifests"][1]["digest"], "sha256:bb");
    }

    #[test]
    fn an_archive_without_an_index_is_named_as_no_oci_layout() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker.tar");
        let mut tar = tar::Builder::new(fs::File::create(&docker).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        tar.append_data(&mut header, "manifest.json", &b"[]"[..])
            .unwrap();
        tar.finish().unwrap();
        drop(tar);
        let error = merge_layouts(std::slice::from_ref(&docker), std::io::sink()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the image archive {} is not an OCI image layout: it has no index.json",
                docker.display()
            )
        );
    }

    #[test]
    fn the_bundles_plain_archives_are_read_by_ctr_itself() {
        assert_eq!(
            import_args(Reader::Ctr, None, &[], "x.tar"),
            ["images", "import", "--local", "--no-unpack", "x.tar"]
        );
    }
}
