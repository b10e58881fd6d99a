#!/bin/sh
# Inside a sandbox (or a private mount namespace): `runc run -d` a container whose process is
# `busybox sleep` in a PID namespace of its own (BUNDLE); `runc exec` into it twice, the way
# kubectl exec reaches runc; start a second container in its PID namespace; kill it.
# Proves runc's patch 0003 (docs/patches.md).
#
# Usage: runc-exec.sh RUNC BUNDLE
# Prints lines the tests read:
#   run -d exit: N
#   exec: pid=N proc-self=X         from inside the exec'd process: its PID as it sees it, and
#                                   what /proc/self (the container's /proc) resolves to ("none")
#   exec exit: N                    the exec'd command exits 7
#   runc's own output (warnings, errors) in between
#   joiner run -d exit: N           a second container that joins the first one's PID namespace
#   exec -d pid: N | none           a `busybox sleep` started with `runc exec -d`
#   leftover: none | leftover: PID  after `runc kill KILL` + `runc delete`, is a process started
#                                   with `runc exec -d` still alive?
#   delete exit: N
set -u
RUNC=$1 BUNDLE=$2
exec 2>&1
# NO_CGROUP_MOUNT=1 on plain Linux: the host's own cgroups are already there.
[ -n "${NO_CGROUP_MOUNT:-}" ] || sh "$(dirname "$0")/mount-cgroups.sh" >/dev/null || exit 1
ROOT=$(mktemp -d /tmp/runc-root.XXXXXX)
ID=exec-$$
"$RUNC" --root "$ROOT" run -d --bundle "$BUNDLE" "$ID" </dev/null >/dev/null
echo "run -d exit: $?"
# containerd's shim, which runs runc exec, is a child subreaper; so is runc here. gVisor before
# 2026-06-01 ignores CLONE_PARENT, so the exec'd process is a child of runc's stage 1, and when
# that exits it goes to the nearest subreaper (in Linux it is runc's own child from the start).
# PR_SET_CHILD_SUBREAPER (36) survives exec; prctl is syscall 157 on x86_64.
# shellcheck disable=SC2016 # a perl program, expanded by perl
AS_SUBREAPER='syscall(157, 36, 1, 0, 0, 0) == 0 or die "prctl(PR_SET_CHILD_SUBREAPER): $!\n"; exec @ARGV or die "exec $ARGV[0]: $!\n"'
# shellcheck disable=SC2016 # $$ and /proc/self are the exec'd process's, not ours
timeout 60 perl -e "$AS_SUBREAPER" "$RUNC" --root "$ROOT" exec "$ID" /bin/busybox sh -c \
    'echo "exec: pid=$$ proc-self=$(/bin/busybox readlink /proc/self || echo none)"; exit 7' </dev/null
echo "exec exit: $?"
# A second container that joins the first one's PID namespace (CRI's namespace_options.pid POD,
# Kubernetes' shareProcessNamespace). Same read-only rootfs, by absolute path.
INIT=$("$RUNC" --root "$ROOT" state "$ID" | sed -n 's/^ *"pid": \([0-9]*\),$/\1/p')
mkdir -p "$ROOT/joiner"
sed -e "s|\"type\": \"pid\"|\"type\": \"pid\", \"path\": \"/proc/$INIT/ns/pid\"|" \
    -e "s|\"path\": \"rootfs\"|\"path\": \"$BUNDLE/rootfs\"|" "$BUNDLE/config.json" >"$ROOT/joiner/config.json"
"$RUNC" --root "$ROOT" run -d --bundle "$ROOT/joiner" "$ID-joiner" </dev/null >/dev/null
echo "joiner run -d exit: $?"
"$RUNC" --root "$ROOT" delete -f "$ID-joiner" >/dev/null 2>&1
"$RUNC" --root "$ROOT" exec -d --pid-file "$ROOT/exec.pid" "$ID" /bin/busybox sleep 1001 </dev/null
LEFT=$(cat "$ROOT/exec.pid" 2>/dev/null)
echo "exec -d pid: ${LEFT:-none}"
"$RUNC" --root "$ROOT" kill "$ID" KILL
i=0
until "$RUNC" --root "$ROOT" state "$ID" 2>/dev/null | grep -q '"status": "stopped"' || [ $i -ge 50 ]; do
    i=$((i + 1)); sleep 0.2
done
"$RUNC" --root "$ROOT" delete "$ID"
echo "delete exit: $?"
if [ -n "$LEFT" ] && kill -0 "$LEFT" 2>/dev/null; then
    echo "leftover: $LEFT $(tr '\0' ' ' </proc/"$LEFT"/cmdline)"
    kill -9 "$LEFT"
else
    echo "leftover: none"
fi
"$RUNC" --root "$ROOT" delete -f "$ID" >/dev/null 2>&1
rm -rf "$ROOT"
