package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The container runtimes the local cluster can run (RUNTIME).
const (
	// containerd2 is containerd 2.2 with its shim, ctr and runc 1.5, built
	// from tools/runtime: what the v1.36 node features need (image volumes
	// need containerd 2.1 or newer, user namespaces a runc with idmapped
	// mounts).
	containerd2 = "containerd2"
	// containerd1 is Debian's containerd 1.6 with its runc 1.1.
	containerd1 = "containerd1"
)

// runtimeKind is RUNTIME, else the runtime of the cluster that is up, else
// containerd2.
func (l *layout) runtimeKind() (string, error) {
	v := os.Getenv("RUNTIME")
	if v == "" {
		v = l.recordedRuntime()
	}
	switch v {
	case "":
		return containerd2, nil
	case containerd1, containerd2:
		return v, nil
	}
	return "", fmt.Errorf("RUNTIME must be %s or %s, not %q", containerd2, containerd1, v)
}

// recordedRuntime is the runtime of the cluster that is up ("" if none).
func (l *layout) recordedRuntime() string {
	data, _ := os.ReadFile(filepath.Join(l.run, "runtime"))
	return strings.TrimSpace(string(data))
}

// recordedProfile is the settings the running cluster was started with
// ("seed" for a cluster started before profiles were recorded).
func (l *layout) recordedProfile() string {
	data, err := os.ReadFile(filepath.Join(l.run, "profile"))
	if err != nil {
		return "seed"
	}
	return strings.TrimSpace(string(data))
}

// runtimeBinary is the path of containerd, ctr or runc for the runtime:
// tools/runtime's build, or the machine's (Debian's) for containerd1.
func (l *layout) runtimeBinary(name string) string {
	if l.runtime == containerd1 {
		return name
	}
	return filepath.Join(l.bin, "runtime", name)
}

// daemonEnv is the environment daemons start with: containerd 2 finds its
// own shim first on PATH.
func (l *layout) daemonEnv() []string {
	if l.runtime == containerd1 {
		return os.Environ()
	}
	return append(os.Environ(), "PATH="+filepath.Join(l.bin, "runtime")+":"+os.Getenv("PATH"))
}
