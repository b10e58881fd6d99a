//! The second bundle of the e2e's upgrade steps (tests/e2e/upgrade.sh): bundle.toml with the
//! version's `gvisor.N` raised by one, built in a work dir of its own (kept between runs). That
//! work dir is seeded with copies of the main work dir's stamps and their outputs, so only what
//! carries the bundle's version is made again: runc and containerd (their `{stamp}` ldflag) and
//! the package; k3s, CoreDNS, the crates and the images are the main build's.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::config::BundleConfig;
use crate::layout::Layout;
use crate::package::Format;
use crate::pipeline::{self, Options, Report};

/// What was built, and what it cost.
pub struct NextBundle {
    pub tarball: PathBuf,
    pub version: String,
    pub took: Duration,
    /// The stages that did work, each with its time.
    pub stages: Vec<(String, Duration)>,
}

/// `v1.34.1+k3s1-gvisor.2` -> `v1.34.1+k3s1-gvisor.3`.
pub fn next_version(version: &str) -> Result<String> {
    let (base, n) = version.rsplit_once("-gvisor.").with_context(|| {
        format!("bundle version {version:?} does not end in -gvisor.N (bundle.toml)")
    })?;
    let n: u64 = n
        .parse()
        .with_context(|| format!("bundle version {version:?}: gvisor.N is not a number"))?;
    Ok(format!("{base}-gvisor.{}", n + 1))
}

/// bundle.toml's text with `[bundle] version` replaced; the line must occur exactly once.
fn with_version(text: &str, old: &str, new: &str) -> Result<String> {
    let line = format!("version = \"{old}\"");
    match text.matches(&line).count() {
        1 => Ok(text.replacen(&line, &format!("version = \"{new}\""), 1)),
        n => bail!("bundle.toml has {n} lines `{line}`, expected exactly one"),
    }
}

/// Builds the next bundle under `dir` (its bundle.toml, work/ and dist/).
pub fn build(
    config_path: &Path,
    pins: Option<&Path>,
    config: &BundleConfig,
    layout: &Layout,
    opts: &Options,
    dir: &Path,
) -> Result<NextBundle> {
    let start = Instant::now();
    let version = next_version(&config.bundle.version)?;
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    std::fs::create_dir_all(dir)?;
    let next_config_path = dir.join("bundle.toml");
    std::fs::write(
        &next_config_path,
        with_version(&text, &config.bundle.version, &version)?,
    )?;
    // The same releases as the first bundle (`--pins`), only the version differs.
    let mut next_config = BundleConfig::load_with_pins(&next_config_path, pins)?;
    // The upgrade steps unpack the .tar.gz; a zstd of it would cost a minute for nothing.
    next_config.bundle.formats = vec![Format::TarGz];
    let next = Layout {
        repo: layout.repo.clone(),
        cache: layout.cache.clone(),
        work: dir.join("work"),
        dist: dir.join("dist"),
        go_env: layout.go_env.clone(),
        // The same crates, built with the same RUSTFLAGS (they name the target dir): the
        // seeded stamp holds.
        shared_cargo_target: Some(layout.cargo_target()),
    };
    seed(&layout.work, &next.work, &dir.join("seeded"))?;
    let mut report = Report::default();
    let tarball = pipeline::bundle(&next_config, &next, opts, &mut report)?;
    Ok(NextBundle {
        tarball,
        version,
        took: start.elapsed(),
        stages: report
            .stages
            .into_iter()
            .filter(|s| s.2)
            .map(|(name, took, _)| (name, took))
            .collect(),
    })
}

/// Brings each of the main work dir's stamps, with the outputs it names, into the next one: a
/// copy (`cp -a`: never a link, so a rebuild here cannot touch the main work dir's files) with
/// its paths moved over to the copies. A stamp the main work dir still has as it was at the
/// last seeding is left alone: the next work dir's own (runc, containerd rebuilt with the next
/// version) is the one to keep, and a second e2e run rebuilds nothing. `seeded` remembers each
/// stamp as copied.
fn seed(main: &Path, next: &Path, seeded: &Path) -> Result<()> {
    std::fs::create_dir_all(next.join("stamps"))?;
    std::fs::create_dir_all(seeded)?;
    for entry in std::fs::read_dir(main.join("stamps")).into_iter().flatten() {
        let path = entry?.path();
        let name = path.file_name().context("a stamp has a name")?;
        let text = std::fs::read_to_string(&path)?;
        let unchanged = std::fs::read_to_string(seeded.join(name)).is_ok_and(|t| t == text);
        if unchanged && next.join("stamps").join(name).exists() {
            continue;
        }
        let mut stamp: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a stamp", path.display()))?;
        let outputs: Vec<PathBuf> = stamp["outputs"]
            .as_object()
            .map(|o| o.keys().map(PathBuf::from).collect())
            .unwrap_or_default();
        if outputs.is_empty() || !outputs.iter().all(|o| o.is_file()) {
            continue;
        }
        // Outputs elsewhere (a work dir copied from another checkout keeps its stamps' paths;
        // the package's tarball in the dist dir) stay where they are, as the stamp says.
        for output in outputs.iter().filter(|o| o.starts_with(main)) {
            let to = next.join(output.strip_prefix(main)?);
            std::fs::create_dir_all(to.parent().context("an output has a dir")?)?;
            let status = Command::new("cp")
                .arg("-a")
                .arg(output)
                .arg(&to)
                .status()
                .context("cannot run cp")?;
            if !status.success() {
                bail!(
                    "cp -a {} {} failed ({status})",
                    output.display(),
                    to.display()
                );
            }
        }
        rebase(&mut stamp, main, next);
        std::fs::write(
            next.join("stamps").join(name),
            serde_json::to_vec_pretty(&stamp)?,
        )?;
        std::fs::write(seeded.join(name), &text)?;
    }
    Ok(())
}

/// Every path under `from` in a stamp (its outputs' keys, its record's binaries) now under `to`.
fn rebase(value: &mut serde_json::Value, from: &Path, to: &Path) {
    let moved = |text: &str| {
        Path::new(text)
            .strip_prefix(from)
            .ok()
            .map(|rest| to.join(rest).display().to_string())
    };
    match value {
        serde_json::Value::String(text) => {
            if let Some(new) = moved(text) {
                *text = new;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| rebase(v, from, to)),
        serde_json::Value::Object(map) => {
            let old = std::mem::take(map);
            for (key, mut v) in old {
                rebase(&mut v, from, to);
                map.insert(moved(&key).unwrap_or(key), v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_version_raises_gvisor_n() {
        assert_eq!(
            next_version("v1.34.1+k3s1-gvisor.2").unwrap(),
            "v1.34.1+k3s1-gvisor.3"
        );
        assert_eq!(
            next_version("v1.34.1+k3s1-gvisor.9").unwrap(),
            "v1.34.1+k3s1-gvisor.10"
        );
        assert!(next_version("v1.34.1+k3s1").is_err());
    }

    #[test]
    fn only_the_bundle_version_line_changes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bundle.toml");
        let config = BundleConfig::load(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let next = next_version(&config.bundle.version).unwrap();
        let changed =
            BundleConfig::parse(&with_version(&text, &config.bundle.version, &next).unwrap())
                .unwrap();
        assert_eq!(changed.bundle.version, next);
        for (a, b) in config.components.iter().zip(&changed.components) {
            assert_eq!(a.version, b.version);
        }
        assert!(with_version(&text, "v0.0.0-nothing", &next).is_err());
    }

    #[test]
    fn stamps_point_at_the_copies() {
        let mut stamp = serde_json::json!({
            "inputs": "abc",
            "outputs": {"/w/main/out/patched/bin/runc": "h"},
            "record": {"binaries": [{"path": "/w/main/out/patched/bin/runc", "name": "runc"}]},
        });
        rebase(&mut stamp, Path::new("/w/main"), Path::new("/w/next/work"));
        assert_eq!(
            stamp,
            serde_json::json!({
                "inputs": "abc",
                "outputs": {"/w/next/work/out/patched/bin/runc": "h"},
                "record": {"binaries": [{"path": "/w/next/work/out/patched/bin/runc", "name": "runc"}]},
            })
        );
    }
}
