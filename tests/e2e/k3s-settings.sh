# What a k3s user brings for k3s (issue 23: flags, INSTALL_K3S_EXEC, config files, K3S_*
# variables, the tools in a fresh shell), for scenario.sh in full mode. Sourced; POSIX sh.
# Needs: P, D, RUN, BUNDLE (lib.sh), K (kubectl with the admin kubeconfig).
#
# The e2e shares the host's root filesystem: what this writes outside RUN (k3s's config files
# under /etc/rancher/k3s) is removed again by settings_cleanup, before the host check.

SETTINGS_ETC=/etc/rancher/k3s
# Which of /etc/rancher and /etc/rancher/k3s this test made (to remove exactly those).
SETTINGS_MADE=""
# A clean environment, as a new shell in a sandbox has it.
CLEAN_ENV="env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Before install: k3s's config file and a drop-in, the variables a k3s user sets, and one that
# must not reach the daemons. Sets K3S_FLAGS (the flags after `--`).
settings_before_install() {
  for d in /etc/rancher $SETTINGS_ETC $SETTINGS_ETC/config.yaml.d; do
    [ -e "$d" ] || { mkdir "$d" && SETTINGS_MADE="$d $SETTINGS_MADE"; }
  done
  printf '%s\nnode-label:\n  - e2e-config=yes\n' "$E2E_FILE_MARK" > $SETTINGS_ETC/config.yaml
  printf '%s\nnode-label+:\n  - e2e-dropin=yes\n' "$E2E_FILE_MARK" > $SETTINGS_ETC/config.yaml.d/50-e2e.yaml
  INSTALL_K3S_EXEC="--node-label e2e-exec=yes"
  K3S_KUBECONFIG_MODE=644
  # A server's K3S_TOKEN is its cluster secret: recorded, passed at every start, masked in status.
  K3S_TOKEN=e2e-cluster-secret
  E2E_NOT_FOR_DAEMONS=leaked
  # k3s's variable for a proxy for image pulls only; images.sh starts the proxy and pulls.
  E2E_PROXY_PORT=3128
  CONTAINERD_HTTPS_PROXY=http://127.0.0.1:$E2E_PROXY_PORT
  export INSTALL_K3S_EXEC K3S_KUBECONFIG_MODE K3S_TOKEN E2E_NOT_FOR_DAEMONS CONTAINERD_HTTPS_PROXY
  K3S_FLAGS="-- --node-label e2e-flag=yes --tls-san e2e.example"
}

# Right after install: nothing of this shell is needed any more.
settings_after_install() {
  unset INSTALL_K3S_EXEC K3S_KUBECONFIG_MODE K3S_TOKEN E2E_NOT_FOR_DAEMONS CONTAINERD_HTTPS_PROXY
}

settings_steps() {
  # Every source of node labels reached k3s: `--`, INSTALL_K3S_EXEC, config.yaml, config.yaml.d.
  L=$($K get node -o jsonpath='{.items[0].metadata.labels}' 2>&1)
  MISSING=
  for l in e2e-flag e2e-exec e2e-config e2e-dropin; do
    echo "$L" | grep -q "\"$l\":\"yes\"" || MISSING="$MISSING $l"
  done
  [ -z "$MISSING" ] && step k3s-flags ok "node labels from --, INSTALL_K3S_EXEC, config.yaml, config.yaml.d" \
    || step k3s-flags FAIL "missing:$MISSING"
  SAN=$(openssl s_client -connect 127.0.0.1:6443 -servername e2e.example </dev/null 2>/dev/null \
    | openssl x509 -noout -ext subjectAltName 2>/dev/null | tr -d ' \n')
  echo "$SAN" | grep -q 'DNS:e2e.example' && step tls-san ok "the API's certificate names e2e.example" \
    || step tls-san FAIL "SAN: $SAN"

  # K3S_KUBECONFIG_MODE=644: readable by a normal user, through the wrapper, from a fresh shell.
  KC_MODE=$(busybox stat -c %a "$D/kubeconfig.yaml" 2>/dev/null)
  OUT=$(env -i HOME=/tmp PATH=/usr/local/bin:/usr/bin:/bin setpriv --reuid=65534 --regid=65534 --clear-groups kubectl get nodes -o name 2>&1)
  [ "$KC_MODE" = 644 ] && echo "$OUT" | grep -q '^node/' \
    && step kubeconfig-mode ok "mode 644; user nobody: $OUT" || step kubeconfig-mode FAIL "mode $KC_MODE; nobody: $(echo "$OUT" | tail -n 1)"

  OUT=$($CLEAN_ENV sh -c 'for t in kubectl crictl ctr; do printf "%s " "$(command -v $t)"; done; kubectl get nodes -o name && crictl ps -q >/dev/null && ctr images ls -q >/dev/null' 2>&1)
  echo "$OUT" | grep -q '^/usr/local/bin/kubectl /usr/local/bin/crictl /usr/local/bin/ctr node/' \
    && step tools-fresh-shell ok "$OUT" || step tools-fresh-shell FAIL "$(echo "$OUT" | tail -n 2 | tr '\n' ' ')"

  S=$("$BUNDLE/install" status --data-dir "$D" 2>&1)
  STATE_MODE=$(busybox stat -c %a "$D/state.json" 2>/dev/null)
  echo "$S" | grep -qF 'k3s flags: --node-label=e2e-exec=yes --node-label=e2e-flag=yes --tls-san=e2e.example' \
    && echo "$S" | grep -qF "k3s config file: $SETTINGS_ETC/config.yaml (node-label)" \
    && echo "$S" | grep -qF "k3s config file: $SETTINGS_ETC/config.yaml.d/50-e2e.yaml (node-label)" \
    && echo "$S" | grep -q '^k3s environment: .*K3S_KUBECONFIG_MODE=644' \
    && echo "$S" | grep -q '^k3s environment: .*K3S_TOKEN=\*\*\*\*\*\*\*\*' \
    && ! echo "$S" | grep -q 'e2e-cluster-secret\|E2E_NOT_FOR_DAEMONS' && [ "$STATE_MODE" = 600 ] \
    && step status-k3s-settings ok "flags, config files, variables (token masked), state.json 600" \
    || step status-k3s-settings FAIL "state.json $STATE_MODE; $(echo "$S" | grep '^k3s ' | tr '\n' ' ')"

  daemon_env_step daemon-env

  # Refused before anything is written: a flag the installer sets, a config key k3s lacks.
  OUT=$("$BUNDLE/install" --prefix "$RUN/p2" --data-dir "$RUN/d2" -- --data-dir /srv/k3s 2>&1); RC=$?
  [ $RC != 0 ] && echo "$OUT" | grep -qF -- '--data-dir is set by the installer' && echo "$OUT" | grep -qF './install --data-dir' \
    && [ ! -e "$RUN/p2" ] && [ ! -e "$RUN/d2" ] \
    && step refused-flag ok "$(echo "$OUT" | tail -n 1 | cut -c1-160)" || step refused-flag FAIL "rc=$RC $(echo "$OUT" | tail -n 1)"
  printf '%s\ntls-san: [x]\nnode-lable: oops\n' "$E2E_FILE_MARK" > $SETTINGS_ETC/config.yaml.d/60-bad.yaml
  OUT=$("$BUNDLE/install" --prefix "$RUN/p2" --data-dir "$RUN/d2" 2>&1); RC=$?
  rm -f $SETTINGS_ETC/config.yaml.d/60-bad.yaml
  [ $RC != 0 ] && echo "$OUT" | grep -qF "$SETTINGS_ETC/config.yaml.d/60-bad.yaml:3: k3s server has no flag --node-lable" \
    && [ ! -e "$RUN/p2" ] && step bad-config-refused ok "$(echo "$OUT" | tail -n 1 | cut -c1-160)" \
    || step bad-config-refused FAIL "rc=$RC $(echo "$OUT" | tail -n 1)"
}

# k3s's environment is exactly the recorded one: K3S_KUBECONFIG_MODE in, the installer shell's
# other variables out.
daemon_env_step() {
  KP=$(pid_of k3s)
  E=$(tr '\0' '\n' < /proc/${KP:-0}/environ 2>/dev/null | cut -d= -f1 | sort | tr '\n' ' ')
  tr '\0' '\n' < /proc/${KP:-0}/environ 2>/dev/null | grep -qx 'K3S_KUBECONFIG_MODE=644' \
    && ! echo "$E" | grep -q 'E2E_NOT_FOR_DAEMONS\|INSTALL_K3S_EXEC' \
    && step "$1" ok "k3s (pid $KP) has: $E" || step "$1" FAIL "k3s (pid ${KP:-none}) has: $E"
}

# Before `start` from a clean shell: undo what only k3s's recorded K3S_KUBECONFIG_MODE redoes.
settings_before_restart() { chmod 600 "$D/kubeconfig.yaml"; }

settings_after_restart() {
  KC_MODE=$(busybox stat -c %a "$D/kubeconfig.yaml" 2>/dev/null)
  [ "$KC_MODE" = 644 ] && step env-kept-across-start ok "kubeconfig mode 644 again after start from a clean shell" \
    || step env-kept-across-start FAIL "kubeconfig mode $KC_MODE"
  daemon_env_step daemon-env-after-start
}

# After uninstall: the wrappers are gone; remove the config files and the dirs this test made.
settings_cleanup() {
  L=$(grep -l 'k3s-gvisor tool wrapper' /usr/local/bin/kubectl /usr/local/bin/crictl /usr/local/bin/ctr 2>/dev/null | tr '\n' ' ')
  [ -z "$L" ] && step tools-removed ok || step tools-removed FAIL "left: $L"
  rm -f $SETTINGS_ETC/config.yaml $SETTINGS_ETC/config.yaml.d/50-e2e.yaml
  for d in $SETTINGS_MADE; do rmdir "$d" 2>/dev/null; done
}
