#!/bin/sh
# Inside a sandbox (or a private mount namespace): mount cgroups, then run a busybox container
# with the runc given as $1 from the OCI bundle in $2. Prints runc's output and "runc exit: N".
# $3, if given, is extra runc global flags (e.g. --debug).
set -u
RUNC=$1 BUNDLE=$2 FLAGS=${3:-}
exec 2>&1
# NO_CGROUP_MOUNT=1 on plain Linux: the host's own cgroups are already there.
[ -n "${NO_CGROUP_MOUNT:-}" ] || sh "$(dirname "$0")/mount-cgroups.sh" || exit 1
ROOT=$(mktemp -d /tmp/runc-root.XXXXXX)
# shellcheck disable=SC2086 # FLAGS is a list of flags
"$RUNC" $FLAGS --root "$ROOT" run --bundle "$BUNDLE" "busybox-$$"
echo "runc exit: $?"
"$RUNC" --root "$ROOT" delete -f "busybox-$$" >/dev/null 2>&1
rm -rf "$ROOT"
