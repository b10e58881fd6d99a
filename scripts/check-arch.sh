#!/usr/bin/env bash
# Check a bundle built for another architecture than this machine's (issue 29: arm64 on an
# amd64 machine), as far as it can be checked here, without installing it:
#   - `cargo xtask --arch ARCH bundle` (up to date: nothing is rebuilt), then `cargo xtask
#     verify` of its .tar.gz and .tar.zst;
#   - `file` on every ELF file in the bundle and in every image's layers: each must be for ARCH;
#     every image config's architecture must be ARCH;
#   - the shipped programs answer under qemu-user (called explicitly: binfmt_misc need not be
#     registered; the binaries are static, so no -L sysroot): `k3s --version`,
#     `containerd --version`, `runc --version`, `installer --help`, and the rest of bin/;
#   - with --unit-tests: the runtime crates' unit tests (`--lib --bins`) built for ARCH and run
#     under qemu-user (cargo's runner). Linked static like the bundle's binaries: qemu 7.2 hangs
#     in dynamically linked aarch64 programs that start threads (libtest runs each test in one),
#     measured with a two-line program. The launcher has none for arm64 (it is x86_64 only);
#   - with --reproducible: scripts/check-reproducible.sh --arch ARCH --against-this-checkout
#     (a clone at another path, its own work dir and an empty Go build cache, the same sha256).
# What cannot be checked here: installing and running k3s (no ARCH machine); the e2e is not run.
#   scripts/check-arch.sh arm64 [--unit-tests] [--reproducible]
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: scripts/check-arch.sh arm64 [--unit-tests] [--reproducible]}
shift
reproducible=no
unit_tests=no
for option in "$@"; do
  case "$option" in
    --reproducible) reproducible=yes ;;
    --unit-tests) unit_tests=yes ;;
    *) echo "check-arch: unknown option $option (--unit-tests, --reproducible)" >&2; exit 2 ;;
  esac
done
case "$arch" in
  arm64) file_says="ARM aarch64"; qemu="qemu-aarch64"; rust_target=aarch64-unknown-linux-gnu ;;
  amd64) file_says="x86-64"; qemu="qemu-x86_64"; rust_target=x86_64-unknown-linux-gnu ;;
  *) echo "check-arch: $arch: bundles are built for amd64 and arm64" >&2; exit 2 ;;
esac
for tool in file jq "$qemu"; do
  command -v "$tool" >/dev/null || { echo "check-arch: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done

tarball=$(cargo xtask --arch "$arch" bundle)
echo "== $tarball"
cargo xtask --arch "$arch" verify "$tarball"
cargo xtask --arch "$arch" verify "${tarball%.tar.gz}.tar.zst"

scratch=$(mktemp -d /tmp/k3s-gvisor-check-arch.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
tar -xzf "$tarball" -C "$scratch"
top=$(find "$scratch" -mindepth 1 -maxdepth 1 -type d)

# file_check DIR WHAT: every ELF file below DIR must be for $arch; prints one line per file.
bad=0
file_check() {
  while IFS= read -r -d '' f; do
    kind=$(file -b "$f")
    case "$kind" in
      ELF*) ;;
      *) continue ;;
    esac
    case "$kind" in
      *"$file_says"*) echo "  ok  $2${f#"$1"}: ${kind%%, BuildID*}" ;;
      *) echo "  BAD $2${f#"$1"}: $kind"; bad=1 ;;
    esac
  done < <(find "$1" -type f -print0 | sort -z)
}

echo "== file: every ELF in the bundle"
file_check "$top" ""
echo "== images: config architecture, and every ELF in their layers"
for image in "$top"/images/*.oci.tar; do
  dir="$scratch/image-$(basename "$image" .oci.tar)"
  mkdir -p "$dir/oci" "$dir/rootfs"
  tar -xf "$image" -C "$dir/oci"
  manifest=$(jq -r '.manifests[0].digest' "$dir/oci/index.json" | sed 's|:|/|')
  config=$(jq -r '.config.digest' "$dir/oci/blobs/$manifest" | sed 's|:|/|')
  config_arch=$(jq -r '.architecture' "$dir/oci/blobs/$config")
  if [ "$config_arch" = "$arch" ]; then
    echo "  ok  $(basename "$image"): config architecture $config_arch"
  else
    echo "  BAD $(basename "$image"): config architecture $config_arch"; bad=1
  fi
  for layer in $(jq -r '.layers[].digest' "$dir/oci/blobs/$manifest" | sed 's|:|/|'); do
    tar -xzf "$dir/oci/blobs/$layer" -C "$dir/rootfs"
  done
  file_check "$dir/rootfs" "$(basename "$image"):"
done

echo "== $qemu: the shipped programs answer"
run() {
  local out
  if out=$("$qemu" "$@" 2>&1); then  # stdin: the caller's (a CNI config for the plugin)
    echo "  ok  $(basename "$1") ${*:2}: $(echo "$out" | head -n 1)"
  else
    echo "  BAD $(basename "$1") ${*:2}: $(echo "$out" | head -n 3)"; bad=1
  fi
}
bin="$top/bin"
run "$bin/k3s" --version
run "$bin/containerd" --version
run "$bin/runc" --version
run "$bin/installer" --help
run "$bin/ctr" --version
run "$bin/containerd-shim-runc-v2" -v
run "$bin/helm" version
run "$bin/svcproxy" --help
# A CNI plugin answers its runtime's VERSION command (CNI_COMMAND, a config on stdin), not
# --version.
export CNI_COMMAND=VERSION
run "$top/cni/bin/gvisor-cni" <<< '{"cniVersion":"1.1.0"}'
unset CNI_COMMAND
# kubectl and crictl are links to k3s, which dispatches on argv[0]: run them by their names.
run "$bin/kubectl" version --client
run "$bin/crictl" --version
[ -e "$bin/launcher" ] && run "$bin/launcher" --help

if [ $bad != 0 ]; then
  echo "check-arch: the linux-$arch bundle failed a check above" >&2
  exit 1
fi
if [ $unit_tests = yes ]; then
  echo "== the runtime crates' unit tests under $qemu"
  target_var=$(echo "$rust_target" | tr 'a-z-' 'A-Z_')
  crates=(-p bundle-format -p netif -p gvisor-cni -p installer -p svcproxy -p pause)
  [ "$arch" = amd64 ] && crates+=(-p launcher)
  env "CARGO_TARGET_${target_var}_LINKER=${rust_target%%-unknown-*}-linux-gnu-gcc" \
    "CARGO_TARGET_${target_var}_RUNNER=$qemu" \
    RUSTFLAGS="-C target-feature=+crt-static" \
    cargo test --locked --no-fail-fast --target "$rust_target" \
    --target-dir target/check-arch-tests "${crates[@]}" --lib --bins
fi
if [ $reproducible = yes ]; then
  echo "== reproducible"
  scripts/check-reproducible.sh --arch "$arch" --against-this-checkout
fi
echo "check-arch: the linux-$arch bundle passed every check that can run on this machine"
