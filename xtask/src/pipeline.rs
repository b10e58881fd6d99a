//! The pipeline: fetch → patch → prepare → build → image → package, planned first and run
//! second. Planning ([`plan`]) fetches every source and decides each stage's freshness once:
//! its input hash, its stamp checked (outputs re-hashed), and why it must run; a stage whose
//! inputs are outputs of a stage that will run (images made of rebuilt binaries, the package)
//! is decided when those exist. So a missing source or build dependency fails before a
//! ten-minute build starts, `cargo xtask bundle --plan` prints the plan without running
//! anything, and the run ([`run`]) follows it. Each stage returns a record of what it ran
//! (kept with its stamp, so a skipped stage reports the same facts); `package` turns those
//! records into the manifest.

mod plan;
#[cfg(test)]
pub use plan::render_components;

use crate::build::{
    cargo_args, cargo_build, cargo_cross_env, cargo_rustflags, go_build, rustc_version,
};
use crate::build::{BuiltBinary, GoBuildContext};
use crate::config::{BundleConfig, Component};
use crate::digest::{sha256_file, sha256_tree};
use crate::fetch::{FetchOptions, SourceTree};
use crate::go::Go;
use crate::image::ImageOutput;
use crate::layout::{Layout, Variant};
use crate::package::{self, BundleFile, Format};
use crate::patch::{component_patches, prepare_tree};
use crate::stamp::{Check, Inputs, Stamp};
use crate::ui::step;
use anyhow::{bail, Context, Result};
use bundle_format::paths as in_bundle;
use bundle_format::{
    ComponentRecord, ImageRecord, ImageSource, LinkRecord, Manifest, OmittedRecord, OutputRecord,
    PatchRecord, SourceRecord, Transport,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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

/// What one run of the pipeline did, stage by stage: name, time, whether it did work (a
/// skipped stage's time is its stamp check); `--timings` prints it.
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

    /// A stage found up to date: `took` is what deciding that cost.
    fn skipped(&mut self, name: String, took: Duration) {
        self.stages.push((name, took, false));
    }

    pub fn did_work(&self) -> bool {
        self.stages.iter().any(|s| s.2)
    }
}

/// A stage's freshness, decided once.
#[derive(Debug)]
pub enum Decision<T> {
    /// Up to date: the record kept with its stamp.
    Fresh(T),
    /// It must run, and why.
    Run(String),
}

impl<T> Decision<T> {
    fn from_stamp(stamp: &Stamp) -> Decision<T>
    where
        T: serde::de::DeserializeOwned,
    {
        match stamp.check() {
            Check::Fresh(record) => Decision::Fresh(record),
            Check::Stale(why) => Decision::Run(why),
        }
    }

    /// The stamp's decision; a fresh stage is reported as skipped, its check time with it.
    fn checked(stamp: &Stamp, report: &mut Report, stage: String, since: Instant) -> Decision<T>
    where
        T: serde::de::DeserializeOwned,
    {
        let decision = Decision::from_stamp(stamp);
        if decision.is_fresh() {
            report.skipped(stage, since.elapsed());
        }
        decision
    }

    pub fn is_fresh(&self) -> bool {
        matches!(self, Decision::Fresh(_))
    }
}

/// A stage that is decided up front, or only once the stages it is made from have run.
#[derive(Debug)]
pub enum Stage<P> {
    Planned(P),
    /// Its inputs are outputs of stages that will run: decided after them, and why.
    Later(String),
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

/// One component in the plan: its verified source, its patches, its build stamp and whether
/// it must be patched and built. `source` and `stamp` are None only in a plan that may not
/// fetch (`--plan`) when the source is not in the cache.
pub struct PlannedComponent {
    pub component: Component,
    pub source: Option<SourceTree>,
    pub patches: Vec<PathBuf>,
    stamp: Option<Stamp>,
    pub decision: Decision<ComponentBuild>,
}

/// The components `opts` selects, each with its source fetched (with `dry`: looked up in the
/// caches only), its stamp computed and checked.
pub(crate) fn plan_components(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    variant: Variant,
    go_version: &str,
    dry: bool,
    report: &mut Report,
) -> Result<Vec<PlannedComponent>> {
    for name in opts.without.iter().chain(&opts.only) {
        config.component(name)?;
    }
    let target = config.target()?;
    let mut planned = Vec::new();
    for c in &config.components {
        if opts.without.contains(&c.name) || !(opts.only.is_empty() || opts.only.contains(&c.name))
        {
            continue;
        }
        let start = Instant::now();
        let source = if dry {
            crate::fetch::cached(c, layout, &opts.fetch)?
        } else {
            Some(crate::fetch::fetch_for_plan(c, layout, &opts.fetch)?)
        };
        if source.as_ref().is_some_and(|s| s.downloaded) {
            report
                .stages
                .push((format!("fetch {}", c.name), start.elapsed(), true));
        }
        let patches: Vec<PathBuf> = component_patches(layout, &c.name, &c.version)?
            .into_iter()
            .filter(|p| variant == Variant::Patched || is_build_fix(p))
            .collect();
        let Some(source) = source else {
            planned.push(PlannedComponent {
                component: c.clone(),
                source: None,
                patches,
                stamp: None,
                decision: Decision::Run("its source is not in the cache: fetched first".into()),
            });
            continue;
        };
        let mut inputs = Inputs::default();
        inputs.add("recipe", RECIPE);
        // As built for the target (its build_requires' `{multiarch}` filled in).
        inputs.add(
            "bundle.toml component",
            toml::to_string(&c.for_target(&target))?,
        );
        inputs.add("source", source.content.clone());
        inputs.add("go version", go_version);
        // The bundle's name and version reach a binary only through `{stamp}` (runc's and
        // containerd's version strings): other components (k3s, CoreDNS) are not rebuilt when
        // only the bundle's version changes. (In this place, so that the stamps of those that
        // use it stay as they were.)
        if c.uses_stamp() {
            inputs.add("bundle name and version", config.stamp());
        }
        inputs.add(
            "source_date_epoch",
            config.bundle.source_date_epoch.to_string(),
        );
        inputs.add("variant", variant.as_str());
        // A cross build's GOARCH and C cross compiler (a native build has none, and its stamps
        // stay as they were before the architecture was a choice).
        if target.is_cross() {
            inputs.add(
                "cross-compilation",
                format!("{:?}", target.go_cross_env(true)),
            );
        }
        for p in &patches {
            let name = p.strip_prefix(&layout.repo).unwrap_or(p);
            inputs.add(name.display().to_string(), sha256_file(p)?);
        }
        let stamp = Stamp::new(
            &layout.stamps(),
            &format!("build-{}-{}", variant.as_str(), c.name),
            inputs,
        );
        // Each stamp is checked once (it hashes every output): its record, when fresh, is the
        // build.
        let check = Instant::now();
        let decision = Decision::checked(&stamp, report, format!("build {}", c.name), check);
        planned.push(PlannedComponent {
            component: c.clone(),
            source: Some(source),
            patches,
            stamp: Some(stamp),
            decision,
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

/// The `[plan]` lines a run prints before it starts.
fn announce(planned: &[PlannedComponent], variant: Variant) {
    for p in planned {
        let what = if p.decision.is_fresh() {
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
    let planned = plan_components(config, layout, opts, variant, &go_version, false, report)?;
    announce(&planned, variant);
    run_components(
        config,
        layout,
        opts,
        variant,
        (&go, &go_version),
        planned,
        report,
    )
}

/// Patch, prepare and build the planned components that must be, as the plan decided.
fn run_components(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    variant: Variant,
    (go, go_version): (&Go, &str),
    planned: Vec<PlannedComponent>,
    report: &mut Report,
) -> Result<Vec<BuiltComponent>> {
    let mut built = Vec::new();
    for p in planned {
        let c = &p.component;
        let (Some(mut source), Some(stamp)) = (p.source, p.stamp) else {
            bail!("{}: planned without its source; a run fetches it", c.name);
        };
        let out_dir = layout.out_bin(variant);
        let build = match p.decision {
            Decision::Fresh(record) => record,
            Decision::Run(_) => {
                stamp.clear();
                // The tree is read now: re-hashed first (planning did not).
                source = crate::fetch::reverified(c, layout, &opts.fetch, source)?;
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
                        &source.dir,
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
                        go,
                        go_version,
                        stamp: &config.stamp(),
                        source_date_epoch: config.bundle.source_date_epoch,
                        prepared: &prepared.placeholders,
                        target: config.target()?,
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
                stamp.record_with(&outputs, &build)?;
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
            source,
            patches: p.patches,
            build,
        });
    }
    Ok(built)
}

/// The runtime crates' stamp, outputs and freshness.
pub struct CratesPlan {
    stamp: Stamp,
    pub outputs: Vec<PathBuf>,
    pub decision: Decision<serde_json::Value>,
}

fn plan_crates(config: &BundleConfig, layout: &Layout, report: &mut Report) -> Result<CratesPlan> {
    let start = Instant::now();
    let mut inputs = Inputs::default();
    inputs.add("recipe", RECIPE);
    inputs.add("crates/", sha256_tree(&layout.repo.join("crates"))?);
    inputs.add("Cargo.lock", sha256_file(&layout.repo.join("Cargo.lock"))?);
    inputs.add("Cargo.toml", sha256_file(&layout.repo.join("Cargo.toml"))?);
    inputs.add("rustc version", rustc_version()?);
    inputs.add("RUSTFLAGS", cargo_rustflags(layout));
    let target = config.target()?;
    inputs.add("cargo arguments", cargo_args(config, &target).join(" "));
    if target.is_cross() {
        inputs.add("cross-compilation", cargo_cross_env(&target));
    }
    let stamp = Stamp::new(&layout.stamps(), "build-crates", inputs);
    let outputs: Vec<PathBuf> = config
        .crates_for_arch()
        .map(|c| layout.crates_bin().join(&c.package))
        .collect();
    let decision = Decision::checked(&stamp, report, "build crates".into(), start);
    Ok(CratesPlan {
        stamp,
        outputs,
        decision,
    })
}

/// Build our runtime crates (statically linked), unless nothing under crates/ changed.
pub fn build_crates(
    config: &BundleConfig,
    layout: &Layout,
    report: &mut Report,
) -> Result<Vec<PathBuf>> {
    let plan = plan_crates(config, layout, report)?;
    run_crates(config, layout, plan, report)
}

fn run_crates(
    config: &BundleConfig,
    layout: &Layout,
    plan: CratesPlan,
    report: &mut Report,
) -> Result<Vec<PathBuf>> {
    if plan.decision.is_fresh() {
        step("build", "runtime crates: up to date, nothing to do");
        return Ok(plan.outputs);
    }
    report.time("build crates".into(), || {
        let start = Instant::now();
        let target = config.target()?;
        let log = layout.logs().join("build-crates.log");
        let outputs = cargo_build(config, layout, &target, &log)?;
        step(
            "build",
            format!(
                "runtime crates ({}): built in {:.0?}",
                config
                    .crates_for_arch()
                    .map(|c| c.package.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                start.elapsed()
            ),
        );
        plan.stamp.record(&outputs)?;
        Ok(outputs)
    })
}

/// The binaries images are made of: runc and containerd, rebuilt for a new bundle version
/// (their `{stamp}`), do not make the images again.
fn image_binaries(config: &BundleConfig) -> BTreeSet<&str> {
    use crate::image;
    config
        .images
        .iter()
        .filter_map(|spec| match &spec.source {
            image::ImageSource::Build(build) => Some(build),
            image::ImageSource::Registry(_) => None,
        })
        .flat_map(|build| &build.files)
        .filter_map(|file| match file.from.for_arch(config.bundle.arch) {
            Ok(image::FileOrigin::Built(name)) => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

/// The images stage's stamp and freshness; its inputs include the binaries in `built` that
/// images are made of.
pub struct ImagesPlan {
    stamp: Stamp,
    built: BTreeMap<String, PathBuf>,
    pub decision: Decision<Vec<ImageOutput>>,
}

fn plan_images(
    config: &BundleConfig,
    layout: &Layout,
    built: BTreeMap<String, PathBuf>,
    report: &mut Report,
) -> Result<ImagesPlan> {
    use crate::image;
    let start = Instant::now();
    let mut inputs = Inputs::default();
    inputs.add("recipe", RECIPE);
    inputs.add(
        "source_date_epoch",
        config.bundle.source_date_epoch.to_string(),
    );
    inputs.add("platform", config.target()?.platform());
    let used = image_binaries(config);
    for (name, path) in built
        .iter()
        .filter(|(name, _)| used.contains(name.as_str()))
    {
        inputs.add(
            format!("binary {name}"),
            format!("{name} {}", sha256_file(path)?),
        );
    }
    for spec in &config.images {
        // Host files are pinned by sha256 in the spec itself (checked when the image is built);
        // the repository's files by their content here.
        inputs.add(format!("image {}", spec.name), format!("{spec:?}"));
        if let image::ImageSource::Build(build) = &spec.source {
            for file in &build.files {
                let from = file
                    .from
                    .for_arch(config.bundle.arch)
                    .with_context(|| format!("image {}: {}", spec.name, file.path))?;
                if let image::FileOrigin::Repo(path) = from {
                    let full = image::repo_file(&layout.repo, path)?;
                    inputs.add(
                        path.display().to_string(),
                        format!("{} {}", path.display(), sha256_file(&full)?),
                    );
                }
            }
        }
    }
    let stamp = Stamp::new(&layout.stamps(), "images", inputs);
    // A fresh stamp's record holds what the manifest needs (names, references, digests), so
    // the archives are not assembled again.
    let decision = Decision::checked(&stamp, report, "images".into(), start);
    Ok(ImagesPlan {
        stamp,
        built,
        decision,
    })
}

/// Build or pull every `[[image]]` into OCI archives, unless the plan found them up to date.
fn run_images(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    plan: ImagesPlan,
    report: &mut Report,
) -> Result<Vec<(BundleFile, ImageRecord)>> {
    use crate::image::{self, ImageContext};
    let ctx = ImageContext {
        cache_dir: layout.cache.clone(),
        out_dir: layout.work.join("out/images"),
        source_date_epoch: config.bundle.source_date_epoch,
        offline: opts.fetch.offline,
        built: plan.built,
        repo: layout.repo.clone(),
        arch: config.bundle.arch,
    };
    let outputs = match plan.decision {
        Decision::Fresh(outputs) => {
            step(
                "image",
                format!("{} image(s): up to date, nothing to do", outputs.len()),
            );
            outputs
        }
        Decision::Run(_) => {
            let start = Instant::now();
            let outputs = image::build_images(&config.images, &ctx)?;
            for o in &outputs {
                step(
                    "image",
                    format!("{} ({}): {}", o.name, o.reference, o.digest),
                );
            }
            let files: Vec<PathBuf> = outputs.iter().map(|o| o.file.clone()).collect();
            plan.stamp.record_with(&files, &outputs)?;
            report.stages.push(("images".into(), start.elapsed(), true));
            outputs
        }
    };
    image_records(outputs)
}

/// Each image's archive as a bundle file, and its manifest record.
fn image_records(outputs: Vec<ImageOutput>) -> Result<Vec<(BundleFile, ImageRecord)>> {
    use crate::image::ImageOrigin;
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

/// The package stage: the bundle's files and manifest, the tarballs it writes, its stamp and
/// freshness.
pub struct PackagePlan {
    name: String,
    /// One per format (bundle.toml `formats`).
    pub tarballs: Vec<PathBuf>,
    /// The `.tar.gz`.
    tarball: PathBuf,
    files: Vec<BundleFile>,
    /// Our Helm charts: each chart's directory, its name, and where it is packed.
    charts: Vec<(PathBuf, String, PathBuf)>,
    manifest: Manifest,
    stamp: Stamp,
    pub decision: Decision<serde_json::Value>,
}

/// What the package would hold, and whether the tarballs on disk already are that.
fn plan_package(
    config: &BundleConfig,
    layout: &Layout,
    inputs: PackageInputs,
    report: &mut Report,
) -> Result<PackagePlan> {
    let start = Instant::now();
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
    let target = config.target()?;
    for (spec, path) in config.crates_for_arch().zip(inputs.crates) {
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
                "{}cargo {} (RUSTFLAGS: -C target-feature=+crt-static, paths remapped)",
                cargo_cross_env(&target),
                cargo_args(config, &target).join(" ")
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
    // (`<name>/Chart.yaml`, ...) into a deterministic tar.gz (when the package is made); the
    // installer hands it to k3s's helm-controller as a HelmChart's chartContent.
    let charts_dir = layout.repo.join("charts");
    let mut charts = Vec::new();
    if charts_dir.is_dir() {
        let packed_dir = layout.stage().join("charts");
        for entry in crate::fsutil::sorted_dirs(&charts_dir)? {
            let name = entry.file_name().unwrap().to_string_lossy().to_string();
            if !entry.join("Chart.yaml").is_file() {
                bail!("{} has no Chart.yaml: not a Helm chart", entry.display());
            }
            let packed = packed_dir.join(format!("{name}.tgz"));
            files.push(BundleFile::file(
                packed.clone(),
                format!("{}/{name}.tgz", in_bundle::CHARTS_DIR),
            ));
            charts.push((entry, name, packed));
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
    // The crates this architecture's bundles cannot hold, with bundle.toml's reason.
    let not_on_this_arch = config
        .crates
        .iter()
        .filter_map(|c| {
            let reason = c.not_built_for.get(&config.bundle.arch)?;
            Some(OmittedRecord {
                name: c.package.clone(),
                reason: format!("not built for {}: {reason}", config.bundle.arch),
            })
        })
        .collect();
    let manifest = Manifest {
        name: config.bundle.name.clone(),
        version: config.bundle.version.clone(),
        arch: config.bundle.arch,
        source_date_epoch: config.bundle.source_date_epoch,
        components: records,
        images,
        omitted,
        not_on_this_arch,
    };
    let mut key = Inputs::default();
    key.add("recipe", RECIPE);
    key.add("tarballs", format!("{tarballs:?}"));
    key.add("compression", crate::package::compression_settings());
    key.add(
        bundle_format::MANIFEST_FILE,
        serde_json::to_string(&manifest)?,
    );
    key.add(
        "bundle-template/",
        sha256_tree(&layout.repo.join("bundle-template"))?,
    );
    key.add("overlays/", sha256_tree(&layout.repo.join("overlays"))?);
    key.add(
        "charts/",
        if charts_dir.is_dir() {
            sha256_tree(&charts_dir)?
        } else {
            String::new()
        },
    );
    for f in &files {
        key.add(format!("in the bundle: {}", f.to), f.to.clone());
    }
    let stamp = Stamp::new(&layout.stamps(), "package", key);
    let decision = Decision::checked(&stamp, report, "package".into(), start);
    Ok(PackagePlan {
        name,
        tarballs,
        tarball,
        files,
        charts,
        manifest,
        stamp,
        decision,
    })
}

/// Stage and write the tarballs (bundle.toml's `formats`) and their `.sha256`, unless the
/// plan found them up to date. Returns the `.tar.gz`.
fn run_package(
    config: &BundleConfig,
    layout: &Layout,
    plan: PackagePlan,
    report: &mut Report,
) -> Result<PathBuf> {
    let PackagePlan {
        name,
        tarballs,
        tarball,
        files,
        charts,
        manifest,
        stamp,
        decision,
    } = plan;
    let listed = tarballs
        .iter()
        .map(|t| t.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ");
    if decision.is_fresh() {
        step("package", format!("{listed}: up to date, nothing to do"));
        return Ok(tarball);
    }
    report.time("package".into(), || {
        for (dir, name, packed) in &charts {
            package::write_tarball(dir, name, packed, config.bundle.source_date_epoch)?;
        }
        let root = layout.stage().join(&name);
        let template = layout.repo.join("bundle-template");
        let overlays = layout.repo.join("overlays");
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
        // The staging tree is a copy of the tarball's contents (hundreds of MB), of no use
        // once the tarballs hold it; a CI machine's disk ran out with it kept (stop 32).
        crate::fsutil::remove_tree(&layout.stage())?;
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

/// The whole bundle, planned: every component's source (fetched, or with `dry` only looked up
/// in the caches) and build decision, the crates', the images' and the package's, each stamp
/// checked once. With `dry` nothing is fetched, built or written.
pub struct Plan {
    pub components: Vec<PlannedComponent>,
    pub crates: CratesPlan,
    pub images: Stage<ImagesPlan>,
    pub package: Stage<PackagePlan>,
    go: Go,
    go_version: String,
    without: Vec<String>,
}

/// Every binary the build makes, by name (for images made of them): the components' from
/// their records, the crates' where they land.
fn built_binaries<'a>(
    config: &BundleConfig,
    components: impl Iterator<Item = &'a ComponentBuild>,
    crates: &[PathBuf],
) -> BTreeMap<String, PathBuf> {
    components
        .flat_map(|c| &c.binaries)
        .map(|b| (b.name.clone(), b.path.clone()))
        .chain(
            config
                .crates_for_arch()
                .zip(crates)
                .map(|(c, p)| (c.package.clone(), p.clone())),
        )
        .collect()
}

/// Plan the whole bundle (see [`Plan`]).
pub fn plan(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    dry: bool,
    report: &mut Report,
) -> Result<Plan> {
    if !opts.only.is_empty() {
        bail!("a bundle holds every component: --component is for `cargo xtask build`");
    }
    let go = Go::new(layout, opts.fetch.offline);
    let go_version = go.version()?;
    let components = plan_components(
        config,
        layout,
        opts,
        Variant::Patched,
        &go_version,
        dry,
        report,
    )?;
    let crates = plan_crates(config, layout, report)?;
    // The images are decided now unless a binary they are made of will be built first.
    let used = image_binaries(config);
    let mut first: Vec<String> = components
        .iter()
        .filter(|p| !p.decision.is_fresh())
        .filter(|p| {
            p.component
                .binaries
                .iter()
                .any(|b| used.contains(b.name.as_str()))
        })
        .map(|p| p.component.name.clone())
        .collect();
    if !crates.decision.is_fresh()
        && config
            .crates_for_arch()
            .any(|c| used.contains(c.package.as_str()))
    {
        first.push("runtime crates".into());
    }
    let fresh_builds = || {
        components.iter().filter_map(|p| match &p.decision {
            Decision::Fresh(build) => Some(build),
            Decision::Run(_) => None,
        })
    };
    let images = if first.is_empty() {
        let built = built_binaries(config, fresh_builds(), &crates.outputs);
        Stage::Planned(plan_images(config, layout, built, report)?)
    } else {
        Stage::Later(format!(
            "made of binaries built first ({}): decided once they are",
            first.join(", ")
        ))
    };
    // The package is decided now only if everything it is made of is up to date.
    let mut stale: Vec<String> = components
        .iter()
        .filter(|p| !p.decision.is_fresh())
        .map(|p| p.component.name.clone())
        .collect();
    if !crates.decision.is_fresh() {
        stale.push("runtime crates".into());
    }
    let package = match &images {
        Stage::Planned(ImagesPlan {
            decision: Decision::Fresh(outputs),
            ..
        }) if stale.is_empty() => {
            let built: Vec<BuiltComponent> = components
                .iter()
                .map(|p| {
                    let Decision::Fresh(build) = &p.decision else {
                        unreachable!("every component is fresh")
                    };
                    BuiltComponent {
                        component: p.component.clone(),
                        source: p.source.clone().expect("a fresh component has its source"),
                        patches: p.patches.clone(),
                        build: build.clone(),
                    }
                })
                .collect();
            let inputs = PackageInputs {
                components: &built,
                crates: &crates.outputs,
                images: image_records(outputs.clone())?,
                without: &opts.without,
            };
            Stage::Planned(plan_package(config, layout, inputs, report)?)
        }
        _ => {
            if !matches!(&images, Stage::Planned(i) if i.decision.is_fresh()) {
                stale.push("images".into());
            }
            Stage::Later(format!(
                "made of what is built first ({}): decided once it is",
                stale.join(", ")
            ))
        }
    };
    Ok(Plan {
        components,
        crates,
        images,
        package,
        go,
        go_version,
        without: opts.without.clone(),
    })
}

/// Run a plan (made without `dry`): build what it says must be, decide and run the stages it
/// left for later; returns the tarball.
pub fn run(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    plan: Plan,
    report: &mut Report,
) -> Result<PathBuf> {
    let Plan {
        components,
        crates,
        images,
        package,
        go,
        go_version,
        without,
    } = plan;
    let components = run_components(
        config,
        layout,
        opts,
        Variant::Patched,
        (&go, &go_version),
        components,
        report,
    )?;
    let crates = run_crates(config, layout, crates, report)?;
    let package = match package {
        Stage::Planned(package) => {
            // Planned up front only when the images were up to date.
            if let Stage::Planned(ImagesPlan {
                decision: Decision::Fresh(outputs),
                ..
            }) = &images
            {
                step(
                    "image",
                    format!("{} image(s): up to date, nothing to do", outputs.len()),
                );
            }
            package
        }
        Stage::Later(_) => {
            let images = match images {
                Stage::Planned(images) => images,
                Stage::Later(_) => {
                    let built =
                        built_binaries(config, components.iter().map(|c| &c.build), &crates);
                    plan_images(config, layout, built, report)?
                }
            };
            let images = run_images(config, layout, opts, images, report)?;
            let inputs = PackageInputs {
                components: &components,
                crates: &crates,
                images,
                without: &without,
            };
            plan_package(config, layout, inputs, report)?
        }
    };
    run_package(config, layout, package, report)
}

/// The whole pipeline, planned then run; returns the tarball.
pub fn bundle(
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    report: &mut Report,
) -> Result<PathBuf> {
    let plan = plan(config, layout, opts, false, report)?;
    announce(&plan.components, Variant::Patched);
    run(config, layout, opts, plan, report)
}
