// Package stats reports what the node and its containers use: the Summary
// API (/stats/summary), the resource metrics (/metrics/resource) and
// cAdvisor-compatible metrics (/metrics/cadvisor), from CRI container stats,
// the pod sandboxes' network counters and the machine's /proc and statfs.
package stats

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Provider collects stats on demand.
type Provider struct {
	Runtime  internalapi.RuntimeService      // CRI runtime
	Images   internalapi.ImageManagerService // CRI image service (image fs)
	NodeName string
	RootDir  string // --root-dir: the node fs
	LogDir   string // podLogsDir
	// PodVolumes is each running pod's volume statistics by pod UID (nil:
	// none are reported).
	PodVolumes func() map[string][]statsapi.VolumeStats
	mu         sync.Mutex
	prevCPU    map[string]cpuSample // id ("" for the node) -> last cumulative reading
	pids       map[string]int       // sandbox ID -> pid of its first process
}

type cpuSample struct {
	at    time.Time
	nanos uint64
}

// containerSnap is one running container's figures.
type containerSnap struct {
	id, name, image, podUID, podName, namespace, sandboxID string
	started                                                time.Time
	cpuNanos, cpuNanoCores                                 uint64
	hasNanoCores                                           bool
	memWorking, memUsage, memRSS, memAvailable             uint64
	rootfsUsed, rootfsInodes, logsUsed                     uint64
}

// netSnap is one pod's network counters (eth0, as upstream reports).
type netSnap struct {
	iface                                string
	rxBytes, rxErrors, txBytes, txErrors uint64
}

// snapshot is everything one request reports, read at one time.
type snapshot struct {
	at         time.Time
	containers []containerSnap
	podNet     map[string]netSnap // pod UID -> network
	sandboxes  map[string]*runtimeapi.PodSandbox
	node       nodeSnap
}

type nodeSnap struct {
	bootTime                                         time.Time
	cpuNanos, cpuNanoCores                           uint64
	memTotal, memFree, memAvailable, memInactiveFile uint64
	fsCapacity, fsAvailable, fsInodes, fsInodesFree  uint64
	imageFsUsed, imageFsInodes                       uint64
	net                                              []netSnap
}

func (p *Provider) collect(ctx context.Context) (*snapshot, error) {
	s := &snapshot{at: time.Now(), podNet: map[string]netSnap{}, sandboxes: map[string]*runtimeapi.PodSandbox{}}
	ctrs, err := p.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		return nil, fmt.Errorf("failed to list containers: %w", err)
	}
	stats, err := p.Runtime.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{})
	if err != nil {
		return nil, fmt.Errorf("failed to list container stats: %w", err)
	}
	byID := map[string]*runtimeapi.ContainerStats{}
	for _, st := range stats {
		byID[st.GetAttributes().GetId()] = st
	}
	sandboxes, err := p.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
	if err != nil {
		return nil, fmt.Errorf("failed to list sandboxes: %w", err)
	}
	for _, sb := range sandboxes {
		s.sandboxes[sb.Id] = sb
		if n, ok := p.sandboxNet(ctx, sb.Id); ok {
			s.podNet[sb.Metadata.GetUid()] = n
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prevCPU == nil {
		p.prevCPU = map[string]cpuSample{}
	}
	for _, c := range ctrs {
		s.containers = append(s.containers, p.containerSnap(c, byID[c.Id], s.sandboxes[c.PodSandboxId], s.at))
	}
	s.node = p.nodeSnap(ctx, s.at)
	return s, nil
}

func (p *Provider) containerSnap(c *runtimeapi.Container, st *runtimeapi.ContainerStats, sb *runtimeapi.PodSandbox, now time.Time) containerSnap {
	cs := containerSnap{
		id: c.Id, name: c.Metadata.GetName(), image: c.Image.GetImage(), sandboxID: c.PodSandboxId,
		podUID: c.Labels["io.kubernetes.pod.uid"], podName: c.Labels["io.kubernetes.pod.name"], namespace: c.Labels["io.kubernetes.pod.namespace"],
		started: time.Unix(0, c.CreatedAt),
	}
	if st != nil {
		cs.cpuNanos = st.GetCpu().GetUsageCoreNanoSeconds().GetValue()
		cs.cpuNanoCores, cs.hasNanoCores = p.rate(c.Id, cs.cpuNanos, now)
		m := st.GetMemory()
		cs.memWorking, cs.memUsage, cs.memRSS, cs.memAvailable = m.GetWorkingSetBytes().GetValue(), m.GetUsageBytes().GetValue(),
			m.GetRssBytes().GetValue(), m.GetAvailableBytes().GetValue()
		if cs.memUsage == 0 {
			cs.memUsage = cs.memWorking
		}
		cs.rootfsUsed, cs.rootfsInodes = st.GetWritableLayer().GetUsedBytes().GetValue(), st.GetWritableLayer().GetInodesUsed().GetValue()
	}
	if sb != nil {
		dir := filepath.Join(p.LogDir, fmt.Sprintf("%s_%s_%s", sb.Metadata.GetNamespace(), sb.Metadata.GetName(), sb.Metadata.GetUid()), cs.name)
		cs.logsUsed = dirSize(dir)
	}
	return cs
}

// rate turns cumulative CPU nanoseconds into nano-cores since the last read.
func (p *Provider) rate(id string, nanos uint64, now time.Time) (uint64, bool) {
	prev, ok := p.prevCPU[id]
	p.prevCPU[id] = cpuSample{at: now, nanos: nanos}
	if !ok || nanos < prev.nanos || !now.After(prev.at) {
		return 0, false
	}
	return uint64(float64(nanos-prev.nanos) / now.Sub(prev.at).Seconds()), true
}

func dirSize(dir string) uint64 {
	var total uint64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			total += uint64(info.Size())
		}
	}
	return total
}

// sandboxNet reads eth0 of the sandbox's network namespace through its
// first process.
func (p *Provider) sandboxNet(ctx context.Context, id string) (netSnap, bool) {
	p.mu.Lock()
	pid, ok := p.pids[id]
	p.mu.Unlock()
	if !ok {
		st, err := p.Runtime.PodSandboxStatus(ctx, id, true)
		if err != nil {
			return netSnap{}, false
		}
		var info struct {
			Pid int `json:"pid"`
		}
		_ = json.Unmarshal([]byte(st.GetInfo()["info"]), &info)
		pid = info.Pid
		p.mu.Lock()
		if p.pids == nil {
			p.pids = map[string]int{}
		}
		p.pids[id] = pid
		p.mu.Unlock()
	}
	if pid <= 0 {
		return netSnap{}, false
	}
	for _, n := range readNetDev(fmt.Sprintf("/proc/%d/net/dev", pid)) {
		if n.iface == "eth0" {
			return n, true
		}
	}
	return netSnap{}, false
}

// readNetDev parses /proc/net/dev.
func readNetDev(path string) []netSnap {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []netSnap
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			continue
		}
		u := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		out = append(out, netSnap{iface: strings.TrimSpace(name), rxBytes: u(0), rxErrors: u(2), txBytes: u(8), txErrors: u(10)})
	}
	return out
}

func (p *Provider) nodeSnap(ctx context.Context, now time.Time) nodeSnap {
	n := nodeSnap{}
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) > 8 && f[0] == "cpu":
				var busy uint64
				for i, v := range f[1:9] {
					if i == 3 || i == 4 { // idle, iowait
						continue
					}
					x, _ := strconv.ParseUint(v, 10, 64)
					busy += x
				}
				n.cpuNanos = busy * 10_000_000 // USER_HZ is 100
			case len(f) == 2 && f[0] == "btime":
				sec, _ := strconv.ParseInt(f[1], 10, 64)
				n.bootTime = time.Unix(sec, 0)
			}
		}
	}
	n.cpuNanoCores, _ = p.rate("", n.cpuNanos, now)
	mem := map[string]uint64{}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				v, _ := strconv.ParseUint(f[1], 10, 64)
				mem[strings.TrimSuffix(f[0], ":")] = v * 1024
			}
		}
	}
	n.memTotal, n.memFree, n.memAvailable, n.memInactiveFile = mem["MemTotal"], mem["MemFree"], mem["MemAvailable"], mem["Inactive(file)"]
	var st unix.Statfs_t
	if unix.Statfs(p.RootDir, &st) == nil {
		n.fsCapacity, n.fsAvailable = st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize)
		n.fsInodes, n.fsInodesFree = st.Files, st.Ffree
	}
	if p.Images != nil {
		if fs, err := p.Images.ImageFsInfo(ctx); err == nil {
			for _, u := range fs.GetImageFilesystems() {
				n.imageFsUsed += u.GetUsedBytes().GetValue()
				n.imageFsInodes += u.GetInodesUsed().GetValue()
			}
		}
	}
	for _, ns := range readNetDev("/proc/net/dev") {
		if ns.iface != "lo" {
			n.net = append(n.net, ns)
		}
	}
	return n
}
