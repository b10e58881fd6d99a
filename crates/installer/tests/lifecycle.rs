//! install --no-start, a second install, doctor and uninstall: on this host, and inside gVisor
//! where the installer must mount cgroups and /dev/kmsg and serve missing /proc/sys files.
//! The gVisor binary comes from $K3S_GVISOR_RUNSC (default: `runsc` on PATH).

mod common;

use std::fs;
use std::path::Path;

use common::{in_gvisor, require_root, runsc, uninstall, FakeBundle};

#[test]
fn install_no_start_then_uninstall_on_this_host() {
    if !require_root() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let bundle = FakeBundle::assemble(temp.path(), "amd64", 0);
    let (prefix, data) = (temp.path().join("opt/prefix"), temp.path().join("data"));
    let install = || bundle.install_no_start(&prefix, &data);

    let (output, stdout, stderr) = install();
    assert!(
        output.status.success(),
        "install failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("preflight passed"), "{stdout}");

    // Copies, not symlinks.
    let installer = prefix.join("bin/installer");
    assert!(fs::symlink_metadata(&installer)
        .unwrap()
        .file_type()
        .is_file());
    let conflist = prefix.join("etc/cni/net.d/10-gvisor.conflist");
    assert!(fs::symlink_metadata(&conflist)
        .unwrap()
        .file_type()
        .is_file());
    let conf: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&conflist).unwrap()).unwrap();
    assert_eq!(
        conf["plugins"][0]["dataDir"],
        data.join("cni/networks").display().to_string(),
        "the CNI IPAM store must live in the data dir"
    );
    let config = fs::read_to_string(prefix.join("etc/containerd/config.toml")).unwrap();
    assert!(
        !config.contains("{{"),
        "unrendered placeholder in:\n{config}"
    );
    assert!(config.contains(&format!(
        "BinaryName = \"{}\"",
        prefix.join("bin/runc").display()
    )));
    assert!(config.contains(&format!(
        "conf_dir = \"{}\"",
        prefix.join("etc/cni/net.d").display()
    )));
    // Only the /proc/sys files this host lacks are in the launcher's tree.
    for relative in [
        "kernel/pid_max",
        "kernel/panic",
        "net/bridge/bridge-nf-call-iptables",
    ] {
        let host_has = Path::new("/proc/sys").join(relative).exists();
        let tree_has = prefix.join("procsys").join(relative).exists();
        assert_eq!(
            tree_has, !host_has,
            "procsys/{relative}: host has it = {host_has}"
        );
    }
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(data.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["prefix"], prefix.display().to_string());

    let (output, stdout, stderr) = install();
    assert!(
        output.status.success(),
        "second install failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("is already installed"), "{stdout}");

    let (output, stdout, stderr) = uninstall(&prefix, &data);
    assert!(
        output.status.success(),
        "uninstall failed:\n{stdout}\n{stderr}"
    );
    assert!(
        !prefix.exists() && !data.exists(),
        "uninstall left prefix or data dir behind"
    );
    assert!(
        !temp.path().join("opt").exists(),
        "uninstall left the prefix's parent it created"
    );
}

#[test]
fn install_no_start_then_uninstall_inside_gvisor() {
    if !require_root() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let bundle = FakeBundle::assemble(temp.path(), "amd64", 0);
    let (prefix, data) = (temp.path().join("prefix"), temp.path().join("data"));
    let script = format!(
        r#"
set -u
I={install}; P={prefix}; D={data}
echo "== before"; grep -c ' - cgroup ' /proc/self/mountinfo; test -e /dev/kmsg && echo kmsg-present || echo kmsg-absent
echo "cgroup-dir-before=$(test -e /sys/fs/cgroup && echo present || echo absent)"
PB=$(test -e /proc/sys/kernel/pid_max && echo present || echo absent)
echo "== install"; $I --prefix $P --data-dir $D --no-start; echo "install-rc=$?"
echo "== after install"
grep ' - cgroup ' /proc/self/mountinfo | sed 's/.* - //' | sort
test -e /dev/kmsg && echo kmsg-present || echo kmsg-absent
cat $P/procsys/kernel/pid_max
echo "overcommit-served=$(cat $P/procsys/vm/overcommit_memory)"
echo "laid-over: pid_max=$(cat /proc/sys/kernel/pid_max) overcommit=$(cat /proc/sys/vm/overcommit_memory) hostname=$(cat /proc/sys/kernel/hostname)"
echo "overlaid=$([ "$(grep -c ' /proc/sys/' /proc/self/mountinfo)" -gt 0 ] && echo yes || echo no)"
echo "== second install"; $I --prefix $P --data-dir $D --no-start; echo "second-rc=$?"
echo "== doctor"; $P/bin/installer doctor --data-dir $D; echo "doctor-rc=$?"
echo "mnt-ns=$(test -e /proc/self/ns/mnt && echo present || echo absent)"
echo "proc-root-inode=$(busybox stat -c %i /proc)"
echo "== uninstall"; $P/bin/installer uninstall --data-dir $D; echo "uninstall-rc=$?"
echo "== after uninstall"
echo "cgroup-mounts=$(grep -c -e ' - cgroup ' -e ' /sys/fs/cgroup ' /proc/self/mountinfo)"
PA=$(test -e /proc/sys/kernel/pid_max && echo present || echo absent)
echo "procsys-mounts-after=$(grep -c ' /proc/sys/' /proc/self/mountinfo) pid_max-as-before=$([ "$PA" = "$PB" ] && echo yes || echo "no: $PB, then $PA")"
test -e /dev/kmsg && echo kmsg-present || echo kmsg-absent
echo "cgroup-dir-after=$(test -e /sys/fs/cgroup && echo present || echo absent)"
test -e $P && echo prefix-present || echo prefix-absent
"#,
        install = bundle.install_script().display(),
        prefix = prefix.display(),
        data = data.display(),
    );
    let (ok, output) = in_gvisor(&runsc(), &script);
    println!("{output}");
    assert!(ok, "the script inside gVisor failed:\n{output}");
    let expect = [
        "kmsg-absent",
        "workaround: /dev/kmsg is missing",
        "workaround: no cgroup hierarchy is mounted",
        "workaround: root filesystem 9p cannot host overlayfs layers",
        "enable_unprivileged_ports/icmp are turned off",
        "kernel/pid_max",
        // Present in every gVisor, reads 0, refuses writes (EIO): served by the launcher too.
        "workaround: /proc/sys refuses writes to",
        "vm/overcommit_memory): served from PREFIX/procsys too",
        "overcommit-served=1",
        "install-rc=0",
        " rw,cpu\n",
        " rw,memory\n",
        " rw,pids\n",
        "kmsg-present",
        "65536",
        // Laid over /proc/sys: the tree's values, the kernel's own host name, bind mounts.
        "laid-over: pid_max=65536 overcommit=1 hostname=",
        "overlaid=yes",
        "is already installed",
        "second-rc=0",
        "/dev/kmsg missing                            absent",
        "cgroup v1 devices controller missing         present, NOT handled",
        "uninstall-rc=0",
        "cgroup-mounts=0",
        // The kernel's own /proc/sys again.
        "procsys-mounts-after=0 pid_max-as-before=yes",
        "prefix-absent",
    ];
    for needle in expect {
        assert!(
            output.contains(needle),
            "expected {needle:?} in the output above"
        );
    }
    for (finding, handled_by) in [
        (
            "/proc/sys files that refuse writes",
            "the procsys tree (vm/overcommit_memory), laid over /proc/sys",
        ),
        // `runsc --network=none`: loopback only, so install will choose the node IP.
        ("no default route (k3s's node IP)", "--node-ip"),
    ] {
        let expected = format!("{finding:<44} present, handled by {handled_by}");
        assert!(output.contains(&expected), "expected {expected:?} above");
    }
    // doctor's two runc blockers no patch can handle agree with what the shell sees.
    let seen = |key: &str| {
        let prefix = format!("{key}=");
        let line = output.lines().find_map(|l| l.strip_prefix(&prefix));
        line.unwrap_or_else(|| panic!("no {key}= line above"))
            .to_string()
    };
    let verdict = |present: bool| {
        if present {
            "present, NOT handled"
        } else {
            "absent"
        }
    };
    for (finding, present) in [
        (
            "no mount namespaces (/proc/self/ns/mnt)",
            seen("mnt-ns") == "absent",
        ),
        ("procfs root is not inode 1", seen("proc-root-inode") != "1"),
    ] {
        let expected = format!("{finding:<44} {}", verdict(present));
        assert!(output.contains(&expected), "expected {expected:?} above");
    }
    // After uninstall /dev/kmsg is gone again: the last kmsg line is "absent".
    let after = output.split("== after uninstall").nth(1).unwrap();
    assert!(
        after.contains("kmsg-absent"),
        "/dev/kmsg left behind:\n{after}"
    );
    // /sys/fs/cgroup is as before (an empty dir in some gVisor versions, absent in others).
    let line = |key: &str| {
        output
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| l[key.len()..].to_string())
    };
    assert_eq!(
        line("cgroup-dir-before="),
        line("cgroup-dir-after="),
        "/sys/fs/cgroup changed"
    );
    assert!(line("cgroup-dir-before=").is_some());
    assert!(!prefix.exists() && !data.exists());
}
