#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then lint and every test.
# Tests run as root: they use network namespaces, mounts, ptrace and gVisor's runsc.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# One test binary at a time keeps the two cores for the go and cargo builds inside the tests.
cargo test --workspace --locked -- --test-threads=2
