//! Running code inside the pod's network namespace.
//!
//! setns(2) switches only the calling thread, so the work runs on a short-lived thread that
//! enters the namespace and exits; the main thread stays in the host namespace.

use crate::error::{code, CniError, Result};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

/// An open handle on a network namespace (keeps it alive while we work on it).
pub struct NetNs {
    pub path: String,
    file: File,
}

impl NetNs {
    /// Opens `path` (CNI_NETNS) and checks that it really is a network namespace.
    pub fn open(path: &str) -> Result<NetNs> {
        let file = File::open(path).map_err(|e| {
            CniError::new(
                code::INVALID_ENV,
                format!("CNI_NETNS {path:?} cannot be opened"),
                format!("{e}; it must be the path of a network namespace, e.g. /var/run/netns/<name> or /proc/<pid>/ns/net"),
            )
        })?;
        // SAFETY: plain ioctl on our own descriptor; NS_GET_NSTYPE takes no argument.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        // Older kernels (and gVisor) may not know NS_GET_NSTYPE; then setns itself checks the type.
        if kind >= 0 && kind != libc::CLONE_NEWNET {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_NETNS {path:?} is not a network namespace"),
                "pass the path of a network namespace (a /var/run/netns entry or /proc/<pid>/ns/net)",
            ));
        }
        Ok(NetNs {
            path: path.to_string(),
            file,
        })
    }

    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Whether this kernel can join the namespace at all. Debian's 2022 gVisor answers
    /// setns(CLONE_NEWNET) with EOPNOTSUPP; there nothing inside the namespace can be configured
    /// (its `lo` starts up anyway). Returns the kernel's error if joining is unsupported.
    pub fn join_unsupported(&self) -> Option<std::io::Error> {
        let fd = self.fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on a descriptor that outlives this scoped thread.
                    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } == 0 {
                        return None;
                    }
                    let err = std::io::Error::last_os_error();
                    matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS))
                        .then_some(err)
                })
                .join()
                .unwrap_or(None)
        })
    }

    /// Runs `work` on a thread that has joined this namespace and returns its result.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let fd = self
            .file
            .try_clone()
            .map(OwnedFd::from)
            .map_err(|e| CniError::io("dup netns fd", e))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on a descriptor we own, affecting only this thread.
                    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        let err = std::io::Error::last_os_error();
                        return Err(CniError::new(
                            code::INVALID_ENV,
                            format!("cannot enter network namespace {:?}", self.path),
                            format!("setns: {err}; CNI_NETNS must name a network namespace and the plugin must run as root"),
                        ));
                    }
                    work()
                })
                .join()
                .unwrap_or_else(|_| Err(CniError::io("netns worker thread", "panicked")))
        })
    }
}

/// `_IO(0xb7, 0x3)` from linux/nsfs.h.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
