//! The control-plane smoke check: `k3s server --disable-agent` in a fresh data directory must
//! answer `kubectl get --raw /readyz` with `ok`, on plain Linux or inside a gVisor sandbox.
//!
//! The check runs as one shell script, because inside `runsc --network=none do` the API server
//! listens on the sandbox's own loopback: the poll must run in the same sandbox as the server.
//! The script prints one marker line that this module reads back; the server's log stays in the
//! data directory and its tail goes into every error.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The env var that names the runsc binary the sandboxed checks use (default: `runsc` on PATH).
pub const RUNSC_ENV: &str = "K3S_GVISOR_RUNSC";

/// Starts the server, polls /readyz once a second, prints exactly one `SMOKE-*` marker, stops
/// the server. Arguments: k3s binary, data dir, time limit in seconds, extra server flags.
const SMOKE_SCRIPT: &str = r#"
K3S="$1"; DATA="$2"; LIMIT="$3"; shift 3
KUBECONFIG_FILE="$DATA/kubeconfig.yaml"
"$K3S" server --disable-agent --data-dir "$DATA" --write-kubeconfig "$KUBECONFIG_FILE" "$@" \
    >"$DATA/k3s-server.log" 2>&1 &
PID=$!
START=$(date +%s)
while :; do
    ELAPSED=$(( $(date +%s) - START ))
    if [ -f "$KUBECONFIG_FILE" ] && \
       "$K3S" kubectl --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz >"$DATA/readyz.out" 2>&1; then
        echo "SMOKE-READY $ELAPSED $(cat "$DATA/readyz.out")"
        break
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        wait "$PID"; echo "SMOKE-EXITED $?"
        exit 0
    fi
    if [ "$ELAPSED" -ge "$LIMIT" ]; then
        echo "SMOKE-TIMEOUT $ELAPSED"
        break
    fi
    sleep 1
done
kill "$PID" 2>/dev/null
wait "$PID" 2>/dev/null
exit 0
"#;

/// Where the server runs.
#[derive(Debug, Clone)]
pub enum Host {
    /// Directly on this machine.
    Plain,
    /// Inside `<runsc> --network=none do -force-overlay=false` (9p root, loopback only).
    Runsc(PathBuf),
}

impl Host {
    #[cfg(test)]
    /// The sandbox named by [`RUNSC_ENV`], else `runsc` from PATH.
    pub fn runsc_from_env() -> Host {
        Host::Runsc(
            std::env::var_os(RUNSC_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("runsc")),
        )
    }
}

pub struct ControlPlaneSmoke<'a> {
    pub k3s: &'a Path,
    /// A fresh directory: k3s's data dir, its log (`k3s-server.log`) and kubeconfig land here.
    pub data_dir: &'a Path,
    pub host: Host,
    /// More `k3s server` flags, e.g. `--disable=traefik,metrics-server`.
    pub server_args: &'a [String],
    pub time_limit: Duration,
}

#[derive(Debug, Clone)]
pub struct SmokeReport {
    /// Seconds from server start to the first `ok` from /readyz.
    pub seconds_to_ready: u64,
    /// What /readyz answered.
    pub readyz: String,
}

pub fn control_plane_smoke(s: &ControlPlaneSmoke) -> Result<SmokeReport> {
    std::fs::create_dir_all(s.data_dir)?;
    // Inside the sandbox the host's root is the sandbox's root, so absolute paths stay valid.
    let k3s = s
        .k3s
        .canonicalize()
        .with_context(|| format!("no k3s binary at {}", s.k3s.display()))?;
    let data_dir = s.data_dir.canonicalize()?;
    let mut cmd = match &s.host {
        Host::Plain => Command::new("sh"),
        Host::Runsc(runsc) => crate::tools::runsc_sh(runsc),
    };
    cmd.arg("-c")
        .arg(SMOKE_SCRIPT)
        .arg("smoke")
        .arg(&k3s)
        .arg(&data_dir)
        .arg(s.time_limit.as_secs().to_string())
        .args(s.server_args);
    let out = cmd.output().with_context(|| match &s.host {
        Host::Plain => "cannot run /bin/sh".to_string(),
        Host::Runsc(r) => format!(
            "cannot run {}: install gVisor (Debian package runsc) or set {RUNSC_ENV}",
            r.display()
        ),
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = data_dir.join("k3s-server.log");
    let marker = stdout
        .lines()
        .find(|l| l.starts_with("SMOKE-"))
        .unwrap_or_default();
    let mut words = marker.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("SMOKE-READY"), Some(secs), rest) => Ok(SmokeReport {
            seconds_to_ready: secs.parse().unwrap_or_default(),
            readyz: rest.unwrap_or_default().trim().to_string(),
        }),
        (Some("SMOKE-EXITED"), code, _) => bail!(
            "k3s server exited with status {} before /readyz answered ok ({:?}); last lines of {}:\n{}",
            code.unwrap_or("?"),
            s.host,
            log.display(),
            crate::fsutil::tail(&log, 30)
        ),
        (Some("SMOKE-TIMEOUT"), secs, _) => bail!(
            "/readyz did not answer ok within {} s ({:?}); last /readyz answer: {}; last lines of {}:\n{}",
            secs.unwrap_or("?"),
            s.host,
            std::fs::read_to_string(data_dir.join("readyz.out")).unwrap_or_default().trim(),
            log.display(),
            crate::fsutil::tail(&log, 30)
        ),
        _ => bail!(
            "the smoke script printed no result ({:?}, exit {}); stdout: {} stderr: {}",
            s.host,
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}
