#!/bin/sh
# `cargo xtask e2e --lifecycle pause|checkpoint`: what an idle agent or IDE sandbox goes through. The bundle
# is installed, a pod, a two-replica Deployment and its ClusterIP Service run and answer; then
# the driver prints `LIFECYCLE pause` and waits. xtask (e2e.rs) pauses the whole sandbox from
# outside (`runsc pause`), this script and the driver with it, for PAUSE_SECONDS, and resumes
# it (`runsc resume`); no command is run in the sandbox meanwhile. The driver sees the resume
# as a jump of the clock and checks that the node, the pods, `kubectl exec` and the Service are
# back within 30 s of it (pause-resume-ready, -pods, -exec, -service). `--lifecycle
# checkpoint` is the same with `runsc checkpoint` (the sandbox saved to disk and gone) and
# `runsc restore`: steps checkpoint-restore-ready, -pods, -exec, -service.
# Then the error lines k3s logged (each must be documented in docs/k3s-log.md), stop,
# uninstall. The checks are the e2e driver's (crates/e2e-driver/src/lifecycle.rs,
# `driver lifecycle`; the teardown and k3s-log are teardown.rs's); this script keeps the
# extract, the install as a user runs it and the order of the phases.
# Input (environment): TARBALL, RUN, E2E_LIB, E2E_DRIVER, LIFECYCLE (pause or checkpoint),
# PAUSE_SECONDS.
# Output: STEP/TIME/RSS/K3SERR/LIFECYCLE lines as scenario.sh prints them.
set -u
# shellcheck source=tests/e2e/lib.sh
. "$E2E_LIB"

extract || exit 0
echo "== install"
install_stamped --prefix "$P" --data-dir "$D" && step install ok || step install FAIL "rc=$(cat "$RUN/install.rc")"
# node-ready, workload, service-before, then TIME workload-running.
driver lifecycle workload
sleep 15
rss

for phase in $LIFECYCLE; do
  driver lifecycle phase "$phase" --pause-seconds "$PAUSE_SECONDS"
done

driver lifecycle still-ready
driver k3s-log
driver teardown stop --stop-only
driver teardown uninstall
driver teardown restored nothing-left
