//! The pipeline: fetch → patch → build → package, each step skipped when its inputs' hash is
//! unchanged. This module only sequences the stages and records what they did.

use crate::build::{
    cargo_build, cargo_rustflags, go_build, go_build_args, go_version, rustc_version,
};
use crate::config::{BundleConfig, Component, SourceKind};
use crate::digest::{combine, sha256_file, sha256_tree};
use crate::fetch::{fetch, SourceTree};
use crate::layout::{Layout, Variant};
use crate::manifest::{
    ComponentRecord, ImageRecord, Manifest, OutputRecord, PatchRecord, SourceRecord,
};
use crate::package::{self, BundleFile};
use crate::patch::{patch_files, prepare_tree};
use crate::stamp::Stamp;
use crate::ui::step;
use anyhow::Result;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Bump when the way a stage turns inputs into outputs changes, so old stamps go stale.
const RECIPE: &str = "k3s-gvisor-recipe-1";

#[derive(Debug, Clone)]
pub struct Options {
    pub offline: bool,
    /// Overrides every component's `source` (e.g. `archive` in the release workflow).
    pub source: Option<SourceKind>,
}

/// What one run of the pipeline did, stage by stage; `--timings` prints it.
#[derive(Debug, Default)]
pub struct Report {
    pub stages: Vec<(String, Duration, bool)>,
}

impl Report {
    fn time<T>(&mut self, name: String, f: impl FnOnce() -> Result<(T, bool)>) -> Result<T> {
        let start = Instant::now();
        let (value, worked) = f()?;
        self.stages.push((name, start.elapsed(), worked));
        Ok(value)
    }

    pub fn did_work(&self) -> bool {
        self.stages.iter().any(|s| s.2)
    }
}

/// A built component: its binaries and the facts the manifest records about them.
#[derive(Debug)]
pub struct BuiltComponent {
    pub component: Component,
    pub source: SourceTree,
    pub patches: Vec<PathBuf>,
    pub binaries: Vec<PathBuf>,
}

/// Fetch, patch and build every upstream component as `variant`.
pub fn build_components(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    variant: Variant,
    report: &mut Report,
) -> Result<Vec<BuiltComponent>> {
    let go = go_version()?;
    let stamp_text = config.stamp();
    let mut built = Vec::new();
    for c in &config.components {
        let kind = opts.source.unwrap_or(c.source);
        let source = report.time(format!("fetch {}", c.name), || {
            let tree = fetch(c, kind, layout, opts.offline)?;
            let how = if tree.downloaded {
                "downloaded and verified"
            } else {
                "cached, verified"
            };
            step(
                "fetch",
                format!("{} {}: {how} ({})", c.name, c.version, tree.hash),
            );
            let worked = tree.downloaded;
            Ok((tree, worked))
        })?;
        let patches = match variant {
            Variant::Patched => patch_files(&layout.patches(&c.name))?,
            // 0000-* patches only make the module-proxy source build (see patches/README.md);
            // "unpatched" means upstream behaviour, so they apply to both variants.
            Variant::Unpatched => patch_files(&layout.patches(&c.name))?
                .into_iter()
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("0000-"))
                })
                .collect(),
        };
        let mut inputs = vec![
            RECIPE.to_string(),
            toml::to_string(c)?,
            source.hash.clone(),
            go.clone(),
            stamp_text.clone(),
            config.bundle.source_date_epoch.to_string(),
            variant.as_str().to_string(),
        ];
        for p in &patches {
            inputs.push(sha256_file(p)?);
        }
        let stamp = Stamp::new(
            &layout.stamps(),
            &format!("build-{}-{}", variant.as_str(), c.name),
            combine(inputs),
        );
        let out_dir = layout.out_bin(variant);
        let binaries: Vec<PathBuf> = c.binaries.iter().map(|b| out_dir.join(&b.name)).collect();
        if stamp.is_fresh() {
            step("patch", format!("{}: up to date, nothing to do", c.name));
            step(
                "build",
                format!(
                    "{} ({}): up to date, nothing to do",
                    c.name,
                    variant.as_str()
                ),
            );
        } else {
            stamp.clear();
            std::fs::create_dir_all(layout.logs())?;
            let tree = layout.src(&c.name, variant);
            report.time(format!("patch {}", c.name), || {
                let log = layout
                    .logs()
                    .join(format!("vendor-{}-{}.log", variant.as_str(), c.name));
                prepare_tree(&source.dir, &tree, c.vendor, &patches, layout, &log)?;
                step(
                    "patch",
                    format!(
                        "{}: fresh tree, {} patch(es) applied",
                        c.name,
                        patches.len()
                    ),
                );
                Ok(((), true))
            })?;
            report.time(format!("build {}", c.name), || {
                let log = layout
                    .logs()
                    .join(format!("build-{}-{}.log", variant.as_str(), c.name));
                let _ = std::fs::remove_file(&log);
                let start = Instant::now();
                go_build(
                    c,
                    &tree,
                    &out_dir,
                    &stamp_text,
                    layout,
                    config.bundle.source_date_epoch,
                    &log,
                )?;
                step(
                    "build",
                    format!(
                        "{} ({}): built in {:.0?}",
                        c.name,
                        variant.as_str(),
                        start.elapsed()
                    ),
                );
                Ok(((), true))
            })?;
            stamp.record(&binaries)?;
        }
        built.push(BuiltComponent {
            component: c.clone(),
            source,
            patches,
            binaries,
        });
    }
    Ok(built)
}

/// Build our runtime crates (statically linked), unless nothing under crates/ changed.
pub fn build_crates(
    config: &BundleConfig,
    layout: &Layout,
    report: &mut Report,
) -> Result<Vec<PathBuf>> {
    let inputs = combine([
        RECIPE.to_string(),
        sha256_tree(&layout.repo.join("crates"))?,
        sha256_file(&layout.repo.join("Cargo.lock"))?,
        sha256_file(&layout.repo.join("Cargo.toml"))?,
        rustc_version()?,
        cargo_rustflags(layout),
        config.crates.packages.join(","),
    ]);
    let stamp = Stamp::new(&layout.stamps(), "build-crates", inputs);
    let outputs: Vec<PathBuf> = config
        .crates
        .packages
        .iter()
        .map(|p| layout.crates_bin().join(p))
        .collect();
    if stamp.is_fresh() {
        step("build", "runtime crates: up to date, nothing to do");
        return Ok(outputs);
    }
    report.time("build crates".into(), || {
        std::fs::create_dir_all(layout.logs())?;
        let start = Instant::now();
        let outputs = cargo_build(config, layout, &layout.logs().join("build-crates.log"))?;
        step(
            "build",
            format!(
                "runtime crates ({}): built in {:.0?}",
                config.crates.packages.join(", "),
                start.elapsed()
            ),
        );
        stamp.record(&outputs)?;
        Ok((outputs, true))
    })
}

/// k3s as the bundle gets it: built from source (module proxy or a local checkout named by
/// K3S_GVISOR_K3S_SRC) or the pinned release binary.
pub struct K3sOutcome {
    pub binary: PathBuf,
    pub build_flags: Vec<String>,
    pub source: SourceRecord,
    pub left_out_manifests: Vec<String>,
}

/// Build or place k3s. `Ok(Err(reason))` when it cannot be had and `require` is false: the
/// bundle is then made without k3s, says so loudly, and records why in its manifest.
pub fn build_k3s(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    require: bool,
    report: &mut Report,
) -> Result<std::result::Result<K3sOutcome, String>> {
    use crate::k3s;
    let Some(pin) = &config.k3s else {
        return Ok(Err("bundle.toml has no [k3s] table".into()));
    };
    let out_bin = layout.work.join("out/k3s/bin");
    let attempt = || -> Result<K3sOutcome> {
        if pin.mode == k3s::K3sMode::Release {
            let binary = k3s::place_release_binary(pin, layout, &out_bin, opts.offline)?;
            let release = pin.release.as_ref().unwrap();
            return Ok(K3sOutcome {
                binary,
                build_flags: vec!["upstream release binary".into()],
                source: SourceRecord {
                    kind: "archive".into(),
                    location: release.url.clone(),
                    hash: format!("sha256:{}", release.sha256),
                },
                left_out_manifests: Vec::new(),
            });
        }
        let pristine = k3s::fetch_k3s_source(
            pin,
            layout,
            k3s::local_source_override().as_deref(),
            opts.offline,
        )?;
        let src = layout.src("k3s", Variant::Patched);
        let prepared = k3s::prepare_source(&pristine.dir, &src)?;
        std::fs::create_dir_all(layout.logs())?;
        let built = k3s::build_k3s(&k3s::K3sBuild {
            layout,
            pin,
            src: &src,
            out_bin: &out_bin,
            source_date_epoch: config.bundle.source_date_epoch,
            log: &layout.logs().join("build-k3s.log"),
            offline: opts.offline,
        })?;
        step(
            "build",
            format!(
                "k3s: {} ({})",
                built.version_line,
                if built.rebuilt {
                    "built"
                } else {
                    "up to date, nothing to do"
                }
            ),
        );
        for (command, answer) in k3s::check_multicall(&built.binary)? {
            step("build", format!("k3s {command}: {answer}"));
        }
        let (kind, location) = match &pristine.origin {
            k3s::K3sOrigin::ModuleProxy {
                module, version, ..
            } => ("go-module", format!("{module}@{version}")),
            k3s::K3sOrigin::LocalCheckout { path, commit } => {
                ("git-checkout", format!("{} at {commit}", path.display()))
            }
        };
        Ok(K3sOutcome {
            binary: built.binary,
            build_flags: built.build_flags,
            source: SourceRecord {
                kind: kind.into(),
                location,
                hash: pristine.content_id,
            },
            left_out_manifests: prepared.left_out_manifests,
        })
    };
    let start = Instant::now();
    match attempt() {
        Ok(outcome) => {
            report.stages.push(("k3s".into(), start.elapsed(), false));
            Ok(Ok(outcome))
        }
        Err(e) if !require => {
            let reason = format!("{e:#}");
            step(
                "k3s",
                format!("WARNING: the bundle will NOT contain k3s: {reason}"),
            );
            step("k3s", "(pass --require-k3s to make this an error; set K3S_GVISOR_K3S_SRC to a k3s checkout at the pinned commit to build it)");
            Ok(Err(reason))
        }
        Err(e) => Err(e.context("k3s is required (--require-k3s) but could not be built")),
    }
}

/// Build or pull every `[[image]]` into OCI archives; skipped when the specs and the files they
/// are made from are unchanged.
pub fn build_images(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    pause_binary: &std::path::Path,
    report: &mut Report,
) -> Result<Vec<(BundleFile, ImageRecord)>> {
    use crate::image::{self, FileOrigin, ImageContext, ImageOrigin, ImageSource};
    let out_dir = layout.work.join("out/images");
    let mut inputs = vec![
        RECIPE.to_string(),
        config.bundle.source_date_epoch.to_string(),
        sha256_file(pause_binary)?,
    ];
    for spec in &config.images {
        inputs.push(format!("{spec:?}"));
        if let ImageSource::Build(b) = &spec.source {
            for f in &b.files {
                if let FileOrigin::Host(path) = &f.from {
                    inputs.push(sha256_file(path)?);
                }
            }
        }
    }
    let stamp = Stamp::new(&layout.stamps(), "images", combine(inputs));
    let ctx = ImageContext {
        cache_dir: layout.cache.clone(),
        out_dir: out_dir.clone(),
        source_date_epoch: config.bundle.source_date_epoch,
        offline: opts.offline,
        pause_binary: pause_binary.to_path_buf(),
    };
    let fresh = stamp.is_fresh();
    let start = Instant::now();
    // Fresh or not, the stage runs: with a fresh stamp it only re-reads its cached archives to
    // report their digests, which is what the manifest needs.
    let outputs = image::build_images(&config.images, &ctx)?;
    if fresh {
        step(
            "image",
            format!("{} image(s): up to date, nothing to do", outputs.len()),
        );
    } else {
        for o in &outputs {
            step(
                "image",
                format!("{} ({}): {}", o.name, o.reference, o.digest),
            );
        }
        stamp.record(&outputs.iter().map(|o| o.file.clone()).collect::<Vec<_>>())?;
        report.stages.push(("images".into(), start.elapsed(), true));
    }
    outputs
        .into_iter()
        .map(|o| {
            let to = format!("images/{}", o.file.file_name().unwrap().to_string_lossy());
            let source = match &o.origin {
                ImageOrigin::Build => "build".to_string(),
                ImageOrigin::Registry {
                    repository,
                    pinned_digest,
                    platform,
                } => {
                    format!("registry {repository}@{pinned_digest} ({platform})")
                }
            };
            let record = ImageRecord {
                name: o.name.clone(),
                reference: o.reference.clone(),
                source,
                digest: o.digest.clone(),
                file: to.clone(),
                sha256: sha256_file(&o.file)?,
                sandbox: o.sandbox,
            };
            Ok((BundleFile { from: o.file, to }, record))
        })
        .collect()
}

/// Where a workspace binary lands inside the bundle; `pause` ships only inside its image.
fn crate_bundle_path(package: &str) -> Option<String> {
    match package {
        "pause" => None,
        "gvisor-cni" => Some("cni/bin/gvisor-cni".into()),
        other => Some(format!("bin/{other}")),
    }
}

/// Everything `package` needs, gathered from the other stages.
pub struct PackageInputs<'a> {
    pub components: &'a [BuiltComponent],
    pub k3s: std::result::Result<K3sOutcome, String>,
    pub crates: &'a [PathBuf],
    pub images: Vec<(BundleFile, ImageRecord)>,
}

/// Stage and write the tarball and its `.sha256`; skipped when every input is unchanged.
pub fn package(
    config: &BundleConfig,
    layout: &Layout,
    inputs: PackageInputs,
    report: &mut Report,
) -> Result<PathBuf> {
    let name = config.bundle.artifact_name();
    let tarball = layout.dist.join(format!("{name}.tar.gz"));
    let mut files = Vec::new();
    let mut records = Vec::new();
    for b in inputs.components {
        let c = &b.component;
        let mut outputs = Vec::new();
        let mut flags = Vec::new();
        for (bin, path) in c.binaries.iter().zip(&b.binaries) {
            let to = format!("bin/{}", bin.name);
            let args = go_build_args(c, bin, &config.stamp(), std::path::Path::new(&to));
            flags.push(format!(
                "{}: CGO_ENABLED={} go {}",
                bin.name,
                bin.cgo as u8,
                args.join(" ")
            ));
            outputs.push(OutputRecord {
                path: to.clone(),
                sha256: sha256_file(path)?,
            });
            files.push(BundleFile {
                from: path.clone(),
                to,
            });
        }
        let (kind, location) = if b.source.hash.starts_with("h1:") {
            ("go-module", format!("{}@{}", c.module, c.version))
        } else {
            ("archive", c.archive_url.clone())
        };
        records.push(ComponentRecord {
            name: c.name.clone(),
            version: c.version.clone(),
            source: SourceRecord {
                kind: kind.into(),
                location,
                hash: b.source.hash.clone(),
            },
            patches: b
                .patches
                .iter()
                .map(|p| {
                    Ok(PatchRecord {
                        file: p
                            .strip_prefix(&layout.repo)
                            .unwrap_or(p)
                            .display()
                            .to_string(),
                        sha256: sha256_file(p)?,
                    })
                })
                .collect::<Result<_>>()?,
            build_flags: flags,
            outputs,
        });
    }
    let crates_tree = sha256_tree(&layout.repo.join("crates"))?;
    for (package, path) in config.crates.packages.iter().zip(inputs.crates) {
        let Some(to) = crate_bundle_path(package) else {
            continue;
        };
        records.push(ComponentRecord {
            name: package.clone(),
            version: config.bundle.version.clone(),
            source: SourceRecord { kind: "workspace".into(), location: format!("crates/{package}"), hash: format!("sha256-tree:{crates_tree}") },
            patches: Vec::new(),
            build_flags: vec![format!("cargo build --release --locked --target {} (RUSTFLAGS: -C target-feature=+crt-static, paths remapped)", crate::build::RUST_TARGET)],
            outputs: vec![OutputRecord { path: to.clone(), sha256: sha256_file(path)? }],
        });
        files.push(BundleFile {
            from: path.clone(),
            to,
        });
    }
    let mut omitted = Vec::new();
    match inputs.k3s {
        Ok(k) => {
            let pin = config.k3s.as_ref().expect("k3s outcome without a pin");
            let mut build_flags = k.build_flags;
            if !k.left_out_manifests.is_empty() {
                build_flags.push(format!(
                    "manifests left out (their Helm charts come from GitHub at k3s build time): {}",
                    k.left_out_manifests.join(", ")
                ));
            }
            records.push(ComponentRecord {
                name: "k3s".into(),
                version: pin.version.clone(),
                source: k.source,
                patches: Vec::new(),
                build_flags,
                outputs: vec![OutputRecord {
                    path: "bin/k3s".into(),
                    sha256: sha256_file(&k.binary)?,
                }],
            });
            files.push(BundleFile {
                from: k.binary,
                to: "bin/k3s".into(),
            });
        }
        Err(reason) => omitted.push(crate::manifest::OmittedRecord {
            name: "k3s".into(),
            reason,
        }),
    }
    let mut images = Vec::new();
    for (file, record) in inputs.images {
        files.push(file);
        images.push(record);
    }
    let manifest = Manifest {
        name: config.bundle.name.clone(),
        version: config.bundle.version.clone(),
        arch: config.bundle.arch.clone(),
        source_date_epoch: config.bundle.source_date_epoch,
        components: records,
        images,
        omitted,
    };
    let template = layout.repo.join("bundle-template");
    let overlays = layout.repo.join("overlays");
    let key = combine(
        [
            RECIPE.to_string(),
            serde_json::to_string(&manifest)?,
            sha256_tree(&template)?,
            sha256_tree(&overlays)?,
        ]
        .into_iter()
        .chain(files.iter().map(|f| f.to.clone())),
    );
    let stamp = Stamp::new(&layout.stamps(), "package", key);
    let sidecar = package::sidecar_path(&tarball);
    if stamp.is_fresh() {
        step(
            "package",
            format!("{}: up to date, nothing to do", tarball.display()),
        );
        return Ok(tarball);
    }
    report.time("package".into(), || {
        let root = layout.stage().join(&name);
        package::stage(&root, &template, &overlays, &files, &manifest)?;
        package::write_tarball(&root, &name, &tarball, config.bundle.source_date_epoch)?;
        package::write_sidecar(&tarball)?;
        stamp.record(&[tarball.clone(), sidecar.clone()])?;
        step(
            "package",
            format!("wrote {} and {}", tarball.display(), sidecar.display()),
        );
        Ok(((), true))
    })?;
    Ok(tarball)
}
