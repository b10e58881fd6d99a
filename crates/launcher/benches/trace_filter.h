/* The seccomp filter of the benchmark's floors (filter_only.c, null_tracer.c): the launcher's
 * traced syscalls return SECCOMP_RET_TRACE, everything else is allowed. */
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define TRACE(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE)

/* PR_SET_NO_NEW_PRIVS, then the filter; 0 or -1 with errno set. */
static int install_trace_filter(void) {
    static struct sock_filter f[] = {
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
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}
