//! The on-disk allocation store of one network, `<dataDir>/<network name>/`.
//!
//! Layout (one file per allocated address, like host-local, so the file name itself reserves
//! the address even if its contents were damaged):
//!
//! ```text
//! lock                 flock(2) target; every operation holds it exclusively
//! last_reserved_ip     where the round-robin search resumes
//! 10.88.0.7            {"containerID":..,"ifname":..,"address":..,"gateway":..,"mode":..}
//! .10.88.0.7.<pid>.tmp a write in flight; a leftover one is from a crash and is removed
//! ```
//!
//! Writes go to a temporary file that is fsynced and then renamed over the final name, and
//! the directory is fsynced after, so a crash leaves either the old state or the new one plus a
//! stray `.tmp` file, never a half-written allocation. A damaged allocation file (written by
//! something else, or a filesystem that lost data) keeps its address reserved, because we
//! cannot prove the address free, until GC drops it: it names no valid attachment.

use crate::config::Mode;
use crate::env::Attachment;
use crate::error::{code, CniError, Result};
use crate::ipam::range::AddressRange;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Plugin-specific error code (the spec leaves 100+ to plugins): every address is taken.
pub const CODE_EXHAUSTED: u32 = 100;

/// How long to wait for another plugin invocation to release the lock before asking the
/// runtime to try again.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

const LOCK_FILE: &str = "lock";
const LAST_RESERVED_FILE: &str = "last_reserved_ip";

/// What the store remembers about one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    /// The address with the subnet's prefix length.
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The wiring actually applied (never `auto`): DEL and CHECK follow it.
    pub mode: Mode,
    /// Host end of the veth pair, in veth-bridge mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth: Option<String>,
}

impl Allocation {
    pub fn attachment(&self) -> Attachment {
        Attachment {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

/// One allocation file as found on disk.
#[derive(Debug)]
pub enum Entry {
    Valid {
        ip: Ipv4Addr,
        allocation: Allocation,
    },
    /// The file name reserves `ip`, but the contents do not parse (or name another address).
    Damaged {
        ip: Ipv4Addr,
        path: PathBuf,
        problem: String,
    },
}

impl Entry {
    pub fn ip(&self) -> Ipv4Addr {
        match self {
            Entry::Valid { ip, .. } | Entry::Damaged { ip, .. } => *ip,
        }
    }
}

/// The store of one network, locked for as long as this value lives.
pub struct Store {
    dir: PathBuf,
    // Dropping the file releases the flock.
    _lock: File,
}

impl Store {
    /// Creates the store directory if needed, takes the lock, and removes writes a crash left.
    pub fn open_locked(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).map_err(|e| {
            CniError::io(format!("cannot create the IPAM store {}", dir.display()), e)
        })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| CniError::io(format!("cannot open {}", lock_path.display()), e))?;
        lock_exclusive(&lock, &lock_path, LOCK_TIMEOUT)?;
        let store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        store.remove_stale_temporaries()?;
        Ok(store)
    }

    /// Like `open_locked`, but a missing store is not created (DEL and GC on a network that
    /// never allocated anything have nothing to do).
    pub fn open_existing_locked(dir: &Path) -> Result<Option<Store>> {
        if dir.is_dir() {
            Store::open_locked(dir).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Every allocation file, valid or damaged.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let listing = fs::read_dir(&self.dir)
            .map_err(|e| CniError::io(format!("cannot list {}", self.dir.display()), e))?;
        for dirent in listing {
            let dirent = dirent
                .map_err(|e| CniError::io(format!("cannot list {}", self.dir.display()), e))?;
            let name = dirent.file_name();
            // Only files named by an address are allocations; lock, last_reserved_ip and
            // temporaries are not.
            let Some(ip) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let path = dirent.path();
            entries.push(read_entry(ip, path));
        }
        entries.sort_by_key(Entry::ip);
        Ok(entries)
    }

    /// The allocation held by `attachment`, if any.
    pub fn find(&self, attachment: &Attachment) -> Result<Option<Allocation>> {
        Ok(self.entries()?.into_iter().find_map(|entry| match entry {
            Entry::Valid { allocation, .. } if allocation.attachment() == *attachment => {
                Some(allocation)
            }
            _ => None,
        }))
    }

    /// Reserves a free address for `attachment` and records it with `mode`.
    pub fn allocate(
        &self,
        range: &AddressRange,
        attachment: &Attachment,
        mode: Mode,
    ) -> Result<Allocation> {
        let entries = self.entries()?;
        for entry in &entries {
            if let Entry::Damaged { path, problem, .. } = entry {
                warn(&format!(
                    "{} is damaged ({problem}); its address stays reserved until CNI GC removes it",
                    path.display()
                ));
            }
        }
        let taken: HashSet<Ipv4Addr> = entries.iter().map(Entry::ip).collect();
        let free = range
            .candidates_after(self.last_reserved())
            .find(|ip| !taken.contains(ip));
        let Some(ip) = free else {
            return Err(CniError::new(
                CODE_EXHAUSTED,
                format!("no free address in {}-{} (network subnet {})", range.start, range.end, range.subnet),
                format!(
                    "all {} addresses are allocated in {}; delete unused pods, run CNI GC, or widen \"subnet\"/the range",
                    range.capacity(),
                    self.dir.display()
                ),
            ));
        };
        let allocation = Allocation {
            container_id: attachment.container_id.clone(),
            ifname: attachment.ifname.clone(),
            address: Ipv4Net::new(ip, range.subnet.prefix_len())
                .expect("prefix comes from a valid subnet"),
            gateway: range.gateway,
            mode,
            host_veth: None,
        };
        self.write(&allocation)?;
        self.write_atomically(LAST_RESERVED_FILE, ip.to_string().as_bytes())?;
        Ok(allocation)
    }

    /// Records (or re-records) an allocation, e.g. once the applied mode is known.
    pub fn write(&self, allocation: &Allocation) -> Result<()> {
        let bytes = serde_json::to_vec(allocation).expect("allocation always serializes");
        self.write_atomically(&allocation.address.addr().to_string(), &bytes)
    }

    /// Removes the file of `ip`.
    pub fn release(&self, ip: Ipv4Addr) -> Result<()> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io(format!("cannot remove {}", path.display()), e)),
        }
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        // A damaged hint only changes where the search starts, so it is ignored, not fatal.
        fs::read_to_string(self.dir.join(LAST_RESERVED_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// tmp file + fsync + rename + fsync(dir): readers see the old or the new contents only.
    fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let final_path = self.dir.join(name);
        let tmp_path = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp_path)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp_path, &final_path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp_path);
            return Err(CniError::io(
                format!("cannot write {}", final_path.display()),
                e,
            ));
        }
        sync_dir(&self.dir)
    }

    /// Temporaries are only written while the lock is held, so any that exist now were left by
    /// a process that died mid-write; the allocation they carried was never committed.
    fn remove_stale_temporaries(&self) -> Result<()> {
        let listing = fs::read_dir(&self.dir)
            .map_err(|e| CniError::io(format!("cannot list {}", self.dir.display()), e))?;
        for dirent in listing.flatten() {
            let name = dirent.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                warn(&format!(
                    "removing {} left by an interrupted write",
                    dirent.path().display()
                ));
                fs::remove_file(dirent.path()).map_err(|e| {
                    CniError::io(format!("cannot remove {}", dirent.path().display()), e)
                })?;
            }
        }
        Ok(())
    }
}

fn read_entry(ip: Ipv4Addr, path: PathBuf) -> Entry {
    let parsed = fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<Allocation>(&bytes).map_err(|e| e.to_string()));
    match parsed {
        Ok(allocation) if allocation.address.addr() == ip && allocation.mode != Mode::Auto => {
            Entry::Valid { ip, allocation }
        }
        Ok(allocation) => Entry::Damaged {
            ip,
            path,
            problem: format!(
                "records address {} mode {:?}",
                allocation.address, allocation.mode
            ),
        },
        Err(problem) => Entry::Damaged { ip, path, problem },
    }
}

fn lock_exclusive(file: &File, path: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) && err.raw_os_error() != Some(libc::EINTR)
        {
            return Err(CniError::io(format!("cannot lock {}", path.display()), err));
        }
        if Instant::now() >= deadline {
            return Err(CniError::new(
                code::TRY_AGAIN,
                format!("the IPAM store lock {} is still held after {:?}", path.display(), timeout),
                "another gvisor-cni invocation is stuck holding it; retry, or find the process with `fuser` on the lock file",
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CniError::io(format!("cannot fsync directory {}", dir.display()), e))
}

/// Diagnostics go to stderr: stdout carries only the CNI result.
pub fn warn(message: &str) {
    eprintln!("gvisor-cni: warning: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(id: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("gvisor-cni-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn allocates_distinct_addresses_until_exhausted_then_reuses_released_ones() {
        let dir = temp_dir("exhaust");
        let range = AddressRange::new("10.0.0.0/29".parse().unwrap(), None, None, None).unwrap();
        let store = Store::open_locked(&dir).unwrap();
        let ips: HashSet<_> = (0..5)
            .map(|i| {
                store
                    .allocate(&range, &attachment(&format!("c{i}")), Mode::LoopbackOnly)
                    .unwrap()
                    .address
                    .addr()
            })
            .collect();
        assert_eq!(ips.len(), 5);
        assert!(!ips.contains(&range.gateway));
        let err = store
            .allocate(&range, &attachment("c5"), Mode::LoopbackOnly)
            .unwrap_err();
        assert_eq!(err.code, CODE_EXHAUSTED);
        let held = store.find(&attachment("c2")).unwrap().unwrap();
        store.release(held.address.addr()).unwrap();
        let again = store
            .allocate(&range, &attachment("c5"), Mode::LoopbackOnly)
            .unwrap();
        assert_eq!(again.address.addr(), held.address.addr());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_held_lock_is_try_again_not_a_hang() {
        let dir = temp_dir("lock");
        let _held = Store::open_locked(&dir).unwrap();
        // flock locks belong to the open file description, so a second open conflicts even
        // inside one process, just as a second plugin process would.
        let second = File::open(dir.join(LOCK_FILE)).unwrap();
        let err =
            lock_exclusive(&second, &dir.join(LOCK_FILE), Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.code, code::TRY_AGAIN);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_file_keeps_its_address_and_stale_temporaries_vanish() {
        let dir = temp_dir("damaged");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("10.0.0.2"), b"{\"containerID\":\"x\",\"ifn").unwrap();
        fs::write(dir.join(".10.0.0.3.999.tmp"), b"{").unwrap();
        let range = AddressRange::new("10.0.0.0/29".parse().unwrap(), None, None, None).unwrap();
        let store = Store::open_locked(&dir).unwrap();
        assert!(!dir.join(".10.0.0.3.999.tmp").exists());
        let got = store
            .allocate(&range, &attachment("a"), Mode::LoopbackOnly)
            .unwrap();
        assert_eq!(got.address.addr(), Ipv4Addr::new(10, 0, 0, 3));
        assert!(matches!(store.entries().unwrap()[0], Entry::Damaged { .. }));
        fs::remove_dir_all(&dir).unwrap();
    }
}
