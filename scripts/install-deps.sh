#!/usr/bin/env bash
# Install what `cargo xtask bundle` and the tests need on a fresh Debian 12 machine (as root).
# Go and Rust come from the machine image; this adds Debian packages only. Idempotent.
set -euo pipefail

packages=(
  # build: runc links libseccomp statically; gcc/pkg-config for cgo; git for patch tooling
  libseccomp-dev pkg-config gcc libc6-dev git ca-certificates
  # tests: gVisor (Debian's 2022 runsc), a busybox for container rootfs, strace for the
  # launcher benchmark baseline, iproute2 for network namespaces, a registry and skopeo for
  # the image pull tests, iptables for k3s
  runsc busybox-static strace iproute2 docker-registry skopeo iptables util-linux
)

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
