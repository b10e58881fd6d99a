//! Redirection on plain Linux. /proc/sys/kernel is covered with an empty tmpfs in a private
//! mount namespace, so kernel/* files are missing as they are inside gVisor.

mod common;
use common::*;

#[test]
fn without_the_launcher_the_files_are_missing() {
    // The control for the tests below: the same tracee, not traced, sees no kernel/* files.
    let tracee = build_c("procsys_reader");
    let out = run_with_empty_proc_sys_kernel(&format!(
        "exec {} main",
        sh_quote(tracee.to_str().unwrap())
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reads: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("thread "))
        .collect();
    assert_eq!(reads.len(), 12, "{}", describe(&out));
    assert!(
        reads.iter().all(|l| l.ends_with(" ERR:ENOENT")),
        "{}",
        describe(&out)
    );
}

#[test]
fn c_tracee_threads_fork_and_exec_child_read_and_write_dir() {
    let out = scenarios::c_tracee_threads_fork_and_exec_child_read_and_write_dir(Host::Linux);
    // Four threads, each with its own way of naming the file.
    let stdout = String::from_utf8_lossy(&out.stdout);
    for how in ["open", "openat-dotdot", "openat-dirfd", "stat-then-open"] {
        assert!(
            stdout.contains(&format!(
                "thread {how} kernel/pid_max launcher-test-pid_max"
            )),
            "{how}\n{}",
            describe(&out)
        );
    }
}

#[test]
fn c_tracee_with_ptrace_peek_poke_instead_of_process_vm() {
    // The fallback for sandboxes without process_vm_readv/writev.
    let tmp = TempDir::new("c-peekpoke");
    let dir = make_procsys_dir(tmp.path());
    let tracee = build_c("procsys_reader");
    let out = run_with_empty_proc_sys_kernel(&format!(
        "LAUNCHER_PEEK_POKE=1 {}",
        launcher_script(
            &dir,
            &format!("{} main", sh_quote(tracee.to_str().unwrap()))
        )
    ));
    check_reader_output(&out, &dir, &["thread", "fork-child", "exec-child"]);
}

#[test]
fn go_tracee_threads_and_exec_child_read_and_write_dir() {
    let out = scenarios::go_tracee_threads_and_exec_child_read_and_write_dir(Host::Linux);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let threads: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("distinct-threads "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        threads >= 4,
        "the Go tracee must read from several OS threads, saw {threads}\n{}",
        describe(&out)
    );
}

#[test]
fn longer_redirected_path_leaves_tracee_memory_intact() {
    scenarios::longer_redirected_path_leaves_tracee_memory_intact(Host::Linux);
}

#[test]
fn cwd_and_root_changes_without_a_path_are_noticed() {
    scenarios::cwd_and_root_changes_without_a_path_are_noticed(Host::Linux);
}

#[test]
fn paths_outside_proc_sys_are_never_touched() {
    let tmp = TempDir::new("outside");
    let dir = make_procsys_dir(tmp.path());
    // Traps inside DIR: symlinks that would lead out of it.
    std::os::unix::fs::symlink("/etc/hostname", dir.join("kernel/evil")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("kernel/evil-dir")).unwrap();
    // DIR has net/ipv4/ for one file only: the real net/ipv4 must stay reachable.
    std::fs::create_dir_all(dir.join("net/ipv4")).unwrap();
    std::fs::write(dir.join("net/ipv4/ping_group_range"), "1\t0\n").unwrap();
    // A real file whose path *contains* proc/sys/kernel/pid_max but is not /proc/sys.
    let lookalike = tmp.path().join("real/proc/sys/kernel");
    std::fs::create_dir_all(&lookalike).unwrap();
    std::fs::write(lookalike.join("pid_max"), "real-file\n").unwrap();
    let log = tmp.path().join("launcher.log");

    let look = lookalike.to_str().unwrap();
    let script = format!(
        "exec {launcher} --procsys {dir} --log {log} -- sh -c {inner}",
        launcher = sh_quote(&launcher()),
        dir = sh_quote(dir.to_str().unwrap()),
        log = sh_quote(log.to_str().unwrap()),
        inner = sh_quote(&format!(
            "cat {abs}/pid_max; cd {abs} && cat pid_max; cat /proc/sys/../..{abs}/pid_max; \
             cat /proc/self/root/proc/sys/kernel/pid_max 2>/dev/null || echo self-root-missing; \
             cat /proc/sys/kernel/evil 2>/dev/null || echo evil-missing; \
             cat /proc/sys/kernel/evil-dir/hostname 2>/dev/null || echo evil-dir-missing; \
             cat /proc/sys/kernel/../kernel/../../sys/kernel/pid_max; \
             cd /proc/sys/net/ipv4 && cat ip_forward >/dev/null && echo real-dir-kept",
            abs = sh_quote(look)
        )),
    );
    let out = run_with_empty_proc_sys_kernel(&script);
    assert_stdout_lines(
        &out,
        &[
            "real-file",
            "real-file",
            "real-file",
            "self-root-missing",
            "evil-missing",
            "evil-dir-missing",
            "launcher-test-pid_max",
            "real-dir-kept",
        ],
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.contains("/real/"),
        "a path outside /proc/sys was rewritten:\n{log}"
    );
    assert!(
        log.contains("Symlink"),
        "the symlink traps should be logged as refused:\n{log}"
    );
}

#[test]
fn linux_offers_seccomp_user_notification() {
    // The control for runsc_refuses_seccomp_user_notification: on Linux (5.0 and later) the
    // same probe gets the action and a listener fd.
    let probe = build_c("seccomp_notify_probe");
    let out = std::process::Command::new(&probe).output().unwrap();
    assert_stdout_lines(
        &out,
        &["get_action_avail_user_notif ok", "filter_new_listener ok"],
    );
}
