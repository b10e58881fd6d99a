#!/bin/sh
# The end-to-end scenario `cargo xtask e2e` runs, unchanged, on the host and inside gVisor.
# Input (environment): TARBALL (the bundle), RUN (a fresh directory), MODE (full |
# control-plane-only), CRICTL (a crictl binary, for bundles without k3s), E2E_LIB (lib.sh),
# TARBALL_NEXT (the same bundle with the next version, for upgrade.sh; full mode).
# Output, parsed by xtask: `STEP <name> <ok|FAIL|BLOCKED> [detail]` per step, `TIME <mark>
# <seconds since start>` (the start is before extracting the tarball), `RSS <program> <kB>` at
# idle, and `K3SERR <line>` for each error line in k3s's log (each must be documented).
set -u
# shellcheck source=tests/e2e/lib.sh
. "$E2E_LIB"
# shellcheck source=tests/e2e/k3s-settings.sh
. "$(dirname "$E2E_LIB")/k3s-settings.sh"
# shellcheck source=tests/e2e/upgrade.sh
. "$(dirname "$E2E_LIB")/upgrade.sh"

# What the host has before the install, for the teardown's steps (the driver's teardown.rs).
driver teardown before
extract || exit 0
K3S=no
jq -e 'any(.components[].outputs[]; .path == "bin/k3s")' "$BUNDLE/bundle-manifest.json" >/dev/null && K3S=yes

echo "== doctor (before install)"; "$BUNDLE/install" doctor --bundle "$BUNDLE"
ARGS=""; [ "$MODE" = control-plane-only ] && ARGS="--control-plane-only"
if [ $K3S = no ] && [ "$MODE" = control-plane-only ]; then
  driver scenario no-k3s --mode "$MODE"
  exit 0
fi
# Full mode installs as a k3s user would, with flags, config files and K3S_* variables.
K3S_FLAGS=""; [ $K3S = yes ] && [ "$MODE" = full ] && settings_before_install
echo "== install $ARGS $K3S_FLAGS"
INSTALL_START=$(now)
# Under umask 000, which the installer must not pass on (umask-modes: the driver's mounts.rs).
# shellcheck disable=SC2086 # ARGS and K3S_FLAGS are lists of words.
(umask 000; install_stamped --prefix "$P" --data-dir "$D" $ARGS $K3S_FLAGS)
[ -n "$K3S_FLAGS" ] && settings_after_install
# The driver's steps on the install just run (crates/e2e-driver/src/scenario.rs says what each
# checks): install (RUN/install.rc), umask-modes, the TIME marks, how soon the node was Ready.
KC644=; [ -n "$K3S_FLAGS" ] && KC644=--kubeconfig-644
driver scenario installed --mode "$MODE" --install-start "$INSTALL_START" $KC644

if [ $K3S = yes ] && [ "$(cat $RUN/install.rc)" != 0 ]; then
  # Debian's 2022 gVisor in full mode: nothing that needs a running k3s can pass; the gaps are
  # in doctor's output above.
  driver scenario k3s-failed
elif [ $K3S = yes ]; then
  driver scenario checks --mode "$MODE" $KC644
  if [ "$MODE" = full ]; then
    settings_steps

    # Idle: what a user's sandbox keeps paying for.
    sleep 15
    rss

    # stop, then start: the node comes back Ready and the same pods run again (new containers).
    driver addons before-stop
    driver scenario stop
    # From a clean shell: k3s gets the variables recorded at install, nothing else.
    settings_before_restart
    driver scenario start
    settings_after_restart
    driver scenario back
    driver services
    driver images --http-proxy "$(dirname "$E2E_LIB")/http-proxy.py"
    driver addons steps
    driver helm
    driver ingress
    driver addons hpa
    driver faults
    driver scenario delete
  fi
  driver k3s-log
else
  # Without k3s (full mode): the runtime path k3s would drive, through the CRI with crictl.
  driver scenario no-k3s --mode "$MODE" --crictl "${CRICTL:-}"
  rss
fi
driver scenario second-install --mode "$MODE"
[ "$MODE" = full ] && [ $K3S = yes ] && [ "$(cat $RUN/install.rc)" = 0 ] && upgrade_steps
# The teardown two-nodes.sh ends with too (crates/e2e-driver/src/teardown.rs), with this
# scenario's own steps in between: the bind mounts around the uninstall (uninstall-keeps-
# outside-files: crates/e2e-driver/src/mounts.rs), the settings' cleanup before the host files
# are compared.
driver teardown stop
driver mounts before-uninstall
driver teardown uninstall
driver mounts after-uninstall
driver teardown restored mounts addresses
[ -n "$K3S_FLAGS" ] && settings_cleanup
driver teardown restored host-files nothing-left
