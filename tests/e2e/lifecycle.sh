#!/bin/sh
# `cargo xtask e2e --lifecycle pause|checkpoint`: what an idle agent or IDE sandbox goes through. The bundle
# is installed, a pod, a two-replica Deployment and its ClusterIP Service run and answer; then
# this script prints `LIFECYCLE pause` and waits. xtask (e2e.rs) pauses the whole sandbox from
# outside (`runsc pause`), this script with it, for PAUSE_SECONDS, and resumes it (`runsc
# resume`); no command is run in the sandbox meanwhile. The script sees the resume as a jump
# of the clock and checks, each within 30 s of it:
#   pause-resume-ready    the kubelet renewed its node Lease after the resume, and the node is
#                         Ready (the Ready condition alone would still say True from before);
#   pause-resume-pods     every pod of the default namespace Running and Ready;
#   pause-resume-exec     `kubectl exec` into the client pod;
#   pause-resume-service  the Service answers the client pod through its ClusterIP, from both
#                         endpoints.
# `--lifecycle checkpoint` is the same with `runsc checkpoint` (the sandbox saved to disk and
# gone) and `runsc restore`: steps checkpoint-restore-ready, -pods, -exec, -service.
# Then the error lines k3s logged (each must be documented in docs/k3s-log.md), stop,
# uninstall.
# Input (environment): TARBALL, RUN, E2E_LIB, LIFECYCLE (pause or checkpoint), PAUSE_SECONDS.
# Output: STEP/TIME/RSS/K3SERR lines as scenario.sh prints them.
set -u
# shellcheck source=tests/e2e/lib.sh
. "$E2E_LIB"
# shellcheck source=tests/e2e/services.sh
. "$(dirname "$E2E_LIB")/services.sh"

BACK_WITHIN=30

extract || exit 0
echo "== install"
install_stamped --prefix "$P" --data-dir "$D" && step install ok || step install FAIL "rc=$(cat "$RUN/install.rc")"
K="$P/bin/kubectl --kubeconfig $D/kubeconfig.yaml"
BUSYBOX=$(image_ref busybox)
$K wait --for=condition=Ready node --all --timeout=60s >/dev/null && step node-ready ok || step node-ready FAIL
NODE=$($K get nodes -o jsonpath='{.items[0].metadata.name}')

# The workload: the client pod services.sh's helpers exec into, and the echo Deployment
# (services.sh) behind a ClusterIP Service.
$K run e2e-busybox --image="$BUSYBOX" --image-pull-policy=Never --command -- sleep 36000
{ echo_deployment echo 2; echo_service echo; } | $K apply -f - >/dev/null
$K wait --for=condition=Ready pod --all --timeout=120s >/dev/null && $K wait --for=condition=Available deployment/echo --timeout=60s >/dev/null \
  && step workload ok "$($K get pods --no-headers | wc -l) pods Ready" || { step workload FAIL; $K get pods -o wide; }
CLUSTER_IP=$($K get service echo -o jsonpath='{.spec.clusterIP}')
A=$(get_until_answer "$CLUSTER_IP" 80 60) && step service-before ok "$CLUSTER_IP answered: $A" || step service-before FAIL "no answer from $CLUSTER_IP:80: $A"
mark workload-running
sleep 15
rss

# Seconds since the epoch at which the clock first jumped by half of PAUSE_SECONDS or more
# between two one-second sleeps: the resume. Gives up PAUSE_SECONDS + 300 s after it started.
wait_for_resume() {
  gap=$((PAUSE_SECONDS / 2)); [ $gap -lt 20 ] && gap=20
  give_up=$(( $(date +%s) + PAUSE_SECONDS + 300 ))
  prev=$(date +%s)
  while sleep 1; do
    t=$(date +%s)
    [ $((t - prev)) -ge $gap ] && { echo "$t"; return 0; }
    [ "$t" -ge $give_up ] && return 1
    prev=$t
  done
}

# Seconds since the resume ($1).
since() { echo $(( $(date +%s) - $1 )); }

# The node's Lease renewed at or after $1 (epoch seconds) and the node Ready.
node_back() {
  renew=$($K -n kube-node-lease get lease "$NODE" -o jsonpath='{.spec.renewTime}' 2>/dev/null)
  ready=$($K get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)
  [ -n "$renew" ] && [ "$(date -d "$renew" +%s)" -ge "$1" ] && [ "$ready" = True ]
}

# Checks, as steps named PHASE-ready, -pods, -exec, -service, that everything is back within
# BACK_WITHIN seconds of the resume at $2.
back_after() {
  phase=$1 resumed=$2 deadline=$(($2 + BACK_WITHIN))
  while ! node_back "$resumed" && [ "$(date +%s)" -lt $deadline ]; do sleep 1; done
  node_back "$resumed" && step "$phase-ready" ok "Lease renewed and node Ready $(since "$resumed") s after the resume (paused ${PAUSE_SECONDS} s)" \
    || step "$phase-ready" FAIL "after $(since "$resumed") s: Lease renewTime ${renew:-none}, Ready ${ready:-unknown}"
  left=$((deadline - $(date +%s))); [ $left -lt 1 ] && left=1
  if $K wait --for=condition=Ready pod --all --timeout="${left}s" >/dev/null 2>&1; then
    step "$phase-pods" ok "$($K get pods --no-headers | awk '{ n++; r += $4 } END { printf "%d pods Running and Ready, %d restart(s)", n, r }') $(since "$resumed") s after the resume"
  else
    step "$phase-pods" FAIL "$($K get pods --no-headers 2>&1 | tr -s ' ' | tr '\n' ';')"
  fi
  until OUT=$($K exec e2e-busybox -- echo exec-works 2>&1) && [ "$OUT" = exec-works ] || [ "$(date +%s)" -ge $deadline ]; do sleep 1; done
  [ "$OUT" = exec-works ] && step "$phase-exec" ok "$(since "$resumed") s after the resume" || step "$phase-exec" FAIL "$(echo "$OUT" | tail -n 1)"
  left=$((deadline - $(date +%s))); [ $left -lt 1 ] && left=1
  SEEN=
  while :; do
    A=$(get "$CLUSTER_IP" 80) && [ -n "$A" ] && case " $SEEN " in *" $A "*) ;; *) SEEN="$SEEN $A";; esac
    [ "$(echo "$SEEN" | wc -w)" -ge 2 ] || [ "$(date +%s)" -ge $deadline ] && break
  done
  [ "$(echo "$SEEN" | wc -w)" -ge 2 ] && step "$phase-service" ok "$CLUSTER_IP answered from$SEEN $(since "$resumed") s after the resume" \
    || step "$phase-service" FAIL "answers from [$SEEN] by $(since "$resumed") s: $A"
}

# Asks the host for lifecycle phase $1 (pause or checkpoint) and waits for the sandbox to come
# back: then marks time $3 and checks everything is back, as steps named $2-*; else fails
# $2-ready, saying no $4 (pause, restore) was seen.
host_phase() {
  echo "LIFECYCLE $1"
  if R=$(wait_for_resume); then
    mark "$3"
    back_after "$2" "$R"
  else
    step "$2-ready" FAIL "no $4 seen: the clock never jumped by $((PAUSE_SECONDS / 2)) s (see the notes: runsc $1)"
  fi
}

for phase in $LIFECYCLE; do
  case $phase in
    pause)
      echo "== pause: the host pauses this sandbox for ${PAUSE_SECONDS} s"
      host_phase pause pause-resume resumed pause ;;
    checkpoint)
      echo "== checkpoint: the host saves this sandbox (runsc checkpoint) and restores it ${PAUSE_SECONDS} s later"
      host_phase checkpoint checkpoint-restore restored restore ;;
    *) step lifecycle FAIL "unknown lifecycle phase $phase" ;;
  esac
done

# The node still Ready a while later (nothing flaps back once the controllers catch up).
sleep 20
$K wait --for=condition=Ready node --all --timeout=10s >/dev/null && step node-still-ready ok || step node-still-ready FAIL "$($K get nodes --no-headers)"
k3s_errors
step k3s-log ok "$(k3s_errors | wc -l) error line(s)"
echo "== stop"; "$BUNDLE/install" stop --data-dir "$D" && step stop ok || step stop FAIL
cp -r "$D/logs" "$RUN/component-logs" 2>/dev/null
echo "== uninstall"; "$BUNDLE/install" uninstall --data-dir "$D" && step uninstall ok || step uninstall FAIL
[ ! -e "$P" ] && [ ! -e "$D" ] && step nothing-left ok || step nothing-left FAIL
