//! Files and directories the installer writes, safe against what others could plant: explicit
//! modes for the install's own directories, a refusal of directories someone else owns or can
//! write, and files written as a new temp file (O_CREAT|O_EXCL|O_NOFOLLOW, so never through a
//! symlink or into a file someone opened first) renamed over the target.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The data dir holds state.json (what uninstall deletes), the join token and the daemons'
/// credentials: only root enters it. k3s keeps its own server dir 0700 for the same reason.
pub const DATA_DIR_MODE: u32 = 0o700;
/// The data dir's mode once k3s wrote the kubeconfig there with `kubeconfig_mode`: 0700, plus
/// search (x, not list, not write) for group and others when the user asked k3s for a
/// kubeconfig they may read (--write-kubeconfig-mode / K3S_KUBECONFIG_MODE, e.g. 644). The
/// kubeconfig lies in the data dir, so without it the mode asked for gives nobody anything;
/// k3s's own (/etc/rancher/k3s/k3s.yaml) lies outside its data dir, and our link there points
/// into ours.
pub fn data_dir_mode(kubeconfig_mode: u32) -> u32 {
    DATA_DIR_MODE | ((kubeconfig_mode & 0o044) >> 2)
}

/// The prefix holds only what the bundle ships; everyone may run kubectl from it.
pub const PREFIX_MODE: u32 = 0o755;

pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Why an existing directory is not ours to adopt: owned by another user, or writable by group
/// or others (who could then plant files the installer would later trust or delete).
pub fn not_ours(dir: &Path) -> Option<String> {
    let meta = fs::symlink_metadata(dir).ok()?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Some(format!("is owned by uid {}, not by uid {euid}", meta.uid()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!("is writable by group or others (mode {mode:o})"));
    }
    None
}

/// Creates the directory `path` (0700), which must not exist: a scratch dir under the world-
/// writable /tmp whose name someone could have taken, or made a symlink to a directory that a
/// mount would then cover.
pub fn new_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(path)
}

/// Creates `path`, which must not exist (no symlink either), with `mode`.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(mode)
        .open(path)
}

/// The temp file `write_replacing` writes beside `target`: `.NAME.tmp` in the same directory,
/// so the rename stays on one filesystem.
fn temp_beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    target.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `target` atomically: into a new temp file beside it (a leftover temp file,
/// or a symlink planted there, is removed, never written through), then renamed over it.
/// A reader never sees half a file, and `target` ends with `mode` whatever it had.
pub fn write_replacing(target: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let temp = temp_beside(target);
    match fs::remove_file(&temp) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let written = create_new(&temp, mode).and_then(|mut file| file.write_all(bytes));
    if let Err(error) = written.and_then(|()| fs::rename(&temp, target)) {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_data_dir_opens_for_search_only_as_far_as_the_kubeconfig_is_readable() {
        assert_eq!(data_dir_mode(0o600), 0o700);
        assert_eq!(data_dir_mode(0o644), 0o711);
        assert_eq!(data_dir_mode(0o640), 0o710);
        assert_eq!(data_dir_mode(0o604), 0o701);
        // Write or execute bits on the kubeconfig open nothing more.
        assert_eq!(data_dir_mode(0o622), 0o700);
        assert_eq!(data_dir_mode(0o611), 0o700);
    }
    use super::*;

    #[test]
    fn a_symlink_planted_at_the_temp_path_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let (target, victim) = (dir.path().join("state.json"), dir.path().join("victim"));
        fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, temp_beside(&target)).unwrap();
        write_replacing(&target, b"new", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn create_new_refuses_an_existing_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let (link, victim) = (dir.path().join("link"), dir.path().join("victim"));
        fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_new(&link, 0o600).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
    }

    #[test]
    fn a_directory_writable_by_others_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755).unwrap();
        assert_eq!(not_ours(dir.path()), None);
        set_mode(dir.path(), 0o775).unwrap();
        assert_eq!(
            not_ours(dir.path()).as_deref(),
            Some("is writable by group or others (mode 775)")
        );
    }
}
