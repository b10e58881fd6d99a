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
