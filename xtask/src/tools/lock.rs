//! One builder per tool at a time: `cargo test` runs tests in parallel and several may ask for
//! runsc at once; the later ones wait for the first build instead of repeating it.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

/// Holds an exclusive advisory lock (flock) until dropped. The kernel releases it if the
/// process dies, so a crashed build never leaves a stale lock behind.
pub struct BuildLock {
    _file: File,
}

impl BuildLock {
    /// Blocks until `path` is locked by this process; says on stderr that it is waiting.
    pub fn acquire(path: &Path, what: &str) -> Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot create lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                eprintln!("waiting for another process that is building {what} ...");
                file.lock()
                    .with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = BuildLock::acquire(&path, "x").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let _second = BuildLock::acquire(&path, "x").unwrap();
                tx.send(()).unwrap();
            })
        };
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the second lock was granted while the first was held"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second lock was not granted after the first was dropped");
        waiter.join().unwrap();
    }
}
