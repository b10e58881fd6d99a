//! Reading and writing a stopped tracee's memory.
//!
//! `process_vm_readv`/`process_vm_writev` move a whole string in one syscall. Where they are
//! unavailable (ENOSYS/EPERM on some sandboxes) the slower word-at-a-time
//! PTRACE_PEEKDATA/PTRACE_POKEDATA is used instead.

use nix::sys::ptrace;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;
use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicBool, Ordering};

const PAGE: usize = 4096;
const WORD: usize = std::mem::size_of::<libc::c_long>();

/// Set once process_vm_* turned out not to work, so we stop trying it.
static VM_CALLS_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Uses only PTRACE_PEEKDATA/POKEDATA from now on. For diagnosing sandboxes where
/// process_vm_* misbehave, and for testing that path.
pub fn force_peek_poke() {
    VM_CALLS_UNAVAILABLE.store(true, Ordering::Relaxed);
}

fn vm_calls_unavailable(err: nix::Error) -> bool {
    matches!(err, nix::Error::ENOSYS | nix::Error::EPERM)
}

/// Reads the NUL-terminated string at `addr` (at most `max` bytes, NUL excluded).
/// Returns `None` if the memory is unreadable or no NUL is found within `max` bytes.
pub fn read_c_string(pid: Pid, addr: u64, max: usize) -> Option<Vec<u8>> {
    if addr == 0 {
        return None;
    }
    if !VM_CALLS_UNAVAILABLE.load(Ordering::Relaxed) {
        match read_c_string_vm(pid, addr, max) {
            Ok(s) => return s,
            Err(e) if vm_calls_unavailable(e) => {
                VM_CALLS_UNAVAILABLE.store(true, Ordering::Relaxed)
            }
            Err(_) => return None,
        }
    }
    read_c_string_peek(pid, addr, max)
}

/// Reads page by page: a string can end just before an unmapped page, and a read that crosses
/// into it would fail as a whole.
fn read_c_string_vm(pid: Pid, addr: u64, max: usize) -> nix::Result<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(128);
    let mut buf = [0u8; PAGE];
    let mut cursor = addr as usize;
    while out.len() <= max {
        let chunk = (PAGE - cursor % PAGE).min(max + 1 - out.len());
        let remote = [RemoteIoVec {
            base: cursor,
            len: chunk,
        }];
        let n = process_vm_readv(pid, &mut [IoSliceMut::new(&mut buf[..chunk])], &remote)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(nul) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..nul]);
            return Ok(Some(out));
        }
        out.extend_from_slice(&buf[..n]);
        cursor += n;
    }
    Ok(None)
}

fn read_c_string_peek(pid: Pid, addr: u64, max: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    // Start at the aligned word containing addr.
    let mut word_addr = addr as usize & !(WORD - 1);
    let mut skip = addr as usize - word_addr;
    while out.len() <= max {
        let word = ptrace::read(pid, word_addr as ptrace::AddressType).ok()?;
        for &b in &word.to_ne_bytes()[skip..] {
            if b == 0 {
                return Some(out);
            }
            out.push(b);
        }
        skip = 0;
        word_addr += WORD;
    }
    None
}

/// Writes `data` at `addr` in the tracee.
pub fn write_bytes(pid: Pid, addr: u64, data: &[u8]) -> nix::Result<()> {
    if !VM_CALLS_UNAVAILABLE.load(Ordering::Relaxed) {
        let remote = [RemoteIoVec {
            base: addr as usize,
            len: data.len(),
        }];
        match process_vm_writev(pid, &[IoSlice::new(data)], &remote) {
            Ok(n) if n == data.len() => return Ok(()),
            Ok(_) => return Err(nix::Error::EFAULT),
            Err(e) if vm_calls_unavailable(e) => {
                VM_CALLS_UNAVAILABLE.store(true, Ordering::Relaxed)
            }
            Err(e) => return Err(e),
        }
    }
    write_bytes_poke(pid, addr, data)
}

/// Word-at-a-time write. `addr` is the start of a scratch page we own, so it is word aligned;
/// the tail word is read first so bytes past `data` keep their value.
fn write_bytes_poke(pid: Pid, addr: u64, data: &[u8]) -> nix::Result<()> {
    debug_assert_eq!(addr as usize % WORD, 0);
    for (i, chunk) in data.chunks(WORD).enumerate() {
        let target = (addr as usize + i * WORD) as ptrace::AddressType;
        let mut word = if chunk.len() < WORD {
            ptrace::read(pid, target)?.to_ne_bytes()
        } else {
            [0u8; WORD]
        };
        word[..chunk.len()].copy_from_slice(chunk);
        ptrace::write(pid, target, libc::c_long::from_ne_bytes(word))?;
    }
    Ok(())
}
