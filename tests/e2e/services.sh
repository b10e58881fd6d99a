# The echo workload's shell helpers, sourced by lifecycle.sh (the one script still using them):
# a client pod's HTTP GET (`get`, `get_until_answer`) and the Deployment/Service YAML
# (`echo_deployment`, `echo_service`). The Services steps that were here (svc-clusterip,
# dns-kubernetes, svc-dns, svc-nodeport, loadbalancer-ip, svc-scale-down) are the e2e driver's
# now: crates/e2e-driver/src/services.rs (`driver services`), whose crate::echo has the Rust
# copy of these helpers; this file goes once lifecycle.sh is ported.
# Uses $K and $BUSYBOX from the sourcing script.

# kubectl exec in the client pod.
in_client() { $K exec e2e-busybox -- "$@" 2>&1; }

# An HTTP GET as a shell command: the body's last line (the answering pod's name). busybox nc,
# not wget: Debian's busybox-static 1.35 wget segfaults (rc 139, measured here and in the pods:
# it looks the "http" port up through glibc's NSS, which a static binary cannot load).
# nc resolves a name through glibc's resolver, search path included. -w 3 bounds each request.
# Inside the pod, use only shell builtins and the image's applet links (nc, sleep, ...): the
# image has no tail or date link. busybox's shell still ran them in the current gVisor and on
# Linux, but in gvisor-2025 `... | tail -n 1` exits 127. BODY keeps a response's last line.
GET="printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3"
BODY='{ b=; while read -r l; do b=$l; done; echo "$b"; }'
get() { in_client sh -c "$GET $1 $2 | $BODY"; }

# Polls `get HOST PORT` until it answers, up to $3 seconds; prints the last answer. busybox
# nc's own errors ("nc: timed out", "nc: can't connect ...") come through the same output
# and are no answer: one slow first request failed restart-k3s on plain Linux (2026-12-06).
get_until_answer() {
  t_end=$(( $(date +%s) + $3 ))
  while :; do
    A=$(get "$1" "$2") && [ -n "$A" ] && case "$A" in nc:*) false ;; esac && { echo "$A"; return 0; }
    [ "$(date +%s)" -ge $t_end ] && { echo "$A"; return 1; }
    sleep 1
  done
}

# The YAML of Deployment NAME (REPLICAS busybox httpd pods, label app=NAME, port 8080) whose
# pods answer with their name (their hostname), so a client can tell the endpoints apart.
echo_deployment() {
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1}
spec:
  replicas: $2
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec:
      containers:
      - name: httpd
        image: $BUSYBOX
        imagePullPolicy: Never
        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www']
YAML
}

# The YAML of ClusterIP Service NAME (port 80, named http) in front of echo_deployment NAME,
# after a `---`.
echo_service() {
  cat <<YAML
---
apiVersion: v1
kind: Service
metadata: {name: $1}
spec:
  selector: {app: $1}
  ports: [{name: http, port: 80, targetPort: 8080}]
YAML
}
