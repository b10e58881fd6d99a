//! The echo workload several steps share (services, faults, ingress, lifecycle; was
//! tests/e2e/services.sh's shell helpers): busybox httpd pods that answer with their name,
//! a Service in front, and the client pod's HTTP GET of it; the retry loops ([`until`],
//! [`until_ok`]) those and two-nodes' cross-node checks wait with.

use std::time::{Duration, Instant};

use crate::Run;

/// The YAML of Deployment NAME (REPLICAS busybox httpd pods, label app=NAME, port 8080) whose
/// pods answer with their name (their hostname), so a client can tell the endpoints apart.
pub fn echo_deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: httpd
        image: {image}
        imagePullPolicy: Never
        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www']
"
    )
}

/// The YAML of ClusterIP Service NAME (port 80, named http) in front of [`echo_deployment`] NAME.
pub fn echo_service(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"
    )
}

/// One pod of [`echo_deployment`] NAME and its [`echo_service`], as one manifest.
pub fn echo_deployment_and_service(name: &str, image: &str) -> String {
    echo_workload(name, 1, image)
}

/// REPLICAS pods of [`echo_deployment`] NAME and its [`echo_service`], as one manifest.
pub fn echo_workload(name: &str, replicas: u32, image: &str) -> String {
    format!(
        "{}---\n{}",
        echo_deployment(name, replicas, image),
        echo_service(name)
    )
}

/// An HTTP GET as a shell command (its response on stdout): busybox nc, not wget (Debian's
/// busybox-static 1.35 wget segfaults, rc 139, in the pods and in the sandbox: it looks the
/// "http" port up through glibc's NSS, which a static binary cannot load). nc resolves a name
/// through glibc's resolver, search path included. `-w WAIT` bounds each request. NC is `nc`
/// in the client pod (the image's applet link), `busybox nc` in the sandbox itself.
pub fn nc_get(nc: &str, host: &str, port: u16, wait: u32) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | {nc} -w {wait} {host} {port}")
}

/// Keeps a response's last line (the answering pod's name), in the client pod: only shell
/// builtins and the image's applet links (the image has no tail or date link; in gvisor-2025
/// `... | tail -n 1` exits 127 there).
pub const BODY: &str = "{ b=; while read -r l; do b=$l; done; echo \"$b\"; }";

/// An answer is a response's last line: not empty, not one of busybox nc's own errors
/// ("nc: timed out", "nc: can't connect ..."), which come through the same output, nor
/// kubectl's failure ([`Run::get_in_client`]'s `error: ...`).
pub fn is_answer(answer: &str) -> bool {
    !answer.is_empty() && !answer.starts_with("nc:") && !answer.starts_with("error")
}

/// Calls `f` until it returns Some, `every` apart, giving up once `limit` has passed.
pub fn until<T>(limit: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// [`until`] `f` is Ok (the route, the pod or the Service is not there yet): Ok(its value), or
/// its last Err once `limit` has passed.
pub fn until_ok<T>(
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let mut last = String::new();
    until(limit, every, || match f() {
        Ok(v) => Some(v),
        Err(e) => {
            last = e;
            None
        }
    })
    .ok_or(last)
}

/// Asks HOST:PORT from the client pod every second until it answers ([`is_answer`]), up to
/// `limit` (services.sh's `get_until_answer`): Ok(the answer), or Err(the last reply). One slow
/// first request failed restart-k3s on plain Linux (2026-12-06), so a failed request is retried.
pub fn get_until_answer(
    run: &Run,
    host: &str,
    port: u16,
    limit: Duration,
) -> Result<String, String> {
    until_ok(limit, Duration::from_secs(1), || {
        let answer = run.get_in_client(host, port);
        match is_answer(&answer) {
            true => Ok(answer),
            false => Err(answer),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nc_errors_are_no_answer() {
        assert!(is_answer("fault-echo-6677f5dbb4-2845n"));
        assert!(!is_answer("nc: timed out"));
        assert!(!is_answer("error: pod e2e-busybox not found"));
        assert!(!is_answer(""));
    }

    #[test]
    fn until_stops_at_the_first_value_or_at_the_limit() {
        let mut calls = 0;
        let found = until(Duration::from_secs(5), Duration::ZERO, || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(found, Some(3));
        assert_eq!(until(Duration::ZERO, Duration::ZERO, || None::<u8>), None);
    }

    #[test]
    fn until_ok_keeps_the_last_failure() {
        let mut n = 0;
        let r: Result<(), String> = until_ok(Duration::ZERO, Duration::ZERO, || {
            n += 1;
            Err(format!("try {n}"))
        });
        assert_eq!(r, Err("try 1".to_string()));
        assert_eq!(until_ok(Duration::ZERO, Duration::ZERO, || Ok(5)), Ok(5));
    }

    #[test]
    fn the_manifests_name_the_deployment_and_its_service() {
        let yaml = echo_deployment_and_service("fault-echo", "docker.io/library/busybox:1");
        assert!(yaml.contains("metadata: {name: fault-echo}\nspec:\n  replicas: 1"));
        assert!(yaml.contains("image: docker.io/library/busybox:1"));
        assert!(yaml.contains("---\napiVersion: v1\nkind: Service"));
        assert!(yaml.contains("selector: {app: fault-echo}"));
        assert!(echo_deployment("echo", 2, "b").contains("  replicas: 2\n"));
    }

    #[test]
    fn the_get_is_the_shells_printf_into_nc() {
        assert_eq!(
            nc_get("nc", "10.43.0.5", 80, 3),
            r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 10.43.0.5 80"
        );
        let sh = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("printf 'HTTP/1.0 200 OK\\n\\npod-a\\n' | {BODY}"),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&sh.stdout), "pod-a\n");
    }
}
