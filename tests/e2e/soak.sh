#!/bin/sh
# The soak `cargo xtask soak` runs: install (full mode), a 2-replica Deployment, then a sample
# every INTERVAL seconds for MINUTES minutes, then stop and uninstall.
# Input (environment): TARBALL, RUN, MINUTES, INTERVAL, E2E_LIB.
# Output, parsed by xtask: STEP lines as in scenario.sh, and one line per sample:
#   SAMPLE <seconds> ready=<True|False|unknown> k3s=<pid> containerd=<pid> k3s_kb=<kB>
#          containerd_kb=<kB> restarts=<sum of the pods' container restart counts>
set -u
# shellcheck source=tests/e2e/lib.sh
. "$E2E_LIB"

extract || exit 0
install_stamped --prefix "$P" --data-dir "$D" >/dev/null && step install ok || { step install FAIL "$(tail -n 5 $RUN/install.out | tr '\n' ' ')"; exit 0; }
mark_from_install node-ready "node is Ready"
K="$P/bin/kubectl --kubeconfig $D/kubeconfig.yaml"
$K create deployment soak --image="$(image_ref busybox)" --replicas=2 -- sleep 100000 \
  && $K wait --for=condition=Available deployment/soak --timeout=120s >/dev/null \
  && step deployment ok "2/2 available" || step deployment FAIL

# Samples on a fixed schedule (start + k * INTERVAL), however long each sample takes.
NEXT=$(date +%s); END=$((NEXT + MINUTES * 60))
while [ "$NEXT" -lt "$END" ]; do
  NEXT=$((NEXT + INTERVAL))
  READY=$($K get nodes -o jsonpath='{.items[0].status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)
  RESTARTS=$($K get pods -A -o jsonpath='{range .items[*]}{range .status.containerStatuses[*]}{.restartCount}{" "}{end}{end}' 2>/dev/null \
    | awk '{ for (i = 1; i <= NF; i++) s += $i } END { print s + 0 }')
  KP=$(pid_of k3s); CP=$(pid_of containerd)
  echo "SAMPLE $(now) ready=${READY:-unknown} k3s=${KP:-none} containerd=${CP:-none} k3s_kb=$(rss_kb ${KP:-0}) containerd_kb=$(rss_kb ${CP:-0}) restarts=$RESTARTS"
  while [ "$(date +%s)" -lt "$NEXT" ]; do sleep 0.2; done
done

k3s_errors
"$BUNDLE/install" stop --data-dir "$D" >/dev/null && step stop ok || step stop FAIL
cp -r "$D/logs" "$RUN/component-logs" 2>/dev/null
"$BUNDLE/install" uninstall --data-dir "$D" >/dev/null && step uninstall ok || step uninstall FAIL
