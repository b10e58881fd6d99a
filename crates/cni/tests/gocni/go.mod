module k3s-gvisor/gvisor-cni/tests/gocni

go 1.23

// The versions containerd v2.1.4's go.mod selects, so this probe decodes results exactly
// as that containerd does.
require (
	github.com/containerd/go-cni v1.1.12
	github.com/containernetworking/cni v1.3.0 // indirect
)

require (
	github.com/petermattis/goid v0.0.0-20240813172612-4fcff4a6cae7 // indirect
	github.com/sasha-s/go-deadlock v0.3.5 // indirect
)
