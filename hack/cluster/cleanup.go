package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bosun-dev/bosun/internal/mounts"
)

// controlPlaneOrder is the stop order: the agent first, etcd last.
var controlPlaneOrder = []string{"agent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"}

// teardown stops everything a cluster (this one, or one an earlier session or
// another clone left behind) runs, and removes its state. With keepContainerd,
// node 1's containerd stays up for the next start.
func (l *layout) teardown(ctx context.Context, keepContainerd bool) error {
	nodes := l.teardownNodes()
	for _, n := range nodes {
		n.stopDaemon("kube-proxy", 10*time.Second)
		n.stopDaemon("agent", 30*time.Second)
	}
	for _, p := range strayClusterProcs() {
		if name := filepath.Base(p.exe); name == "kubelet" || name == "bosun" || name == "kube-proxy" {
			fmt.Printf("stopping a stray node process (pid %d: %s)\n", p.pid, p.exe)
			stopPid(p.pid, 10*time.Second)
		}
	}
	cleanGuideLeftovers()
	l.cleanKubeProxyRules()
	for _, n := range nodes {
		// Pods go while containerd can still run CNI DEL for them. When its
		// containerd is gone (killed), node 1's CNI config stays for the next
		// start's containerd to tear the old pods' networks down with.
		podsGone := n.node.index > 1
		if _, err := n.criRuntime(ctx); err == nil {
			if err := n.removeAllPods(ctx); err != nil {
				fmt.Printf("warning: removing pods of %s: %v\n", n.nodeName, err)
			} else {
				podsGone = true
			}
		}
		if n.node.index > 1 || !keepContainerd || n.runtime != l.runtime {
			n.stopDaemon("containerd", 20*time.Second)
			if n.containerdSock() != containerdSock { // Debian's keeps its own state folder
				unmountUnder(n.containerdState())
				_ = os.RemoveAll(n.containerdState())
			}
			// make down removes node 1's containerd 2 root (images, snapshots)
			// too; make up keeps it for the next start.
			if n.node.index == 1 && n.runtime == containerd2 && !keepContainerd {
				unmountUnder(n.containerdRoot())
				if err := os.RemoveAll(n.containerdRoot()); err != nil {
					fmt.Printf("warning: %v\n", err)
				}
			}
		}
		if podsGone || !keepContainerd {
			_ = os.Remove(filepath.Join(n.cniConfDir(), cniConfFile))
		}
		if root := n.cgroupRoot(); root != "" {
			if err := removeCgroupTreeSoon(root, 15*time.Second); err != nil {
				fmt.Printf("warning: removing the cgroups of %s: %v\n", n.nodeName, err)
			}
		}
		_ = os.RemoveAll(n.podLogsDir())
	}
	// Pod cgroups (the cgroupfs driver's kubepods tree) go with the pods.
	// Node cgroup roots of nodes no record names any more.
	roots := map[string]bool{}
	for _, h := range cgroupHierarchies() {
		found, _ := filepath.Glob(filepath.Join(h, "bosun-n*"))
		for _, f := range found {
			roots["/"+filepath.Base(f)] = true
		}
	}
	for root := range roots {
		if err := removeCgroupTreeSoon(root, 15*time.Second); err != nil {
			fmt.Printf("warning: removing cgroup %s: %v\n", root, err)
		}
	}
	if err := removeCgroupTreeSoon("/kubepods", 15*time.Second); err != nil {
		fmt.Printf("warning: removing pod cgroups: %v\n", err)
	}
	for _, name := range controlPlaneOrder[1:] {
		l.stopDaemon(name, 15*time.Second)
	}
	for _, p := range strayClusterProcs() {
		fmt.Printf("stopping a stray cluster process (pid %d: %s)\n", p.pid, p.exe)
		stopPid(p.pid, 10*time.Second)
	}
	for _, p := range strayShims() {
		fmt.Printf("stopping a containerd shim whose containerd is gone, and its containers (pid %d: %s)\n", p.pid, strings.Join(p.cmdline, " "))
		bundle, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", p.pid)) // the task's bundle: its rootfs mount
		killTree(p.pid)
		if strings.Contains(bundle, "io.containerd.runtime.v2.task") {
			unmountUnder(bundle)
		}
	}
	for _, ns := range nodeNamespaces() {
		removeNodeNetwork(ns)
	}
	// The pod CIDR routes to other nodes: the next cluster may give node 1 one
	// of those CIDRs, and a route left for it would win over node 1's bridge.
	if err := exec.Command("ip", "link", "show", hostBridge).Run(); err == nil {
		_ = run("ip", "route", "flush", "dev", hostBridge, "proto", "boot")
	}
	if !keepContainerd {
		l.stopDaemon("registry-mirror", 5*time.Second)
		l.stopDaemon("registry-private", 5*time.Second)
	}
	detachLoopsUnder(nodeDir)
	removeMountedDir(nodeDir)
	cleanCNIState()
	for _, d := range []string{l.etcdData, "/var/log/pods", "/var/log/containers"} {
		if err := os.RemoveAll(d); err != nil {
			fmt.Printf("warning: remove %s: %v\n", d, err)
		}
	}
	cleanDevicePluginDir()
	for _, n := range nodes {
		_ = os.Remove(filepath.Join(l.out, "bootstrap-token"+n.suffix()))
	}
	_ = os.Remove(filepath.Join(l.run, "nodes"))
	_ = os.Remove(filepath.Join(l.run, "runtime"))
	_ = os.Remove(filepath.Join(l.run, "profile"))
	_ = os.Remove(l.envFile())
	if !keepContainerd {
		_ = exec.Command("ip", "link", "del", hostBridge).Run()
	}
	return nil
}

// teardownNodes are the nodes to clean: those of the recorded cluster, of
// NODES, and any whose namespace or files are still on the machine.
func (l *layout) teardownNodes() []*layout {
	n := max(l.nodes, l.recordedNodes())
	for _, ns := range nodeNamespaces() {
		if i, err := strconv.Atoi(strings.TrimPrefix(ns, "bosun-n")); err == nil && i <= maxNodes {
			n = max(n, i)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(nodeDir, "nodes", "n*"))
	for _, d := range dirs {
		if i, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "n")); err == nil && i <= maxNodes {
			n = max(n, i)
		}
	}
	// The nodes run the runtime the cluster was started with.
	was := *l
	if r := l.recordedRuntime(); r != "" {
		was.runtime = r
	}
	out := make([]*layout, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, was.on(i))
	}
	return out
}

// removeMountedDir unmounts what is mounted under dir and removes it. A
// mount can still be there after the first pass (a session's end once left
// pod volume mounts that a second make down removed): it tries again for up
// to 10 s before giving up with a warning.
func removeMountedDir(dir string) {
	var err error
	for try := 0; try < 10; try++ {
		unmountUnder(dir)
		if err = os.RemoveAll(dir); err == nil {
			return
		}
		time.Sleep(time.Second)
	}
	fmt.Printf("warning: remove %s: %v (still mounted: %v)\n", dir, err, mounts.Under(dir))
}

// unmountUnder lazily unmounts every mount at or below dir, deepest first.
func unmountUnder(dir string) {
	for _, m := range mounts.Under(dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			fmt.Printf("warning: unmount %s: %v\n", m, err)
		}
	}
}

// cleanCNIState removes what CNI plugins keep for pods that no longer exist:
// host-local IP allocations, cached results, pod network namespaces and node
// 1's pod bridge. It is called once every sandbox is gone, so everything there
// is stale. The bridge keeps the gateway address of the CIDR node 1 had: the
// plugin refuses to reuse it for another one ("already has an IP address
// different from ..."), and the next cluster may give node 1 another CIDR.
func cleanCNIState() {
	if err := exec.Command("ip", "link", "show", cniBridge).Run(); err == nil {
		if err := run("ip", "link", "del", cniBridge); err != nil {
			fmt.Printf("warning: %v\n", err)
		}
	}
	nets, _ := filepath.Glob(filepath.Join("/var/lib/cni/networks", cniNetwork+"*"))
	for _, d := range append(nets, "/var/lib/cni/results") {
		_ = os.RemoveAll(d)
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "cni-") {
			p := filepath.Join("/run/netns", e.Name())
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
			_ = os.Remove(p)
		}
	}
}

func (l *layout) envFile() string { return filepath.Join(l.out, "env") }

// writeEnv writes _output/local/env, a file to source.
// It describes node 1 (the machine), with the names of all nodes.
func (l *layout) writeEnv() error {
	l = l.on(1)
	if a := l.runningAgent(); a != "" {
		l.agent = a
	}
	pk := func(n string) string { return filepath.Join(l.pki, n) }
	vars := [][2]string{
		{"KUBELET", l.agent},
		{"KUBECONFIG", l.adminKubeconfig()},
		{"KUBECTL", l.binary("kubectl")},
		{"NODE_NAME", l.nodeName},
		{"NODE_IP", l.node.ip},
		{"NODES", strconv.Itoa(l.nodes)},
		{"RUNTIME", l.runtime},
		{"CTR", l.runtimeBinary("ctr")},
		{"NODE_NAMES", strings.Join(l.nodeNames(), " ")},
		{"NODE_AGENTS", strings.Join(l.nodeAgents(), " ")},
		{"CERT_DIR", l.certDir()},
		{"ROOT_DIR", l.rootDir()},
		{"CONFIG_FILE", l.configFile()},
		{"STATIC_POD_PATH", l.staticPodPath()},
		{"BOOTSTRAP_KUBECONFIG", l.bootstrapKubeconfig()},
		{"NODE_KUBECONFIG", l.nodeKubeconfig()},
		{"CA_CERT", pk("ca.pem")},
		{"CA_KEY", pk("ca-key.pem")},
		{"ADMIN_CERT", pk("admin.pem")},
		{"ADMIN_KEY", pk("admin-key.pem")},
		{"KCM_CERT", pk("kube-controller-manager.pem")},
		{"KCM_KEY", pk("kube-controller-manager-key.pem")},
		{"APISERVER_CERT", pk("kubernetes.pem")},
		{"APISERVER_KEY", pk("kubernetes-key.pem")},
		{"AGENT_LOG", l.logFile("agent")},
		{"AGENT_PID", l.pidFile("agent")},
		{"AGENT_BIN", l.agentBinary()},
		{"BOSUN_BIN", l.binary("bosun")},
		{"APISERVER_URL", l.apiServer()},
		{"AGENT_ARGS", strings.Join(l.agentArgs(), " ")},
		{"LOG_DIR", l.logs},
		{"CRI_ENDPOINT", "unix://" + l.containerdSock()},
		{"CLUSTER_SIGNING_DURATION", envOr("CLUSTER_SIGNING_DURATION", "8760h")},
		{"REGISTRY_MIRROR", mirrorAddr},
		{"PRIVATE_REGISTRY", privateAddr},
		{"PRIVATE_REGISTRY_USER", privateUser},
		{"PRIVATE_REGISTRY_PASSWORD_FILE", filepath.Join(l.registryDir("private"), "password")},
		{"PRIVATE_IMAGE", privateImage},
	}
	var b strings.Builder
	b.WriteString("# Written by make up: source it to use the local cluster.\n")
	for _, v := range vars {
		fmt.Fprintf(&b, "export %s=%q\n", v[0], v[1])
	}
	return writeFileAtomic(l.envFile(), []byte(b.String()), 0o644)
}

// devicePluginDir is where both agents serve device plugins, whatever their
// --root-dir (upstream's fixed path).
const devicePluginDir = "/var/lib/kubelet/device-plugins"

// cleanDevicePluginDir removes what the agents and the tests' plugins left
// there (sockets, the allocation checkpoint, upstream's DEPRECATION note),
// and the folders once empty.
func cleanDevicePluginDir() {
	entries, err := os.ReadDir(devicePluginDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 || e.Name() == "kubelet_internal_checkpoint" || e.Name() == "DEPRECATION" {
			_ = os.Remove(filepath.Join(devicePluginDir, e.Name()))
		}
	}
	// make conformance SUITE=storage links /var/lib/kubelet/pods to the
	// node's pods for the run; a killed run leaves the link.
	pods := filepath.Join(filepath.Dir(devicePluginDir), "pods")
	if target, err := os.Readlink(pods); err == nil && strings.HasPrefix(target, nodeDir+"/") {
		_ = os.Remove(pods)
	}
	_ = os.Remove(devicePluginDir)               // only when empty
	_ = os.Remove(filepath.Dir(devicePluginDir)) // likewise
}

// guideMarker is e2e TestGuide's folder: while it is there, the seed's paths
// below are the test's (it refuses to run over an operator's).
const guideMarker = nodeDir + "/guide-e2e"

// cleanGuideLeftovers removes what a killed TestGuide left on the machine:
// its agent, the seed's files it wrote, the package it installed.
func cleanGuideLeftovers() {
	if !fileExists(guideMarker) {
		return
	}
	fmt.Println("removing what the guide test left (its agent, /etc/kubernetes, /opt/k8s, the bosun package)")
	if data, err := os.ReadFile(filepath.Join(guideMarker, "agent.pid")); err == nil {
		// Only the guide's agent: the pid may be another process's since.
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && pid > 0 && strings.HasPrefix(exe, "/usr/bin/bosun") {
			stopPid(pid, 10*time.Second)
		}
	}
	for _, p := range []string{"/etc/kubernetes", "/opt/k8s", "/etc/systemd/system/bosun.service"} {
		_ = os.RemoveAll(p)
	}
	_ = exec.Command("dpkg", "--purge", "bosun").Run()
	if fileExists(filepath.Join(guideMarker, "made-run-systemd")) {
		_ = os.Remove("/run/systemd/system")
		_ = os.Remove("/run/systemd")
	}
	_ = os.RemoveAll(guideMarker)
}

// detachLoopsUnder detaches the loop devices over files under dir: the raw
// block volumes of the test CSI driver (make conformance SUITE=storage) that a
// killed run left attached.
func detachLoopsUnder(dir string) {
	out, err := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.HasPrefix(f[1], dir+"/") {
			fmt.Printf("detaching %s (over %s)\n", f[0], f[1])
			_ = exec.Command("losetup", "-d", f[0]).Run()
		}
	}
}
