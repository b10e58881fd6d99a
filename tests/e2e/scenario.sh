#!/bin/sh
# The end-to-end scenario `cargo xtask e2e` runs, unchanged, on the host and inside gVisor.
# Input (environment): TARBALL (the bundle), RUN (a fresh directory), MODE (full |
# control-plane-only), CRICTL (a crictl binary, for bundles without k3s), E2E_LIB (lib.sh),
# TARBALL_NEXT (the same bundle with the next version, for upgrade.sh; full mode).
# Output, parsed by xtask: `STEP <name> <ok|FAIL|BLOCKED> [detail]` per step, `TIME <mark>
# <seconds since start>` (the start is before extracting the tarball), `RSS <program> <kB>` at
# idle, and `K3SERR <line>` for each error line in k3s's log (each must be documented).
set -u
# shellcheck source=tests/e2e/lib.sh
. "$E2E_LIB"
# shellcheck source=tests/e2e/mounts.sh
. "$(dirname "$E2E_LIB")/mounts.sh"
# shellcheck source=tests/e2e/k3s-settings.sh
. "$(dirname "$E2E_LIB")/k3s-settings.sh"
# shellcheck source=tests/e2e/upgrade.sh
. "$(dirname "$E2E_LIB")/upgrade.sh"

# What the host has before the install, for the teardown's steps (the driver's teardown.rs).
driver teardown before
extract || exit 0
K3S=no
jq -e 'any(.components[].outputs[]; .path == "bin/k3s")' "$BUNDLE/bundle-manifest.json" >/dev/null && K3S=yes

echo "== doctor (before install)"; "$BUNDLE/install" doctor --bundle "$BUNDLE"
ARGS=""; [ "$MODE" = control-plane-only ] && ARGS="--control-plane-only"
if [ $K3S = no ] && [ "$MODE" = control-plane-only ]; then
  step k3s BLOCKED "control-plane-only needs k3s and the bundle has none (see bundle-manifest.json: omitted)"
  exit 0
fi
# Full mode installs as a k3s user would, with flags, config files and K3S_* variables.
K3S_FLAGS=""; [ $K3S = yes ] && [ "$MODE" = full ] && settings_before_install
echo "== install $ARGS $K3S_FLAGS"
INSTALL_START=$(now)
# Under umask 000, which the installer must not pass on (umask_modes_step, mounts.sh).
# shellcheck disable=SC2086 # ARGS and K3S_FLAGS are lists of words.
if (umask 000; install_stamped --prefix "$P" --data-dir "$D" $ARGS $K3S_FLAGS); then step install ok; else step install FAIL "rc=$(cat $RUN/install.rc)"; fi
umask_modes_step
[ -n "$K3S_FLAGS" ] && settings_after_install
mark installed
mark_from_install api-ready "Kubernetes API is ready"
mark_from_install node-ready "node is Ready"
# Issue 14: in the current gVisor the node is Ready within 60 s of ./install.
READY_AT=$(grep -F -m1 "node is Ready" "$RUN/install.out" | sed 's/^\[\([0-9.]*\)\].*/\1/')
if [ "$MODE" = full ] && [ -n "$READY_AT" ]; then
  SECS=$(awk "BEGIN { printf \"%.1f\", $READY_AT - $INSTALL_START }")
  awk "BEGIN { exit !($SECS <= 60) }" && step ready-within-60s ok "node Ready ${SECS}s after ./install" \
    || step ready-within-60s FAIL "node Ready ${SECS}s after ./install"
  # The speed goal (issue 27: Ready within 10 s of ./install in the current gVisor) is reported,
  # not enforced: a busy machine may miss it, so MISS does not fail the run (only FAIL does).
  awk "BEGIN { exit !($SECS <= 10) }" && step ready-goal-10s ok "node Ready ${SECS}s after ./install" \
    || step ready-goal-10s MISS "node Ready ${SECS}s after ./install, over the 10 s goal"
fi

if [ $K3S = yes ] && [ "$(cat $RUN/install.rc)" != 0 ]; then
  # Debian's 2022 gVisor in full mode: nothing that needs a running k3s can pass; the gaps are
  # in doctor's output above.
  step k3s-steps FAIL "install failed, so the steps that need k3s were not run"
  # Each log's own tail (uninstall removes them): k3s's says why the install waited.
  for log in k3s containerd; do echo "== $log.log (last lines)"; tail -n 30 "$D/logs/$log.log" 2>/dev/null; done
elif [ $K3S = yes ]; then
  K="$P/bin/kubectl --kubeconfig $D/kubeconfig.yaml"
  BUSYBOX=$(image_ref busybox)

  # What install must tell the user: the kubeconfig (k3s's default 0600; 0644 where the full
  # mode set K3S_KUBECONFIG_MODE) and the one line for the tools.
  # busybox stat: Debian's 2022 gVisor answers coreutils' statx with EINVAL.
  KC_MODE=$(busybox stat -c %a "$D/kubeconfig.yaml" 2>/dev/null)
  KC_WANT=600; [ -n "$K3S_FLAGS" ] && KC_WANT=644
  grep -qF "kubeconfig: $D/kubeconfig.yaml (mode 0$KC_WANT)" "$RUN/install.out" && [ "$KC_MODE" = $KC_WANT ] \
    && step kubeconfig ok "$D/kubeconfig.yaml mode $KC_MODE" || step kubeconfig FAIL "mode ${KC_MODE:-missing}"
  EXPORT=$(grep -m1 -o 'export PATH=.*' "$RUN/install.out")
  [ -n "$EXPORT" ] && step export-line ok || step export-line FAIL "install printed no export PATH= line"
  # Who serves Services: k3s's kube-proxy where its iptables rules can be written, else
  # svcproxy (gVisor); install says which and why in one line.
  PROXY=$(sed -n 's/^\[[0-9.]*\] k3s: service proxy: \([a-z-]*\).*/\1/p' "$RUN/install.out" | head -n 1)
  # coredns runs exactly where it can work: its image shipped, a node for its pod, and
  # ClusterIPs routed (a service proxy runs); otherwise install says which of those it lacks.
  if [ -z "$(image_ref coredns)" ]; then WHY="its image"
  elif [ "$MODE" = control-plane-only ]; then WHY="control-plane-only"
  elif [ "$PROXY" = none ]; then WHY="it reaches the API"
  else WHY=; fi
  if [ -n "$WHY" ]; then
    grep -qF "add-on coredns off (--disable): $WHY" "$RUN/install.out" && step addons ok "coredns off: $WHY ..." || step addons FAIL "coredns not reported off ($WHY ...)"
  else
    grep -q "add-on coredns off" "$RUN/install.out" && step addons FAIL "coredns turned off though it can run here" || step addons ok "coredns on"
  fi

  # The tools from the export line alone, in a clean environment.
  TOOLS="kubectl get nodes -o name"; NAMES=kubectl
  [ "$MODE" = full ] && TOOLS="$TOOLS && crictl ps -q && ctr images ls -q" && NAMES="kubectl, crictl, ctr"
  OUT=$(env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c "$EXPORT; $TOOLS" 2>&1) \
    && step tools ok "$NAMES from the export line alone" || step tools FAIL "$(echo "$OUT" | tail -n 1)"

  $K get --raw /readyz >/dev/null 2>&1 && step readyz ok || step readyz FAIL
  # The apiserver's bootstrap creates the `kubernetes` Service, retrying on first-start races.
  i=0; while [ $i -lt 30 ] && [ "$($K get service kubernetes -o jsonpath='{.spec.clusterIP}' 2>/dev/null)" != 10.43.0.1 ]; do sleep 1; i=$((i + 1)); done
  [ $i -lt 30 ] && step service-kubernetes ok "10.43.0.1" || step service-kubernetes FAIL "no ClusterIP after 30 s"
  if [ "$MODE" = control-plane-only ]; then
    $K create namespace e2e && step namespace ok || step namespace FAIL
    $K get namespaces -o name | grep -qx namespace/e2e && step namespaces-list ok || step namespaces-list FAIL
    $K -n e2e create configmap settings --from-literal=greeting=hello-from-k3s-gvisor \
      && [ "$($K -n e2e get configmap settings -o jsonpath='{.data.greeting}')" = hello-from-k3s-gvisor ] \
      && step configmap ok || step configmap FAIL
    $K -n e2e apply --dry-run=server -f - <<YAML && step dry-run ok || step dry-run FAIL
apiVersion: v1
kind: ConfigMap
metadata: {name: dry}
data: {a: b}
YAML
    S=$("$BUNDLE/install" status --data-dir "$D" 2>&1) && echo "$S" | grep -q "k3s: running (pid [0-9]*), API ready" \
      && step status ok || step status FAIL "$(echo "$S" | tail -n 1)"
  else
    echo "== doctor (installed)"
    DOCTOR=$("$BUNDLE/install" doctor --data-dir "$D" 2>&1) && step doctor ok "every blocker present is handled" || step doctor FAIL "see output.log"
    echo "$DOCTOR"
    # One line names the active service proxy and why; where kube-proxy cannot run (gVisor),
    # svcproxy runs as a daemon of the install, never under the launcher.
    DP=$(echo "$DOCTOR" | grep '^service proxy ' | sed 's/^service proxy  *//')
    case "$PROXY" in
      # Beside kube-proxy, svcproxy may only run to write LoadBalancer status (loadbalancer-ip:
      # crates/e2e-driver/src/services.rs).
      kube-proxy) SP=$(pid_of svcproxy); [ "${DP%% *}" = kube-proxy ] && { [ -z "$SP" ] || tr '\0' ' ' < /proc/$SP/cmdline | grep -q -- --load-balancer-status-only; } \
        && step service-proxy ok "$DP" || step service-proxy FAIL "doctor: [$DP], svcproxy pid: $(pid_of svcproxy)" ;;
      svcproxy)
        SP=$(pid_of svcproxy)
        TRACED=$(awk '/^TracerPid/ {print $2}' /proc/${SP:-0}/status 2>/dev/null)
        [ "${DP%% *}" = svcproxy ] && [ -n "$SP" ] && [ "${TRACED:-x}" = 0 ] \
          && step service-proxy ok "svcproxy pid $SP, not traced; $DP" \
          || step service-proxy FAIL "doctor: [$DP], svcproxy pid: [$SP], TracerPid: [$TRACED]" ;;
      *) step service-proxy FAIL "install named no service proxy ([$PROXY]): see install.out" ;;
    esac
    # k3s runs untraced (no launcher, no ptrace stops): where /proc/sys lacks files (gVisor)
    # the install laid them over /proc/sys (its mounts there are in state.json).
    KP=$(pid_of k3s); KT=$(awk '/^TracerPid/ {print $2}' /proc/${KP:-0}/status 2>/dev/null)
    OVER=$(jq '[.mounts[] | select(startswith("/proc/sys/"))] | length' "$D/state.json")
    [ -n "$KP" ] && [ "${KT:-x}" = 0 ] \
      && step k3s-untraced ok "$OVER bind mount(s) on /proc/sys; pid_max $(cat /proc/sys/kernel/pid_max)" \
      || step k3s-untraced FAIL "k3s pid [$KP], TracerPid [$KT], mounts on /proc/sys [$OVER]"
    $K wait --for=condition=Ready node --all --timeout=60s >/dev/null && step node-ready ok || step node-ready FAIL
    $K run e2e-busybox --image="$BUSYBOX" --image-pull-policy=Never --command -- sh -c 'echo hello-from-k3s-gvisor; grep -E "^(TracerPid|Seccomp):" /proc/self/status; exec sleep 3600'
    $K wait --for=jsonpath='{.status.phase}'=Running pod/e2e-busybox --timeout=120s && step pod-running ok || { step pod-running FAIL; $K describe pod e2e-busybox; }
    mark pod-running
    $K logs e2e-busybox | grep -q hello-from-k3s-gvisor && step pod-logs ok || step pod-logs FAIL
    # A pod is neither ptraced nor under the launcher's seccomp filter (containerd runs
    # outside the launcher): its status says TracerPid 0 and Seccomp 0.
    T=$($K logs e2e-busybox | grep -E '^(TracerPid|Seccomp):' | tr -s '\t ' ' ' | tr '\n' ';')
    [ "$T" = "TracerPid: 0;Seccomp: 0;" ] && step pod-untraced ok "$T" || step pod-untraced FAIL "$T"
    OUT=$($K exec e2e-busybox -- sh -c 'read h < /etc/hostname; echo exec-works-in-$h' 2>&1)
    echo "$OUT" | grep -q exec-works-in-e2e-busybox && step exec ok || step exec FAIL "$(echo "$OUT" | tail -n 1)"
    $K create deployment web --image="$BUSYBOX" --replicas=2 -- sleep 3600 \
      && $K wait --for=condition=Available deployment/web --timeout=120s \
      && [ "$($K get deployment web -o jsonpath='{.status.availableReplicas}')" = 2 ] \
      && step deployment ok "2/2 available" || { step deployment FAIL; $K describe deployment web; $K get pods -o wide; }
    mark deployment-available
    if [ -z "$WHY" ]; then
      # On means working: the DNS pod gets Ready (it needs the API through the kubernetes Service).
      $K -n kube-system wait --for=condition=Ready pod -l k8s-app=kube-dns --timeout=120s >/dev/null \
        && step coredns-ready ok || { step coredns-ready FAIL; $K -n kube-system logs -l k8s-app=kube-dns --tail=20; }
    fi
    # status counts pods per phase in all namespaces (add-ons whose image is shipped included),
    # compared with kubectl's count taken before and after it: add-on pods may still be
    # starting, so a count that moved in between is taken again (up to 20 times, 1 s apart).
    phases() {
      $K get pods -A -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | sort | uniq -c \
        | awk '{ printf "%s%d %s", sep, $1, $2; sep = ", " }'
    }
    for i in $(seq 20); do
      PHASES=$(phases)
      S=$("$BUNDLE/install" status --data-dir "$D" 2>&1); RC=$?
      [ "$(phases)" = "$PHASES" ] && break
      sleep 1
    done
    echo "$S"
    [ "$PROXY" != svcproxy ] || echo "$S" | grep -q "^svcproxy: running (pid [0-9]*), [0-9]* Services" || RC="$RC, svcproxy not running"
    [ "$RC" = 0 ] && echo "$S" | grep -q "^node .*: Ready" && echo "$S" | grep -qxF "pods (all namespaces): $PHASES" \
      && echo "$PHASES" | grep -q "[3-9] Running" \
      && step status ok "node Ready, pods: $PHASES" || step status FAIL "rc=$RC $(echo "$S" | grep -e '^node' -e '^pods' | tr '\n' ' ')"
    L=$("$BUNDLE/install" logs --data-dir "$D" k3s -n 5 2>&1) && echo "$L" | grep -q "k3s.log" \
      && step logs-k3s ok || step logs-k3s FAIL "$(echo "$L" | tail -n 1)"
    settings_steps

    # Idle: what a user's sandbox keeps paying for.
    sleep 15
    rss

    # stop, then start: the node comes back Ready and the same pods run again (new containers).
    uids() { $K get pods -o jsonpath='{range .items[*]}{.metadata.uid}{"\n"}{end}' | sort | tr '\n' ' '; }
    driver addons before-stop
    UIDS=$(uids); STOPPED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    echo "== stop"; "$BUNDLE/install" stop --data-dir "$D" && step stop ok || step stop FAIL
    L=$(ours | tr '\n' ';'); [ -z "$L" ] && step stopped-nothing-runs ok || step stopped-nothing-runs FAIL "$L"
    sleep 1
    # From a clean shell: k3s gets the variables recorded at install, nothing else.
    settings_before_restart
    echo "== start"; R0=$(now)
    $CLEAN_ENV "$BUNDLE/install" start --data-dir "$D" && step start ok "node Ready $(awk "BEGIN { printf \"%.1f\", $(now) - $R0 }")s after start" || step start FAIL
    settings_after_restart
    restarted() {
      $K get pods -o jsonpath='{range .items[*]}{.status.containerStatuses[0].state.running.startedAt}{"\n"}{end}' \
        | awk -v t="$STOPPED_AT" 'BEGIN { ok = 1 } $0 == "" || $0 < t { ok = 0 } END { exit !(ok && NR == 3) }'
    }
    i=0; while [ $i -lt 90 ] && ! restarted; do sleep 2; i=$((i + 1)); done
    [ "$(uids)" = "$UIDS" ] && restarted \
      && step pods-back ok "the same 3 pods run again, restarted after $STOPPED_AT" || { step pods-back FAIL "before: $UIDS after: $(uids)"; $K get pods -o wide; }
    mark pods-back
    $K wait --for=condition=Available deployment/web --timeout=60s >/dev/null && step deployment-back ok || step deployment-back FAIL
    $K exec e2e-busybox -- echo exec-works 2>&1 | grep -q exec-works && step exec-after-restart ok || step exec-after-restart FAIL
    driver services
    driver images --http-proxy "$(dirname "$E2E_LIB")/http-proxy.py"
    driver addons steps
    driver helm
    driver ingress
    driver faults
    $K delete pod e2e-busybox --wait --timeout=60s && step delete ok || step delete FAIL
  fi
  driver k3s-log
else
  step k3s BLOCKED "the bundle has no k3s: $(jq -r '.omitted[0].reason // "not recorded"' "$BUNDLE/bundle-manifest.json" | cut -c1-160)"
  if [ "$MODE" = full ]; then
    # Without k3s, the same runtime path k3s would drive, through the CRI: pod sandbox with the
    # shipped pause image, a busybox container, its logs.
    export CRICTL_CONFIG=/dev/null
    C="$CRICTL --runtime-endpoint unix://$D/run/containerd.sock --image-endpoint unix://$D/run/containerd.sock --timeout 60s"
    cat > $RUN/pod.json <<JSON
{"metadata": {"name": "e2e", "namespace": "default", "uid": "e2e-1", "attempt": 0}, "log_directory": "$RUN/podlogs", "linux": {}}
JSON
    # namespace_options.pid 1 = CONTAINER: a PID namespace of the container's own, which is what
    # the kubelet asks for (unless a pod sets shareProcessNamespace). Left unset it is 0 = POD,
    # sharing the pod sandbox's, which gVisor before 2025-06-26 cannot join (no setns(CLONE_NEWPID)).
    cat > $RUN/ctr.json <<JSON
{"metadata": {"name": "hello"}, "image": {"image": "$(image_ref busybox)"}, "command": ["/bin/sh", "-c", "echo hello-from-k3s-gvisor; exec sleep 3600"], "log_path": "hello.log", "linux": {"security_context": {"namespace_options": {"pid": 1}}}}
JSON
    # Each step runs only if the one before it produced what it needs.
    POD=$($C runp $RUN/pod.json) && [ -n "$POD" ] && step cri-runp ok "$POD" || { POD=; step cri-runp FAIL; }
    mark pod-sandbox
    CID=
    [ -n "$POD" ] && CID=$($C create $POD $RUN/ctr.json $RUN/pod.json) && [ -n "$CID" ] && step cri-create ok || { CID=; step cri-create FAIL; }
    [ -n "$CID" ] && $C start $CID && step cri-start ok || step cri-start FAIL
    sleep 3
    S=$($C inspect -o go-template --template '{{.status.state}}' $CID 2>/dev/null)
    [ "$S" = CONTAINER_RUNNING ] && step container-running ok || step container-running FAIL "$S"
    mark container-running
    $C logs $CID 2>&1 | grep -q hello-from-k3s-gvisor && step container-logs ok || step container-logs FAIL
    # kubectl exec's runtime path: `runc exec` into the running container. Its PID is 1 where the
    # kernel cannot join the container's PID namespace (runc patch 0003 gives it its own).
    X=; [ -n "$CID" ] && X=$($C exec $CID /bin/sh -c 'echo "exec-works pid=$$"' 2>&1)
    echo "$X" | grep -q '^exec-works pid=[0-9]' && step cri-exec ok "$(echo "$X" | grep -o 'pid=[0-9]*')" || step cri-exec FAIL "$(echo "$X" | tail -1)"
    IP=; [ -n "$POD" ] && IP=$($C inspectp -o go-template --template '{{.status.network.ip}}' $POD 2>/dev/null)
    [ -n "$IP" ] && step pod-ip ok "$IP" || step pod-ip FAIL
    $C stop $CID >/dev/null && $C rm $CID >/dev/null && $C stopp $POD >/dev/null && $C rmp $POD >/dev/null && step cri-delete ok || step cri-delete FAIL
  fi
  rss
fi
OUT=$("$BUNDLE/install" --prefix "$P" --data-dir "$D" $ARGS 2>&1)
[ $? = 0 ] && echo "$OUT" | grep -q "is already installed" && step second-install ok || step second-install FAIL "$(echo "$OUT" | tail -n 1)"
[ "$MODE" = full ] && [ $K3S = yes ] && [ "$(cat $RUN/install.rc)" = 0 ] && upgrade_steps
# The teardown two-nodes.sh ends with too (crates/e2e-driver/src/teardown.rs), with this
# scenario's own steps in between: the bind mounts around the uninstall, the settings' cleanup
# before the host files are compared.
driver teardown stop
binds_before_uninstall
driver teardown uninstall
binds_after_uninstall
driver teardown restored mounts addresses
[ -n "$K3S_FLAGS" ] && settings_cleanup
driver teardown restored host-files nothing-left
