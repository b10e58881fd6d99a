//! The architecture a bundle is built for (bundle.toml's `arch`, or `--arch`), and what each
//! stage needs to build for it on this machine: GOARCH and, for cgo, the C cross compiler and
//! the target's libraries (Debian multiarch); the cargo target and its linker; the image
//! platform; the ELF machine every binary must have; and how a check runs a binary of another
//! architecture (qemu-user).
//!
//! A native build (target = build machine) needs nothing beyond what it always had, and records
//! nothing more: its stamps, build commands and so its bundle stay what they were before the
//! architecture was a choice. A cross build records what it adds (`GOARCH=arm64
//! CC=aarch64-linux-gnu-gcc ...`) in the manifest's build commands and in every stamp.

use anyhow::{bail, Result};
use bundle_format::Arch;
use std::path::Path;

/// The architecture built for, and the build machine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub arch: Arch,
    pub host: Arch,
}

impl Target {
    /// Building `arch` bundles on this machine.
    pub fn new(arch: Arch) -> Result<Target> {
        let Some(host) = Arch::from_rust(std::env::consts::ARCH) else {
            bail!(
                "this build machine is {}: bundles are built on amd64 or arm64 machines",
                std::env::consts::ARCH
            );
        };
        Ok(Target { arch, host })
    }

    pub fn is_cross(&self) -> bool {
        self.arch != self.host
    }

    /// The cargo target the runtime crates are built for (glibc, linked statically by
    /// build.rs's RUSTFLAGS, as for amd64).
    pub fn rust_target(&self) -> &'static str {
        match self.arch {
            Arch::Amd64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The OCI platform of the images (`linux/arm64`).
    pub fn platform(&self) -> String {
        format!("linux/{}", self.arch)
    }

    /// The ELF `e_machine` of every binary built for the target.
    pub fn elf_machine(&self) -> u16 {
        elf_machine(self.arch)
    }

    /// The environment `go build` gets for the target: GOOS and GOARCH always (so that no
    /// inherited GOARCH can change a build), plus what only a cross build needs ([`Self::go_cross_env`]).
    pub fn go_env(&self, cgo: bool) -> Vec<(String, String)> {
        let mut env = vec![
            ("GOOS".to_string(), "linux".to_string()),
            ("GOARCH".to_string(), self.arch.to_string()),
        ];
        env.extend(self.go_cross_env(cgo));
        env
    }

    /// What a cross build adds to `go build`'s environment, as the manifest records it: GOARCH,
    /// and for cgo the cross compiler and pkg-config reading the target's `.pc` files (runc's
    /// libseccomp is found through pkg-config). Empty for a native build.
    pub fn go_cross_env(&self, cgo: bool) -> Vec<(String, String)> {
        if !self.is_cross() {
            return Vec::new();
        }
        let mut env = vec![("GOARCH".to_string(), self.arch.to_string())];
        if cgo {
            let triplet = multiarch(self.arch);
            env.push(("CC".into(), format!("{triplet}-gcc")));
            env.push((
                "PKG_CONFIG_LIBDIR".into(),
                format!("/usr/lib/{triplet}/pkgconfig:/usr/share/pkgconfig"),
            ));
        }
        env
    }

    /// What a cross build adds to cargo's environment: the target's linker (the cross gcc, which
    /// also finds the target's static glibc). Empty for a native build.
    pub fn cargo_cross_env(&self) -> Vec<(String, String)> {
        if !self.is_cross() {
            return Vec::new();
        }
        let target = self.rust_target().to_uppercase().replace('-', "_");
        vec![(
            format!("CARGO_TARGET_{target}_LINKER"),
            format!("{}-gcc", multiarch(self.arch)),
        )]
    }

    /// The program a binary built for the target runs under here: none natively, qemu-user
    /// otherwise (binfmt_misc need not be registered: the emulator is named explicitly). Our
    /// binaries are static, so it needs no `-L` sysroot.
    pub fn runner(&self) -> Option<&'static str> {
        self.is_cross().then(|| qemu(self.arch))
    }

    /// Fail early, naming the Debian package, when a cross build lacks its compiler (cgo and
    /// the crates' linker), the target's static C library, or the emulator its checks run in.
    pub fn check_tools(&self) -> Result<()> {
        self.check_tools_with(&|program| on_path(program), &|path| path.exists())
    }

    /// [`Self::check_tools`], with how a program on PATH and a file are looked for.
    fn check_tools_with(
        &self,
        program_exists: &dyn Fn(&str) -> bool,
        file_exists: &dyn Fn(&Path) -> bool,
    ) -> Result<()> {
        if !self.is_cross() {
            return Ok(());
        }
        let triplet = multiarch(self.arch);
        let mut missing = Vec::new();
        for (program, package) in [
            (
                format!("{triplet}-gcc"),
                format!("gcc-{}", triplet.replace('_', "-")),
            ),
            (qemu(self.arch).to_string(), "qemu-user".to_string()),
        ] {
            if !program_exists(&program) {
                missing.push(format!("{program} (apt-get install {package})"));
            }
        }
        let libc = format!("/usr/{triplet}/lib/libc.a");
        if !file_exists(Path::new(&libc)) {
            missing.push(format!(
                "{libc} (apt-get install libc6-dev-{}-cross)",
                self.arch
            ));
        }
        if !missing.is_empty() {
            bail!(
                "cannot build a linux-{} bundle on this {} machine; missing (scripts/install-deps.sh \
                 installs them):\n  {}",
                self.arch,
                self.host,
                missing.join("\n  ")
            );
        }
        Ok(())
    }

    /// A `build_requires` entry of bundle.toml for the target: `{multiarch}` in the path is the
    /// target's Debian multiarch triplet, and the package of such a path is the target's
    /// (`libseccomp-dev:arm64`) when cross-compiling. A native build reads exactly what
    /// bundle.toml wrote before the placeholder existed.
    pub fn build_require(&self, path: &str, package: &str) -> (String, String) {
        const PLACEHOLDER: &str = "{multiarch}";
        if !path.contains(PLACEHOLDER) {
            return (path.to_string(), package.to_string());
        }
        let path = path.replace(PLACEHOLDER, multiarch(self.arch));
        let package = if self.is_cross() {
            format!("{package}:{}", self.arch)
        } else {
            package.to_string()
        };
        (path, package)
    }
}

/// The ELF `e_machine` of a binary for `arch`.
pub fn elf_machine(arch: Arch) -> u16 {
    match arch {
        Arch::Amd64 => object::elf::EM_X86_64,
        Arch::Arm64 => object::elf::EM_AARCH64,
    }
}

/// Debian's multiarch triplet, also the GNU cross tools' prefix (`aarch64-linux-gnu-gcc`).
pub fn multiarch(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "x86_64-linux-gnu",
        Arch::Arm64 => "aarch64-linux-gnu",
    }
}

/// qemu-user's emulator for `arch`.
fn qemu(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "qemu-x86_64",
        Arch::Arm64 => "qemu-aarch64",
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NATIVE: Target = Target {
        arch: Arch::Amd64,
        host: Arch::Amd64,
    };
    const CROSS: Target = Target {
        arch: Arch::Arm64,
        host: Arch::Amd64,
    };

    /// A native build adds nothing to what is recorded, so amd64 bundles stay as they were.
    #[test]
    fn a_native_build_records_nothing_more() {
        assert!(!NATIVE.is_cross());
        assert!(NATIVE.go_cross_env(true).is_empty());
        assert!(NATIVE.cargo_cross_env().is_empty());
        assert_eq!(NATIVE.runner(), None);
        assert_eq!(
            NATIVE.go_env(false),
            [
                ("GOOS".into(), "linux".into()),
                ("GOARCH".into(), "amd64".into())
            ]
        );
        assert_eq!(NATIVE.rust_target(), "x86_64-unknown-linux-gnu");
        assert_eq!(NATIVE.platform(), "linux/amd64");
        assert_eq!(
            NATIVE.build_require("/usr/lib/{multiarch}/libseccomp.a", "libseccomp-dev"),
            (
                "/usr/lib/x86_64-linux-gnu/libseccomp.a".to_string(),
                "libseccomp-dev".to_string()
            )
        );
        NATIVE.check_tools().unwrap();
    }

    #[test]
    fn an_arm64_build_on_amd64_uses_the_cross_tools_and_qemu() {
        assert!(CROSS.is_cross());
        let env = |pairs: Vec<(String, String)>| {
            pairs
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(env(CROSS.go_cross_env(false)), "GOARCH=arm64");
        assert_eq!(
            env(CROSS.go_cross_env(true)),
            "GOARCH=arm64 CC=aarch64-linux-gnu-gcc \
             PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig"
        );
        assert_eq!(
            env(CROSS.cargo_cross_env()),
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc"
        );
        assert_eq!(CROSS.runner(), Some("qemu-aarch64"));
        assert_eq!(CROSS.rust_target(), "aarch64-unknown-linux-gnu");
        assert_eq!(CROSS.platform(), "linux/arm64");
        assert_eq!(CROSS.elf_machine(), object::elf::EM_AARCH64);
        assert_eq!(
            CROSS.build_require("/usr/lib/{multiarch}/libz.a", "zlib1g-dev"),
            (
                "/usr/lib/aarch64-linux-gnu/libz.a".to_string(),
                "zlib1g-dev:arm64".to_string()
            )
        );
        // Headers are shared between architectures: the path and package stay.
        assert_eq!(
            CROSS.build_require("/usr/include/seccomp.h", "libseccomp-dev"),
            (
                "/usr/include/seccomp.h".to_string(),
                "libseccomp-dev".to_string()
            )
        );
    }

    #[test]
    fn a_missing_cross_compiler_names_its_package() {
        let nothing = CROSS.check_tools_with(&|_| false, &|_| false).unwrap_err();
        let err = format!("{nothing:#}");
        assert!(
            err.contains("cannot build a linux-arm64 bundle on this amd64 machine"),
            "{err}"
        );
        for want in [
            "aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu)",
            "qemu-aarch64 (apt-get install qemu-user)",
            "/usr/aarch64-linux-gnu/lib/libc.a (apt-get install libc6-dev-arm64-cross)",
        ] {
            assert!(err.contains(want), "{err}");
        }
        // The other way round, the x86-64 cross tools' names.
        let to_amd64 = Target {
            arch: Arch::Amd64,
            host: Arch::Arm64,
        };
        let err = format!(
            "{:#}",
            to_amd64
                .check_tools_with(&|_| false, &|_| true)
                .unwrap_err()
        );
        assert!(
            err.contains("x86_64-linux-gnu-gcc (apt-get install gcc-x86-64-linux-gnu)"),
            "{err}"
        );
        CROSS.check_tools_with(&|_| true, &|_| true).unwrap();
        // A native build needs none of them.
        NATIVE.check_tools_with(&|_| false, &|_| false).unwrap();
    }
}
