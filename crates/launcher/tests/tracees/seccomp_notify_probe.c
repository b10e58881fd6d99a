/* Can this kernel hand syscalls to a supervisor by seccomp user notification
 * (SECCOMP_RET_USER_NOTIF with a listener fd), the mechanism that would replace the launcher's
 * ptrace stops? Prints one line per question: "NAME ok" or "NAME ERR:<errno name>". */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long r) {
  if (r >= 0)
    printf("%s ok\n", name);
  else
    printf("%s ERR:%s\n", name, errno == EINVAL ? "EINVAL" : strerror(errno));
}

int main(void) {
  unsigned int action = SECCOMP_RET_USER_NOTIF;
  report("get_action_avail_user_notif",
         syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action));
  struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
  struct sock_fprog prog = {1, allow};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    perror("PR_SET_NO_NEW_PRIVS");
    return 1;
  }
  report("filter_new_listener",
         syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog));
  return 0;
}
