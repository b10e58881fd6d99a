// cgroup-stats reads one cgroup's stats the way the kubelet's cAdvisor does (its libcontainer
// handler: opencontainers/cgroups' fs.Manager.GetStats over the cgroup v1 controllers the
// kubelet's metric set needs, without pids for the root as cAdvisor's raw handler), and prints
// them or the error that would stop cAdvisor's housekeeping. Built against k3s's vendored,
// patched copy of that module (docs/patches.md "k3s": the command), it shows inside a gVisor
// which cgroup files the kubelet still misses without rebuilding k3s.
//
// Usage: cgroup-stats CGROUP   (e.g. / or /k8s.io/<id>, relative to each controller's mount)
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs"
)

func main() {
	name := os.Args[1]
	mounts, err := cgroups.GetCgroupMounts(true)
	if err != nil {
		panic(err)
	}
	want := map[string]bool{"cpu": true, "cpuacct": true, "memory": true, "pids": true, "blkio": true, "io": true, "devices": true}
	paths := map[string]string{}
	for _, m := range mounts {
		for _, s := range m.Subsystems {
			if want[s] && paths[s] == "" {
				paths[s] = filepath.Join(m.Mountpoint, name)
			}
		}
	}
	if name == "/" {
		delete(paths, "pids") // cAdvisor's raw handler does the same for the root
	}
	m, err := fs.NewManager(&cgroups.Cgroup{Name: name, Resources: &cgroups.Resources{}}, paths)
	if err != nil {
		panic(err)
	}
	st, err := m.GetStats()
	if err != nil {
		fmt.Printf("%s: GetStats error: %v\n", name, err)
		os.Exit(1)
	}
	out, _ := json.Marshal(map[string]any{"cpu": st.CpuStats.CpuUsage, "memory": st.MemoryStats.Usage, "pids": st.PidsStats})
	fmt.Printf("%s: %s\n", name, out)
}
