/* Relative opens around changes of the current directory and root that the launcher does not
 * see as paths (fchdir, a cwd changed by another thread, chroot). The launcher remembers that a
 * thread's cwd is outside /proc and that its root is the launcher's; each step checks that a
 * change makes it forget. Prints "<step> <content or ERR:errno>" per step.
 *
 * usage: cwd_changes CHROOT_DIR   (a directory to chroot into at the end; needs root) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void show(const char *step, const char *path) {
    char content[128] = "";
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(content, sizeof content, "ERR:%s", strerrorname_np(errno));
    } else {
        ssize_t n = read(fd, content, sizeof content - 1);
        content[n > 0 ? n : 0] = 0;
        content[strcspn(content, "\n")] = 0;
        close(fd);
    }
    printf("%s %s\n", step, content);
    fflush(stdout);
}

static int kernel_dir;

static void *move_to_kernel_dir(void *unused) {
    (void)unused;
    /* Threads share the cwd: this moves the main thread too. */
    if (fchdir(kernel_dir) != 0) perror("fchdir in thread");
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CHROOT_DIR\n", argv[0]);
        return 2;
    }
    int procsys = open("/proc/sys", O_RDONLY | O_DIRECTORY);
    kernel_dir = open("/proc/sys/kernel", O_RDONLY | O_DIRECTORY);
    if (procsys < 0 || kernel_dir < 0 || chdir("/") != 0) {
        perror("setup");
        return 1;
    }
    /* cwd "/": "kernel/pid_max" is /kernel/pid_max, never redirected (and remembered). */
    show("root-cwd", "kernel/pid_max");
    show("root-cwd-again", "kernel/pid_max");
    /* fchdir names no path: only forgetting the cwd makes the next open redirect. */
    if (fchdir(procsys) != 0) perror("fchdir");
    show("after-fchdir", "kernel/pid_max");
    if (chdir("/") != 0) perror("chdir /");
    show("back-at-root", "pid_max");
    /* Another thread moves the shared cwd. */
    pthread_t t;
    pthread_create(&t, NULL, move_to_kernel_dir, NULL);
    pthread_join(t, NULL);
    show("after-thread-fchdir", "pid_max");
    /* After chroot the launcher's DIR is not this thread's: absolute /proc/sys paths are
     * not redirected any more (the root was remembered as the launcher's before). */
    show("before-chroot", "/proc/sys/kernel/pid_max");
    if (chroot(argv[1]) != 0) perror("chroot");
    show("after-chroot", "/proc/sys/kernel/pid_max");
    return 0;
}
