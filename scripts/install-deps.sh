#!/usr/bin/env bash
# Install what `cargo xtask bundle` and the tests need on a fresh Debian 12 machine (as root).
# Go and Rust come from the machine image; this adds Debian packages only. Idempotent.
#   scripts/install-deps.sh               build and test dependencies
#   scripts/install-deps.sh --build-only  what `cargo xtask bundle` needs (release workflow)
set -euo pipefail

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

packages=("${build[@]}")
[ "${1:-}" = "--build-only" ] || packages+=("${test[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all Debian packages present"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for tool in go cargo rustc; do
  command -v "$tool" >/dev/null || { echo "install-deps: $tool is missing; install the Go and Rust toolchains first" >&2; exit 1; }
done
