// Tests of patches/k3s 0002-0003 against gVisor-shaped cgroup controllers. They belong to
// package github.com/opencontainers/cgroups/fs (they use its test helpers): to run them, copy
// the module (v0.0.4) from the Go module cache, apply the two patches to fs/ (strip the
// vendor/github.com/opencontainers/cgroups/ prefix), copy this file into fs/ and run
// `go test ./fs/` (docs/patches.md "k3s").
package fs

import (
	"testing"

	"github.com/opencontainers/cgroups"
)

// gVisor's cpuacct controller: no cpuacct.usage_percpu, no cpuacct.usage_all.
func TestCpuacctStatsWithoutUsagePercpu(t *testing.T) {
	path := tempDir(t, "cpuacct")
	writeFileContents(t, path, map[string]string{
		"cpuacct.usage": "390000000",
		"cpuacct.stat":  "user 33\nsystem 6\n",
	})
	actual := *cgroups.NewStats()
	if err := (&CpuacctGroup{}).GetStats(path, &actual); err != nil {
		t.Fatal(err)
	}
	if actual.CpuStats.CpuUsage.TotalUsage != 390000000 || len(actual.CpuStats.CpuUsage.PercpuUsage) != 0 {
		t.Fatalf("unexpected %+v", actual.CpuStats.CpuUsage)
	}
}

// gVisor's memory controller: usage and limit, no memory.stat, max_usage, failcnt, use_hierarchy.
func TestMemoryStatsGvisorController(t *testing.T) {
	path := tempDir(t, "memory")
	writeFileContents(t, path, map[string]string{
		"memory.usage_in_bytes": "3104768",
		"memory.limit_in_bytes": "9223372036854771712",
	})
	actual := *cgroups.NewStats()
	if err := (&MemoryGroup{}).GetStats(path, &actual); err != nil {
		t.Fatal(err)
	}
	if actual.MemoryStats.Usage.Usage != 3104768 || actual.MemoryStats.Usage.Limit != 9223372036854771712 {
		t.Fatalf("unexpected %+v", actual.MemoryStats.Usage)
	}
}

// A memory controller without memory.stat and usage reports nothing, as upstream.
func TestMemoryStatsNoStatNoUsageFile(t *testing.T) {
	path := tempDir(t, "memory")
	actual := *cgroups.NewStats()
	if err := (&MemoryGroup{}).GetStats(path, &actual); err != nil {
		t.Fatal(err)
	}
}
