#!/bin/sh
# What a sandbox offers a service proxy: the measurements behind ARCHITECTURE.md's "Services
# without kube-proxy". Two sections:
#   dnat       kube-proxy's way without the matches gVisor refuses: DNAT (+SNAT) rules.
#              Needs CAP_NET_RAW (runsc --net-raw) and iptables-legacy.
#   userspace  svcproxy's way: ClusterIPs as /32s on the bridge, sockets in the root netns.
#              Needs nothing beyond CAP_NET_ADMIN.
# Run (udp.c: gcc -static -O2 -o udp udp.c, next to this script):
#   $RUNSC --network=none --net-raw do -force-overlay=false /bin/sh probe.sh dnat 2>&1 | cat
#   $RUNSC --network=none do -force-overlay=false /bin/sh probe.sh userspace 2>&1 | cat
#   unshare -m -n -p -f --mount-proc /bin/sh probe.sh userspace      # plain Linux
# Topology: bridge br0 10.88.0.1/16, pods p2 p3 p4 (10.88.0.2-4, default via 10.88.0.1 dev
# eth; p4's is added later), node0 192.168.77.1/24 (another interface of the node). Backends in p3, p4: TCP 8080
# and UDP 8053, answering with their name.
KIT=$(cd "$(dirname "$0")" && pwd)
UDP=$KIT/udp
mkdir -p /run/netns && mount -t tmpfs none /run/netns
PIDS=""
bg() { "$@" & PIDS="$PIDS $!"; }
say() { echo "== $1: $2"; }
tcp() { busybox nc -w 3 "$@" 2>&1 | tr '\n' ' '; }
echo "== kernel $(uname -r), $(grep CapBnd /proc/self/status | tr '\t' ' ')"
ip link set lo up
ip link add br0 type bridge && ip addr add 10.88.0.1/16 dev br0 && ip link set br0 up
ip link add node0 type veth peer name node0p && ip addr add 192.168.77.1/24 dev node0 && ip link set node0 up && ip link set node0p up
for n in 2 3 4; do
  ip netns add p$n; ip link add vh$n type veth peer name eth$n
  ip link set vh$n master br0; ip link set vh$n up; ip link set eth$n netns p$n
  ip netns exec p$n ip addr add 10.88.0.$n/16 dev eth$n; ip netns exec p$n ip link set eth$n up
  ip netns exec p$n ip link set lo up
  # p4 gets its default route later (userspace section), without `dev`.
  [ $n = 4 ] || ip netns exec p$n ip route add default via 10.88.0.1 dev eth$n
done
for n in 3 4; do
  bg ip netns exec p$n "$UDP" tcpserver backend$n 0.0.0.0 8080
  bg ip netns exec p$n "$UDP" server backend$n 0.0.0.0 8053
done
sleep 1
say "pod p2 -> pod p3 10.88.0.3:8080 directly" "$(ip netns exec p2 busybox nc -w 2 10.88.0.3 8080 2>&1)"
in_p2() { ip netns exec p2 "$@"; }

case ${1:-} in
dnat)
  echo 1 > /proc/sys/net/ipv4/ip_forward; say "ip_forward" "$(cat /proc/sys/net/ipv4/ip_forward)"
  ipt() { if out=$(iptables-legacy "$@" 2>&1); then say "iptables-legacy $*" ok; else say "iptables-legacy $*" "REFUSED: $(echo $out | cut -c1-100)"; fi; }
  ipt -t nat -A PREROUTING -d 10.43.0.20/32 -p tcp --dport 80 -j DNAT --to-destination 10.88.0.3:8080
  ipt -t nat -A PREROUTING -d 10.43.0.21/32 -p udp --dport 53 -j DNAT --to-destination 10.88.0.3:8053
  ipt -t nat -A PREROUTING -d 10.43.0.22/32 -p tcp --dport 80 -j DNAT --to-destination 10.88.0.3-10.88.0.4:8080
  ipt -t nat -A PREROUTING -d 10.43.0.23/32 -p tcp --dport 80 -m statistic --mode random --probability 0.5 -j DNAT --to-destination 10.88.0.3:8080
  ipt -t nat -A PREROUTING -d 10.43.0.23/32 -p tcp --dport 80 -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination 10.88.0.3:8080
  ipt -t nat -A POSTROUTING -s 10.88.0.0/16 -j MASQUERADE
  ipt -t nat -A POSTROUTING -d 10.88.0.3/32 -j SNAT --to-source 10.88.0.1
  say "pod -> DNAT 10.43.0.20:80, backend on the same bridge, no SNAT" "[$(in_p2 busybox nc -w 3 10.43.0.20 80 2>&1)]"
  say "pod -> DNAT 10.43.0.21:53 UDP, no SNAT" "$(in_p2 "$UDP" client 10.43.0.21 53)"
  ipt -t nat -A POSTROUTING -d 10.88.0.3/32 -p tcp -j SNAT --to-source 10.88.0.1
  ipt -t nat -A POSTROUTING -d 10.88.0.3/32 -p udp -j SNAT --to-source 10.88.0.1
  say "pod -> DNAT 10.43.0.20:80 with SNAT -p tcp" "[$(in_p2 busybox nc -w 3 10.43.0.20 80 2>&1)]"
  say "pod -> DNAT 10.43.0.21:53 UDP with SNAT -p udp" "$(in_p2 "$UDP" client 10.43.0.21 53)"
  ;;
userspace)
  ip addr add 10.43.0.10/32 dev br0
  ip addr add 10.43.0.11/32 dev lo
  bg "$UDP" tcpserver tcp-on-br0-clusterip 10.43.0.10 80
  bg "$UDP" server udp-on-br0-clusterip 10.43.0.10 53
  bg "$UDP" tcpserver tcp-on-lo-clusterip 10.43.0.11 80
  bg "$UDP" tcpserver tcp-on-node0 192.168.77.1 30080
  bg "$UDP" server udp-wildcard-with-pktinfo 0.0.0.0 30053 pktinfo
  sleep 1
  say "ip_forward" "$(cat /proc/sys/net/ipv4/ip_forward)"
  say "pod -> 10.43.0.10:80 (/32 on the bridge)" "$(in_p2 busybox nc -w 3 10.43.0.10 80 2>&1)"
  say "pod -> 10.43.0.10:53 UDP (/32 on the bridge)" "$(in_p2 "$UDP" client 10.43.0.10 53)"
  say "node -> 10.43.0.10:80 (/32 on the bridge)" "$(busybox nc -w 3 10.43.0.10 80 2>&1)"
  say "pod -> 10.43.0.11:80 (/32 on lo)" "$(in_p2 busybox nc -w 3 10.43.0.11 80 2>&1)"
  say "pod -> 192.168.77.1:30080 (address of another interface)" "$(in_p2 busybox nc -w 3 192.168.77.1 30080 2>&1)"
  say "pod -> 10.43.0.10:30053 UDP, socket on 0.0.0.0 answering with IP_PKTINFO's address" "$(in_p2 "$UDP" client 10.43.0.10 30053 2>&1 | tr '\n' ' ')"
  echo 1 > /proc/sys/net/ipv4/ip_forward; say "ip_forward" "$(cat /proc/sys/net/ipv4/ip_forward)"
  say "pod -> 10.43.0.11:80 (/32 on lo)" "$(in_p2 busybox nc -w 3 10.43.0.11 80 2>&1)"
  say "pod -> 192.168.77.1:30080 (address of another interface)" "$(in_p2 busybox nc -w 3 192.168.77.1 30080 2>&1)"
  echo 0 > /proc/sys/net/ipv4/ip_forward
  t0=$(date +%s%N); i=0
  while [ $i -lt 1000 ]; do ip addr add 10.43.$((i / 250 + 1)).$((i % 250 + 1))/32 dev br0 || break; i=$((i + 1)); done
  say "1000 more /32s on the bridge with ip(8), one process each" "$i added in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  say "pod -> 10.43.0.10:80 with 1001 /32s on the bridge" "$(in_p2 busybox nc -w 3 10.43.0.10 80 2>&1)"
  ip addr del 10.43.0.10/32 dev br0
  say "pod -> 10.43.0.10:80 after its /32 is removed" "$(in_p2 busybox nc -w 3 10.43.0.10 80 2>&1)"
  ip addr add 10.43.0.12/32 dev br0
  bg "$UDP" tcpserver tcp-on-br0-clusterip-2 10.43.0.12 80
  sleep 0.5
  ip netns exec p4 ip route add default via 10.88.0.1
  say "pod p4's routes, its default route added without dev" "$(ip netns exec p4 ip route | tr '\n' ';')"
  say "pod p4 (default route without dev) -> 10.43.0.12:80 (/32 on the bridge)" "$(ip netns exec p4 busybox nc -w 3 10.43.0.12 80 2>&1)"
  ;;
*) echo "usage: probe.sh dnat|userspace" >&2 ;;
esac
for p in $PIDS; do kill "$p" 2>/dev/null; done
for n in 2 3 4; do ip netns del p$n; done
