/* A real tracee for the launcher tests: reads /proc/sys files from several threads, each
 * thread with a different way of naming or probing them, then from a forked child and from an
 * exec'd child (started with posix_spawn, i.e. clone(CLONE_VM|CLONE_VFORK) in glibc), and
 * writes one file.
 *
 * Every result is one line written with a single write(2): "<who> <how> <file> <content>",
 * content being the first line of the file, or "ERR:<errno name>" when the call failed.
 *
 * usage: procsys_reader main   |   procsys_reader exec-child
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *files[] = {"kernel/pid_max", "kernel/panic_on_oops", "kernel/keys/root_maxkeys"};
#define NFILES (sizeof files / sizeof files[0])

static void report(const char *who, const char *how, const char *file, int fd) {
    char content[256] = "";
    char line[512];
    if (fd < 0) {
        snprintf(content, sizeof content, "ERR:%s", strerrorname_np(errno));
    } else {
        ssize_t n = read(fd, content, sizeof content - 1);
        if (n < 0) snprintf(content, sizeof content, "ERR:read:%s", strerrorname_np(errno));
        else content[n] = 0;
        content[strcspn(content, "\n")] = 0;
        close(fd);
    }
    int len = snprintf(line, sizeof line, "%s %s %s %s\n", who, how, file, content);
    write(1, line, len);
}

/* Opens `file` (relative to /proc/sys) the way `how` says. */
static int open_by(const char *how, const char *file) {
    char path[256];
    if (!strcmp(how, "open")) {
        snprintf(path, sizeof path, "/proc/sys/%s", file);
        return (int)syscall(SYS_open, path, O_RDONLY);
    }
    if (!strcmp(how, "openat-dotdot")) {
        snprintf(path, sizeof path, "//proc/sys/kernel/../%s", file);
        return openat(AT_FDCWD, path, O_RDONLY);
    }
    if (!strcmp(how, "openat-dirfd")) {
        /* All files are under kernel/: open that directory, then the file relative to it. */
        int dir = open("/proc/sys/kernel", O_RDONLY | O_DIRECTORY);
        if (dir < 0) return -1;
        int fd = openat(dir, file + strlen("kernel/"), O_RDONLY);
        int saved = errno;
        close(dir);
        errno = saved;
        return fd;
    }
    if (!strcmp(how, "stat-then-open")) {
        struct stat st;
        snprintf(path, sizeof path, "/proc/sys/%s", file);
        if (stat(path, &st) != 0 || access(path, R_OK) != 0) return -1;
        return open(path, O_RDONLY);
    }
    errno = EINVAL;
    return -1;
}

static const char *methods[] = {"open", "openat-dotdot", "openat-dirfd", "stat-then-open"};
#define NMETHODS (sizeof methods / sizeof methods[0])

static void *thread_main(void *arg) {
    const char *how = arg;
    for (size_t i = 0; i < NFILES; i++) report("thread", how, files[i], open_by(how, files[i]));
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "exec-child")) {
        for (size_t i = 0; i < NFILES; i++) report("exec-child", "openat-dotdot", files[i], open_by("openat-dotdot", files[i]));
        return 0;
    }
    pthread_t threads[NMETHODS];
    for (size_t i = 0; i < NMETHODS; i++) pthread_create(&threads[i], NULL, thread_main, (void *)methods[i]);
    for (size_t i = 0; i < NMETHODS; i++) pthread_join(threads[i], NULL);

    pid_t child = fork();
    if (child == 0) {
        for (size_t i = 0; i < NFILES; i++) report("fork-child", "stat-then-open", files[i], open_by("stat-then-open", files[i]));
        _exit(0);
    }
    waitpid(child, NULL, 0);

    char *child_argv[] = {argv[0], "exec-child", NULL};
    pid_t spawned;
    if (posix_spawn(&spawned, "/proc/self/exe", NULL, NULL, child_argv, environ) != 0) {
        perror("posix_spawn");
        return 2;
    }
    waitpid(spawned, NULL, 0);

    /* The kubelet writes sysctls: open for writing, truncate, write. */
    int fd = open("/proc/sys/kernel/panic", O_WRONLY | O_TRUNC);
    const char *value = "7\n";
    if (fd < 0 || write(fd, value, strlen(value)) != (ssize_t)strlen(value)) {
        char line[128];
        int len = snprintf(line, sizeof line, "write kernel/panic ERR:%s\n", strerrorname_np(errno));
        write(1, line, len);
        return 3;
    }
    close(fd);
    write(1, "write kernel/panic ok\n", 22);
    return 0;
}
