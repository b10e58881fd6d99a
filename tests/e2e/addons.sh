# k3s's packaged add-ons that a user expects to just work (issue 24), sourced by scenario.sh in
# full mode. The same checks wherever the add-on runs; where install turned one off, its steps
# are BLOCKED with install's reason (which docs/installer.md quotes as measured).
#   pvc-bound          (before stop) a PVC of the default StorageClass (local-path) is bound to
#                      a volume under the data dir, and a pod writes to it;
#   pvc-data-survives  (after stop/start) the writer is gone; a new pod reads the same bytes;
#   kubectl-top        `kubectl top node` and `kubectl top pod` answer with numbers;
#   hpa-scales         an HPA on CPU scales a Deployment 1 -> 3 under load and back to 1 after
#                      it (bounded waits on the Deployment's replicas, no timed assertion).
# Pods live in their own namespace, so the scenario's count of default's pods is unchanged.
# Uses $K, $D, $BUSYBOX, $RUN from scenario.sh; prints STEP lines.

ADDONS_NS=e2e-addons

# Install's reason for turning add-on $1 off, or nothing when it runs.
addon_off() { sed -n "s/^\[[0-9.]*\] k3s: add-on $1 off[^:]*: //p" "$RUN/install.out" | head -n 1; }

# A pod of the busybox image in $ADDONS_NS that runs `sh -c $2` once with the PVC at /data.
storage_pod() {
  $K -n $ADDONS_NS apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: $BUSYBOX
    imagePullPolicy: Never
    command: [sh, -c, '$2']
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: e2e-data}
YAML
}

# Waits (bounded) for pod $1 to end; succeeds if it succeeded.
pod_succeeded() {
  $K -n $ADDONS_NS wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$1" --timeout=120s >/dev/null 2>&1
}

# Before the scenario's stop: a volume, written once.
addons_before_stop() {
  echo "== add-ons: local-path storage"
  WHY=$(addon_off local-storage)
  if [ -n "$WHY" ]; then step pvc-bound BLOCKED "install: $WHY"; return; fi
  $K create namespace $ADDONS_NS >/dev/null
  # The default StorageClass, as a chart's PVC without storageClassName gets it.
  DEFAULT_SC=$($K get storageclass -o jsonpath='{range .items[?(@.metadata.annotations.storageclass\.kubernetes\.io/is-default-class=="true")]}{.metadata.name}{end}')
  $K -n $ADDONS_NS apply -f - <<YAML >/dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: e2e-data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
YAML
  # The bytes: this run's directory name, unique per run.
  PVC_BYTES="written-by-e2e-$(basename "$RUN")"
  storage_pod writer "echo $PVC_BYTES > /data/bytes && cat /data/bytes" >/dev/null
  if pod_succeeded writer && [ "$($K -n $ADDONS_NS logs writer)" = "$PVC_BYTES" ]; then
    PV=$($K -n $ADDONS_NS get pvc e2e-data -o jsonpath='{.spec.volumeName}')
    PV_PATH=$($K get pv "$PV" -o jsonpath='{.spec.local.path}{.spec.hostPath.path}')
    case "$PV_PATH" in
      "$D"/k3s/storage/*) step pvc-bound ok "StorageClass $DEFAULT_SC (default), $PV at $PV_PATH, written" ;;
      *) step pvc-bound FAIL "$PV is at [$PV_PATH], not under $D/k3s/storage (k3s's default)" ;;
    esac
  else
    step pvc-bound FAIL "default StorageClass [$DEFAULT_SC], writer: $($K -n $ADDONS_NS get pod writer -o jsonpath='{.status.phase}' 2>&1)"
    $K -n $ADDONS_NS describe pvc e2e-data | tail -n 8
    $K -n kube-system logs deploy/local-path-provisioner --tail=20
  fi
}

# After the scenario's stop and start.
addons_steps() {
  echo "== add-ons"
  if [ -z "$(addon_off local-storage)" ]; then
    $K -n $ADDONS_NS delete pod writer --wait --timeout=60s >/dev/null
    storage_pod reader 'cat /data/bytes' >/dev/null
    GOT=$(pod_succeeded reader && $K -n $ADDONS_NS logs reader)
    [ -n "${PVC_BYTES:-}" ] && [ "$GOT" = "$PVC_BYTES" ] \
      && step pvc-data-survives ok "after the writer's deletion and stop/start, a new pod read \"$GOT\"" \
      || { step pvc-data-survives FAIL "read [$GOT], written [${PVC_BYTES:-}]"; $K -n $ADDONS_NS describe pod reader | tail -n 10; }
  else
    step pvc-data-survives BLOCKED "install: $(addon_off local-storage)"
  fi
  WHY=$(addon_off metrics-server)
  if [ -n "$WHY" ]; then
    step kubectl-top BLOCKED "install: $WHY"; step hpa-scales BLOCKED "install: $WHY"; return
  fi
  kubectl_top_steps && hpa_steps
}

# Polls command $2.. until its output matches regex $1, up to 120 s (metrics-server needs two
# scrapes, --metric-resolution=15s, before a node or pod has a rate); prints the last output.
until_matches() {
  re=$1; shift; t_end=$(( $(date +%s) + 120 ))
  while :; do
    OUT=$("$@" 2>&1) && echo "$OUT" | grep -Eq "$re" && { echo "$OUT"; return 0; }
    [ "$(date +%s)" -ge $t_end ] && { echo "$OUT"; return 1; }
    sleep 3
  done
}

# What a failed metrics step needs to be understood: metrics-server's pod and its readiness
# events, its log, and what it scrapes (the kubelet's /metrics/resource, through the API server).
metrics_diagnosis() {
  echo "== metrics-server diagnosis"
  $K -n kube-system get pods -l k8s-app=metrics-server -o wide 2>&1
  $K -n kube-system describe pods -l k8s-app=metrics-server 2>&1 | sed -n '/^Events:/,$p' | tail -n 15
  $K -n kube-system logs deploy/metrics-server --tail=40 2>&1
  for n in $($K get nodes -o jsonpath='{.items[*].metadata.name}'); do
    echo "-- /api/v1/nodes/$n/proxy/metrics/resource (non-comment lines)"
    $K get --raw "/api/v1/nodes/$n/proxy/metrics/resource" 2>&1 | grep -v '^#' | head -n 30
  done
}

kubectl_top_steps() {
  # The Metrics API is served once metrics-server is Ready and the API server reaches it.
  $K wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=120s >/dev/null 2>&1 || {
    step kubectl-top FAIL "apiservice v1beta1.metrics.k8s.io not Available: $($K get apiservice v1beta1.metrics.k8s.io --no-headers 2>&1)"
    metrics_diagnosis; return 1
  }
  # shellcheck disable=SC2086 # K is a command and its arguments.
  NODE=$(until_matches ' [0-9]+m +[0-9]+% +[0-9]+Mi +[0-9]+%' $K top node --no-headers) \
    && POD=$(until_matches '^e2e-busybox +[0-9]+m +[0-9]+Mi' $K top pod e2e-busybox --no-headers) \
    && step kubectl-top ok "node: $(echo "$NODE" | tr -s ' ' | head -n 1); pod: $(echo "$POD" | tr -s ' ')" \
    || { step kubectl-top FAIL "node: [$(echo "$NODE" | head -n 2 | tr '\n' ' ')] pod: [$(echo "${POD:-}" | head -n 2 | tr '\n' ' ')]"
         metrics_diagnosis; return 1; }
}

hpa_steps() {
  # Idle pods (sleep) that request 100m; load is a busy loop started in one of them, stopped
  # by a file (in /: the image has no /tmp). At 50% of the request, one busy pod asks for the
  # maximum.
  $K -n $ADDONS_NS apply -f - <<YAML >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: burn}
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata: {labels: {app: burn}}
    spec:
      containers:
      - name: main
        image: $BUSYBOX
        imagePullPolicy: Never
        command: [sleep, "3600"]
        resources: {requests: {cpu: 100m}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: burn}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burn}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 0}
YAML
  $K -n $ADDONS_NS wait --for=condition=Available deployment/burn --timeout=120s >/dev/null || { step hpa-scales FAIL "deployment burn not Available"; return; }
  # The HPA has read the idle pod's CPU before the load starts.
  $K -n $ADDONS_NS wait --for=condition=ScalingActive hpa/burn --timeout=120s >/dev/null \
    || { step hpa-scales FAIL "HPA never ScalingActive: $($K -n $ADDONS_NS describe hpa burn | tail -n 5 | tr '\n' ' ')"; return; }
  BURNER=$($K -n $ADDONS_NS get pod -l app=burn -o jsonpath='{.items[0].metadata.name}')
  $K -n $ADDONS_NS exec "$BURNER" -- sh -c '(while [ ! -e /stop ]; do :; done) </dev/null >/dev/null 2>&1 &'
  if $K -n $ADDONS_NS wait --for=jsonpath='{.spec.replicas}'=3 deployment/burn --timeout=180s >/dev/null; then
    UP=$($K -n $ADDONS_NS get hpa burn -o jsonpath='{.status.currentMetrics[0].resource.current.averageUtilization}')
    $K -n $ADDONS_NS exec "$BURNER" -- sh -c ': > /stop' || { step hpa-scales FAIL "cannot stop the load in $BURNER"; return; }
    $K -n $ADDONS_NS wait --for=jsonpath='{.spec.replicas}'=1 deployment/burn --timeout=180s >/dev/null \
      && step hpa-scales ok "1 -> 3 under load (${UP}% of the CPU request), back to 1 after it" \
      || step hpa-scales FAIL "scaled up to 3 but not back down: $($K -n $ADDONS_NS get hpa burn --no-headers 2>&1)"
  else
    step hpa-scales FAIL "no scale-up under load: $($K -n $ADDONS_NS get hpa burn --no-headers 2>&1)"
    $K -n $ADDONS_NS describe hpa burn | tail -n 10
  fi
  $K -n $ADDONS_NS exec "$BURNER" -- sh -c ': > /stop' 2>/dev/null
}
