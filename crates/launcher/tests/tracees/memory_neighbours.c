/* The rewritten path is much longer than the original. Checks that redirecting it leaves the
 * tracee's memory alone: the original string, the bytes right after its NUL, and the stack
 * below the stack pointer (the scratch space a naive redirector would use).
 *
 * Prints "content <first line>" and "intact yes" or "intact no: <what changed>". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct layout {
    char before[64];
    char path[32]; /* "/proc/sys/kernel/pid_max" + NUL + 7 bytes of pattern */
    char after[256];
};

int main(void) {
    static struct layout mem;
    memset(&mem, 0xA5, sizeof mem);
    strcpy(mem.path, "/proc/sys/kernel/pid_max");
    struct layout expected = mem;

    /* Mark the stack below SP (beyond the 128-byte red zone too) with a pattern, then make the
     * syscall directly so no libc frame reuses that area in between. */
    unsigned char *sp;
    __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
    unsigned char *below = sp - 2048;
    /* Stays inside this function's stack page range: the main thread stack is large. */
    memset(below, 0x5A, 1024);

    /* Inline `syscall` instruction: a libc call (and its lazy symbol binding) would itself use
     * the stack below SP. */
    long fd;
    register long r10 __asm__("r10") = 0;
    __asm__ volatile("syscall"
                     : "=a"(fd)
                     : "0"((long)SYS_openat), "D"((long)AT_FDCWD), "S"(mem.path), "d"((long)O_RDONLY), "r"(r10)
                     : "rcx", "r11", "memory");

    int stack_ok = 1;
    for (int i = 0; i < 1024; i++) if (below[i] != 0x5A) { stack_ok = 0; break; }

    char content[128] = "ERR";
    if (fd >= 0) {
        ssize_t n = read((int)fd, content, sizeof content - 1);
        content[n > 0 ? n : 0] = 0;
        content[strcspn(content, "\n")] = 0;
    }
    printf("content %s\n", content);
    if (memcmp(&mem, &expected, sizeof mem) != 0) printf("intact no: the path buffer or its neighbours changed\n");
    else if (!stack_ok) printf("intact no: the stack below SP changed\n");
    else printf("intact yes\n");
    return 0;
}
