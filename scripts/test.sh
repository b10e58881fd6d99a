#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then lint, the real bundle,
# and every test. Tests run as root: they use network namespaces, mounts, ptrace and runsc.
set -euo pipefail
cd "$(dirname "$0")/.."

# Where CI's minutes go (its budget: 45 on a fresh machine): each phase's start, in seconds.
phase() { echo "== test.sh: $1 (at ${SECONDS}s)"; }

# amd64 only: no test here builds or runs the arm64 bundle (scripts/check-arch.sh does, outside
# CI's time budget), so CI machines need no cross toolchain.
scripts/install-deps.sh --arch amd64

# Upstream sources: the machines CI runs on reach no GitHub, but have a mirror of its commit
# archives beside the checkout (../shared/mirror, laid out like the URLs). Every source is
# verified by its git tree id whichever transport serves it (xtask/src/fetch.rs).
mirror=../shared/mirror/github.com
if [ -d "$mirror" ]; then
  export K3S_GVISOR_MIRROR="${K3S_GVISOR_MIRROR:-} $(cd "$mirror" && pwd)"
fi

# One build of each test binary per run: cargo's incremental caches (gigabytes for this
# workspace) would only fill the disk, which a CI run once ran out of (stop 32).
export CARGO_INCREMENTAL=0

# Tests that need root skip themselves in a contributor's plain `cargo test` when not root
# (crates/testkit); here none may skip.
export K3S_GVISOR_TEST_ALL=1

# cargo test with a name filter: fails when the filter matched no test, so that a renamed test
# cannot turn a step into a silent pass.
cargo_test_filtered() {
  local log ran
  log=$(mktemp)
  cargo test "$@" 2>&1 | tee "$log"
  ran=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{n += $4} END {print n + 0}')
  rm -f "$log"
  if [ "$ran" -eq 0 ]; then
    echo "error: no test ran for: cargo test $*" >&2
    exit 1
  fi
}

phase "lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# The real pipeline first: the installer and patch tests run the binaries it builds
# (target/k3s-gvisor/out/*/bin), and tests/tests/bundle.rs checks the tarball it writes.
phase "bundle"
cargo xtask bundle --timings
cargo xtask build --unpatched --component runc --component containerd

# The pinned gVisors first (each built once into the cache, 1-2 minutes apiece on a fresh
# machine): the patch proofs and the e2e below run in them.
phase "gVisors"
cargo xtask tool runsc
cargo xtask tool runsc-2025
cargo xtask tool runsc-2023

# Every test. Where a test takes one gVisor from K3S_GVISOR_RUNSC it gets Debian's 2022
# runsc (the default, `runsc` on PATH); tests that need the current gVisor build it with
# `cargo xtask tool runsc` themselves. The patch proofs (tests/tests/patches.rs) run the
# upstream and patched binaries in every generation: current, gvisor-2025, gvisor-2023,
# Debian's 2022 one, and on plain Linux.
phase "cargo test"
cargo test --workspace --locked

# The gVisor tests of the launcher, the CNI plugin and the pause binary again, in the
# current gVisor (built from the Go module proxy): what users' sandboxes run.
phase "gVisor tests in the current gVisor"
current_runsc=$(cargo xtask tool runsc)
K3S_GVISOR_RUNSC="$current_runsc" cargo test --locked \
  -p launcher --test redirect_runsc -p gvisor-cni --test runsc -p pause --test pause
K3S_GVISOR_RUNSC="$current_runsc" cargo_test_filtered --locked -p xtask -- --exact \
  image::tests::the_pause_image_imports_into_containerd_inside_gvisor

# The k3s end-to-end scenario (tests/e2e/scenario.sh) on the real bundle, each run in a sandbox
# with eth0 and a default route where the gVisor's own netstack allows it
# (xtask/src/sandbox.rs): the current gVisor, plain Linux and gvisor-2025 (uname 4.4.0, no
# setns(CLONE_NEWPID): the gVisors of early-to-mid 2025, where containerd 0001 and runc 0003
# decide; docs/gvisor-generations.md) with pods, about 5 minutes each; the control plane only
# in the current gVisor and in Debian's 2022 gVisor (its full mode cannot run runc 1.3.x
# containers: no mount namespaces, doctor names the gaps; it also refuses its own netstack on
# this kernel, so it runs with loopback only, where install picks the node IP), about 20 s each.
phase "e2e full"
cargo xtask e2e --host current --host plain --host gvisor-2025 --mode full
phase "e2e control-plane-only"
cargo xtask e2e --host current --host debian --mode control-plane-only

# Two nodes (tests/e2e/two-nodes.sh): a server and an agent that joins it with the command the
# server's install printed, each in its own sandbox on one test-made bridge; a pod pinned to the
# agent (logs and exec through the server), a server pod reaching it by pod IP across nodes,
# the server restarted and the agent back. The current gVisor, about 1 minute; plain Linux's
# run (about 2 minutes) is left to `cargo xtask e2e --host plain --topology two-nodes` by hand
# (README's table has it), for CI's 45-minute budget on a fresh machine. The
# control-plane-only server with an agent-only node (--mode control-plane-only) is measured in
# BENCHMARKS.md and not repeated here.
phase "e2e two nodes"
cargo xtask e2e --host current --mode full --topology two-nodes
phase "done"
