//! Scratch memory in the tracee for rewritten paths.
//!
//! A rewritten path is longer than the original, so it cannot be written in place. Writing it
//! below the stack pointer is not safe for every program: a Go goroutine's stack may have only
//! a few hundred bytes below SP before the next allocation. So the launcher owns its scratch
//! memory: the first time a process needs a redirect, the launcher makes that thread run an
//! `mmap` instead of its syscall (and then re-runs the original syscall). Each thread gets its
//! own page, held until the thread exits, because several threads of one process can be
//! between "path written" and "kernel copied the path" at the same time.
//!
//! Processes are keyed by thread-group id. A new process (fork/vfork/clone without
//! CLONE_THREAD) starts with no pages even though a forked child inherits its parent's mapping:
//! with CLONE_VM the memory is shared with the parent and handing out the same pages twice
//! would be a race. Exec throws a process's pages away.

use std::collections::HashMap;

pub const PAGE_SIZE: u64 = 4096;
/// Pages mapped per injected mmap.
pub const PAGES_PER_MAPPING: u64 = 16;

#[derive(Default)]
struct ProcessPages {
    free: Vec<u64>,
    /// The injected mmap failed: do not retry for this process image.
    unavailable: bool,
    /// Bumped at exec so that exits of pre-exec threads do not return stale pages.
    generation: u64,
}

struct ThreadPage {
    tgid: i32,
    generation: u64,
    addr: u64,
    /// What the launcher last wrote there; rewriting the same path is skipped.
    contents: Vec<u8>,
}

/// What the caller has to do to get a scratch page for a thread.
#[derive(Debug, PartialEq, Eq)]
pub enum Scratch {
    Page(u64),
    /// No free page in this process: inject an mmap of [`mapping_len`] bytes first.
    NeedsMapping,
    /// Mapping failed before; redirect cannot happen in this process.
    Unavailable,
}

#[derive(Default)]
pub struct ScratchPages {
    processes: HashMap<i32, ProcessPages>,
    threads: HashMap<i32, ThreadPage>,
}

pub fn mapping_len() -> u64 {
    PAGE_SIZE * PAGES_PER_MAPPING
}

impl ScratchPages {
    /// The page of thread `tid` (in thread group `tgid`), assigning a free one if needed.
    pub fn page_for(&mut self, tid: i32, tgid: i32) -> Scratch {
        if let Some(t) = self.threads.get(&tid) {
            return Scratch::Page(t.addr);
        }
        let process = self.processes.entry(tgid).or_default();
        if process.unavailable {
            return Scratch::Unavailable;
        }
        match process.free.pop() {
            Some(addr) => {
                let generation = process.generation;
                self.threads.insert(
                    tid,
                    ThreadPage {
                        tgid,
                        generation,
                        addr,
                        contents: Vec::new(),
                    },
                );
                Scratch::Page(addr)
            }
            None => Scratch::NeedsMapping,
        }
    }

    /// Whether `tid` already holds a page (then its thread group id is known too).
    pub fn has_page(&self, tid: i32) -> bool {
        self.threads.contains_key(&tid)
    }

    /// Whether the page of `tid` already holds `bytes` (written by us, for this process image).
    pub fn holds(&self, tid: i32, bytes: &[u8]) -> bool {
        self.threads.get(&tid).is_some_and(|t| t.contents == bytes)
    }

    /// Remembers that `bytes` were written to the page of `tid`.
    pub fn wrote(&mut self, tid: i32, bytes: &[u8]) {
        if let Some(t) = self.threads.get_mut(&tid) {
            t.contents.clear();
            t.contents.extend_from_slice(bytes);
        }
    }

    /// Records the result of an injected mmap in process `tgid`.
    pub fn add_mapping(&mut self, tgid: i32, result: Result<u64, i32>) {
        let process = self.processes.entry(tgid).or_default();
        match result {
            Ok(base) => process
                .free
                .extend((0..PAGES_PER_MAPPING).map(|i| base + i * PAGE_SIZE)),
            Err(_) => process.unavailable = true,
        }
    }

    /// A thread exited: its page is free again (unless its process image is gone).
    pub fn thread_exited(&mut self, tid: i32) {
        if let Some(t) = self.threads.remove(&tid) {
            if let Some(p) = self.processes.get_mut(&t.tgid) {
                if p.generation == t.generation {
                    p.free.push(t.addr);
                }
            }
        }
    }

    /// A new task appeared with id `id`: any state under that id belongs to a task that died
    /// before (ids are reused), so drop it.
    pub fn new_task(&mut self, id: i32) {
        self.threads.remove(&id);
        self.processes.remove(&id);
    }

    /// Process `tgid` called exec (from thread `former_tid`): its memory is new.
    pub fn exec(&mut self, tgid: i32, former_tid: i32) {
        let generation = self.processes.get(&tgid).map_or(0, |p| p.generation) + 1;
        self.processes.insert(
            tgid,
            ProcessPages {
                generation,
                ..Default::default()
            },
        );
        self.threads.retain(|_, t| t.tgid != tgid);
        self.threads.remove(&former_tid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_get_distinct_pages_and_return_them_on_exit() {
        let mut s = ScratchPages::default();
        assert_eq!(s.page_for(10, 10), Scratch::NeedsMapping);
        s.add_mapping(10, Ok(0x1000_0000));
        let Scratch::Page(a) = s.page_for(10, 10) else {
            panic!()
        };
        let Scratch::Page(b) = s.page_for(11, 10) else {
            panic!()
        };
        assert_ne!(a, b);
        assert_eq!(
            s.page_for(10, 10),
            Scratch::Page(a),
            "a thread keeps its page"
        );
        s.thread_exited(11);
        assert_eq!(
            s.page_for(12, 10),
            Scratch::Page(b),
            "an exited thread's page is reused"
        );
    }

    #[test]
    fn written_contents_are_remembered_per_thread_until_it_exits() {
        let mut s = ScratchPages::default();
        s.add_mapping(10, Ok(0x1000_0000));
        assert!(matches!(s.page_for(11, 10), Scratch::Page(_)));
        assert!(!s.holds(11, b"/d/kernel/pid_max\0"));
        s.wrote(11, b"/d/kernel/pid_max\0");
        assert!(s.holds(11, b"/d/kernel/pid_max\0"));
        assert!(!s.holds(11, b"/d/kernel/panic\0"));
        s.thread_exited(11);
        assert!(matches!(s.page_for(12, 10), Scratch::Page(_)));
        assert!(
            !s.holds(12, b"/d/kernel/pid_max\0"),
            "a reused page starts unknown"
        );
    }

    #[test]
    fn exec_discards_pages_and_stale_exits_do_not_return_them() {
        let mut s = ScratchPages::default();
        s.add_mapping(10, Ok(0x1000_0000));
        let Scratch::Page(_) = s.page_for(11, 10) else {
            panic!()
        };
        s.exec(10, 11);
        s.thread_exited(11);
        assert_eq!(s.page_for(10, 10), Scratch::NeedsMapping);
    }

    #[test]
    fn failed_mapping_is_not_retried_and_new_processes_start_empty() {
        let mut s = ScratchPages::default();
        s.add_mapping(10, Err(libc::ENOMEM));
        assert_eq!(s.page_for(10, 10), Scratch::Unavailable);
        s.new_task(10);
        assert_eq!(s.page_for(10, 10), Scratch::NeedsMapping);
    }
}
