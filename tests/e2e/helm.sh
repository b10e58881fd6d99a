# Helm (issue 24, part 3), sourced by scenario.sh in full mode:
#   helmchart-installs  a chart packed here (`helm package`, the bundle's bin/helm) goes in as a
#                       HelmChart with chartContent: k3s's helm-controller installs it with the
#                       bundle's job image (pods Running, the ConfigMap has the value), a new
#                       valuesContent upgrades it, deleting the HelmChart uninstalls it;
#   helm-cli            `helm install NAME ./chart` from a fresh shell (the install's helm link
#                       and kubeconfig), `helm list` shows it deployed, `helm upgrade`,
#                       `helm uninstall`.
# The chart: a Deployment of the bundle's busybox serving its ConfigMap with httpd, the
# ConfigMap's greeting from the values. Uses $K, $P, $RUN, $BUSYBOX, $CLEAN_ENV; prints STEP lines.

HELM_CHART_DIR=$RUN/e2e-web

# Writes the chart to $HELM_CHART_DIR.
helm_chart() {
  mkdir -p "$HELM_CHART_DIR/templates"
  cat >"$HELM_CHART_DIR/Chart.yaml" <<YAML
apiVersion: v2
name: e2e-web
version: 0.1.0
YAML
  cat >"$HELM_CHART_DIR/values.yaml" <<YAML
greeting: hello
image: $BUSYBOX
YAML
  cat >"$HELM_CHART_DIR/templates/web.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: '{{ .Release.Name }}-greeting'}
data:
  index.html: '{{ .Values.greeting }}'
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: '{{ .Release.Name }}'}
spec:
  replicas: 1
  selector: {matchLabels: {app: '{{ .Release.Name }}'}}
  template:
    metadata: {labels: {app: '{{ .Release.Name }}'}}
    spec:
      containers:
      - name: httpd
        image: '{{ .Values.image }}'
        imagePullPolicy: Never
        command: [httpd, -f, -p, "8080", -h, /www]
        volumeMounts: [{name: www, mountPath: /www}]
      volumes:
      - name: www
        configMap: {name: '{{ .Release.Name }}-greeting'}
YAML
}

# Polls (up to $3 s) until ConfigMap $2-greeting in namespace $1 says $4; prints what it says.
greeting_until() {
  t_end=$(( $(date +%s) + $3 ))
  while :; do
    G=$($K -n "$1" get configmap "$2-greeting" -o jsonpath='{.data.index\.html}' 2>/dev/null)
    [ "$G" = "$4" ] && { echo "$G"; return 0; }
    [ "$(date +%s)" -ge $t_end ] && { echo "$G"; return 1; }
    sleep 2
  done
}

# What went wrong with HelmChart $1, for the log.
helmchart_debug() {
  $K -n kube-system get helmchart "$1" -o yaml | tail -n 20
  $K -n kube-system get jobs,pods -l "helmcharts.helm.cattle.io/chart=$1" -o wide
  $K -n kube-system describe pods -l "helmcharts.helm.cattle.io/chart=$1" | tail -n 20
  $K -n kube-system logs -l "helmcharts.helm.cattle.io/chart=$1" --tail=30
}

# The HelmChart of the packed chart, with greeting $1.
helmchart() {
  $K apply -f - <<YAML
apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata: {name: e2e-web, namespace: kube-system}
spec:
  chartContent: $(base64 -w 0 "$RUN/e2e-web-0.1.0.tgz")
  targetNamespace: e2e-helm
  createNamespace: true
  valuesContent: |-
    greeting: $1
YAML
}

helmchart_steps() {
  HELM_LINE=$(sed -n 's/^\[[0-9.]*\] k3s: helm-controller //p' "$RUN/install.out" | head -n 1)
  case "$HELM_LINE" in
    on:*) ;;
    *) step helmchart-installs BLOCKED "install: helm-controller ${HELM_LINE:-not reported}"; return ;;
  esac
  if ! "$P/bin/helm" package "$HELM_CHART_DIR" -d "$RUN" >/dev/null; then
    step helmchart-installs FAIL "helm package $HELM_CHART_DIR failed"; return
  fi
  HELM_T0=$(now)
  helmchart from-helmchart >/dev/null
  # helm-controller creates the job once it has claimed the HelmChart.
  i=0; while [ $i -lt 30 ] && ! $K -n kube-system get job helm-install-e2e-web >/dev/null 2>&1; do sleep 1; i=$((i + 1)); done
  if ! $K -n kube-system wait --for=condition=complete job/helm-install-e2e-web --timeout=180s >/dev/null 2>&1 \
     || ! $K -n e2e-helm wait --for=condition=Available deployment/e2e-web --timeout=120s >/dev/null 2>&1 \
     || ! G=$(greeting_until e2e-helm e2e-web 10 from-helmchart); then
    step helmchart-installs FAIL "install: job, Deployment or ConfigMap not as expected (greeting [${G:-}])"
    helmchart_debug e2e-web; return
  fi
  # From the HelmChart's apply to its Deployment Available (the Job's run, then the chart's pod).
  INSTALL_S=$(awk "BEGIN { printf \"%.1f\", $(now) - $HELM_T0 }")
  JOB_IMAGE=$($K -n kube-system get job helm-install-e2e-web -o jsonpath='{.spec.template.spec.containers[0].image}')
  # A new valuesContent: helm-controller runs the job again, which upgrades the release.
  helmchart upgraded-by-helmchart >/dev/null
  if ! G=$(greeting_until e2e-helm e2e-web 180 upgraded-by-helmchart); then
    step helmchart-installs FAIL "upgrade: the ConfigMap says [$G], not upgraded-by-helmchart"
    helmchart_debug e2e-web; return
  fi
  REVISION=$($K -n e2e-helm get secrets -l owner=helm,name=e2e-web -o jsonpath='{range .items[*]}{.metadata.labels.version}{" "}{end}')
  # Deleting the HelmChart: its delete job uninstalls the release, then the HelmChart goes.
  $K -n kube-system delete helmchart e2e-web --wait --timeout=180s >/dev/null 2>&1
  LEFT=$($K -n e2e-helm get deployment/e2e-web configmap/e2e-web-greeting -o name 2>/dev/null; \
         $K -n e2e-helm get secrets -l owner=helm,name=e2e-web -o name 2>/dev/null)
  if $K -n kube-system get helmchart e2e-web >/dev/null 2>&1 || echo "$LEFT" | grep -q /; then
    step helmchart-installs FAIL "delete: left [$(echo "$LEFT" | tr '\n' ' ')]"
    helmchart_debug e2e-web; return
  fi
  step helmchart-installs ok "job image $JOB_IMAGE: installed (applied to Deployment Available in ${INSTALL_S}s), upgraded (release revisions $REVISION), uninstalled"
}

helm_cli_steps() {
  # From a fresh shell, as a user types it: the helm link and the install's kubeconfig.
  HELM="$CLEAN_ENV helm"
  OUT=$($HELM install e2e-cli "$HELM_CHART_DIR" --namespace e2e-helm-cli --create-namespace --set greeting=cli-1 2>&1) \
    && LIST=$($HELM list --namespace e2e-helm-cli 2>&1) && echo "$LIST" | grep -q '^e2e-cli[[:space:]].*[[:space:]]deployed[[:space:]]' \
    && $K -n e2e-helm-cli wait --for=condition=Available deployment/e2e-cli --timeout=120s >/dev/null \
    || { step helm-cli FAIL "install/list: $(echo "$OUT ${LIST:-}" | tail -n 3 | tr '\n' ' ')"; return; }
  OUT=$($HELM upgrade e2e-cli "$HELM_CHART_DIR" --namespace e2e-helm-cli --set greeting=cli-2 2>&1) \
    && G=$(greeting_until e2e-helm-cli e2e-cli 30 cli-2) \
    || { step helm-cli FAIL "upgrade: greeting [${G:-}] $(echo "$OUT" | tail -n 2 | tr '\n' ' ')"; return; }
  OUT=$($HELM uninstall e2e-cli --namespace e2e-helm-cli --wait 2>&1) \
    && [ -z "$($HELM list --namespace e2e-helm-cli --short 2>&1)" ] \
    && ! $K -n e2e-helm-cli get deployment e2e-cli >/dev/null 2>&1 \
    || { step helm-cli FAIL "uninstall: $(echo "$OUT" | tail -n 2 | tr '\n' ' ')"; return; }
  step helm-cli ok "$($CLEAN_ENV sh -c 'command -v helm'): install, list (deployed), upgrade (greeting cli-2), uninstall"
}

helm_steps() {
  echo "== helm"
  helm_chart
  helmchart_steps
  helm_cli_steps
}
