//! The optional `--log FILE`: one line per redirect or refused redirect, for debugging which
//! /proc/sys files a program touches.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::Path;

pub struct Log {
    file: Option<File>,
}

impl Log {
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let file = path
            .map(|p| {
                File::options()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("--log {}: cannot open for appending", p.display()))
            })
            .transpose()?;
        Ok(Self { file })
    }

    pub fn enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Writes one line. Logging must never disturb the tracee, so write errors are ignored.
    pub fn line(&mut self, args: std::fmt::Arguments<'_>) {
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{args}");
        }
    }
}
