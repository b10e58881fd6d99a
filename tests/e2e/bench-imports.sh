#!/bin/sh
# What importing the bundle's images costs in CPU, three ways, rounds interleaved (BENCHMARKS.md
# "Where the start goes"): one `ctr images import` per archive through containerd's transfer
# service (what install did before 2026-12-07), one `--local` import per archive (ctr reads
# the archive itself), and one `--local` import of all of them as a single OCI layout (what
# install's merge_layouts streams; made here with python3 the same way). Each mode gets a
# fresh containerd; prints its wall time and the CPU seconds of containerd and of ctr.
#
#   runsc --network=none do -force-overlay=false /bin/sh tests/e2e/bench-imports.sh \
#     target/k3s-gvisor/out/patched/bin ROUNDS ARCHIVE...
#
# Run it on a directory runsc shares with the host (not /tmp: `runsc do` gives its own).
set -eu
BIN=$(cd "$1" && pwd); ROUNDS=$2; shift 2
W=$(mktemp -d "$PWD/bench-imports.XXXXXX")
trap 'rm -rf "$W"' EXIT

python3 - "$W/merged.tar" "$@" <<'EOF'
import io, json, sys, tarfile
out = tarfile.open(sys.argv[1], "w")
seen, manifests = set(), []
for path in sys.argv[2:]:
    archive = tarfile.open(path)
    for member in archive.getmembers():
        if member.name == "index.json":
            manifests += json.load(archive.extractfile(member))["manifests"]
        elif member.name.startswith("blobs/") and member.isfile() and member.name not in seen:
            seen.add(member.name)
            out.addfile(member, archive.extractfile(member))
for name, value in [("oci-layout", {"imageLayoutVersion": "1.0.0"}),
                    ("index.json", {"schemaVersion": 2, "manifests": manifests})]:
    data = json.dumps(value).encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    out.addfile(info, io.BytesIO(data))
out.close()
EOF

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One mode: a fresh containerd, the imports, then containerd's CPU ticks and ctr's seconds.
measure() {
  mode=$1; shift
  rm -rf "$W/c"; mkdir -p "$W/c"
  cat > "$W/c/config.toml" <<EOF
version = 3
root = "$W/c/root"
state = "$W/c/state"
[grpc]
  address = "$W/c/sock"
EOF
  "$BIN/containerd" --config "$W/c/config.toml" > "$W/c/log" 2>&1 &
  daemon=$!
  while [ ! -S "$W/c/sock" ]; do sleep 0.05; done
  sleep 1
  : > "$W/c/ctr-times"
  start=$(date +%s.%N); before=$(cpu $daemon)
  for archive in "$@"; do
    /usr/bin/time -f "%U %S" -a -o "$W/c/ctr-times" "$BIN/ctr" --address "$W/c/sock" -n k8s.io \
      images import $FLAGS --no-unpack "$archive" > /dev/null
  done
  end=$(date +%s.%N); after=$(cpu $daemon)
  images=$("$BIN/ctr" --address "$W/c/sock" -n k8s.io images ls -q | grep -vc '^sha256:')
  kill $daemon; wait $daemon || true
  awk -v m="$mode" -v s="$start" -v e="$end" -v t=$((after - before)) -v i="$images" \
    -v hz="$(getconf CLK_TCK)" '{ctr += $1 + $2} END {
      printf "%-22s wall %.2f s  containerd %.2f s  ctr %.2f s  CPU %.2f s  (%d images)\n",
        m, e - s, t / hz, ctr, t / hz + ctr, i}' "$W/c/ctr-times"
}

round=1
while [ $round -le "$ROUNDS" ]; do
  FLAGS= measure "transfer, each" "$@"
  FLAGS=--local measure "--local, each" "$@"
  FLAGS=--local measure "--local, one layout" "$W/merged.tar"
  round=$((round + 1))
done
