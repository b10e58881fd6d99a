//! The pipeline: fetch → patch → prepare → build → image → package, planned first and run
//! second. Planning fetches every source and works out each stage's input hash, so a missing
//! source or build dependency fails before a ten-minute build starts, and the plan says which
//! stages will run. Each stage returns a record of what it ran (kept with its stamp, so a skipped
//! stage reports the same facts); `package` turns those records into the manifest.

use crate::build::{cargo_args, cargo_build, cargo_rustflags, go_build, rustc_version};
use crate::build::{BuiltBinary, GoBuildContext};
use crate::config::{BundleConfig, Component};
use crate::digest::{combine, sha256_file, sha256_tree};
use crate::fetch::{FetchOptions, SourceTree};
use crate::go::Go;
use crate::layout::{Layout, Variant};
use crate::package::{self, BundleFile, Format};
use crate::patch::{component_patches, prepare_tree};
use crate::stamp::Stamp;
use crate::ui::step;
use anyhow::{bail, Context, Result};
use bundle_format::paths as in_bundle;
use bundle_format::{
    ComponentRecord, ImageRecord, ImageSource, LinkRecord, Manifest, OmittedRecord, OutputRecord,
    PatchRecord, SourceRecord, Transport,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Bump when the way a stage turns inputs into outputs changes, so old stamps go stale.
const RECIPE: &str = "k3s-gvisor-recipe-2";

#[derive(Debug, Clone)]
pub struct Options {
    pub fetch: FetchOptions,
    /// Components left out on purpose (`--without-k3s`).
    pub without: Vec<String>,
    /// Only these components (empty: all). For `cargo xtask build --component`.
    pub only: Vec<String>,
}

/// What one run of the pipeline did, stage by stage; `--timings` prints it.
#[derive(Debug, Default)]
pub struct Report {
    pub stages: Vec<(String, Duration, bool)>,
}

impl Report {
    fn time<T>(&mut self, name: String, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let value = f()?;
        self.stages.push((name, start.elapsed(), true));
        Ok(value)
    }

    pub fn did_work(&self) -> bool {
        self.stages.iter().any(|s| s.2)
    }
}

/// What building one component ran and produced; kept with its stamp.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentBuild {
    pub binaries: Vec<BuiltBinary>,
    /// What the prepare step did that the manifest should say.
    pub notes: Vec<String>,
}

/// A built component: its source, its patches, and the record of its build.
#[derive(Debug)]
pub struct BuiltComponent {
    pub component: Component,
    pub source: SourceTree,
    pub patches: Vec<PathBuf>,
    pub build: ComponentBuild,
}

/// One component in the plan: its verified source and its build stamp.
struct PlannedComponent {
    component: Component,
    source: SourceTree,
    patches: Vec<PathBuf>,
    stamp: Stamp,
}

/// The components `opts` selects, each with its source fetched and its stamp computed.
fn plan_components(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    variant: Variant,
    go_version: &str,
    report: &mut Report,
) -> Result<Vec<PlannedComponent>> {
    for name in opts.without.iter().chain(&opts.only) {
        config.component(name)?;
    }
    let mut planned = Vec::new();
    for c in &config.components {
        if opts.without.contains(&c.name) || !(opts.only.is_empty() || opts.only.contains(&c.name))
        {
            continue;
        }
        let start = Instant::now();
        let source = crate::fetch::fetch_for_plan(c, layout, &opts.fetch)?;
        if source.downloaded {
            report
                .stages
                .push((format!("fetch {}", c.name), start.elapsed(), true));
        }
        let patches: Vec<PathBuf> = component_patches(layout, &c.name, &c.version)?
            .into_iter()
            .filter(|p| variant == Variant::Patched || is_build_fix(p))
            .collect();
        let mut inputs = vec![
            RECIPE.to_string(),
            toml::to_string(c)?,
            source.content.clone(),
            go_version.to_string(),
        ];
        // The bundle's name and version reach a binary only through `{stamp}` (runc's and
        // containerd's version strings): other components (k3s, CoreDNS) are not rebuilt when
        // only the bundle's version changes. (In this place, so that the stamps of those that
        // use it stay as they were.)
        if c.uses_stamp() {
            inputs.push(config.stamp());
        }
        inputs.extend([
            config.bundle.source_date_epoch.to_string(),
            variant.as_str().to_string(),
        ]);
        for p in &patches {
            inputs.push(sha256_file(p)?);
        }
        let stamp = Stamp::new(
            &layout.stamps(),
            &format!("build-{}-{}", variant.as_str(), c.name),
            combine(inputs),
        );
        planned.push(PlannedComponent {
            component: c.clone(),
            source,
            patches,
            stamp,
        });
    }
    Ok(planned)
}

/// `0000-*` patches make a source build (docs/patches.md); "unpatched" means upstream
/// behaviour, so they apply to both variants.
fn is_build_fix(patch: &std::path::Path) -> bool {
    patch
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("0000-"))
}

/// Fetch, patch, prepare and build every selected component as `variant`.
pub fn build_components(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    variant: Variant,
    report: &mut Report,
) -> Result<Vec<BuiltComponent>> {
    let go = Go::new(layout, opts.fetch.offline);
    let go_version = go.version()?;
    let planned = plan_components(config, layout, opts, variant, &go_version, report)?;
    // Each stamp is checked once (it hashes every output): its record, when fresh, is the build.
    let planned: Vec<(PlannedComponent, Option<ComponentBuild>)> = planned
        .into_iter()
        .map(|p| {
            let fresh = p.stamp.fresh_record::<ComponentBuild>();
            (p, fresh)
        })
        .collect();
    for (p, fresh) in &planned {
        let what = if fresh.is_some() {
            "up to date"
        } else {
            "will be patched and built"
        };
        step(
            "plan",
            format!(
                "{} {} ({}): {what}",
                p.component.name,
                p.component.version,
                variant.as_str()
            ),
        );
    }
    let mut built = Vec::new();
    for (mut p, fresh) in planned {
        let c = &p.component;
        let out_dir = layout.out_bin(variant);
        let build = match fresh {
            Some(record) => record,
            None => {
                p.stamp.clear();
                // The tree is read now: re-hashed first (planning did not).
                p.source = crate::fetch::reverified(c, layout, &opts.fetch, p.source)?;
                let tree = layout.src(&c.name, variant);
                let log = |what: &str| {
                    let log =
                        layout
                            .logs()
                            .join(format!("{what}-{}-{}.log", variant.as_str(), c.name));
                    let _ = std::fs::remove_file(&log);
                    log
                };
                let prepared = report.time(format!("patch {}", c.name), || {
                    prepare_tree(
                        &p.source.dir,
                        &tree,
                        c.vendor,
                        &p.patches,
                        layout,
                        &log("vendor"),
                    )?;
                    let prepared = crate::prepare::prepare(c.prepare, &tree)?;
                    step(
                        "patch",
                        format!(
                            "{}: fresh tree, {} patch(es) applied",
                            c.name,
                            p.patches.len()
                        ),
                    );
                    Ok(prepared)
                })?;
                let binaries = report.time(format!("build {}", c.name), || {
                    let start = Instant::now();
                    let ctx = GoBuildContext {
                        go: &go,
                        go_version: &go_version,
                        stamp: &config.stamp(),
                        source_date_epoch: config.bundle.source_date_epoch,
                        prepared: &prepared.placeholders,
                    };
                    let binaries = go_build(c, &tree, &out_dir, &ctx, &log("build"))?;
                    step(
                        "build",
                        format!(
                            "{} ({}): built in {:.0?}",
                            c.name,
                            variant.as_str(),
                            start.elapsed()
                        ),
                    );
                    Ok(binaries)
                })?;
                let build = ComponentBuild {
                    binaries,
                    notes: prepared.notes,
                };
                let outputs: Vec<PathBuf> = build.binaries.iter().map(|b| b.path.clone()).collect();
                p.stamp.record_with(&outputs, &build)?;
                build
            }
        };
        for b in &build.binaries {
            for check in &b.checks {
                step("check", format!("{}: {check}", c.name));
            }
        }
        built.push(BuiltComponent {
            component: p.component,
            source: p.source,
            patches: p.patches,
            build,
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
        cargo_args(config).join(" "),
    ]);
    let stamp = Stamp::new(&layout.stamps(), "build-crates", inputs);
    let outputs: Vec<PathBuf> = config
        .crates
        .iter()
        .map(|c| layout.crates_bin().join(&c.package))
        .collect();
    if stamp.is_fresh() {
        step("build", "runtime crates: up to date, nothing to do");
        return Ok(outputs);
    }
    report.time("build crates".into(), || {
        let start = Instant::now();
        let outputs = cargo_build(config, layout, &layout.logs().join("build-crates.log"))?;
        step(
            "build",
            format!(
                "runtime crates ({}): built in {:.0?}",
                config
                    .crates
                    .iter()
                    .map(|c| c.package.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                start.elapsed()
            ),
        );
        stamp.record(&outputs)?;
        Ok(outputs)
    })
}

/// Build or pull every `[[image]]` into OCI archives; skipped when the specs and the files they
/// are made from are unchanged.
pub fn build_images(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    built: &BTreeMap<String, PathBuf>,
    report: &mut Report,
) -> Result<Vec<(BundleFile, ImageRecord)>> {
    use crate::image::{self, ImageContext, ImageOrigin};
    let out_dir = layout.work.join("out/images");
    let mut inputs = vec![
        RECIPE.to_string(),
        config.bundle.source_date_epoch.to_string(),
    ];
    // Only the binaries an image is made of: runc and containerd, rebuilt for a new bundle
    // version (their `{stamp}`), do not make the images again.
    let used: std::collections::BTreeSet<&str> = config
        .images
        .iter()
        .filter_map(|spec| match &spec.source {
            image::ImageSource::Build(build) => Some(build),
            image::ImageSource::Registry(_) => None,
        })
        .flat_map(|build| &build.files)
        .filter_map(|file| match &file.from {
            image::FileOrigin::Built(name) => Some(name.as_str()),
            image::FileOrigin::Host(_) | image::FileOrigin::Repo(_) => None,
        })
        .collect();
    for (name, path) in built
        .iter()
        .filter(|(name, _)| used.contains(name.as_str()))
    {
        inputs.push(format!("{name} {}", sha256_file(path)?));
    }
    for spec in &config.images {
        // Host files are pinned by sha256 in the spec itself (checked when the image is built);
        // the repository's files by their content here.
        inputs.push(format!("{spec:?}"));
        if let image::ImageSource::Build(build) = &spec.source {
            for file in &build.files {
                if let image::FileOrigin::Repo(path) = &file.from {
                    let full = image::repo_file(&layout.repo, path)?;
                    inputs.push(format!("{} {}", path.display(), sha256_file(&full)?));
                }
            }
        }
    }
    let stamp = Stamp::new(&layout.stamps(), "images", combine(inputs));
    let ctx = ImageContext {
        cache_dir: layout.cache.clone(),
        out_dir: out_dir.clone(),
        source_date_epoch: config.bundle.source_date_epoch,
        offline: opts.fetch.offline,
        built: built.clone(),
        repo: layout.repo.clone(),
    };
    // A fresh stamp's record holds what the manifest needs (names, references, digests), so
    // the archives are not assembled again.
    let outputs = match stamp.fresh_record::<Vec<image::ImageOutput>>() {
        Some(outputs) => {
            step(
                "image",
                format!("{} image(s): up to date, nothing to do", outputs.len()),
            );
            outputs
        }
        None => {
            let start = Instant::now();
            let outputs = image::build_images(&config.images, &ctx)?;
            for o in &outputs {
                step(
                    "image",
                    format!("{} ({}): {}", o.name, o.reference, o.digest),
                );
            }
            let files: Vec<PathBuf> = outputs.iter().map(|o| o.file.clone()).collect();
            stamp.record_with(&files, &outputs)?;
            report.stages.push(("images".into(), start.elapsed(), true));
            outputs
        }
    };
    outputs
        .into_iter()
        .map(|o| {
            let to = format!(
                "{}/{}",
                in_bundle::IMAGES_DIR,
                o.file.file_name().unwrap().to_string_lossy()
            );
            let source = match &o.origin {
                ImageOrigin::Build => ImageSource::Build,
                ImageOrigin::Registry {
                    repository,
                    pinned_digest,
                    platform,
                } => ImageSource::Registry {
                    repository: repository.clone(),
                    digest: pinned_digest.clone(),
                    platform: platform.clone(),
                },
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
            Ok((BundleFile::file(o.file, to), record))
        })
        .collect()
}

/// Everything `package` needs, gathered from the other stages.
pub struct PackageInputs<'a> {
    pub components: &'a [BuiltComponent],
    pub crates: &'a [PathBuf],
    pub images: Vec<(BundleFile, ImageRecord)>,
    /// Components left out on purpose.
    pub without: &'a [String],
}

/// The manifest record of one upstream component, and the files it puts in the bundle.
fn component_record(
    b: &BuiltComponent,
    layout: &crate::layout::Layout,
) -> Result<(ComponentRecord, Vec<BundleFile>)> {
    let c = &b.component;
    let mut record = ComponentRecord {
        name: c.name.clone(),
        version: c.version.clone(),
        source: SourceRecord {
            transport: b.source.served_by.transport,
            location: b.source.served_by.location.clone(),
            content: b.source.content.clone(),
            repository: c
                .github
                .as_ref()
                .map(|r| format!("{}{r}", crate::fetch::GITHUB)),
            commit: c.commit.clone(),
            tree: c.tree.clone(),
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
                    handles: bundle_format::declared_blockers(
                        &std::fs::read_to_string(p)
                            .with_context(|| format!("cannot read {}", p.display()))?,
                    ),
                })
            })
            .collect::<Result<_>>()?,
        build_flags: Vec::new(),
        outputs: Vec::new(),
        links: Vec::new(),
    };
    let mut files = Vec::new();
    for bin in &b.build.binaries {
        record
            .build_flags
            .push(format!("{}: {}", bin.name, bin.command));
        if !bin.in_bundle {
            record.build_flags.push(format!(
                "{}: ships only inside an image (see images)",
                bin.name
            ));
            continue;
        }
        let to = format!("{}/{}", in_bundle::BIN_DIR, bin.name);
        record.outputs.push(OutputRecord {
            path: to.clone(),
            sha256: sha256_file(&bin.path)?,
        });
        files.push(BundleFile::file(bin.path.clone(), to));
        for link in &bin.links {
            let path = format!("{}/{link}", in_bundle::BIN_DIR);
            record.links.push(LinkRecord {
                path: path.clone(),
                target: bin.name.clone(),
            });
            files.push(BundleFile::symlink(bin.name.clone(), path));
        }
    }
    record.build_flags.extend(b.build.notes.iter().cloned());
    Ok((record, files))
}

/// Stage and write the tarballs (bundle.toml's `formats`) and their `.sha256`; skipped when
/// every input is unchanged. Returns the `.tar.gz`.
pub fn package(
    config: &BundleConfig,
    layout: &Layout,
    inputs: PackageInputs,
    report: &mut Report,
) -> Result<PathBuf> {
    let name = config.bundle.artifact_name(inputs.without);
    let tarballs: Vec<PathBuf> = config
        .bundle
        .formats
        .iter()
        .map(|f| layout.dist.join(format!("{name}.{}", f.extension())))
        .collect();
    let tarball = layout
        .dist
        .join(format!("{name}.{}", Format::TarGz.extension()));
    let mut files = Vec::new();
    let mut records = Vec::new();
    for b in inputs.components {
        let (record, component_files) = component_record(b, layout)?;
        records.push(record);
        files.extend(component_files);
    }
    let crates_tree = sha256_tree(&layout.repo.join("crates"))?;
    for (spec, path) in config.crates.iter().zip(inputs.crates) {
        let Some(to) = &spec.to else {
            continue;
        };
        records.push(ComponentRecord {
            name: spec.package.clone(),
            version: config.bundle.version.clone(),
            source: SourceRecord {
                transport: Transport::Workspace,
                location: format!("crates/{}", spec.package),
                content: format!("sha256-tree:{crates_tree}"),
                repository: None,
                commit: None,
                tree: None,
            },
            patches: Vec::new(),
            build_flags: vec![format!(
                "cargo {} (RUSTFLAGS: -C target-feature=+crt-static, paths remapped)",
                cargo_args(config).join(" ")
            )],
            outputs: vec![OutputRecord {
                path: to.clone(),
                sha256: sha256_file(path)?,
            }],
            links: Vec::new(),
        });
        files.push(BundleFile::file(path.clone(), to.clone()));
    }
    // Our Helm charts (charts/<name>/), each packed as `helm package` lays a chart out
    // (`<name>/Chart.yaml`, ...) into a deterministic tar.gz; the installer hands it to k3s's
    // helm-controller as a HelmChart's chartContent.
    let charts_dir = layout.repo.join("charts");
    if charts_dir.is_dir() {
        let packed_dir = layout.stage().join("charts");
        for entry in crate::fsutil::sorted_dirs(&charts_dir)? {
            let name = entry.file_name().unwrap().to_string_lossy().to_string();
            if !entry.join("Chart.yaml").is_file() {
                bail!("{} has no Chart.yaml: not a Helm chart", entry.display());
            }
            let packed = packed_dir.join(format!("{name}.tgz"));
            package::write_tarball(&entry, &name, &packed, config.bundle.source_date_epoch)?;
            files.push(BundleFile::file(
                packed,
                format!("{}/{name}.tgz", in_bundle::CHARTS_DIR),
            ));
        }
    }
    let omitted = inputs
        .without
        .iter()
        .map(|name| OmittedRecord {
            name: name.clone(),
            reason: format!("left out on purpose (cargo xtask bundle --without-{name})"),
        })
        .collect();
    let mut images = Vec::new();
    for (file, record) in inputs.images {
        files.push(file);
        images.push(record);
    }
    let manifest = Manifest {
        name: config.bundle.name.clone(),
        version: config.bundle.version.clone(),
        arch: config.bundle.arch,
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
            format!("{tarballs:?}"),
            serde_json::to_string(&manifest)?,
            sha256_tree(&template)?,
            sha256_tree(&overlays)?,
            if charts_dir.is_dir() {
                sha256_tree(&charts_dir)?
            } else {
                String::new()
            },
        ]
        .into_iter()
        .chain(files.iter().map(|f| f.to.clone())),
    );
    let stamp = Stamp::new(&layout.stamps(), "package", key);
    let listed = tarballs
        .iter()
        .map(|t| t.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ");
    if stamp.is_fresh() {
        step("package", format!("{listed}: up to date, nothing to do"));
        return Ok(tarball);
    }
    report.time("package".into(), || {
        let root = layout.stage().join(&name);
        package::stage(&root, &template, &overlays, &files, &manifest)?;
        // Each format on its own thread: the gzip is one thread's work, zstd has two workers.
        std::thread::scope(|scope| {
            let writers: Vec<_> = tarballs
                .iter()
                .map(|t| {
                    let root = &root;
                    let name = &name;
                    scope.spawn(move || {
                        package::write_tarball(root, name, t, config.bundle.source_date_epoch)
                    })
                })
                .collect();
            writers
                .into_iter()
                .try_for_each(|w| w.join().expect("a tarball writer panicked"))
        })?;
        let mut outputs = Vec::new();
        for t in &tarballs {
            outputs.push(t.clone());
            outputs.push(package::write_sidecar(t)?);
        }
        stamp.record(&outputs)?;
        step("package", format!("wrote {listed}, each with its .sha256"));
        Ok(())
    })?;
    Ok(tarball)
}

/// The whole pipeline; returns the tarball.
pub fn bundle(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    report: &mut Report,
) -> Result<PathBuf> {
    if !opts.only.is_empty() {
        bail!("a bundle holds every component: --component is for `cargo xtask build`");
    }
    let components = build_components(config, layout, opts, Variant::Patched, report)?;
    let crates = build_crates(config, layout, report)?;
    // Every binary the build made, by name, for images made of them.
    let built: BTreeMap<String, PathBuf> = components
        .iter()
        .flat_map(|c| &c.build.binaries)
        .map(|b| (b.name.clone(), b.path.clone()))
        .chain(
            config
                .crates
                .iter()
                .zip(&crates)
                .map(|(c, p)| (c.package.clone(), p.clone())),
        )
        .collect();
    let images = build_images(config, layout, opts, &built, report)?;
    let inputs = PackageInputs {
        components: &components,
        crates: &crates,
        images,
        without: &opts.without,
    };
    package(config, layout, inputs, report)
}
