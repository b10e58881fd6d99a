#!/bin/sh
# Print what this kernel (a gVisor sandbox, or the host) offers, as key=value lines the tests
# branch on: where a gVisor has a blocker's file or feature, the patch must be a no-op there.
kernel=$(uname -r)
echo "kernel=$kernel"
[ -r /proc/sys/kernel/cap_last_cap ] && echo "cap_last_cap=$(cat /proc/sys/kernel/cap_last_cap)" || echo "cap_last_cap=missing"
for s in ip_unprivileged_port_start ping_group_range; do
    [ -e /proc/sys/net/ipv4/$s ] && echo "$s=present" || echo "$s=missing"
done
mkdir -p /tmp/probe-cgroup.$$
if mount -t cgroup -o devices cgroup /tmp/probe-cgroup.$$ 2>/dev/null; then
    echo "devices_cgroup=mountable"; umount /tmp/probe-cgroup.$$
else
    echo "devices_cgroup=refused"
fi
rmdir /tmp/probe-cgroup.$$
# runc >= 1.2 setns()es into the container's mount namespace through /proc/PID/ns/mnt (its
# mount source thread); gVisor before 2023 has no mount namespace files at all.
[ -e /proc/self/ns/mnt ] && echo "mount_ns=present" || echo "mount_ns=missing"
# runc 1.3.3 refuses a /proc whose root inode is not 1 (its CVE-2025-52881 check).
echo "procfs_root_inode=$(busybox ls -id /proc | awk '{print $1}')"
# Can a process join an existing PID namespace? runc exec must (into the container's). Probed
# like runc's patch 0003 does: setns(2) (syscall 308) into our own PID namespace, which on Linux
# changes nothing; gVisor before 2025-06-26 answers EINVAL for any PID namespace.
echo "setns_pid=$(perl -e 'open(my $f, "<", "/proc/self/ns/pid") or do { print "no-ns-file"; exit }; print syscall(308, fileno($f), 0x20000000) == 0 ? "ok" : ($!{EINVAL} ? "EINVAL" : "error:$!")')"
# runc >= 1.3.6 masks directories with a read-only tmpfs mounted with nr_blocks=1,nr_inodes=1;
# gVisor of May 2025 refuses those options (EINVAL), the current one takes them.
mkdir -p /tmp/probe-tmpfs.$$
if mount -t tmpfs -o ro,nr_blocks=1,nr_inodes=1 tmpfs /tmp/probe-tmpfs.$$ 2>/dev/null; then
    echo "tmpfs_size_options=ok"; umount /tmp/probe-tmpfs.$$
else
    echo "tmpfs_size_options=refused"
fi
rmdir /tmp/probe-tmpfs.$$
