#!/bin/sh
# Launcher benchmark: (a) a non-path syscall loop, (b) opening an existing file outside
# /proc/sys, (c) opening a /proc/sys file that the launcher redirects to DIR; each natively,
# under the launcher, and under `strace -f --seccomp-bpf -e trace=openat -o /dev/null`.
# Prints a markdown table of the best ns/iteration over ROUNDS runs and the ratio to native.
#
# usage: crates/launcher/benches/run.sh
# env:   LAUNCHER=path   launcher binary (default: builds the static release binary)
#        RUNSC=path      run every measurement inside `runsc --network=none do` instead
#        ROUNDS=5 N_SYSCALL=2000000 N_OPEN=100000
#        PIN=CPU         run everything (tracer, tracee, runsc) with `taskset -c CPU`: on an
#                        otherwise idle VM, waking the other, halted vCPU at every ptrace stop
#                        costs more than the launcher's own work; pinned shows the latter
# Floors, measured in the same rounds: (a) also runs under benches/filter_only.c (the same
# seccomp filter with no tracer: what any seccomp filter costs a non-path syscall on this
# kernel); (b), (b2) and (c) also run under benches/null_tracer.c (the same filter and ptrace
# stops, with a tracer that only resumes each stop: what any SECCOMP_RET_TRACE tracer costs).
# Then whether seccomp user notification (the only other way to see a path) is offered.
# (b2) is (b) with a relative path (cwd outside /proc).
# On the host, the table is followed by the launcher's own syscalls per ptrace stop for (b),
# (b2) and (c), counted once with `strace -c` on the launcher (not -f: strace must not trace
# the command, the launcher does).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
ROUNDS=${ROUNDS:-5}
N_SYSCALL=${N_SYSCALL:-2000000}
N_OPEN=${N_OPEN:-100000}

for tool in cc strace; do
    command -v "$tool" >/dev/null || { echo "run.sh: needs $tool on PATH (Debian: apt-get install gcc strace)" >&2; exit 1; }
done

if [ -z "${LAUNCHER:-}" ]; then
    target_dir=${CARGO_TARGET_DIR:-$repo/target}
    (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --quiet --release -p launcher --target x86_64-unknown-linux-gnu)
    LAUNCHER=$target_dir/x86_64-unknown-linux-gnu/release/launcher
fi

work=$(mktemp -d /tmp/launcher-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Static, so that it also runs under filter_only (no dynamic loader opening libraries).
cc -O2 -static -o "$work/loops" "$here/syscall_loops.c"
cc -O2 -o "$work/filter_only" "$here/filter_only.c"
cc -O2 -o "$work/null_tracer" "$here/null_tracer.c"
cc -O2 -static -o "$work/user_notif_probe" "$here/user_notif_probe.c"
mkdir -p "$work/procsys/kernel"
echo 4194304 > "$work/procsys/kernel/pid_max"
echo bench > "$work/existing-file"

# The /proc/sys file for (c): natively (and under strace) the real one is opened where it
# exists; under the launcher DIR's copy is.
procsys_file=/proc/sys/kernel/pid_max

in_sandbox() {
    if [ -n "${RUNSC:-}" ]; then
        "$RUNSC" --network=none "do" -force-overlay=false /bin/sh -c "$*" | cat
    else
        /bin/sh -c "$*"
    fi
}

# run_once RUNNER WORKLOAD...: ns/iteration of one run
run_once() {
    runner=$1; shift
    case $runner in
        native) prefix="" ;;
        launcher) prefix="$LAUNCHER --procsys $work/procsys --" ;;
        strace) prefix="strace -f --seccomp-bpf -e trace=openat -o /dev/null" ;;
        filter) prefix="$work/filter_only" ;;
        null) prefix="$work/null_tracer" ;;
    esac
    # Without the launcher a missing /proc/sys file cannot be opened at all; those runners
    # then open DIR's copy directly, the same file the launcher redirects to.
    if [ "$runner" != launcher ] && [ -n "${UNTRACED_ARGS:-}" ]; then
        # shellcheck disable=SC2086 # a word list on purpose
        set -- $UNTRACED_ARGS
    fi
    in_sandbox "cd $work && $prefix $work/loops $*" | awk '{print $2}'
}
if [ -n "${PIN:-}" ]; then
    command -v taskset >/dev/null || { echo "run.sh: PIN needs taskset (Debian: util-linux)" >&2; exit 1; }
    # The benchmark's own shell is pinned: every process it starts inherits the affinity.
    taskset -p -c "$PIN" $$ >/dev/null
fi

# Best of the rounds: other load on the machine only ever slows a run down, so the fastest
# run is the closest to the cost of the workload itself.
best() { sort -n | head -n 1; }

# row NAME FLOOR_RUNNER FLOOR_NAME WORKLOAD...: the runners take turns within each round, so
# a change of machine load during the measurement hits all of them alike. The floor runner's
# result is printed as a second row.
row() {
    name=$1 floor=$2 floor_name=$3; shift 3
    : > "$work/native"; : > "$work/launcher"; : > "$work/strace"; : > "$work/$floor"
    i=0
    while [ $i -lt "$ROUNDS" ]; do
        for runner in native launcher strace "$floor"; do
            run_once "$runner" "$@" >> "$work/$runner"
        done
        i=$((i + 1))
    done
    n=$(best < "$work/native"); l=$(best < "$work/launcher"); s=$(best < "$work/strace")
    awk -v name="$name" -v n="$n" -v l="$l" -v s="$s" 'BEGIN {
        printf "| %s | %.1f | %.1f | %.2fx | %.1f | %.2fx |\n", name, n, l, l / n, s, s / n }'
    f=$(best < "$work/$floor")
    awk -v name="$floor_name" -v n="$n" -v f="$f" 'BEGIN {
        printf "| %s | %.1f | %.1f | %.2fx | | |\n", name, n, f, f / n }'
}
bare_filter="(a) floor: same loop under a bare seccomp filter, no tracer"
null_tracer="floor: same, under a tracer that only resumes each stop"

where=host
[ -n "${RUNSC:-}" ] && where="runsc $("$RUNSC" --version | head -1)"
pinned=""
[ -n "${PIN:-}" ] && pinned=", everything pinned to CPU $PIN"
echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -r), $(nproc --all) CPUs$pinned, uptime: $(uptime), in: $where; best of $ROUNDS runs (runners interleaved)"
echo
echo "| workload | native ns/op | launcher ns/op | launcher/native | strace ns/op | strace/native |"
echo "|---|---|---|---|---|---|"
row "(a) getppid loop (no path)" filter "$bare_filter" getppid "$N_SYSCALL"
row "(b) open+close existing file outside /proc/sys" null "(b) $null_tracer" \
    open "$work/existing-file" "$N_OPEN"
row "(b2) same, by a relative path (cwd outside /proc)" null "(b2) $null_tracer" \
    open existing-file "$N_OPEN"
if in_sandbox "$work/loops open $procsys_file 1" 2>/dev/null | grep -q "^open "; then
    row "(c) open+close $procsys_file (redirected by the launcher)" null "(c) $null_tracer (no redirect)" \
        open "$procsys_file" "$N_OPEN"
else
    UNTRACED_ARGS="open $work/procsys/kernel/pid_max $N_OPEN" \
        row "(c) open+close $procsys_file (redirected by the launcher; missing here, so native, strace and the floor open DIR/kernel/pid_max)" \
        null "(c) $null_tracer (no redirect)" open "$procsys_file" "$N_OPEN"
fi

# The one mechanism that could avoid ptrace stops altogether, where the sandbox offers it.
echo
echo "SECCOMP_RET_USER_NOTIF here: $(in_sandbox "$work/user_notif_probe")"

# Syscalls the launcher makes per stop: one run per workload under `strace -c`; every syscall
# made at least once per iteration is listed with its count per iteration (startup excluded).
if [ -z "${RUNSC:-}" ]; then
    n=10000
    echo
    echo "Launcher syscalls per stop (\`strace -c\` on the launcher, $n iterations):"
    echo
    for w in "(b) absolute path:$work/existing-file" "(b2) relative path:existing-file" "(c) redirected:$procsys_file"; do
        name=${w%%:*}; path=${w#*:}
        (cd "$work" && strace -c -o "$work/count" "$LAUNCHER" --procsys "$work/procsys" -- \
            "$work/loops" open "$path" "$n" > /dev/null)
        awk -v n="$n" -v name="$name" '
            $4 ~ /^[0-9]+$/ && $NF != "total" {
                calls = $4  # columns: % seconds usecs/call calls [errors] syscall
                if (calls >= n) { total += calls; list = list sprintf(" %s %.2f,", $NF, calls / n) }
            }
            END { sub(/,$/, "", list); printf "- %s: %.2f per stop:%s\n", name, total / n, list }' "$work/count"
    done
fi
