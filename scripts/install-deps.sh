#!/usr/bin/env bash
# Install what `cargo xtask bundle` and the tests need on a fresh Debian 12 amd64 machine (as
# root). Go and Rust come from the machine image; this adds Debian packages (and the Rust
# aarch64 target). Idempotent.
#   scripts/install-deps.sh               build and test dependencies, for amd64 and arm64 bundles
#   scripts/install-deps.sh --build-only  what `cargo xtask bundle` needs (release workflow)
#   --arch amd64 / --arch arm64           only what bundles of that architecture need
#                                         (default: both)
set -euo pipefail

build_only=no
arches="amd64 arm64"
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) build_only=yes ;;
    --arch) arches="${2:?--arch needs amd64 or arm64}"; shift ;;
    *) echo "install-deps: unknown option $1 (--build-only, --arch amd64|arm64)" >&2; exit 2 ;;
  esac
  shift
done
case " $arches " in
  *" amd64 "*|*" arm64 "*) ;;
  *) echo "install-deps: --arch $arches: bundles are built for amd64 and arm64" >&2; exit 2 ;;
esac

build=(
  # runc links libseccomp statically; gcc/pkg-config for cgo; k3s links sqlite and zlib;
  # xtask's git transport (libgit2 over HTTPS) builds against OpenSSL
  libseccomp-dev pkg-config gcc libc6-dev libsqlite3-dev zlib1g-dev libssl-dev git ca-certificates
  # Debian's busybox-static goes into the bundle's busybox image
  busybox-static
)
test=(
  # gVisor (Debian's 2022 runsc), strace for the launcher benchmark baseline, iproute2 and
  # util-linux for namespaces, a registry and skopeo for the image pull tests (htpasswd -B from
  # apache2-utils for its bcrypt basic auth, zstd for compressed image archives), iptables for
  # k3s, shellcheck for actionlint, python3-venv for the SBOM schema validator, jq for the e2e
  # scripts' JSON
  runsc strace iproute2 util-linux docker-registry skopeo openssl apache2-utils zstd iptables shellcheck python3 python3-venv jq
)

# arm64 bundles, cross-compiled here (xtask/src/target.rs): the C cross compiler and the arm64
# static glibc (cgo, and the Rust crates' linker), qemu-user (the build's checks run the arm64
# binaries), and the arm64 builds of the libraries runc and k3s link (Debian multiarch). Those
# are `Multi-Arch: same`: apt insists on the amd64 and arm64 copies having one version, so each
# is asked for at the version of the amd64 package installed above (else apt would upgrade the
# build machine's own, and so what amd64 bundles link).
cross_tools=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
cross_libraries=(libseccomp-dev libsqlite3-dev zlib1g-dev zlib1g)
# Debian 12's busybox-static for arm64, for the busybox and klipper-helm images (bundle.toml
# pins its sha256). It cannot be installed beside the amd64 one (same /bin/busybox): its .deb
# is unpacked here instead.
busybox_arm64_version="1:1.35.0-4+deb12u1+b1"
busybox_arm64_root=/usr/local/lib/k3s-gvisor/debian-arm64

packages=("${build[@]}")
[ $build_only = yes ] || packages+=("${test[@]}")
case " $arches " in *" arm64 "*) packages+=("${cross_tools[@]}") ;; esac

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}
export DEBIAN_FRONTEND=noninteractive
updated=no
apt_update() {
  [ $updated = yes ] || apt-get update -qq
  updated=yes
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all Debian packages present"
else
  echo "install-deps: installing ${missing[*]}"
  apt_update
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The klipper-helm image's CA bundle (bundle.toml pins its sha256): Debian's Mozilla
# certificates as the ca-certificates package ships them, in name order. Not the machine's
# /etc/ssl/certs/ca-certificates.crt: machines add their own CAs to it (this one appends a
# private registry's CA at boot), which would leak into the image and break the pin.
ca_bundle=/usr/local/lib/k3s-gvisor/ca-certificates.crt
mkdir -p "$(dirname "$ca_bundle")"
# sed -s: each file separately, a newline added after a last line without one.
# shellcheck disable=SC1003,SC2016
find /usr/share/ca-certificates/mozilla -name '*.crt' -print0 | LC_ALL=C sort -z \
  | xargs -0 sed -s -e '$a\' > "$ca_bundle.new"
mv "$ca_bundle.new" "$ca_bundle"

case " $arches " in *" arm64 "*)
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "install-deps: adding the arm64 architecture (dpkg --add-architecture arm64)"
    dpkg --add-architecture arm64
    updated=no
  fi
  missing=()
  for p in "${cross_libraries[@]}"; do
    installed "$p:arm64" || missing+=("$p:arm64=$(dpkg-query -W -f='${Version}' "$p")")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    apt_update
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [ ! -x "$busybox_arm64_root/bin/busybox" ]; then
    echo "install-deps: unpacking busybox-static:arm64=$busybox_arm64_version into $busybox_arm64_root"
    apt_update
    scratch=$(mktemp -d)
    (cd "$scratch" && apt-get download -qq "busybox-static:arm64=$busybox_arm64_version" 2>/dev/null)
    mkdir -p "$busybox_arm64_root"
    dpkg-deb -x "$scratch"/busybox-static_*_arm64.deb "$busybox_arm64_root"
    rm -rf "$scratch"
  fi
  ;;
esac

for tool in go cargo rustc; do
  command -v "$tool" >/dev/null || { echo "install-deps: $tool is missing; install the Go and Rust toolchains first" >&2; exit 1; }
done
case " $arches " in *" arm64 "*)
  # The Rust crates' arm64 target (its standard library); rustup is how the toolchain came.
  # Under sudo, rustup may look for another user's toolchain: then say what to run, as whom.
  if [ ! -d "$(rustc --print sysroot)/lib/rustlib/aarch64-unknown-linux-gnu" ]; then
    echo "install-deps: rustup target add aarch64-unknown-linux-gnu"
    rustup target add aarch64-unknown-linux-gnu || {
      echo "install-deps: run \`rustup target add aarch64-unknown-linux-gnu\` as the user whose Rust toolchain builds the bundle" >&2
      exit 1
    }
  fi
  ;;
esac
