//! Ingress through k3s's traefik add-on (issue 24, part 5; was tests/e2e/ingress.sh), for
//! scenario.sh in full mode after the Services steps:
//!   ingress-routes     traefik's HelmChart installed (helm-controller's Job completed), its
//!                      Deployment Available; an Ingress with no ingressClassName (so the default
//!                      IngressClass, `traefik`) routes `Host: web.example` to one Deployment's
//!                      pods and `Host: api.example` to another's, both asked at the node's
//!                      address, port 80 (traefik's LoadBalancer Service), from the sandbox; a
//!                      third host gets traefik's 404.
//! Where install turned traefik off (`status --json`: addons_off), BLOCKED with its reason.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::Result;
use e2e_steps::{Status, Step};

use crate::bundle::image_ref;
use crate::echo::echo_deployment_and_service;
use crate::{first_chars, procs, Run};

const NS: &str = "e2e-ingress";

pub fn run(run: &Run) -> Result<()> {
    println!("== Ingress (traefik)");
    if let Some(why) = crate::addons::turned_off(run, "traefik") {
        run.step(
            Step::IngressRoutes,
            Status::Blocked,
            format!("install: {why}"),
        );
        return Ok(());
    }
    let busybox = image_ref(&run.bundle, "busybox")?;
    let kube_system = |args: &[&str]| {
        let mut all = vec!["-n", "kube-system"];
        all.extend(args);
        run.kubectl(&all)
    };
    let text_of = |r: Result<String>| r.unwrap_or_else(|e| format!("{e:#}"));
    let wait_t0 = run.now();
    // k3s's helm-controller runs the install as Job helm-install-traefik (kubectl wait fails at
    // once on an object that does not exist yet).
    for _ in 0..60 {
        if kube_system(&["get", "job/helm-install-traefik"]).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if kube_system(&[
        "wait",
        "--for=condition=Complete",
        "job/helm-install-traefik",
        "--timeout=240s",
    ])
    .is_err()
    {
        let label = "helmcharts.helm.cattle.io/chart=traefik";
        let objects = text_of(kube_system(&[
            "get",
            "job,pod",
            "-l",
            label,
            "--no-headers",
        ]));
        run.step(
            Step::IngressRoutes,
            Status::Fail,
            format!(
                "Job helm-install-traefik not Complete: {}",
                first_chars(&objects.replace('\n', " "), 300)
            ),
        );
        println!(
            "{}",
            text_of(kube_system(&["logs", "-l", label, "--tail=20"]))
        );
        return Ok(());
    }
    if kube_system(&[
        "wait",
        "--for=condition=Available",
        "deployment/traefik",
        "--timeout=180s",
    ])
    .is_err()
    {
        let pods = text_of(kube_system(&[
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=traefik",
            "--no-headers",
        ]));
        run.step(
            Step::IngressRoutes,
            Status::Fail,
            format!(
                "deployment traefik not Available: {}",
                pods.replace('\n', " ")
            ),
        );
        println!(
            "{}",
            text_of(kube_system(&["logs", "deploy/traefik", "--tail=20"]))
        );
        return Ok(());
    }
    let waited = run.now() - wait_t0;
    // How long k3s's HelmChart path took for traefik, from the API's own timestamps (the install
    // ran at the first start, long before this step): the HelmChart's creation (k3s's deploy
    // controller applying manifests/traefik.yaml) to its Job's completion (helm install done).
    let get = |args: &[&str]| run.kubectl(args).unwrap_or_default().trim().to_string();
    let hc_created = get(&[
        "-n",
        "kube-system",
        "get",
        "helmchart",
        "traefik",
        "-o",
        "jsonpath={.metadata.creationTimestamp}",
    ]);
    let job_times = get(&[
        "-n",
        "kube-system",
        "get",
        "job",
        "helm-install-traefik",
        "-o",
        "jsonpath={.status.startTime} {.status.completionTime}",
    ]);
    let install_time = install_time(&hc_created, &job_times);
    let default_class = get(&[
        "get",
        "ingressclass",
        "-o",
        "jsonpath={range .items[?(@.metadata.annotations.ingressclass\\.kubernetes\\.io/is-default-class==\"true\")]}{.metadata.name}{end}",
    ]);
    let node_ip = get(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    let _ = run.kubectl(&["create", "namespace", NS]);
    if let Err(e) = run.kubectl_apply_in(NS, &manifests(&busybox)) {
        println!("{e:#}");
    }
    if run
        .kubectl(&[
            "-n",
            NS,
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "deployment/api",
            "--timeout=120s",
        ])
        .is_err()
    {
        run.step(
            Step::IngressRoutes,
            Status::Fail,
            "deployments web/api not Available",
        );
        println!("{}", text_of(run.kubectl(&["-n", NS, "get", "pods"])));
        return Ok(());
    }
    let ask = |host: &str| http_host(&node_ip, host);
    let web = host_reaches(run, &ask, "web.example", "web", 60);
    let api = match &web {
        Ok(_) => Some(host_reaches(run, &ask, "api.example", "api", 30)),
        Err(_) => None,
    };
    let other = ask("other.example");
    let address = get(&[
        "-n",
        NS,
        "get",
        "ingress",
        "sites",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[*].ip}",
    ]);
    let routed = web.is_ok() && api.as_ref().is_some_and(Result::is_ok);
    let answer = |r: &Result<String, String>| match r {
        Ok(a) | Err(a) => a.clone(),
    };
    let web = answer(&web);
    let api = api.as_ref().map(answer).unwrap_or_default();
    if routed && other.starts_with("404 ") {
        run.step(
            Step::IngressRoutes,
            Status::Ok,
            format!(
                "traefik by its HelmChart: {install_time}, Available {waited:.1}s into this step; \
                 default IngressClass {default_class}; {node_ip}:80 Host web.example -> {web}, \
                 api.example -> {api}, other.example -> {other}; Ingress address [{address}]; \
                 traefik RSS {}",
                rss_text(&traefik_rss())
            ),
        );
    } else {
        run.step(
            Step::IngressRoutes,
            Status::Fail,
            format!(
                "{node_ip}:80 Host web.example -> [{web}], api.example -> [{api}], \
                 other.example -> [{other}] (default IngressClass [{default_class}]; traefik by \
                 its HelmChart: {install_time})"
            ),
        );
        println!(
            "{}",
            text_of(kube_system(&["get", "svc", "traefik", "-o", "wide"]))
        );
        println!(
            "{}",
            text_of(kube_system(&["logs", "deploy/traefik", "--tail=20"]))
        );
    }
    let _ = run.kubectl(&["delete", "namespace", NS, "--wait=false"]);
    Ok(())
}

/// Two Deployments of httpd pods that answer with their name, a Service in front of each, and
/// the Ingress `sites` routing one host to each (no ingressClassName: the default class).
fn manifests(image: &str) -> String {
    format!(
        "{}---\n{}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: sites}}
spec:
  rules:
  - host: web.example
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]
  - host: api.example
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}]
",
        echo_deployment_and_service("web", image),
        echo_deployment_and_service("api", image)
    )
}

/// `HelmChart created to Job complete in Ns (the Job ran Ms)` from the HelmChart's creation
/// and the Job's `startTime completionTime` (RFC 3339); `?` for a time the API did not give.
fn install_time(hc_created: &str, job_times: &str) -> String {
    let (start, complete) = job_times.split_once(' ').unwrap_or((job_times, ""));
    let between = |a: &str, b: &str| {
        let parse = chrono::DateTime::parse_from_rfc3339;
        match (parse(a), parse(b)) {
            (Ok(a), Ok(b)) => (b - a).num_seconds().to_string(),
            _ => "?".to_string(),
        }
    };
    format!(
        "HelmChart created to Job complete in {}s (the Job ran {}s)",
        between(hc_created, complete),
        between(start, complete)
    )
}

/// GET http://NODE_IP:80/ (traefik's LoadBalancer) with Host: HOST: `<status> <the body's last
/// line>`, or `error: ...`. An HTTP/1.1 client that waits for the answer with the connection
/// open, not `printf | nc`: nc half-closes the connection once the request is written, which
/// traefik (Go's net/http) takes for the client going away: it cancels the proxied request and
/// answers 499 "Client Closed Request" (the first runs' failure, in gVisor and on plain Linux).
/// Only traefik's own 404, which it answers at once, got through. Not busybox wget either
/// (crate::echo: it can segfault here). 5 s per connect or read, 10 s in all.
fn http_host(node_ip: &str, host: &str) -> String {
    match get(node_ip, host) {
        Ok((status, body)) => format!("{status} {}", last_body_line(&body)),
        Err(e) => format!("error: {e}"),
    }
}

fn get(node_ip: &str, host: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = (node_ip, 80)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("no address for {node_ip}")))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: k3s-gvisor-e2e\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk)?;
        let eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(parsed) = parse_response(&buf, eof) {
            return parsed.map_err(std::io::Error::other);
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::other("no complete answer within 10 s"));
        }
    }
}

/// An HTTP/1.1 response in `buf`: its status and body once complete (by Content-Length, the
/// chunked encoding's last chunk, or the connection's end), None while more is to come.
fn parse_response(buf: &[u8], eof: bool) -> Option<Result<(u16, Vec<u8>), String>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return eof.then(|| Err(format!("connection closed after {} bytes", buf.len())));
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let body = &buf[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let Some(status) = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
    else {
        return Some(Err(format!("not an HTTP status line: {status_line:?}")));
    };
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return match dechunk(body) {
            Some(body) => Some(Ok((status, body))),
            None if eof => Some(Err("connection closed inside a chunked body".into())),
            None => None,
        };
    }
    if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() >= length {
            return Some(Ok((status, body[..length].to_vec())));
        }
    }
    eof.then(|| Ok((status, body.to_vec())))
}

/// A chunked body decoded, once its last (empty) chunk is in.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if body.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// The body's last non-blank line, trimmed (the answering pod's name, or traefik's
/// `404 page not found`).
fn last_body_line(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

/// The answer without its status (`sed 's/^[0-9][0-9][0-9] //'`): the pod's name, or the error.
fn strip_status(answer: &str) -> &str {
    match answer.split_at_checked(4) {
        Some((code, rest))
            if code.ends_with(' ') && code[..3].bytes().all(|b| b.is_ascii_digit()) =>
        {
            rest
        }
        _ => answer,
    }
}

/// Asks for HOST until the answer is one of the pods of Deployment APP, up to `limit` seconds:
/// Ok(the pod), or Err(the last answer).
fn host_reaches(
    run: &Run,
    ask: &dyn Fn(&str) -> String,
    host: &str,
    app: &str,
    limit: u64,
) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let answer = strip_status(&ask(host)).to_string();
        let pods = run
            .kubectl(&[
                "-n",
                NS,
                "get",
                "pods",
                "-l",
                &format!("app={app}"),
                "-o",
                "name",
            ])
            .unwrap_or_default();
        if is_pod(&pods, &answer) {
            return Ok(answer);
        }
        if start.elapsed() >= Duration::from_secs(limit) {
            return Err(answer);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `answer` is one of `kubectl get pods -o name`'s pods (`pod/NAME` lines).
fn is_pod(pods: &str, answer: &str) -> bool {
    pods.lines()
        .any(|l| l.strip_prefix("pod/").unwrap_or(l) == answer)
}

/// traefik's resident memory: VmRSS kB per process whose comm is `traefik` (the sandbox, or
/// the host, sees the pods' processes in its /proc).
fn traefik_rss() -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == "traefik")
        })
        .filter_map(|e| procs::vm_rss_kb(&std::fs::read_to_string(e.path().join("status")).ok()?))
        .collect()
}

/// `<kB> kB in <n> process(es)`, or nothing when none runs.
fn rss_text(kbs: &[u64]) -> String {
    if kbs.is_empty() {
        return String::new();
    }
    format!(
        "{} kB in {} process(es)",
        kbs.iter().sum::<u64>(),
        kbs.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helmchart_times_are_seconds_between_api_timestamps() {
        assert_eq!(
            install_time(
                "2026-12-06T15:10:00Z",
                "2026-12-06T15:10:05Z 2026-12-06T15:10:42Z"
            ),
            "HelmChart created to Job complete in 42s (the Job ran 37s)"
        );
        assert_eq!(
            install_time("", "2026-12-06T15:10:05Z"),
            "HelmChart created to Job complete in ?s (the Job ran ?s)"
        );
    }

    #[test]
    fn responses_are_complete_by_length_chunks_or_end() {
        let by_length = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nweb-7f-abcd\n";
        assert_eq!(
            parse_response(by_length, false),
            Some(Ok((200, b"web-7f-abcd\n".to_vec())))
        );
        assert_eq!(parse_response(&by_length[..40], false), None);
        let chunked = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n\
                        5\r\n404 p\r\ne\r\nage not found\n\r\n0\r\n\r\n";
        let Some(Ok((status, body))) = parse_response(chunked, false) else {
            panic!("chunked body not complete");
        };
        assert_eq!(
            (status, last_body_line(&body)),
            (404, "404 page not found".into())
        );
        assert_eq!(parse_response(&chunked[..70], false), None);
        assert!(matches!(parse_response(&chunked[..70], true), Some(Err(_))));
        assert_eq!(
            parse_response(b"HTTP/1.0 499 x\r\n\r\nClient Closed", true),
            Some(Ok((499, b"Client Closed".to_vec())))
        );
        assert!(matches!(
            parse_response(b"SSH-2.0\r\n\r\n", false),
            Some(Err(_))
        ));
        assert!(matches!(parse_response(b"", true), Some(Err(_))));
    }

    #[test]
    fn an_answer_is_a_pod_of_the_deployment_once_its_status_is_off() {
        assert_eq!(strip_status("200 web-7f-abcd"), "web-7f-abcd");
        assert_eq!(
            strip_status("error: connection refused"),
            "error: connection refused"
        );
        let pods = "pod/web-7f-abcd\npod/web-7f-efgh\n";
        assert!(is_pod(pods, strip_status("200 web-7f-abcd")));
        assert!(!is_pod(pods, "web-7f"));
        assert!(!is_pod(pods, ""));
        assert_eq!(last_body_line(b"\n"), "");
    }

    #[test]
    fn rss_sums_traefiks_processes() {
        assert_eq!(rss_text(&[51200, 800]), "52000 kB in 2 process(es)");
        assert_eq!(rss_text(&[]), "");
    }

    #[test]
    fn the_ingress_routes_each_host_to_its_service() {
        let yaml = manifests("docker.io/library/busybox:1");
        assert_eq!(yaml.matches("kind: Deployment").count(), 2);
        assert_eq!(yaml.matches("kind: Service").count(), 2);
        assert!(yaml.contains(
            "- host: api.example\n    http:\n      paths: [{path: /, pathType: \
                               Prefix, backend: {service: {name: api, port: {number: 80}}}}]"
        ));
        assert!(!yaml.contains("ingressClassName"));
    }
}
