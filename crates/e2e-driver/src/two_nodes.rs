//! The two-nodes scenario's checks (was tests/e2e/two-nodes.sh's): a server (eth0 10.200.0.2)
//! and an agent (10.200.0.3), each in its own sandbox on one bridge. two-nodes.sh keeps the
//! start-up (extract, each node's ./install, the files the nodes hand each other in SHARED and
//! the order of the phases) and calls one phase at a time; the teardown after them is
//! teardown.rs's. The phases and their steps, in the order they run:
//! On the server, after its install:
//!   `join-command`       (TIME api-ready, from install's output)
//!     join-command       install printed `./install --server https://10.200.0.2:6443
//!                        --token-file node-token` and the token file exists; the URL goes to
//!                        RUN/join-command for the script to hand over;
//!     token-location     install named the token's file, DATA/k3s/server/node-token;
//!     token-not-printed  the token itself is nowhere in install's output;
//!   `server-steps`
//!     agent-installed    SHARED/agent-installed (the agent's install exit code) is 0, within
//!                        420 s;
//!     agent-ready        node k3sg-agent is Ready within 120 s (TIME agent-ready);
//!     agent-pod-running  a busybox pod pinned to the agent runs there, its IP in the agent's
//!                        podCIDR (TIME agent-pod-running);
//!     agent-pod-logs, agent-pod-exec  its logs and exec, through the server;
//!     full mode only (a pod on the server, and Services):
//!     server-pod-running a pod pinned to the server runs;
//!     server-routes      the server's `status` says node-routes runs with the route to the
//!                        agent's podCIDR via 10.200.0.3;
//!     pod-to-pod         the server's pod gets the agent pod's answer by its pod IP, within
//!                        60 s;
//!     agent-pod-services from the agent's pod, kubernetes.default.svc.cluster.local resolves to
//!                        10.43.0.1 (CoreDNS on the server) within 60 s, and
//!                        kubernetes.default:443 connects;
//!     svc-to-agent-pod   the server's pod gets the agent pod's answer through a Service,
//!                        within 60 s;
//!     both modes again, around a restart of the server:
//!     server-stop, server-start  `./install stop`, `./install start` exit 0;
//!     agent-reconnected  within 120 s of the start the agent's lease is renewed after it and
//!                        its node is Ready (TIME agent-reconnected);
//!     agent-exec-after-restart  exec into the agent's pod works again;
//!     pod-to-pod-after-restart  (full) the server's pod, started again, reaches the agent's
//!                        pod within 120 s;
//!     delete-agent-pod   the agent's pod is deleted within 60 s;
//!   `agent-uninstalled`  SHARED/agent-uninstalled appears within 300 s.
//! On the agent:
//!   `join`               (a step only when it fails) SHARED/join appears within 600 s;
//!   `agent-steps --install-start SECS`, after its install:
//!     token-not-in-ps    no process has the join token on its command line (TIME installed);
//!     join-to-ready      install said the node is Ready (TIME join-to-ready);
//!     token-file         install names DATA/agent-token (mode 0600) and the server it joins,
//!                        and the file has mode 600;
//!     pod-range          install printed the node's pod range, a /24 of 10.42.0.0/16;
//!     status             `status` exits 0, says node k3sg-agent is Ready and node-routes runs
//!                        (in full mode with the route to the server's pods), asked up to 11
//!                        times 2 s apart (node-routes polls every 5 s);
//!   `server-done`        (a step only when it fails) SHARED/agent-may-stop appears within
//!                        900 s.
//! The waits end early when the server wrote SHARED/abort (it printed no join command).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use e2e_steps::{Status, Step};

use crate::bundle::image_ref;
use crate::echo::until_ok;
use crate::teardown::install_ok;
use crate::{first_chars, last_line, ok_or_fail, procs, Run};
use crate::{rfc3339_utc, unix_now};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Phase {
    /// Server, after its install: the join command it printed, its token kept out of sight.
    JoinCommand,
    /// Server, once the join command is handed over: the agent's install, its pods, Services
    /// across the nodes, a restart of the server.
    ServerSteps,
    /// Server, after it let the agent stop: the agent uninstalled itself.
    AgentUninstalled,
    /// Agent: the server's join command is there.
    Join,
    /// Agent, after its install: the token, the time to Ready, the pod range, status.
    AgentSteps {
        /// When the agent's ./install started, seconds since T0 (two-nodes.sh's INSTALL_START).
        #[arg(long)]
        install_start: f64,
    },
    /// Agent, at the end: the server is done with it.
    ServerDone,
}

/// How often a cross-node check is tried again (the route, the pod or the Service is not
/// there yet).
const RETRY: Duration = Duration::from_secs(2);

const SERVER_NODE: &str = "k3sg-server";
const AGENT_NODE: &str = "k3sg-agent";
const SERVER_IP: &str = "10.200.0.2";
const AGENT_IP: &str = "10.200.0.3";
/// What the agent's pod serves on 8080 and answers to exec.
const PONG: &str = "pong-from-the-agent";
/// The API's name the agent's pod resolves, and the address it must get.
const API_NAME: &str = "kubernetes.default.svc.cluster.local";
const API_IP: &str = "10.43.0.1";

pub fn run(run: &Run, shared: &Path, mode: &str, phase: Phase) -> Result<()> {
    let nodes = Nodes {
        run,
        shared,
        full: mode == "full",
    };
    match phase {
        Phase::JoinCommand => nodes.join_command(),
        Phase::ServerSteps => nodes.server_steps(),
        Phase::AgentUninstalled => {
            let done = nodes.wait_for_file("agent-uninstalled", 300);
            run.verdict(
                Step::AgentUninstalled,
                match done {
                    true => Ok(String::new()),
                    false => Err("the agent did not finish within 300 s".into()),
                },
            );
        }
        Phase::Join => {
            if !nodes.wait_for_file("join", 600) {
                let why = nodes.shared_text("abort");
                run.step(
                    Step::Join,
                    Status::Fail,
                    format!(
                        "no join command from the server: {}",
                        why.as_deref().unwrap_or("timed out")
                    ),
                );
            }
        }
        Phase::AgentSteps { install_start } => nodes.agent_steps(install_start),
        Phase::ServerDone => {
            if !nodes.wait_for_file("agent-may-stop", 900) {
                run.step(
                    Step::ServerDone,
                    Status::Fail,
                    "the server did not finish with the agent in 900 s",
                );
            }
        }
    }
    Ok(())
}

struct Nodes<'a> {
    run: &'a Run,
    shared: &'a Path,
    /// The server's mode is full (pods on the server, Services); else control-plane-only.
    full: bool,
}

impl Nodes<'_> {
    /// SHARED/NAME, as `$(cat SHARED/NAME)` reads it; None when it is not there.
    fn shared_text(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.shared.join(name))
            .ok()
            .map(|t| t.trim_end_matches('\n').to_string())
    }

    /// True once SHARED/NAME exists, looked for every second up to SECS times; false on
    /// timeout or as soon as the server aborted (SHARED/abort).
    fn wait_for_file(&self, name: &str, secs: u32) -> bool {
        for _ in 0..secs {
            if self.shared.join(name).exists() {
                return true;
            }
            if self.shared.join("abort").exists() {
                return false;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        false
    }

    fn join_command(&self) {
        let run = self.run;
        let out = self.run.install_out();
        if let Some(t) = stamp_of(&out, "Kubernetes API is ready") {
            println!("TIME api-ready {t}");
        }
        let join = printed_join_url(&out);
        let token_file = run.data_dir.join("k3s/server/node-token");
        let token = std::fs::read_to_string(&token_file)
            .map(|t| t.trim_end_matches('\n').to_string())
            .unwrap_or_default();
        let want = format!("https://{SERVER_IP}:6443");
        run.verdict(
            Step::JoinCommand,
            match !token.is_empty() && join.as_deref() == Some(want.as_str()) {
                true => Ok(format!("./install --server {want} --token-file node-token")),
                false => Err(format!(
                    "printed: [{}]",
                    join.as_deref()
                        .filter(|j| !j.is_empty())
                        .unwrap_or("nothing")
                )),
            },
        );
        let token_path = token_file.display().to_string();
        run.verdict(
            Step::TokenLocation,
            match out.contains(&format!("copy the join token in {token_path}")) {
                true => Ok(token_path),
                false => Err(String::new()),
            },
        );
        run.verdict(
            Step::TokenNotPrinted,
            match !token.is_empty() && !out.contains(&token) {
                true => Ok(String::new()),
                false => Err("the join token is in install's output".into()),
            },
        );
        // The script hands this over to the agent (SHARED/join), or aborts without it.
        if let Some(join) = join.filter(|j| !j.is_empty()) {
            if let Err(e) = std::fs::write(run.run.join("join-command"), format!("{join}\n")) {
                eprintln!("cannot write RUN/join-command: {e}");
            }
        }
    }

    fn server_steps(&self) {
        let run = self.run;
        // As the script's `image_ref`: without it the pods fail their steps, the rest runs.
        let busybox = image_ref(&run.bundle, "busybox").unwrap_or_else(|e| {
            eprintln!("{e:#}");
            String::new()
        });
        let installed = self.wait_for_file("agent-installed", 420);
        let rc = self.shared_text("agent-installed");
        run.verdict(
            Step::AgentInstalled,
            match installed && rc.as_deref() == Some("0") {
                true => Ok(String::new()),
                false => Err(format!(
                    "agent install rc={}",
                    rc.as_deref().unwrap_or("none")
                )),
            },
        );
        let node = format!("node/{AGENT_NODE}");
        if run.kubectl_ok(&["wait", "--for=condition=Ready", &node, "--timeout=120s"]) {
            let nodes = run.kubectl_merged(&["get", "nodes", "--no-headers"]);
            run.step(Step::AgentReady, Status::Ok, nodes_summary(&nodes));
        } else {
            run.step(Step::AgentReady, Status::Fail, "");
            println!("{}", run.kubectl_merged(&["get", "nodes", "-o", "wide"]));
        }
        run.mark("agent-ready");
        let agent_cidr = run
            .kubectl(&["get", "node", AGENT_NODE, "-o", "jsonpath={.spec.podCIDR}"])
            .unwrap_or_default();

        // A pod pinned to the agent, serving on 8080; its logs and exec go through the server.
        let script = format!(
            "echo hello-from-the-agent; mkdir -p /www; echo {PONG} > /www/index.html; \
             exec httpd -f -p 8080 -h /www"
        );
        self.run_pinned("on-agent", &busybox, AGENT_NODE, &["sh", "-c", &script]);
        let _ = run.kubectl_ok(&[
            "wait",
            "--for=jsonpath={.status.phase}=Running",
            "pod/on-agent",
            "--timeout=180s",
        ]);
        let (on, agent_pod_ip) = self.pod_node_and_ip("on-agent");
        if on == AGENT_NODE && in_pod_cidr(&agent_pod_ip, &agent_cidr) {
            run.step(
                Step::AgentPodRunning,
                Status::Ok,
                format!("on {on}, IP {agent_pod_ip} in the node's podCIDR {agent_cidr}"),
            );
        } else {
            run.step(
                Step::AgentPodRunning,
                Status::Fail,
                format!("node [{on}] IP [{agent_pod_ip}] podCIDR [{agent_cidr}]"),
            );
            println!("{}", run.kubectl_merged(&["describe", "pod", "on-agent"]));
        }
        run.mark("agent-pod-running");
        let logs = run.kubectl_merged(&["logs", "on-agent"]);
        run.verdict(
            Step::AgentPodLogs,
            match logs.contains("hello-from-the-agent") {
                true => Ok(String::new()),
                false => Err(last_line(&logs).to_string()),
            },
        );
        run.verdict(Step::AgentPodExec, self.exec_on_agent());

        // A pod on the server reaches the agent's pod by its pod IP (node-routes on both
        // nodes); the answer's last line is the body.
        let cross = || {
            let out = run.get_in_pod("on-server", &agent_pod_ip, 8080, 5);
            match out == PONG {
                true => Ok(()),
                false => Err(last_line(&out).to_string()),
            }
        };
        if self.full {
            self.run_pinned("on-server", &busybox, SERVER_NODE, &["sleep", "3600"]);
            if run.kubectl_ok(&[
                "wait",
                "--for=jsonpath={.status.phase}=Running",
                "pod/on-server",
                "--timeout=120s",
            ]) {
                let (on, ip) = self.pod_node_and_ip("on-server");
                run.step(
                    Step::ServerPodRunning,
                    Status::Ok,
                    format!("on {on}, IP {ip}"),
                );
            } else {
                run.step(Step::ServerPodRunning, Status::Fail, "");
            }
            let status = self.status_text().1;
            let routes = node_routes_lines(&status);
            let want = format!("{agent_cidr} via {AGENT_IP} (node {AGENT_NODE})");
            run.verdict(
                Step::ServerRoutes,
                match routes_running(&status, Some(&want)) {
                    true => Ok(routes),
                    false => Err(routes),
                },
            );
            let t = Instant::now();
            run.verdict(
                Step::PodToPod,
                until_ok(Duration::from_secs(60), RETRY, cross).map(|()| {
                    format!(
                        "on-server -> {agent_pod_ip}:8080 on the agent in {:.1}s",
                        t.elapsed().as_secs_f64()
                    )
                }),
            );
            self.services_across_nodes();
        }

        // The server restarts; the agent's kubelet reconnects: it renews its lease with the new
        // server and its node is Ready; exec (the server's tunnel to the agent) works again.
        println!("== server stop");
        let stopped = install_ok(run, "stop");
        run.step(Step::ServerStop, ok_or_fail(stopped), "");
        std::thread::sleep(Duration::from_secs(1));
        println!("== server start");
        let r0 = Instant::now();
        if install_ok(run, "start") {
            run.step(
                Step::ServerStart,
                Status::Ok,
                format!("API ready again in {:.1}s", r0.elapsed().as_secs_f64()),
            );
        } else {
            run.step(Step::ServerStart, Status::Fail, "");
        }
        // `date -u +%Y-%m-%dT%H:%M:%S`: a lease renewed in this very second, with its
        // fraction, still sorts after it.
        let started = rfc3339_utc(unix_now()).trim_end_matches('Z').to_string();
        let lease_args = [
            "-n",
            "kube-node-lease",
            "get",
            "lease",
            AGENT_NODE,
            "-o",
            "jsonpath={.spec.renewTime}",
        ];
        let renewed = || {
            let lease = run.kubectl(&lease_args).unwrap_or_default();
            let ready = run
                .kubectl(&[
                    "get",
                    "node",
                    AGENT_NODE,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .unwrap_or_default();
            // RFC 3339 times compare as strings.
            lease.as_str() > started.as_str() && ready == "True"
        };
        // Up to 61 looks, 2 s apart, as the script's loop and its last look.
        let mut back = renewed();
        for _ in 0..60 {
            if back {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
            back = renewed();
        }
        if back {
            run.step(
                Step::AgentReconnected,
                Status::Ok,
                format!(
                    "lease renewed and Ready {:.1}s after the server's start",
                    r0.elapsed().as_secs_f64()
                ),
            );
        } else {
            run.step(
                Step::AgentReconnected,
                Status::Fail,
                format!(
                    "lease {} started {started}",
                    run.kubectl_merged(&lease_args)
                ),
            );
            println!("{}", run.kubectl_merged(&["get", "nodes"]));
        }
        run.mark("agent-reconnected");
        run.verdict(Step::AgentExecAfterRestart, self.exec_on_agent());
        if self.full {
            // `stop` killed the server's pod: it runs again (new sandbox, maybe new IP) and
            // reaches the agent's pod, which ran on through the restart.
            let t = Instant::now();
            run.verdict(
                Step::PodToPodAfterRestart,
                until_ok(Duration::from_secs(120), RETRY, cross)
                    .map(|()| format!("in {:.1}s", t.elapsed().as_secs_f64())),
            );
        }
        let deleted = run.kubectl_ok(&["delete", "pod", "on-agent", "--wait", "--timeout=60s"]);
        run.step(Step::DeleteAgentPod, ok_or_fail(deleted), "");
        // Deleted before the agent uninstalls: on plain Linux both nodes share /run/netns, and
        // an uninstall removes the pod network namespaces made since its install.
        if self.full {
            let _ = run.kubectl_ok(&["delete", "pod", "on-server", "--wait", "--timeout=60s"]);
        }
    }

    /// Services across nodes, each served by the proxy of the node the client pod is on
    /// (kube-proxy, or svcproxy where it cannot run). From the agent's pod: DNS through the
    /// kube-dns Service (CoreDNS runs on the server) and the API through kubernetes.default
    /// (nslookup gets the full name, nc goes through the search path). From the server's pod:
    /// a Service whose one endpoint is the agent's pod.
    fn services_across_nodes(&self) {
        let run = self.run;
        let t = Instant::now();
        let resolves = || {
            let out = run.kubectl_merged(&["exec", "on-agent", "--", "nslookup", API_NAME]);
            match out.lines().any(|l| l == format!("Address: {API_IP}")) {
                true => Ok(()),
                false => Err(out),
            }
        };
        let services = match until_ok(Duration::from_secs(60), RETRY, resolves) {
            Err(out) => Err(format!(
                "{API_NAME} from on-agent: {}",
                first_chars(&format!("{}\n", out).replace('\n', " "), 200)
            )),
            Ok(()) => {
                let api = run.kubectl_merged(&[
                    "exec",
                    "on-agent",
                    "--",
                    "sh",
                    "-c",
                    "nc -w 3 kubernetes.default 443 </dev/null && echo connected",
                ]);
                match api == "connected" {
                    true => Ok(format!(
                        "from on-agent: {API_NAME} is {API_IP} after {:.1}s; \
                         kubernetes.default:443 connects",
                        t.elapsed().as_secs_f64()
                    )),
                    false => Err(format!(
                        "{API_NAME} is {API_IP}, but kubernetes.default:443: {api}"
                    )),
                }
            }
        };
        run.verdict(Step::AgentPodServices, services);
        let _ = run.kubectl_ok(&[
            "expose",
            "pod",
            "on-agent",
            "--name=agent-echo",
            "--port=80",
            "--target-port=8080",
        ]);
        let t = Instant::now();
        let via_service = || {
            let out = run.get_in_pod("on-server", "agent-echo", 80, 5);
            match out == PONG {
                true => Ok(()),
                false => Err(last_line(&out).to_string()),
            }
        };
        let result = until_ok(Duration::from_secs(60), RETRY, via_service).map(|()| {
            let ip = run
                .kubectl(&[
                    "get",
                    "svc",
                    "agent-echo",
                    "-o",
                    "jsonpath={.spec.clusterIP}",
                ])
                .unwrap_or_default();
            format!(
                "on-server -> agent-echo:80 ({ip}) -> on-agent in {:.1}s",
                t.elapsed().as_secs_f64()
            )
        });
        run.verdict(Step::SvcToAgentPod, result);
        let _ = run.kubectl(&["delete", "svc", "agent-echo", "--wait=false"]);
    }

    /// `kubectl run NAME` of the busybox image on node NODE (a nodeSelector on its hostname),
    /// running COMMAND.
    fn run_pinned(&self, name: &str, image: &str, node: &str, command: &[&str]) {
        let overrides = format!(
            "{{\"apiVersion\": \"v1\", \"spec\": {{\"nodeSelector\": \
             {{\"kubernetes.io/hostname\": \"{node}\"}}}}}}"
        );
        let mut args = vec![
            "run".to_string(),
            name.to_string(),
            format!("--image={image}"),
            "--image-pull-policy=Never".to_string(),
            format!("--overrides={overrides}"),
            "--command".to_string(),
            "--".to_string(),
        ];
        args.extend(command.iter().map(|c| c.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _ = self.run.kubectl_ok(&args);
    }

    /// Pod NAME's node and IP (empty where kubectl has none).
    fn pod_node_and_ip(&self, name: &str) -> (String, String) {
        let get = |path: &str| {
            self.run
                .kubectl(&["get", "pod", name, "-o", &format!("jsonpath={path}")])
                .unwrap_or_default()
        };
        (get("{.spec.nodeName}"), get("{.status.podIP}"))
    }

    /// exec into the agent's pod, through the server: its page, or the output's last line.
    fn exec_on_agent(&self) -> Result<String, String> {
        let out = self
            .run
            .kubectl_merged(&["exec", "on-agent", "--", "cat", "/www/index.html"]);
        match out == PONG {
            true => Ok(String::new()),
            false => Err(last_line(&out).to_string()),
        }
    }

    /// `./install status` as a user reads it (the text: node-routes' line names its routes).
    fn status_text(&self) -> (i32, String) {
        let data_dir = self.run.data_dir.display().to_string();
        self.run
            .install(&["status", "--data-dir", &data_dir])
            .unwrap_or_else(|e| (-1, format!("{e:#}")))
    }

    fn agent_steps(&self, install_start: f64) {
        let run = self.run;
        // No process shows the token on its command line (the agent's k3s reads
        // DATA/agent-token).
        let token = self.shared_text("node-token").unwrap_or_default();
        let shown = processes_showing(&token);
        run.verdict(
            Step::TokenNotInPs,
            match !token.is_empty() && shown.is_empty() {
                true => Ok(String::new()),
                false => Err(format!("in: {}", shown.join("\n"))),
            },
        );
        run.mark("installed");
        let out = self.run.install_out();
        match stamp_of(&out, "node is Ready").and_then(|s| s.parse::<f64>().ok()) {
            Some(ready_at) => {
                let secs = format!("{:.1}", ready_at - install_start);
                println!("TIME join-to-ready {secs}");
                run.step(
                    Step::JoinToReady,
                    Status::Ok,
                    format!("node Ready {secs}s after ./install --server"),
                );
            }
            None => run.step(
                Step::JoinToReady,
                Status::Fail,
                "install never said the node is Ready",
            ),
        }
        let token_file = run.data_dir.join("agent-token");
        let mode = procs::mode_text(procs::mode(&token_file));
        let says = format!(
            "agent node {AGENT_NODE}: joins https://{SERVER_IP}:6443 (token in {}, mode 0600)",
            token_file.display()
        );
        run.verdict(
            Step::TokenFile,
            match out.contains(&says) && mode == "600" {
                true => Ok(format!("{} mode {mode}", token_file.display())),
                false => Err(format!("mode {mode}")),
            },
        );
        let range = pod_range(&out);
        run.verdict(
            Step::PodRange,
            match range.as_deref().is_some_and(is_agent_pod_range) {
                true => Ok(range.unwrap_or_default()),
                false => Err(range
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "no pod range line".into())),
            },
        );
        // What status says on an agent; in full mode the route to the server's pods is there
        // too, once node-routes has polled (every 5 s, first right after install returns).
        let via = format!(" via {SERVER_IP} (node {SERVER_NODE})");
        let want = self.full.then_some(via.as_str());
        let mut tries = 0;
        let (rc, status) = loop {
            let (rc, status) = self.status_text();
            if routes_running(&status, want) || tries >= 10 {
                break (rc, status);
            }
            std::thread::sleep(Duration::from_secs(2));
            tries += 1;
        };
        println!("{}", status.trim_end_matches('\n'));
        let ready = status
            .lines()
            .any(|l| l.starts_with(&format!("node {AGENT_NODE}: Ready")));
        run.verdict(
            Step::Status,
            match rc == 0 && ready && routes_running(&status, want) {
                true => Ok(node_routes_lines(&status)),
                false => Err(format!("rc={rc} {}", node_and_k3s_lines(&status))),
            },
        );
    }
}

/// The seconds stamp of install's first output line that contains TEXT (lib.sh's
/// `[SECS] line`).
pub(crate) fn stamp_of(install_out: &str, text: &str) -> Option<String> {
    let line = install_out.lines().find(|l| l.contains(text))?;
    let (stamp, _) = line.strip_prefix('[')?.split_once(']')?;
    stamp
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.')
        .then(|| stamp.to_string())
}

/// The server URL of the join command install printed, exactly as a user copies it:
/// `[SECS]   ./install --server URL --token-file node-token` (the token itself is printed
/// nowhere: it would be in the terminal, and pasted into `ps`).
fn printed_join_url(install_out: &str) -> Option<String> {
    install_out.lines().find_map(|line| {
        let (stamp, rest) = line.strip_prefix('[')?.split_once(']')?;
        if !stamp.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return None;
        }
        let url = rest
            .strip_prefix("   ./install --server ")?
            .strip_suffix(" --token-file node-token")?;
        (!url.contains(' ')).then(|| url.to_string())
    })
}

/// `kubectl get nodes --no-headers` as `NAME STATUS, NAME STATUS`.
fn nodes_summary(nodes: &str) -> String {
    nodes
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!(
                "{} {}",
                f.first().copied().unwrap_or(""),
                f.get(1).copied().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// k3s gives each node a /24 of 10.42.0.0/16: IP is in CIDR (`A.B.C.0/24`) when it starts
/// with `A.B.C.`.
fn in_pod_cidr(ip: &str, cidr: &str) -> bool {
    let net = cidr.strip_suffix(".0/24").unwrap_or(cidr);
    ip.starts_with(&format!("{net}."))
}

/// A `node-routes: running` line of `status`, with WANT after `running ` where one is given.
fn routes_running(status: &str, want: Option<&str>) -> bool {
    status.lines().any(|l| match want {
        None => l.starts_with("node-routes: running"),
        Some(want) => l
            .strip_prefix("node-routes: running ")
            .is_some_and(|rest| rest.contains(want)),
    })
}

/// status's node-routes lines, one per line.
fn node_routes_lines(status: &str) -> String {
    status
        .lines()
        .filter(|l| l.starts_with("node-routes"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// status's `node...` and `k3s...` lines, each followed by a space.
fn node_and_k3s_lines(status: &str) -> String {
    status
        .lines()
        .filter(|l| l.starts_with("node") || l.starts_with("k3s"))
        .map(|l| format!("{l} "))
        .collect()
}

/// The first `pod range: ...` install printed (digits, dots and slashes after it).
fn pod_range(install_out: &str) -> Option<String> {
    let at = install_out.find("pod range: ")?;
    let rest = &install_out[at + "pod range: ".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '/'))
        .unwrap_or(rest.len());
    Some(format!("pod range: {}", &rest[..end]))
}

/// `pod range: 10.42.N.0/24`.
fn is_agent_pod_range(range: &str) -> bool {
    range
        .strip_prefix("pod range: 10.42.")
        .and_then(|r| r.strip_suffix(".0/24"))
        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
}

/// `PID/cmdline` of each process whose command line has TOKEN (none for an empty token).
fn processes_showing(token: &str) -> Vec<String> {
    if token.is_empty() {
        return Vec::new();
    }
    procs::pids()
        .into_iter()
        .filter(|pid| procs::cmdline(*pid).contains(token))
        .map(|pid| format!("{pid}/cmdline"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_url_is_taken_only_from_the_printed_command() {
        let out = "[3.1] k3s: API ready\n\
                   [9.0] join other nodes with:\n\
                   [9.0]   ./install --server https://10.200.0.2:6443 --token-file node-token\n";
        assert_eq!(
            printed_join_url(out).as_deref(),
            Some("https://10.200.0.2:6443")
        );
        // With the token on the line, or another file, it is not the command a user copies.
        assert_eq!(
            printed_join_url("[9.0]   ./install --server https://x:6443 --token K10\n"),
            None
        );
        assert_eq!(
            printed_join_url("  ./install --server https://x:6443 --token-file node-token\n"),
            None
        );
        assert_eq!(stamp_of(out, "API ready").as_deref(), Some("3.1"));
        assert_eq!(stamp_of(out, "node is Ready"), None);
    }

    #[test]
    fn a_pod_ip_is_in_the_nodes_slash_24() {
        assert!(in_pod_cidr("10.42.1.7", "10.42.1.0/24"));
        assert!(!in_pod_cidr("10.42.0.7", "10.42.1.0/24"));
        assert!(!in_pod_cidr("10.42.10.7", "10.42.1.0/24"));
        assert!(!in_pod_cidr("", ""));
        assert!(!in_pod_cidr("10.42.1.7", ""));
    }

    #[test]
    fn node_routes_must_run_with_the_route_wanted() {
        let status = "k3s-gvisor v1 at /p (data /d)\n\
                      node k3sg-agent: Ready\n\
                      node-routes: running (pid 9), routes to other nodes' pods: \
                      10.42.0.0/24 via 10.200.0.2 (node k3sg-server)\n";
        assert!(routes_running(status, None));
        assert!(routes_running(
            status,
            Some(" via 10.200.0.2 (node k3sg-server)")
        ));
        assert!(!routes_running(
            status,
            Some("10.42.1.0/24 via 10.200.0.3 (node k3sg-agent)")
        ));
        assert!(!routes_running("node-routes: stopped\n", None));
        assert_eq!(
            node_and_k3s_lines(status),
            "k3s-gvisor v1 at /p (data /d) node k3sg-agent: Ready node-routes: running (pid 9), \
             routes to other nodes' pods: 10.42.0.0/24 via 10.200.0.2 (node k3sg-server) "
        );
        assert!(node_routes_lines(status).starts_with("node-routes: running (pid 9)"));
    }

    #[test]
    fn the_pod_range_is_a_slash_24_of_10_42() {
        let out = "[5.0] k3s: node k3sg-agent, pod range: 10.42.1.0/24, ...\n\
                   [6.0] pod range: 10.42.9.0/24\n";
        assert_eq!(pod_range(out).as_deref(), Some("pod range: 10.42.1.0/24"));
        assert!(is_agent_pod_range("pod range: 10.42.1.0/24"));
        assert!(!is_agent_pod_range("pod range: 10.43.1.0/24"));
        assert!(!is_agent_pod_range("pod range: 10.42.1.0/16"));
        assert!(!is_agent_pod_range("pod range: "));
        assert_eq!(pod_range("no such line"), None);
    }

    #[test]
    fn nodes_read_as_name_and_status() {
        let nodes = "k3sg-agent    Ready   <none>   1m   v1.33.1+k3s1\n\
                     k3sg-server   Ready   control-plane,master   2m   v1.33.1+k3s1\n";
        assert_eq!(nodes_summary(nodes), "k3sg-agent Ready, k3sg-server Ready");
    }

    #[test]
    fn no_process_shows_an_empty_token_and_none_shows_a_random_one() {
        assert!(processes_showing("").is_empty());
        assert!(processes_showing("K10-no-process-has-this-token-e2e").is_empty());
    }
}
