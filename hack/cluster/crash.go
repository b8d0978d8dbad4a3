package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// crash kills every process the cluster runs at once, with SIGKILL, and
// cleans nothing: the daemons, the shims and the containers below them. It
// leaves the machine as the end of a session does (stale pid files,
// containerd state, CNI state, mounts, iptables rules), for make up to start
// from.
func crash() int {
	killed := 0
	for _, p := range listProcs() {
		name := filepath.Base(p.exe)
		if strings.HasPrefix(name, "containerd-shim") {
			killTree(p.pid) // the shim and the containers it runs
			killed++
		}
	}
	for _, p := range append(strayClusterProcs(), containerdProcs()...) {
		if syscall.Kill(p.pid, syscall.SIGKILL) == nil {
			killed++
		}
	}
	return killed
}

// leftovers lists what a stopped cluster still has on the machine: its
// processes, links, network namespaces, iptables chains, mounts, folders and
// cgroups. After make down it is empty.
func (l *layout) leftovers() []string {
	var out []string
	for _, p := range append(append(strayClusterProcs(), containerdProcs()...), strayShims()...) {
		out = append(out, fmt.Sprintf("process %d: %s", p.pid, strings.Join(p.cmdline, " ")))
	}
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(links), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
		if name == hostBridge || name == cniBridge || (strings.HasPrefix(name, "bn") && len(name) <= 3) {
			out = append(out, "network link "+name)
		}
	}
	netns, _ := os.ReadDir("/run/netns")
	for _, e := range netns {
		if strings.HasPrefix(e.Name(), "bosun-n") || strings.HasPrefix(e.Name(), "cni-") {
			out = append(out, "network namespace "+e.Name())
		}
	}
	for _, table := range []string{"filter", "nat", "mangle"} {
		rules, _ := exec.Command("iptables", "-t", table, "-S").Output()
		for _, line := range strings.Split(string(rules), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "-N" && strings.HasPrefix(f[1], "KUBE-") {
				out = append(out, fmt.Sprintf("iptables chain %s in %s", f[1], table))
			}
		}
	}
	folders := []string{nodeDir, l.etcdData, "/var/log/pods", "/run/containerd2", "/var/lib/containerd2",
		filepath.Join(devicePluginDir, "kubelet.sock"), filepath.Join(devicePluginDir, "kubelet_internal_checkpoint")}
	for _, d := range folders {
		if fileExists(d) {
			out = append(out, "folder "+d)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && (strings.HasPrefix(f[1], nodeDir) || strings.HasPrefix(f[1], "/run/containerd2/")) {
			out = append(out, "mount "+f[1])
		}
	}
	for _, pattern := range []string{"/var/log/pods-n*", "/sys/fs/cgroup/kubepods", "/sys/fs/cgroup/*/kubepods", "/sys/fs/cgroup/bosun-n*", "/sys/fs/cgroup/*/bosun-n*"} {
		found, _ := filepath.Glob(pattern)
		for _, d := range found {
			out = append(out, "left "+d)
		}
	}
	return out
}
