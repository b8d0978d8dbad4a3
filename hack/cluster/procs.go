package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startDaemon starts bin with args in its own session, its output appended to
// the log file, and records its pid. It returns at once.
func (l *layout) startDaemon(name, bin string, args ...string) (int, error) {
	for _, d := range []string{l.logs, l.run} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 0, err
		}
	}
	logf, err := os.OpenFile(l.logFile(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	if nodeScoped[name] && l.node.netns != "" {
		// Only the network namespace: the node shares the machine's mounts,
		// as a kubelet and its runtime must.
		args = append([]string{"--net=/run/netns/" + l.node.netns, "--", bin}, args...)
		bin = "nsenter"
	}
	fmt.Fprintf(logf, "==== %s starting: %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Stdin = nil
	cmd.Env = l.daemonEnv()
	cmd.Dir = l.root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("failed to start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	if err := os.WriteFile(l.pidFile(name), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return pid, err
	}
	return pid, nil
}

// daemonPid returns the live pid recorded for name, or 0.
func (l *layout) daemonPid(name string) int {
	data, err := os.ReadFile(l.pidFile(name))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 || !processAlive(pid) {
		return 0
	}
	return pid
}

// stopDaemon stops the process recorded in name's pid file and removes the file.
func (l *layout) stopDaemon(name string, grace time.Duration) {
	if pid := l.daemonPid(name); pid > 0 {
		stopPid(pid, grace)
	}
	_ = os.Remove(l.pidFile(name))
}

// processAlive reports whether pid runs and is not a zombie.
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// stopPid sends SIGTERM, waits up to grace, then SIGKILL.
func stopPid(pid int, grace time.Duration) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !processAlive(pid) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 50 && processAlive(pid); i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

// proc is one process seen in /proc.
type proc struct {
	pid     int
	exe     string   // resolved executable path ("" when unreadable)
	cmdline []string // argv
}

// listProcs returns every process on the machine.
func listProcs() []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		raw, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		out = append(out, proc{pid: pid, exe: strings.TrimSuffix(exe, " (deleted)"), cmdline: args})
	}
	return out
}

// clusterBinaries are the programs a local cluster runs from some _output/bin.
var clusterBinaries = map[string]bool{
	"etcd": true, "kube-apiserver": true, "kube-controller-manager": true,
	"kube-scheduler": true, "kubelet": true, "bosun": true, "kube-proxy": true,
	"csi-hostpath": true, // make conformance SUITE=storage's test CSI driver
}

// strayClusterProcs finds cluster processes started from any clone's
// _output/bin: what an earlier, killed session or another work tree left.
func strayClusterProcs() []proc {
	var out []proc
	for _, p := range listProcs() {
		if filepath.Base(p.exe) == "docker-registry" && strings.Contains(strings.Join(p.cmdline, " "), "/_output/local/registry/") {
			out = append(out, p) // a local registry of some clone
			continue
		}
		if filepath.Base(p.exe) == "deviceplugin" && slices.Contains(p.cmdline, "/var/lib/kubelet/device-plugins") {
			out = append(out, p) // the e2e test's device plugin (hack/deviceplugin), left by a killed run
			continue
		}
		if p.exe == "" || !strings.Contains(p.exe, "/_output/bin/") {
			continue
		}
		if clusterBinaries[filepath.Base(p.exe)] {
			out = append(out, p)
		}
	}
	return out
}

// containerdProcs finds running containerd daemons (not shims).
func containerdProcs() []proc {
	var out []proc
	for _, p := range listProcs() {
		if filepath.Base(p.exe) == "containerd" {
			out = append(out, p)
		}
	}
	return out
}

// strayShims finds containerd shims whose containerd is gone (its socket
// answers no more): what a killed or stopped containerd left running.
func strayShims() []proc {
	var out []proc
	for _, p := range listProcs() {
		if !strings.HasPrefix(filepath.Base(p.exe), "containerd-shim") {
			continue
		}
		for i, a := range p.cmdline {
			if a == "-address" && i+1 < len(p.cmdline) {
				if c, err := net.DialTimeout("unix", p.cmdline[i+1], time.Second); err == nil {
					c.Close()
				} else {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// killTree kills pid and every process below it, children first.
func killTree(pid int) {
	children := map[int][]int{}
	for _, p := range listProcs() {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
		if err != nil {
			continue
		}
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
			if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
				if ppid, err := strconv.Atoi(f[1]); err == nil {
					children[ppid] = append(children[ppid], p.pid)
				}
			}
		}
	}
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			walk(c)
		}
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	walk(pid)
}
