//! Where `cargo xtask e2e` and `cargo xtask soak` run their shell scripts: on this host or in a
//! gVisor sandbox, in a network that looks like a user's sandbox and reaches nothing off this
//! machine.
//!
//! `Network::Interface` (the default): two fresh network namespaces joined by a veth pair.
//! The sandbox side, `eth0` in namespace NS, has 10.200.0.2/24 and a default route via
//! 10.200.0.1, the other end, alone in namespace NS-gw. NS-gw has no other interface, no route,
//! no NAT and no forwarding, so packets can go nowhere but between the two. On this host the
//! script runs in NS (`nsenter --net`, not `ip netns exec`, which remounts /sys and hides the
//! cgroup mounts runsc needs). In gVisor, runsc is started in NS with its own netstack
//! (`--network=sandbox`): it takes eth0's address and routes into the sandbox, which then has
//! an interface and a default route, as users' sandboxes do.
//!
//! That needs `runsc run` with an OCI spec rather than `runsc do`: with any network but
//! `none`, `runsc do` builds its own veth pair, turns on IP forwarding and adds a MASQUERADE
//! rule towards the host's default interface. The spec written here is the one `runsc do`
//! builds (this host's / as root, no overlay, every capability), plus the network namespace.
//!
//! Two nodes ([`run_two_nodes`], `cargo xtask e2e --topology two-nodes`): each node's script
//! in its own namespace (and, in gVisor, its own sandbox) with eth0 10.200.0.2/24 (server) or
//! .3/24 (agent), both veths' peers on one bridge in a third namespace that holds 10.200.0.1,
//! the default gateway, and no other interface, route, NAT or forwarding: the nodes reach each
//! other and nothing else.
//!
//! The sandbox's shape beyond its network ([`Shape`], one per e2e host in e2e.rs `HOSTS`): the
//! root filesystem overlay (`--overlay2`; `none` by default here, runsc's own default is
//! `root:self`), the platform (`--platform`), `--network=host` (runsc's sandbox then uses the
//! network stack of the namespace it starts in: still NS above, never the host's own), and
//! limits (a cgroup of our own with a CPU quota and a memory limit, whose peak memory use is
//! read back: see [`Limits`]).
//!
//! `Network::Loopback`: no interface but lo and no default route (`unshare --net`,
//! `runsc --network=none do`): the sandbox where the installer must choose the node IP itself.
//! Debian's 2022 runsc always runs this way here, because it refuses its own netstack on this
//! host (see `NETSTACK_REFUSED`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// How the sandbox is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Network {
    /// eth0 with an address and a default route to a peer that routes nowhere.
    Interface,
    /// Loopback only, no default route.
    Loopback,
}

/// What Debian's 2022 runsc says when asked for its own netstack in a namespace on this host:
/// it takes "/proc/sys/net/core/rmem_default exists" to mean "root namespace", and the host's
/// Linux (6.18) shows that file in every namespace (current runsc looks for dev_weight, which
/// only the root namespace has).
const NETSTACK_REFUSED: &str = "cannot run with network enabled in root network namespace";

const SANDBOX_ADDRESS: &str = "10.200.0.2/24";
const GATEWAY_ADDRESS: &str = "10.200.0.1/24";
const GATEWAY: &str = "10.200.0.1";
/// Prefix of every namespace and runsc container this module makes, followed by our pid.
const NAME_PREFIX: &str = "k3sg-xtask-";

/// What runsc is asked for beyond the network; the default is the sandbox every e2e ran in
/// before these shapes: no overlay, runsc's default platform, its own netstack, no limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// `--overlay2` (`root:self`, `root:memory`); None: `none`, the root shared straight from
    /// the host.
    pub overlay: Option<&'static str>,
    /// `--platform` (`ptrace`, `kvm`); None: runsc's default (systrap).
    pub platform: Option<&'static str>,
    /// `--network=host` instead of `--network=sandbox`, in the e2e's own namespace.
    pub host_network: bool,
    pub limits: Option<Limits>,
}

/// A cgroup made for the sandbox before runsc starts, given in the spec's `cgroupsPath`. runsc
/// uses a cgroup that already exists as it is (runsc/cgroup: "Using pre-created cgroup") and
/// derives the sandbox's view from it (runsc/sandbox/sandbox.go): `--total-memory` (what
/// /proc/meminfo says) from the memory limit, `--cpu-num` from the quota with
/// `--cpu-num-from-quota` (runsc's default) but never fewer than 2 CPUs ("dropping below 2 CPUs
/// can trigger application to disable locks"). Made by us, it outlives runsc's teardown, so the
/// peak memory use of the whole sandbox (sentry, gofer and the memory file they charge) can be
/// read after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU time per 100 ms period, in µs (100_000: one CPU).
    pub cpu_quota_us: u64,
    pub memory_bytes: u64,
}

impl Shape {
    /// The runsc flags this shape adds, as a reader would type them.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("--overlay2={}", self.overlay.unwrap_or("none"))];
        if let Some(platform) = self.platform {
            parts.push(format!("--platform={platform}"));
        }
        if self.host_network {
            parts.push("--network=host".into());
        }
        if let Some(limits) = self.limits {
            parts.push(format!(
                "cgroup cpu quota {:.1} CPU, memory {} MiB",
                limits.cpu_quota_us as f64 / CPU_PERIOD_US as f64,
                limits.memory_bytes >> 20
            ));
        }
        parts.join(" ")
    }
}

/// A script run to its end.
pub struct Finished {
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
    /// The network the script really had (Debian's runsc falls back to loopback).
    pub network: Network,
    /// Why the network differs from the one asked for, if it does.
    pub note: Option<String>,
    /// With [`Limits`]: the sandbox cgroup's peak memory use, in bytes.
    pub peak_memory: Option<u64>,
}

/// Runs `/bin/sh script` on this host (`runsc` None) or in gVisor, with `network`. Each stdout
/// line is handed to `on_line` as it arrives (the soak prints its samples live). `work` is a
/// directory for the OCI bundle and runsc's state.
pub fn run_script(
    runsc: Option<&Path>,
    shape: &Shape,
    network: Network,
    script: &Path,
    work: &Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<Finished> {
    if *shape != Shape::default() && (runsc.is_none() || network != Network::Interface) {
        bail!(
            "the sandbox shape `{}` needs gVisor and --network interface (`runsc run` with our \
             spec; loopback runs `runsc do`, which takes none of it)",
            shape.describe()
        );
    }
    let _machine = testkit::lock_machine()
        .with_context(|| format!("cannot lock {}", testkit::MACHINE_LOCK))?;
    let mut finished = run_once(runsc, shape, network, script, work, on_line)?;
    if network == Network::Interface
        && finished.stdout.is_empty()
        && finished.stderr.contains(NETSTACK_REFUSED)
    {
        let note = format!(
            "{} refuses its own netstack here (`{NETSTACK_REFUSED}`: it looks for \
             /proc/sys/net/core/rmem_default, which Linux shows in every network namespace): \
             run with loopback only, no default route",
            runsc.map_or("runsc".into(), |r| r.display().to_string())
        );
        crate::ui::step("sandbox", &note);
        finished = run_once(runsc, shape, Network::Loopback, script, work, on_line)?;
        finished.note = Some(note);
    }
    if !finished.success {
        clear_host_files_of(work);
    }
    Ok(finished)
}

/// The first line of every file the e2e's scripts and driver write outside their run directory
/// (k3s's config files under /etc/rancher/k3s).
use e2e_steps::E2E_FILE_MARK;

/// What a run whose sandbox died left on this host. The sandbox shares the host's root, so the
/// install in it wrote tool wrappers to /usr/local/bin and k3s's kubeconfig link, and the
/// scripts wrote k3s's config files; its uninstall and the scripts' cleanup never ran. Left,
/// they turn every later run's host checks red (a seeds sandbox that died at 13:34 made the
/// next two hosts fail `tools-removed` and `host-files-restored`). Only what points into this
/// run's `work` or carries the e2e's mark is removed; each removal is printed.
fn clear_host_files_of(work: &Path) {
    let work = work.display().to_string();
    let rancher = Path::new("/etc/rancher/k3s");
    let tools = ["kubectl", "helm", "crictl", "ctr"].map(|t| Path::new("/usr/local/bin").join(t));
    let ours = |path: &Path| -> bool {
        if let Ok(target) = std::fs::read_link(path) {
            return target.display().to_string().starts_with(&work);
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.starts_with(E2E_FILE_MARK)
            || (text.contains("# k3s-gvisor tool wrapper") && text.contains(&work))
    };
    let candidates = tools.into_iter().chain(
        [
            "k3s.yaml",
            "config.yaml",
            "config.yaml.d/50-e2e.yaml",
            "config.yaml.d/60-bad.yaml",
            "registries.yaml",
        ]
        .map(|f| rancher.join(f)),
    );
    for path in candidates.filter(|p| ours(p)) {
        if std::fs::remove_file(&path).is_ok() {
            crate::ui::step(
                "sandbox",
                format!(
                    "removed {}: left on the host by the run in {work}, whose sandbox died",
                    path.display()
                ),
            );
        }
    }
}

/// One node of [`run_two_nodes`]: its name (also its namespace's suffix) and script.
pub struct NodeScript<'a> {
    pub role: &'a str,
    pub script: &'a Path,
}

/// The address each node of [`run_two_nodes`] has on eth0, by position.
pub const TWO_NODE_ADDRESSES: [&str; 2] = ["10.200.0.2/24", "10.200.0.3/24"];

/// Runs two scripts at once, each on its own node (a namespace, in gVisor a sandbox of its
/// own) on one bridge (module doc), and returns both results in the order given. The host lock
/// is held for the whole run. The scripts share this host's filesystem: in gVisor each sandbox
/// runs with `--file-access=shared`, so what one writes (the join command, "done" markers)
/// the other sees, as on plain Linux.
pub fn run_two_nodes(
    runsc: Option<&Path>,
    nodes: [NodeScript; 2],
    work: &Path,
) -> Result<[Finished; 2]> {
    let _machine = testkit::lock_machine()
        .with_context(|| format!("cannot lock {}", testkit::MACHINE_LOCK))?;
    let net = BridgedNetwork::create([nodes[0].role, nodes[1].role])?;
    let mut commands = Vec::new();
    let mut states = Vec::new();
    for (node, ns) in nodes.iter().zip(&net.nodes) {
        let ns_path = Path::new("/var/run/netns").join(ns);
        let command = match runsc {
            None => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns_path.display()))
                    .arg("/bin/sh")
                    .arg(node.script);
                c
            }
            Some(runsc) => {
                let dir = work.join(format!("{}-sandbox", node.role));
                let (bundle, state) = (dir.join("oci"), dir.join("runsc-state"));
                for d in [&bundle, &state, &dir.join(RUNSC_LOG_DIR)] {
                    crate::fsutil::remove_tree(d)?;
                    std::fs::create_dir_all(d)?;
                }
                std::fs::write(
                    bundle.join("config.json"),
                    serde_json::to_vec_pretty(&oci_spec(node.script, &ns_path))?,
                )?;
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns_path.display()))
                    .arg(runsc)
                    .arg(format!("--root={}", state.display()))
                    .args([
                        "--network=sandbox",
                        "--overlay2=none",
                        "--file-access=shared",
                    ])
                    .args(umount_trace_flags(&dir))
                    .args(["run", "--bundle"])
                    .arg(&bundle)
                    .arg(ns);
                states.push((state, ns.clone()));
                c
            }
        };
        commands.push(command);
    }
    let results: Vec<Result<(String, String, bool)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = commands
            .iter_mut()
            .map(|command| scope.spawn(move || collect(command, &mut |_| {})))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a node's runner panicked"))
            })
            .collect()
    });
    if let Some(runsc) = runsc {
        for (state, id) in &states {
            cleanup_runsc(runsc, state, id);
        }
    }
    drop(net);
    let mut finished = results.into_iter().map(|result| {
        result.map(|(stdout, stderr, success)| Finished {
            stdout,
            stderr,
            success,
            network: Network::Interface,
            note: None,
            peak_memory: None,
        })
    });
    let first = finished.next().expect("two results")?;
    let second = finished.next().expect("two results")?;
    if !(first.success && second.success) {
        clear_host_files_of(work);
    }
    Ok([first, second])
}

fn run_once(
    runsc: Option<&Path>,
    shape: &Shape,
    network: Network,
    script: &Path,
    work: &Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<Finished> {
    let mut guard: Option<IsolatedNetwork> = None;
    let mut root_bind: Option<RootBind> = None;
    let mut cgroup: Option<SandboxCgroup> = None;
    let mut runsc_state: Option<(PathBuf, String)> = None;
    let mut command = match (runsc, network) {
        (None, Network::Loopback) => {
            let mut c = Command::new("unshare");
            c.args(["--net", "--", "/bin/sh"]).arg(script);
            c
        }
        (Some(runsc), Network::Loopback) => {
            let mut c = crate::tools::runsc_sh(runsc);
            c.arg(script);
            c
        }
        (None, Network::Interface) => {
            let net = IsolatedNetwork::create()?;
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", net.path().display()))
                .arg("/bin/sh")
                .arg(script);
            guard = Some(net);
            c
        }
        (Some(runsc), Network::Interface) => {
            let net = IsolatedNetwork::create()?;
            let run = runsc_run_command(runsc, script, work, &net, *shape)?;
            root_bind = run.root_bind;
            cgroup = run.cgroup;
            runsc_state = Some((run.state, net.name.clone()));
            let c = run.command;
            guard = Some(net);
            c
        }
    };
    let result = collect(&mut command, on_line);
    if let (Some(runsc), Some((state, id))) = (runsc, &runsc_state) {
        cleanup_runsc(runsc, state, id);
    }
    // After runsc's teardown: the cgroup is ours and keeps its peak.
    let peak_memory = cgroup.as_ref().map(SandboxCgroup::peak_memory).transpose();
    drop(cgroup);
    drop(root_bind);
    drop(guard);
    let (stdout, stderr, success) = result?;
    Ok(Finished {
        stdout,
        stderr,
        success,
        network,
        note: None,
        peak_memory: peak_memory?,
    })
}

/// `runsc run` of `script` in the namespace of `net`, with an OCI bundle and a state dir (both
/// fresh) under `work`; the container's id is the namespace's name. Returns the command and the
/// state dir.
/// `runsc run` of `script` in the shape asked for, in `net`, and what must live as long as the
/// sandbox (the root bind an overlay needs, the cgroup of its limits).
struct RunscRun {
    command: Command,
    state: PathBuf,
    root_bind: Option<RootBind>,
    cgroup: Option<SandboxCgroup>,
}

fn runsc_run_command(
    runsc: &Path,
    script: &Path,
    work: &Path,
    net: &IsolatedNetwork,
    shape: Shape,
) -> Result<RunscRun> {
    let bundle = work.join("oci");
    let state = work.join("runsc-state");
    for dir in [&bundle, &state, &work.join(RUNSC_LOG_DIR)] {
        crate::fsutil::remove_tree(dir)?;
        std::fs::create_dir_all(dir)?;
    }
    let id = net.name.clone();
    // runsc cannot put its self-backed overlay over a root of `/` (its gofer opens
    // /proc/PID/root + "/": "creating gofer filestore files: failed to open directory
    // \"/proc/PID/root\": not a directory", measured with `runsc --overlay2=root:self run` and
    // root.path "/"); providers give it a directory, as a bind of / is.
    let root_bind = match shape.overlay {
        Some(_) => Some(RootBind::create(&id)?),
        None => None,
    };
    let cgroup = match &shape.limits {
        Some(limits) => Some(SandboxCgroup::create(&id, limits)?),
        None => None,
    };
    let mut spec = oci_spec(script, &net.path());
    if let Some(root) = &root_bind {
        spec["root"]["path"] = root.path.display().to_string().into();
    }
    if let Some(cgroup) = &cgroup {
        spec["linux"]["cgroupsPath"] = cgroup.spec_path().into();
    }
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec)?,
    )?;
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", net.path().display()))
        .arg(runsc)
        .arg(format!("--root={}", state.display()))
        .args(runsc_run_flags(shape))
        .args(umount_trace_flags(work))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id);
    Ok(RunscRun {
        command,
        state,
        root_bind,
        cgroup,
    })
}

/// Where [`umount_trace_flags`] has runsc write its log, under a run's directory.
pub const RUNSC_LOG_DIR: &str = "runsc-log";

/// runsc's own trace of every umount2 in the sandbox, with its caller and result, in
/// `work`/runsc-log/*.boot.txt. gVisor unmounts the whole /proc (or any mount) when a path that
/// is no longer a mount point in the caller's namespace is unmounted while another namespace
/// still has a mount there (docs/gvisor-generations.md, "The sandbox's /proc lost"); this
/// names the call when it happens. Info level only (no --debug): a few lines per pod.
fn umount_trace_flags(work: &Path) -> [String; 3] {
    [
        format!("--debug-log={}/", work.join(RUNSC_LOG_DIR).display()),
        "--strace".into(),
        "--strace-syscalls=umount2".into(),
    ]
}

/// runsc's flags for a sandbox of `shape` (`run` and a later `restore` alike).
fn runsc_run_flags(shape: Shape) -> Vec<String> {
    let mut flags = vec![
        if shape.host_network {
            "--network=host".to_string()
        } else {
            "--network=sandbox".to_string()
        },
        format!("--overlay2={}", shape.overlay.unwrap_or("none")),
    ];
    if let Some(platform) = shape.platform {
        flags.push(format!("--platform={platform}"));
    }
    flags
}

/// What the host does with each output line of [`run_script_controlled`], given the running
/// sandbox.
pub type Control<'c> = &'c mut dyn FnMut(&str, &Sandbox);

/// A running gVisor sandbox of [`run_script_controlled`], for what the host does to it from
/// outside (`runsc pause`/`resume`, `checkpoint`/`restore`).
pub struct Sandbox<'a> {
    runsc: &'a Path,
    state: PathBuf,
    id: String,
    /// The namespace and OCI bundle it runs in, which `runsc restore` needs again, and the
    /// run's directory (its runsc log).
    netns: PathBuf,
    bundle: PathBuf,
    work: PathBuf,
    /// The write ends of the pipes its output goes to (a restored sandbox writes there too);
    /// None once every runsc process is gone, so the reader sees the end.
    output: std::cell::RefCell<Option<(std::io::PipeWriter, std::io::PipeWriter)>>,
    /// `runsc run`, then each `runsc restore`: the last one's exit is the run's.
    processes: std::cell::RefCell<Vec<std::process::Child>>,
}

impl Sandbox<'_> {
    /// `runsc --root=STATE ARGS ID`; its stdout, or an error with runsc's own words.
    pub fn runsc(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.runsc)
            .arg(format!("--root={}", self.state.display()))
            .args(args)
            .arg(&self.id)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.runsc.display()))?;
        if !out.status.success() {
            bail!(
                "`runsc {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `runsc restore` of the checkpoint in `image` (made by `runsc checkpoint
    /// --image-path=IMAGE`), in the same namespace, bundle and state dir, with the same runsc
    /// flags as the first run; its output continues the run's.
    pub fn restore(&self, image: &Path) -> Result<()> {
        let output = self.output.borrow();
        let Some((out, err)) = output.as_ref() else {
            bail!("the sandbox's output is closed: nothing to restore into");
        };
        // `runsc run` moved eth0's address and routes into its netstack (the host side keeps
        // none, so the kernel does not answer for the sandbox); a restore reads them from the
        // namespace again and, finding none, brings the sandbox back with loopback only
        // (runsc's log: `No usable IP addresses found for interface "eth0", skipping`). A
        // provider restores into a namespace set up as for a first run: so does this one.
        IsolatedNetwork::address(&self.id)?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns.display()))
            .arg(self.runsc)
            .arg(format!("--root={}", self.state.display()))
            .args(runsc_run_flags(Shape::default()))
            // Its log beside the first run's, with the same umount2 trace.
            .args(umount_trace_flags(&self.work))
            .arg("restore")
            .arg(format!("--image-path={}", image.display()))
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(err.try_clone()?);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        self.processes.borrow_mut().push(child);
        Ok(())
    }

    /// Whether `runsc restore` has run.
    fn restored(&self) -> bool {
        self.processes.borrow().len() > 1
    }

    /// Closes the output once every runsc process has exited; true if it did.
    fn close_when_gone(&self) -> bool {
        let gone = self
            .processes
            .borrow_mut()
            .iter_mut()
            .all(|p| matches!(p.try_wait(), Ok(Some(_))));
        if gone {
            self.output.borrow_mut().take();
        }
        gone
    }
}

/// Like [`run_script`] in gVisor with `Network::Interface`, and every stdout line also handed
/// to `on_line` with the running sandbox, so the host can act on it from outside while the
/// script waits (the lifecycle runs: `runsc pause`/`resume`, `checkpoint`/`restore`). While
/// `on_line` runs, no more output is read. The run ends when the last runsc process (the
/// first `run`, or the last `restore`) has exited.
pub fn run_script_controlled(
    runsc: &Path,
    script: &Path,
    work: &Path,
    on_line: Control,
) -> Result<Finished> {
    let _machine = testkit::lock_machine()
        .with_context(|| format!("cannot lock {}", testkit::MACHINE_LOCK))?;
    let net = IsolatedNetwork::create()?;
    // The lifecycle runs use the default shape (restore repeats its flags).
    let RunscRun {
        mut command, state, ..
    } = runsc_run_command(runsc, script, work, &net, Shape::default())?;
    let (out_read, out_write) = std::io::pipe()?;
    let (err_read, err_write) = std::io::pipe()?;
    command
        .stdin(Stdio::null())
        .stdout(out_write.try_clone()?)
        .stderr(err_write.try_clone()?);
    let first = command
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    // The command keeps its copies of the write ends: drop it, or the reader never sees EOF.
    drop(command);
    let sandbox = Sandbox {
        runsc,
        state,
        id: net.name.clone(),
        netns: net.path(),
        bundle: work.join("oci"),
        work: work.to_path_buf(),
        output: std::cell::RefCell::new(Some((out_write, err_write))),
        processes: std::cell::RefCell::new(vec![first]),
    };
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(err_read).read_to_string(&mut text);
        text
    });
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout_reader = std::thread::spawn(move || {
        for line in BufReader::new(out_read).lines() {
            let line = line.unwrap_or_else(|e| format!("(unreadable line: {e})"));
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdout = String::new();
    let mut last_line = std::time::Instant::now();
    let mut hung = None;
    loop {
        match lines.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(line) => {
                on_line(&line, &sandbox);
                last_line = std::time::Instant::now();
                stdout.push_str(&line);
                stdout.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if hung.is_none() && sandbox.restored() && last_line.elapsed() > RESTORED_SILENCE {
                    hung = Some(format!(
                        "the restored sandbox ran nothing for {} s (killed): gVisor's restore hangs \
                         while pods hold TCP connections (docs/pause-resume.md)",
                        RESTORED_SILENCE.as_secs()
                    ));
                    kill_runsc_rooted_at(&sandbox.state);
                }
                sandbox.close_when_gone();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = stdout_reader.join();
    let mut stderr = stderr_reader.join().unwrap_or_default();
    if let Some(hung) = hung {
        // Last, so the outcome's `sandbox` step quotes it.
        stderr.push_str(&hung);
        stderr.push('\n');
    }
    let success = match sandbox.processes.borrow_mut().last_mut() {
        Some(last) => last.wait()?.success(),
        None => false,
    };
    cleanup_runsc(runsc, &sandbox.state, &sandbox.id);
    drop(net);
    if !success {
        clear_host_files_of(work);
    }
    Ok(Finished {
        stdout,
        stderr,
        success,
        network: Network::Interface,
        note: None,
        peak_memory: None,
    })
}

/// Runs the command with stdin closed, streaming stdout lines to `on_line`.
fn collect(command: &mut Command, on_line: &mut dyn FnMut(&str)) -> Result<(String, String, bool)> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let mut stderr_pipe = child.stderr.take().expect("piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let mut stdout = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.unwrap_or_else(|e| format!("(unreadable line: {e})"));
        on_line(&line);
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let status = child.wait()?;
    let stderr = stderr_reader.join().unwrap_or_default();
    Ok((stdout, stderr, status.success()))
}

/// What `runsc do` puts in its spec, with the network namespace to join.
fn oci_spec(script: &Path, netns: &Path) -> serde_json::Value {
    // Every capability up to CAP_AUDIT_READ (37). `runsc do` also grants CAP_PERFMON, CAP_BPF
    // and CAP_CHECKPOINT_RESTORE where it knows them; Debian's 2022 runsc does not and refuses
    // the spec (`converting capabilities: unknown capability "CAP_PERFMON"`). Nothing the
    // scenarios run needs those three.
    const CAPABILITIES: [&str; 38] = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
    ];
    let capabilities = CAPABILITIES.to_vec();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "k3s-gvisor-e2e".into());
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "/"},
        "hostname": hostname,
        "process": {
            "cwd": "/",
            "args": ["/bin/sh", script],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
            ],
            "capabilities": {
                "bounding": capabilities,
                "effective": capabilities,
                "permitted": capabilities,
                "inheritable": capabilities,
                "ambient": capabilities,
            },
        },
        "linux": {"namespaces": [{"type": "network", "path": netns}]},
    })
}

/// How long a restored sandbox may print nothing before [`run_script_controlled`] calls it
/// hung: tests/e2e/lifecycle.sh prints the moment it sees the clock jump (within 2 s), and
/// then at least every 30 s.
const RESTORED_SILENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// SIGKILL to every runsc process of the state dir `state` (`--root=STATE` on its command
/// line): a sandbox hung in its restore holds its lock, so `runsc kill` and `delete` wait on
/// it forever.
fn kill_runsc_rooted_at(state: &Path) {
    let flag = format!("--root={}", state.display());
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|arg| arg == flag.as_bytes()) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

/// Deletes the container if runsc left it, and the null network namespace runsc bind-mounts
/// into its state dir (what `runsc do` undoes with UnmountNullNetNS), then the state dir.
fn cleanup_runsc(runsc: &Path, state: &Path, id: &str) {
    let _ = Command::new(runsc)
        .arg(format!("--root={}", state.display()))
        .args(["delete", "--force", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let null_netns = state.join("null-netns");
    if null_netns.exists() {
        let _ = Command::new("umount").arg(&null_netns).status();
    }
    let _ = std::fs::remove_dir_all(state);
}

/// The CFS period the CPU quota of [`Limits`] is given in, runsc's and the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;

/// A bind mount of `/` at /run/ID-root (outside every e2e directory, which are removed as
/// trees), the root directory an overlaid sandbox gets; dropped, unmounted and removed.
struct RootBind {
    path: PathBuf,
}

impl RootBind {
    fn create(id: &str) -> Result<RootBind> {
        let path = Path::new("/run").join(format!("{id}-root"));
        std::fs::create_dir_all(&path)?;
        // Not recursive: runsc mounts its own /proc, /sys and /dev, and everything the
        // scenario reads or writes is on the root filesystem. Private, so that nothing mounted
        // or unmounted under it reaches the host's mount table.
        let root = RootBind { path };
        run_command(Command::new("mount").args(["--bind", "/"]).arg(&root.path))?;
        run_command(Command::new("mount").arg("--make-private").arg(&root.path))?;
        Ok(root)
    }
}

impl Drop for RootBind {
    fn drop(&mut self) {
        unmount_and_remove(&self.path);
    }
}

fn unmount_and_remove(path: &Path) {
    let _ = Command::new("umount")
        .arg(path)
        .stderr(Stdio::null())
        .status();
    // rmdir, never a tree removal: if the unmount failed, this is still the host's root.
    let _ = std::fs::remove_dir(path);
}

/// The sandbox's cgroup ([`Limits`]): /sys/fs/cgroup/{memory,cpu}/ID on cgroup v1 (this
/// machine), /sys/fs/cgroup/ID with the memory and cpu controllers on v2.
struct SandboxCgroup {
    id: String,
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl SandboxCgroup {
    fn create(id: &str, limits: &Limits) -> Result<SandboxCgroup> {
        let root = Path::new("/sys/fs/cgroup");
        let v2 = root.join("cgroup.controllers").exists();
        let mut cgroup = SandboxCgroup {
            id: id.to_string(),
            dirs: Vec::new(),
            v2,
        };
        let quota = limits.cpu_quota_us.to_string();
        let memory = limits.memory_bytes.to_string();
        let settings: Vec<(PathBuf, &str, String)> = if v2 {
            // The v2 branch is not exercised on this machine (cgroup v1); it writes what the
            // v1 one does, in v2's files.
            write_file(&root.join("cgroup.subtree_control"), "+memory +cpu")?;
            let dir = root.join(id);
            vec![
                (dir.clone(), "memory.max", memory),
                (dir, "cpu.max", format!("{quota} {CPU_PERIOD_US}")),
            ]
        } else {
            let (mem, cpu) = (root.join("memory").join(id), root.join("cpu").join(id));
            vec![
                (mem, "memory.limit_in_bytes", memory),
                (cpu.clone(), "cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                (cpu, "cpu.cfs_quota_us", quota),
            ]
        };
        for (dir, file, value) in settings {
            if !cgroup.dirs.contains(&dir) {
                std::fs::create_dir(&dir)
                    .with_context(|| format!("cannot make the cgroup {}", dir.display()))?;
                cgroup.dirs.push(dir.clone());
            }
            write_file(&dir.join(file), &value)?;
        }
        Ok(cgroup)
    }

    /// What runsc's spec takes: absolute, so runsc looks for it under each controller's root.
    fn spec_path(&self) -> String {
        format!("/{}", self.id)
    }

    fn peak_memory(&self) -> Result<u64> {
        let (dir, file) = if self.v2 {
            (&self.dirs[0], "memory.peak")
        } else {
            (&self.dirs[0], "memory.max_usage_in_bytes")
        };
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{}: `{}` is not a number", path.display(), text.trim()))
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            remove_cgroup(dir);
        }
    }
}

/// rmdir of a cgroup, retried while the sandbox's last processes leave it.
fn remove_cgroup(dir: &Path) {
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value)
        .with_context(|| format!("cannot write {value} to {}", path.display()))
}

fn run_command(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The two namespaces and the veth pair between them; dropped, both namespaces (and with them
/// the pair) are deleted.
struct IsolatedNetwork {
    name: String,
}

impl IsolatedNetwork {
    fn create() -> Result<IsolatedNetwork> {
        remove_stale_namespaces();
        let name = format!("{NAME_PREFIX}{}", std::process::id());
        let net = IsolatedNetwork { name };
        let (ns, gw) = (net.name.as_str(), format!("{}-gw", net.name));
        let steps: [&[&str]; 7] = [
            &["netns", "add", ns],
            &["netns", "add", &gw],
            // Created inside NS with its peer inside NS-gw: the host's namespace never sees it.
            &[
                "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
                &gw,
            ],
            &["-n", ns, "link", "set", "eth0", "up"],
            &["-n", ns, "link", "set", "lo", "up"],
            &["-n", &gw, "addr", "add", GATEWAY_ADDRESS, "dev", "eth0"],
            &["-n", &gw, "link", "set", "eth0", "up"],
        ];
        run_ip(steps.iter().map(|args| args.to_vec()))?;
        IsolatedNetwork::address(ns)?;
        Ok(net)
    }

    /// The sandbox side's address and default route, in namespace `ns` (again after a
    /// checkpoint: `replace`, never a duplicate).
    fn address(ns: &str) -> Result<()> {
        run_ip([
            vec!["-n", ns, "addr", "replace", SANDBOX_ADDRESS, "dev", "eth0"],
            vec!["-n", ns, "route", "replace", "default", "via", GATEWAY],
        ])
    }

    fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }
}

impl Drop for IsolatedNetwork {
    fn drop(&mut self) {
        for ns in [self.name.clone(), format!("{}-gw", self.name)] {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// Two node namespaces and a hub namespace whose bridge joins their eth0s (module doc);
/// dropped, all three namespaces, and with them the veths and the bridge, are deleted.
struct BridgedNetwork {
    hub: String,
    nodes: Vec<String>,
}

impl BridgedNetwork {
    fn create(roles: [&str; 2]) -> Result<BridgedNetwork> {
        remove_stale_namespaces();
        let base = format!("{NAME_PREFIX}{}", std::process::id());
        let net = BridgedNetwork {
            hub: format!("{base}-hub"),
            nodes: roles.iter().map(|role| format!("{base}-{role}")).collect(),
        };
        let hub = net.hub.as_str();
        let mut steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), hub.into()],
            vec![
                "-n".into(),
                hub.into(),
                "link".into(),
                "add".into(),
                "br0".into(),
                "type".into(),
                "bridge".into(),
            ],
            vec![
                "-n".into(),
                hub.into(),
                "addr".into(),
                "add".into(),
                GATEWAY_ADDRESS.into(),
                "dev".into(),
                "br0".into(),
            ],
            vec![
                "-n".into(),
                hub.into(),
                "link".into(),
                "set".into(),
                "br0".into(),
                "up".into(),
            ],
        ];
        for ((ns, role), address) in net.nodes.iter().zip(roles).zip(TWO_NODE_ADDRESSES) {
            let ip = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
            steps.push(ip(&["netns", "add", ns]));
            // Created inside the node's namespace with its peer in the hub's: the host's
            // namespace never sees either end.
            steps.push(ip(&[
                "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", role, "netns", hub,
            ]));
            steps.push(ip(&["-n", ns, "addr", "add", address, "dev", "eth0"]));
            steps.push(ip(&["-n", ns, "link", "set", "eth0", "up"]));
            steps.push(ip(&["-n", ns, "link", "set", "lo", "up"]));
            steps.push(ip(&["-n", ns, "route", "add", "default", "via", GATEWAY]));
            steps.push(ip(&["-n", hub, "link", "set", role, "master", "br0"]));
            steps.push(ip(&["-n", hub, "link", "set", role, "up"]));
        }
        run_ip(steps)?;
        Ok(net)
    }
}

impl Drop for BridgedNetwork {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Namespaces, root binds and cgroups left by an xtask that was killed (its pid is gone).
fn remove_stale_namespaces() {
    let stale_with = |dir: &str, prefix: &str| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| {
                // NAME_PREFIX<pid>, or <pid>-gw, -hub, -<role>, -root.
                name.strip_prefix(prefix).is_some_and(|rest| {
                    let pid = rest.split('-').next().unwrap_or(rest);
                    !Path::new("/proc").join(pid).exists()
                })
            })
            .collect()
    };
    let stale = |dir: &str| stale_with(dir, NAME_PREFIX);
    for name in stale("/var/run/netns") {
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
    }
    for name in stale("/run") {
        unmount_and_remove(&Path::new("/run").join(name));
    }
    for dir in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/cpu",
    ] {
        for name in stale(dir) {
            remove_cgroup(&Path::new(dir).join(name));
        }
    }
    // runsc's self-backed overlay file in the root it overlaid (runsc/boot/vfs.go
    // SelfFilestorePath), deleted by runsc unless it was killed.
    for name in stale_with("/", &format!("{SELF_FILESTORE_PREFIX}{NAME_PREFIX}")) {
        let _ = std::fs::remove_file(Path::new("/").join(name));
    }
}

/// runsc's `fsutil.SelfFilestorePrefix`.
const SELF_FILESTORE_PREFIX: &str = ".gvisor.filestore.";

/// Runs `ip ARGS` for each step in order; the first failure names its command line.
fn run_ip<S: AsRef<str>>(steps: impl IntoIterator<Item = Vec<S>>) -> Result<()> {
    for args in steps {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let output = Command::new("ip")
            .args(&args)
            .output()
            .context("cannot run `ip` (iproute2): the e2e sandbox network needs it")?;
        if !output.status.success() {
            bail!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    Ok(())
}
