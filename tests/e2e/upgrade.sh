# Upgrade in place, sourced by scenario.sh (full mode, k3s running) before the final stop and
# uninstall: the steps upgrade, upgrade-keeps-state, upgrade-status and downgrade-refused are the
# e2e driver's (crates/e2e-driver/src/upgrade.rs, which says what each checks). TARBALL_NEXT is
# the same bundle with the next version (`cargo xtask e2e` builds it from a copy of bundle.toml
# with gvisor.N+1); the driver extracts it under RUN/bundle-next. Then BUNDLE is the new bundle:
# the old one's installer would be a downgrade, and the scenario's stop and uninstall use what a
# user would, the installed version's.
upgrade_steps() {
  driver upgrade --next "${TARBALL_NEXT:-}"
  for NEXT in "$RUN"/bundle-next/*; do [ -x "$NEXT/install" ] && BUNDLE=$NEXT; done
}
