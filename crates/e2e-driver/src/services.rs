//! Services and cluster DNS (was tests/e2e/services.sh's `services_steps`), for scenario.sh in
//! full mode with k3s running and the client pod e2e-busybox running. Whoever serves Services
//! here (kube-proxy on plain Linux, svcproxy in gVisor: `status --json`'s `service_proxy`), the
//! same checks:
//!   svc-deploy         a Deployment `echo` of 2 busybox httpd pods (crate::echo) behind the
//!                      ClusterIP Service `echo` and the NodePort 30080 gets Available;
//!   svc-clusterip      the ClusterIP answers another pod (e2e-busybox) by IP, from both of its
//!                      endpoints (load is spread);
//!   dns-kubernetes     CoreDNS answers through the kube-dns Service (10.43.0.10):
//!                      `nslookup kubernetes.default.svc.cluster.local` is 10.43.0.1, and
//!                      `kubernetes.default` through the pod's search path reaches the API;
//!   svc-dns            the Service by its short name (`echo`, the pod's search path);
//!   svc-nodeport       the NodePort answers on the node's address, from the sandbox itself;
//!   loadbalancer-ip    a LoadBalancer Service gets the node's address as its EXTERNAL-IP (k3s's
//!                      servicelb is not shipped: svcproxy writes it, as servicelb would) and
//!                      answers there at its port, from the sandbox (svcproxy serves the port in
//!                      gVisor; kube-proxy's rules for the ingress IP on plain Linux);
//!   svc-scale-down     after scaling 2 -> 1, the gone pod gets no request later than 5 s after
//!                      the scale (it keeps serving while Terminating: httpd as PID 1 ignores
//!                      SIGTERM, so only the proxy dropping its endpoint can stop its answers).
//! Prints `TIME services-deployed` once the Deployment is Available (xtask's timeline). The
//! scale-down's requests go to RUN/scale-down.log, their counts to RUN/scale-down.result.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;
use e2e_steps::{Status, Step};

use crate::bundle::image_ref;
use crate::echo::{echo_deployment, echo_service, get_until_answer, nc_get, BODY};
use crate::settings::output_of;
use crate::{first_chars, last_line, tail, Run};

const NODEPORT: u16 = 30080;
const LB_PORT: u16 = 8081;
/// The API's Service by its full name: busybox's nslookup sends a name as given, without the
/// search path (measured: `nslookup kubernetes.default` asks for `kubernetes.default.`, which
/// CoreDNS forwards upstream, and there is no upstream in the sandbox). The short name goes
/// through glibc's resolver (nc), which applies resolv.conf's search path as every program in a
/// pod does.
const API_NAME: &str = "kubernetes.default.svc.cluster.local";
/// The line nslookup prints for the `kubernetes` Service's ClusterIP.
const API_ADDRESS: &str = "Address: 10.43.0.1";
/// How long after the scale the gone pod may still answer, in seconds.
const SCALE_DOWN_LIMIT: f64 = 5.0;

pub fn run(run: &Run) -> Result<()> {
    let proxy = run
        .status()
        .ok()
        .and_then(|(json, _)| json["service_proxy"]["name"].as_str().map(str::to_string))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "?".to_string());
    println!("== Services (served by {proxy})");
    let busybox = image_ref(&run.bundle, "busybox")?;
    if let Err(e) = run.kubectl_apply(&manifest(&busybox)) {
        println!("{e:#}");
        run.step(Step::SvcDeploy, Status::Fail, "kubectl apply");
        return Ok(());
    }
    if let Err(e) = run.kubectl(&[
        "wait",
        "--for=condition=Available",
        "deployment/echo",
        "--timeout=120s",
    ]) {
        println!("{e:#}");
        run.step(Step::SvcDeploy, Status::Fail, "");
        println!("{}", text(run, &["get", "pods", "-o", "wide"]));
        return Ok(());
    }
    run.step(
        Step::SvcDeploy,
        Status::Ok,
        format!("2 httpd pods behind Service echo and NodePort {NODEPORT}"),
    );
    run.mark("services-deployed");
    let mut pods: Vec<String> = text(
        run,
        &[
            "get",
            "pods",
            "-l",
            "app=echo",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ],
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(str::to_string)
    .collect();
    pods.sort();
    let cip = text(
        run,
        &["get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}"],
    );

    run.verdict(Step::SvcClusterip, cluster_ip(run, &cip, &pods));
    dns_kubernetes(run);
    let answer = get_until_answer(run, "echo", 80, Duration::from_secs(10)).unwrap_or_else(|a| a);
    run.verdict(
        Step::SvcDns,
        match answered_by_pod(&pods, &answer) {
            true => Ok(format!("echo:80 answered by {answer}")),
            false => Err(format!("echo:80 from e2e-busybox: {}", last_line(&answer))),
        },
    );

    // The NodePort on the node's own address, from the sandbox (not from a pod).
    let node_ip = text(
        run,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
        ],
    );
    let answer = get_here_until_pod(&node_ip, NODEPORT, &pods);
    run.verdict(
        Step::SvcNodeport,
        match answered_by_pod(&pods, &answer) {
            true => Ok(format!("{node_ip}:{NODEPORT} answered by {answer}")),
            false => Err(format!("{node_ip}:{NODEPORT}: {}", last_line(&answer))),
        },
    );

    loadbalancer_ip(run, &node_ip, &pods);
    scale_down(run, &cip, &pods)?;
    for args in [
        &["delete", "deployment", "echo", "--wait=false"][..],
        &["delete", "service", "echo", "echo-nodeport", "echo-lb"],
    ] {
        if let Err(e) = run.kubectl(args) {
            println!("{e:#}");
        }
    }
    Ok(())
}

/// The Deployment `echo` (2 pods), its ClusterIP Service, and the NodePort Service in front of
/// the same pods.
fn manifest(image: &str) -> String {
    format!(
        "{}---\n{}---
apiVersion: v1
kind: Service
metadata: {{name: echo-nodeport}}
spec:
  type: NodePort
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {NODEPORT}}}]
",
        echo_deployment("echo", 2, image),
        echo_service("echo")
    )
}

/// The LoadBalancer Service: its status (kubectl's EXTERNAL-IP) must become the node's
/// InternalIP, its port answer there.
fn lb_service() -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: echo-lb}}
spec:
  type: LoadBalancer
  selector: {{app: echo}}
  ports: [{{name: http, port: {LB_PORT}, targetPort: 8080}}]
"
    )
}

/// kubectl's stdout trimmed, or nothing when it failed (the shell's `$($K get ...)`).
fn text(run: &Run, args: &[&str]) -> String {
    run.kubectl(args).unwrap_or_default().trim().to_string()
}

/// svc-clusterip: the first answer by IP, then both endpoints.
fn cluster_ip(run: &Run, cip: &str, pods: &[String]) -> Result<String, String> {
    // The first answer may wait for the proxy to see the endpoints (a watch event). On plain
    // Linux, right after the scenario's stop/start, kube-proxy took more than 30 s to program a
    // new Service in one run of 2026-12-06 (the NodePort and the name answered a few seconds
    // later): its first syncs after a restart, not a fault, so the bound is 90 s and the step
    // says how long it took.
    let t0 = run.now();
    let answer = get_until_answer(run, cip, 80, Duration::from_secs(90)).unwrap_or_else(|a| a);
    if !answered_by_pod(pods, &answer) {
        return Err(format!("{cip}:80 from e2e-busybox: {}", last_line(&answer)));
    }
    // Then both endpoints: round-robin (svcproxy) or random (kube-proxy). The Deployment is
    // Available once both pods are ready, but the proxy learns the second endpoint from a later
    // EndpointSlice event (CI of 2026-12-06: 10 requests right after the first answer all
    // reached one pod), so requests go on in batches of 5 until both answered, up to 30 s.
    // Every line counts as seen, nc's errors too (as the shell's `grep . | sort -u`).
    let batch = format!(
        "for i in 1 2 3 4 5; do {} | {BODY}; done",
        nc_get("nc", cip, 80, 3)
    );
    let want: BTreeSet<&str> = pods.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !same_set(&seen, &want) && Instant::now() < deadline {
        let out = run
            .in_client(&["sh", "-c", &batch])
            .unwrap_or_else(|out| out);
        seen.extend(out.lines().filter(|l| !l.is_empty()).map(str::to_string));
        if !same_set(&seen, &want) {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    match same_set(&seen, &want) {
        true => Ok(format!(
            "{cip}:80 answered after {:.1}s, both endpoints answer",
            run.now() - t0
        )),
        false => Err(format!(
            "for 30 s requests reached only [{}] of [{}]",
            spaced(&seen.into_iter().collect::<Vec<_>>().join("\n")),
            spaced(&pods.join("\n"))
        )),
    }
}

/// The answers seen are exactly the Deployment's pods (`[ "$SEEN" = "$PODS" ]`).
fn same_set(seen: &BTreeSet<String>, pods: &BTreeSet<&str>) -> bool {
    seen.len() == pods.len() && seen.iter().all(|s| pods.contains(s.as_str()))
}

/// dns-kubernetes: the API's Service by its full name through CoreDNS (nslookup, up to 20
/// retries 1 s apart), then by its short name through the pod's search path (nc).
fn dns_kubernetes(run: &Run) {
    let nslookup = || run.in_client(&["nslookup", API_NAME]).unwrap_or_else(|o| o);
    let mut out = nslookup();
    let mut tries = 0;
    while tries < 20 && !has_api_address(&out) {
        std::thread::sleep(Duration::from_secs(1));
        tries += 1;
        out = nslookup();
    }
    let api = run
        .in_client(&[
            "sh",
            "-c",
            "nc -w 3 kubernetes.default 443 </dev/null && echo connected",
        ])
        .unwrap_or_else(|o| o);
    let api = api.trim_end_matches('\n');
    if !has_api_address(&out) {
        run.step(
            Step::DnsKubernetes,
            Status::Fail,
            format!("{API_NAME}: {}", first_chars(&spaced(&out), 200)),
        );
        println!(
            "{}",
            run.in_client(&["cat", "/etc/resolv.conf"])
                .unwrap_or_else(|o| o)
        );
    } else if api != "connected" {
        run.step(
            Step::DnsKubernetes,
            Status::Fail,
            format!("{API_NAME} is 10.43.0.1, but kubernetes.default:443 (search path): {api}"),
        );
    } else {
        run.step(
            Step::DnsKubernetes,
            Status::Ok,
            format!("{API_NAME} is 10.43.0.1; kubernetes.default:443 connects (search path)"),
        );
    }
}

/// nslookup's output has the line `Address: 10.43.0.1` (`grep -q '^Address: 10\.43\.0\.1$'`).
fn has_api_address(out: &str) -> bool {
    out.lines().any(|l| l == API_ADDRESS)
}

/// An HTTP GET of IP:PORT from the sandbox itself (busybox nc, as the pods', 3 s), the
/// response's last line (`tail -n 1`) then nc's own error.
fn get_here(ip: &str, port: u16) -> String {
    let script = format!("{} | tail -n 1", nc_get("busybox nc", ip, port, 3));
    output_of(
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null()),
    )
    .trim_end_matches('\n')
    .to_string()
}

/// [`get_here`] until one of PODS answers, 20 tries 1 s apart: the last answer.
fn get_here_until_pod(ip: &str, port: u16, pods: &[String]) -> String {
    let mut answer = String::new();
    for _ in 0..20 {
        answer = get_here(ip, port);
        if answered_by_pod(pods, &answer) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    answer
}

/// loadbalancer-ip: EXTERNAL-IP polled every 0.5 s (60 times) until it is the node's address,
/// then its port asked from the sandbox (20 tries, 1 s apart).
fn loadbalancer_ip(run: &Run, node_ip: &str, pods: &[String]) {
    if let Err(e) = run.kubectl_apply(&lb_service()) {
        // As the shell's `apply || step loadbalancer-ip FAIL`: said, and the checks go on (their
        // own verdict follows).
        println!("{e:#}");
        run.step(Step::LoadbalancerIp, Status::Fail, "kubectl apply");
    }
    let t0 = run.now();
    let mut ext = String::new();
    for _ in 0..60 {
        let mut get = run.kubectl_command();
        get.args(["get", "service", "echo-lb", "--no-headers"])
            .stdin(Stdio::null());
        ext = fourth_fields(&output_of(&mut get));
        if ext == node_ip {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = format!("{:.1}", run.now() - t0);
    let answer = match ext == node_ip {
        true => get_here_until_pod(&ext, LB_PORT, pods),
        false => String::new(),
    };
    if ext != node_ip {
        let install_out = std::fs::read_to_string(run.run.join("install.out")).unwrap_or_default();
        run.step(
            Step::LoadbalancerIp,
            Status::Fail,
            format!(
                "EXTERNAL-IP [{ext}], not the node's {node_ip}, after {after}s (servicelb: {})",
                lines_with(&install_out, "add-on servicelb", 160)
            ),
        );
        let yaml = text(run, &["get", "service", "echo-lb", "-o", "yaml"]);
        println!("{}", tail(&yaml, 8));
    } else if answered_by_pod(pods, &answer) {
        run.step(
            Step::LoadbalancerIp,
            Status::Ok,
            format!("EXTERNAL-IP {ext} after {after}s, {ext}:{LB_PORT} answered by {answer}"),
        );
    } else {
        run.step(
            Step::LoadbalancerIp,
            Status::Fail,
            format!(
                "EXTERNAL-IP {ext}, but {ext}:{LB_PORT}: {}",
                last_line(&answer)
            ),
        );
    }
}

/// svc-scale-down: the client asks the ClusterIP every 0.2 s for 14 s, each request stamped
/// with the time it was sent; 3 s in, the Deployment is scaled to 1.
fn scale_down(run: &Run, cip: &str, pods: &[String]) -> Result<()> {
    let script = scale_loop(cip);
    let log_path = run.run.join("scale-down.log");
    let log = std::fs::File::create(&log_path)?;
    let mut client = run.kubectl_command();
    client
        .args(["exec", "e2e-busybox", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let looping = client.spawn();
    std::thread::sleep(Duration::from_secs(3));
    let scaled_at = uptime();
    if let Err(e) = run.kubectl(&["scale", "deployment", "echo", "--replicas=1"]) {
        println!("{e:#}");
    }
    match looping {
        Ok(mut child) => {
            let _ = child.wait();
        }
        Err(e) => println!("cannot run kubectl exec: {e}"),
    }
    // The gone pod: the one the Deployment no longer counts (it may still be Terminating).
    let kept = text(
        run,
        &[
            "get",
            "pods",
            "-l",
            "app=echo",
            "-o",
            "go-template={{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}}{{\"\\n\"}}{{end}}{{end}}",
        ],
    );
    let gone = gone_pods(pods, &kept);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tally = Tally::of(&log, scaled_at, &gone.join("\n"), &kept);
    std::fs::write(run.run.join("scale-down.result"), format!("{tally}\n"))?;
    println!("scale-down: gone {}, kept {kept}, {tally}", gone.join("\n"));
    run.verdict(Step::SvcScaleDown, scale_down_verdict(&gone, &kept, &tally));
    Ok(())
}

/// The client's loop: for 14 s, every 0.2 s, a GET of the ClusterIP (1 s at most) printed as
/// `UPTIME ANSWER`. /proc/uptime: the one clock the pods and the driver share to 10 ms (they
/// run on the same kernel, gVisor's or the host's; busybox date has no %N).
fn scale_loop(cip: &str) -> String {
    format!(
        "read up _ < /proc/uptime; end=$((${{up%.*}} + 14)); while :; do
      read up _ < /proc/uptime; [ ${{up%.*}} -lt $end ] || break
      echo \"$up $({} 2>/dev/null | {BODY})\"; sleep 0.2; done",
        nc_get("nc", cip, 80, 1)
    )
}

/// The first field of /proc/uptime: seconds since boot, as the pods' loop reads it.
fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The Deployment's pods not among KEPT's lines (`echo "$PODS" | grep -vx "$KEPT"`).
fn gone_pods(pods: &[String], kept: &str) -> Vec<String> {
    let kept: Vec<&str> = kept.split('\n').collect();
    pods.iter()
        .filter(|p| !kept.contains(&p.as_str()))
        .cloned()
        .collect()
}

/// What the scale-down's log says, relative to the scale at `t` (uptime seconds).
#[derive(Debug, PartialEq)]
struct Tally {
    /// The gone pod's answers before the scale.
    before: u32,
    /// Seconds from the scale to the gone pod's last answer after it (0 if none).
    last: f64,
    /// The kept pod's answers after the scale.
    after: u32,
}

impl Tally {
    /// From the log's `UPTIME ANSWER` lines (the shell's awk; a line whose time is not a
    /// number, kubectl's own error, counts for nothing).
    fn of(log: &str, t: f64, gone: &str, kept: &str) -> Tally {
        let mut tally = Tally {
            before: 0,
            last: 0.0,
            after: 0,
        };
        for line in log.lines() {
            let mut fields = line.split_whitespace();
            let Some(at) = fields.next().and_then(|f| f.parse::<f64>().ok()) else {
                continue;
            };
            let who = fields.next().unwrap_or("");
            if who == gone && at < t {
                tally.before += 1;
            }
            if who == gone && at >= t {
                tally.last = at - t;
            }
            if who == kept && at >= t {
                tally.after += 1;
            }
        }
        tally
    }

    /// `last` as printed (two decimals), the value the limit is checked against.
    fn last_text(&self) -> String {
        format!("{:.2}", self.last)
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "before={} last={} after={}",
            self.before,
            self.last_text(),
            self.after
        )
    }
}

/// The step's verdict: one gone and one kept pod, answers from the gone one before the scale
/// and the kept one after it, and the gone one's last answer within the limit of the scale.
fn scale_down_verdict(gone: &[String], kept: &str, tally: &Tally) -> Result<String, String> {
    let gone_text = gone.join("\n");
    if gone.len() != 1 || kept.split_whitespace().count() != 1 {
        return Err(format!(
            "cannot tell the gone pod ([{gone_text}]) from the kept one ([{kept}])"
        ));
    }
    if tally.before == 0 || tally.after == 0 {
        // Without answers from the gone pod before the scale and from the kept one after it,
        // the measurement would prove nothing.
        return Err(format!(
            "answers: {} from {gone_text} before the scale, {} from {kept} after it; see \
             scale-down.log",
            tally.before, tally.after
        ));
    }
    let last = tally.last_text();
    if last.parse::<f64>().is_ok_and(|l| l <= SCALE_DOWN_LIMIT) {
        Ok(format!(
            "{gone_text}'s last answer {last}s after the scale (limit 5 s), {} answers from \
             {kept} after it",
            tally.after
        ))
    } else {
        Err(format!(
            "{gone_text} still answered {last}s after the scale (limit 5 s)"
        ))
    }
}

/// ANSWER is one of the Deployment's pods (`echo "$PODS" | grep -qx "$A"`: any of its lines).
fn answered_by_pod(pods: &[String], answer: &str) -> bool {
    answer.split('\n').any(|l| pods.iter().any(|p| p == l))
}

/// Each line followed by a space (`echo "$X" | tr '\n' ' '`), for a one-line detail.
fn spaced(text: &str) -> String {
    format!("{}\n", text.trim_end_matches('\n')).replace('\n', " ")
}

/// The 4th column of each line (`awk '{print $4}'`: kubectl's EXTERNAL-IP), without the
/// trailing newlines `$(...)` drops.
fn fourth_fields(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().nth(3).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end_matches('\n')
        .to_string()
}

/// The lines containing NEEDLE, each cut to N characters (`grep -F NEEDLE | cut -c1-N`).
fn lines_with(text: &str, needle: &str, n: usize) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .map(|l| first_chars(l, n))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> Vec<String> {
        vec!["echo-5d-aaaaa".to_string(), "echo-5d-bbbbb".to_string()]
    }

    #[test]
    fn an_answer_counts_only_from_one_of_the_pods() {
        assert!(answered_by_pod(&pods(), "echo-5d-bbbbb"));
        assert!(!answered_by_pod(&pods(), "echo-5d"));
        assert!(!answered_by_pod(&pods(), "nc: timed out"));
        assert!(!answered_by_pod(&pods(), ""));
        assert!(!answered_by_pod(&[], ""));
    }

    #[test]
    fn both_endpoints_means_exactly_the_pods() {
        let want: BTreeSet<&str> = ["a", "b"].into();
        let mut seen: BTreeSet<String> = ["a".to_string()].into();
        assert!(!same_set(&seen, &want));
        seen.insert("b".into());
        assert!(same_set(&seen, &want));
        seen.insert("nc: timed out".into());
        assert!(!same_set(&seen, &want));
    }

    #[test]
    fn nslookup_must_print_the_apis_clusterip() {
        let out = "Server:\t\t10.43.0.10\nAddress:\t10.43.0.10:53\n\nName:\t\
                   kubernetes.default.svc.cluster.local\nAddress: 10.43.0.1\n";
        assert!(has_api_address(out));
        assert!(!has_api_address("Address: 10.43.0.10\n"));
        assert!(!has_api_address(
            ";; connection timed out; no servers could be reached\n"
        ));
    }

    #[test]
    fn external_ip_is_kubectls_fourth_column() {
        assert_eq!(
            fourth_fields(
                "echo-lb   LoadBalancer   10.43.7.9   10.200.0.2   8081:31234/TCP   3s\n"
            ),
            "10.200.0.2"
        );
        assert_eq!(
            fourth_fields("echo-lb LoadBalancer 10.43.7.9 <pending> 8081:31234/TCP 1s"),
            "<pending>"
        );
        assert_eq!(
            fourth_fields("Error from server (NotFound): x\n"),
            "(NotFound):"
        );
        assert_eq!(fourth_fields(""), "");
    }

    #[test]
    fn details_quote_as_the_shell_did() {
        assert_eq!(spaced("a\nb\n"), "a b ");
        assert_eq!(spaced(""), " ");
        let out = "[1.0] k3s: add-on coredns on\n[1.1] k3s: add-on servicelb off (--disable): \
                   its image\n";
        assert_eq!(
            lines_with(out, "add-on servicelb", 20),
            "[1.1] k3s: add-on se"
        );
        assert_eq!(lines_with(out, "add-on traefik", 20), "");
    }

    #[test]
    fn the_clients_scripts_are_valid_sh() {
        let script = scale_loop("10.43.0.9");
        assert!(script.contains("| nc -w 1 10.43.0.9 80 2>/dev/null | { b=;"));
        assert!(script.starts_with("read up _ < /proc/uptime; end=$((${up%.*} + 14));"));
        let parsed = Command::new("sh").args(["-n", "-c", &script]).status();
        assert!(parsed.unwrap().success(), "{script}");
    }

    #[test]
    fn the_gone_pod_is_the_one_not_kept() {
        assert_eq!(gone_pods(&pods(), "echo-5d-bbbbb"), ["echo-5d-aaaaa"]);
        assert_eq!(gone_pods(&pods(), ""), pods());
        assert!(gone_pods(&pods(), "echo-5d-aaaaa\necho-5d-bbbbb").is_empty());
    }

    #[test]
    fn the_tally_counts_around_the_scale() {
        let log = "100.00 echo-5d-aaaaa\n100.20 echo-5d-bbbbb\n101.00 \n\
                   101.50 echo-5d-aaaaa\n102.10 echo-5d-bbbbb\n103.75 echo-5d-aaaaa\n\
                   104.00 echo-5d-bbbbb\nerror: unable to upgrade connection\n";
        let tally = Tally::of(log, 101.25, "echo-5d-aaaaa", "echo-5d-bbbbb");
        assert_eq!(
            tally,
            Tally {
                before: 1,
                last: 2.5,
                after: 2
            }
        );
        assert_eq!(tally.to_string(), "before=1 last=2.50 after=2");
        assert_eq!(
            Tally::of("", 1.0, "a", "b").to_string(),
            "before=0 last=0.00 after=0"
        );
    }

    #[test]
    fn the_gone_pod_must_stop_answering_within_5_s() {
        let gone = vec!["echo-5d-aaaaa".to_string()];
        let kept = "echo-5d-bbbbb";
        let tally = |last| Tally {
            before: 3,
            last,
            after: 40,
        };
        assert_eq!(
            scale_down_verdict(&gone, kept, &tally(0.4)),
            Ok(
                "echo-5d-aaaaa's last answer 0.40s after the scale (limit 5 s), 40 answers \
                from echo-5d-bbbbb after it"
                    .to_string()
            )
        );
        // 5.004 prints as 5.00, which the shell compared: still within the limit.
        assert!(scale_down_verdict(&gone, kept, &tally(5.004)).is_ok());
        assert_eq!(
            scale_down_verdict(&gone, kept, &tally(5.2)),
            Err("echo-5d-aaaaa still answered 5.20s after the scale (limit 5 s)".to_string())
        );
        let silent = Tally {
            before: 0,
            last: 0.0,
            after: 40,
        };
        assert!(scale_down_verdict(&gone, kept, &silent)
            .unwrap_err()
            .starts_with("answers: 0 from echo-5d-aaaaa before the scale"));
        assert!(scale_down_verdict(&pods(), "", &tally(0.4))
            .unwrap_err()
            .starts_with("cannot tell the gone pod"));
    }

    #[test]
    fn the_manifests_name_the_ports_the_steps_ask() {
        let yaml = manifest("docker.io/library/busybox:1");
        assert!(yaml.contains("  replicas: 2\n"));
        assert_eq!(yaml.matches("kind: Service").count(), 2);
        assert!(yaml.contains("nodePort: 30080"));
        assert!(lb_service().contains("type: LoadBalancer"));
        assert!(lb_service().contains("port: 8081, targetPort: 8080"));
    }
}
