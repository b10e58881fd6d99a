// gocni-probe runs gvisor-cni through github.com/containerd/go-cni, the library containerd's
// CRI uses, and prints the pod IP the CRI would record: the first IP of the default
// interface (eth0), exactly as internal/cri/server/sandbox_run.go selects it.
//
// Usage: gocni-probe CONF_DIR PLUGIN_DIR NETNS_PATH CONTAINER_ID
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	gocni "github.com/containerd/go-cni"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: gocni-probe CONF_DIR PLUGIN_DIR NETNS_PATH CONTAINER_ID")
		os.Exit(2)
	}
	confDir, pluginDir, netns, id := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	cni, err := gocni.New(
		gocni.WithMinNetworkCount(1),
		gocni.WithPluginConfDir(confDir),
		gocni.WithPluginDir([]string{pluginDir}),
		gocni.WithInterfacePrefix("eth"),
	)
	if err != nil {
		fail("new", err)
	}
	// WithDefaultConf without WithLoNetwork: containerd's use_internal_loopback behaviour.
	if err := cni.Load(gocni.WithDefaultConf); err != nil {
		fail("load", err)
	}
	ctx := context.Background()
	result, err := cni.Setup(ctx, id, netns)
	if err != nil {
		fail("setup", err)
	}
	out := map[string]interface{}{"interfaces": []string{}}
	names := []string{}
	for name := range result.Interfaces {
		names = append(names, name)
	}
	out["interfaces"] = names
	if eth0, ok := result.Interfaces["eth0"]; ok && len(eth0.IPConfigs) > 0 {
		out["podIP"] = eth0.IPConfigs[0].IP.String()
	}
	if err := cni.Remove(ctx, id, netns); err != nil {
		fail("remove", err)
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

func fail(step string, err error) {
	fmt.Fprintf(os.Stderr, "go-cni %s: %v\n", step, err)
	os.Exit(1)
}
