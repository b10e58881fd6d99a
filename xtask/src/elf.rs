//! What an ELF executable needs from the machine it runs on: its program interpreter (the
//! dynamic loader), if any. Bundled binaries and image files must need none (or bring it).

use anyhow::{Context, Result};
use object::read::elf::{FileHeader, ProgramHeader};

/// The PT_INTERP path of a 64-bit ELF file (`/lib64/ld-linux-x86-64.so.2`), or None for a static
/// (or static-pie) executable. An error for anything that is not 64-bit ELF.
pub fn interpreter(bytes: &[u8]) -> Result<Option<String>> {
    let header = object::elf::FileHeader64::<object::Endianness>::parse(bytes)
        .context("not a 64-bit ELF file")?;
    let endian = header.endian()?;
    let segments = header
        .program_headers(endian, bytes)
        .context("unreadable ELF program headers")?;
    for segment in segments {
        if segment.p_type(endian) == object::elf::PT_INTERP {
            let raw = segment
                .data(endian, bytes)
                .map_err(|()| anyhow::anyhow!("PT_INTERP points outside the file"))?;
            let path = raw.split(|&b| b == 0).next().unwrap_or_default();
            return Ok(Some(String::from_utf8_lossy(path).into_owned()));
        }
    }
    Ok(None)
}

/// True for an ELF executable that needs no dynamic loader or shared library.
pub fn is_static(path: &std::path::Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(interpreter(&bytes)
        .with_context(|| path.display().to_string())?
        .is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_dynamic_executable_is_told_apart() {
        // Any dynamically linked system binary has PT_INTERP; busybox-static has not.
        let ls = interpreter(&std::fs::read("/bin/ls").unwrap()).unwrap();
        assert!(ls.is_some_and(|i| i.contains("ld-linux")));
        assert!(is_static(Path::new("/bin/busybox")).unwrap());
        assert!(is_static(Path::new("/etc/hostname")).is_err());
    }
}
