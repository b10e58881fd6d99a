//! The redirect scenarios run both on plain Linux (redirect_linux.rs) and inside gVisor
//! (redirect_runsc.rs), each written once and given the [`Host`] to run the launcher in.

use super::*;

/// The C tracee's threads, its fork child and its exec child read DIR's files and write into
/// DIR. Returns the tracee's output for the checks that only redirect_linux.rs makes.
pub fn c_tracee_threads_fork_and_exec_child_read_and_write_dir(host: Host) -> Output {
    let tmp = TempDir::new(&format!("c-{}", host.name()));
    let dir = make_procsys_dir(tmp.path());
    let tracee = build_c("procsys_reader");
    let out = host.run(
        &dir,
        &format!("{} main", sh_quote(tracee.to_str().unwrap())),
    );
    check_reader_output(&out, &dir, &["thread", "fork-child", "exec-child"]);
    out
}

/// The Go tracee's threads and its exec child read DIR's files and write into DIR. Returns the
/// tracee's output for the checks that only redirect_linux.rs makes.
pub fn go_tracee_threads_and_exec_child_read_and_write_dir(host: Host) -> Output {
    let tmp = TempDir::new(&format!("go-{}", host.name()));
    let dir = make_procsys_dir(tmp.path());
    let tracee = build_go("procsys_reader");
    let out = host.run(&dir, &sh_quote(tracee.to_str().unwrap()));
    check_reader_output(&out, &dir, &["thread", "exec-child"]);
    out
}

/// Writing a longer path than the tracee's own must leave the memory around that string, and
/// the stack below the stack pointer, as they were.
pub fn longer_redirected_path_leaves_tracee_memory_intact(host: Host) {
    let tmp = TempDir::new(&format!("memory-{}", host.name()));
    // A deep DIR makes the new path several times longer than "/proc/sys/kernel/pid_max".
    let deep = tmp
        .path()
        .join("a-long-directory-name-to-make-the-path-longer/and-longer/and-longer");
    let dir = make_procsys_dir(&deep);
    let tracee = build_c("memory_neighbours");
    let out = host.run(&dir, &sh_quote(tracee.to_str().unwrap()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("content launcher-test-pid_max"),
        "not redirected\n{}",
        describe(&out)
    );
    assert!(stdout.contains("intact yes"), "{}", describe(&out));
}

/// The launcher remembers that a thread's cwd is outside /proc and its root is the launcher's;
/// fchdir, another thread's fchdir and chroot must make it forget.
pub fn cwd_and_root_changes_without_a_path_are_noticed(host: Host) {
    let tmp = TempDir::new(&format!("cwd-{}", host.name()));
    let dir = make_procsys_dir(tmp.path());
    // The directory the tracee chroots into holds both a file at /proc/sys/kernel/pid_max
    // ("jail-file") and one at DIR's path ("wrong-root"), so a redirect made after chroot (a
    // stale "same root as the launcher") shows as "wrong-root".
    let jail = tmp.path().join("jail");
    let real = jail.join("proc/sys/kernel");
    let stale = jail.join(dir.strip_prefix("/").unwrap()).join("kernel");
    for (d, content) in [(real, "jail-file\n"), (stale, "wrong-root\n")] {
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("pid_max"), content).unwrap();
    }
    let tracee = build_c("cwd_changes");
    let out = host.run(
        &dir,
        &format!(
            "{} {}",
            sh_quote(tracee.to_str().unwrap()),
            sh_quote(jail.to_str().unwrap())
        ),
    );
    assert_stdout_lines(
        &out,
        &[
            "root-cwd ERR:ENOENT",
            "root-cwd-again ERR:ENOENT",
            "after-fchdir launcher-test-pid_max",
            "back-at-root ERR:ENOENT",
            "after-thread-fchdir launcher-test-pid_max",
            "before-chroot launcher-test-pid_max",
            "after-chroot jail-file",
        ],
    );
}
