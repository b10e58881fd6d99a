#!/bin/sh
# The Service benchmark's inside part (benches/run.sh runs it in gVisor and, for reference, on
# the host): HTTP requests per second and latency from a client pod to one backend pod, directly
# (pod IP) and through svcproxy (the Service's ClusterIP), interleaved in the same run.
#
# Two modes per path: keep-alive (CONNS connections, each sending requests back to back, like
# wrk) and new-connection (CONNS workers, one TCP connection per request: the proxy's accept,
# endpoint pick and upstream connect on every request).
#
# With SVCPROXY_B (another svcproxy binary, e.g. an older commit's), a third path `service-b`
# goes through it: each round swaps the two proxies in front of the same Service (A then B in
# odd rounds, B then A in even ones), so both are measured under the same load, round by round.
#
# Inputs (environment): K3S, SVCPROXY, TESTKIT, WORK; ROUNDS, SECONDS_PER_RUN, CONNS;
# SVCPROXY_B (optional).
. "$(dirname "$0")/../tests/sandbox.sh"
ROUNDS=${ROUNDS:-3} SECONDS_PER_RUN=${SECONDS_PER_RUN:-10} CONNS=${CONNS:-8}
SVCPROXY_B=${SVCPROXY_B:-}

start_k3s || exit 1
PROXY=""
# Runs svcproxy binary $1 in front of the Services (stopping the one running); once the
# ClusterIP is known, waits until it answers through the new one.
use_proxy() {
  [ "$PROXY" = "$1" ] && return 0
  if [ -n "${PROXY_PID:-}" ]; then kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null; fi
  "$1" --kubeconfig "$W/kubeconfig" 2>> "$W/svcproxy.log" &
  PROXY_PID=$!; PROXY=$1; PIDS="$PIDS $PROXY_PID"
  [ -n "${CIP:-}" ] || return 0
  for i in $(seq 100); do in_pod client "$TESTKIT" get "$CIP:80" >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail swap "no answer through $CIP:80 from $1"; exit 1
}
use_proxy "$SVCPROXY"
for i in $(seq 50); do ip link show gvcni0 >/dev/null 2>&1 && break; sleep 0.1; done
ip addr add 10.88.0.1/16 dev gvcni0 || { fail setup "no bridge: $(cat "$W/svcproxy.log")"; exit 1; }
pod b1 10.88.0.11
pod client 10.88.0.20
backend b1
kubectl apply -f - >/dev/null <<'JSON' || { fail setup "Service"; exit 1; }
{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench", "namespace": "default"},
  "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}},
 {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
  "metadata": {"name": "bench-1", "namespace": "default",
               "labels": {"kubernetes.io/service-name": "bench",
                          "endpointslice.kubernetes.io/managed-by": "svcproxy-bench"}},
  "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
  "endpoints": [{"addresses": ["10.88.0.11"], "conditions": {"ready": true}}]}]}
JSON
CIP=$(kubectl get service bench -o jsonpath='{.spec.clusterIP}')
for i in $(seq 100); do in_pod client "$TESTKIT" get "$CIP:80" >/dev/null 2>&1 && break; sleep 0.1; done
in_pod client "$TESTKIT" get "$CIP:80" >/dev/null || { fail setup "no answer through $CIP:80"; exit 1; }
echo "@@info uname=$(uname -r) cpus=$(nproc) clusterip=$CIP"

for round in $(seq "$ROUNDS"); do
  paths="direct service"
  if [ -n "$SVCPROXY_B" ]; then
    paths="direct service service-b"; [ $((round % 2)) = 0 ] && paths="direct service-b service"
  fi
  for mode in keep-alive new-connection; do
    flag=""; [ "$mode" = new-connection ] && flag=--new-connections
    for path in $paths; do
      target="$CIP:80"
      case $path in
        direct) target=10.88.0.11:8080 ;;
        service) use_proxy "$SVCPROXY" ;;
        service-b) use_proxy "$SVCPROXY_B" ;;
      esac
      out=$(in_pod client "$TESTKIT" load "$target" --seconds "$SECONDS_PER_RUN" --connections "$CONNS" $flag)
      echo "@@bench round=$round mode=$mode path=$path $out"
    done
  done
done
echo "@@done"
