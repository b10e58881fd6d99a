# The install's own modes and mounts, sourced by scenario.sh. (The kills of each daemon that
# used to be here are the e2e driver's: crates/e2e-driver/src/faults.rs, `driver faults`.)

# Issue 25, the install's own modes: scenario.sh runs the install under `umask 000` (a umask a
# user's shell may have); the installer sets umask 022 itself and explicit modes.
#   umask-modes: prefix and PREFIX/bin 755, data dir 700 (711 where K3S_KUBECONFIG_MODE=644 lets
#   others read the kubeconfig inside it: search only), state.json 600.
umask_modes_step() {
  # 711 only once k3s wrote the kubeconfig there (an install that failed earlier keeps 700).
  DM=700; [ "${K3S_KUBECONFIG_MODE:-}" = 644 ] && [ -f "$D/kubeconfig.yaml" ] && DM=711
  # busybox stat: Debian's 2022 gVisor answers coreutils' statx with EINVAL.
  M=$(busybox stat -c %a "$P" "$P/bin" "$D" "$D/state.json" 2>&1 | tr '\n' ' ')
  [ "$M" = "755 755 $DM 600 " ] \
    && step umask-modes ok "installed under umask 000: $P, $P/bin 755; $D $DM; state.json 600" \
    || step umask-modes FAIL "modes of $P, $P/bin, $D, $D/state.json: $M"
}

# Issue 25, uninstall never crosses a mount: bind mounts under DATA/kubelet that point outside
# the install, as the kubelet's hostPath and subPath volumes do: one plain, one stacked twice on
# one point, one kept busy by a process whose cwd is in it. Every outside file must survive.
#   uninstall-keeps-outside-files: binds_before_uninstall, then uninstall, then
#   binds_after_uninstall (before mounts-restored, which these mounts must not disturb).
binds_before_uninstall() {
  BINDS=$D/kubelet/e2e-binds; OUTSIDE=$RUN/outside; BIND_ERR=; BUSY_PID=
  for n in plain lower upper busy; do
    mkdir -p "$OUTSIDE/$n" && echo "$n" > "$OUTSIDE/$n/keep-me" || BIND_ERR="$BIND_ERR outside-$n"
  done
  mkdir -p "$BINDS/plain" "$BINDS/stacked" "$BINDS/busy" || BIND_ERR="$BIND_ERR mkdir"
  mount --bind "$OUTSIDE/plain" "$BINDS/plain" || BIND_ERR="$BIND_ERR plain"
  { mount --bind "$OUTSIDE/lower" "$BINDS/stacked" && mount --bind "$OUTSIDE/upper" "$BINDS/stacked"; } \
    || BIND_ERR="$BIND_ERR stacked"
  mount --bind "$OUTSIDE/busy" "$BINDS/busy" || BIND_ERR="$BIND_ERR busy"
  (cd "$BINDS/busy" && exec sleep 600) & BUSY_PID=$!
  BIND_COUNT=$(grep -c " $BINDS/" /proc/self/mountinfo)
}

binds_after_uninstall() {
  LOST=
  for n in plain lower upper busy; do
    [ "$(cat "$OUTSIDE/$n/keep-me" 2>/dev/null)" = "$n" ] || LOST="$LOST $n"
  done
  LEFT=$(grep " $BINDS/" /proc/self/mountinfo | cut -d' ' -f5 | tr '\n' ' ')
  [ -n "$BUSY_PID" ] && { kill "$BUSY_PID" 2>/dev/null; wait "$BUSY_PID" 2>/dev/null; }
  # Whatever uninstall left mounted goes now, so that the next steps see the host as before.
  i=0; while [ $i -lt 5 ] && grep -q " $BINDS/" /proc/self/mountinfo; do
    for m in $(grep " $BINDS/" /proc/self/mountinfo | cut -d' ' -f5 | sort -r); do umount -l "$m"; done
    i=$((i + 1))
  done
  if [ -n "$BIND_ERR" ] || [ "$BIND_COUNT" != 4 ]; then
    step uninstall-keeps-outside-files FAIL "set-up failed:$BIND_ERR ($BIND_COUNT of 4 mounts)"
  elif [ -z "$LOST" ] && [ -z "$LEFT" ]; then
    step uninstall-keeps-outside-files ok "4 bind mounts under $BINDS (plain, stacked twice, busy as cwd of pid $BUSY_PID): every outside file intact, none left mounted"
  else
    step uninstall-keeps-outside-files FAIL "outside files lost:${LOST:- none}; still mounted: ${LEFT:-none}"
  fi
}
