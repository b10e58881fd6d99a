#!/bin/sh
# The current gVisor's restore hang, reproduced with nothing of ours (docs/pause-resume.md):
# a sandbox with a TCP listener and a connection to it in its first network namespace, and,
# with CHILD_NETNS=yes, the same again in a second network namespace (`unshare -n`, as every
# pod has its own). Each case: `runsc run`, `runsc checkpoint`, `runsc restore`, then whether
# the restored sandbox's one-second counter moves on. Needs root, python3 and unshare.
#
#   tests/gvisor/checkpoint-restore-netns.sh RUNSC    # e.g. "$(cargo xtask tool runsc)"
#
# Measured with the current gVisor (v0.0.0-20260905035102-160fafc42237), 2026-12-06:
#   first namespace only: restored, the counter moves on;
#   a connection in a second namespace: `runsc restore` returns, the counter never moves again.
set -u
RUNSC=${1:?usage: $0 RUNSC}
DIR=$(mktemp -d /tmp/ckpt-netns.XXXXXX)
trap 'pkill -KILL -f -- "--root=$DIR/state" 2>/dev/null; umount -l "$DIR/state/null-netns" 2>/dev/null; rm -rf "$DIR"' EXIT

cat > "$DIR/hold.py" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(5)
c = socket.create_connection(("127.0.0.1", port)); a, _ = s.accept()
print("connected", port, flush=True)
while True:
    time.sleep(60)
PY
cat > "$DIR/run.sh" <<SH
#!/bin/sh
/usr/bin/python3 $DIR/hold.py 9000 &
[ "\$CHILD_NETNS" = yes ] && unshare -n sh -c 'ip link set lo up; exec /usr/bin/python3 $DIR/hold.py 9001' &
i=0; while :; do i=\$((i+1)); echo \$i > $DIR/tick; sleep 1; done
SH
chmod +x "$DIR/run.sh"

one_case() {
  child=$1
  rm -rf "$DIR/state" "$DIR/image" "$DIR/bundle"; mkdir -p "$DIR/bundle" "$DIR/image"
  (cd "$DIR/bundle" && "$RUNSC" spec -- "$DIR/run.sh")
  /usr/bin/python3 - "$DIR/bundle/config.json" "$child" <<'PY'
import json, sys
path, child = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["root"] = {"path": "/", "readonly": False}
c["process"]["terminal"] = False
c["process"]["env"].append("CHILD_NETNS=" + child)
for k in c["process"]["capabilities"]:
    c["process"]["capabilities"][k] = sorted(set(c["process"]["capabilities"][k]) | {"CAP_SYS_ADMIN", "CAP_NET_ADMIN"})
json.dump(c, open(path, "w"))
PY
  flags="--root=$DIR/state --network=none --overlay2=none"
  # shellcheck disable=SC2086
  "$RUNSC" $flags run --bundle "$DIR/bundle" ckpt >/dev/null 2>&1 &
  sleep 6
  # shellcheck disable=SC2086
  "$RUNSC" --root="$DIR/state" checkpoint --image-path="$DIR/image" ckpt || { echo "CHILD_NETNS=$child: runsc checkpoint failed"; return 1; }
  sleep 1
  before=$(cat "$DIR/tick")
  "$RUNSC" --root="$DIR/state" delete --force ckpt 2>/dev/null
  # shellcheck disable=SC2086
  "$RUNSC" $flags restore --image-path="$DIR/image" --bundle "$DIR/bundle" ckpt >/dev/null 2>&1 &
  sleep 15
  after=$(cat "$DIR/tick")
  if [ "$after" -gt "$before" ]; then
    echo "CHILD_NETNS=$child: restored, the counter moved on ($before -> $after)"
  else
    echo "CHILD_NETNS=$child: NOT restored: the counter stayed at $after for 15 s after runsc restore"
  fi
  pkill -KILL -f -- "--root=$DIR/state"; sleep 1; umount -l "$DIR/state/null-netns" 2>/dev/null
}

one_case no
one_case yes
