# Ingress through k3s's traefik add-on (issue 24, part 5), sourced by scenario.sh in full mode
# after the Services steps (it uses their echo_deployment and the add-ons' addon_off).
#   ingress-routes     traefik's HelmChart installed (helm-controller's Job completed), its
#                      Deployment Available; an Ingress with no ingressClassName (so the default
#                      IngressClass, `traefik`) routes `Host: web.example` to one Deployment's
#                      pods and `Host: api.example` to another's, both asked at the node's
#                      address, port 80 (traefik's LoadBalancer Service), from the sandbox; a
#                      third host gets traefik's 404.
# Where install turned traefik off, BLOCKED with install's reason.
# Uses $K, $RUN, $NODE_IP from scenario.sh; prints STEP lines.

INGRESS_NS=e2e-ingress

# Seconds between two of the API's RFC 3339 timestamps.
seconds_between() { echo $(( $(date -d "$2" +%s) - $(date -d "$1" +%s) )); }

# traefik's resident memory, summed over its processes (the sandbox, or the host, sees the pods'
# processes in its /proc): `<kB> kB`, or nothing when none runs.
traefik_rss() {
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = traefik ] && rss_kb "${p#/proc/}"
  done | awk '$1 != "" { kb += $1; n++ } END { if (n) printf "%d kB in %d process(es)", kb, n }'
}

# GET http://$NODE_IP:80/ (traefik's LoadBalancer) with Host: $1: `<status> <the body's last
# line>`, or python's error. python3's urllib, an HTTP/1.1 client that waits for the answer, not
# `printf | nc`: nc half-closes the connection once the request is written, which traefik (Go's
# net/http) takes for the client going away: it cancels the proxied request and answers 499
# "Client Closed Request" (the first runs' failure, in gVisor and on plain Linux; a Go server on
# the host that answers after 20 ms does the same to nc). Only traefik's own 404, which it
# answers at once, got through. Not busybox wget either (services.sh: it can segfault here).
http_host() {
  timeout 10 python3 - "$NODE_IP" "$1" <<'PY' 2>&1 | tail -n 1
import sys, urllib.error, urllib.request
request = urllib.request.Request(f"http://{sys.argv[1]}:80/", headers={"Host": sys.argv[2]})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(request, timeout=5) as answer:
        status, body = answer.status, answer.read()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read()
lines = body.decode(errors="replace").strip().splitlines()
print(status, lines[-1] if lines else "")
PY
}

# The body's last line of the answer to Host: $1 (the answering pod's name), or the error.
get_host() { http_host "$1" | sed 's/^[0-9][0-9][0-9] //'; }

# Polls get_host $1 until the answer is one of the pods of Deployment $2, up to $3 seconds;
# prints the last answer.
host_reaches() {
  t_end=$(( $(date +%s) + $3 ))
  while :; do
    A=$(get_host "$1")
    $K -n $INGRESS_NS get pods -l "app=$2" -o name | sed 's|^pod/||' | grep -qx "$A" && { echo "$A"; return 0; }
    [ "$(date +%s)" -ge $t_end ] && { echo "$A"; return 1; }
    sleep 1
  done
}

ingress_steps() {
  echo "== Ingress (traefik)"
  WHY=$(addon_off traefik)
  if [ -n "$WHY" ]; then step ingress-routes BLOCKED "install: $WHY"; return; fi
  WAIT_T0=$(now)
  # k3s's helm-controller runs the install as Job helm-install-traefik (kubectl wait fails at
  # once on an object that does not exist yet).
  i=0; while [ $i -lt 60 ] && ! $K -n kube-system get job/helm-install-traefik >/dev/null 2>&1; do sleep 1; i=$((i + 1)); done
  if ! $K -n kube-system wait --for=condition=Complete job/helm-install-traefik --timeout=240s >/dev/null 2>&1; then
    step ingress-routes FAIL "Job helm-install-traefik not Complete: $($K -n kube-system get job,pod -l helmcharts.helm.cattle.io/chart=traefik --no-headers 2>&1 | tr '\n' ' ' | cut -c1-300)"
    $K -n kube-system logs -l helmcharts.helm.cattle.io/chart=traefik --tail=20
    return
  fi
  if ! $K -n kube-system wait --for=condition=Available deployment/traefik --timeout=180s >/dev/null 2>&1; then
    step ingress-routes FAIL "deployment traefik not Available: $($K -n kube-system get pods -l app.kubernetes.io/name=traefik --no-headers 2>&1 | tr '\n' ' ')"
    $K -n kube-system logs deploy/traefik --tail=20
    return
  fi
  WAITED=$(awk "BEGIN { printf \"%.1f\", $(now) - $WAIT_T0 }")
  # How long k3s's HelmChart path took for traefik, from the API's own timestamps (the install
  # ran at the first start, long before this step): the HelmChart's creation (k3s's deploy
  # controller applying manifests/traefik.yaml) to its Job's completion (helm install done).
  HC_CREATED=$($K -n kube-system get helmchart traefik -o jsonpath='{.metadata.creationTimestamp}')
  JOB_TIMES=$($K -n kube-system get job helm-install-traefik -o jsonpath='{.status.startTime} {.status.completionTime}')
  INSTALL_TIME="HelmChart created to Job complete in $(seconds_between "$HC_CREATED" "${JOB_TIMES#* }")s (the Job ran $(seconds_between "${JOB_TIMES% *}" "${JOB_TIMES#* }")s)"
  DEFAULT_CLASS=$($K get ingressclass -o jsonpath='{range .items[?(@.metadata.annotations.ingressclass\.kubernetes\.io/is-default-class=="true")]}{.metadata.name}{end}')
  $K create namespace $INGRESS_NS >/dev/null
  { echo_deployment web 1; echo ---; echo_deployment api 1; } | $K -n $INGRESS_NS apply -f - >/dev/null
  $K -n $INGRESS_NS apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: sites}
spec:
  rules:
  - host: web.example
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]
  - host: api.example
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}]
YAML
  $K -n $INGRESS_NS wait --for=condition=Available deployment/web deployment/api --timeout=120s >/dev/null \
    || { step ingress-routes FAIL "deployments web/api not Available"; $K -n $INGRESS_NS get pods; return; }
  WEB='' API=''
  WEB=$(host_reaches web.example web 60) && API=$(host_reaches api.example api 30)
  OK=$?
  OTHER=$(http_host other.example)
  ADDRESS=$($K -n $INGRESS_NS get ingress sites -o jsonpath='{.status.loadBalancer.ingress[*].ip}')
  if [ $OK -eq 0 ] && echo "$OTHER" | grep -q '^404 '; then
    step ingress-routes ok "traefik by its HelmChart: $INSTALL_TIME, Available ${WAITED}s into this step; default IngressClass $DEFAULT_CLASS; $NODE_IP:80 Host web.example -> $WEB, api.example -> $API, other.example -> $OTHER; Ingress address [$ADDRESS]; traefik RSS $(traefik_rss)"
  else
    step ingress-routes FAIL "$NODE_IP:80 Host web.example -> [${WEB:-}], api.example -> [${API:-}], other.example -> [$OTHER] (default IngressClass [$DEFAULT_CLASS]; traefik by its HelmChart: $INSTALL_TIME)"
    $K -n kube-system get svc traefik -o wide
    $K -n kube-system logs deploy/traefik --tail=20
  fi
  $K delete namespace $INGRESS_NS --wait=false >/dev/null
}
