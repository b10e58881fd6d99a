#!/bin/sh
# A CNI plugin fixture for the CRI sysctl test, not a network. Installed twice: as "loopback"
# (which containerd always runs) and as "fake-cni" (the configured network). On ADD it reports
# lo with 127.0.0.1/8, or eth0 with 10.88.0.2/24, in the pod's namespace without creating
# anything (gVisor has no veth): all containerd needs to go on and create the pod sandbox whose
# OCI spec the test reads.
cat >/dev/null
case "$CNI_COMMAND:$(basename "$0")" in
ADD:loopback) printf '{"cniVersion":"1.0.0","interfaces":[{"name":"lo","sandbox":"%s"}],"ips":[{"address":"127.0.0.1/8","interface":0}]}\n' "$CNI_NETNS" ;;
ADD:*) printf '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"%s"}],"ips":[{"address":"10.88.0.2/24","interface":0}]}\n' "$CNI_NETNS" ;;
VERSION:*) printf '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}\n' ;;
*) ;;
esac
