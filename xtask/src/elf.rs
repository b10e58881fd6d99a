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

/// The `e_machine` of a 64-bit ELF file (`object::elf::EM_AARCH64`, ...).
pub fn machine(bytes: &[u8]) -> Result<u16> {
    let header = object::elf::FileHeader64::<object::Endianness>::parse(bytes)
        .context("not a 64-bit ELF file")?;
    Ok(header.e_machine(header.endian()?))
}

/// The name `file` gives an ELF machine, for messages.
pub fn machine_name(machine: u16) -> String {
    match machine {
        object::elf::EM_X86_64 => "x86-64".into(),
        object::elf::EM_AARCH64 => "ARM aarch64".into(),
        other => format!("ELF machine {other}"),
    }
}

/// Is `bytes` an ELF file at all (the bundle holds scripts and data too)?
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Fail unless the binary at `path` is built for `target`'s architecture: a binary of the
/// wrong one would only say "Exec format error" on the user's machine.
pub fn check_machine(path: &std::path::Path, target: &crate::target::Target) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let found = machine(&bytes).with_context(|| path.display().to_string())?;
    if found != target.elf_machine() {
        anyhow::bail!(
            "{} is built for {}, not for {} (the bundle's arch {})",
            path.display(),
            machine_name(found),
            machine_name(target.elf_machine()),
            target.arch
        );
    }
    Ok(())
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

    #[test]
    fn the_machine_is_read_and_a_wrong_one_refused() {
        use bundle_format::Arch;
        let ls = std::fs::read("/bin/ls").unwrap();
        assert!(is_elf(&ls));
        assert!(!is_elf(b"#!/bin/sh\n"));
        let host = crate::target::Target::new(Arch::Amd64).unwrap().host;
        let native = crate::target::Target { arch: host, host };
        check_machine(Path::new("/bin/ls"), &native).unwrap();
        let other = if host == Arch::Amd64 {
            Arch::Arm64
        } else {
            Arch::Amd64
        };
        let cross = crate::target::Target { arch: other, host };
        let err = format!(
            "{:#}",
            check_machine(Path::new("/bin/ls"), &cross).unwrap_err()
        );
        assert!(
            err.contains("not for") && err.contains(other.as_str()),
            "{err}"
        );
    }
}
