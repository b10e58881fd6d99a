/* For the signal tests. `signal_waiter handle` exits 42 on SIGTERM; `signal_waiter default`
 * keeps SIGTERM's default action (death). Both print "ready <pid>" once waiting. A SIGCONT
 * after a stop prints "continued". */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void on_term(int sig) {
    (void)sig;
    write(1, "got SIGTERM\n", 12);
    _exit(42);
}

static void on_cont(int sig) {
    (void)sig;
    write(1, "continued\n", 10);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "handle")) signal(SIGTERM, on_term);
    signal(SIGCONT, on_cont);
    char line[64];
    int len = snprintf(line, sizeof line, "ready %d\n", (int)getpid());
    write(1, line, len);
    for (;;) pause();
}
