/* Benchmark workloads for the launcher: one loop per mode, timed with CLOCK_MONOTONIC around
 * the loop only. Prints "<mode> <ns per iteration>".
 *
 *   syscall_loops getppid N          a non-path syscall (never stops under the launcher)
 *   syscall_loops open PATH N        openat(PATH)+close, for an existing file
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "getppid")) {
        long n = atol(argv[2]);
        double t0 = now_ns();
        for (long i = 0; i < n; i++) syscall(SYS_getppid);
        printf("getppid %.1f\n", (now_ns() - t0) / n);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "open")) {
        const char *path = argv[2];
        long n = atol(argv[3]);
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            int fd = openat(AT_FDCWD, path, O_RDONLY);
            if (fd < 0) {
                perror(path);
                return 1;
            }
            close(fd);
        }
        printf("open %.1f\n", (now_ns() - t0) / n);
        return 0;
    }
    fprintf(stderr, "usage: %s getppid N | open PATH N\n", argv[0]);
    return 2;
}
