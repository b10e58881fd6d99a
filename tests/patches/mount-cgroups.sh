#!/bin/sh
# Mount cgroup v1 hierarchies the way the installer does inside a gVisor sandbox:
# a tmpfs on /sys/fs/cgroup, then one hierarchy per controller the kernel accepts.
# Debian's 2022 gVisor refuses `devices` (and `freezer`); a current gVisor mounts devices.
# Prints one line per controller: "cgroup <name>: mounted" or "cgroup <name>: refused".
# CGROUP_CONTROLLERS overrides the list (the tests leave devices out to show that runc still
# insists on it where the kernel has it).
set -u
mkdir -p /sys/fs/cgroup
if ! mountpoint -q /sys/fs/cgroup 2>/dev/null; then
    mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup || { echo "cannot mount tmpfs on /sys/fs/cgroup" >&2; exit 1; }
fi
for c in ${CGROUP_CONTROLLERS:-cpu cpuacct cpuset memory pids devices}; do
    mkdir -p /sys/fs/cgroup/$c
    if mountpoint -q /sys/fs/cgroup/$c 2>/dev/null || mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c 2>/dev/null; then
        echo "cgroup $c: mounted"
    else
        rmdir /sys/fs/cgroup/$c
        echo "cgroup $c: refused"
    fi
done
