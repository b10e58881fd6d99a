//! Whether k3s runs under the ptrace launcher, and its command line when it does.
//!
//! Only k3s ever does: its kubelet reads and writes /proc/sys files gVisor lacks or refuses.
//! containerd and svcproxy read none, and the launcher's seccomp filter would be inherited for
//! life by whatever they start (ARCHITECTURE.md, "What runs under the launcher").

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::K3S;
use crate::paths::Paths;
use crate::state::LauncherUse;

/// `program args`, wrapped in `launcher --procsys DIR --log FILE --` when /proc/sys needs help
/// that the overlay (procsys_overlay.rs, `overlaid`) does not give, or `--launcher always` asks
/// for it.
pub fn command(
    paths: &Paths,
    choice: LauncherUse,
    overlaid: bool,
    program: PathBuf,
    args: Vec<String>,
) -> Result<(PathBuf, Vec<String>)> {
    if !wanted(paths, choice, overlaid) {
        return Ok((program, args));
    }
    let launcher = paths.bin("launcher");
    if !launcher.is_file() {
        // linux-arm64 bundles have no launcher (it decodes x86_64 syscalls only): there the
        // /proc/sys overlay is the only way, and a sandbox that refuses it cannot run k3s.
        bail!(
            "this host lacks /proc/sys files ({}) that laying files over /proc/sys did not \
             provide (or --launcher always asked for the launcher), but the bundle has no \
             bin/launcher to serve them: linux-arm64 bundles have none (the launcher decodes \
             x86_64 syscalls only); on amd64, use a complete k3s-gvisor bundle",
            paths.procsys_dir().display()
        );
    }
    let mut wrapped = vec![
        "--procsys".to_string(),
        paths.procsys_dir().display().to_string(),
        "--log".to_string(),
        paths.launcher_log(K3S).display().to_string(),
        "--".to_string(),
        program.display().to_string(),
    ];
    wrapped.extend(args);
    Ok((launcher, wrapped))
}

/// The user's `--launcher` choice against what the host needs: `never` is obeyed, with a warning
/// where the host needs the launcher.
fn wanted(paths: &Paths, choice: LauncherUse, overlaid: bool) -> bool {
    let needed = procsys_needed(paths) && !overlaid;
    match choice {
        LauncherUse::Auto => needed,
        LauncherUse::Always => true,
        LauncherUse::Never => {
            if needed {
                println!(
                    "warning: --launcher never: k3s runs without the launcher although {} holds \
                     /proc/sys files this host lacks or refuses",
                    paths.procsys_dir().display()
                );
            }
            false
        }
    }
}

/// Does the procsys tree hold anything? If not, the launcher has nothing to redirect and k3s
/// runs directly, without ptrace's overhead.
fn procsys_needed(paths: &Paths) -> bool {
    !crate::procsys_overlay::served_files(&paths.procsys_dir()).is_empty()
}
