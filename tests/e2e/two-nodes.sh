#!/bin/sh
# The two-nodes scenario `cargo xtask e2e --topology two-nodes` runs: this script runs twice at
# once, as ROLE=server in one sandbox (eth0 10.200.0.2) and as ROLE=agent in another
# (10.200.0.3), the two on one bridge (xtask/src/sandbox.rs). The agent joins with the command
# the server's install printed; the two coordinate through files in SHARED:
#   join              the server URL the server's join command names
#   node-token        a copy of the server's join token, as a user would carry it over
#   agent-installed   the agent's install exit code
#   agent-may-stop    the server is done with the agent
#   agent-uninstalled the agent uninstalled itself
#   abort             the server could not get as far as printing a join command
# Input (environment): TARBALL, RUN (this node's fresh directory), SHARED, ROLE (server |
# agent), MODE (full | control-plane-only: the server's mode), E2E_LIB (lib.sh).
# Output: as scenario.sh (STEP/TIME/RSS/K3SERR lines); xtask prefixes each with the role.
set -u
# shellcheck source=tests/e2e/lib.sh
. "$E2E_LIB"

SERVER_NODE=k3sg-server; AGENT_NODE=k3sg-agent
SERVER_IP=10.200.0.2; AGENT_IP=10.200.0.3

# put NAME TEXT: writes SHARED/NAME whole (aside, then renamed), so the other node never reads
# half of it.
put() { printf '%s\n' "$2" > "$SHARED/.$1.tmp" && mv "$SHARED/.$1.tmp" "$SHARED/$1"; }
# wait_for_file NAME SECONDS: 0 once SHARED/NAME exists; 1 on timeout or when the server aborted.
wait_for_file() {
  i=0
  while [ $i -lt "$2" ]; do
    [ -e "$SHARED/$1" ] && return 0
    [ -e "$SHARED/abort" ] && return 1
    sleep 1; i=$((i + 1))
  done
  return 1
}
# Routes with a gateway that are not the default route: what node-routes adds.
gateway_routes() { awk 'NR > 1 && $2 != "00000000" && $3 != "00000000" { print $1, $2, $3 }' /proc/net/route | tr '\n' ';'; }
# secs_between A B: B - A, one decimal.
secs_between() { awk "BEGIN { printf \"%.1f\", $2 - $1 }"; }
# later A B: A sorts after B (RFC 3339 times compare as strings).
later() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }
stamp_of() { grep -F -m1 "$1" "$RUN/install.out" | sed 's/^\[\([0-9.]*\)\].*/\1/'; }

# After the scenario, on either node: stop, nothing runs, uninstall, the host as before.
finish() {
  k3s_errors
  step k3s-log ok "$(k3s_errors | wc -l) error line(s)"
  echo "== stop"; "$BUNDLE/install" stop --data-dir "$D" && step stop ok || step stop FAIL
  L=$(ours | tr '\n' ';'); [ -z "$L" ] && step no-processes ok || step no-processes FAIL "$L"
  cp -r "$D/logs" "$RUN/component-logs" 2>/dev/null
  echo "== uninstall"; "$BUNDLE/install" uninstall --data-dir "$D" && step uninstall ok || step uninstall FAIL
  AFTER=$(gateway_routes); [ "$BEFORE_ROUTES" = "$AFTER" ] && step routes-removed ok || step routes-removed FAIL "before=[$BEFORE_ROUTES] after=[$AFTER]"
  AFTER=$(mounts); [ "$BEFORE_MOUNTS" = "$AFTER" ] && step mounts-restored ok || step mounts-restored FAIL "before=[$BEFORE_MOUNTS] after=[$AFTER]"
  AFTER=$(addresses); [ "$BEFORE_ADDRESSES" = "$AFTER" ] && step addresses-restored ok "$AFTER" || step addresses-restored FAIL "before=[$BEFORE_ADDRESSES] after=[$AFTER]"
  [ ! -e "$P" ] && [ ! -e "$D" ] && step nothing-left ok || step nothing-left FAIL
}

server() {
  ARGS="--node-name $SERVER_NODE"; [ "$MODE" = control-plane-only ] && ARGS="$ARGS --control-plane-only"
  echo "== install $ARGS"
  INSTALL_START=$(now)
  if install_stamped --prefix "$P" --data-dir "$D" $ARGS; then step install ok; else step install FAIL "rc=$(cat $RUN/install.rc)"; fi
  mark_from_install api-ready "Kubernetes API is ready"
  # The join command, exactly as printed: `  ./install --server URL --token-file node-token`;
  # the token itself is printed nowhere (it would be in the terminal, and pasted into `ps`).
  JOIN=$(sed -n 's/^\[[0-9.]*\]   \.\/install --server \([^ ]*\) --token-file node-token$/\1/p' "$RUN/install.out" | head -n 1)
  TOKEN=$(cat "$D/k3s/server/node-token" 2>/dev/null)
  [ -n "$TOKEN" ] && [ "$JOIN" = "https://$SERVER_IP:6443" ] \
    && step join-command ok "./install --server $JOIN --token-file node-token" \
    || step join-command FAIL "printed: [${JOIN:-nothing}]"
  grep -qF "copy the join token in $D/k3s/server/node-token" "$RUN/install.out" \
    && step token-location ok "$D/k3s/server/node-token" || step token-location FAIL
  [ -n "$TOKEN" ] && ! grep -qF "$TOKEN" "$RUN/install.out" \
    && step token-not-printed ok || step token-not-printed FAIL "the join token is in install's output"
  if [ -z "$JOIN" ]; then
    put abort "the server printed no join command"
    finish; return
  fi
  cp "$D/k3s/server/node-token" "$SHARED/node-token"
  put join "$JOIN"

  K="$P/bin/kubectl --kubeconfig $D/kubeconfig.yaml"
  BUSYBOX=$(image_ref busybox)
  wait_for_file agent-installed 420 && [ "$(cat "$SHARED/agent-installed")" = 0 ] \
    && step agent-installed ok || step agent-installed FAIL "agent install rc=$(cat "$SHARED/agent-installed" 2>/dev/null || echo none)"
  $K wait --for=condition=Ready "node/$AGENT_NODE" --timeout=120s >/dev/null \
    && step agent-ready ok "$($K get nodes --no-headers 2>&1 | awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }')" \
    || { step agent-ready FAIL; $K get nodes -o wide; }
  mark agent-ready
  AGENT_CIDR=$($K get node $AGENT_NODE -o jsonpath='{.spec.podCIDR}' 2>/dev/null)

  # A pod pinned to the agent, serving on 8080; its logs and exec go through the server.
  pinned() { echo "{\"apiVersion\": \"v1\", \"spec\": {\"nodeSelector\": {\"kubernetes.io/hostname\": \"$1\"}}}"; }
  $K run on-agent --image="$BUSYBOX" --image-pull-policy=Never --overrides="$(pinned $AGENT_NODE)" --command -- \
    sh -c 'echo hello-from-the-agent; mkdir -p /www; echo pong-from-the-agent > /www/index.html; exec httpd -f -p 8080 -h /www'
  $K wait --for=jsonpath='{.status.phase}'=Running pod/on-agent --timeout=180s >/dev/null
  ON=$($K get pod on-agent -o jsonpath='{.spec.nodeName}'); AGENT_POD_IP=$($K get pod on-agent -o jsonpath='{.status.podIP}')
  # k3s gives each node a /24 of 10.42.0.0/16: the pod's address must be in the agent's.
  case "$AGENT_POD_IP" in "${AGENT_CIDR%.0/24}".*) IN_RANGE=yes;; *) IN_RANGE=no;; esac
  [ "$ON" = $AGENT_NODE ] && [ $IN_RANGE = yes ] \
    && step agent-pod-running ok "on $ON, IP $AGENT_POD_IP in the node's podCIDR $AGENT_CIDR" \
    || { step agent-pod-running FAIL "node [$ON] IP [$AGENT_POD_IP] podCIDR [$AGENT_CIDR]"; $K describe pod on-agent; }
  mark agent-pod-running
  $K logs on-agent 2>&1 | grep -q hello-from-the-agent && step agent-pod-logs ok || step agent-pod-logs FAIL "$($K logs on-agent 2>&1 | tail -n 1)"
  OUT=$($K exec on-agent -- cat /www/index.html 2>&1)
  [ "$OUT" = pong-from-the-agent ] && step agent-pod-exec ok || step agent-pod-exec FAIL "$(echo "$OUT" | tail -n 1)"

  # A pod on the server reaches the agent's pod by its pod IP (node-routes on both nodes).
  # nc, not wget: the image's busybox (Debian's 1.35.0 build) segfaults in wget; the last line
  # of the answer is the body.
  cross() { $K exec on-server -- sh -c "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $AGENT_POD_IP 8080" 2>&1 | tail -n 1; }
  crosses() { OUT=$(cross); [ "$OUT" = pong-from-the-agent ]; }
  # until_ok SECONDS CMD...: runs CMD every 2 s until it succeeds (the route, the pod or the
  # Service is not there yet) or SECONDS pass.
  until_ok() {
    limit=$1; shift; t=$(now)
    until "$@"; do awk "BEGIN { exit !($(now) - $t > $limit) }" && return 1; sleep 2; done
  }
  if [ "$MODE" = full ]; then
    $K run on-server --image="$BUSYBOX" --image-pull-policy=Never --overrides="$(pinned $SERVER_NODE)" --command -- sleep 3600
    $K wait --for=jsonpath='{.status.phase}'=Running pod/on-server --timeout=120s >/dev/null \
      && step server-pod-running ok "on $($K get pod on-server -o jsonpath='{.spec.nodeName}'), IP $($K get pod on-server -o jsonpath='{.status.podIP}')" \
      || step server-pod-running FAIL
    S=$("$BUNDLE/install" status --data-dir "$D" 2>&1)
    echo "$S" | grep -q "^node-routes: running .*$AGENT_CIDR via $AGENT_IP (node $AGENT_NODE)" \
      && step server-routes ok "$(echo "$S" | grep '^node-routes')" || step server-routes FAIL "$(echo "$S" | grep '^node-routes')"
    T=$(now)
    until_ok 60 crosses && step pod-to-pod ok "on-server -> $AGENT_POD_IP:8080 on the agent in $(secs_between "$T" "$(now)")s" \
      || step pod-to-pod FAIL "$(echo "$OUT" | tail -n 1)"

    # Services across nodes, each served by the proxy of the node the client pod is on
    # (kube-proxy, or svcproxy where it cannot run). From the agent's pod: DNS through the
    # kube-dns Service (CoreDNS runs on the server) and the API through kubernetes.default
    # (nslookup gets the full name, nc goes through the search path: see services.sh). From
    # the server's pod: a Service whose one endpoint is the agent's pod.
    NAME=kubernetes.default.svc.cluster.local
    resolves() { OUT=$($K exec on-agent -- nslookup $NAME 2>&1); echo "$OUT" | grep -q '^Address: 10\.43\.0\.1$'; }
    T=$(now)
    if ! until_ok 60 resolves; then
      step agent-pod-services FAIL "$NAME from on-agent: $(echo "$OUT" | tr '\n' ' ' | cut -c1-200)"
    else
      API=$($K exec on-agent -- sh -c 'nc -w 3 kubernetes.default 443 </dev/null && echo connected' 2>&1)
      [ "$API" = connected ] \
        && step agent-pod-services ok "from on-agent: $NAME is 10.43.0.1 after $(secs_between "$T" "$(now)")s; kubernetes.default:443 connects" \
        || step agent-pod-services FAIL "$NAME is 10.43.0.1, but kubernetes.default:443: $API"
    fi
    $K expose pod on-agent --name=agent-echo --port=80 --target-port=8080 >/dev/null
    via_service() { OUT=$($K exec on-server -- sh -c "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 agent-echo 80" 2>&1 | tail -n 1); [ "$OUT" = pong-from-the-agent ]; }
    T=$(now)
    until_ok 60 via_service \
      && step svc-to-agent-pod ok "on-server -> agent-echo:80 ($($K get svc agent-echo -o jsonpath='{.spec.clusterIP}')) -> on-agent in $(secs_between "$T" "$(now)")s" \
      || step svc-to-agent-pod FAIL "$OUT"
    $K delete svc agent-echo --wait=false >/dev/null 2>&1
  fi

  # The server restarts; the agent's kubelet reconnects: it renews its lease with the new
  # server and its node is Ready; exec (the server's tunnel to the agent) works again.
  echo "== server stop"; "$BUNDLE/install" stop --data-dir "$D" && step server-stop ok || step server-stop FAIL
  sleep 1
  echo "== server start"; R0=$(now)
  "$BUNDLE/install" start --data-dir "$D" && step server-start ok "API ready again in $(secs_between "$R0" "$(now)")s" || step server-start FAIL
  STARTED=$(date -u +%Y-%m-%dT%H:%M:%S)
  renewed() {
    later "$($K -n kube-node-lease get lease $AGENT_NODE -o jsonpath='{.spec.renewTime}' 2>/dev/null)" "$STARTED" \
      && [ "$($K get node $AGENT_NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
  }
  i=0; while [ $i -lt 60 ] && ! renewed; do sleep 2; i=$((i + 1)); done
  renewed && step agent-reconnected ok "lease renewed and Ready $(secs_between "$R0" "$(now)")s after the server's start" \
    || { step agent-reconnected FAIL "lease $($K -n kube-node-lease get lease $AGENT_NODE -o jsonpath='{.spec.renewTime}' 2>&1) started $STARTED"; $K get nodes; }
  mark agent-reconnected
  OUT=$($K exec on-agent -- cat /www/index.html 2>&1)
  [ "$OUT" = pong-from-the-agent ] && step agent-exec-after-restart ok || step agent-exec-after-restart FAIL "$(echo "$OUT" | tail -n 1)"
  if [ "$MODE" = full ]; then
    # `stop` killed the server's pod: it runs again (new sandbox, maybe new IP) and reaches the
    # agent's pod, which ran on through the restart.
    T=$(now)
    until_ok 120 crosses && step pod-to-pod-after-restart ok "in $(secs_between "$T" "$(now)")s" \
      || step pod-to-pod-after-restart FAIL "$(echo "$OUT" | tail -n 1)"
  fi
  $K delete pod on-agent --wait --timeout=60s >/dev/null && step delete-agent-pod ok || step delete-agent-pod FAIL
  # Deleted before the agent uninstalls: on plain Linux both nodes share /run/netns, and an
  # uninstall removes the pod network namespaces made since its install.
  [ "$MODE" = full ] && $K delete pod on-server --wait --timeout=60s >/dev/null

  put agent-may-stop yes
  wait_for_file agent-uninstalled 300 && step agent-uninstalled ok || step agent-uninstalled FAIL "the agent did not finish within 300 s"
  finish
  AFTER=$(host_files); [ "$BEFORE_FILES" = "$AFTER" ] && step host-files-restored ok || step host-files-restored FAIL "before=[$BEFORE_FILES] after=[$AFTER]"
}

agent() {
  if ! wait_for_file join 600; then
    step join FAIL "no join command from the server: $(cat "$SHARED/abort" 2>/dev/null || echo 'timed out')"
    put agent-uninstalled "never installed"
    return
  fi
  # The k3s way (install.sh's K3S_URL and K3S_TOKEN_FILE); the server printed this form too.
  K3S_URL=$(cat "$SHARED/join"); K3S_TOKEN_FILE="$SHARED/node-token"; export K3S_URL K3S_TOKEN_FILE
  echo "== K3S_URL=$K3S_URL K3S_TOKEN_FILE=$K3S_TOKEN_FILE install --node-name $AGENT_NODE"
  INSTALL_START=$(now)
  if install_stamped --prefix "$P" --data-dir "$D" --node-name $AGENT_NODE; then step install ok; else step install FAIL "rc=$(cat $RUN/install.rc)"; fi
  unset K3S_URL K3S_TOKEN_FILE
  put agent-installed "$(cat $RUN/install.rc)"
  # No process shows the token on its command line (the agent's k3s reads DATA_DIR/agent-token).
  TOKEN=$(cat "$SHARED/node-token")
  SHOWN=$(for c in /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$c" 2>/dev/null | grep -qF "$TOKEN" && echo "${c#/proc/}"; done)
  [ -n "$TOKEN" ] && [ -z "$SHOWN" ] && step token-not-in-ps ok || step token-not-in-ps FAIL "in: $SHOWN"
  mark installed
  READY_AT=$(stamp_of "node is Ready")
  if [ -n "$READY_AT" ]; then
    echo "TIME join-to-ready $(secs_between $INSTALL_START $READY_AT)"
    step join-to-ready ok "node Ready $(secs_between $INSTALL_START $READY_AT)s after ./install --server"
  else
    step join-to-ready FAIL "install never said the node is Ready"
  fi
  KC_MODE=$(busybox stat -c %a "$D/agent-token" 2>/dev/null)
  grep -qF "agent node $AGENT_NODE: joins https://$SERVER_IP:6443 (token in $D/agent-token, mode 0600)" "$RUN/install.out" \
    && [ "$KC_MODE" = 600 ] && step token-file ok "$D/agent-token mode $KC_MODE" || step token-file FAIL "mode ${KC_MODE:-missing}"
  R=$(grep -o 'pod range: [0-9./]*' "$RUN/install.out" | head -n 1)
  echo "$R" | grep -q '^pod range: 10\.42\.[0-9]*\.0/24$' && step pod-range ok "$R" || step pod-range FAIL "${R:-no pod range line}"
  # What status says on an agent; in full mode the route to the server's pods is there too,
  # once node-routes has polled (every 5 s, first right after install returns).
  WANT="node-routes: running"; [ "$MODE" = full ] && WANT="$WANT .* via $SERVER_IP (node $SERVER_NODE)"
  i=0
  while :; do
    S=$("$BUNDLE/install" status --data-dir "$D" 2>&1); RC=$?
    echo "$S" | grep -q "^$WANT" || [ $i -ge 10 ] && break
    sleep 2; i=$((i + 1))
  done
  echo "$S"
  [ $RC = 0 ] && echo "$S" | grep -q "^node $AGENT_NODE: Ready" && echo "$S" | grep -q "^$WANT" \
    && step status ok "$(echo "$S" | grep '^node-routes')" || step status FAIL "rc=$RC $(echo "$S" | grep -e '^node' -e '^k3s' | tr '\n' ' ')"

  sleep 10
  rss
  wait_for_file agent-may-stop 900 || step server-done FAIL "the server did not finish with the agent in 900 s"
  finish
  put agent-uninstalled finished
}

BEFORE_MOUNTS=$(mounts); BEFORE_ADDRESSES=$(addresses); BEFORE_FILES=$(host_files); BEFORE_ROUTES=$(gateway_routes)
if ! extract; then
  [ "$ROLE" = server ] && put abort "the server could not extract the bundle"
  [ "$ROLE" = agent ] && put agent-uninstalled "never installed"
  exit 0
fi
case "$ROLE" in
  server) server ;;
  agent) agent ;;
  *) step role FAIL "ROLE=$ROLE: must be server or agent" ;;
esac
