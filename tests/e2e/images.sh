# shellcheck shell=sh
# Images a k3s user brings, sourced by scenario.sh (full mode, k3s running, after the pod and
# Services steps). Inside the sandbox there is no network but lo, so the registry is the test's
# own: Debian's docker-registry with TLS (a CA made here with openssl) and basic auth
# (htpasswd -B), on 127.0.0.1, holding the bundle's busybox under a name only it has.
#   airgap-import      an archive dropped in DATA_DIR/images (k3s's airgap images dir, ours
#                      beside /var/lib/rancher/k3s/agent/images) is imported by `start`, a
#                      broken one beside it is named and skipped; a pod runs the image;
#   registries-mirror  /etc/rancher/k3s/registries.yaml makes the registry a docker.io mirror
#                      with auth and ca_file; after `stop` and `start` (k3s reads it at start,
#                      so does the installer) a pod with docker.io/library/<that name> is
#                      Running, pulled through the mirror;
#   images-import      `./install images import FILE` of a docker-archive, then a pod runs it;
#   proxy-pull         the same registry as registry.invalid:5443, a name that resolves only
#                      inside tests/e2e/http-proxy.py: a pod of that image is Running, so the
#                      pull went through the proxy that CONTAINERD_HTTPS_PROXY (k3s's variable
#                      for image pulls only, recorded at install by k3s-settings.sh) names,
#                      and the proxy's log shows the CONNECT.
# Anything written outside $RUN (registries.yaml) is removed again before uninstall, so
# host-files-restored still holds. Uses $K, $BUSYBOX, $BUNDLE, $D, $RUN, $E2E_PROXY_PORT.

IMG_PORT=5443
IMG_USER=k3s-gvisor
IMG_PASSWORD=e2e-password-1

# Runs a pod NAME with IMAGE (pull policy POLICY) and waits until it is Running.
img_pod_running() {
  $K run "$1" --image="$2" --image-pull-policy="$3" --command -- sleep 3600 >/dev/null \
    && $K wait --for=jsonpath='{.status.phase}'=Running "pod/$1" --timeout=120s >/dev/null
}

# The registry: certificate for 127.0.0.1 from a CA made here, bcrypt htpasswd, docker-registry.
img_registry_start() {
  R=$RUN/registry; mkdir -p "$R" || return 1
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$R/ca.key" -out "$R/ca.crt" -days 2 \
      -subj /CN=k3s-gvisor-e2e-ca 2>/dev/null \
    && openssl req -newkey rsa:2048 -nodes -keyout "$R/registry.key" -out "$R/registry.csr" \
      -subj /CN=127.0.0.1 2>/dev/null \
    && printf 'subjectAltName=IP:127.0.0.1,DNS:registry.invalid\n' > "$R/san" \
    && openssl x509 -req -in "$R/registry.csr" -CA "$R/ca.crt" -CAkey "$R/ca.key" -CAcreateserial \
      -out "$R/registry.crt" -days 2 -extfile "$R/san" 2>/dev/null \
    && htpasswd -Bbn "$IMG_USER" "$IMG_PASSWORD" > "$R/htpasswd" || return 1
  cat > "$R/config.yml" <<YAML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $R/data}}
http:
  addr: 127.0.0.1:$IMG_PORT
  tls: {certificate: $R/registry.crt, key: $R/registry.key}
auth:
  htpasswd: {realm: k3s-gvisor-e2e, path: $R/htpasswd}
YAML
  docker-registry serve "$R/config.yml" > "$R/registry.log" 2>&1 &
  IMG_REGISTRY_PID=$!
}

images_steps() {
  echo "== images: airgap dir, registries.yaml, images import"
  BUSYBOX_FILE=$BUNDLE/$(jq -r 'first(.images[] | select(.name == "busybox") | .file)' "$BUNDLE/bundle-manifest.json")
  S="skopeo --insecure-policy copy --quiet"

  # An airgap archive (zstd) and a broken one, dropped where start looks.
  mkdir -p "$D/images"
  $S "oci-archive:$BUSYBOX_FILE" "oci-archive:$RUN/airgap.tar:docker.io/library/k3sgv-airgap:1" \
    && zstd -q -f "$RUN/airgap.tar" -o "$D/images/k3sgv-airgap.tar.zst" \
    && printf 'not an image archive\n' > "$D/images/broken.tar" || echo "cannot make the airgap archives"

  # The registry, with the bundle's busybox under a name docker.io does not have.
  IMG_REGISTRY_PID=; IMG_PROXY_PID=
  img_registry_start || echo "cannot set up the registry (openssl, htpasswd)"
  PUSHED=no
  for _ in $(seq 20); do
    $S --dest-tls-verify=false --dest-creds "$IMG_USER:$IMG_PASSWORD" "oci-archive:$BUSYBOX_FILE" \
      "docker://127.0.0.1:$IMG_PORT/library/k3sgv-mirror-only:1" 2>"$RUN/push.err" && { PUSHED=yes; break; }
    sleep 1
  done
  [ $PUSHED = yes ] || { echo "push failed:"; cat "$RUN/push.err" "$RUN/registry/registry.log"; }

  # k3s's registries.yaml, on the host's shared root: what was there comes back afterwards.
  REG=/etc/rancher/k3s/registries.yaml
  REG_SAVED=; [ -e $REG ] && REG_SAVED=$RUN/registries.yaml.saved && cp -p $REG "$REG_SAVED"
  mkdir -p /etc/rancher/k3s
  cat > $REG <<YAML
$E2E_FILE_MARK
mirrors:
  docker.io:
    endpoint:
      - "https://127.0.0.1:$IMG_PORT"
configs:
  "127.0.0.1:$IMG_PORT":
    auth:
      username: $IMG_USER
      password: $IMG_PASSWORD
    tls:
      ca_file: $RUN/registry/ca.crt
  "registry.invalid:$IMG_PORT":
    auth:
      username: $IMG_USER
      password: $IMG_PASSWORD
    tls:
      ca_file: $RUN/registry/ca.crt
YAML
  # The proxy containerd was given at install; only it knows registry.invalid.
  python3 "$(dirname "$E2E_LIB")/http-proxy.py" --listen "127.0.0.1:$E2E_PROXY_PORT" \
    --map registry.invalid=127.0.0.1 --log "$RUN/proxy.log" > "$RUN/proxy.out" 2>&1 &
  IMG_PROXY_PID=$!

  echo "== images: stop, start"
  "$BUNDLE/install" stop --data-dir "$D" >/dev/null
  "$BUNDLE/install" start --data-dir "$D" > "$RUN/images-start.out" 2>&1; RC=$?
  cat "$RUN/images-start.out"

  IMPORTED="images: imported $D/images/k3sgv-airgap.tar.zst: docker.io/library/k3sgv-airgap:1"
  SKIPPED="images: skipped broken archive $D/images/broken.tar"
  if [ $RC = 0 ] && grep -qF "$IMPORTED" "$RUN/images-start.out" && grep -qF "$SKIPPED" "$RUN/images-start.out" \
    && img_pod_running e2e-airgap docker.io/library/k3sgv-airgap:1 Never; then
    step airgap-import ok "k3sgv-airgap.tar.zst imported at start, broken.tar named and skipped, pod Running"
  else
    step airgap-import FAIL "start rc=$RC; $(grep '^images:' "$RUN/images-start.out" | tr '\n' ' ' | cut -c1-300)"
    $K describe pod e2e-airgap 2>/dev/null | tail -n 8
  fi

  if [ $RC = 0 ] && grep -qF "registries: $REG applied" "$RUN/images-start.out" \
    && img_pod_running e2e-mirror docker.io/library/k3sgv-mirror-only:1 IfNotPresent; then
    step registries-mirror ok "docker.io/library/k3sgv-mirror-only:1 pulled from the TLS + auth mirror, pod Running"
  else
    step registries-mirror FAIL "pushed=$PUSHED start rc=$RC; $(grep '^registries' "$RUN/images-start.out" | tr '\n' ' ')"
    $K describe pod e2e-mirror 2>/dev/null | tail -n 8
    tail -n 5 "$D/logs/containerd.log"
  fi

  if [ $RC = 0 ] && img_pod_running e2e-proxied "registry.invalid:$IMG_PORT/library/k3sgv-mirror-only:1" IfNotPresent \
    && grep -q "CONNECT registry.invalid:$IMG_PORT" "$RUN/proxy.log"; then
    step proxy-pull ok "registry.invalid:$IMG_PORT pulled through CONTAINERD_HTTPS_PROXY ($(grep -c CONNECT "$RUN/proxy.log") CONNECT(s) in its log)"
  else
    step proxy-pull FAIL "start rc=$RC; proxy log: $(tail -n 2 "$RUN/proxy.log" 2>/dev/null | tr '\n' ' ')"
    $K describe pod e2e-proxied 2>/dev/null | tail -n 8
  fi

  # images import of a docker-archive, then a pod from it.
  $S "oci-archive:$BUSYBOX_FILE" "docker-archive:$RUN/imported.tar:docker.io/library/k3sgv-imported:1" \
    || echo "cannot make the docker-archive"
  OUT=$("$BUNDLE/install" images import --data-dir "$D" "$RUN/imported.tar" 2>&1); RC=$?
  echo "$OUT"
  LIST=$("$BUNDLE/install" images list --data-dir "$D" 2>&1)
  echo "$LIST"
  if [ $RC = 0 ] && echo "$OUT" | grep -qF "docker.io/library/k3sgv-imported:1" \
    && echo "$LIST" | grep -q "^docker.io/library/k3sgv-imported:1 " \
    && img_pod_running e2e-imported docker.io/library/k3sgv-imported:1 Never; then
    step images-import ok "docker-archive imported, listed, pod Running"
  else
    step images-import FAIL "rc=$RC $(echo "$OUT" | tail -n 1)"
    $K describe pod e2e-imported 2>/dev/null | tail -n 8
  fi

  # Leave the host's root and the cluster as they were: registries.yaml, the registry, the pods.
  if [ -n "$REG_SAVED" ]; then cp -p "$REG_SAVED" $REG; else rm -f $REG; fi
  [ -n "$IMG_REGISTRY_PID" ] && kill "$IMG_REGISTRY_PID" 2>/dev/null
  [ -n "$IMG_PROXY_PID" ] && kill "$IMG_PROXY_PID" 2>/dev/null
  $K delete pod e2e-airgap e2e-mirror e2e-imported e2e-proxied --wait --timeout=60s >/dev/null 2>&1
  rm -f "$D/images/broken.tar"
}
