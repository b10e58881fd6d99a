#!/bin/sh
# The kernel facts behind docs/gvisor-generations.md, one line each: probe.sh's, then more for
# a human to read (the tests read only probe.sh). Run inside a sandbox:
#   RUNSC --network=none do -force-overlay=false /bin/sh -c 'exec 2>&1; sh tests/patches/probe-namespaces.sh'
# Syscalls that have no shell command are made with perl's syscall() (x86_64 numbers).
exec 2>&1
sh "$(dirname "$0")/probe.sh"
echo "busybox ls /proc/self/ns: $(busybox ls /proc/self/ns | tr '\n' ' ')"
# Each perl runs as a child of this shell, so nothing here changes the shell itself.
perl -e 'print "prctl(PR_SET_CHILD_SUBREAPER, 1) in a child: ", (syscall(157, 36, 1, 0, 0, 0) == 0 ? "0" : "-1 $!"), "\n"'
perl -e 'my $r = syscall(434, 0 + $$, 0); print "pidfd_open(own pid, 0): ", ($r >= 0 ? "fd $r" : "-1 $!"), "\n"'
echo "devices row in /proc/cgroups: $(grep -c '^devices' /proc/cgroups)"
# setns(2) (308) from here into each namespace of a process made by unshare(1): what runc's
# nsexec does to enter a container (runc exec) or a pod's namespaces (CRI containers).
unshare --fork --pid --ipc --uts --net --mount --propagation unchanged busybox sleep 31 &
U=$!
sleep 1
P=
for d in /proc/[0-9]*; do
    [ "$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null)" = "busybox sleep 31 " ] && P=${d#/proc/}
done
if [ -z "$P" ]; then
    echo "unshare --fork --pid --ipc --uts --net --mount: failed, no namespaces to join"
else
    for t in ipc:0x08000000 uts:0x04000000 net:0x40000000 mnt:0x00020000 pid:0x20000000; do
        perl -e 'my ($name, $flag, $pid) = @ARGV; open(my $f, "<", "/proc/$pid/ns/$name") or do { print "setns($name): cannot open /proc/$pid/ns/$name: $!\n"; exit }; print "setns(", $name, ", ", sprintf("0x%08x", hex $flag), "): ", (syscall(308, fileno($f), hex $flag) == 0 ? "0" : "-1 $!"), "\n"' "${t%%:*}" "${t#*:}" "$P"
    done
fi
kill "$U" 2>/dev/null
wait "$U" 2>/dev/null
exit 0
