# k3s's packaged add-ons (issue 24), sourced by scenario.sh in full mode. The steps are the e2e
# driver's (crates/e2e-driver/src/addons.rs: pvc-bound, pvc-data-survives, kubectl-top,
# hpa-scales); what is left here is the helper ingress.sh still uses. Uses $RUN.

# Install's reason for turning add-on $1 off, or nothing when it runs.
addon_off() { sed -n "s/^\[[0-9.]*\] k3s: add-on $1 off[^:]*: //p" "$RUN/install.out" | head -n 1; }
