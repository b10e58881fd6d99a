# Upgrade in place, sourced by scenario.sh (full mode, k3s running) before the final stop and
# uninstall. TARBALL_NEXT is the same bundle with the next version (`cargo xtask e2e` builds it
# from a copy of bundle.toml with gvisor.N+1). As k3s is upgraded by running its install.sh
# again with a newer INSTALL_K3S_VERSION, the new bundle's ./install runs over the install:
#   upgrade              ./install from the new bundle with the same --prefix/--data-dir: ok,
#                        its output names the old and the new version, PREFIX.previous is gone;
#   upgrade-keeps-state  a ConfigMap and a Deployment made before it are there after it (the
#                        Deployment's pod runs again, started after the upgrade), and the node
#                        is the same node (metadata.uid);
#   upgrade-status       status shows the new version, and the prefix holds its manifest;
#   downgrade-refused    the old bundle's ./install now refuses, naming both versions and
#                        --force, and changes nothing: the new version still runs, same k3s pid.
# Then BUNDLE is the new bundle: the old one's installer would be a downgrade, and the
# scenario's stop and uninstall use what a user would, the installed version's.
# Uses $K, $BUSYBOX, $BUNDLE, $P, $D, $RUN from scenario.sh; prints STEP, TIME and K3SERR lines.

# k3s's log lines from line $1 on that are errors, as K3SERR (each must be documented).
k3s_errors_from() {
  tail -n "+$1" "$D/logs/k3s.log" 2>/dev/null | grep -E 'level=(error|fatal)|^[EF][0-9]{4} ' | sed 's/^/K3SERR /'
}

upgrade_steps() {
  if [ -z "${TARBALL_NEXT:-}" ]; then
    step upgrade FAIL "no TARBALL_NEXT: cargo xtask e2e builds the next bundle and passes it"
    return
  fi
  mkdir -p "$RUN/bundle-next" && tar -xzf "$TARBALL_NEXT" -C "$RUN/bundle-next" \
    || { step upgrade FAIL "tar -xzf $TARBALL_NEXT"; return; }
  NEXT=$(echo "$RUN"/bundle-next/*)
  OLD_V=$(jq -r .version "$BUNDLE/bundle-manifest.json"); NEW_V=$(jq -r .version "$NEXT/bundle-manifest.json")
  NODE=$($K get nodes -o jsonpath='{.items[0].metadata.name}')
  NODE_UID=$($K get node "$NODE" -o jsonpath='{.metadata.uid}')
  $K create configmap upgrade-kept --from-literal=installed-with="$OLD_V"
  $K create deployment upgrade-web --image="$BUSYBOX" --replicas=1 -- sleep 3600
  $K wait --for=condition=Available deployment/upgrade-web --timeout=120s >/dev/null \
    || echo "upgrade-web not Available before the upgrade"
  LOG_LINES=$(($(wc -l < "$D/logs/k3s.log") + 1))

  echo "== upgrade: $NEXT/install over $OLD_V"
  UPGRADED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ); U0=$(now)
  OUT=$("$NEXT/install" --prefix "$P" --data-dir "$D" 2>&1); RC=$?
  echo "$OUT"
  SECS=$(awk "BEGIN { printf \"%.1f\", $(now) - $U0 }")
  CHANGED=$(echo "$OUT" | sed -n '/^upgraded k3s-gvisor /,$p' | grep -v -e '^upgraded' -e '(unchanged)' | sed 's/^ *//' | tr '\n' ';')
  [ $RC = 0 ] && echo "$OUT" | grep -qF "upgraded k3s-gvisor $OLD_V to $NEW_V:" && [ ! -e "$P.previous" ] \
    && step upgrade ok "$OLD_V -> $NEW_V in ${SECS}s; changed: $CHANGED" \
    || step upgrade FAIL "rc=$RC $(echo "$OUT" | tail -n 1)"
  mark upgraded

  # The Deployment's pod was stopped with everything else: wait for it to run again.
  web_back() {
    $K get pods -l app=upgrade-web -o jsonpath='{range .items[*]}{.status.containerStatuses[0].state.running.startedAt}{"\n"}{end}' \
      | awk -v t="$UPGRADED_AT" 'BEGIN { ok = 0 } $0 != "" && $0 >= t { ok = 1 } END { exit !ok }'
  }
  i=0; while [ $i -lt 60 ] && ! web_back; do sleep 2; i=$((i + 1)); done
  KEPT=$($K get configmap upgrade-kept -o jsonpath='{.data.installed-with}' 2>&1)
  AVAILABLE=no
  web_back && $K wait --for=condition=Available deployment/upgrade-web --timeout=60s >/dev/null && AVAILABLE=yes
  UID_AFTER=$($K get node "$NODE" -o jsonpath='{.metadata.uid}' 2>&1)
  [ "$KEPT" = "$OLD_V" ] && [ $AVAILABLE = yes ] && [ -n "$NODE_UID" ] && [ "$UID_AFTER" = "$NODE_UID" ] \
    && step upgrade-keeps-state ok "ConfigMap kept, Deployment Available again, node $NODE uid $NODE_UID" \
    || { step upgrade-keeps-state FAIL "configmap=[$KEPT] deployment available=$AVAILABLE node uid before=[$NODE_UID] after=[$UID_AFTER]"; $K get pods -o wide; }

  S=$("$NEXT/install" status --data-dir "$D" 2>&1); RC=$?
  echo "$S"
  INSTALLED=$(jq -r .version "$P/bundle-manifest.json")
  [ $RC = 0 ] && echo "$S" | head -n 1 | grep -qF "k3s-gvisor $NEW_V at $P" && [ "$INSTALLED" = "$NEW_V" ] \
    && step upgrade-status ok "$(echo "$S" | head -n 1)" \
    || step upgrade-status FAIL "rc=$RC [$(echo "$S" | head -n 1)] prefix manifest $INSTALLED"

  K3S_PID=$(pid_of k3s)
  OUT=$("$BUNDLE/install" --prefix "$P" --data-dir "$D" 2>&1); RC=$?
  echo "$OUT"
  S=$("$NEXT/install" status --data-dir "$D" 2>&1); SRC=$?
  [ $RC != 0 ] && echo "$OUT" | grep -q "refusing to downgrade" && echo "$OUT" | grep -qF "$OLD_V" \
    && echo "$OUT" | grep -qF "$NEW_V" && echo "$OUT" | grep -qF -- "--force" \
    && [ $SRC = 0 ] && echo "$S" | head -n 1 | grep -qF "k3s-gvisor $NEW_V at $P" && [ "$(pid_of k3s)" = "$K3S_PID" ] \
    && step downgrade-refused ok "$(echo "$OUT" | tail -n 1 | cut -c1-140)" \
    || step downgrade-refused FAIL "rc=$RC status rc=$SRC k3s pid $K3S_PID -> $(pid_of k3s): $(echo "$OUT" | tail -n 1)"

  $K delete deployment upgrade-web >/dev/null; $K delete configmap upgrade-kept >/dev/null
  k3s_errors_from "$LOG_LINES"
  BUNDLE=$NEXT
}
