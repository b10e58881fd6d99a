# Helpers shared by scenario.sh and soak.sh (sourced; POSIX sh, busybox-compatible).
# Needs: TARBALL, RUN. Sets: P (prefix), D (data dir), T0 (start), BUNDLE (after extract).
# D is short: the kubelet's sockets live under it (DATA/kubelet/pod-resources/NNNNNNNNNN) and a
# unix socket's path has at most 107 bytes (install refuses longer: preflight.rs); the longest
# host label, gvisor-current-overlay-memory, went over with `run/data`.
P=$RUN/prefix; D=$RUN/d
T0=$(date +%s.%N)

# Seconds since T0, one decimal.
now() { awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $T0 }"; }
mark() { echo "TIME $1 $(now)"; }
# A step's result; its time since T0 also goes to $RUN/step-times, the run's timeline (where
# the minutes of an e2e run go: BENCHMARKS.md, CI's time).
step() { echo "STEP $1 $2 ${3:-}"; echo "$(now) $1 $2" >> "$RUN/step-times"; }

# The e2e driver (crates/e2e-driver: the assertions in Rust; xtask copies it beside the run as
# E2E_DRIVER) with this run's paths. A driver that fails is a failed step: its own steps would
# otherwise be missing, which fails nothing.
driver() {
  "$E2E_DRIVER" --prefix "$P" --data-dir "$D" --run "$RUN" --bundle "${BUNDLE:-}" --t0 "$T0" "$@" \
    || step driver FAIL "e2e-driver $* exited $?"
}

# Extracts the tarball (.tar.gz or .tar.zst) inside the sandbox, as a user would, and sets
# BUNDLE. GNU tar -xf unpacks either (it runs zstd for the .tar.zst).
extract() {
  mkdir -p "$RUN/bundle" && tar -xf "$TARBALL" -C "$RUN/bundle" || { step extract FAIL "tar -xf $TARBALL"; return 1; }
  BUNDLE=$(echo "$RUN"/bundle/*)
  step extract ok "$BUNDLE from ${TARBALL##*/}"
  mark extracted
}

# The reference of the bundle's image called NAME (from bundle-manifest.json).
image_ref() { jq -r --arg name "$1" 'first(.images[] | select(.name == $name) | .ref) // empty' "$BUNDLE/bundle-manifest.json"; }

# Runs ./install ARGS with each output line prefixed by the seconds since T0 (`driver stamp`:
# one process, where `now` per line spawned two beside the install it timed); the exit status
# is in $RUN/install.rc. The stamped output goes to stdout and $RUN/install.out.
install_stamped() {
  { "$BUNDLE/install" "$@"; echo $? > "$RUN/install.rc"; } 2>&1 | driver stamp | tee "$RUN/install.out"
  return "$(cat "$RUN/install.rc")"
}

# When the stamped install output first printed TEXT: `TIME NAME <seconds>`.
mark_from_install() { t=$(grep -F -m1 "$2" "$RUN/install.out" | sed 's/^\[\([0-9.]*\)\].*/\1/'); [ -n "$t" ] && echo "TIME $1 $t"; }

# Processes running from the prefix or data dir: "pid exe".
ours() { for p in /proc/[0-9]*; do e=$(readlink $p/exe 2>/dev/null) || continue; case "$e" in $P/*|$D/*) echo "${p#/proc/} $e";; esac; done; }

# The pid of the process whose executable is PREFIX/bin/NAME (the daemon, not its launcher).
# The daemon: for k3s, the process running `k3s server` or `k3s agent` (k3s sets its title to
# "PATH/k3s server", one argument), not one of the kubectl or `k3s kubectl` processes (the same
# executable) that the tests and node-routes start all along.
pid_of() {
  # The process its keeper runs (the installer's own record, supervise.rs), if it is NAME
  # itself and not the launcher in front of it.
  k=$(sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p' "$D/run/$1.keeper.json" 2>/dev/null)
  [ -n "$k" ] && [ "$(readlink "/proc/$k/exe" 2>/dev/null)" = "$P/bin/$1" ] && { echo "$k"; return; }
  for p in /proc/[0-9]*; do
    [ "$(readlink $p/exe 2>/dev/null)" = "$P/bin/$1" ] || continue
    if [ "$1" = k3s ]; then
      case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in *"bin/k3s server"* | *"bin/k3s agent"*) ;; *) continue ;; esac
    fi
    echo "${p#/proc/}"; return
  done
}
# The first line of every file the e2e writes outside its run directory (k3s's config files
# under /etc/rancher/k3s): where a sandbox dies before the scripts' cleanup, xtask removes the
# files so marked (xtask/src/sandbox.rs, E2E_FILE_MARK).
E2E_FILE_MARK="# written by the k3s-gvisor e2e"
rss_kb() { awk '/^VmRSS/ {print $2}' /proc/$1/status 2>/dev/null; }

# `RSS <name> <kB>` per program in PREFIX/bin, summed over its processes (the launcher runs
# twice; one shim serves every pod where the installer groups them, containerd 0005).
rss() {
  for p in /proc/[0-9]*; do
    e=$(readlink $p/exe 2>/dev/null) || continue
    case "$e" in $P/bin/*) echo "$(basename "$e") $(rss_kb ${p#/proc/})";; esac
  done | awk '$2 != "" { kb[$1] += $2; n[$1]++ } END { for (k in kb) printf "RSS %s %d %d process(es)\n", k, kb[k], n[k] }' | sort
}

# What the install may change on the host (its mounts, the addresses, the files outside the
# install, the routes) is compared before and after by the driver's teardown
# (crates/e2e-driver/src/teardown.rs: `driver teardown before|stop|uninstall|restored`).

# k3s's error lines (`K3SERR <line>`, xtask checks each is documented) are the driver's
# `k3s-log` (crates/e2e-driver/src/teardown.rs) in every script.
