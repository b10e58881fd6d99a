/* Does this kernel offer SECCOMP_RET_USER_NOTIF, the only other way for a supervisor to see a
 * syscall's path (and the way around ptrace stops)? Installs an allow-all filter with
 * SECCOMP_FILTER_FLAG_NEW_LISTENER and prints what seccomp(2) answered. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    struct sock_filter f[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {1, f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
        perror("PR_SET_NO_NEW_PRIVS");
        return 1;
    }
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (fd < 0)
        printf("SECCOMP_FILTER_FLAG_NEW_LISTENER: refused (%s)\n", strerror(errno));
    else
        printf("SECCOMP_FILTER_FLAG_NEW_LISTENER: accepted (listener fd %ld)\n", fd);
    return 0;
}
