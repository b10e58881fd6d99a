#!/bin/sh
# Shared by tests/scenario.sh and benches/service.sh (sourced, not run): a private network
# inside whatever namespace or sandbox runs the script, a control-plane-only k3s, pods.
#
#   node0 (192.168.77.1/24)   the node's "eth0": k3s's node IP, NodePorts
#   gvcni0                    the CNI bridge, with the gateway 10.88.0.1/16 as the CNI plugin
#                             would set it up; `pod NAME IP` adds a netns svct-NAME behind it
#
# Inputs (environment): K3S (binary), TESTKIT (svcproxy-testkit, for `backend`), WORK (scratch
# directory).
set -u
W=$WORK
mkdir -p "$W/bin"
ln -sf "$K3S" "$W/bin/kubectl"
export PATH="$W/bin:$PATH" KUBECONFIG="$W/kubeconfig"
# A k3s config file left on the host (/etc/rancher/k3s/config.yaml) must not leak in.
: > "$W/k3s-config.yaml"
export K3S_CONFIG_FILE="$W/k3s-config.yaml"

ok() { echo "@@ok $*"; }
fail() { echo "@@fail $*"; }
ms() { date +%s%3N; }
PIDS=""
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null; done
  for ns in $(ip netns list 2>/dev/null | cut -d" " -f1); do ip netns del "$ns"; done
}
trap cleanup EXIT

# /run/netns is shared with the host inside runsc -force-overlay=false: keep ours private.
mkdir -p /run/netns && mount -t tmpfs none /run/netns || { fail setup "tmpfs on /run/netns"; exit 1; }

ip link set lo up
ip link add node0 type veth peer name node0p && ip addr add 192.168.77.1/24 dev node0 &&
  ip link set node0 up && ip link set node0p up || { fail setup "node0 veth"; exit 1; }

# Starts k3s (control plane only, no kube-proxy) and waits for /readyz; prints how long it took.
start_k3s() {
  t0=$(ms)
  "$K3S" server --disable-agent --disable-kube-proxy --node-ip=192.168.77.1 \
    --data-dir="$W/k3s" --write-kubeconfig="$W/kubeconfig" --write-kubeconfig-mode=0600 \
    --flannel-backend=none --disable-network-policy --disable-helm-controller \
    --disable-cloud-controller --disable=traefik,servicelb,metrics-server,local-storage \
    > "$W/k3s.log" 2>&1 &
  PIDS="$PIDS $!"
  for i in $(seq 240); do
    kubectl get --raw /readyz >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! kubectl get --raw /readyz >/dev/null 2>&1; then
    fail k3s-ready "no /readyz after 120 s; k3s log tail: $(tail -5 "$W/k3s.log" | tr '\n' ' ')"
    return 1
  fi
  echo "@@time k3s-ready $(( $(ms) - t0 ))"
}

# As the CNI plugin does. `dev` matters: gVisor accepts a default route without one but the
# route has no interface, and every connect through it fails with "Network is unreachable".
pod() { # NAME IP
  ip netns add "svct-$1" && ip link add "vh-$1" type veth peer name "vp-$1" &&
    ip link set "vh-$1" master gvcni0 && ip link set "vh-$1" up &&
    ip link set "vp-$1" netns "svct-$1" &&
    ip netns exec "svct-$1" ip addr add "$2/16" dev "vp-$1" &&
    ip netns exec "svct-$1" ip link set "vp-$1" up &&
    ip netns exec "svct-$1" ip link set lo up &&
    ip netns exec "svct-$1" ip route add default via 10.88.0.1 dev "vp-$1" || { fail setup "pod $1"; exit 1; }
}
in_pod() { n=$1; shift; ip netns exec "svct-$n" "$@"; }

# A backend in pod NAME: HTTP on :8080 and UDP on :8053, both answering NAME. Started without a
# function or subshell around the process itself, so that $! is the server.
backend() { # NAME
  ip netns exec "svct-$1" "$TESTKIT" serve --name "$1" --http 0.0.0.0:8080 --udp 0.0.0.0:8053 &
  PIDS="$PIDS $!"
}
