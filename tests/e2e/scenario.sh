#!/bin/sh
# The end-to-end scenario `cargo xtask e2e` runs, unchanged, on the host and inside gVisor.
# Input (environment): BUNDLE (an extracted bundle), RUN (a fresh directory for prefix, data,
# pod specs), CRICTL (a crictl binary), MODE (full | control-plane-only).
# Output: one `STEP <name> <ok|FAIL|BLOCKED> [detail]` line per step, `TIME <mark> <seconds>`
# lines measured from the start, and `RSS <process> <kB>`; xtask parses and summarizes them.
set -u
P=$RUN/prefix; D=$RUN/data
T0=$(date +%s.%N)
mark() { echo "TIME $1 $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $T0 }")"; }
step() { echo "STEP $1 $2 ${3:-}"; }
ours() { for p in /proc/[0-9]*; do e=$(readlink $p/exe 2>/dev/null) || continue; case "$e" in $P/*|$D/*) echo "${p#/proc/} $e";; esac; done; }
mounts() { grep -e " $P" -e " $D" -e ' /sys/fs/cgroup' -e ' /dev/kmsg ' /proc/self/mountinfo | cut -d' ' -f5- | sort | tr '\n' ';'; }
# RSS of each supervised process and of its children: where /proc/sys lacks files, a pid file
# names the launcher, and the component (containerd, k3s) is the launcher's child.
children() { for s in /proc/[0-9]*/stat; do ppid=$(sed 's/.*) //' $s 2>/dev/null | cut -d' ' -f2); [ "$ppid" = "$1" ] && { p=${s#/proc/}; echo ${p%/stat}; }; done; }
rss_of() { kb=$(awk '/VmRSS/ {print $2}' /proc/$1/status 2>/dev/null); echo "RSS $(cat /proc/$1/comm 2>/dev/null || echo "$2") ${kb:-gone}"; }
rss() { for f in $D/run/*.pid; do [ -f "$f" ] || continue; pid=$(cat $f); rss_of $pid "$(basename "$f" .pid)"; for c in $(children $pid); do rss_of $c child; done; done; }
BEFORE=$(mounts)
# On the host the scenario runs in a fresh network namespace, whose loopback starts down; the
# CRI streaming server (crictl exec, kubectl exec) listens on 127.0.0.1. gVisor's lo is up.
ip link set lo up 2>/dev/null
K3S=no
grep -q '"path": "bin/k3s"' $BUNDLE/bundle-manifest.json && K3S=yes

echo "== doctor"; $BUNDLE/bin/installer doctor --bundle $BUNDLE
ARGS=""; [ "$MODE" = control-plane-only ] && ARGS="--control-plane-only"
if [ $K3S = no ] && [ "$MODE" = control-plane-only ]; then
  step k3s BLOCKED "control-plane-only needs k3s and the bundle has none (see bundle-manifest.json: omitted)"
  exit 0
fi
echo "== install $ARGS"
if $BUNDLE/install --prefix $P --data-dir $D $ARGS; then step install ok; else step install FAIL "rc=$?"; fi
mark installed

if [ $K3S = yes ]; then
  KC="$P/bin/k3s kubectl --kubeconfig $D/kubeconfig.yaml"
  if $KC get --raw /readyz >/dev/null 2>&1; then step readyz ok; else step readyz FAIL; fi
  mark api-ready
  if [ "$MODE" = control-plane-only ]; then
    $KC create namespace e2e && step namespace ok || step namespace FAIL
    $KC -n e2e create deployment web --image=docker.io/library/busybox:1.35.0-debian -- sleep 3600 && step deployment ok || step deployment FAIL
    $KC -n e2e apply --dry-run=server -f - <<YAML && step dry-run ok || step dry-run FAIL
apiVersion: v1
kind: ConfigMap
metadata: {name: dry}
data: {a: b}
YAML
  else
    $KC wait --for=condition=Ready node --all --timeout=180s && step node-ready ok || step node-ready FAIL
    mark node-ready
    $KC run e2e-busybox --image=docker.io/library/busybox:1.35.0-debian --image-pull-policy=Never --restart=Never -- sh -c 'echo hello-from-k3s-gvisor; sleep 3600'
    $KC wait --for=jsonpath='{.status.phase}'=Running pod/e2e-busybox --timeout=180s && step pod-running ok || { step pod-running FAIL; $KC describe pod e2e-busybox; }
    mark pod-running
    $KC logs e2e-busybox | grep -q hello-from-k3s-gvisor && step pod-logs ok || step pod-logs FAIL
    $KC exec e2e-busybox -- echo exec-works 2>&1 | grep -q exec-works && step exec ok || step exec FAIL "$($KC exec e2e-busybox -- true 2>&1 | tail -1)"
    $KC delete pod e2e-busybox --wait --timeout=120s && step delete ok || step delete FAIL
  fi
else
  step k3s BLOCKED "the bundle has no k3s: $(sed -n 's/.*"reason": "\([^"]*\)".*/\1/p' $BUNDLE/bundle-manifest.json | cut -c1-160)"
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
{"metadata": {"name": "hello"}, "image": {"image": "docker.io/library/busybox:1.35.0-debian"}, "command": ["/bin/sh", "-c", "echo hello-from-k3s-gvisor; exec sleep 3600"], "log_path": "hello.log", "linux": {"security_context": {"namespace_options": {"pid": 1}}}}
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
fi
rss
$BUNDLE/install --prefix $P --data-dir $D $ARGS >/dev/null 2>&1 && step second-install ok || step second-install FAIL
echo "== stop"; $P/bin/installer stop --data-dir $D && step stop ok || step stop FAIL
L=$(ours | tr '\n' ';'); [ -z "$L" ] && step no-processes ok || step no-processes FAIL "$L"
# Keep every component's log beside the run: uninstall removes the data dir.
cp -r $D/logs $RUN/component-logs 2>/dev/null
echo "== uninstall"; $P/bin/installer uninstall --data-dir $D && step uninstall ok || step uninstall FAIL
AFTER=$(mounts); [ "$BEFORE" = "$AFTER" ] && step mounts-restored ok || step mounts-restored FAIL "before=[$BEFORE] after=[$AFTER]"
[ ! -e $P ] && [ ! -e $D ] && step nothing-left ok || step nothing-left FAIL
