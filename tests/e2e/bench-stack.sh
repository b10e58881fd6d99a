# `cargo xtask bench --stack`: what the installed stack costs the programs it runs, each figure
# against a baseline measured in the same run. Sourced by a wrapper that sets TARBALL, RUN,
# E2E_LIB, LOOPS (a directory holding the static syscall_loops), ROUNDS, N_SYSCALL, N_OPEN,
# IDLE_SECONDS, WHAT (pods | k3s-idle | addons | memory | images), MEMORY_SETS (memory), IMAGE,
# IMAGE_REF, REPLICAS (images). Prints `BENCH <name> <value>` lines for xtask.
#
# pods: the syscall loop and the open loop in a pod of the installed k3s (kubectl exec),
#   against the same loops in a container that containerd starts with no launcher anywhere
#   (ctr run, same image, same snapshotter), and under the launcher (what a traced pod paid
#   when containerd ran under it). Rounds interleave the runners; xtask keeps the best.
# k3s-idle: k3s's CPU seconds per minute with the node Ready and idle, installed with
#   `--launcher auto` (k3s runs directly: in gVisor the missing /proc/sys files are laid over
#   /proc/sys) and with `--launcher always`, alternating per round.
# addons: idle memory with k3s's add-ons on (its defaults) and off (its --disable), alternating
#   per round, and the bundle's gzip size with and without them.
# images: a large multi-layer image (IMAGE, made by xtask) imported and run by a Deployment
#   scaled 1 -> REPLICAS, with the data dir where the sandbox puts it and on a tmpfs mounted in
#   the sandbox; where containerd's overlayfs snapshotter loads, native against overlayfs with
#   `ctr run` in the same install; whether an overlay mount is taken at each place.
. "$E2E_LIB"
fail() { echo "BENCHFAIL $*"; [ -f "$D/logs/k3s.log" ] && tail -n 20 "$D/logs/k3s.log"; exit 1; }
extract >/dev/null || fail "cannot extract $TARBALL"

# Installs with ARGS, waits for node Ready; sets K.
up() {
  "$BUNDLE/install" --prefix "$P" --data-dir "$D" "$@" > "$RUN/install.out" 2>&1 \
    || { cat "$RUN/install.out"; fail "install $*"; }
  K="$P/bin/kubectl --kubeconfig $D/kubeconfig.yaml"
  $K wait --for=condition=Ready node --all --timeout=120s >/dev/null || fail "node not Ready"
}
down() { "$BUNDLE/install" uninstall --data-dir "$D" > "$RUN/uninstall.out" 2>&1 || { cat "$RUN/uninstall.out"; fail uninstall; }; }

# utime+stime of the PIDs, summed, in clock ticks (fields 14 and 15 of /proc/PID/stat; the
# comms here, k3s and launcher, have no spaces).
cpu_ticks() { for pid in "$@"; do cat "/proc/$pid/stat"; done | awk '{ t += $14 + $15 } END { print t }'; }

# Until every pod is Running and Ready or Completed (a HelmChart's install Job), at most 300 s.
wait_settled() {
  t_end=$(( $(date +%s) + 300 ))
  until $K get pods -A --no-headers 2>/dev/null | awk '
      { split($3, r, "/"); if (!($4 == "Completed" || ($4 == "Running" && r[1] == r[2]))) bad++; n++ }
      END { exit !(n > 0 && bad == 0) }'; do
    [ "$(date +%s)" -ge $t_end ] && { $K get pods -A; fail "$1: pods not settled in 300 s"; }
    sleep 2
  done
}

# Before ./install: the processes already running (on plain Linux, the host's own).
note_pids() { ls /proc | grep -E '^[0-9]+$' > "$RUN/pids-before"; }

# `BENCH rss-NAME MiB`: the RSS of every process started since note_pids (daemons, shims and
# pods; shared pages count once per process, on every side alike), and k3s's own as
# `BENCH k3s-rss-NAME`; the biggest programs for the log. FILE (default NAME) names the list
# kept in RUN.
rss_since_install() {
  f="$RUN/rss-${2:-$1}"
  for p in /proc/[0-9]*; do
    grep -qx "${p#/proc/}" "$RUN/pids-before" && continue
    awk -v c="$(cat $p/comm 2>/dev/null)" '/^VmRSS/ { print c, $2 }' $p/status 2>/dev/null
  done > "$f"
  echo "BENCH rss-$1 $(awk '{ kb += $2 } END { printf "%.1f", kb / 1024 }' "$f")"
  echo "BENCH k3s-rss-$1 $(awk '$1 == "k3s" { kb += $2 } END { printf "%.1f", kb / 1024 }' "$f")"
  awk '{ kb[$1] += $2 } END { for (c in kb) printf "%s %.0f\n", c, kb[c] / 1024 }' "$f" | sort -k2 -nr | head -n 8 | sed "s/^/RSS-$1 MiB /"
}

# Where the memory of the list rss_since_install NAME FILE kept is, for K3S_PID:
# - `issue-rss-NAME`: the processes issue 27 counts (k3s, every containerd-shim-runc-v2 (comm
#   `containerd-shim`), containerd, svcproxy, the keepers and node-routes (`installer`), the
#   launcher), and
#   `containerd-rss`, `shims-rss`, `containerd-and-shims`, `shims`, `pods` (Running; one shim
#   serves them all where the installer groups them, containerd 0005);
# - k3s's RSS by mapping from /proc/PID/smaps (gVisor's status has no RssAnon/RssFile):
#   `k3s-file` (its binary's mappings), `k3s-anon` (anonymous: heap, stacks), `k3s-other`;
#   the same for the first shim (`shim-file`, `shim-anon`);
# - the sandbox's /proc/meminfo: `meminfo-used` (MemTotal - MemFree), `meminfo-anon`
#   (AnonPages: every process's anonymous memory as the kernel, here gVisor's sentry, holds it,
#   not as VmRSS counts it; `meminfo-anon0` before ./install), `meminfo-cached`.
memory_breakdown() {
  f="$RUN/rss-$2"
  awk -v s="$1" '
    $1 == "k3s" || $1 == "containerd" || $1 == "containerd-shim" || $1 == "svcproxy" || $1 == "keeper" || $1 == "installer" || $1 == "launcher" { kb += $2 }
    $1 == "containerd" { c += $2 } $1 == "containerd-shim" { sh += $2; n++ }
    END { printf "BENCH issue-rss-%s %.1f\nBENCH containerd-rss-%s %.1f\nBENCH shims-rss-%s %.1f\nBENCH shims-%s %d\nBENCH containerd-and-shims-%s %.1f\n",
      s, kb / 1024, s, c / 1024, s, sh / 1024, s, n, s, (c + sh) / 1024 }' "$f"
  echo "BENCH pods-$1 $($K get pods -A --no-headers --field-selector=status.phase=Running | wc -l)"
  smaps_split() {  # PID PREFIX SET
    awk -v bin="$(readlink "/proc/$1/exe")" -v pre="$2" -v s="$3" '
      /^[0-9a-f]+-[0-9a-f]+ / { path = $6; kind = (path == bin) ? "file" : (path == "" || path ~ /^\[(heap|stack|anon)/) ? "anon" : "other"; next }
      $1 == "Rss:" { kb[kind] += $2 }
      END { printf "BENCH %s-file-%s %.1f\nBENCH %s-anon-%s %.1f\nBENCH %s-other-%s %.1f\n", pre, s, kb["file"] / 1024, pre, s, kb["anon"] / 1024, pre, s, kb["other"] / 1024 }' "/proc/$1/smaps"
  }
  smaps_split "$3" k3s "$1"
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = containerd-shim ] || continue
    smaps_split "${p#/proc/}" shim "$1"
    break
  done
  awk -v s="$1" '{ v[$1] = $2 } END {
    printf "BENCH meminfo-used-%s %.1f\nBENCH meminfo-anon-%s %.1f\nBENCH meminfo-cached-%s %.1f\n", s, (v["MemTotal:"] - v["MemFree:"]) / 1024, s, v["AnonPages:"] / 1024, s, v["Cached:"] / 1024 }' /proc/meminfo
}

if [ "$WHAT" = pods ]; then
  up
  BUSYBOX=$(image_ref busybox)
  $K apply -f - >/dev/null <<YAML || fail "cannot create the loops pod"
apiVersion: v1
kind: Pod
metadata: {name: loops}
spec:
  containers:
  - name: loops
    image: $BUSYBOX
    imagePullPolicy: Never
    command: [sleep, "3600"]
    volumeMounts: [{name: loops, mountPath: /bench, readOnly: true}]
  volumes: [{name: loops, hostPath: {path: $LOOPS}}]
YAML
  $K wait --for=condition=Ready pod/loops --timeout=120s >/dev/null || fail "loops pod not Ready"
  echo "BENCH pod-status $($K exec loops -- sh -c 'grep -E "^(TracerPid|Seccomp):" /proc/self/status' | tr -s '\t ' ' ' | tr '\n' ';')"
  eval "$(grep -m1 -o 'export PATH=.*' "$RUN/install.out")"
  SNAP=$(jq -r .snapshotter "$D/state.json")
  ctr_loop() {
    ctr -n k8s.io run --rm --snapshotter "$SNAP" --mount "type=bind,src=$LOOPS,dst=/bench,options=rbind:ro" \
      "$BUSYBOX" "bench-$$" /bench/syscall_loops "$@" | awk '{ print $2 }'
  }
  # The open loop opens a file of the image in both containers: same snapshotter, same layer.
  for r in $(seq "$ROUNDS"); do
    echo "BENCH pod-getppid $($K exec loops -- /bench/syscall_loops getppid "$N_SYSCALL" | awk '{ print $2 }')"
    echo "BENCH container-getppid $(ctr_loop getppid "$N_SYSCALL")"
    echo "BENCH launcher-getppid $("$P/bin/launcher" --procsys "$P/procsys" -- "$LOOPS/syscall_loops" getppid "$N_SYSCALL" | awk '{ print $2 }')"
    echo "BENCH pod-open $($K exec loops -- /bench/syscall_loops open /bin/busybox "$N_OPEN" | awk '{ print $2 }')"
    echo "BENCH container-open $(ctr_loop open /bin/busybox "$N_OPEN")"
    # Outside any container, under the launcher: the loop opens its own binary.
    echo "BENCH launcher-open $("$P/bin/launcher" --procsys "$P/procsys" -- "$LOOPS/syscall_loops" open "$LOOPS/syscall_loops" "$N_OPEN" | awk '{ print $2 }')"
  done
  down
elif [ "$WHAT" = k3s-idle ]; then
  HZ=$(getconf CLK_TCK)
  for r in $(seq "$ROUNDS"); do
    for use in auto always; do
      up --launcher "$use"
      sleep 20  # past the first minute's start-up work (image GC, node status, leases)
      PID=$(pid_of k3s)
      [ -n "$PID" ] || fail "no k3s process"
      # Under the launcher, k3s's parent is the launcher: its CPU (the tracer's) counts too.
      PARENT=$(awk '{ print $4 }' "/proc/$PID/stat")
      PIDS=$PID; [ "$(readlink "/proc/$PARENT/exe")" = "$P/bin/launcher" ] && PIDS="$PID $PARENT"
      [ "$use" = always ] && [ "$PIDS" = "$PID" ] && fail "--launcher always, yet k3s's parent is not the launcher"
      [ "$use" = auto ] && [ "$PIDS" != "$PID" ] && fail "--launcher auto, yet k3s runs under the launcher"
      A=$(cpu_ticks $PIDS); sleep "$IDLE_SECONDS"; B=$(cpu_ticks $PIDS)
      echo "BENCH k3s-idle-$use $(awk "BEGIN { printf \"%.3f\", ($B - $A) / $HZ * 60 / $IDLE_SECONDS }")"
      down
    done
  done
elif [ "$WHAT" = addons ]; then
  # What k3s's packaged add-ons cost: each round installs with them on (k3s's defaults) and
  # with them off (k3s's own --disable), waits until every pod is Running and Ready or
  # Completed (the HelmChart's install Job), lets the node idle, then sums the RSS of every
  # process started since ./install (its daemons, shims and pods; not the processes that ran
  # before it, which on plain Linux are the host's own; shared pages count once per process,
  # on both sides alike).
  OFF="--disable traefik --disable metrics-server --disable local-storage"
  for r in $(seq "$ROUNDS"); do
    for set in on off; do
      t0=$(date +%s.%N)
      note_pids
      if [ $set = on ]; then up; else up -- $OFF; fi
      echo "BENCH ready-$set $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")"
      wait_settled "add-ons $set"
      echo "BENCH pods-$set $($K get pods -A --no-headers | grep -c Running)"
      sleep "$IDLE_SECONDS"
      rss_since_install $set
      down
    done
  done
  # The download with and without them: the bundle's tree packed again with the same gzip
  # level as its .tar.gz, whole and without the add-ons' images, charts and helm.
  ADDON_FILES="images/traefik.oci.tar images/metrics-server.oci.tar images/local-path-provisioner.oci.tar images/klipper-helm.oci.tar bin/helm charts"
  top=$(basename "$BUNDLE")
  gz_size() { tar -C "$(dirname "$BUNDLE")" --sort=name "$@" -cf - "$top" | gzip -6 | wc -c | awk '{ printf "%.1f", $1 / 1048576 }'; }
  echo "BENCH gz-on $(gz_size)"
  # shellcheck disable=SC2046 # one --exclude per file
  echo "BENCH gz-off $(gz_size $(for f in $ADDON_FILES; do echo "--exclude=$top/$f"; done))"
elif [ "$WHAT" = memory ]; then
  # k3s's settings against the installer's default, alternating per round: for each of
  # MEMORY_SETS (space-separated; `default`, or comma-separated parts: `VAR=value`, a variable
  # ./install records for k3s (CONTAINERD_VAR for containerd, and so for its shims), or
  # `--flag[=value]`, a k3s flag given after `--`; a flag's value may itself hold commas),
  # install with k3s's defaults (add-ons on), wait until every pod settled, idle, then the RSS
  # as --addons sums it, k3s's idle CPU, and the API's latency: 200 GETs of every pod and 200
  # of every ConfigMap over one kept-alive connection (curl with the kubeconfig's client
  # certificate), median and 95th percentile; and ./install's own time (it returns once the
  # node is Ready), what the setting costs the start. Beside them, where the memory is: the
  # processes issue 27 counts, k3s's and a shim's RSS by mapping (smaps), the sandbox's
  # /proc/meminfo, and with --enable-pprof k3s's Go memory statistics (its heap profile kept in
  # RUN).
  HZ=$(getconf CLK_TCK)
  # The sets as words, unglobbed (a flag's value may hold `*`: controllers=*,-x).
  # shellcheck disable=SC2086 # split at the spaces
  set -f; set -- $MEMORY_SETS; set +f
  for r in $(seq "$ROUNDS"); do
    for set in "$@"; do
      # The set's parts, one a line: split at the commas that start a `--flag` or a `VAR=`.
      echo "$set" | sed 's/,\(--\)/\n\1/g; s/,\([A-Za-z_][A-Za-z0-9_]*=\)/\n\1/g' > "$RUN/parts"
      [ "$set" = default ] && : > "$RUN/parts"
      vars=$(grep -v '^--' "$RUN/parts" | tr '\n' ' ')
      flags=$(grep '^--' "$RUN/parts" | tr '\n' ' ')
      name=$(echo "$set" | tr -c 'A-Za-z0-9=.,_+\n-' _)  # for file names
      note_pids
      echo "BENCH meminfo-anon0-$set $(awk '$1 == "AnonPages:" { printf "%.1f", $2 / 1024 }' /proc/meminfo)"
      t0=$(date +%s.%N)
      set -f
      # shellcheck disable=SC2086 # one word per part
      env $vars "$BUNDLE/install" --prefix "$P" --data-dir "$D" ${flags:+--} $flags > "$RUN/install.out" 2>&1 \
        || { cat "$RUN/install.out"; fail "install with $set"; }
      set +f
      echo "BENCH ready-$set $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")"
      K="$P/bin/kubectl --kubeconfig $D/kubeconfig.yaml"
      $K wait --for=condition=Ready node --all --timeout=120s >/dev/null || fail "$set: node not Ready"
      wait_settled "$set"
      PID=$(pid_of k3s)
      # The setting reaches k3s through its keeper (`bin/keeper`, whose environment
      # and command line k3s inherits), and is checked there: k3s's own /proc/PID/environ and
      # cmdline are overwritten by its process title (pkg/proctitle: gspt's setproctitle reuses
      # the memory of argv and environ for `k3s server`), so they lacked GOGC=50 in the current
      # gVisor (2026-12-06 17:40Z) while its keeper had it and k3s's RSS moved by it.
      KEEPER=$(cut -d' ' -f1 "$D/run/k3s.pid")
      set -f
      for var in $vars; do
        tr '\0' '\n' < "/proc/$KEEPER/environ" | grep -qxF "$var" \
          || fail "k3s's keeper (pid ${KEEPER:-none}) lacks $var in its environment: $(tr '\0' '\n' < "/proc/$KEEPER/environ" 2>/dev/null | grep -E '^(GO|K3S_|CONTAINERD_|PATH)' | tr '\n' ' ')"
      done
      for flag in $flags; do
        tr '\0' '\n' < "/proc/$KEEPER/cmdline" | grep -qxF -- "$flag" \
          || fail "k3s's keeper (pid ${KEEPER:-none}) lacks $flag on its command line: $(tr '\0' ' ' < "/proc/$KEEPER/cmdline")"
      done
      set +f
      A=$(cpu_ticks "$PID"); sleep "$IDLE_SECONDS"; B=$(cpu_ticks "$PID")
      echo "BENCH k3s-cpu-$set $(awk "BEGIN { printf \"%.3f\", ($B - $A) / $HZ * 60 / $IDLE_SECONDS }")"
      rss_since_install "$set" "$name"
      memory_breakdown "$set" "$name" "$PID"
      for key in certificate-authority-data client-certificate-data client-key-data; do
        awk -v k="$key:" '$1 == k { print $2; exit }' "$D/kubeconfig.yaml" | base64 -d > "$RUN/$key"
      done
      CURL="curl -s --cacert $RUN/certificate-authority-data --cert $RUN/client-certificate-data --key $RUN/client-key-data"
      for what in pods configmaps; do
        url=https://127.0.0.1:6443/api/v1/$what
        # shellcheck disable=SC2046 # one -o per URL
        $CURL -w '%{time_total}\n' $(for i in $(seq 200); do echo "-o /dev/null $url"; done) > "$RUN/latency" || fail "curl $url"
        sort -n "$RUN/latency" | awk -v n="$what-$set" '{ v[NR] = $1 * 1000 } END {
          printf "BENCH api-p50-%s %.2f\nBENCH api-p95-%s %.2f\n", n, v[int(NR * 0.5)], n, v[int(NR * 0.95)] }'
      done
      # With --enable-pprof (on the supervisor's port, behind the client certificate): the Go
      # runtime's own figures, and the heap profile for `go tool pprof -top` on the host.
      if grep -qx -- --enable-pprof "$RUN/parts"; then
        $CURL -o "$RUN/heap-$name-$r.pb.gz" https://127.0.0.1:6443/debug/pprof/heap || fail "pprof heap"
        $CURL https://127.0.0.1:6443/debug/pprof/heap?debug=1 > "$RUN/heap-$name-$r.txt" || fail "pprof heap?debug=1"
        $CURL "https://127.0.0.1:6443/debug/pprof/goroutine?debug=1" | head -n 1 | sed "s/^/GOROUTINES-$set /"
        awk -v s="$set" '$1 == "#" && $3 == "=" && $2 ~ /^(Sys|HeapAlloc|HeapSys|HeapIdle|HeapInuse|HeapReleased|StackInuse|StackSys|MSpanInuse|GCSys|OtherSys|NextGC)$/ {
          printf "BENCH go-%s-%s %.1f\n", $2, s, $4 / 1048576 }' "$RUN/heap-$name-$r.txt"
      fi
      down
    done
  done
elif [ "$WHAT" = images ]; then
  # Seconds since $1 (a `date +%s.%N`), one decimal; MiB under a directory.
  secs() { awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $1 }"; }
  mib() { du -sm "$1" 2>/dev/null | awk '{ print $1 }'; }
  # Does DIR take an overlay mount (lower, upper and work dirs in it; a lower file read and a
  # write landing in upper)? `ok` or `refused: <why>`.
  overlay_probe() {
    o=$1/overlay-probe
    if ! { mkdir -p "$o/l" "$o/u" "$o/w" "$o/m" && echo x > "$o/l/f"; }; then echo "refused: cannot make dirs in $1"; return; fi
    if err=$(mount -t overlay overlay -o "lowerdir=$o/l,upperdir=$o/u,workdir=$o/w" "$o/m" 2>&1); then
      if [ "$(cat "$o/m/f")" = x ] && echo y > "$o/m/g" && [ -f "$o/u/g" ]; then r=ok; else r="refused: mounted, but a read or write through it failed"; fi
      umount "$o/m"
    else
      r="refused: $(echo "$err" | tr '\n' ' ')"
    fi
    rm -rf "$o"; echo "$r"
  }
  # The Deployment `real` of IMAGE_REF at REPLICAS $1, until every replica is Ready.
  deploy() {
    $K apply -f - >/dev/null <<YAML || fail "cannot apply the Deployment"
apiVersion: apps/v1
kind: Deployment
metadata: {name: real}
spec:
  replicas: $1
  selector: {matchLabels: {app: real}}
  template:
    metadata: {labels: {app: real}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - {name: real, image: $IMAGE_REF, imagePullPolicy: Never, command: [sleep, "36000"]}
YAML
    $K rollout status deploy/real --timeout=900s >/dev/null && return
    $K get pods -o wide; $K describe pods | grep -A3 -m3 -e Warning -e Reason
    echo "BENCH img-fail $place pods $SNAP: $1 replica(s) not Ready in 900 s: $($K get events --field-selector type=Warning -o jsonpath='{.items[-1:].message}' 2>&1 | cut -c1-300)"
    return 1
  }
  # At PLACE (the data dir's place): install (k3s's add-ons and CoreDNS off: no pod but ours
  # makes snapshots while it is measured), then `BENCH img-row PLACE via snapshotter import
  # first all du-before du-import du-first du-all` for the installer's snapshotter through
  # pods, and for native and overlayfs through `ctr run` where containerd loaded overlayfs.
  measure_at() {
    place=$1
    echo "BENCH img-place-$place $(stat -f -c %T "$(dirname "$D")") at $(dirname "$D")"
    echo "BENCH img-probe-$place $(overlay_probe "$(dirname "$D")")"
    up -- --disable traefik --disable metrics-server --disable local-storage --disable coredns
    eval "$(grep -m1 -o 'export PATH=.*' "$RUN/install.out")"
    SNAP=$(jq -r .snapshotter "$D/state.json")
    echo "BENCH img-chose-$place $SNAP"
    root=$D/containerd/root
    dub=$(mib "$root/io.containerd.snapshotter.v1.$SNAP")
    t=$(date +%s.%N)
    "$BUNDLE/install" images import --data-dir "$D" "$IMAGE" > "$RUN/import.out" 2>&1 || { cat "$RUN/import.out"; fail "images import at $place"; }
    imp=$(secs "$t"); du0=$(mib "$root/io.containerd.snapshotter.v1.$SNAP")
    t=$(date +%s.%N)
    if deploy 1; then
      first=$(secs "$t"); du1=$(mib "$root/io.containerd.snapshotter.v1.$SNAP")
      t=$(date +%s.%N)
      if deploy "$REPLICAS"; then
        tenth=$(secs "$t"); du10=$(mib "$root/io.containerd.snapshotter.v1.$SNAP")
        echo "BENCH img-row $place pods $SNAP $imp $first $tenth $dub $du0 $du1 $du10"
      fi
    fi
    $K delete deploy/real --wait=true >/dev/null
    $K wait --for=delete pod -l app=real --timeout=300s >/dev/null 2>&1
    ctr plugins ls > "$RUN/plugins-$place" 2>&1
    overlayfs=$(awk '$1 == "io.containerd.snapshotter.v1" && $2 == "overlayfs" { print $NF }' "$RUN/plugins-$place")
    why=
    [ "$overlayfs" = ok ] || why=$(grep -F io.containerd.snapshotter.v1.overlayfs "$D/logs/containerd.log" | grep -i -m1 -e error -e skip | grep -o 'error=.*' | cut -c1-300)
    echo "BENCH img-overlayfs-plugin-$place ${overlayfs:-absent}${why:+: $why}"
    if [ "$overlayfs" = ok ]; then
      for snap in native overlayfs; do
        dir=$root/io.containerd.snapshotter.v1.$snap
        dub=$(mib "$dir")
        t=$(date +%s.%N)
        ctr -n k8s.io images import --local --snapshotter "$snap" "$IMAGE" > "$RUN/ctr-import-$snap.out" 2>&1 \
          || { echo "BENCH img-fail $place ctr $snap import: $(tail -n 1 "$RUN/ctr-import-$snap.out")"; continue; }
        imp=$(secs "$t"); du0=$(mib "$dir")
        run_one() { ctr -n k8s.io run -d --snapshotter "$snap" "$IMAGE_REF" "img-$snap-$1" sleep 36000 >> "$RUN/ctr-run-$snap.out" 2>&1; }
        t=$(date +%s.%N); run_one 1 || { echo "BENCH img-fail $place ctr $snap run: $(tail -n 1 "$RUN/ctr-run-$snap.out")"; continue; }
        first=$(secs "$t"); du1=$(mib "$dir")
        t=$(date +%s.%N); pids=
        for i in $(seq 2 "$REPLICAS"); do run_one "$i" & pids="$pids $!"; done
        ok=1; for p in $pids; do wait "$p" || ok=; done
        tenth=$(secs "$t"); du10=$(mib "$dir")
        if [ -n "$ok" ]; then echo "BENCH img-row $place ctr $snap $imp $first $tenth $dub $du0 $du1 $du10"; else echo "BENCH img-fail $place ctr $snap run: $(tail -n 1 "$RUN/ctr-run-$snap.out")"; fi
        for i in $(seq 1 "$REPLICAS"); do ctr -n k8s.io task rm -f "img-$snap-$i" >/dev/null 2>&1; ctr -n k8s.io containers rm "img-$snap-$i" >/dev/null 2>&1; done
      done
    fi
    down
  }
  # The data dir on the sandbox's root filesystem (9p, or runsc's root overlay), at a short
  # path: the kubelet's sockets under it must fit a unix socket's 107 bytes.
  RD=$(mktemp -d /var/tmp/k3s-gvisor-img.XXXXXX)
  D=$RD/d
  measure_at root
  rmdir "$RD"
  # A tmpfs the sandbox mounts (in gVisor, its own memory), with the data dir on it.
  TM=$(mktemp -d /tmp/k3s-gvisor-img.XXXXXX)
  if err=$(mount -t tmpfs -o size=12g tmpfs "$TM" 2>&1); then
    D=$TM/d
    measure_at tmpfs
    umount "$TM"
  else
    echo "BENCH img-probe-tmpfs refused: mount -t tmpfs: $err"
  fi
  rmdir "$TM"
else
  fail "WHAT=$WHAT: expected pods, k3s-idle, addons, memory or images"
fi
echo "BENCH done 1"
