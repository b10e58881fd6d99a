/* The floor for workload (a): runs a program under a seccomp filter like the launcher's (the
 * same traced syscalls return SECCOMP_RET_TRACE, the rest are allowed) but with no tracer at
 * all. Whatever a non-path syscall costs here is the price of having any seccomp filter, not of
 * the launcher. Only for programs that make none of the traced syscalls (they would get ENOSYS
 * without a tracer): a static binary running the getppid loop.
 *
 * usage: filter_only PROGRAM ARGS... */
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TRACE(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE)

int main(int argc, char **argv) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        TRACE(SYS_open), TRACE(SYS_stat), TRACE(SYS_lstat), TRACE(SYS_access), TRACE(SYS_readlink),
        TRACE(SYS_truncate), TRACE(SYS_chdir), TRACE(SYS_openat), TRACE(SYS_newfstatat),
        TRACE(SYS_readlinkat), TRACE(SYS_faccessat), TRACE(SYS_statx), TRACE(SYS_openat2),
        TRACE(SYS_faccessat2),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (argc < 2) {
        fprintf(stderr, "usage: %s PROGRAM ARGS...\n", argv[0]);
        return 2;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("installing the seccomp filter");
        return 1;
    }
    execv(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
