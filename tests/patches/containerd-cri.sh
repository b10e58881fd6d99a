#!/bin/sh
# Inside a gVisor sandbox (or a private mount namespace): start containerd with CRI, list its
# plugins, and (with a crictl) run one pod sandbox and print the sysctls in its OCI spec.
#
# Usage: containerd-cri.sh BIN_DIR RUNC [CRICTL]
#   BIN_DIR holds containerd, ctr and containerd-shim-runc-v2 (upstream or patched).
# Prints lines the tests read:
#   plugin <type> <id> <status>     from `ctr plugins ls`, CRI plugins only
#   log: ...                        containerd log lines about the 4.11 check and sysctls
#                                   (all of its log with DEBUG_LOG=1)
#   runp: ok <id> | runp: failed    `crictl runp` outcome (its error follows)
#   sandbox sysctls: k=v ...        linux.sysctl of the pod sandbox's spec ("none" if empty)
#   container: started | failed     a busybox container in the pod (its own PID namespace)
#   crictl exec: exec-works pid=N   `crictl exec` into it (or its error)
set -u
BIN=$1 RUNC=$2 CRICTL=${3:-}
HERE=$(cd "$(dirname "$0")" && pwd)
exec 2>&1
# NO_CGROUP_MOUNT=1 on plain Linux: the host's own cgroups are already there.
[ -n "${NO_CGROUP_MOUNT:-}" ] || sh "$HERE/mount-cgroups.sh" >/dev/null || exit 1
# Everything containerd writes (root, state, shim sockets under /run/containerd) goes to a
# tmpfs private to this mount namespace, never to the host through the 9p root.
mount -t tmpfs tmpfs /run || { echo "cannot mount tmpfs on /run"; exit 1; }
W=/run/k3s-gvisor-test
mkdir -p $W/cni-bin $W/cni-conf $W/pods
cp "$HERE/fake-cni.sh" $W/cni-bin/fake-cni
cp "$HERE/fake-cni.sh" $W/cni-bin/loopback
echo '{"cniVersion":"1.0.0","name":"fake","plugins":[{"type":"fake-cni"}]}' > $W/cni-conf/10-fake.conflist
cat > $W/config.toml <<TOML
version = 3
root = "$W/root"
state = "$W/state"
[grpc]
  address = "$W/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "native"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "docker.io/k3s-gvisor/test-pause:1"
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # CRI asks for oom_score_adj -998 otherwise, which needs CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$RUNC"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$W/cni-bin"]
    conf_dir = "$W/cni-conf"
TOML
PATH=$BIN:$PATH "$BIN/containerd" --config $W/config.toml >$W/containerd.log 2>&1 &
PID=$!
CTR="$BIN/ctr --address $W/containerd.sock"
i=0
until $CTR version >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 $PID 2>/dev/null; then
        echo "containerd did not come up; its log:"; cat $W/containerd.log; exit 1
    fi
    sleep 0.2
done
$CTR plugins ls | awk '$1 ~ /cri/ || $2 == "cri" {print "plugin", $1, $2, $NF}'
if [ -n "$CRICTL" ]; then
    sh "$HERE/make-busybox-image.sh" $W/pause.tar docker.io/k3s-gvisor/test-pause:1
    $CTR -n k8s.io images import --local --snapshotter native $W/pause.tar >/dev/null || echo "image import failed"
    CRI="$CRICTL --config $W/crictl.yaml"
    printf 'runtime-endpoint: unix://%s/containerd.sock\nimage-endpoint: unix://%s/containerd.sock\ntimeout: 60\n' $W $W > $W/crictl.yaml
    cat > $W/pod.json <<JSON
{"metadata":{"name":"sysctl-probe","namespace":"default","uid":"sysctl-probe-uid","attempt":0},"log_directory":"$W/pods","linux":{}}
JSON
    if ID=$($CRI runp $W/pod.json 2>$W/runp.err); then
        echo "runp: ok $ID"
        echo "pod state: $($CRI inspectp "$ID" | grep -o '"state": *"[A-Z_]*"' | head -n 1 | cut -d'"' -f4)"
        S=$($CTR -n k8s.io containers info "$ID" | grep -o '"net\.[a-z0-9_.]*": *"[^"]*"' | sed 's/": *"/=/; s/"//g' | tr '\n' ' ')
        echo "sandbox sysctls: ${S:-none}"
        # A container in the pod, in a PID namespace of its own (namespace_options.pid 1 =
        # CONTAINER, what the kubelet asks for), then kubectl exec's runtime path: crictl exec.
        cat > $W/ctr.json <<JSON
{"metadata":{"name":"sleeper"},"image":{"image":"docker.io/k3s-gvisor/test-pause:1"},"log_path":"sleeper.log","linux":{"security_context":{"namespace_options":{"pid":1}}}}
JSON
        if CID=$($CRI create "$ID" $W/ctr.json $W/pod.json 2>$W/ctr.err) && $CRI start "$CID" >/dev/null 2>>$W/ctr.err; then
            echo "container: started"
            # shellcheck disable=SC2016 # $$ is the exec'd shell's
            X=$($CRI exec "$CID" /bin/busybox sh -c 'echo "exec-works pid=$$"' 2>&1)
            echo "crictl exec: $(echo "$X" | tail -n 1)"
        else
            echo "container: failed"; cat $W/ctr.err
        fi
        $CRI stopp "$ID" >/dev/null 2>&1
        $CRI rmp "$ID" >/dev/null 2>&1
    else
        echo "runp: failed"; cat $W/runp.err
    fi
fi
# DEBUG_LOG=1: the whole containerd log, not only the lines about these patches.
if [ -n "${DEBUG_LOG:-}" ]; then cat $W/containerd.log; else
    grep -E '4\.11|unprivileged|sysctl|subreaper|failed to load plugin' $W/containerd.log
fi | sed 's/^/log: /'
kill $PID; wait $PID 2>/dev/null
exit 0
