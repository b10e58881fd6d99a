#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then lint, the real bundle,
# and every test. Tests run as root: they use network namespaces, mounts, ptrace and runsc.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# Upstream sources: the machines CI runs on reach no GitHub, but have a mirror of its commit
# archives beside the checkout (../shared/mirror, laid out like the URLs). Every source is
# verified by its git tree id whichever transport serves it (xtask/src/fetch.rs).
mirror=../shared/mirror/github.com
if [ -d "$mirror" ]; then
  export K3S_GVISOR_MIRROR="${K3S_GVISOR_MIRROR:-} $(cd "$mirror" && pwd)"
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# The real pipeline first: the installer and patch tests run the binaries it builds
# (target/k3s-gvisor/out/*/bin), and tests/tests/bundle.rs checks the tarball it writes.
cargo xtask bundle --timings
cargo xtask build --unpatched --component runc --component containerd

# Every test. Where a test takes one gVisor from K3S_GVISOR_RUNSC it gets Debian's 2022
# runsc (the default, `runsc` on PATH); tests that need the current gVisor build it with
# `cargo xtask tool runsc` themselves.
cargo test --workspace --locked

# The gVisor tests of the launcher, the CNI plugin and the pause binary again, in the
# current gVisor (built from the Go module proxy): what users' sandboxes run.
current_runsc=$(cargo xtask tool runsc)
K3S_GVISOR_RUNSC="$current_runsc" cargo test --locked \
  -p launcher --test redirect_runsc -p gvisor-cni --test runsc -p pause --test pause
K3S_GVISOR_RUNSC="$current_runsc" cargo test --locked -p xtask -- \
  image::tests::the_pause_image_imports_into_containerd_inside_gvisor

# The k3s end-to-end scenario (tests/e2e/scenario.sh) on the real bundle, each run in a sandbox
# with eth0 and a default route (xtask/src/sandbox.rs): the current gVisor in both modes, plain
# Linux with pods, and Debian's 2022 gVisor with the control plane only (its full mode cannot
# run runc 1.3.3 containers: no mount namespaces, doctor names the gaps; it also refuses its own
# netstack on this kernel, so it runs with loopback only, where install picks the node IP).
cargo xtask e2e --host current --mode full --mode control-plane-only
cargo xtask e2e --host plain --mode full
cargo xtask e2e --host debian --mode control-plane-only
