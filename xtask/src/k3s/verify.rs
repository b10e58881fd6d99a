//! Asking a k3s binary what it is: its version line, its multicall commands, its linkage.

use super::K3sPin;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Run `k3s --version` and check that it names the pinned release and commit:
/// `k3s version v1.34.1+k3s1 (24fc436e)`. Returns that line.
pub fn check_version(binary: &Path, pin: &K3sPin) -> Result<String> {
    let out = run_with_timeout(
        Command::new(binary).arg("--version"),
        Duration::from_secs(60),
    )
    .with_context(|| format!("cannot run {} --version", binary.display()))?;
    let first = out.lines().next().unwrap_or_default().to_string();
    let expected = format!("{} ({})", pin.version, pin.short_commit());
    if !first.contains(&expected) {
        bail!(
            "{} --version printed `{first}`, expected it to contain `{expected}`: the binary is \
             not the pinned k3s (wrong source, or the version ldflags did not apply)",
            binary.display()
        );
    }
    Ok(first)
}

/// The commands the bundle relies on from the multicall binary, each with its first output
/// line: `k3s kubectl version --client`, `k3s crictl --version`, `k3s ctr --version`.
pub fn check_multicall(binary: &Path) -> Result<Vec<(String, String)>> {
    let probes: [&[&str]; 3] = [
        &["kubectl", "version", "--client"],
        &["crictl", "--version"],
        &["ctr", "--version"],
    ];
    probes
        .iter()
        .map(|args| {
            let out = run_with_timeout(Command::new(binary).args(*args), Duration::from_secs(60))
                .with_context(|| format!("`k3s {}` failed", args.join(" ")))?;
            Ok((
                args.join(" "),
                out.lines().next().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// Output (stdout and stderr together) of a command that must succeed within `limit`. The
/// output goes to a temporary file, not a pipe, so a chatty command cannot block on a full pipe
/// while we wait for it.
fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Result<String> {
    let output = tempfile::tempfile()?;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output.try_clone()?)
        .spawn()?;
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    let mut output = output;
    use std::io::{Read, Seek};
    output.rewind()?;
    output.read_to_string(&mut text)?;
    if !status.success() {
        bail!("exited with {status}: {}", text.trim());
    }
    Ok(text)
}

/// True for an ELF executable without a program interpreter (PT_INTERP), i.e. one that needs no
/// dynamic loader or shared library from the machine it runs on.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    // 64-bit little-endian ELF only: the bundle is linux-amd64.
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let phoff = u64_at(0x20) as usize;
    let phentsize = u16_at(0x36) as usize;
    let phnum = u16_at(0x38) as usize;
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        if off + 4 > bytes.len() {
            bail!("{}: truncated program header table", path.display());
        }
        if u32_at(off) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}
