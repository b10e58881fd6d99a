# Services and cluster DNS, sourced by scenario.sh (full mode, k3s running, the pod e2e-busybox
# running). Whoever serves Services here (kube-proxy on plain Linux, svcproxy in gVisor), the
# same checks:
#   svc-clusterip      a Deployment behind a ClusterIP Service answers another pod by IP,
#                      from both of its endpoints (load is spread);
#   dns-kubernetes     CoreDNS answers through the kube-dns Service (10.43.0.10):
#                      `nslookup kubernetes.default.svc.cluster.local` is 10.43.0.1, and
#                      `kubernetes.default` through the pod's search path reaches the API;
#   svc-dns            the Service by its short name (`echo`, the pod's search path);
#   svc-nodeport       the NodePort answers on the node's address, from the sandbox itself;
#   loadbalancer-ip    a LoadBalancer Service gets the node's address as its EXTERNAL-IP (k3s's
#                      servicelb is not shipped: svcproxy writes it, as servicelb would) and
#                      answers there at its port, from the sandbox (svcproxy serves the port in
#                      gVisor; kube-proxy's rules for the ingress IP on plain Linux);
#   svc-scale-down     after scaling 2 -> 1, the gone pod gets no request later than 5 s after
#                      the scale (it keeps serving while Terminating: httpd as PID 1 ignores
#                      SIGTERM, so only the proxy dropping its endpoint can stop its answers).
# Uses $K, $BUSYBOX, $RUN, $PROXY from scenario.sh; prints STEP and TIME lines.

NODEPORT=30080
LB_PORT=8081

# kubectl exec in the client pod.
in_client() { $K exec e2e-busybox -- "$@" 2>&1; }

# An HTTP GET as a shell command: the body's last line (the answering pod's name). busybox nc,
# not wget: Debian's busybox-static 1.35 wget segfaults (rc 139, measured here and in the pods:
# it looks the "http" port up through glibc's NSS, which a static binary cannot load).
# nc resolves a name through glibc's resolver, search path included. -w 3 bounds each request.
# Inside the pod, use only shell builtins and the image's applet links (nc, sleep, ...): the
# image has no tail or date link. busybox's shell still ran them in the current gVisor and on
# Linux, but in gvisor-2025 `... | tail -n 1` exits 127. BODY keeps a response's last line.
GET="printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3"
BODY='{ b=; while read -r l; do b=$l; done; echo "$b"; }'
GET_HERE="printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3"   # in the sandbox itself
get() { in_client sh -c "$GET $1 $2 | $BODY"; }

# Polls `get HOST PORT` until it answers, up to $3 seconds; prints the last answer. busybox
# nc's own errors ("nc: timed out", "nc: can't connect ...") come through the same output
# and are no answer: one slow first request failed restart-k3s on plain Linux (2026-12-06).
get_until_answer() {
  t_end=$(( $(date +%s) + $3 ))
  while :; do
    A=$(get "$1" "$2") && [ -n "$A" ] && case "$A" in nc:*) false ;; esac && { echo "$A"; return 0; }
    [ "$(date +%s)" -ge $t_end ] && { echo "$A"; return 1; }
    sleep 1
  done
}

# The YAML of Deployment NAME (REPLICAS busybox httpd pods, label app=NAME, port 8080) whose
# pods answer with their name (their hostname), so a client can tell the endpoints apart.
echo_deployment() {
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1}
spec:
  replicas: $2
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec:
      containers:
      - name: httpd
        image: $BUSYBOX
        imagePullPolicy: Never
        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www']
YAML
}

# The YAML of ClusterIP Service NAME (port 80, named http) in front of echo_deployment NAME,
# after a `---`.
echo_service() {
  cat <<YAML
---
apiVersion: v1
kind: Service
metadata: {name: $1}
spec:
  selector: {app: $1}
  ports: [{name: http, port: 80, targetPort: 8080}]
YAML
}

services_steps() {
  echo "== Services (served by ${PROXY:-?})"
  { echo_deployment echo 2; echo_service echo; cat <<YAML; } | $K apply -f - || { step svc-deploy FAIL "kubectl apply"; return; }
---
apiVersion: v1
kind: Service
metadata: {name: echo-nodeport}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: $NODEPORT}]
YAML
  if $K wait --for=condition=Available deployment/echo --timeout=120s >/dev/null; then
    step svc-deploy ok "2 httpd pods behind Service echo and NodePort $NODEPORT"
  else
    step svc-deploy FAIL; $K get pods -o wide; return
  fi
  mark services-deployed
  PODS=$($K get pods -l app=echo -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort)
  CIP=$($K get service echo -o jsonpath='{.spec.clusterIP}')

  # By IP. The first answer may wait for the proxy to see the endpoints (a watch event). On
  # plain Linux, right after the scenario's stop/start, kube-proxy took more than 30 s to
  # program a new Service in one run of 2026-12-06 (the NodePort and the name answered a few
  # seconds later): its first syncs after a restart, not a fault, so the bound is 90 s and the
  # step says how long it took.
  SVC_T0=$(now)
  A=$(get_until_answer "$CIP" 80 90)
  if echo "$PODS" | grep -qx "$A"; then
    # Then both endpoints: round-robin (svcproxy) or random (kube-proxy). The Deployment is
    # Available once both pods are ready, but the proxy learns the second endpoint from a later
    # EndpointSlice event (CI of 2026-12-06: 10 requests right after the first answer all
    # reached one pod), so requests go on in batches of 5 until both answered, up to 30 s.
    SEEN=
    t_end=$(( $(date +%s) + 30 ))
    while [ "$SEEN" != "$PODS" ] && [ "$(date +%s)" -lt $t_end ]; do
      SEEN=$({ echo "$SEEN"; in_client sh -c "for i in 1 2 3 4 5; do $GET $CIP 80 | $BODY; done"; } | grep . | sort -u)
      [ "$SEEN" = "$PODS" ] || sleep 1
    done
    if [ "$SEEN" = "$PODS" ]; then
      step svc-clusterip ok "$CIP:80 answered after $(awk "BEGIN { printf \"%.1f\", $(now) - $SVC_T0 }")s, both endpoints answer"
    else
      step svc-clusterip FAIL "for 30 s requests reached only [$(echo "$SEEN" | tr "\n" " ")] of [$(echo "$PODS" | tr "\n" " ")]"
    fi
  else
    step svc-clusterip FAIL "$CIP:80 from e2e-busybox: $(echo "$A" | tail -n 1)"
  fi

  # CoreDNS through the kube-dns Service (10.43.0.10). busybox's nslookup sends the name as
  # given, without the search path (measured: `nslookup kubernetes.default` asks for
  # `kubernetes.default.`, which CoreDNS forwards upstream, and there is no upstream in the
  # sandbox), so it gets the full name; the short one goes through glibc's resolver (nc), which
  # applies resolv.conf's search path as every program in a pod does.
  NAME=kubernetes.default.svc.cluster.local
  OUT=$(in_client nslookup $NAME)
  i=0; while [ $i -lt 20 ] && ! echo "$OUT" | grep -q '^Address: 10\.43\.0\.1$'; do
    sleep 1; i=$((i + 1)); OUT=$(in_client nslookup $NAME)
  done
  API=$(in_client sh -c 'nc -w 3 kubernetes.default 443 </dev/null && echo connected')
  if ! echo "$OUT" | grep -q '^Address: 10\.43\.0\.1$'; then
    step dns-kubernetes FAIL "$NAME: $(echo "$OUT" | tr '\n' ' ' | cut -c1-200)"; in_client cat /etc/resolv.conf
  elif [ "$API" != connected ]; then
    step dns-kubernetes FAIL "$NAME is 10.43.0.1, but kubernetes.default:443 (search path): $API"
  else
    step dns-kubernetes ok "$NAME is 10.43.0.1; kubernetes.default:443 connects (search path)"
  fi
  A=$(get_until_answer echo 80 10)
  echo "$PODS" | grep -qx "$A" && step svc-dns ok "echo:80 answered by $A" \
    || step svc-dns FAIL "echo:80 from e2e-busybox: $(echo "$A" | tail -n 1)"

  # NodePort on the node's own address, from the sandbox (not from a pod).
  NODE_IP=$($K get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')
  A=; i=0
  while [ $i -lt 20 ]; do
    A=$(sh -c "$GET_HERE $NODE_IP $NODEPORT | tail -n 1" 2>&1) && echo "$PODS" | grep -qx "$A" && break
    sleep 1; i=$((i + 1))
  done
  echo "$PODS" | grep -qx "$A" && step svc-nodeport ok "$NODE_IP:$NODEPORT answered by $A" \
    || step svc-nodeport FAIL "$NODE_IP:$NODEPORT: $(echo "$A" | tail -n 1)"

  # LoadBalancer: status.loadBalancer.ingress (kubectl's EXTERNAL-IP) is the node's
  # InternalIP, and the Service's port answers there.
  $K apply -f - >/dev/null <<YAML || step loadbalancer-ip FAIL "kubectl apply"
apiVersion: v1
kind: Service
metadata: {name: echo-lb}
spec:
  type: LoadBalancer
  selector: {app: echo}
  ports: [{name: http, port: $LB_PORT, targetPort: 8080}]
YAML
  LB_T0=$(now); EXT=; i=0
  while [ $i -lt 60 ]; do
    EXT=$($K get service echo-lb --no-headers 2>&1 | awk '{print $4}')
    [ "$EXT" = "$NODE_IP" ] && break
    sleep 0.5; i=$((i + 1))
  done
  LB_IP_AFTER=$(awk "BEGIN { printf \"%.1f\", $(now) - $LB_T0 }")
  A=; i=0
  while [ "$EXT" = "$NODE_IP" ] && [ $i -lt 20 ]; do
    A=$(sh -c "$GET_HERE $EXT $LB_PORT | tail -n 1" 2>&1) && echo "$PODS" | grep -qx "$A" && break
    sleep 1; i=$((i + 1))
  done
  if [ "$EXT" != "$NODE_IP" ]; then
    step loadbalancer-ip FAIL "EXTERNAL-IP [$EXT], not the node's $NODE_IP, after ${LB_IP_AFTER}s (servicelb: $(grep -F 'add-on servicelb' "$RUN/install.out" | cut -c1-160))"
    $K get service echo-lb -o yaml | tail -n 8
  elif echo "$PODS" | grep -qx "$A"; then
    step loadbalancer-ip ok "EXTERNAL-IP $EXT after ${LB_IP_AFTER}s, $EXT:$LB_PORT answered by $A"
  else
    step loadbalancer-ip FAIL "EXTERNAL-IP $EXT, but $EXT:$LB_PORT: $(echo "$A" | tail -n 1)"
  fi

  # Scale down while the client asks every 0.2 s, each request stamped with the time it was
  # sent: /proc/uptime, the one clock the pods and this shell share to 10 ms (they run on the
  # same kernel, gVisor's or the host's; busybox date has no %N).
  in_client sh -c "read up _ < /proc/uptime; end=\$((\${up%.*} + 14)); while :; do
      read up _ < /proc/uptime; [ \${up%.*} -lt \$end ] || break
      echo \"\$up \$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 $CIP 80 2>/dev/null | $BODY)\"; sleep 0.2; done" \
    > "$RUN/scale-down.log" &
  LOOP=$!
  sleep 3
  read -r SCALED_AT _ < /proc/uptime
  $K scale deployment echo --replicas=1 >/dev/null
  wait $LOOP
  # The gone pod: the one the Deployment no longer counts (it may still be Terminating).
  KEPT=$($K get pods -l app=echo -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}')
  GONE=$(echo "$PODS" | grep -vx "$KEPT")
  awk -v t="$SCALED_AT" -v gone="$GONE" -v kept="$KEPT" '
    $2 == gone && $1 < t { before++ }
    $2 == gone && $1 >= t { last = $1 - t }
    $2 == kept && $1 >= t { after++ }
    END {
      printf "before=%d last=%.2f after=%d\n", before, last, after
    }' "$RUN/scale-down.log" > "$RUN/scale-down.result"
  read -r R < "$RUN/scale-down.result"
  BEFORE=$(echo "$R" | sed 's/.*before=\([0-9]*\).*/\1/')
  LAST=$(echo "$R" | sed 's/.*last=\([0-9.]*\).*/\1/')
  AFTER=$(echo "$R" | sed 's/.*after=\([0-9]*\).*/\1/')
  echo "scale-down: gone $GONE, kept $KEPT, $R"
  if [ "$(echo "$GONE" | wc -w)" != 1 ] || [ "$(echo "$KEPT" | wc -w)" != 1 ]; then
    step svc-scale-down FAIL "cannot tell the gone pod ([$GONE]) from the kept one ([$KEPT])"
  elif [ "${BEFORE:-0}" = 0 ] || [ "${AFTER:-0}" = 0 ]; then
    # Without answers from the gone pod before the scale and from the kept one after it, the
    # measurement would prove nothing.
    step svc-scale-down FAIL "answers: $BEFORE from $GONE before the scale, $AFTER from $KEPT after it; see scale-down.log"
  elif awk "BEGIN { exit !($LAST <= 5) }"; then
    step svc-scale-down ok "$GONE's last answer ${LAST}s after the scale (limit 5 s), $AFTER answers from $KEPT after it"
  else
    step svc-scale-down FAIL "$GONE still answered ${LAST}s after the scale (limit 5 s)"
  fi
  $K delete deployment echo --wait=false >/dev/null
  $K delete service echo echo-nodeport echo-lb >/dev/null
}
