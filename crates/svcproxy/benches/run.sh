#!/usr/bin/env bash
# svcproxy's Service benchmark (not part of CI): requests per second and latency through a
# Service (svcproxy) against direct pod-to-pod, in the same run, inside the current gVisor and,
# for reference, on this host (private namespaces). Prints a markdown table for BENCHMARKS.md.
#
#   crates/svcproxy/benches/run.sh
#   ROUNDS=3 SECONDS_PER_RUN=10 CONNS=8 HOSTS="gvisor linux" crates/svcproxy/benches/run.sh
#
# Binaries: K3S (default: the pipeline's target/k3s-gvisor/out/patched/bin/k3s), SVCPROXY and
# TESTKIT (default: `cargo build --release -p svcproxy`), RUNSC (default: `cargo xtask tool runsc`);
# SVCPROXY_B: a second svcproxy measured against SVCPROXY round by round (benches/service.sh).
set -euo pipefail
cd "$(dirname "$0")/../../.."
repo=$PWD
export ROUNDS=${ROUNDS:-3} SECONDS_PER_RUN=${SECONDS_PER_RUN:-10} CONNS=${CONNS:-8}
HOSTS=${HOSTS:-"gvisor linux"}
K3S=${K3S:-$repo/target/k3s-gvisor/out/patched/bin/k3s}
[ -x "$K3S" ] || { echo "no k3s at $K3S: run cargo xtask bundle, or set K3S" >&2; exit 1; }
if [ -z "${SVCPROXY:-}" ] || [ -z "${TESTKIT:-}" ]; then
  cargo build --release --locked -p svcproxy >&2
  SVCPROXY=${SVCPROXY:-$repo/target/release/svcproxy}
  TESTKIT=${TESTKIT:-$repo/target/release/svcproxy-testkit}
fi
RUNSC=${RUNSC:-$(cargo xtask tool runsc)}
export K3S SVCPROXY TESTKIT SVCPROXY_B=${SVCPROXY_B:-}

# One k3s scenario per machine at a time, as the e2e and soak runs do (xtask/src/sandbox.rs):
# another k3s on the same two cores would skew both.
exec 9>/run/k3s-gvisor-sandbox.lock
flock -n 9 || { echo "waiting for /run/k3s-gvisor-sandbox.lock (another k3s scenario runs)" >&2; flock 9; }

results=$(mktemp)
for host in $HOSTS; do
  work=/tmp/svcproxy-bench-$host-$$
  rm -rf "$work"; mkdir -p "$work"
  case $host in
    gvisor) runner=("$RUNSC" --network=none do -force-overlay=false) ;;
    linux) runner=(unshare -m -n -p -f --mount-proc) ;;
    *) echo "unknown host $host (gvisor or linux)" >&2; exit 2 ;;
  esac
  echo "== $host: $(date -u +%FT%TZ), $(uptime)" >&2
  WORK=$work timeout 1800 "${runner[@]}" /bin/sh "$repo/crates/svcproxy/benches/service.sh" 2>&1 |
    tee "$work.out" | grep -E '^@@(bench|info|fail)' | sed "s/^/$host /" | tee -a "$results" >&2
  grep -q '^@@done' "$work.out" || { echo "the $host run failed; see $work.out" >&2; exit 1; }
  rm -rf "$work"
done

# Median over the rounds of each (host, mode, path).
echo
echo "| host | mode | path | requests/s | p50 ms | p90 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|---|---|"
awk '
  $2 == "@@bench" {
    for (i = 3; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    key = $1 " | " f["mode"] " | " f["path"]
    if (!(key in seen)) { order[++n] = key; seen[key] = 1 }
    c = ++count[key]
    rps[key, c] = f["rps"]; p50[key, c] = f["p50_ms"]; p90[key, c] = f["p90_ms"]
    p99[key, c] = f["p99_ms"]; err[key] += f["errors"]
  }
  function median(arr, key, c,    i, j, t, v) {
    for (i = 1; i <= c; i++) v[i] = arr[key, i] + 0
    for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return v[int((c + 1) / 2)]
  }
  END {
    for (k = 1; k <= n; k++) {
      key = order[k]; c = count[key]
      printf "| %s | %.0f | %.3f | %.3f | %.3f | %d |\n", key, median(rps, key, c),
        median(p50, key, c), median(p90, key, c), median(p99, key, c), err[key]
    }
  }' "$results"

# With SVCPROXY_B: per round, service-b's requests/s over service's (the same round, the same
# load); the median and the range over the rounds, per host and mode.
if [ -n "$SVCPROXY_B" ]; then
  echo
  echo "| host | mode | service-b / service, median of rounds | lowest | highest | rounds |"
  echo "|---|---|---|---|---|---|"
  awk '
    $2 == "@@bench" {
      for (i = 3; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      rps[$1 " | " f["mode"], f["round"], f["path"]] = f["rps"]
      if (!(($1 " | " f["mode"]) in seen)) { order[++n] = $1 " | " f["mode"]; seen[$1 " | " f["mode"]] = 1 }
      if (f["round"] + 0 > rounds) rounds = f["round"] + 0
    }
    END {
      for (k = 1; k <= n; k++) {
        key = order[k]; c = 0
        for (r = 1; r <= rounds; r++)
          if (rps[key, r, "service"] > 0 && rps[key, r, "service-b"] != "")
            v[++c] = rps[key, r, "service-b"] / rps[key, r, "service"]
        for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        printf "| %s | %.3f | %.3f | %.3f | %d |\n", key, v[int((c + 1) / 2)], v[1], v[c], c
        delete v
      }
    }' "$results"
fi
rm -f "$results"
