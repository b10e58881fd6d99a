/* udp server NAME ADDR PORT [pktinfo]: answers every datagram with NAME (from the address it
   was sent to when pktinfo is given); udp client ADDR PORT: sends "q", prints the reply and
   who sent it. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  if (argc >= 5 && !strcmp(argv[1], "server")) {
    inet_pton(AF_INET, argv[3], &a.sin_addr); a.sin_port = htons(atoi(argv[4]));
    int on = 1, pk = argc > 5;
    if (pk && setsockopt(s, IPPROTO_IP, IP_PKTINFO, &on, sizeof on)) { perror("IP_PKTINFO"); return 1; }
    if (bind(s, (void *)&a, sizeof a)) { perror("bind"); return 1; }
    for (;;) {
      char buf[2048], cbuf[256]; struct sockaddr_in from; struct iovec iov = {buf, sizeof buf};
      struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
      if (recvmsg(s, &m, 0) < 0) { perror("recvmsg"); return 1; }
      struct in_pktinfo pi = {0}; int have = 0;
      for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) { memcpy(&pi, CMSG_DATA(c), sizeof pi); have = 1; }
      if (pk) fprintf(stderr, "server: pktinfo %s dst=%s\n", have ? "present" : "MISSING", have ? inet_ntoa(pi.ipi_addr) : "-");
      struct iovec o = {argv[2], strlen(argv[2])};
      char ob[CMSG_SPACE(sizeof pi)] = {0};
      struct msghdr r = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &o, .msg_iovlen = 1};
      if (pk && have) {
        r.msg_control = ob; r.msg_controllen = sizeof ob;
        struct cmsghdr *c = CMSG_FIRSTHDR(&r); c->cmsg_level = IPPROTO_IP; c->cmsg_type = IP_PKTINFO; c->cmsg_len = CMSG_LEN(sizeof pi);
        struct in_pktinfo sp = {0}; sp.ipi_spec_dst = pi.ipi_addr; memcpy(CMSG_DATA(c), &sp, sizeof sp);
      }
      if (sendmsg(s, &r, 0) < 0) perror("sendmsg");
    }
  }
  if (argc >= 5 && !strcmp(argv[1], "tcpserver")) {
    int t = socket(AF_INET, SOCK_STREAM, 0), on = 1;
    setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    inet_pton(AF_INET, argv[3], &a.sin_addr); a.sin_port = htons(atoi(argv[4]));
    if (bind(t, (void *)&a, sizeof a) || listen(t, 128)) { perror("tcp bind/listen"); return 1; }
    for (;;) { int c = accept(t, 0, 0); if (c < 0) continue; write(c, argv[2], strlen(argv[2])); write(c, "\n", 1); close(c); }
  }
  if (argc >= 4 && !strcmp(argv[1], "client")) {
    inet_pton(AF_INET, argv[2], &a.sin_addr); a.sin_port = htons(atoi(argv[3]));
    struct timeval tv = {2, 0}; setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sendto(s, "q", 1, 0, (void *)&a, sizeof a);
    char buf[2048]; struct sockaddr_in from; socklen_t fl = sizeof from;
    ssize_t n = recvfrom(s, buf, sizeof buf - 1, 0, (void *)&from, &fl);
    if (n < 0) { printf("no reply (%s)\n", strerror(errno)); return 1; }
    buf[n] = 0; printf("%s from %s:%d\n", buf, inet_ntoa(from.sin_addr), ntohs(from.sin_port));
    return 0;
  }
  fprintf(stderr, "usage\n"); return 2;
}
