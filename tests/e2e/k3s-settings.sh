# What a k3s user brings for k3s (issue 23: flags, INSTALL_K3S_EXEC, config files, K3S_*
# variables, the tools in a fresh shell), for scenario.sh in full mode. Sourced; POSIX sh.
# The setup and the assertions are the e2e driver's (crates/e2e-driver/src/settings.rs, steps
# k3s-flags, tls-san, kubeconfig-mode, tools-fresh-shell, status-k3s-settings, daemon-env,
# refused-flag, bad-config-refused, env-kept-across-start, daemon-env-after-start,
# tools-removed); this file only calls it (lib.sh's `driver`).

# Before install: k3s's config files; the variables a k3s user sets and K3S_FLAGS (the flags
# after `--`), from RUN/settings.env.
settings_before_install() {
  # shellcheck source=/dev/null # written by the driver
  driver settings prepare && . "$RUN/settings.env"
}
# Right after install: nothing of this shell is needed any more.
settings_after_install() {
  # shellcheck source=/dev/null # written by the driver
  . "$RUN/settings-unset.env"
}
settings_steps() { driver settings steps; }
settings_before_restart() { driver settings before-restart; }
settings_after_restart() { driver settings after-restart; }
settings_cleanup() { driver settings cleanup; }
