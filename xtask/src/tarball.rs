//! Deterministic tar entries, for every archive the pipeline writes (the bundle, image layers,
//! OCI image archives): owner 0:0 with no user or group names, one fixed mtime, the mode the
//! caller gives (never the builder's umask). Entries are written in the order they are
//! appended; callers append them sorted.

use anyhow::Result;
use std::io::{Read, Write};

/// Writes deterministic entries into a tar stream.
pub struct TarWriter<W: Write> {
    pub tar: tar::Builder<W>,
    mtime: u64,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W, mtime: u64) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        TarWriter { tar, mtime }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// A directory; `name` ends with `/`.
    pub fn dir(&mut self, name: &str) -> Result<()> {
        let mut h = self.header(tar::EntryType::Directory, 0o755, 0);
        self.tar.append_data(&mut h, name, std::io::empty())?;
        Ok(())
    }

    /// A regular file of `size` bytes read from `data`.
    pub fn file(&mut self, name: &str, mode: u32, size: u64, data: impl Read) -> Result<()> {
        let mut h = self.header(tar::EntryType::Regular, mode, size);
        self.tar.append_data(&mut h, name, data)?;
        Ok(())
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> Result<()> {
        let mut h = self.header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, name, target)?;
        Ok(())
    }

    pub fn finish(self) -> Result<W> {
        Ok(self.tar.into_inner()?)
    }
}
