//! `cargo xtask bench --stack`: what the installed stack costs what it runs, each figure against
//! a baseline from the same run (tests/e2e/bench-stack.sh does the measuring in a sandbox):
//! - a pod's syscall loop and open loop (kubectl exec into a pod of the installed k3s), against
//!   the same loops in a container containerd starts with no launcher anywhere (`ctr run`), and
//!   under the launcher (what every pod paid while containerd ran under it). Goal: 1.00x.
//! - k3s's idle CPU seconds per minute under the launcher (`--launcher always`) against k3s run
//!   directly (`--launcher auto`: on plain Linux nothing is missing, in gVisor the missing
//!   /proc/sys files are laid over /proc/sys instead). Goal: at most 1.03x.
//!
//! Loops: best of the rounds (other load only slows a loop down). Idle CPU: the mean of the
//! rounds (k3s's own periodic work, not other load, is what varies).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::e2e::{self, Host};
use crate::sandbox::{self, Network};

pub struct StackOptions<'a> {
    pub tarball: &'a Path,
    pub work: std::path::PathBuf,
    pub scripts: &'a Path,
    /// crates/launcher/benches (syscall_loops.c).
    pub loop_sources: std::path::PathBuf,
    pub host: &'a Host,
    /// The `--host` value that measures here again.
    pub host_arg: &'a str,
    pub network: Network,
    pub rounds: u32,
    pub n_syscall: u64,
    pub n_open: u64,
    pub idle_seconds: u32,
    /// With --memory: the k3s runtime settings measured against the installer's default.
    pub memory_sets: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct StackReport {
    pub label: String,
    pub host: String,
    /// The flag that measures this again: `--stack`, `--addons` or `--memory ...`.
    pub command: String,
    pub measured_at: String,
    pub rounds: u32,
    /// What a pod of the installed stack reads in /proc/self/status.
    pub pod_status: String,
    pub rows: Vec<StackRow>,
    /// With --memory: where the memory is, one column per set (the default first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Breakdown>,
}

/// A table of figures by set: each row one figure, each value the mean over the rounds (None
/// where the set printed none, e.g. Go's statistics without `--enable-pprof`).
#[derive(Debug, Serialize)]
pub struct Breakdown {
    pub columns: Vec<String>,
    pub rows: Vec<(String, Vec<Option<f64>>)>,
}

#[derive(Debug, Serialize)]
pub struct StackRow {
    pub figure: String,
    pub unit: String,
    pub subject_name: String,
    pub subject: f64,
    pub baseline_name: String,
    pub baseline: f64,
    /// A third runner for contrast (the launcher), if any.
    pub contrast: Option<(String, f64)>,
}

/// `BENCH <name> <value>` lines: every value of each name, in order.
fn values(stdout: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut map = std::collections::BTreeMap::<String, Vec<String>>::new();
    for line in stdout.lines() {
        if let Some((name, value)) = line
            .strip_prefix("BENCH ")
            .and_then(|rest| rest.split_once(' '))
        {
            map.entry(name.to_string())
                .or_default()
                .push(value.trim().to_string());
        }
    }
    map
}

fn numbers(map: &std::collections::BTreeMap<String, Vec<String>>, name: &str) -> Result<Vec<f64>> {
    let raw = map
        .get(name)
        .with_context(|| format!("the stack benchmark printed no `BENCH {name}` line"))?;
    raw.iter()
        .map(|v| {
            v.parse::<f64>()
                .with_context(|| format!("BENCH {name}: `{v}` is not a number"))
        })
        .collect()
}

/// A row of two runners' means: `(name, BENCH key)` for the subject and the baseline.
fn mean_row(
    map: &std::collections::BTreeMap<String, Vec<String>>,
    figure: &str,
    unit: &str,
    subject: (&str, &str),
    baseline: (&str, &str),
) -> Result<StackRow> {
    Ok(StackRow {
        figure: figure.into(),
        unit: unit.into(),
        subject_name: subject.0.into(),
        subject: mean(&numbers(map, subject.1)?),
        baseline_name: baseline.0.into(),
        baseline: mean(&numbers(map, baseline.1)?),
        contrast: None,
    })
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The installer's default first, then each `--memory` setting.
fn memory_sets(opts: &StackOptions) -> Vec<String> {
    std::iter::once("default".to_string())
        .chain(opts.memory_sets.iter().cloned())
        .collect()
}

/// Runs bench-stack.sh once with WHAT in the sandbox; its BENCH values.
fn measure(
    opts: &StackOptions,
    what: &str,
    loops: &Path,
) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    measure_with(opts, what, loops, &[])
}

/// `measure` with more variables for the script.
fn measure_with(
    opts: &StackOptions,
    what: &str,
    loops: &Path,
    more: &[(&str, String)],
) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    let (stdout, log) = run_bench_script(opts, what, loops, more)?;
    if let Some(line) = stdout.lines().find(|l| l.starts_with("BENCHFAIL")) {
        bail!("{line} (see {})", log.display());
    }
    let map = values(&stdout);
    if !map.contains_key("done") {
        bail!(
            "the stack benchmark ({what}) did not finish: see {}",
            log.display()
        );
    }
    Ok(map)
}

/// Runs bench-stack.sh with WHAT in the sandbox: its stdout, and the log that keeps it.
fn run_bench_script(
    opts: &StackOptions,
    what: &str,
    loops: &Path,
    more: &[(&str, String)],
) -> Result<(String, std::path::PathBuf)> {
    let dir = opts.work.join(format!("stack-{}-{what}", opts.host.label));
    crate::fsutil::remove_tree(&dir)?;
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir)?;
    let mut vars = vec![
        ("TARBALL", opts.tarball.display().to_string()),
        ("RUN", run_dir.display().to_string()),
        ("LOOPS", loops.display().to_string()),
        ("WHAT", what.to_string()),
        ("ROUNDS", opts.rounds.to_string()),
        ("N_SYSCALL", opts.n_syscall.to_string()),
        ("N_OPEN", opts.n_open.to_string()),
        ("IDLE_SECONDS", opts.idle_seconds.to_string()),
        ("MEMORY_SETS", memory_sets(opts).join(" ")),
    ];
    vars.extend(more.iter().cloned());
    let script = e2e::wrapper(&dir, &opts.scripts.join("bench-stack.sh"), &vars)?;
    crate::ui::step(
        "bench",
        format!("{} ({what}): output in {}", opts.host.label, dir.display()),
    );
    let finished = sandbox::run_script(
        opts.host.runsc.as_deref(),
        &opts.host.shape,
        opts.network,
        &script,
        &dir,
        &mut |line| {
            if line.starts_with("BENCH") {
                eprintln!("  {line}");
            }
        },
    )?;
    let log = dir.join("output.log");
    std::fs::write(
        &log,
        format!("{}\n--- stderr ---\n{}", finished.stdout, finished.stderr),
    )?;
    e2e::remove_extracted_bundles(&run_dir)?;
    Ok((finished.stdout, log))
}

pub fn run(opts: &StackOptions) -> Result<StackReport> {
    let loops_dir = opts.work.join("stack-loops");
    std::fs::create_dir_all(&loops_dir)?;
    crate::bench::compile_syscall_loops(&opts.loop_sources, &loops_dir)?;

    let pods = measure(opts, "pods", &loops_dir)?;
    let mut rows = Vec::new();
    for (figure, key) in [
        ("a pod's getppid loop", "getppid"),
        ("a pod's open+close loop", "open"),
    ] {
        rows.push(StackRow {
            figure: figure.into(),
            unit: "ns/op".into(),
            subject_name: "pod of the installed k3s".into(),
            subject: best(&numbers(&pods, &format!("pod-{key}"))?),
            baseline_name: "container, no launcher anywhere".into(),
            baseline: best(&numbers(&pods, &format!("container-{key}"))?),
            contrast: Some((
                "under the launcher".into(),
                best(&numbers(&pods, &format!("launcher-{key}"))?),
            )),
        });
    }
    let idle = measure(opts, "k3s-idle", &loops_dir)?;
    rows.push(mean_row(
        &idle,
        &format!("k3s idle CPU, node Ready ({} s windows)", opts.idle_seconds),
        "CPU s/min",
        ("--launcher always", "k3s-idle-always"),
        ("--launcher auto (k3s directly)", "k3s-idle-auto"),
    )?);
    Ok(StackReport {
        label: opts.host.label.clone(),
        host: opts.host_arg.into(),
        command: "--stack".into(),
        measured_at: now()?,
        rounds: opts.rounds,
        pod_status: pods
            .get("pod-status")
            .and_then(|v| v.first().cloned())
            .unwrap_or_default(),
        rows,
        breakdown: None,
    })
}

fn now() -> Result<String> {
    let sh = xshell::Shell::new()?;
    Ok(xshell::cmd!(sh, "date -u +%Y-%m-%dT%H:%MZ")
        .quiet()
        .read()?)
}

/// `cargo xtask bench --addons`: the idle memory of the whole install with k3s's packaged
/// add-ons on (its defaults) against the same install with them off (k3s's own `--disable`),
/// alternating per round in one sandbox; node Ready after `./install` for each; and the
/// bundle's gzip size with and without the add-ons' files, packed again in the same run.
pub fn run_addons(opts: &StackOptions) -> Result<StackReport> {
    let m = measure(opts, "addons", Path::new("/nonexistent"))?;
    let row = |figure: &str, unit: &str, key: &str| {
        mean_row(
            &m,
            figure,
            unit,
            ("add-ons on (k3s's defaults)", &format!("{key}-on")),
            (
                "off: --disable traefik,metrics-server,local-storage",
                &format!("{key}-off"),
            ),
        )
    };
    let rows = vec![
        row(
            &format!(
                "idle RSS of every process started by ./install ({} s after every pod settled)",
                opts.idle_seconds
            ),
            "MiB",
            "rss",
        )?,
        row("pods Running", "pods", "pods")?,
        row(
            "./install until it returns (node Ready, pod range checked)",
            "s",
            "ready",
        )?,
        mean_row(
            &m,
            "the bundle, packed again with gzip -6",
            "MiB",
            ("with the add-ons", "gz-on"),
            ("without their images, charts and helm", "gz-off"),
        )?,
    ];
    Ok(StackReport {
        label: opts.host.label.clone(),
        host: opts.host_arg.into(),
        command: "--addons".into(),
        measured_at: now()?,
        rounds: opts.rounds,
        pod_status: String::new(),
        rows,
        breakdown: None,
    })
}

/// The figures of `--memory`'s breakdown: (figure, BENCH key), in MiB unless named.
const BREAKDOWN: [(&str, &str); 21] = [
    ("every process started by ./install", "rss"),
    (
        "issue 27's processes (k3s, shims, containerd, svcproxy, keepers, launcher)",
        "issue-rss",
    ),
    ("k3s", "k3s-rss"),
    ("k3s: its binary's mappings (smaps)", "k3s-file"),
    ("k3s: anonymous mappings (heap, stacks; smaps)", "k3s-anon"),
    ("k3s: other mappings (smaps)", "k3s-other"),
    ("containerd", "containerd-rss"),
    ("containerd-shim-runc-v2, all", "shims-rss"),
    ("containerd-shim-runc-v2 processes (count)", "shims"),
    ("pods Running (count)", "pods"),
    ("one shim: its binary's mappings (smaps)", "shim-file"),
    ("one shim: anonymous mappings (smaps)", "shim-anon"),
    ("sandbox /proc/meminfo: MemTotal - MemFree", "meminfo-used"),
    ("sandbox /proc/meminfo: AnonPages", "meminfo-anon"),
    (
        "sandbox /proc/meminfo: AnonPages before ./install",
        "meminfo-anon0",
    ),
    ("k3s Go: HeapInuse (pprof)", "go-HeapInuse"),
    ("k3s Go: HeapIdle (pprof)", "go-HeapIdle"),
    ("k3s Go: HeapReleased (pprof)", "go-HeapReleased"),
    ("k3s Go: StackInuse (pprof)", "go-StackInuse"),
    ("k3s Go: Sys, all the runtime mapped (pprof)", "go-Sys"),
    ("k3s Go: NextGC, the heap goal (pprof)", "go-NextGC"),
];

/// `cargo xtask bench --memory SET...`: k3s's settings (each SET comma-separated parts:
/// `VAR=value` that ./install records for k3s, e.g. `GOGC=50`, or `CONTAINERD_VAR=value` for
/// containerd and its shims; or `--flag[=value]`, a k3s flag) against the installer's default,
/// alternating per round in one sandbox, each installed with k3s's defaults (add-ons on): the
/// idle RSS of the install, of what issue 27 counts and of k3s alone, ./install's time to node
/// Ready (what a setting costs the start), k3s's idle CPU, and the
/// API's latency (median and 95th percentile of 200 GETs over one connection) so a memory cut
/// is seen beside what it costs; and where the memory is, per set.
pub fn run_memory(opts: &StackOptions) -> Result<StackReport> {
    for set in opts.memory_sets {
        if set.is_empty() || set.contains(char::is_whitespace) || set == "default" {
            bail!("--memory `{set}`: a set is comma-separated VAR=value or --flag parts, with no spaces");
        }
    }
    let m = measure(opts, "memory", Path::new("/nonexistent"))?;
    let idle = opts.idle_seconds;
    let mut rows = Vec::new();
    for set in opts.memory_sets {
        let row = |figure: &str, unit: &str, key: &str| {
            mean_row(
                &m,
                figure,
                unit,
                (set, &format!("{key}-{set}")),
                ("installer's default", &format!("{key}-default")),
            )
        };
        rows.extend([
            row(
                &format!("idle RSS of every process started by ./install ({idle} s after every pod settled)"),
                "MiB",
                "rss",
            )?,
            row("idle RSS of issue 27's processes", "MiB", "issue-rss")?,
            row("idle RSS of k3s", "MiB", "k3s-rss")?,
            row("idle RSS of containerd and its shims", "MiB", "containerd-and-shims")?,
            row("./install until it returns (node Ready, pod range checked)", "s", "ready")?,
            row(&format!("k3s idle CPU ({idle} s window)"), "CPU s/min", "k3s-cpu")?,
            row("GET /api/v1/pods, median", "ms", "api-p50-pods")?,
            row("GET /api/v1/pods, 95th percentile", "ms", "api-p95-pods")?,
            row("GET /api/v1/configmaps, median", "ms", "api-p50-configmaps")?,
            row("GET /api/v1/configmaps, 95th percentile", "ms", "api-p95-configmaps")?,
        ]);
    }
    let columns = memory_sets(opts);
    let breakdown = Breakdown {
        rows: BREAKDOWN
            .iter()
            .map(|(figure, key)| {
                let values = columns
                    .iter()
                    .map(|set| numbers(&m, &format!("{key}-{set}")).ok().map(|v| mean(&v)))
                    .collect();
                (figure.to_string(), values)
            })
            .filter(|(_, values): &(String, Vec<Option<f64>>)| values.iter().any(Option::is_some))
            .collect(),
        columns,
    };
    Ok(StackReport {
        label: opts.host.label.clone(),
        host: opts.host_arg.into(),
        // `--memory=SET`: a set may start with `--`.
        command: opts
            .memory_sets
            .iter()
            .map(|set| format!("--memory={set}"))
            .collect::<Vec<_>>()
            .join(" "),
        measured_at: now()?,
        rounds: opts.rounds,
        pod_status: String::new(),
        rows,
        breakdown: Some(breakdown),
    })
}

/// The large image of `--images`: where xtask wrote it, its name, and the replicas.
pub struct ImageInput {
    pub file: std::path::PathBuf,
    pub reference: String,
    pub replicas: u32,
}

/// `cargo xtask bench --images`: every host's figures, one table.
#[derive(Debug, Serialize)]
pub struct ImagesReport {
    pub command: String,
    pub image: String,
    pub replicas: u32,
    pub shapes: Vec<ImagesShape>,
}

/// One sandbox shape's figures.
#[derive(Debug, Serialize)]
pub struct ImagesShape {
    pub label: String,
    pub host: String,
    pub started_at: String,
    pub finished_at: String,
    pub places: Vec<ImagePlace>,
    pub rows: Vec<ImageRow>,
    /// What could not be measured, with the error.
    pub failures: Vec<String>,
}

/// Where the data dir was: the sandbox's own place for it (`root`) or a tmpfs mounted in it.
#[derive(Debug, Serialize, PartialEq)]
pub struct ImagePlace {
    pub place: String,
    /// The filesystem (`stat -f`) and the directory.
    pub filesystem: String,
    /// Whether an overlay mount was taken there: `ok` or `refused: ...`.
    pub overlay_mount: String,
    /// The snapshotter ./install chose there.
    pub installer_chose: String,
    /// containerd's overlayfs snapshotter plugin there: `ok` or its status and log line.
    pub overlayfs_plugin: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ImageRow {
    pub place: String,
    /// `pods` (a Deployment through the kubelet) or `ctr` (`ctr run -d`).
    pub via: String,
    pub snapshotter: String,
    pub import_s: f64,
    pub first_s: f64,
    pub all_s: f64,
    /// Before the import: the shipped images, unpacked at install.
    pub disk_before_mib: f64,
    pub disk_import_mib: f64,
    pub disk_first_mib: f64,
    pub disk_all_mib: f64,
}

/// The `img-*` lines of one run.
fn image_figures(
    map: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<(Vec<ImagePlace>, Vec<ImageRow>, Vec<String>)> {
    let one = |key: String| {
        map.get(&key)
            .and_then(|v| v.first().cloned())
            .unwrap_or_else(|| "not measured".into())
    };
    let mut places = Vec::new();
    for place in ["root", "tmpfs"] {
        if !map.contains_key(&format!("img-probe-{place}")) {
            continue;
        }
        places.push(ImagePlace {
            place: place.into(),
            filesystem: one(format!("img-place-{place}")),
            overlay_mount: one(format!("img-probe-{place}")),
            installer_chose: one(format!("img-chose-{place}")),
            overlayfs_plugin: one(format!("img-overlayfs-plugin-{place}")),
        });
    }
    let mut rows = Vec::new();
    for line in map.get("img-row").into_iter().flatten() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [place, via, snapshotter, numbers @ ..] = f.as_slice() else {
            bail!("BENCH img-row `{line}`: expected place, via, snapshotter and seven numbers");
        };
        let n = numbers
            .iter()
            .map(|v| {
                v.parse::<f64>()
                    .with_context(|| format!("BENCH img-row `{line}`: `{v}` is not a number"))
            })
            .collect::<Result<Vec<_>>>()?;
        let [import_s, first_s, all_s, disk_before_mib, disk_import_mib, disk_first_mib, disk_all_mib] =
            n[..]
        else {
            bail!("BENCH img-row `{line}`: expected seven numbers");
        };
        rows.push(ImageRow {
            place: place.to_string(),
            via: via.to_string(),
            snapshotter: snapshotter.to_string(),
            import_s,
            first_s,
            all_s,
            disk_before_mib,
            disk_import_mib,
            disk_first_mib,
            disk_all_mib,
        });
    }
    let failures = map.get("img-fail").cloned().unwrap_or_default();
    Ok((places, rows, failures))
}

/// `cargo xtask bench --images` on one host: bench-stack.sh `images` in its sandbox.
pub fn run_images(opts: &StackOptions, image: &ImageInput) -> Result<ImagesShape> {
    let started_at = now()?;
    let (stdout, log) = run_bench_script(
        opts,
        "images",
        Path::new("/nonexistent"),
        &[
            ("IMAGE", image.file.display().to_string()),
            ("IMAGE_REF", image.reference.clone()),
            ("REPLICAS", image.replicas.to_string()),
        ],
    )?;
    // What was measured before a failure still counts; the failure is said beside it.
    let m = values(&stdout);
    let (places, rows, mut failures) = image_figures(&m)?;
    if let Some(line) = stdout.lines().find(|l| l.starts_with("BENCHFAIL")) {
        failures.push(format!("{line} (see {})", log.display()));
    } else if !m.contains_key("done") {
        failures.push(format!("the run did not finish: see {}", log.display()));
    }
    Ok(ImagesShape {
        label: opts.host.label.clone(),
        host: opts.host_arg.into(),
        started_at,
        finished_at: now()?,
        places,
        rows,
        failures,
    })
}

pub fn markdown_images(r: &ImagesReport) -> String {
    let mut s = String::new();
    let runs: Vec<String> = r
        .shapes
        .iter()
        .map(|x| format!("{} {}-{}", x.label, x.started_at, x.finished_at))
        .collect();
    let n = r.replicas;
    let _ = writeln!(
        s,
        "Measured with `{} --update BENCHMARKS.md` ({}). The image: {}. Times in seconds: \
         `./install images import` until it returns; the Deployment's first replica until \
         Ready; the scale 1 -> {n} until all {n} are Ready (`ctr`: `ctr images import --local \
         --snapshotter S`, one `ctr run -d`, then {} more at once). k3s's add-ons and CoreDNS \
         are off, so no other pod makes snapshots. Disk: `du -sm` of containerd's snapshotter \
         dir, MiB (before the import: the bundle's images, unpacked at install).\n",
        r.command,
        runs.join("; "),
        r.image,
        n.saturating_sub(1),
    );
    let _ = writeln!(
        s,
        "| shape | data dir on | via | snapshotter | import | 1st Ready | all {n} Ready | disk: before import | imported | 1 running | {n} running |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for shape in &r.shapes {
        for row in &shape.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | **{}** | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
                shape.label,
                row.place,
                row.via,
                row.snapshotter,
                row.import_s,
                row.first_s,
                row.all_s,
                row.disk_before_mib,
                row.disk_import_mib,
                row.disk_first_mib,
                row.disk_all_mib
            );
        }
    }
    let _ = writeln!(
        s,
        "\n| shape | data dir on | filesystem there | an overlay mount there | ./install chose | containerd's overlayfs snapshotter |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for shape in &r.shapes {
        for p in &shape.places {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                shape.label,
                p.place,
                p.filesystem.replace('|', "/"),
                p.overlay_mount.replace('|', "/"),
                p.installer_chose,
                p.overlayfs_plugin.replace('|', "/")
            );
        }
    }
    let failures: Vec<String> = r
        .shapes
        .iter()
        .flat_map(|x| {
            x.failures
                .iter()
                .map(move |f| format!("- {}: {f}", x.label))
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\nNot measured:\n{}", failures.join("\n"));
    }
    s
}

pub fn markdown(r: &StackReport) -> String {
    let mut s = String::new();
    let pod_status = match r.pod_status.is_empty() {
        true => String::new(),
        false => format!(" A pod's /proc/self/status: `{}`.", r.pod_status),
    };
    let _ = writeln!(
        s,
        "Measured {} in {}, {} round(s), the runners interleaved in each.{pod_status} \
         Regenerate: `cargo xtask bench {} --host {} --update BENCHMARKS.md`.\n",
        r.measured_at, r.label, r.rounds, r.command, r.host
    );
    let _ = writeln!(
        s,
        "| figure | subject | baseline (same run) | subject/baseline | contrast |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for row in &r.rows {
        let contrast = row.contrast.as_ref().map_or("".to_string(), |(name, v)| {
            format!("{name}: {v:.2} {} ({:.2}x)", row.unit, v / row.baseline)
        });
        let _ = writeln!(
            s,
            "| {} | {}: {:.2} {} | {}: {:.2} {} | **{:.2}x** | {contrast} |",
            row.figure,
            row.subject_name,
            row.subject,
            row.unit,
            row.baseline_name,
            row.baseline,
            row.unit,
            row.subject / row.baseline,
        );
    }
    if let Some(b) = &r.breakdown {
        let _ = writeln!(
            s,
            "\nWhere the memory is (MiB unless a count; mean of the rounds; smaps and pprof read \
             after the idle wait):\n"
        );
        let _ = writeln!(s, "| figure | {} |", b.columns.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(b.columns.len()));
        for (figure, values) in &b.rows {
            let cells: Vec<String> = values
                .iter()
                .map(|v| v.map_or("-".to_string(), |v| format!("{v:.1}")))
                .collect();
            let _ = writeln!(s, "| {figure} | {} |", cells.join(" | "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_lines_are_collected_per_name() {
        let map = values(
            "noise\nBENCH pod-open 120.5\nBENCH pod-open 118.0\nBENCH pod-status TracerPid: 0;\n",
        );
        assert_eq!(numbers(&map, "pod-open").unwrap(), vec![120.5, 118.0]);
        assert_eq!(map["pod-status"], vec!["TracerPid: 0;"]);
        assert!(numbers(&map, "container-open").is_err());
        let bad = values("BENCH pod-open \n");
        assert!(numbers(&bad, "pod-open").is_err());
    }

    #[test]
    fn the_memory_breakdown_is_a_column_per_set() {
        let report = StackReport {
            label: "gvisor-current".into(),
            host: "current".into(),
            command: "--memory=--enable-pprof".into(),
            measured_at: "2026-12-06T20:24Z".into(),
            rounds: 2,
            pod_status: String::new(),
            rows: Vec::new(),
            breakdown: Some(Breakdown {
                columns: vec!["default".into(), "--enable-pprof".into()],
                rows: vec![
                    ("k3s".into(), vec![Some(506.25), Some(491.6)]),
                    ("k3s Go: HeapInuse (pprof)".into(), vec![None, Some(185.5)]),
                ],
            }),
        };
        let md = markdown(&report);
        assert!(md.contains("| figure | default | --enable-pprof |"), "{md}");
        assert!(md.contains("|---|---|---|"), "{md}");
        assert!(md.contains("| k3s | 506.2 | 491.6 |"), "{md}");
        assert!(
            md.contains("| k3s Go: HeapInuse (pprof) | - | 185.5 |"),
            "{md}"
        );
    }

    #[test]
    fn image_lines_become_places_and_rows() {
        let map = values(
            "BENCH img-place-root 9p at /run\n\
             BENCH img-probe-root refused: mount: wrong fs type\n\
             BENCH img-chose-root native\n\
             BENCH img-row root pods native 12.5 4.1 30.2 200 300 600 3300\n\
             BENCH img-overlayfs-plugin-root error\n\
             BENCH img-probe-tmpfs ok\n\
             BENCH img-fail tmpfs ctr overlayfs run: boom\n",
        );
        let (places, rows, failures) = image_figures(&map).unwrap();
        assert_eq!(places.len(), 2);
        assert_eq!(places[0].overlay_mount, "refused: mount: wrong fs type");
        assert_eq!(places[1].installer_chose, "not measured");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].all_s, rows[0].disk_all_mib), (30.2, 3300.0));
        assert_eq!(failures, ["tmpfs ctr overlayfs run: boom"]);
        let short = values("BENCH img-row root pods native 1 2 3 4 5 6\n");
        assert!(image_figures(&short).is_err());
    }
}
