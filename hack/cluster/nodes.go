package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// run runs a command and names it in the error.
func run(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ensureHostBridge gives the machine the bridge every node IP lives on, with
// node 1's address (the machine's own) on it. Nothing on it leaves the machine.
func ensureHostBridge() error {
	out, _ := exec.Command("ip", "-d", "link", "show", hostBridge).CombinedOutput()
	if len(out) > 0 && !strings.Contains(string(out), "bridge ") {
		_ = run("ip", "link", "del", hostBridge) // an older cluster's dummy link
		out = nil
	}
	if !strings.Contains(string(out), hostBridge) {
		if err := run("ip", "link", "add", hostBridge, "type", "bridge"); err != nil {
			return err
		}
	}
	addrs, _ := exec.Command("ip", "-4", "addr", "show", "dev", hostBridge).Output()
	if !strings.Contains(string(addrs), " "+hostIP+"/24") {
		_ = run("ip", "addr", "flush", "dev", hostBridge)
		if err := run("ip", "addr", "add", hostIP+"/24", "dev", hostBridge); err != nil {
			return err
		}
	}
	for _, kv := range [][2]string{{"net/ipv4/ip_forward", "1"}, {"net/bridge/bridge-nf-call-iptables", "1"}} {
		if err := os.WriteFile(filepath.Join("/proc/sys", kv[0]), []byte(kv[1]), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", kv[0], err)
		}
	}
	return run("ip", "link", "set", hostBridge, "up")
}

// inNode runs a command in the node's network namespace (at once on node 1).
func (l *layout) inNode(name string, args ...string) error {
	if l.node.netns == "" {
		return run(name, args...)
	}
	return run("ip", append([]string{"netns", "exec", l.node.netns, name}, args...)...)
}

// ensureNodeNetwork makes node i's network namespace: a veth on the host
// bridge with the node IP, a default route through the machine, forwarding
// and bridged traffic through iptables (kube-proxy needs both).
func (l *layout) ensureNodeNetwork() error {
	if l.node.netns == "" {
		return nil
	}
	ns, hostEnd := l.node.netns, "bn"+strings.TrimPrefix(l.suffix(), "-n")
	if err := run("ip", "netns", "add", ns); err != nil && !strings.Contains(err.Error(), "File exists") {
		return err
	}
	_ = run("ip", "link", "del", hostEnd)
	steps := [][]string{
		{"ip", "link", "add", hostEnd, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "link", "set", hostEnd, "master", hostBridge, "up"},
		// A packet from a node to an address behind its own port comes back out
		// of that port (a NodePort of another node whose backend is here).
		{"ip", "link", "set", hostEnd, "type", "bridge_slave", "hairpin", "on"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "addr", "add", l.node.ip + "/24", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "route", "add", "default", "via", hostIP},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"} {
		if err := l.inNode("sysctl", "-q", "-w", kv); err != nil {
			return err
		}
	}
	return nil
}

// removeNodeNetwork deletes node i's namespace and its end of the bridge.
func removeNodeNetwork(ns string) {
	_ = run("ip", "link", "del", "bn"+strings.TrimPrefix(ns, "bosun-n"))
	_ = run("ip", "netns", "del", ns)
}

// ensureCgroupRoot makes the node's cgroupRoot in every hierarchy, as an
// operator does before starting a kubelet with --cgroup-root.
func (l *layout) ensureCgroupRoot() error {
	root := l.cgroupRoot()
	if root == "" {
		return nil
	}
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup root %s: %w", dir, err)
		}
		if filepath.Base(h) == "cpuset" { // a v1 cpuset takes no task until it has cpus and mems
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if v, err := os.ReadFile(filepath.Join(h, f)); err == nil {
					_ = os.WriteFile(filepath.Join(dir, f), v, 0o644)
				}
			}
		}
	}
	return nil
}

// cgroupHierarchies are the machine's cgroup trees: the one tree on cgroup
// v2, every mounted hierarchy on v1.
func cgroupHierarchies() []string {
	if fileExists("/sys/fs/cgroup/cgroup.controllers") {
		return []string{"/sys/fs/cgroup"}
	}
	var out []string
	all, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range all {
		if st, err := os.Stat(h); err == nil && st.IsDir() {
			out = append(out, h)
		}
	}
	return out
}

// removeCgroupTree removes cgroup name and everything below it in every
// hierarchy, deepest first (the pods in it are gone by then). It says which
// cgroups it could not remove.
func removeCgroupTree(name string) error {
	var errs []error
	for _, h := range cgroupHierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, name), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTreeSoon retries removeCgroupTree for up to timeout: a
// container the runtime has just killed leaves its cgroup busy until its
// last process is reaped.
func removeCgroupTreeSoon(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := removeCgroupTree(name)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ensureNodeMachine readies what the node's agent runs on: its network
// namespace, cgroup root and containerd, with no pods left from before.
func (l *layout) ensureNodeMachine(ctx context.Context) error {
	if err := l.ensureNodeNetwork(); err != nil {
		return err
	}
	if err := l.ensureCgroupRoot(); err != nil {
		return err
	}
	if err := l.ensureContainerd(ctx); err != nil {
		return fmt.Errorf("%w\n%s", err, tailFile(l.logFile("containerd"), 20))
	}
	if err := l.removeAllPods(ctx); err != nil {
		return err
	}
	// The node's network comes with its pod CIDR (ensurePodNetwork).
	if err := os.Remove(filepath.Join(l.cniConfDir(), cniConfFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ensurePodNetwork waits for the controller-manager to give the node its pod
// CIDR, then writes the node's CNI config for it and routes the CIDR to the
// node over the host bridge.
func (l *layout) ensurePodNetwork(ctx context.Context, cs kubernetes.Interface) error {
	var cidr string
	err := waitFor(ctx, 90*time.Second, "node "+l.nodeName+"'s pod CIDR", func() error {
		if l.daemonPid("agent") == 0 {
			return fmt.Errorf("the node agent exited")
		}
		node, err := cs.CoreV1().Nodes().Get(ctx, l.nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cidr = node.Spec.PodCIDR; cidr == "" {
			return fmt.Errorf("node has no spec.podCIDR yet")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w\nlast lines of %s:\n%s", err, l.logFile("agent"), tailFile(l.logFile("agent"), 30))
	}
	if err := l.writeCNIConfig(cidr); err != nil {
		return err
	}
	if l.node.netns != "" {
		return run("ip", "route", "replace", cidr, "via", l.node.ip, "dev", hostBridge)
	}
	return nil
}

// kubeProxyConfig is kube-proxy's configuration: iptables mode on the seed's
// service CIDR, leaving the machine-wide conntrack settings alone.
const kubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: "{{KUBECONFIG}}"
mode: iptables
clusterCIDR: "` + clusterCIDR + `"
hostnameOverride: "{{NODE}}"
bindAddress: "{{NODE_IP}}"
healthzBindAddress: "{{NODE_IP}}:10256"
metricsBindAddress: "127.0.0.1:10249"
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`

func (l *layout) kubeProxyKubeconfig() string {
	return filepath.Join(l.node.dir, "kube-proxy.kubeconfig")
}

// ensureKubeProxy runs the node's kube-proxy (system:kube-proxy, bound to
// system:node-proxier by the default RBAC) unless it runs already.
func (l *layout) ensureKubeProxy(ctx context.Context) error {
	if l.daemonPid("kube-proxy") != 0 {
		return nil
	}
	pk := func(n string) string { return filepath.Join(l.pki, n) }
	if err := l.writeKubeconfig(l.kubeProxyKubeconfig(), "system:kube-proxy", pk("kube-proxy.pem"), pk("kube-proxy-key.pem"), ""); err != nil {
		return err
	}
	cfg := strings.NewReplacer("{{KUBECONFIG}}", l.kubeProxyKubeconfig(), "{{NODE}}", l.nodeName, "{{NODE_IP}}", l.node.ip).Replace(kubeProxyConfig)
	file := filepath.Join(l.node.dir, "kube-proxy.yaml")
	if err := writeFileAtomic(file, []byte(cfg), 0o644); err != nil {
		return err
	}
	if _, err := l.startDaemon("kube-proxy", l.binary("kube-proxy"), "--config="+file, "--v=1"); err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, "kube-proxy of "+l.nodeName, func() error {
		if l.daemonPid("kube-proxy") == 0 {
			return fmt.Errorf("kube-proxy exited:\n%s", tailFile(l.logFile("kube-proxy"), 15))
		}
		return l.nodeHTTPOK("http://" + l.node.ip + ":10256/healthz")
	})
}

// cleanKubeProxyRules removes the machine's kube-proxy chains (a node's
// namespace takes its own with it).
func (l *layout) cleanKubeProxyRules() {
	if fileExists(l.binary("kube-proxy")) {
		_ = exec.Command(l.binary("kube-proxy"), "--cleanup").Run()
	}
	// The upstream kubelet's own chains on node 1: its firewall against
	// outside traffic to localhost, and its canaries.
	for _, hook := range []string{"INPUT", "OUTPUT"} {
		for exec.Command("iptables", "-t", "filter", "-D", hook, "-j", "KUBE-FIREWALL").Run() == nil {
		}
	}
	// Both agents make them for IPv4 and IPv6 (Bosun's internal/iptables).
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, c := range [][2]string{{"filter", "KUBE-FIREWALL"}, {"filter", "KUBE-KUBELET-CANARY"}, {"nat", "KUBE-KUBELET-CANARY"}, {"mangle", "KUBE-KUBELET-CANARY"}, {"mangle", "KUBE-IPTABLES-HINT"}} {
			if exec.Command(bin, "-t", c[0], "-F", c[1]).Run() == nil {
				_ = exec.Command(bin, "-t", c[0], "-X", c[1]).Run()
			}
		}
	}
}

// nodeNamespaces lists the node namespaces on the machine (bosun-n<i>),
// whoever made them.
func nodeNamespaces() []string {
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "bosun-n") {
			out = append(out, e.Name())
		}
	}
	return out
}
