//! The CRI-level proof: from a bundle holding the pipeline's patched runc/containerd, our
//! launcher and CNI plugin, a pause image and a busybox image, `./install` brings up containerd;
//! `crictl runp` + `create` + `start` run busybox, `crictl logs` shows its output; `stop` and
//! `uninstall` leave no process and no mount. Once on this host (in a private network
//! namespace) and once inside gVisor ($K3S_GVISOR_RUNSC, default `runsc`).
//!
//! Inputs, each failing with a message naming what is missing:
//! - patched runtime binaries: $K3S_GVISOR_RUNTIME_BIN or `cargo xtask build`;
//! - launcher and gvisor-cni next to the installer test binary (`cargo build --workspace`);
//! - crictl: $K3S_GVISOR_CRICTL or `cargo xtask tool crictl`;
//! - the current gVisor: `cargo xtask tool runsc`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::sync::{Mutex, MutexGuard};

use common::{
    add_launcher_and_cni, add_pause_image, crictl, current_runsc, image_record, in_gvisor, oci,
    require_root, run, runsc, uninstall, FakeBundle,
};

/// Held by every test that starts containerd. Each sandbox's root is this host's root over 9p,
/// and containerd always creates /run/containerd there (its shim socket directory is
/// hard-coded) while uninstall removes it again once empty: two at once race, and a
/// sandbox's cached view of the directory then makes containerd's mkdir fail with
/// "mkdir /run/containerd: file exists" (seen in CI).
fn one_containerd_at_a_time() -> MutexGuard<'static, ()> {
    static HOST_RUN_CONTAINERD: Mutex<()> = Mutex::new(());
    HOST_RUN_CONTAINERD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const BUSYBOX_REF: &str = "docker.io/library/busybox:k3s-gvisor-test";

fn assemble(parent: &Path) -> FakeBundle {
    FakeBundle::assemble_with_runtime(parent, |dir| {
        add_launcher_and_cni(dir);
        let pause = add_pause_image(dir);
        // busybox is the workload.
        oci::write_busybox_image(
            &dir.join("images/busybox.oci.tar"),
            BUSYBOX_REF,
            &["/bin/sh"],
        );
        vec![
            pause,
            image_record(dir, "busybox", BUSYBOX_REF, "images/busybox.oci.tar", false),
        ]
    })
}

/// The whole scenario as one sh script, so it runs unchanged on the host and inside gVisor.
fn scenario(bundle: &FakeBundle, work: &Path, crictl: &Path) -> String {
    scenario_with(
        bundle,
        work,
        crictl,
        r#"$I --prefix $P --data-dir $D; echo "install-rc=$?""#,
    )
}

/// `bring_up` is the sh line that gets containerd running and echoes `install-rc=`.
fn scenario_with(bundle: &FakeBundle, work: &Path, crictl: &Path, bring_up: &str) -> String {
    let (prefix, data) = (work.join("prefix"), work.join("data"));
    fs::write(
        work.join("pod.json"),
        serde_json::json!({
            "metadata": {"name": "busybox-pod", "namespace": "default", "uid": "test-uid-1", "attempt": 0},
            "log_directory": work.join("podlogs"),
            "linux": {},
        })
        .to_string(),
    )
    .unwrap();
    fs::write(
        work.join("container.json"),
        serde_json::json!({
            "metadata": {"name": "hello"},
            "image": {"image": BUSYBOX_REF},
            "command": ["/bin/sh", "-c", "echo hello-from-busybox-in-k3s-gvisor; exec sleep 3600"],
            "log_path": "hello.log",
            "linux": {},
        })
        .to_string(),
    )
    .unwrap();
    format!(
        r#"
set -u
I={install}; P={prefix}; D={data}; W={work}
export CRICTL_CONFIG=/dev/null
C="{crictl} --runtime-endpoint unix://$D/run/containerd.sock --image-endpoint unix://$D/run/containerd.sock --timeout 60s"
ours() {{ for p in /proc/[0-9]*; do e=$(readlink $p/exe 2>/dev/null) || continue; case "$e" in $P/*|$D/*) echo "${{p#/proc/}} $e";; esac; done; }}
mounts() {{ grep -e " $P" -e " $D" -e ' /sys/fs/cgroup' -e ' /dev/kmsg ' -e ' /run/netns' -e ' /var/run/netns' /proc/self/mountinfo | cut -d' ' -f5- | sort | tr '\n' ';'; }}
BEFORE=$(mounts)
echo "== doctor before install $(date +%T)"; {bin}/installer doctor --bundle {bundle}; echo "doctor-rc=$?"
echo "== install $(date +%T)"; {bring_up}
workload() {{
  echo "== crictl"
  $C images || return 1
  POD=$($C runp $W/pod.json); echo "runp-rc=$? pod=$POD"; [ -n "$POD" ] || return 1
  CID=$($C create $POD $W/container.json $W/pod.json); echo "create-rc=$? container=$CID"; [ -n "$CID" ] || return 1
  $C start $CID; echo "start-rc=$?"
  sleep 3
  echo "state=$($C inspect -o go-template --template '{{{{.status.state}}}}' $CID)"
  echo "== logs"; $C logs $CID; echo "logs-rc=$?"
}}
workload || {{ echo "== workload failed; containerd log:"; tail -n 40 $D/logs/containerd.log; }}
echo "== status $(date +%T)"; $P/bin/installer status --data-dir $D; echo "status-rc=$?"
echo "== second install $(date +%T)"; $I --prefix $P --data-dir $D; echo "second-install-rc=$?"
echo "== stop $(date +%T)"; $P/bin/installer stop --data-dir $D; echo "stop-rc=$?"
echo "leftover-processes=[$(ours | tr '\n' ';')]"
$P/bin/installer status --data-dir $D; echo "status-after-stop-rc=$?"
$P/bin/installer logs --data-dir $D containerd -n 3; echo "logs-cmd-rc=$?"
echo "== uninstall $(date +%T)"; $P/bin/installer uninstall --data-dir $D; echo "uninstall-rc=$?"
AFTER=$(mounts)
if [ "$BEFORE" = "$AFTER" ]; then echo "mounts-as-before"; else echo "mounts-changed: before=[$BEFORE] after=[$AFTER]"; fi
test -e $P && echo prefix-present || echo prefix-absent
test -e $D && echo data-present || echo data-absent
if [ -n "${{SHOW_LOGS:-}}" ]; then cat $D/logs/*.log; fi
"#,
        install = bundle.install_script().display(),
        bin = bundle.dir.join("bin").display(),
        bundle = bundle.dir.display(),
        prefix = prefix.display(),
        data = data.display(),
        work = work.display(),
        crictl = crictl.display(),
        bring_up = bring_up,
    )
}

/// A scratch dir, removed at the end unless K3S_GVISOR_KEEP_WORK is set (for debugging).
struct Work {
    path: PathBuf,
    _guard: Option<tempfile::TempDir>,
}

fn work_dir() -> Work {
    let temp = tempfile::tempdir().unwrap();
    if std::env::var_os("K3S_GVISOR_KEEP_WORK").is_some() {
        let path = temp.keep();
        println!("work dir kept: {}", path.display());
        return Work { path, _guard: None };
    }
    Work {
        path: temp.path().to_path_buf(),
        _guard: Some(temp),
    }
}

/// What must hold whatever the sandbox lacks: the install cleans up after itself.
const CLEANUP: [&str; 9] = [
    "stop-rc=0",
    "containerd: stopped",
    "status-after-stop-rc=1",
    "logs-cmd-rc=0",
    "leftover-processes=[]",
    "uninstall-rc=0",
    "mounts-as-before",
    "prefix-absent",
    "data-absent",
];

/// What must hold where doctor reports every blocker handled.
const WORKLOAD: [&str; 10] = [
    "install-rc=0",
    "runp-rc=0",
    "create-rc=0",
    "start-rc=0",
    "state=CONTAINER_RUNNING",
    "hello-from-busybox-in-k3s-gvisor",
    "logs-rc=0",
    "containerd: running",
    "containerd already running",
    "second-install-rc=0",
];

fn missing(output: &str, expected: &[&str]) -> Vec<String> {
    expected
        .iter()
        .filter(|needle| !output.contains(*needle))
        .map(|needle| needle.to_string())
        .collect()
}

/// What install or start says of the busybox image on a new install.
const BUSYBOX_IMPORTED: &str = "image docker.io/library/busybox:k3s-gvisor-test imported";

/// Where doctor (run before install) names no unhandled blocker, busybox must run, and install
/// or start must have said `image_line` of its image. Where it names some, busybox must NOT run
/// (else doctor is wrong), and the gaps are printed. Cleanup must be complete either way.
fn check(output: &str, gaps_allowed: bool, image_line: &str) {
    let gaps: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("NOT handled"))
        .collect();
    assert!(
        gaps_allowed || gaps.is_empty(),
        "doctor names unhandled blockers where every blocker must be handled:\n{output}"
    );
    let cleanup = missing(output, &CLEANUP);
    assert!(
        cleanup.is_empty(),
        "cleanup incomplete, missing {cleanup:?} in:\n{output}"
    );
    let workload = missing(output, &[&WORKLOAD[..], &[image_line]].concat());
    if gaps.is_empty() {
        assert!(workload.is_empty(), "missing {workload:?} in:\n{output}");
    } else {
        assert!(
            !workload.is_empty(),
            "doctor reported unhandled blockers but busybox ran: doctor is wrong:\n{output}"
        );
        println!("KNOWN GAPS that stop busybox in this sandbox (named by doctor):");
        for gap in gaps {
            println!("  {gap}");
        }
    }
}

#[test]
fn crictl_runs_busybox_on_this_host() {
    run_scenario(None, false);
}

/// Every key of the config the installer renders means something to containerd: a key under
/// the wrong table is dropped with only a warning in its log (the snapshotters this config
/// disables were once not disabled that way), so `containerd config dump` must not warn, and
/// must show the disabled plugins.
#[test]
fn containerd_reads_every_key_of_the_rendered_config() {
    if !require_root() {
        return;
    }
    let work = work_dir();
    let bundle = assemble(&work.path);
    let (prefix, data) = (work.path.join("prefix"), work.path.join("data"));
    let (output, stdout, stderr) = bundle.install_no_start(&prefix, &data);
    assert!(
        output.status.success(),
        "install failed:\n{stdout}\n{stderr}"
    );

    let (output, dump, warnings) = run(Command::new(prefix.join("bin/containerd"))
        .arg("--config")
        .arg(prefix.join("etc/containerd/config.toml"))
        .args(["config", "dump"]));
    assert!(output.status.success(), "config dump failed:\n{warnings}");
    assert!(
        !warnings.contains("unknown key"),
        "containerd ignores part of the rendered config:\n{warnings}"
    );
    assert!(
        dump.lines().any(|l| l.starts_with("disabled_plugins")
            && l.contains("io.containerd.snapshotter.v1.btrfs")),
        "the sandbox-useless snapshotters are not disabled:\n{dump}"
    );

    let (output, stdout, stderr) = uninstall(&prefix, &data);
    assert!(
        output.status.success(),
        "uninstall failed:\n{stdout}\n{stderr}"
    );
}

/// Runs the CRI scenario on this host (`runsc` None) or inside that gVisor; `gaps_allowed`:
/// busybox may fail to run where doctor names the gaps that stop it.
fn run_scenario(runsc: Option<&Path>, gaps_allowed: bool) {
    if !require_root() {
        return;
    }
    let _one = one_containerd_at_a_time();
    let work = work_dir();
    let bundle = assemble(&work.path);
    let script = scenario(&bundle, &work.path, &crictl());
    fs::write(work.path.join("scenario.sh"), &script).unwrap();
    let output = match runsc {
        Some(runsc) => {
            let (_, output) = in_gvisor(runsc, &script);
            format!("runsc: {}\n{output}", runsc.display())
        }
        None => {
            // A private network namespace: the CNI plugin's bridge and pod netns never touch
            // the host's.
            let mut command = Command::new("unshare");
            command.args(["--net", "--", "/bin/sh", "-c", &script]);
            let (_, stdout, stderr) = run(&mut command);
            format!("{stdout}\n--- stderr ---\n{stderr}")
        }
    };
    println!("{output}");
    check(&output, gaps_allowed, BUSYBOX_IMPORTED);
}

/// The gVisor named by $K3S_GVISOR_RUNSC (default: `runsc` on PATH, Debian's 2022 release):
/// busybox runs unless doctor names the gaps that stop it; cleanup is complete either way.
#[test]
fn crictl_runs_busybox_inside_gvisor() {
    run_scenario(Some(&runsc()), true);
}

/// The current gVisor the pipeline builds from the Go module proxy (`cargo xtask tool runsc`),
/// the one users' sandboxes run: here every blocker must be handled and busybox must run.
#[test]
fn crictl_runs_busybox_inside_current_gvisor() {
    run_scenario(Some(&current_runsc()), false);
}

/// A sandbox restart wipes /dev, /sys and every process but keeps the 9p root: `start` in the
/// new sandbox must see the stale pid, remount what install mounted, and run pods again.
#[test]
fn start_after_a_sandbox_restart_inside_current_gvisor() {
    if !require_root() {
        return;
    }
    let _one = one_containerd_at_a_time();
    let runsc = current_runsc();
    let work = work_dir();
    let bundle = assemble(&work.path);
    let (prefix, data) = (work.path.join("prefix"), work.path.join("data"));
    let first = format!(
        "{} --prefix {} --data-dir {}; echo \"first-install-rc=$?\"",
        bundle.install_script().display(),
        prefix.display(),
        data.display()
    );
    let output = in_gvisor(&runsc, &first).1;
    assert!(output.contains("first-install-rc=0"), "{output}");

    let bring_up = r#"$P/bin/installer status --data-dir $D; echo "status-after-restart-rc=$?"
$P/bin/installer start --data-dir $D; echo "install-rc=$?""#;
    let script = scenario_with(&bundle, &work.path, &crictl(), bring_up);
    let output = in_gvisor(&runsc, &script).1;
    println!("{output}");
    for needle in [
        "containerd: stopped",
        "status-after-restart-rc=1",
        "making them again",
        "cgroup v1 mounted:",
        "containerd started",
    ] {
        assert!(output.contains(needle), "missing {needle:?} in:\n{output}");
    }
    // containerd's data survived on the 9p root, and with it the images the first install
    // imported: start leaves them.
    check(
        &output,
        false,
        "image docker.io/library/busybox:k3s-gvisor-test already imported (busybox), not \
         imported again",
    );
}
