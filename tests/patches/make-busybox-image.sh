#!/bin/sh
# Write an OCI image archive (for `ctr images import`) whose only layer is /bin/busybox from
# Debian's busybox-static, with entrypoint `busybox sleep 3600`: a stand-in pause image for
# the CRI tests, built offline. Usage: make-busybox-image.sh OUT.tar IMAGE_NAME
set -eu
OUT=$1 NAME=$2
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || { echo "no $BUSYBOX: apt-get install busybox-static" >&2; exit 1; }
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
mkdir -p "$D/rootfs/bin" "$D/oci/blobs/sha256"
cp "$BUSYBOX" "$D/rootfs/bin/busybox"
# Fixed owner and mtime: the same busybox gives the same digests.
tar --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -C "$D/rootfs" -cf "$D/layer.tar" bin
blob() { # FILE -> prints "sha256hex size", stores the blob
    h=$(sha256sum "$1" | cut -d' ' -f1); s=$(wc -c <"$1")  # not stat: no statx in old gVisor
    cp "$1" "$D/oci/blobs/sha256/$h"; echo "$h $s"
}
set -- $(blob "$D/layer.tar"); LAYER=$1 LAYER_SIZE=$2
printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/busybox","sleep","3600"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$LAYER" > "$D/config.json"
set -- $(blob "$D/config.json"); CONFIG=$1 CONFIG_SIZE=$2
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$CONFIG" "$CONFIG_SIZE" "$LAYER" "$LAYER_SIZE" > "$D/manifest.json"
set -- $(blob "$D/manifest.json"); MANIFEST=$1 MANIFEST_SIZE=$2
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s"}}]}' \
    "$MANIFEST" "$MANIFEST_SIZE" "$NAME" > "$D/oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$D/oci/oci-layout"
tar --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -C "$D/oci" -cf "$OUT" .
