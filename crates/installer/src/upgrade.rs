//! Upgrade in place: `./install` from a newer bundle over an existing install, or `./install
//! upgrade`. As k3s's install.sh does when run again with a newer `INSTALL_K3S_VERSION`, the
//! binaries are replaced and the cluster stays: the data dir (datastore, certificates, token,
//! node identity) and everything `state.json` records are kept; only the prefix is new.
//!
//! Order: check the new bundle (touching nothing), compare versions (a downgrade is refused
//! unless `--force`), stop, move the prefix aside to `PREFIX.previous` (recorded in the state
//! first, so uninstall never loses it), lay the new bundle out, start, and remove the previous
//! prefix once the new version runs. Anything failing after the stop puts the old prefix back
//! and starts the old version again.

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::bundle::{Bundle, Manifest};
use crate::copy_bundle;
use crate::lifecycle;
use crate::paths::Paths;
use crate::preflight;
use crate::services;
use crate::state::State;
use bundle_format::paths as in_bundle;

/// What was asked of an existing install.
pub struct Request {
    /// The bundle to install (default: the one this installer came in).
    pub bundle_dir: Option<PathBuf>,
    /// Go ahead even when the bundle is older (a downgrade) or its version cannot be compared.
    pub force: bool,
    pub no_start: bool,
    /// `./install --prefix`: the install keeps its own prefix; a different one is only noted.
    pub prefix: Option<PathBuf>,
}

/// `./install` over an existing install, or `./install upgrade`: the same version is left as
/// it is (and started), a newer one upgrades, an older one is refused unless `--force`.
pub fn over_existing(state: State, request: &Request) -> Result<()> {
    let bundle = Bundle::locate(request.bundle_dir.as_deref())?;
    if let Some(asked) = &request.prefix {
        let asked = Paths::new(asked, &state.data_dir).prefix;
        if asked != state.prefix {
            println!(
                "note: the install at data dir {} uses prefix {}; --prefix {} is not used",
                state.data_dir.display(),
                state.prefix.display(),
                asked.display()
            );
        }
    }
    let installed = state.bundle_version.clone();
    let offered = bundle.manifest.version.clone();
    match compare(&installed, &offered) {
        Ok(Ordering::Equal) => already_installed(state, request.no_start),
        Ok(Ordering::Less) => upgrade(state, &bundle, request.no_start),
        Ok(Ordering::Greater) if request.force => {
            println!("--force: downgrading from {installed} to {offered}");
            upgrade(state, &bundle, request.no_start)
        }
        Ok(Ordering::Greater) => bail!(
            "refusing to downgrade: k3s-gvisor {installed} is installed (data dir {}) and this \
             bundle is the older {offered}. Kubernetes does not support downgrades (the \
             datastore may hold what the older version cannot read). To install {offered} \
             anyway, run `./install upgrade --force --data-dir {}`; nothing was changed",
            state.data_dir.display(),
            state.data_dir.display()
        ),
        Err(_) if request.force => {
            println!("--force: replacing {installed} with {offered}");
            upgrade(state, &bundle, request.no_start)
        }
        Err(why) => bail!(
            "cannot tell whether {offered} is newer than the installed {installed}: {why:#}; \
             to install {offered} anyway, run `./install upgrade --force --data-dir {}`; \
             nothing was changed",
            state.data_dir.display()
        ),
    }
}

/// A second `./install` of the installed version is harmless: report and start what is stopped.
fn already_installed(mut state: State, no_start: bool) -> Result<()> {
    println!(
        "k3s-gvisor {} is already installed (prefix {}, data dir {}); nothing to install.",
        state.bundle_version,
        state.prefix.display(),
        state.data_dir.display()
    );
    if no_start {
        return Ok(());
    }
    lifecycle::start(&mut state)
}

/// `PREFIX.previous`, beside the prefix: on the same filesystem, so moving it is a rename.
fn previous_dir(prefix: &Path) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".previous");
    PathBuf::from(name)
}

/// Refuses, before anything changes, what an upgrade cannot do well.
fn check(state: &State, bundle: &Bundle, paths: &Paths) -> Result<()> {
    // stop kills every process running from the prefix: this one too, if it ran from there.
    if let Ok(exe) = std::env::current_exe() {
        if exe.starts_with(&paths.prefix) {
            bail!(
                "run the new bundle's ./install (or `./install upgrade`) from where it was \
                 extracted, not {}: the upgrade replaces the files under {}",
                exe.display(),
                paths.prefix.display()
            );
        }
    }
    if let Some(previous) = state.previous_prefix.as_ref().filter(|p| p.exists()) {
        bail!(
            "an earlier upgrade did not finish: the files of the version before it are still in \
             {}. Check which version works (`status`), then remove {} (or, to go back: `stop`, \
             move it to {} in place of the new files, `start`), and run the upgrade again",
            previous.display(),
            previous.display(),
            paths.prefix.display()
        );
    }
    let previous = previous_dir(&paths.prefix);
    if previous.exists() {
        bail!(
            "{} exists and is not recorded by this install: the upgrade keeps the old files \
             there while the new version starts; move it away and run the upgrade again",
            previous.display()
        );
    }
    if bundle.manifest.name != state.bundle_name {
        bail!(
            "this bundle is {} and the install is {}: uninstall it and install this one",
            bundle.manifest.name,
            state.bundle_name
        );
    }
    let had_k3s = services::has_k3s(paths);
    if had_k3s != bundle.path(in_bundle::K3S).is_file() {
        bail!(
            "the installed bundle {} k3s and this one {}: what runs differs too much for an \
             upgrade in place; uninstall and install this bundle",
            if had_k3s { "has" } else { "has no" },
            if had_k3s { "has none" } else { "has it" },
        );
    }
    Ok(())
}

/// The fields an upgrade changes in the state, to put back on a rollback.
struct Changed {
    bundle_version: String,
    workarounds: Vec<String>,
    read_only_procsys: Vec<String>,
    addons_off: Vec<crate::cluster::TurnedOff>,
}

impl Changed {
    fn of(state: &State) -> Changed {
        Changed {
            bundle_version: state.bundle_version.clone(),
            workarounds: state.workarounds.clone(),
            read_only_procsys: state.read_only_procsys.clone(),
            addons_off: state.addons_off.clone(),
        }
    }

    fn restore(self, state: &mut State) {
        state.bundle_version = self.bundle_version;
        state.workarounds = self.workarounds;
        state.read_only_procsys = self.read_only_procsys;
        state.addons_off = self.addons_off;
    }
}

fn upgrade(state: State, bundle: &Bundle, no_start: bool) -> Result<()> {
    let paths = state.paths();
    let old = state.bundle_version.clone();
    let new = bundle.manifest.version.clone();
    check(&state, bundle, &paths)?;
    let plan = preflight::check_upgrade(bundle, &paths, state.snapshotter)?;
    println!(
        "upgrading k3s-gvisor {old} to {new} from {} (prefix {}, data dir {}): the data dir \
         (datastore, certificates, token, node identity) and the install's settings stay",
        bundle.dir.display(),
        paths.prefix.display(),
        paths.data_dir.display()
    );
    for line in &plan.workarounds {
        println!("workaround: {line}");
    }
    let old_manifest = crate::copy_bundle::installed(&paths).map(|old| old.manifest);
    let previous = previous_dir(&paths.prefix);
    let kept = Changed::of(&state);
    lifecycle::stop(&state)?;
    let mut state = state;
    match replace_and_start(&mut state, bundle, &plan, &previous, no_start) {
        Ok(()) => {
            if let Err(error) = crate::mounts::remove_tree_on_one_fs(&previous) {
                println!(
                    "warning: cannot remove the previous version's files {}: {error}; remove \
                     them by hand",
                    previous.display()
                );
            }
            state.previous_prefix = None;
            state.save()?;
            println!("upgraded k3s-gvisor {old} to {new}:");
            match &old_manifest {
                Ok(old_manifest) => {
                    for line in changes(old_manifest, &bundle.manifest) {
                        println!("  {line}");
                    }
                }
                Err(error) => println!("  (the previous manifest could not be read: {error:#})"),
            }
            Ok(())
        }
        Err(why) => {
            // In full here (with the daemon's last log lines); the last line says it briefly.
            eprintln!("upgrade to {new} failed: {why:#}\nputting {old} back");
            let why = summary(&why);
            match roll_back(&paths, &previous, kept, !no_start) {
                Ok(()) if no_start => bail!(
                    "upgrade to {new} failed: {why}; {old} is back in {} (not started: \
                     --no-start)",
                    paths.prefix.display()
                ),
                Ok(()) => bail!("upgrade to {new} failed: {why}; {old} is running again"),
                Err(again) => bail!(
                    "upgrade to {new} failed: {why}; putting {old} back failed too: {again:#}. \
                     The state file {} says what is where; `logs` shows why the daemons stopped",
                    paths.state_file().display()
                ),
            }
        }
    }
}

/// The first line of an error, without the log lines a daemon's failure carries after it.
fn summary(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    let first = text.lines().next().unwrap_or_default();
    first
        .split("; last lines of ")
        .next()
        .unwrap_or(first)
        .trim_end_matches(':')
        .to_string()
}

/// Everything after the stop: move the prefix aside, lay the new bundle out, start it.
fn replace_and_start(
    state: &mut State,
    bundle: &Bundle,
    plan: &preflight::Plan,
    previous: &Path,
    no_start: bool,
) -> Result<()> {
    let paths = state.paths();
    // Recorded before the move: whatever happens next, uninstall knows where the old files are.
    state.previous_prefix = Some(previous.to_path_buf());
    state.save()?;
    fs::rename(&paths.prefix, previous).with_context(|| {
        format!(
            "cannot move {} aside to {}",
            paths.prefix.display(),
            previous.display()
        )
    })?;
    fs::create_dir(&paths.prefix)
        .with_context(|| format!("cannot create {}", paths.prefix.display()))?;
    if let Ok(meta) = fs::metadata(previous) {
        let _ = fs::set_permissions(&paths.prefix, meta.permissions());
    }
    copy_bundle::lay_out(bundle, &paths, plan)?;
    keep_pod_range(previous, &paths)?;
    state.bundle_version = bundle.manifest.version.clone();
    state.workarounds = plan.workarounds.clone();
    state.read_only_procsys = plan.facts.read_only_procsys.clone();
    redecide_addons(state, bundle);
    state.save()?;
    println!(
        "installed the files of {} under {}",
        bundle.manifest.version,
        paths.prefix.display()
    );
    if no_start {
        println!("--no-start: not starting; run `./install start` when ready");
        return Ok(());
    }
    lifecycle::start(state)
}

/// Which k3s add-ons run depends on the images a bundle ships (`cluster::addons_off`), so a
/// server decides again with the new manifest, the rest as at install (kube-proxy's verdict
/// is the host's and stays). k3s deploys an add-on no longer disabled and removes one newly
/// disabled, as it does when its own `--disable` changes.
fn redecide_addons(state: &mut State, bundle: &Bundle) {
    if state.is_agent() || !bundle.path(in_bundle::K3S).is_file() {
        return;
    }
    let service_proxy = crate::cluster::ServiceProxy::decide(
        state.control_plane_only,
        state.kube_proxy_off.as_deref(),
        bundle.path(in_bundle::SVCPROXY).is_file(),
    );
    let install = crate::cluster::Install {
        control_plane_only: state.control_plane_only,
        no_service_proxy: matches!(service_proxy, crate::cluster::ServiceProxy::Nothing { .. }),
        kubelet_stats_blocker: crate::cluster::kubelet_stats_blocker(),
    };
    let now = crate::cluster::addons_off(&bundle.manifest, &install);
    for addon in &now {
        if !state.addons_off.iter().any(|a| a.name == addon.name) {
            println!(
                "k3s: add-on {} now off (--disable): {}",
                addon.name, addon.reason
            );
        }
    }
    for addon in &state.addons_off {
        if !now.iter().any(|a| a.name == addon.name) {
            println!(
                "k3s: add-on {} now on (this bundle ships what it needs)",
                addon.name
            );
        }
    }
    state.addons_off = now;
}

/// With k3s the CNI config is written at start, once k3s has given the node its pod range
/// (`cni_host::write_pod_range`), so a fresh prefix has none. The node and its range are the
/// same after an upgrade: the new templates are written with the range the previous config
/// had, before anything starts. Without this, measured in the e2e (current gVisor), the
/// restarted kubelet met old sandboxes and pods before the config existed and logged
/// `StopPodSandbox ... failed to destroy network for sandbox ...: cni plugin not initialized`
/// for each, tearing them down only at its next garbage collection.
fn keep_pod_range(previous: &Path, paths: &Paths) -> Result<()> {
    if !paths.cni_template_dir().is_dir() {
        return Ok(());
    }
    let old_conf_dir = Paths::new(previous, &paths.data_dir).cni_conf_dir();
    let range = fs::read_dir(&old_conf_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| fs::read_to_string(entry.path()).ok())
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .find_map(|conf| {
            conf["plugins"].as_array()?.iter().find_map(|plugin| {
                (plugin["type"] == "gvisor-cni")
                    .then(|| plugin["subnet"].as_str().map(str::to_string))?
            })
        });
    // None: the old version never started far enough to have a range; start writes it.
    if let Some(range) = range {
        crate::cni_host::write_pod_range(&paths.cni_template_dir(), &paths.cni_conf_dir(), &range)?;
        println!("CNI config: this node's pod range {range} kept");
    }
    Ok(())
}

/// Stops whatever of the new version started, puts the old prefix back, restores the state's
/// fields the upgrade changed, and starts the old version when asked.
fn roll_back(paths: &Paths, previous: &Path, kept: Changed, start: bool) -> Result<()> {
    for line in services::stop_all(paths) {
        println!("{line}");
    }
    if previous.exists() {
        if paths.prefix.exists() {
            crate::mounts::remove_tree_on_one_fs(&paths.prefix).with_context(|| {
                format!("cannot remove the new files in {}", paths.prefix.display())
            })?;
        }
        fs::rename(previous, &paths.prefix).with_context(|| {
            format!(
                "cannot move {} back to {}",
                previous.display(),
                paths.prefix.display()
            )
        })?;
    }
    // Re-read: the failed start may have recorded host changes (mounts, addresses) since.
    let mut state = State::require(&paths.data_dir)?;
    kept.restore(&mut state);
    state.previous_prefix = None;
    state.save()?;
    println!(
        "{} is back in {}",
        state.bundle_version,
        paths.prefix.display()
    );
    if start {
        lifecycle::start(&mut state)?;
    }
    Ok(())
}

/// One line per component and image: its old and new version, or that it stayed.
pub fn changes(old: &Manifest, new: &Manifest) -> Vec<String> {
    let mut lines = Vec::new();
    for component in &new.components {
        let outputs = |c: &bundle_format::ComponentRecord| {
            c.outputs
                .iter()
                .map(|o| (o.path.clone(), o.sha256.clone()))
                .collect::<Vec<_>>()
        };
        let line = match old.components.iter().find(|c| c.name == component.name) {
            None => format!("{} {} (new)", component.name, component.version),
            Some(before) if before.version != component.version => format!(
                "{} {} -> {}",
                component.name, before.version, component.version
            ),
            Some(before) if outputs(before) != outputs(component) => format!(
                "{} {} (same version, rebuilt)",
                component.name, component.version
            ),
            Some(_) => format!("{} {} (unchanged)", component.name, component.version),
        };
        lines.push(line);
    }
    for before in &old.components {
        if !new.components.iter().any(|c| c.name == before.name) {
            lines.push(format!("{} {} (removed)", before.name, before.version));
        }
    }
    for image in &new.images {
        let line = match old.images.iter().find(|i| i.name == image.name) {
            None => format!("image {} (new)", image.reference),
            Some(before) if before.reference != image.reference => {
                format!("image {} -> {}", before.reference, image.reference)
            }
            Some(before) if before.digest != image.digest => {
                format!("image {} (same name, new content)", image.reference)
            }
            Some(_) => format!("image {} (unchanged)", image.reference),
        };
        lines.push(line);
    }
    lines
}

/// A bundle version, `v1.34.1+k3s1-gvisor.2`: k3s's version, then our release of it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct BundleVersion {
    major: u64,
    minor: u64,
    patch: u64,
    /// (true, []) for a release; (false, identifiers) for a pre-release such as `-rc1`, which
    /// comes before the release (semver).
    release: (bool, Vec<Identifier>),
    /// k3s's own revision, `+k3s1`.
    k3s: u64,
    /// Ours, `-gvisor.N`.
    gvisor: u64,
}

/// A pre-release identifier, split where digits start or stop so that rc10 comes after rc9.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Identifier {
    Number(u64),
    Text(String),
}

impl BundleVersion {
    fn parse(text: &str) -> Result<BundleVersion> {
        let form = || {
            format!("{text:?} is not a bundle version (vMAJOR.MINOR.PATCH+k3sN-gvisor.N, e.g. v1.34.1+k3s1-gvisor.2)")
        };
        let number = |s: &str| s.parse::<u64>().ok().filter(|_| !s.starts_with('+'));
        let rest = text.strip_prefix('v').unwrap_or(text);
        let (k3s_version, gvisor) = rest.rsplit_once("-gvisor.").with_context(form)?;
        let gvisor = number(gvisor).with_context(form)?;
        let (core, k3s) = k3s_version.split_once("+k3s").with_context(form)?;
        let k3s = number(k3s).with_context(form)?;
        let (numbers, pre) = match core.split_once('-') {
            Some((numbers, pre)) if !pre.is_empty() => (numbers, Some(pre)),
            Some(_) => bail!(form()),
            None => (core, None),
        };
        let parts: Vec<u64> = numbers
            .split('.')
            .map(|p| number(p).with_context(form))
            .collect::<Result<_>>()?;
        let [major, minor, patch] = parts[..] else {
            bail!(form());
        };
        let release = match pre {
            None => (true, Vec::new()),
            Some(pre) => (false, identifiers(pre)),
        };
        Ok(BundleVersion {
            major,
            minor,
            patch,
            release,
            k3s,
            gvisor,
        })
    }
}

fn identifiers(pre: &str) -> Vec<Identifier> {
    let mut found = Vec::new();
    for part in pre.split('.') {
        let mut run = String::new();
        for c in part.chars() {
            if !run.is_empty() && run.chars().all(|r| r.is_ascii_digit()) != c.is_ascii_digit() {
                found.push(identifier(&run));
                run.clear();
            }
            run.push(c);
        }
        if !run.is_empty() {
            found.push(identifier(&run));
        }
    }
    found
}

fn identifier(run: &str) -> Identifier {
    run.parse()
        .map_or_else(|_| Identifier::Text(run.to_string()), Identifier::Number)
}

/// How `installed` compares with `offered`: Less means the offered bundle is newer. The k3s
/// version decides first (numerically, a pre-release before its release, then k3s's revision),
/// then our `gvisor.N`. Identical texts are equal even when they are not bundle versions.
pub fn compare(installed: &str, offered: &str) -> Result<Ordering> {
    if installed == offered {
        return Ok(Ordering::Equal);
    }
    Ok(BundleVersion::parse(installed)?.cmp(&BundleVersion::parse(offered)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_k3s_then_gvisor_numerically() {
        use Ordering::*;
        for (a, b, expected) in [
            ("v1.34.1+k3s1-gvisor.2", "v1.34.1+k3s1-gvisor.2", Equal),
            ("v1.34.1+k3s1-gvisor.2", "v1.34.1+k3s1-gvisor.3", Less),
            // Numerically, not as text.
            ("v1.34.1+k3s1-gvisor.9", "v1.34.1+k3s1-gvisor.10", Less),
            ("v1.34.9+k3s1-gvisor.1", "v1.34.10+k3s1-gvisor.1", Less),
            ("v1.9.0+k3s1-gvisor.1", "v1.10.0+k3s1-gvisor.1", Less),
            // k3s's version decides before ours.
            ("v1.34.1+k3s1-gvisor.7", "v1.34.2+k3s1-gvisor.1", Less),
            ("v1.35.0+k3s1-gvisor.1", "v1.34.1+k3s1-gvisor.5", Greater),
            ("v1.34.1+k3s1-gvisor.3", "v1.34.1+k3s2-gvisor.1", Less),
            ("v2.0.0+k3s1-gvisor.1", "v1.99.99+k3s9-gvisor.99", Greater),
            // A release candidate comes before its release; rc10 after rc9.
            ("v1.35.0-rc1+k3s1-gvisor.1", "v1.35.0+k3s1-gvisor.1", Less),
            (
                "v1.35.0-rc9+k3s1-gvisor.1",
                "v1.35.0-rc10+k3s1-gvisor.1",
                Less,
            ),
            ("v1.34.1+k3s1-gvisor.1", "v1.35.0-rc1+k3s1-gvisor.1", Less),
        ] {
            assert_eq!(compare(a, b).unwrap(), expected, "{a} vs {b}");
            assert_eq!(compare(b, a).unwrap(), expected.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn what_is_not_a_bundle_version_is_an_error_naming_it() {
        assert_eq!(
            compare("0.0.0-test", "0.0.0-test").unwrap(),
            Ordering::Equal
        );
        for bad in [
            "0.0.0-test",
            "v1.34.1+k3s1",
            "v1.34.1-gvisor.2",
            "v1.34+k3s1-gvisor.2",
            "v1.34.1.0+k3s1-gvisor.2",
            "v1.34.1+k3s1-gvisor.x",
            "v1.34.1+k3s1-gvisor.",
            "v1.34.1-+k3s1-gvisor.1",
            "v1.34.x+k3s1-gvisor.1",
        ] {
            let error = compare("v1.34.1+k3s1-gvisor.2", bad)
                .unwrap_err()
                .to_string();
            assert!(error.contains(bad) && error.contains("gvisor.N"), "{error}");
        }
    }

    #[test]
    fn the_summary_of_a_failure_is_its_first_line_without_the_log() {
        let error = anyhow::anyhow!(
            "containerd exited during startup; last lines of /d/logs/containerd.log:\nline 1\nline 2"
        );
        assert_eq!(summary(&error), "containerd exited during startup");
        let error = anyhow::anyhow!("no such file").context("cannot copy a to b");
        assert_eq!(summary(&error), "cannot copy a to b: no such file");
    }

    #[test]
    fn the_pod_range_of_the_previous_config_is_written_from_the_new_templates() {
        let dir = std::env::temp_dir().join(format!("upgrade-range-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let paths = Paths::new(&dir.join("prefix"), &dir.join("data"));
        let previous = dir.join("prefix.previous");
        // No template dir (a bundle without k3s): nothing to do.
        keep_pod_range(&previous, &paths).unwrap();
        assert!(!paths.cni_conf_dir().exists());
        fs::create_dir_all(paths.cni_template_dir()).unwrap();
        fs::write(
            paths.cni_template_dir().join("10-gvisor.conflist"),
            r#"{"name": "gvisor", "version": "new", "plugins": [{"type": "gvisor-cni", "subnet": "10.88.0.0/16"}]}"#,
        )
        .unwrap();
        // The previous version never got a range: start writes it.
        keep_pod_range(&previous, &paths).unwrap();
        assert!(!paths.cni_conf_dir().join("10-gvisor.conflist").exists());
        let old_conf = Paths::new(&previous, &paths.data_dir).cni_conf_dir();
        fs::create_dir_all(&old_conf).unwrap();
        fs::write(
            old_conf.join("10-gvisor.conflist"),
            r#"{"name": "gvisor", "version": "old", "plugins": [{"type": "gvisor-cni", "subnet": "10.42.3.0/24"}]}"#,
        )
        .unwrap();
        keep_pod_range(&previous, &paths).unwrap();
        let written: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(paths.cni_conf_dir().join("10-gvisor.conflist")).unwrap(),
        )
        .unwrap();
        assert_eq!(written["version"], "new");
        assert_eq!(written["plugins"][0]["subnet"], "10.42.3.0/24");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn add_ons_are_decided_again_with_the_new_bundles_images() {
        let dir = std::env::temp_dir().join(format!("upgrade-addons-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).unwrap();
        for name in ["k3s", "svcproxy"] {
            fs::write(dir.join("bin").join(name), "").unwrap();
        }
        let mut state: State = serde_json::from_value(serde_json::json!({
            "bundle_name": "k3s-gvisor", "bundle_version": "v1.34.1+k3s1-gvisor.2",
            "prefix": "/p", "data_dir": "/d", "control_plane_only": false,
            "snapshotter": "native", "created_dirs": [], "created_files": [], "mounts": [],
            "absent_before": [], "workarounds": [],
            "kube_proxy_off": "iptables cannot be written",
            "addons_off": [{"name": "coredns", "reason": "its image ... is not in this bundle"}],
        }))
        .unwrap();
        let shipping = manifest(
            "v1.34.1+k3s1-gvisor.3",
            &[],
            &[(
                "docker.io/rancher/mirrored-coredns-coredns:1.12.3",
                "sha256:1",
            )],
        );
        let bundle = Bundle {
            dir: dir.clone(),
            manifest: shipping,
        };
        redecide_addons(&mut state, &bundle);
        let off: Vec<&str> = state.addons_off.iter().map(|a| a.name.as_str()).collect();
        // coredns's image is shipped now and svcproxy serves Services: it runs.
        assert!(!off.contains(&"coredns"), "{off:?}");
        assert!(off.contains(&"traefik"), "{off:?}");
        // An agent has nothing to decide: the server does.
        state.server = Some("https://10.0.0.2:6443".into());
        state.addons_off.clear();
        redecide_addons(&mut state, &bundle);
        assert!(state.addons_off.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_previous_prefix_sits_beside_the_prefix() {
        assert_eq!(
            previous_dir(Path::new("/opt/k3s-gvisor")),
            Path::new("/opt/k3s-gvisor.previous")
        );
    }

    fn manifest(
        version: &str,
        components: &[(&str, &str, &str)],
        images: &[(&str, &str)],
    ) -> Manifest {
        let text = serde_json::json!({
            "name": "k3s-gvisor",
            "version": version,
            "arch": "amd64",
            "source_date_epoch": 0,
            "components": components.iter().map(|(name, version, sha)| serde_json::json!({
                "name": name,
                "version": version,
                "source": {"transport": "workspace", "location": "l", "content": "c"},
                "patches": [],
                "build_flags": [],
                "outputs": [{"path": format!("bin/{name}"), "sha256": sha}],
            })).collect::<Vec<_>>(),
            "images": images.iter().map(|(reference, digest)| serde_json::json!({
                "name": reference.split(':').next().unwrap(),
                "ref": reference,
                "source": "build",
                "digest": digest,
                "file": "images/x.tar",
                "sha256": "0",
                "sandbox": false,
            })).collect::<Vec<_>>(),
        });
        serde_json::from_value(text).unwrap()
    }

    #[test]
    fn changes_name_each_component_old_and_new() {
        let old = manifest(
            "v1.34.1+k3s1-gvisor.2",
            &[
                ("runc", "v1.3.3", "a"),
                ("k3s", "v1.34.1+k3s1", "b"),
                ("installer", "v1.34.1+k3s1-gvisor.2", "c"),
                ("gone", "v1", "d"),
            ],
            &[("pause:0.1.0", "sha256:1"), ("busybox:1", "sha256:2")],
        );
        let new = manifest(
            "v1.35.0+k3s1-gvisor.1",
            &[
                ("runc", "v1.3.3", "a2"),
                ("k3s", "v1.35.0+k3s1", "b2"),
                ("installer", "v1.35.0+k3s1-gvisor.1", "c"),
                ("svcproxy", "v1.35.0+k3s1-gvisor.1", "e"),
            ],
            &[("pause:0.1.0", "sha256:1"), ("busybox:1", "sha256:3")],
        );
        assert_eq!(
            changes(&old, &new),
            [
                "runc v1.3.3 (same version, rebuilt)",
                "k3s v1.34.1+k3s1 -> v1.35.0+k3s1",
                "installer v1.34.1+k3s1-gvisor.2 -> v1.35.0+k3s1-gvisor.1",
                "svcproxy v1.35.0+k3s1-gvisor.1 (new)",
                "gone v1 (removed)",
                "image pause:0.1.0 (unchanged)",
                "image busybox:1 (same name, new content)",
            ]
        );
    }
}
