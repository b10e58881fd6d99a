/* The floor for workload (a): runs a program under a seccomp filter like the launcher's (the
 * same traced syscalls return SECCOMP_RET_TRACE, the rest are allowed) but with no tracer at
 * all. Whatever a non-path syscall costs here is the price of having any seccomp filter, not of
 * the launcher. Only for programs that make none of the traced syscalls (they would get ENOSYS
 * without a tracer): a static binary running the getppid loop.
 *
 * usage: filter_only PROGRAM ARGS... */
#include <stdio.h>
#include <unistd.h>

#include "trace_filter.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PROGRAM ARGS...\n", argv[0]);
        return 2;
    }
    if (install_trace_filter()) {
        perror("installing the seccomp filter");
        return 1;
    }
    execv(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
