//! The one way xtask runs Go: a controlled environment for every `go` command, module downloads
//! checked against their `h1:` pin (again whenever they are read back from the cache), and
//! logged runs that show the log's tail when they fail.

use crate::layout::Layout;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod dirhash;

/// Environment variables that would weaken or redirect the module checks; removed from every
/// `go` command. GOPROXY, GOSUMDB and GOFLAGS are not inherited either: `command` sets them.
const UNSAFE_GO_ENV: &[&str] = &[
    "GONOSUMDB",
    "GONOSUMCHECK",
    "GONOPROXY",
    "GOPRIVATE",
    "GOINSECURE",
    "GOVCS",
];

/// Where modules come from: the Go module mirror only. No `,direct`: a module the mirror lacks
/// is an error, never a fetch from its VCS host (build inputs come from the module proxy and
/// the pinned archives only).
pub const GOPROXY: &str = "https://proxy.golang.org";
/// Every module not already in a go.sum is checked against the public checksum database
/// (Go's default, set here so that an inherited GOSUMDB=off cannot turn it off).
pub const GOSUMDB: &str = "sum.golang.org";
/// `-modcacherw`: module cache entries stay writable, so that a rejected module can be removed
/// again. `-buildvcs=false`: the trees are not git checkouts.
pub const GOFLAGS: &str = "-modcacherw -buildvcs=false";

/// A Go toolchain with its settings.
#[derive(Debug, Clone)]
pub struct Go {
    /// The module cache (shareable between checkouts).
    pub mod_cache: PathBuf,
    /// `GOPROXY=off`: only what is already in the module cache.
    pub offline: bool,
    /// GOTOOLCHAIN: `local` (the Go on PATH, never a download) or `goX.Y.Z`, which the go
    /// command fetches through the module proxy.
    pub toolchain: String,
    /// Extra environment (tests point GOPROXY at a fixture proxy).
    pub env: Vec<(String, String)>,
}

impl Go {
    pub fn new(layout: &Layout, offline: bool) -> Go {
        Go {
            mod_cache: layout.gomodcache(),
            offline,
            toolchain: "local".into(),
            env: layout.go_env.clone(),
        }
    }

    /// A `go` command with a predictable environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("go");
        for var in UNSAFE_GO_ENV {
            cmd.env_remove(var);
        }
        // The module settings are the pipeline's, never the environment's (issue 29): set
        // explicitly, and GOENV=off so that `go env -w` settings (the user's go/env file, e.g.
        // GONOSUMDB or GOFLAGS there) are not read either. GOROOT/go.env only holds the same
        // defaults.
        cmd.env("GOENV", "off")
            .env("GOPROXY", GOPROXY)
            .env("GOSUMDB", GOSUMDB)
            .env("GOFLAGS", GOFLAGS)
            .env("GOMODCACHE", &self.mod_cache)
            .env("GOTOOLCHAIN", &self.toolchain)
            .env("GOWORK", "off")
            .stdin(Stdio::null())
            // Tests point GOPROXY at a file:// fixture proxy (Layout::go_env).
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.offline {
            cmd.env("GOPROXY", "off");
        }
        cmd
    }

    /// `go env GOVERSION` (`go1.26.8`): part of every Go build's stamp.
    pub fn version(&self) -> Result<String> {
        let out = self
            .command()
            .args(["env", "GOVERSION"])
            .current_dir(std::env::temp_dir())
            .output()
            .context("cannot run `go`: install the Go toolchain and put it on PATH")?;
        if !out.status.success() {
            bail!(
                "`go env GOVERSION` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `module@version` in the module cache, its content checked against `sum`: the hash go
    /// reports, and the hash recomputed over the extracted tree (so a module cache entry that
    /// was changed after download is caught too). A mismatch removes the module again.
    pub fn download(&self, module: &str, version: &str, sum: &str) -> Result<PathBuf> {
        let what = format!("{module}@{version}");
        let bar = crate::ui::spinner(&format!("go mod download {what}"));
        let out = self
            .command()
            .args(["mod", "download", "-json", &what])
            .current_dir(std::env::temp_dir())
            .output()
            .context("cannot run `go`: install the Go toolchain and put it on PATH")?;
        bar.finish_and_clear();
        // On failure go still prints the JSON object, with the reason in "Error".
        let info: Downloaded = serde_json::from_slice(&out.stdout).map_err(|_| {
            anyhow::anyhow!(
                "go mod download {what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        if let Some(err) = &info.error {
            if self.offline {
                bail!(
                    "{what} is not in the module cache ({}) and --offline forbids downloading it",
                    self.mod_cache.display()
                );
            }
            bail!("go mod download {what}: {err}");
        }
        let dir = info
            .dir
            .clone()
            .context("go mod download reported no Dir")?;
        let reported = info.sum.clone().unwrap_or_default();
        let actual = if reported == sum {
            dirhash::hash_dir(&dir, &what)?
        } else {
            reported
        };
        if actual != sum {
            info.discard();
            return Err(crate::fetch::FetchError::Mismatch {
                what,
                expected: sum.into(),
                actual,
            }
            .into());
        }
        Ok(dir)
    }
}

/// `go mod verify` in `tree`: every module of its build list that is in the module cache is
/// re-hashed (its extracted directory and zip) against the hash recorded when it was
/// downloaded, which go checks against the tree's go.sum whenever it uses the module. So a
/// module cache shared with other builds (or restored from elsewhere) is re-verified on every
/// use, not trusted (issue 29). Modules not yet downloaded are skipped: go checks those against
/// go.sum as it downloads them.
pub fn verify_modules(go: &Go, tree: &Path, log: &Path) -> Result<()> {
    let mut cmd = go.command();
    cmd.args(["mod", "verify"]).current_dir(tree);
    run_logged(
        &mut cmd,
        log,
        &format!(
            "go mod verify in {} (the module cache against go.sum)",
            tree.display()
        ),
    )
}

/// What `go mod download -json` reports for one module.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Downloaded {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    sum: Option<String>,
    #[serde(default)]
    dir: Option<PathBuf>,
    #[serde(default)]
    zip: Option<PathBuf>,
    #[serde(default)]
    info: Option<PathBuf>,
    #[serde(default)]
    go_mod: Option<PathBuf>,
}

impl Downloaded {
    /// Remove a module whose hash did not match from the module cache.
    fn discard(&self) {
        if let Some(dir) = &self.dir {
            let _ = crate::fsutil::remove_tree(dir);
        }
        for file in [&self.zip, &self.info, &self.go_mod].into_iter().flatten() {
            let _ = std::fs::remove_file(file);
            // go keeps `<version>.ziphash` beside the zip.
            let _ = std::fs::remove_file(file.with_extension("ziphash"));
        }
    }
}

/// Run `cmd` with its output appended to `log` (after a `$ command` line); on failure the error
/// carries the log's last lines, so the cause shows without opening it.
pub fn run_logged(cmd: &mut Command, log: &Path, what: &str) -> Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    writeln!(file, "$ {cmd:?}")?;
    let bar = crate::ui::spinner(what);
    let status = cmd
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    bar.finish_and_clear();
    if !status.success() {
        bail!(
            "{what} failed ({status}); last lines of {}:\n{}",
            log.display(),
            crate::fsutil::tail(log, 40)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the caller's environment says (GOPROXY=direct, GOSUMDB=off, GONOSUMDB=*, a
    /// GOFLAGS with -mod=mod, a go/env file), every go command gets the pipeline's module
    /// settings: the explicit values win over inherited ones, the weakening ones are removed.
    #[test]
    fn every_go_command_sets_the_module_settings_explicitly() {
        let layout = Layout::new(Path::new("/repo"), Some("/cache".into()), None);
        let env = |go: &Go| -> Vec<(String, Option<String>)> {
            go.command()
                .get_envs()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.map(|v| v.to_string_lossy().into_owned()),
                    )
                })
                .collect()
        };
        let online = env(&Go::new(&layout, false));
        let value = |env: &[(String, Option<String>)], key: &str| {
            env.iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{key} is not set explicitly: {env:?}"))
                .1
                .clone()
        };
        assert_eq!(value(&online, "GOPROXY").as_deref(), Some(GOPROXY));
        assert_eq!(value(&online, "GOSUMDB").as_deref(), Some("sum.golang.org"));
        assert_eq!(value(&online, "GOFLAGS").as_deref(), Some(GOFLAGS));
        assert_eq!(value(&online, "GOENV").as_deref(), Some("off"));
        assert!(!GOPROXY.contains("direct"), "no VCS fallback: {GOPROXY}");
        for var in UNSAFE_GO_ENV {
            assert_eq!(value(&online, var), None, "{var} must be removed");
        }
        let offline = env(&Go::new(&layout, true));
        assert_eq!(value(&offline, "GOPROXY").as_deref(), Some("off"));
        // And the go command really uses them, even against a user's go/env file (`go env -w`)
        // that says otherwise: GOENV=off keeps it from being read.
        let config = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(config.path().join("go")).unwrap();
        std::fs::write(
            config.path().join("go/env"),
            "GONOSUMDB=example.com\nGOPRIVATE=example.com\n",
        )
        .unwrap();
        let out = Go::new(&layout, false)
            .command()
            .env("XDG_CONFIG_HOME", config.path())
            .args([
                "env",
                "GOPROXY",
                "GOSUMDB",
                "GOFLAGS",
                "GONOSUMDB",
                "GOPRIVATE",
            ])
            .current_dir(std::env::temp_dir())
            .output()
            .expect("cannot run go");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [GOPROXY, GOSUMDB, GOFLAGS, "", ""],
            "{text}"
        );
    }
}
