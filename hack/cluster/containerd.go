package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	criremote "k8s.io/cri-client/pkg"
)

const pauseImage = "registry.k8s.io/pause:3.10.2"

// containerdEdits turn `containerd config default` into the local cluster's
// config. Each old string must be found, so a changed default fails loudly.
var containerdEdits = [][2]string{
	// The machine lacks CAP_SYS_RESOURCE: a sandbox's oom_score_adj of -998
	// fails in runc unless containerd clamps it.
	{"restrict_oom_score_adj = false", "restrict_oom_score_adj = true"},
	{`bin_dir = "/opt/cni/bin"`, `bin_dir = "` + cniBinDir + `"`},
}

// writeContainerdConfig writes the config file and returns its content.
func (l *layout) writeContainerdConfig() (string, error) {
	out, err := exec.Command("containerd", "config", "default").Output()
	if err != nil {
		return "", fmt.Errorf("containerd config default: %w", err)
	}
	cfg := string(out)
	for _, e := range containerdEdits {
		if !strings.Contains(cfg, e[0]) {
			return "", fmt.Errorf("containerd default config lacks %q", e[0])
		}
		cfg = strings.Replace(cfg, e[0], e[1], 1)
	}
	cfg, n := replaceLinePrefix(cfg, "sandbox_image = ", `sandbox_image = "`+pauseImage+`"`)
	if n != 1 {
		return "", fmt.Errorf("containerd default config has %d sandbox_image lines", n)
	}
	// Each node's containerd has its own socket, root, state and CNI config.
	for _, e := range [][2]string{
		{"root = ", `root = "` + l.containerdRoot() + `"`},
		{"state = ", `state = "` + l.containerdState() + `/state"`},
		{`address = "/run/containerd/containerd.sock"`, `address = "` + l.containerdSock() + `"`},
		{"conf_dir = ", `conf_dir = "` + l.cniConfDir() + `"`},
	} {
		if l.node.index <= 1 {
			break // node 1 keeps the machine's usual places
		}
		if cfg, n = replaceLinePrefix(cfg, e[0], e[1]); n != 1 {
			return "", fmt.Errorf("containerd default config has %d lines starting %q", n, e[0])
		}
	}
	// Registry hosts (the local mirror and private registry) come from files.
	if cfg, n = replaceLinePrefix(cfg, "config_path = ", `config_path = "`+l.registriesHostsDir()+`"`); n != 1 {
		return "", fmt.Errorf("containerd default config has %d config_path lines", n)
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
      "bridge": "cni0",
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
	conf := strings.NewReplacer("{{NETWORK}}", l.cniNetwork(), "{{SUBNET}}", subnet).Replace(cniConflist)
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
		if _, err := l.startDaemon("containerd", "containerd", "--config", l.containerdConfig()); err != nil {
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

// containerdRoot is the node's containerd root (node 1: the machine's).
func (l *layout) containerdRoot() string {
	if l.node.index <= 1 {
		return "/var/lib/containerd"
	}
	return filepath.Join(l.node.dir, "containerd")
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
	for _, c := range ctrs {
		_ = rs.StopContainer(ctx, c.Id, 0)
		if err := rs.RemoveContainer(ctx, c.Id); err != nil {
			fmt.Printf("warning: remove container %s: %v\n", c.Id, err)
		}
	}
	sandboxes, err := rs.ListPodSandbox(ctx, nil)
	if err != nil {
		return err
	}
	for _, s := range sandboxes {
		if err := rs.StopPodSandbox(ctx, s.Id); err != nil {
			fmt.Printf("warning: stop sandbox %s: %v\n", s.Id, err)
		}
		if err := rs.RemovePodSandbox(ctx, s.Id); err != nil {
			fmt.Printf("warning: remove sandbox %s: %v\n", s.Id, err)
		}
	}
	if n := len(ctrs) + len(sandboxes); n > 0 {
		fmt.Printf("removed %d containers and %d pod sandboxes from containerd\n", len(ctrs), len(sandboxes))
	}
	return nil
}
