#!/bin/sh
# The soak `cargo xtask soak` runs: install (full mode), a 2-replica Deployment, then a sample
# every INTERVAL seconds for MINUTES minutes, then stop and uninstall. The Deployment's step and
# the samples are the e2e driver's (crates/e2e-driver/src/soak.rs, `driver soak`; the k3s
# error lines and the teardown teardown.rs's); this script keeps the extract, the install as a
# user runs it and the order.
# Input (environment): TARBALL, RUN, MINUTES, INTERVAL, E2E_LIB, E2E_DRIVER.
# Output, parsed by xtask: STEP lines as in scenario.sh, K3SERR lines, and one line per sample:
#   SAMPLE <seconds> ready=<True|False|unknown> k3s=<pid> containerd=<pid> k3s_kb=<kB>
#          containerd_kb=<kB> restarts=<sum of the pods' container restart counts>
set -u
# shellcheck source=tests/e2e/lib.sh
. "$E2E_LIB"

extract || exit 0
install_stamped --prefix "$P" --data-dir "$D" >/dev/null && step install ok || { step install FAIL "$(tail -n 5 "$RUN/install.out" | tr '\n' ' ')"; exit 0; }
mark_from_install node-ready "node is Ready"
driver soak deployment
driver soak samples --minutes "$MINUTES" --interval "$INTERVAL"
driver k3s-log --lines-only
driver teardown stop --stop-only
driver teardown uninstall
