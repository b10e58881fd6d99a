//! Running the Go toolchain: `go mod download -json` to fetch a module, `go build` to build a
//! package inside a copy of it. Every call gets the same controlled environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::pins::ToolPin;

/// Environment variables that would weaken or redirect the checks below; they are removed from
/// every `go` call. GOSUMDB is left alone: our own h1 check covers the module itself and the
/// module's go.sum (which that check covers) pins every dependency.
const UNSAFE_GO_ENV: &[&str] = &[
    "GONOSUMDB",
    "GONOSUMCHECK",
    "GONOPROXY",
    "GOPRIVATE",
    "GOINSECURE",
];

/// The Go toolchain on PATH, with an optional private module cache (tests use one so they can
/// corrupt it without touching the machine's shared cache).
#[derive(Debug, Clone, Default)]
pub struct Go {
    pub mod_cache: Option<PathBuf>,
}

impl Go {
    /// A `go` command with a predictable environment.
    fn command(&self) -> Command {
        let mut cmd = Command::new("go");
        for var in UNSAFE_GO_ENV {
            cmd.env_remove(var);
        }
        // GOFLAGS is replaced, not inherited: a user's -mod=vendor must not apply.
        cmd.env("GOFLAGS", "-buildvcs=false")
            // Never fetch another Go toolchain behind our back: a too-old local Go must say so.
            .env("GOTOOLCHAIN", "local")
            .env("GOWORK", "off");
        if let Some(dir) = &self.mod_cache {
            cmd.env("GOMODCACHE", dir);
        }
        cmd
    }

    /// Fails with a clear message when no usable `go` is on PATH.
    pub fn require(&self) -> Result<String> {
        let out = self.command().arg("version").output().map_err(|err| {
            anyhow::anyhow!(
                "cannot run `go` ({err}): the test tools are built from Go sources; install Go \
             (scripts/install-deps.sh does) and put it on PATH"
            )
        })?;
        if !out.status.success() {
            bail!(
                "`go version` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Fetches `module@version` into the Go module cache and returns where it was extracted.
    /// `scratch_dir` is any directory outside a Go module (a go.mod around the current directory
    /// would otherwise take part).
    pub fn download(&self, pin: &ToolPin, scratch_dir: &Path) -> Result<Downloaded> {
        let target = format!("{}@{}", pin.module, pin.version);
        let out = self
            .command()
            .current_dir(scratch_dir)
            .args(["mod", "download", "-json", &target])
            .stdin(Stdio::null())
            .output()
            .context("cannot run `go mod download`")?;
        // On failure go still prints the JSON object, with the reason in "Error".
        let parsed: Option<Downloaded> = serde_json::from_slice(&out.stdout).ok();
        match parsed {
            Some(Downloaded {
                error: Some(error), ..
            }) => bail!(
                "`go mod download {target}` failed: {error}\n\
             (is the Go module proxy reachable? GOPROXY is {:?})",
                std::env::var("GOPROXY").unwrap_or_else(|_| "go's default".into())
            ),
            Some(downloaded) if out.status.success() && downloaded.dir.is_some() => Ok(downloaded),
            _ => bail!(
                "`go mod download -json {target}` failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    /// Builds `pin.package` in the module tree `module_dir` into `output`, logging to `log`.
    pub fn build(&self, pin: &ToolPin, module_dir: &Path, output: &Path, log: &Path) -> Result<()> {
        let mut ldflags = String::from("-s -w");
        if let Some(var) = &pin.version_var {
            ldflags.push_str(&format!(" -X {var}={}", pin.version));
        }
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let status = self
            .command()
            .current_dir(module_dir)
            .env("CGO_ENABLED", if pin.cgo { "1" } else { "0" })
            // A pinned toolchain is fetched through the module proxy and checked against the
            // checksum database by the go command itself.
            .env("GOTOOLCHAIN", pin.toolchain.as_deref().unwrap_or("local"))
            // -mod=readonly: every dependency must already be in the module's own go.sum, and go
            // checks each downloaded dependency against it.
            .args([
                "build",
                "-mod=readonly",
                "-trimpath",
                "-ldflags",
                &ldflags,
                "-o",
            ])
            .arg(output)
            .arg(&pin.package)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .status()
            .context("cannot run `go build`")?;
        if !status.success() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "`go build {}` of {}@{} failed ({status}); full log: {}\n{}",
                pin.package,
                pin.module,
                pin.version,
                log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }
}

/// What `go mod download -json` reports for one module.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Downloaded {
    /// The extracted module tree in the Go module cache (read-only).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The module's h1 hash as the Go module cache recorded it.
    #[serde(default)]
    pub sum: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}
