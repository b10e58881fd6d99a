//! Tests of the image stage. The first group needs nothing but the build machine; the second
//! drives real tools (docker-registry, skopeo, containerd) through `harness`.

mod harness;
mod token_server;

use super::archive::{write_oci_archive, Blob, BlobContent, TopManifest};
use super::assemble::{assemble, Platform};
use super::blob_store::BlobStore;
use super::digest::{canonical_json, sha256_digest};
use super::*;
use bundle_format::Snapshotter;
use harness::{static_pause_binary, Containerd, Registry};
use oci_spec::image::{Arch, Os};
use std::io::Read;
use std::path::Path;

const EPOCH: u64 = 1_759_276_800;

#[derive(Deserialize)]
struct Fixture {
    image: Vec<ImageSpec>,
}

/// The `[[image]]` tables of tests/images/images.toml.
fn fixture_specs() -> Vec<ImageSpec> {
    let path = harness::repo_root().join("tests/images/images.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str::<Fixture>(&text).unwrap().image
}

fn fixture(name: &str) -> ImageSpec {
    fixture_specs()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
}

fn context(dir: &Path, pause_binary: PathBuf) -> ImageContext {
    ImageContext {
        cache_dir: dir.join("cache"),
        out_dir: dir.join("out"),
        source_date_epoch: EPOCH,
        offline: false,
        built: BTreeMap::from([("pause".to_string(), pause_binary)]),
        repo: dir.join("repo"),
        arch: bundle_format::Arch::Amd64,
    }
}

/// Every entry of a tar archive: (path, header, content).
fn tar_entries(bytes: &[u8]) -> Vec<(String, tar::Header, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header().clone();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            (path, header, content)
        })
        .collect()
}

fn blob_of<'a>(entries: &'a [(String, tar::Header, Vec<u8>)], digest: &str) -> &'a [u8] {
    let name = format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap());
    &entries.iter().find(|(p, _, _)| *p == name).unwrap().2
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

// ---------------------------------------------------------------- specs

/// The error of pulling `repository@digest` into a cache under `dir`, printed for the log.
fn pull_error(repository: &str, digest: &str, dir: &Path) -> String {
    let err = build_image(
        &registry_spec(repository, digest),
        &context(dir, PathBuf::new()),
    )
    .unwrap_err();
    let err = format!("{err:#}");
    eprintln!("expected error: {err}");
    err
}

#[test]
fn fixture_tables_parse_into_specs() {
    let specs = fixture_specs();
    assert_eq!(specs.len(), 3);
    let ImageSource::Build(pause) = &specs[0].source else {
        panic!("pause is built")
    };
    assert!(specs[0].sandbox);
    assert!(matches!(&pause.files[0].from, FileOrigin::Built(name) if name == "pause"));
    assert_eq!(pause.files[0].mode, 0o755);
    let ImageSource::Build(busybox) = &specs[1].source else {
        panic!("busybox is built")
    };
    assert!(
        matches!(&busybox.files[0].from, FileOrigin::Host(h) if h.path == Path::new("/bin/busybox"))
    );
    assert_eq!(busybox.symlinks["/bin/sh"], "busybox");
    let ImageSource::Registry(registry) = &specs[2].source else {
        panic!("registry source")
    };
    assert_eq!(registry.platform.as_deref(), Some("linux/amd64"));
    assert!(registry.repository.is_none());
    check_specs(&specs).unwrap();
}

#[test]
fn unknown_fields_and_bad_specs_are_refused() {
    let typo = r#"
        [[image]]
        name = "x"
        reference = "docker.io/a/b:1"
        source = { kind = "registry", digest = "sha256:00", platfrom = "linux/amd64" }
    "#;
    let err = toml::from_str::<Fixture>(typo).err().unwrap().to_string();
    eprintln!("expected error: {err}");
    assert!(err.contains("platfrom"), "{err}");

    let mut specs = fixture_specs();
    specs[1].name = "pause".into();
    let err = check_specs(&specs).unwrap_err().to_string();
    eprintln!("expected error: {err}");
    assert!(err.contains("unique"), "{err}");

    let mut specs = fixture_specs();
    specs[1].sandbox = true;
    let err = check_specs(&specs).unwrap_err().to_string();
    eprintln!("expected error: {err}");
    assert!(err.contains("only one image can be the sandbox"), "{err}");

    for bad in [
        "pause:3.6",
        "rancher/pause:3.6",
        "docker.io/rancher/pause",
        "docker.io/Rancher/p:1",
    ] {
        assert!(check_reference(bad).is_err(), "{bad} should be refused");
    }
    check_reference("localhost:5000/a/b:1").unwrap();
}

#[test]
fn tags_are_split_from_references() {
    assert_eq!(
        split_tag("docker.io/rancher/mirrored-pause:3.6"),
        Some(("docker.io/rancher/mirrored-pause", "3.6"))
    );
    assert_eq!(
        split_tag("127.0.0.1:5000/test/img:v1"),
        Some(("127.0.0.1:5000/test/img", "v1"))
    );
    assert_eq!(split_tag("127.0.0.1:5000/test/img"), None);
}

#[test]
fn canonical_json_has_sorted_keys() {
    // Guards against serde_json's preserve_order feature being switched on by some dependency:
    // then HashMap-held annotations would come out in random order and digests would wobble.
    let value = std::collections::HashMap::from([("b", 1), ("a", 2), ("c", 3)]);
    assert_eq!(canonical_json(&value).unwrap(), br#"{"a":2,"b":1,"c":3}"#);
}

// ---------------------------------------------------------------- build source

#[test]
fn built_pause_image_has_the_same_digest_from_two_directories() {
    // Two builds that share nothing but the sources: the pause binary compiled from the checkout
    // and from a copy elsewhere, each image assembled in its own directory.
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let binaries = [
        static_pause_binary(),
        harness::static_pause_binary_from_a_copy(second_dir.path()),
    ];
    let spec = fixture("pause");
    let outputs: Vec<ImageOutput> = [first_dir.path(), second_dir.path()]
        .iter()
        .zip(binaries)
        .map(|(dir, binary)| build_image(&spec, &context(dir, binary)).unwrap())
        .collect();
    assert_ne!(outputs[0].file, outputs[1].file);
    assert_eq!(
        outputs[0].digest, outputs[1].digest,
        "pause image digest differs between builds"
    );
    let archives = outputs
        .iter()
        .map(|o| std::fs::read(&o.file).unwrap())
        .collect::<Vec<_>>();
    assert!(
        archives[0] == archives[1],
        "pause archive bytes differ between builds"
    );
    eprintln!("pause image digest: {}", outputs[0].digest);
}

#[test]
fn built_image_archive_has_the_expected_layout() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture("busybox");
    let out = build_image(&spec, &context(dir.path(), "/nonexistent".into())).unwrap();
    assert_eq!(out.file, dir.path().join("out/busybox.oci.tar"));
    assert_eq!(out.origin, ImageOrigin::Build);

    let entries = tar_entries(&std::fs::read(&out.file).unwrap());
    let names: Vec<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        &names[..4],
        ["oci-layout", "index.json", "blobs/", "blobs/sha256/"]
    );
    for (path, header, _) in &entries {
        assert_eq!(header.mtime().unwrap(), EPOCH, "{path}");
        assert_eq!(
            (header.uid().unwrap(), header.gid().unwrap()),
            (0, 0),
            "{path}"
        );
    }

    // index.json names the image the way containerd's importer reads it.
    let index = json(&entries[1].2);
    let top = &index["manifests"][0];
    assert_eq!(top["digest"], out.digest.as_str());
    assert_eq!(
        top["annotations"]["io.containerd.image.name"],
        spec.reference.as_str()
    );
    assert_eq!(
        top["annotations"]["org.opencontainers.image.ref.name"],
        "1.35.0"
    );

    // Every blob is named by its own digest.
    for (path, _, content) in &entries[4..] {
        assert_eq!(
            format!("blobs/{}", sha256_digest(content).replace(':', "/")),
            *path
        );
    }

    let manifest = json(blob_of(&entries, &out.digest));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = json(blob_of(
        &entries,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/sh"])
    );
    let layer_gz = blob_of(&entries, manifest["layers"][0]["digest"].as_str().unwrap());
    // gzip header: no mtime (bytes 4..8), no file name flag, OS byte 255.
    assert_eq!(&layer_gz[3..10], [0, 0, 0, 0, 0, 2, 255]);
    let mut layer = Vec::new();
    flate2::read::GzDecoder::new(layer_gz)
        .read_to_end(&mut layer)
        .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        sha256_digest(&layer).as_str()
    );

    let layer_entries = tar_entries(&layer);
    let layer_names: Vec<&str> = layer_entries.iter().map(|(p, _, _)| p.as_str()).collect();
    let mut sorted = layer_names.clone();
    sorted.sort();
    assert_eq!(layer_names, sorted, "layer entries must be sorted");
    assert_eq!(layer_names[0], "bin/");
    let busybox = layer_entries
        .iter()
        .find(|(p, _, _)| p == "bin/busybox")
        .unwrap();
    assert_eq!(busybox.1.mode().unwrap(), 0o755);
    assert_eq!(busybox.2, std::fs::read("/bin/busybox").unwrap());
    let sh = layer_entries
        .iter()
        .find(|(p, _, _)| p == "bin/sh")
        .unwrap();
    assert_eq!(sh.1.entry_type(), tar::EntryType::Symlink);
    assert_eq!(sh.1.link_name().unwrap().unwrap().to_str(), Some("busybox"));
}

#[test]
fn a_repository_file_and_the_user_go_into_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("images/x")).unwrap();
    std::fs::write(repo.join("images/x/entry"), "#!/bin/sh\necho hi\n").unwrap();
    let spec: Fixture = toml::from_str(
        r#"
        [[image]]
        name = "x"
        reference = "docker.io/k3s-gvisor/x:1"
        source = { kind = "build", entrypoint = ["/usr/bin/entry"], user = "1000", files = [
            { path = "/usr/bin/entry", from = { repo = "images/x/entry" } } ] }
        "#,
    )
    .unwrap();
    let out = build_image(&spec.image[0], &context(dir.path(), PathBuf::new())).unwrap();
    let entries = tar_entries(&std::fs::read(&out.file).unwrap());
    let manifest = json(blob_of(&entries, &out.digest));
    let config = json(blob_of(
        &entries,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["config"]["User"], "1000");
    let mut layer = Vec::new();
    flate2::read::GzDecoder::new(blob_of(
        &entries,
        manifest["layers"][0]["digest"].as_str().unwrap(),
    ))
    .read_to_end(&mut layer)
    .unwrap();
    let entry = tar_entries(&layer)
        .into_iter()
        .find(|(p, _, _)| p == "usr/bin/entry")
        .unwrap();
    assert_eq!(entry.2, b"#!/bin/sh\necho hi\n");
    assert_eq!(entry.1.mode().unwrap(), 0o755);

    // A path that leaves the repository is refused, naming the rule.
    let err = repo_file(&repo, Path::new("../etc/passwd"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("inside the repository"), "{err}");
    assert!(repo_file(&repo, Path::new("/etc/passwd")).is_err());
}

/// A file that differs by architecture names one per architecture; the bundle's is used, and
/// the image config says which architecture the image is for.
#[test]
fn a_by_arch_file_is_the_bundles_architectures_and_the_config_says_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("images/x")).unwrap();
    std::fs::write(repo.join("images/x/amd64"), "amd64\n").unwrap();
    std::fs::write(repo.join("images/x/arm64"), "arm64\n").unwrap();
    let spec: Fixture = toml::from_str(
        r#"
        [[image]]
        name = "x"
        reference = "docker.io/k3s-gvisor/x:1"
        source = { kind = "build", entrypoint = ["/x"], files = [
            { path = "/x", from = { by-arch = { amd64 = { repo = "images/x/amd64" }, arm64 = { repo = "images/x/arm64" } } } } ] }
        "#,
    )
    .unwrap();
    for arch in bundle_format::Arch::ALL {
        let ctx = ImageContext {
            arch,
            ..context(dir.path(), PathBuf::new())
        };
        let out = build_image(&spec.image[0], &ctx).unwrap();
        let entries = tar_entries(&std::fs::read(&out.file).unwrap());
        let manifest = json(blob_of(&entries, &out.digest));
        let config = json(blob_of(
            &entries,
            manifest["config"]["digest"].as_str().unwrap(),
        ));
        assert_eq!(config["architecture"], arch.as_str());
        let mut layer = Vec::new();
        flate2::read::GzDecoder::new(blob_of(
            &entries,
            manifest["layers"][0]["digest"].as_str().unwrap(),
        ))
        .read_to_end(&mut layer)
        .unwrap();
        let x = tar_entries(&layer)
            .into_iter()
            .find(|(p, _, _)| p == "x")
            .unwrap();
        assert_eq!(x.2, format!("{arch}\n").as_bytes());
    }

    // An architecture the file has no origin for is named.
    let FileOrigin::ByArch(mut by_arch) = (match &spec.image[0].source {
        ImageSource::Build(build) => build.files[0].from.clone(),
        ImageSource::Registry(_) => unreachable!(),
    }) else {
        unreachable!()
    };
    by_arch.remove(&bundle_format::Arch::Arm64);
    let err = FileOrigin::ByArch(by_arch)
        .for_arch(bundle_format::Arch::Arm64)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no origin for arm64") && err.contains("names only amd64"),
        "{err}"
    );
}

#[test]
fn the_pause_binary_is_static_and_dynamic_binaries_are_refused() {
    assert_eq!(
        crate::elf::interpreter(&std::fs::read(static_pause_binary()).unwrap()).unwrap(),
        None
    );
    let dynamic = std::fs::read("/bin/true").unwrap();
    assert!(crate::elf::interpreter(&dynamic)
        .unwrap()
        .is_some_and(|i| i.contains("ld-linux")));

    let dir = tempfile::tempdir().unwrap();
    let mut spec = fixture("pause");
    let err = build_image(&spec, &context(dir.path(), "/bin/true".into())).unwrap_err();
    assert!(format!("{err:#}").contains("dynamically linked"), "{err:#}");

    let err = build_image(&spec, &context(dir.path(), dir.path().join("missing"))).unwrap_err();
    assert!(
        format!("{err:#}").contains("the built binary `pause`"),
        "{err:#}"
    );
    let mut unknown = fixture("pause");
    let ImageSource::Build(build) = &mut unknown.source else {
        unreachable!()
    };
    build.files[0].from = FileOrigin::Built("paus".into());
    let err = build_image(&unknown, &context(dir.path(), static_pause_binary())).unwrap_err();
    assert!(
        format!("{err:#}").contains("no binary named `paus` was built; known: pause"),
        "{err:#}"
    );

    let ImageSource::Build(build) = &mut spec.source else {
        unreachable!()
    };
    build.files[0].path = "/../etc/passwd".into();
    let err = build_image(&spec, &context(dir.path(), static_pause_binary())).unwrap_err();
    assert!(format!("{err:#}").contains("'..'"), "{err:#}");
}

// ---------------------------------------------------------------- cache and registry errors

#[test]
fn a_blob_with_the_wrong_content_never_enters_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::new(dir.path());
    let digest = sha256_digest(b"expected");
    let mut writer = store.writer(&digest, Some(8)).unwrap();
    std::io::Write::write_all(&mut writer, b"tampered").unwrap();
    let err = writer.commit().unwrap_err().to_string();
    eprintln!("expected error: {err}");
    assert!(err.contains("nothing was cached"), "{err}");
    assert!(!store.contains(&digest).unwrap());
    assert_eq!(
        std::fs::read_dir(dir.path().join("images/tmp"))
            .unwrap()
            .count(),
        0
    );

    let mut writer = store.writer(&digest, Some(8)).unwrap();
    std::io::Write::write_all(&mut writer, b"expected").unwrap();
    writer.commit().unwrap();
    assert_eq!(store.read_verified(&digest, Some(8)).unwrap(), b"expected");
}

fn registry_spec(repository: &str, digest: &str) -> ImageSpec {
    ImageSpec {
        name: "pulled".into(),
        reference: "docker.io/k3s-gvisor/pulled:1".into(),
        sandbox: false,
        source: ImageSource::Registry(RegistrySource {
            digest: digest.into(),
            repository: Some(repository.into()),
            // The bundle's: linux/<arch of the context>.
            platform: None,
        }),
    }
}

fn cached_blob_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("cache/images/blobs/sha256")).map_or(0, |d| d.count())
}

#[test]
fn an_unreachable_registry_is_reported() {
    // A port that was free a moment ago: nothing listens there.
    let port = testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let spec = registry_spec(&format!("127.0.0.1:{port}/test/img"), &sha256_digest(b"x"));
    let err = format!(
        "{:#}",
        build_image(&spec, &context(dir.path(), PathBuf::new())).unwrap_err()
    );
    eprintln!("expected error: {err}");
    assert!(
        err.contains("cannot reach the registry 127.0.0.1:"),
        "{err}"
    );
    assert_eq!(cached_blob_count(dir.path()), 0);
}

#[test]
fn offline_without_a_cached_image_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let spec = registry_spec("127.0.0.1:1/test/img", &sha256_digest(b"x"));
    let ctx = ImageContext {
        offline: true,
        ..context(dir.path(), PathBuf::new())
    };
    let err = format!("{:#}", build_image(&spec, &ctx).unwrap_err());
    eprintln!("expected error: {err}");
    assert!(err.contains("--offline"), "{err}");
}

// ---------------------------------------------------------------- real registry and containerd

/// An archive whose top level is an image index over the given (platform, image) pairs, as a
/// multi-platform image on Docker Hub is.
fn write_index_archive(
    dest: &Path,
    images: &[(&str, &str, &super::assemble::AssembledImage)],
) -> String {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(os, arch, image)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": image.manifest_digest(),
                "size": image.manifest.len(),
                "platform": {"os": os, "architecture": arch},
            })
        })
        .collect();
    let index = canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let index_digest = sha256_digest(&index);
    let mut blobs: Vec<Blob> = images
        .iter()
        .flat_map(|(_, _, image)| image.blobs())
        .collect();
    blobs.push(Blob {
        digest: index_digest.clone(),
        size: index.len() as u64,
        content: BlobContent::Memory(index.clone()),
    });
    let top = TopManifest {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        digest: index_digest.clone(),
        size: index.len() as u64,
    };
    write_oci_archive(dest, &top, "docker.io/test/multi:1", &blobs, EPOCH).unwrap();
    index_digest
}

/// Builds a linux/amd64 busybox in `dir` and pushes it to `registry` as test/busybox:1.
fn push_busybox(registry: &Registry, dir: &Path) -> (super::assemble::AssembledImage, String) {
    let image = busybox_image(dir, &Platform::linux_amd64());
    let archive = dir.join("busybox.oci.tar");
    image
        .write_archive(&archive, "docker.io/test/busybox:1", EPOCH)
        .unwrap();
    let digest = registry.push(&archive, "test/busybox:1", false).unwrap();
    (image, digest)
}

fn busybox_amd64_and_arm64(dir: &Path) -> [super::assemble::AssembledImage; 2] {
    let arm64 = Platform {
        os: Os::Linux,
        architecture: Arch::ARM64,
    };
    [Platform::linux_amd64(), arm64].map(|platform| busybox_image(dir, &platform))
}

fn busybox_image(dir: &Path, platform: &Platform) -> super::assemble::AssembledImage {
    let ImageSource::Build(build) = fixture("busybox").source else {
        unreachable!()
    };
    assemble(&build, &context(dir, PathBuf::new()), platform).unwrap()
}

#[test]
fn registry_pull_by_digest_then_import_into_containerd() {
    if !testkit::root_or_skip("runs containerd, which mounts its snapshots and needs root") {
        return;
    }
    let mut registry = Registry::start().unwrap();
    let containerd = Containerd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The images we build: pause and busybox.
    let built = build_images(
        &[fixture("pause"), fixture("busybox")],
        &context(dir.path(), static_pause_binary()),
    )
    .unwrap();
    // busybox goes through the registry with a real client, then comes back by digest.
    let pushed = registry
        .push(&built[1].file, "test/busybox:1", false)
        .unwrap();
    assert_eq!(pushed, built[1].digest, "skopeo changed the manifest");
    let repository = format!("{}/test/busybox", registry.host);
    let mut spec = registry_spec(&repository, &pushed);
    spec.reference = "docker.io/k3s-gvisor/busybox-pulled:1".into();
    let pull_dir = tempfile::tempdir().unwrap();
    let pulled = build_image(&spec, &context(pull_dir.path(), PathBuf::new())).unwrap();
    assert_eq!(pulled.digest, pushed);
    assert_eq!(
        pulled.origin,
        ImageOrigin::Registry {
            repository,
            pinned_digest: pushed.clone(),
            platform: "linux/amd64".into()
        }
    );
    assert_eq!(
        cached_blob_count(pull_dir.path()),
        3,
        "manifest, config and layer are cached"
    );

    // The cache serves the second pull: the registry is gone, and --offline is on.
    registry.stop();
    std::fs::remove_file(&pulled.file).unwrap();
    let offline = ImageContext {
        offline: true,
        ..context(pull_dir.path(), PathBuf::new())
    };
    let again = build_image(&spec, &offline).unwrap();
    assert_eq!(again.digest, pushed);

    // A cache damaged on disk is caught, not shipped.
    let damaged_dir = tempfile::tempdir().unwrap();
    let damaged_cache = damaged_dir.path().join("cache");
    harness::copy_dir(&pull_dir.path().join("cache"), &damaged_cache);
    let layer =
        json(&std::fs::read(BlobStore::new(&damaged_cache).path(&pushed).unwrap()).unwrap())
            ["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
    std::fs::write(BlobStore::new(&damaged_cache).path(&layer).unwrap(), b"rot").unwrap();
    let damaged = ImageContext {
        offline: true,
        ..context(damaged_dir.path(), PathBuf::new())
    };
    let err = format!("{:#}", build_image(&spec, &damaged).unwrap_err());
    eprintln!("expected error: {err}");
    assert!(err.contains("delete it and run again"), "{err}");

    // containerd imports each archive under its name, pointing at the expected manifest.
    for image in [&built[0], &built[1], &again] {
        let listed = containerd.import(&image.file).unwrap();
        assert!(
            listed.contains(&(image.reference.clone(), image.digest.clone())),
            "{} ({}) not listed by `ctr -n k8s.io images ls`: {listed:?}",
            image.reference,
            image.digest
        );
    }

    // Imported means unpacked too: the native snapshotter holds the layers.
    let snapshots = containerd
        .ctr(&[
            "-n",
            "k8s.io",
            "snapshots",
            "--snapshotter",
            Snapshotter::Native.as_str(),
            "ls",
        ])
        .unwrap();
    assert!(
        snapshots.lines().count() > 1,
        "nothing was unpacked: {snapshots}"
    );
}

/// An index resolves to the bundle's platform: linux/amd64 for an amd64 bundle, linux/arm64 for
/// an arm64 one; a manifest pinned alone must be for that platform.
#[test]
fn an_index_resolves_to_the_bundles_platform_and_a_missing_platform_is_reported() {
    let registry = Registry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let [amd64, arm64] = busybox_amd64_and_arm64(dir.path());
    assert_ne!(amd64.manifest_digest(), arm64.manifest_digest());

    let both = dir.path().join("both.oci.tar");
    let index = write_index_archive(
        &both,
        &[("linux", "arm64", &arm64), ("linux", "amd64", &amd64)],
    );
    assert_eq!(registry.push(&both, "test/multi:1", true).unwrap(), index);
    let repository = format!("{}/test/multi", registry.host);
    let pulled = build_image(
        &registry_spec(&repository, &index),
        &context(dir.path(), PathBuf::new()),
    )
    .unwrap();
    assert_eq!(
        pulled.digest,
        amd64.manifest_digest(),
        "the amd64 manifest was not chosen"
    );
    let for_arm64 = ImageContext {
        arch: bundle_format::Arch::Arm64,
        ..context(dir.path(), PathBuf::new())
    };
    let pulled = build_image(&registry_spec(&repository, &index), &for_arm64).unwrap();
    assert_eq!(
        pulled.digest,
        arm64.manifest_digest(),
        "an arm64 bundle did not get the arm64 manifest"
    );
    assert!(
        matches!(&pulled.origin, ImageOrigin::Registry { platform, .. } if platform == "linux/arm64")
    );
    // The amd64 manifest pinned by itself (no index, no choice) is refused for arm64.
    let err = format!(
        "{:#}",
        build_image(
            &registry_spec(&repository, &amd64.manifest_digest()),
            &for_arm64
        )
        .unwrap_err()
    );
    assert!(
        err.contains("is an image for linux/amd64, not linux/arm64"),
        "{err}"
    );

    let arm_only = dir.path().join("arm.oci.tar");
    let arm_index = write_index_archive(&arm_only, &[("linux", "arm64", &arm64)]);
    registry.push(&arm_only, "test/multi:arm", true).unwrap();
    let err = pull_error(&repository, &arm_index, dir.path());
    assert!(
        err.contains("has no linux/amd64 image (it offers: linux/arm64)"),
        "{err}"
    );
}

#[test]
fn a_tampered_blob_and_a_wrong_digest_are_rejected() {
    let registry = Registry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (image, digest) = push_busybox(&registry, dir.path());
    let repository = format!("{}/test/busybox", registry.host);

    // A digest the registry does not have.
    let wrong = sha256_digest(b"not this image");
    let fresh = tempfile::tempdir().unwrap();
    let err = pull_error(&repository, &wrong, fresh.path());
    assert!(err.contains("has no manifest"), "{err}");
    assert_eq!(cached_blob_count(fresh.path()), 0);

    // Flip one byte of the layer in the registry's storage, keeping its size.
    let manifest = json(&image.manifest);
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = registry.blob_data(&layer_digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let fresh = tempfile::tempdir().unwrap();
    let err = pull_error(&repository, &digest, fresh.path());
    assert!(
        err.contains("does not match its digest") || err.contains("has digest"),
        "{err}"
    );
    let store = BlobStore::new(&fresh.path().join("cache"));
    assert!(
        !store.contains(&layer_digest).unwrap(),
        "the tampered layer entered the cache"
    );
    assert_eq!(
        std::fs::read_dir(fresh.path().join("cache/images/tmp"))
            .unwrap()
            .count(),
        0
    );
    assert!(
        !fresh.path().join("out/pulled.oci.tar").exists(),
        "an archive was written"
    );
}

#[test]
fn anonymous_bearer_tokens_are_fetched_as_docker_hub_wants() {
    let tokens = token_server::TokenServer::start().unwrap();
    let registry = Registry::start_with(Some(&tokens)).unwrap();
    // Without a token the registry refuses: the pull below must go through the token dance.
    assert_eq!(registry.status_of("/v2/").unwrap(), 401);

    let dir = tempfile::tempdir().unwrap();
    let (_, digest) = push_busybox(&registry, dir.path());
    let pushes = tokens.requests().len();

    let repository = format!("{}/test/busybox", registry.host);
    let pulled = build_image(
        &registry_spec(&repository, &digest),
        &context(dir.path(), PathBuf::new()),
    )
    .unwrap();
    assert_eq!(pulled.digest, digest);
    let ours = &tokens.requests()[pushes..];
    assert!(
        ours.iter()
            .any(|q| q.contains("scope=repository:test/busybox:pull")
                && q.contains(&format!("service={}", token_server::SERVICE))),
        "no anonymous pull token was requested: {ours:?}"
    );
}

/// Inside the sandbox, as the installer will: containerd (the pipeline's) imports the built pause
/// image into k8s.io. Content import must work on every gVisor. Unpacking into the native
/// snapshotter must work on a current gVisor; Debian's 2022 gVisor refuses the recursive bind
/// mount containerd uses for it (mount(2) with MS_BIND|MS_REC = flags 20480 returns EINVAL), and
/// the test accepts exactly that failure there, and says so.
#[test]
fn the_pause_image_imports_into_containerd_inside_gvisor() {
    if !testkit::root_or_skip("runs containerd, which mounts its snapshots and needs root") {
        return;
    }
    const SCRIPT: &str = r#"
D=$1; BIN=$2; ARCHIVE=$3
"$BIN/containerd" --config "$D/config.toml" > "$D/containerd.log" 2>&1 &
CTR="$BIN/ctr --address $D/containerd.sock"
for i in $(seq 100); do $CTR version >/dev/null 2>&1 && break; sleep 0.2; done
echo "== content"; $CTR -n k8s.io images import --no-unpack "$ARCHIVE" >/dev/null 2>&1; echo "rc $?"
$CTR -n k8s.io images ls
echo "== unpack"; $CTR -n k8s.io images import --snapshotter native "$ARCHIVE" 2>&1; echo "rc $?"
$CTR -n k8s.io snapshots --snapshotter native ls
kill $!
"#;
    let bin = harness::containerd_bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = build_image(
        &fixture("pause"),
        &context(dir.path(), static_pause_binary()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        harness::containerd_config(dir.path()),
    )
    .unwrap();
    let args = [
        dir.path().to_str().unwrap(),
        bin.to_str().unwrap(),
        out.file.to_str().unwrap(),
    ];
    let run = {
        let _one = harness::one_containerd_at_a_time();
        harness::run_in_gvisor(SCRIPT, &args).unwrap()
    };
    let stdout = String::from_utf8_lossy(&run.stdout);
    let log = std::fs::read_to_string(dir.path().join("containerd.log")).unwrap_or_default();
    let context = format!(
        "stdout:\n{stdout}\nstderr:\n{}\ncontainerd log (tail):\n{}",
        String::from_utf8_lossy(&run.stderr),
        log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );

    let (content, unpack) = stdout.split_once("== unpack").expect(&context);
    assert!(
        content.contains("rc 0"),
        "content import failed in gVisor; {context}"
    );
    let listed = content
        .lines()
        .any(|l| l.starts_with(&out.reference) && l.contains(&out.digest));
    assert!(
        listed,
        "{} ({}) not listed in gVisor; {context}",
        out.reference, out.digest
    );

    if unpack.contains("rc 0") {
        assert!(
            unpack.contains("Committed"),
            "no unpacked snapshot in gVisor; {context}"
        );
    } else {
        let version = std::process::Command::new(harness::runsc())
            .arg("--version")
            .output()
            .unwrap();
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        let known = version.contains("20221219")
            && unpack.contains("fstype: bind, flags: 20480")
            && unpack.contains("invalid argument");
        assert!(
            known,
            "unpacking into the native snapshotter failed in gVisor ({version}); {context}"
        );
        eprintln!(
            "NOTE: {}: containerd cannot unpack into the native snapshotter here: mount(2) with \
             MS_BIND|MS_REC returns EINVAL in this gVisor; content import works. Use a current \
             gVisor (K3S_GVISOR_RUNSC) for the full check.",
            version.lines().next().unwrap_or_default()
        );
    }
}

#[test]
fn docker_schema2_manifest_lists_are_resolved_and_imported() {
    if !testkit::root_or_skip("runs containerd, which mounts its snapshots and needs root") {
        return;
    }
    let registry = Registry::start().unwrap();
    let containerd = Containerd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let [amd64, arm64] = busybox_amd64_and_arm64(dir.path());
    let both = dir.path().join("both.oci.tar");
    write_index_archive(
        &both,
        &[("linux", "arm64", &arm64), ("linux", "amd64", &amd64)],
    );
    // skopeo rewrites the index into a Docker manifest list over Docker schema 2 manifests.
    let list = registry
        .push_as(&both, "test/docker:1", true, Some("v2s2"))
        .unwrap();

    let repository = format!("{}/test/docker", registry.host);
    let spec = registry_spec(&repository, &list);
    let pulled = build_image(&spec, &context(dir.path(), PathBuf::new())).unwrap();
    assert_ne!(
        pulled.digest,
        amd64.manifest_digest(),
        "skopeo should have converted the manifest"
    );

    let entries = tar_entries(&std::fs::read(&pulled.file).unwrap());
    let index = json(
        &entries
            .iter()
            .find(|(p, _, _)| p == "index.json")
            .unwrap()
            .2,
    );
    assert_eq!(index["manifests"][0]["mediaType"], DOCKER_MANIFEST_V2);
    let manifest = json(blob_of(&entries, &pulled.digest));
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST_V2);
    let config = json(blob_of(
        &entries,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["architecture"], "amd64");

    let listed = containerd.import(&pulled.file).unwrap();
    assert!(
        listed.contains(&(spec.reference.clone(), pulled.digest.clone())),
        "{listed:?}"
    );
}

const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
