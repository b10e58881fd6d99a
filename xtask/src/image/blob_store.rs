//! The content-addressed blob cache, `<cache_dir>/images/blobs/sha256/<hex>`.
//!
//! A blob enters the cache only through `BlobWriter::commit`, which checks the digest and size of
//! what was written and then renames a temporary file into place. A failed or interrupted
//! download leaves nothing behind: the temporary file is deleted when the writer is dropped.

use super::digest::sha256_hex;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::Poll;

pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    pub fn new(cache_dir: &Path) -> Self {
        let root = cache_dir.join("images");
        BlobStore {
            blobs: root.join("blobs/sha256"),
            tmp: root.join("tmp"),
        }
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs.join(sha256_hex(digest)?))
    }

    pub fn contains(&self, digest: &str) -> Result<bool> {
        Ok(self.path(digest)?.is_file())
    }

    /// Read a cached blob and check it still has its digest (and size, when known): a cache
    /// edited by hand or damaged on disk must not slip into a bundle.
    pub fn read_verified(&self, digest: &str, size: Option<u64>) -> Result<Vec<u8>> {
        let path = self.path(digest)?;
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        check_content(digest, size, &bytes, &path)?;
        Ok(bytes)
    }

    /// Start writing a blob; nothing is visible in the cache until `commit`.
    pub fn writer(&self, digest: &str, size: Option<u64>) -> Result<BlobWriter> {
        let dest = self.path(digest)?;
        for dir in [&self.blobs, &self.tmp] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = tempfile::NamedTempFile::new_in(&self.tmp)
            .with_context(|| format!("cannot create a temporary file in {}", self.tmp.display()))?;
        Ok(BlobWriter {
            file,
            hasher: Sha256::new(),
            written: 0,
            digest: digest.to_string(),
            size,
            dest,
        })
    }
}

fn check_content(digest: &str, size: Option<u64>, bytes: &[u8], path: &Path) -> Result<()> {
    let actual = super::digest::sha256_digest(bytes);
    if actual != digest || size.is_some_and(|s| s != bytes.len() as u64) {
        bail!(
            "cached blob {} is damaged: expected {digest} ({} bytes), found {actual} ({} bytes); \
             delete it and run again to download it afresh",
            path.display(),
            size.map_or("any".to_string(), |s| s.to_string()),
            bytes.len()
        );
    }
    Ok(())
}

/// Hash a file as it is read, for checking cached blobs while they are copied.
pub fn verify_file(path: &Path, digest: &str, size: u64) -> Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest || total != size {
        bail!(
            "cached blob {} should be {digest} ({size} bytes) but is {actual} ({total} bytes): \
             the cache is damaged; delete it and run again",
            path.display()
        );
    }
    Ok(())
}

/// Receives a blob's bytes (from `std::io::Write` or tokio's `AsyncWrite`, so oci-client can
/// stream into it), hashing and counting them.
pub struct BlobWriter {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
    digest: String,
    size: Option<u64>,
    dest: PathBuf,
}

impl BlobWriter {
    /// Check digest and size, then move the blob into the cache. On any mismatch the temporary
    /// file is deleted and the cache is left as it was.
    pub fn commit(self) -> Result<PathBuf> {
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if actual != self.digest {
            bail!(
                "content for {} has digest {actual}: the registry served different bytes than \
                 the digest names (corrupted or tampered); nothing was cached",
                self.digest
            );
        }
        if let Some(size) = self.size {
            if size != self.written {
                bail!(
                    "blob {} is {} bytes but its descriptor says {size}; nothing was cached",
                    self.digest,
                    self.written
                );
            }
        }
        self.file.as_file().sync_all()?;
        self.file
            .persist(&self.dest)
            .with_context(|| format!("cannot move blob into {}", self.dest.display()))?;
        Ok(self.dest)
    }

    fn accept(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        if let Some(size) = self.size {
            // Stop a registry that sends more than the descriptor promised early.
            if self.written > size {
                return Err(std::io::Error::other(format!(
                    "blob {} is larger than its descriptor's {size} bytes",
                    self.digest
                )));
            }
        }
        self.hasher.update(buf);
        self.file.write_all(buf)?;
        Ok(buf.len())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.accept(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writing to a local file blocks only briefly; the stage runs one download at a time on a
/// current-thread runtime, so doing it inline is simpler than a blocking-pool hand-off.
impl tokio::io::AsyncWrite for BlobWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.get_mut().accept(buf))
    }
    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().file.flush())
    }
    fn poll_shutdown(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
