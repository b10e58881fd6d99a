#!/usr/bin/env bash
# Is the bundle byte-reproducible? Clones this commit twice, at paths of different lengths,
# builds the bundle in each with its own work dir and its own empty Go build cache (so every
# package, k3s included, is compiled again there), and compares the tarballs' sha256.
#   scripts/check-reproducible.sh            both clones built from scratch (about 2 x 16 min
#                                            on 2 cores)
#   scripts/check-reproducible.sh --against-this-checkout
#                                            one clone from scratch, compared with this
#                                            checkout's own dist/ tarball (run `cargo xtask
#                                            bundle` here first)
#   --arch arm64                             the linux-arm64 bundle (cross-compiled) instead
# Sources come from the shared cache and the mirrors (K3S_GVISOR_MIRROR, or
# ../shared/mirror/github.com when it exists): they are verified by git tree id either way.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
against_here=no
arch=amd64
while [ $# -gt 0 ]; do
  case "$1" in
    --against-this-checkout) against_here=yes ;;
    --arch) arch="${2:?--arch needs amd64 or arm64}"; shift ;;
    *) echo "check-reproducible: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

mirror=../shared/mirror/github.com
if [ -d "$mirror" ]; then
  export K3S_GVISOR_MIRROR="${K3S_GVISOR_MIRROR:-} $(cd "$mirror" && pwd)"
fi
export K3S_GVISOR_CACHE="${K3S_GVISOR_CACHE:-$top/.cache}"

scratch=$(mktemp -d /tmp/k3s-gvisor-repro.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

# build DIR: a clone of HEAD in DIR, bundled with a fresh Go build cache; prints the tarball.
build() {
  git clone -q "$top" "$1"
  git -C "$1" checkout -q "$(git rev-parse HEAD)"
  (cd "$1" && GOCACHE="$1.gocache" cargo xtask --arch "$arch" bundle --timings >&2)
  ls "$1"/dist/*-linux-"$arch".tar.gz
}

if [ $against_here = yes ]; then
  # Hashed now: the checkout's dist/ may change while the clone builds.
  a_tarball=$(ls "$top"/dist/k3s-gvisor-*-linux-"$arch".tar.gz)
else
  a_tarball=$(build "$scratch/a")
fi
a=$(sha256sum "$a_tarball" | cut -d' ' -f1)
b_tarball=$(build "$scratch/second-clone-at-a-longer-path")
b=$(sha256sum "$b_tarball" | cut -d' ' -f1)
echo "$a  $a_tarball"
echo "$b  $b_tarball"
if [ "$a" != "$b" ]; then
  echo "NOT reproducible: the two bundles differ" >&2
  exit 1
fi
echo "reproducible: both bundles are $a"
