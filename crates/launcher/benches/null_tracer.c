/* The floor for workloads (b) and (c): the launcher's design (the same seccomp filter, every
 * traced syscall a PTRACE_EVENT_SECCOMP stop) with a tracer that does nothing at a stop but
 * resume the tracee: one wait4 and one PTRACE_CONT, no registers, no path read, no redirect.
 * No SECCOMP_RET_TRACE tracer can be cheaper per stop, so its ratio to native is the best any
 * launcher of this design can reach on this kernel.
 *
 * Follows a single-threaded tracee only (the benchmark's loop program); exits with its status.
 *
 * usage: null_tracer PROGRAM ARGS... */
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include "trace_filter.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PROGRAM ARGS...\n", argv[0]);
        return 2;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        /* Stop until the tracer has seized us, then filter and exec. */
        raise(SIGSTOP);
        if (install_trace_filter()) {
            perror("installing the seccomp filter");
            _exit(1);
        }
        execv(argv[1], argv + 1);
        perror(argv[1]);
        _exit(127);
    }
    int status;
    if (waitpid(child, &status, WSTOPPED) < 0 ||
        ptrace(PTRACE_SEIZE, child, 0, PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL) ||
        kill(child, SIGCONT)) {
        perror("seizing the child");
        return 1;
    }
    for (;;) {
        if (waitpid(child, &status, __WALL) < 0) {
            perror("waitpid");
            return 1;
        }
        if (WIFEXITED(status))
            return WEXITSTATUS(status);
        if (WIFSIGNALED(status))
            return 128 + WTERMSIG(status);
        int sig = 0;
        if (WIFSTOPPED(status) && status >> 16 == 0 && WSTOPSIG(status) != SIGSTOP &&
            WSTOPSIG(status) != SIGCONT)
            sig = WSTOPSIG(status); /* a signal for the tracee: deliver it */
        ptrace(PTRACE_CONT, child, 0, sig);
    }
}
