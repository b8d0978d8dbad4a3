package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	criremote "k8s.io/cri-client/pkg"
)

const pauseImage = "registry.k8s.io/pause:3.10.2"

// containerdEdits turn `containerd config default` into the local cluster's
// config: exact strings to replace, each of which must be found, so that a
// changed default fails loudly.
func (l *layout) containerdEdits() [][2]string {
	if l.runtime == containerd1 {
		return [][2]string{
			// The machine lacks CAP_SYS_RESOURCE: a sandbox's oom_score_adj of -998
			// fails in runc unless containerd clamps it.
			{"restrict_oom_score_adj = false", "restrict_oom_score_adj = true"},
			{`bin_dir = "/opt/cni/bin"`, `bin_dir = "` + cniBinDir + `"`},
		}
	}
	return [][2]string{ // containerd 2's version 3 config
		{"restrict_oom_score_adj = false", "restrict_oom_score_adj = true"},
		{`bin_dirs = ['/opt/cni/bin']`, `bin_dirs = ['` + cniBinDir + `']`},
		// runc from tools/runtime, not the machine's.
		{`BinaryName = ''`, `BinaryName = '` + l.runtimeBinary("runc") + `'`},
	}
}

// containerdLines are the settings replaced by line (the first words of a
// line, its new text, how many lines must match): the sandbox image, the
// registry hosts folder, and the node's own socket, root, state and CNI
// config.
func (l *layout) containerdLines() [][3]string {
	q := `"`
	lines := [][3]string{{"sandbox_image = ", `sandbox_image = "` + pauseImage + `"`, "1"}}
	if l.runtime == containerd2 {
		q = "'"
		lines = [][3]string{{"sandbox = ", `sandbox = '` + pauseImage + `'`, "1"}}
	}
	// Registry hosts (the local mirror and private registry) come from files:
	// containerd 2 reads them for the CRI and the transfer service.
	lines = append(lines, [3]string{"config_path = ", "config_path = " + q + l.registriesHostsDir() + q, map[string]string{containerd1: "1", containerd2: "2"}[l.runtime]})
	if l.node.index > 1 || l.runtime == containerd2 {
		lines = append(lines,
			[3]string{"root = ", "root = " + q + l.containerdRoot() + q, "1"},
			[3]string{"state = ", "state = " + q + l.containerdState() + "/state" + q, "1"},
			[3]string{"address = " + q + "/run/containerd/containerd.sock" + q, "address = " + q + l.containerdSock() + q, "1"},
			[3]string{"conf_dir = ", "conf_dir = " + q + l.cniConfDir() + q, "1"})
	}
	return lines
}

// writeContainerdConfig writes the config file and returns its content.
func (l *layout) writeContainerdConfig() (string, error) {
	out, err := exec.Command(l.runtimeBinary("containerd"), "config", "default").Output()
	if err != nil {
		return "", fmt.Errorf("containerd config default: %w", err)
	}
	cfg := string(out)
	for _, e := range l.containerdEdits() {
		if !strings.Contains(cfg, e[0]) {
			return "", fmt.Errorf("containerd default config lacks %q", e[0])
		}
		cfg = strings.Replace(cfg, e[0], e[1], 1)
	}
	for _, e := range l.containerdLines() {
		var n int
		if cfg, n = replaceLinePrefix(cfg, e[0], e[1]); strconv.Itoa(n) != e[2] {
			return "", fmt.Errorf("containerd default config has %d lines starting %q, want %s", n, e[0], e[2])
		}
	}
	if err := l.writeRegistryHosts(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(l.containerdConfig()), 0o755); err != nil {
		return "", err
	}
	return cfg, writeFileAtomic(l.containerdConfig(), []byte(cfg), 0o644)
}

// replaceLinePrefix replaces each line whose trimmed text starts with prefix,
// keeping its indentation, and returns how many it replaced.
func replaceLinePrefix(text, prefix, repl string) (string, int) {
	lines := strings.Split(text, "\n")
	n := 0
	for i, line := range lines {
		trimmed := strings.TrimLeft(line, " \t")
		if strings.HasPrefix(trimmed, prefix) {
			lines[i] = line[:len(line)-len(trimmed)] + repl
			n++
		}
	}
	return strings.Join(lines, "\n"), n
}

// cniConflist is a node's pod network: a bridge with host-local IPAM on the
// node's pod CIDR, portmap for hostPort and loopback for lo inside the
// sandbox. No masquerade: pods see each other's own addresses across nodes,
// routed over the host bridge.
const cniConflist = `{
  "cniVersion": "1.0.0",
  "name": "{{NETWORK}}",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "{{BRIDGE}}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "{{SUBNET}}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
`

const cniConfFile = "10-bosun.conflist"

// cniBridge is the bridge the CNI plugin makes in each node's network
// namespace, with the gateway address of the node's pod CIDR.
const cniBridge = "cni0"

// writeCNIConfig makes the node's network on subnet the only one its
// containerd loads.
func (l *layout) writeCNIConfig(subnet string) error {
	dir := l.cniConfDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != cniConfFile && (strings.HasSuffix(e.Name(), ".conf") || strings.HasSuffix(e.Name(), ".conflist") || strings.HasSuffix(e.Name(), ".json")) {
			// containerd loads the first file by name; park others aside.
			_ = os.Rename(filepath.Join(dir, e.Name()), filepath.Join(dir, e.Name()+".disabled-by-bosun"))
		}
	}
	conf := strings.NewReplacer("{{NETWORK}}", l.cniNetwork(), "{{SUBNET}}", subnet, "{{BRIDGE}}", cniBridge).Replace(cniConflist)
	return writeFileAtomic(filepath.Join(dir, cniConfFile), []byte(conf), 0o644)
}

// ensureContainerd leaves exactly one containerd running with our config.
// A containerd started with another config (by hand, by a package, by an
// earlier clone) is stopped first; its containers' shims keep running and are
// cleaned through CRI afterwards.
func (l *layout) ensureContainerd(ctx context.Context) error {
	old, _ := os.ReadFile(l.containerdConfig())
	cfg, err := l.writeContainerdConfig()
	if err != nil {
		return err
	}
	if string(old) != cfg && l.daemonPid("containerd") != 0 {
		fmt.Println("containerd's config changed: restarting it")
		l.stopDaemon("containerd", 20*time.Second)
	}
	ours := l.daemonPid("containerd")
	for _, p := range containerdProcs() {
		if p.pid == ours && slices.Contains(p.cmdline, l.containerdConfig()) {
			continue
		}
		if l.node.index > 1 || l.ownsContainerd(p) {
			continue // another node's: node 1 stops the strangers
		}
		fmt.Printf("stopping a containerd not started with this cluster's config (pid %d: %s)\n", p.pid, strings.Join(p.cmdline, " "))
		stopPid(p.pid, 10*time.Second)
		if p.pid == ours {
			ours = 0
		}
	}
	if ours == 0 {
		_ = os.Remove(l.containerdSock())
		if _, err := l.startDaemon("containerd", l.runtimeBinary("containerd"), "--config", l.containerdConfig()); err != nil {
			return err
		}
	}
	return waitFor(ctx, 30*time.Second, "containerd's CRI socket", func() error {
		rs, err := l.criRuntime(ctx)
		if err != nil {
			return err
		}
		_, err = rs.Version(ctx, "v1")
		return err
	})
}

func (l *layout) criRuntime(ctx context.Context) (internalapi.RuntimeService, error) {
	conn, err := net.DialTimeout("unix", l.containerdSock(), time.Second)
	if err != nil {
		return nil, err
	}
	conn.Close()
	return criremote.NewRemoteRuntimeService(ctx, "unix://"+l.containerdSock(), 10*time.Second, nil, false)
}

// containerdRoot is the node's containerd root (node 1: the machine's;
// containerd 2 keeps its own, since containerd 1.6 cannot read what 2 writes).
func (l *layout) containerdRoot() string {
	switch {
	case l.node.index > 1:
		return filepath.Join(l.node.dir, "containerd")
	case l.runtime == containerd2:
		return "/var/lib/containerd2"
	}
	return "/var/lib/containerd"
}

// ownsContainerd reports whether p is the containerd of another node of
// this cluster (started with one of its node configs).
func (l *layout) ownsContainerd(p proc) bool {
	for i := 2; i <= maxNodes; i++ {
		if slices.Contains(p.cmdline, l.on(i).containerdConfig()) {
			return true
		}
	}
	return false
}

// removeAllPods stops and removes every CRI sandbox and container: what the
// node agent of this or an earlier cluster created in containerd's k8s.io
// namespace. The machine is the cluster's own, so everything there is ours.
func (l *layout) removeAllPods(ctx context.Context) error {
	rs, err := l.criRuntime(ctx)
	if err != nil {
		return err
	}
	ctrs, err := rs.ListContainers(ctx, nil)
	if err != nil {
		return err
	}
	var errs []error
	removedCtrs, removedPods := 0, 0
	for _, c := range ctrs {
		_ = rs.StopContainer(ctx, c.Id, 0)
		if err := rs.RemoveContainer(ctx, c.Id); err != nil {
			errs = append(errs, fmt.Errorf("remove container %s: %w", c.Id, err))
			continue
		}
		removedCtrs++
	}
	sandboxes, err := rs.ListPodSandbox(ctx, nil)
	if err != nil {
		return err
	}
	for _, s := range sandboxes {
		// Removing stops the sandbox first, tearing its network down.
		if err := rs.RemovePodSandbox(ctx, s.Id); err != nil {
			errs = append(errs, fmt.Errorf("remove sandbox %s: %w", s.Id, err))
			continue
		}
		removedPods++
	}
	if removedCtrs+removedPods > 0 {
		fmt.Printf("removed %d containers and %d pod sandboxes from %s's containerd\n", removedCtrs, removedPods, l.nodeName)
	}
	return errors.Join(errs...)
}
