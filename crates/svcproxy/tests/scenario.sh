#!/bin/sh
# svcproxy's integration scenario. One script for both hosts: tests/proxy.rs runs it on plain
# Linux (in private network, mount and PID namespaces: `unshare -m -n -p -f --mount-proc`, so
# everything it starts dies with it, as in a sandbox) and inside gVisor
# (`runsc --network=none do -force-overlay=false`). It prints one line per step:
#   @@ok NAME DETAIL      @@fail NAME DETAIL      @@time NAME MILLISECONDS
# and the Rust test asserts on them, so the assertions live here and in one place.
#
# The set-up (tests/sandbox.sh), all inside this namespace (nothing leaves it):
#   node0 (192.168.77.1/24)   the node's "eth0": k3s's node IP, NodePorts
#   gvcni0                    the CNI bridge: created by svcproxy, then given the gateway
#                             10.88.0.1/16 as the CNI plugin would; veths to four pod netns:
#     b1 10.88.0.11, b2 10.88.0.12   backends (svcproxy-testkit: HTTP :8080, UDP :8053)
#     dns 10.88.0.53                 CoreDNS from the shipped image, k3s's Corefile
#     client 10.88.0.20              where requests come from
#   k3s server --disable-agent --disable-kube-proxy: the real API; Services and EndpointSlices
#   are created with kubectl and point at the backends above.
#
# Inputs (environment): K3S, SVCPROXY, TESTKIT, COREDNS (binaries), WORK (scratch directory).
. "$(dirname "$0")/sandbox.sh"
mkdir -p "$W/dns"

# --- k3s, control plane only --------------------------------------------------------------
start_k3s || exit 1
ok k3s-ready

# --- svcproxy ------------------------------------------------------------------------------
# Started before the bridge exists: it must create it (the CNI plugin adopts it).
"$SVCPROXY" --kubeconfig "$W/kubeconfig" --resync 2 --status-file "$W/status.json" \
  2> "$W/svcproxy.log" &
PROXY=$!
PIDS="$PIDS $PROXY"
for i in $(seq 50); do ip link show gvcni0 >/dev/null 2>&1 && break; sleep 0.1; done
if ip link show gvcni0 >/dev/null 2>&1; then ok bridge-created; else fail bridge-created "no gvcni0"; fi
ip addr add 10.88.0.1/16 dev gvcni0

pod b1 10.88.0.11
pod b2 10.88.0.12
pod dns 10.88.0.53
pod client 10.88.0.20
backend b1
backend b2

endpoint_slice() { # NAMESPACE NAME SERVICE PORTS-JSON ENDPOINTS-JSON
  kubectl apply -f - >/dev/null <<EOF
{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
 "metadata": {"name": "$2", "namespace": "$1",
              "labels": {"kubernetes.io/service-name": "$3",
                         "endpointslice.kubernetes.io/managed-by": "svcproxy-test"}},
 "addressType": "IPv4",
 "ports": $4,
 "endpoints": $5}
EOF
}
slice() { # ENDPOINTS-JSON: the EndpointSlice of Service web
  endpoint_slice default web-1 web \
    '[{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "echo", "port": 8053, "protocol": "UDP"}]' "$1"
}
both_ready='[{"addresses": ["10.88.0.11"], "conditions": {"ready": true}},
             {"addresses": ["10.88.0.12"], "conditions": {"ready": true}}]'
kubectl apply -f - >/dev/null <<EOF || fail setup "Service web"
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "web", "namespace": "default"},
 "spec": {"type": "NodePort",
          "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080},
                    {"name": "echo", "port": 53, "targetPort": 8053, "protocol": "UDP", "nodePort": 30053}]}}
EOF
slice "$both_ready" || fail setup "EndpointSlice web-1"
CIP=$(kubectl get service web -o jsonpath='{.spec.clusterIP}')
echo "@@info web ClusterIP $CIP"

# --- ClusterIP and NodePort, TCP and UDP ---------------------------------------------------
t0=$(ms)
for i in $(seq 100); do in_pod client "$TESTKIT" get "$CIP:80" >/dev/null 2>&1 && break; sleep 0.1; done
echo "@@time first-answer $(( $(ms) - t0 ))"

spread() { # NAME OUTPUT: every line b1 or b2 (for UDP: "bN from EXPECTED_SOURCE"), both seen
  name=$1 out=$2 source=${3:-}
  bad=$(echo "$out" | grep -v -E "^b[12]${source:+ from $source}$")
  if [ -z "$bad" ] && echo "$out" | grep -q '^b1' && echo "$out" | grep -q '^b2'; then
    ok "$name" "$(echo "$out" | tr '\n' ' ')"
  else
    fail "$name" "$(echo "$out" | tr '\n' ' ')"
  fi
}
spread tcp-clusterip "$(in_pod client "$TESTKIT" get "$CIP:80" --count 8 2>&1)"
spread udp-clusterip "$(in_pod client "$TESTKIT" udp "$CIP:53" --count 8 2>&1)" "$CIP:53"
spread tcp-nodeport-pod-to-gateway "$(in_pod client "$TESTKIT" get 10.88.0.1:30080 --count 6 2>&1)"
spread udp-nodeport-pod-to-gateway "$(in_pod client "$TESTKIT" udp 10.88.0.1:30053 --count 6 2>&1)" 10.88.0.1:30053
spread tcp-nodeport-node-ip "$("$TESTKIT" get 192.168.77.1:30080 --count 6 2>&1)"
spread udp-nodeport-node-ip "$("$TESTKIT" udp 192.168.77.1:30053 --count 6 2>&1)" 192.168.77.1:30053
spread tcp-nodeport-localhost "$("$TESTKIT" get 127.0.0.1:30080 --count 6 2>&1)"
spread tcp-clusterip-from-node "$("$TESTKIT" get "$CIP:80" --count 6 2>&1)"

# The API's own Service, from a pod: 10.43.0.1:443 -> 192.168.77.1:6443.
out=$(in_pod client kubectl --server https://10.43.0.1:443 get --raw /readyz 2>&1)
if [ "$out" = ok ]; then ok kubernetes-service "$out"; else fail kubernetes-service "$out"; fi

# --- LoadBalancer Services, as k3s's servicelb serves them ----------------------------------
# The status gets the Ready nodes' InternalIPs; the ports answer on the node's addresses. k3s
# runs without an agent here, so the node is made by hand: a Node object with the node0
# address and a Ready condition (the node lifecycle controller only marks it Unknown after its
# grace period of 40 s or more, and these steps take a few seconds).
# Who may write the status: the admin kubeconfig may, an agent's kube-proxy identity
# (ClusterRole system:node-proxier) may not, which is why only a server's svcproxy writes it.
admin=$(kubectl auth can-i patch services --subresource=status 2>&1)
agent=$(kubectl auth can-i patch services --subresource=status --as=system:kube-proxy 2>&1)
# stderr: kubectl warns that nodes are not namespaced.
agent_watch=$(kubectl auth can-i watch nodes --as=system:kube-proxy 2>/dev/null)
if [ "$admin" = yes ] && [ "$agent" = no ] && [ "$agent_watch" = yes ]; then
  ok lb-status-rbac "admin may patch services/status, system:kube-proxy may not (it may watch nodes)"
else
  fail lb-status-rbac "admin: $admin, system:kube-proxy: $agent, watch nodes: $agent_watch"
fi
kubectl apply -f - >/dev/null <<NODE || fail setup "Node svct-node"
{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "svct-node"}}
NODE
node_status() { # READY(True|False)
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  kubectl patch node svct-node --subresource=status --type=merge -p "{\"status\": {
    \"addresses\": [{\"type\": \"InternalIP\", \"address\": \"192.168.77.1\"}, {\"type\": \"Hostname\", \"address\": \"svct-node\"}],
    \"conditions\": [{\"type\": \"Ready\", \"status\": \"$1\", \"reason\": \"Test\", \"message\": \"svcproxy scenario\",
                     \"lastHeartbeatTime\": \"$now\", \"lastTransitionTime\": \"$now\"}]}}" >/dev/null
}
node_status True || fail setup "Node svct-node status"
lb_service() { # NAME PORT NODEPORT [CLASS]
  class=""; [ -n "${4:-}" ] && class="\"loadBalancerClass\": \"$4\","
  kubectl apply -f - >/dev/null <<SERVICE
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "$1", "namespace": "default"},
 "spec": {"type": "LoadBalancer", $class
          "ports": [{"name": "http", "port": $2, "targetPort": 8080, "protocol": "TCP", "nodePort": $3},
                    {"name": "echo", "port": $2, "targetPort": 8053, "protocol": "UDP", "nodePort": $3}]}}
SERVICE
  endpoint_slice default "$1-1" "$1" \
    '[{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "echo", "port": 8053, "protocol": "UDP"}]' "$both_ready"
}
ingress() { kubectl get service "$1" -o jsonpath='{.status.loadBalancer.ingress[*].ip}'; }
t0=$(ms)
lb_service lb 8081 30081 || fail setup "Service lb"
lb_service lb-other 8082 30082 example.com/other || fail setup "Service lb-other"
until [ "$(ingress lb)" = 192.168.77.1 ] || [ $(( $(ms) - t0 )) -gt 10000 ]; do sleep 0.1; done
took=$(( $(ms) - t0 ))
echo "@@time lb-ingress $took"
external=$(kubectl get service lb --no-headers 2>&1 | awk '{print $4}')
if [ "$(ingress lb)" = 192.168.77.1 ] && [ "$external" = 192.168.77.1 ]; then
  ok lb-ingress "status.loadBalancer.ingress 192.168.77.1 after ${took} ms; kubectl get svc EXTERNAL-IP $external"
else
  fail lb-ingress "ingress [$(ingress lb)], EXTERNAL-IP [$external] after ${took} ms: $(kubectl get service lb -o jsonpath='{.status}')"
fi
spread tcp-lb-node-ip "$("$TESTKIT" get 192.168.77.1:8081 --count 6 2>&1)"
spread udp-lb-node-ip "$("$TESTKIT" udp 192.168.77.1:8081 --count 6 2>&1)" 192.168.77.1:8081
spread tcp-lb-pod-to-gateway "$(in_pod client "$TESTKIT" get 10.88.0.1:8081 --count 6 2>&1)"
# A Service with a loadBalancerClass is another controller's: no status, no port on the node
# (its ClusterIP and NodePort are served).
out=$("$TESTKIT" get 192.168.77.1:8082 2>&1)
nodeport=$("$TESTKIT" get 192.168.77.1:30082 2>&1)
if [ -z "$(ingress lb-other)" ] && echo "$out" | grep -q refused && echo "$nodeport" | grep -q '^b[12]$'; then
  ok lb-class-left-alone "no ingress; :8082 $out; NodePort 30082 answered $nodeport"
else
  fail lb-class-left-alone "ingress [$(ingress lb-other)]; :8082 $out; NodePort 30082 $nodeport"
fi
# The node stops being Ready: the ingress goes (servicelb lists nodes with a ready pod only).
node_status False
t0=$(ms)
until [ -z "$(ingress lb)" ] || [ $(( $(ms) - t0 )) -gt 10000 ]; do sleep 0.1; done
if [ -z "$(ingress lb)" ]; then ok lb-node-not-ready "ingress emptied after $(( $(ms) - t0 )) ms"; else fail lb-node-not-ready "ingress still [$(ingress lb)]"; fi
kubectl delete service lb lb-other >/dev/null
kubectl delete endpointslice lb-1 lb-other-1 >/dev/null
kubectl delete node svct-node >/dev/null

# --- an endpoint stops being ready: gone within 5 s ----------------------------------------
only_b1() { # true when COUNT fresh connections all reach b1
  out=$(in_pod client "$TESTKIT" get "$CIP:80" --count "$1" 2>&1)
  [ "$(echo "$out" | grep -c '^b1$')" -eq "$1" ]
}
t0=$(ms)
slice '[{"addresses": ["10.88.0.11"], "conditions": {"ready": true}},
        {"addresses": ["10.88.0.12"], "conditions": {"ready": false}}]'
until only_b1 6 || [ $(( $(ms) - t0 )) -gt 10000 ]; do sleep 0.1; done
took=$(( $(ms) - t0 ))
echo "@@time not-ready-endpoint-dropped $took"
if only_b1 10 && [ "$took" -le 5000 ]; then ok not-ready-dropped "${took} ms"; else fail not-ready-dropped "${took} ms: $out"; fi
out=$(in_pod client "$TESTKIT" udp "$CIP:53" --count 6 2>&1)
if [ "$(echo "$out" | grep -c "^b1 from $CIP:53$")" -eq 6 ]; then ok not-ready-dropped-udp; else fail not-ready-dropped-udp "$(echo "$out" | tr '\n' ' ')"; fi

# Scaled to zero: connections are refused at once (as kube-proxy's REJECT), not left hanging.
slice '[]'
t0=$(ms)
until in_pod client "$TESTKIT" get "$CIP:80" 2>&1 | grep -q refused || [ $(( $(ms) - t0 )) -gt 10000 ]; do sleep 0.1; done
t1=$(ms)
out=$(in_pod client "$TESTKIT" get "$CIP:80" 2>&1); t2=$(ms)
echo "@@time zero-endpoints-refused $(( t1 - t0 ))"
if echo "$out" | grep -q refused && [ $(( t2 - t1 )) -lt 1000 ]; then ok zero-endpoints-refused "$out"; else fail zero-endpoints-refused "$out ($(( t2 - t1 )) ms)"; fi

# Scaled up again.
slice "$both_ready"
t0=$(ms)
until in_pod client "$TESTKIT" get "$CIP:80" >/dev/null 2>&1 || [ $(( $(ms) - t0 )) -gt 10000 ]; do sleep 0.1; done
echo "@@time scaled-up $(( $(ms) - t0 ))"
spread scaled-up "$(in_pod client "$TESTKIT" get "$CIP:80" --count 8 2>&1)"

# --- CoreDNS from the shipped image, k3s's Corefile, answering through 10.43.0.10 ------------
# k3s deploys its coredns manifest in control-plane-only mode too: the kube-dns Service
# (10.43.0.10), the coredns ConfigMap and ServiceAccount exist; only the pod cannot run.
t0=$(ms)
for i in $(seq 120); do
  kubectl -n kube-system get configmap coredns >/dev/null 2>&1 &&
    kubectl -n kube-system get serviceaccount coredns >/dev/null 2>&1 &&
    kubectl -n kube-system get service kube-dns >/dev/null 2>&1 && break
  sleep 0.5
done
DNSIP=$(kubectl -n kube-system get service kube-dns -o jsonpath='{.spec.clusterIP}')
echo "@@info kube-dns ClusterIP $DNSIP"
kubectl -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}' > "$W/dns/Corefile.k3s"
kubectl -n kube-system get configmap coredns -o jsonpath='{.data.NodeHosts}' > "$W/dns/NodeHosts"
TOKEN=$(kubectl -n kube-system create token coredns)
# CoreDNS reaches the API the way the pod would, through the kubernetes Service's ClusterIP
# (here with a kubeconfig and the coredns ServiceAccount's token, as no kubelet mounts one).
cat > "$W/dns/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: k, cluster: {server: "https://10.43.0.1:443", certificate-authority: "$W/k3s/server/tls/server-ca.crt"}}]
users: [{name: coredns, user: {token: "$TOKEN"}}]
contexts: [{name: k, context: {cluster: k, user: coredns}}]
current-context: k
EOF
# Not on this machine's network: upstream queries go to the gateway, where nothing answers.
echo "nameserver 10.88.0.1" > "$W/dns/resolv.conf"
# k3s's Corefile with two changes only: its files live in $W/dns instead of /etc/coredns and
# /etc/resolv.conf, and the kubernetes block is given the kubeconfig above.
sed -e "s|/etc/coredns/|$W/dns/|g" -e "s|/etc/resolv.conf|$W/dns/resolv.conf|" \
    -e "s|^\( *\)kubernetes \(.*\){|\1kubernetes \2{\n\1  kubeconfig $W/dns/kubeconfig k|" \
    "$W/dns/Corefile.k3s" > "$W/dns/Corefile"
if grep -q "kubeconfig $W/dns/kubeconfig" "$W/dns/Corefile"; then ok corefile "$(tr '\n' ' ' < "$W/dns/Corefile")"; else fail corefile "$(cat "$W/dns/Corefile.k3s")"; fi
ip netns exec svct-dns "$COREDNS" -conf "$W/dns/Corefile" > "$W/coredns.log" 2>&1 & PIDS="$PIDS $!"
endpoint_slice kube-system kube-dns-test kube-dns \
  '[{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}, {"name": "metrics", "port": 9153, "protocol": "TCP"}]' \
  '[{"addresses": ["10.88.0.53"], "conditions": {"ready": true}}]' || fail setup "EndpointSlice kube-dns-test"
lookup() { in_pod client busybox nslookup "$1" "$DNSIP" 2>&1; }
until lookup kubernetes.default.svc.cluster.local | grep -q 'Address: 10.43.0.1$' || [ $(( $(ms) - t0 )) -gt 30000 ]; do sleep 0.3; done
echo "@@time coredns-answers $(( $(ms) - t0 ))"
out=$(lookup kubernetes.default.svc.cluster.local)
if echo "$out" | grep -q 'Address: 10.43.0.1$'; then ok dns-kubernetes "$(echo "$out" | tr '\n' ' ')"; else fail dns-kubernetes "$(echo "$out" | tr '\n' ' ') coredns log: $(tail -5 "$W/coredns.log" | tr '\n' ' ')"; fi
out=$(lookup web.default.svc.cluster.local)
if echo "$out" | grep -q "Address: $CIP\$"; then ok dns-web "$(echo "$out" | tr '\n' ' ')"; else fail dns-web "$(echo "$out" | tr '\n' ' ')"; fi

# --- issue 25: one client cannot take the proxy from the others ------------------------------
# A DNS flood: 10,000 queries, each from a new port (as resolvers send them), through the DNS
# ClusterIP; another pod then resolves within 1 s. (With one flow per client port kept for
# 30 s and new clients dropped past 4096 flows, the flood filled the table and the other
# pod's query was dropped.)
pod client2 10.88.0.21
flood=$(in_pod client "$TESTKIT" dnsflood "$DNSIP:53" --count 10000 --name kubernetes.default.svc.cluster.local 2>&1)
t0=$(ms)
out=$(in_pod client2 busybox nslookup kubernetes.default.svc.cluster.local "$DNSIP" 2>&1)
took=$(( $(ms) - t0 ))
echo "@@time dns-after-flood $took"
if echo "$out" | grep -q 'Address: 10.43.0.1$' && [ "$took" -le 1000 ]; then
  ok dns-flood "$flood; then another pod resolved in $took ms"
else
  fail dns-flood "$flood; then another pod: $took ms: $(echo "$out" | tr '\n' ' ')"
fi
# 2,000 idle TCP connections to a NodePort (from the node's address): all held, and a new
# client still gets an answer; closing them gives their places back.
"$TESTKIT" hold 192.168.77.1:30080 --count 2000 > "$W/hold.out" 2>&1 &
HOLD=$!
PIDS="$PIDS $HOLD"
for i in $(seq 600); do grep -q '^held' "$W/hold.out" && break; sleep 0.2; done
held=$(cat "$W/hold.out")
t0=$(ms)
out=$(in_pod client "$TESTKIT" get 10.88.0.1:30080 --count 2 2>&1)
took=$(( $(ms) - t0 ))
open_now() { sed -n 's/.*"tcpConnections": \([0-9]*\).*/\1/p' "$W/status.json"; }
sleep 2.5   # one --resync: the status file counts the open connections
during=$(open_now)
if [ "$held" = "held 2000 of 2000" ] && echo "$out" | grep -q '^b[12]$' && [ "${during:-0}" -ge 2000 ]; then
  ok tcp-idle-2000 "$held; a new client answered in $took ms ($(echo "$out" | tr '\n' ' ')); status: $during open"
else
  fail tcp-idle-2000 "[$held]; new client after $took ms: $(echo "$out" | tr '\n' ' '); status: $during open"
fi
kill "$HOLD"
t0=$(ms)
until [ "$(open_now)" -lt 10 ] 2>/dev/null || [ $(( $(ms) - t0 )) -gt 10000 ]; do sleep 0.5; done
if [ "$(open_now)" -lt 10 ] 2>/dev/null; then ok tcp-released "$(open_now) open $(( $(ms) - t0 )) ms after the client exited"; else fail tcp-released "$(open_now) still open"; fi

# --- quiet at steady state, status file, clean exit -----------------------------------------
before=$(wc -l < "$W/svcproxy.log")
sleep 5   # two --resync periods and more
after=$(wc -l < "$W/svcproxy.log")
if [ "$before" -eq "$after" ]; then ok quiet "$after lines"; else fail quiet "$(tail -n +$((before + 1)) "$W/svcproxy.log" | tr '\n' ' ')"; fi
if grep -q '"proxy": "svcproxy"' "$W/status.json" && grep -q '"clusterIPs": [1-9]' "$W/status.json"; then
  ok status-file "$(tr -d ' \n' < "$W/status.json")"
else
  fail status-file "$(cat "$W/status.json" 2>&1)"
fi
kill -TERM "$PROXY"
for i in $(seq 50); do kill -0 "$PROXY" 2>/dev/null || break; sleep 0.1; done
left=$(ip -4 addr show dev gvcni0 | grep -c 'inet 10\.43\.')
if ! kill -0 "$PROXY" 2>/dev/null && [ "$left" -eq 0 ] && [ ! -e "$W/status.json" ]; then
  ok clean-exit
else
  fail clean-exit "running=$(kill -0 "$PROXY" 2>/dev/null && echo yes || echo no) clusterips-left=$left"
fi
echo "@@log-begin"
cat "$W/svcproxy.log"
echo "@@log-end"
echo "@@done"
