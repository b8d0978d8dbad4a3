// Package stats reports what the node and its containers use: the Summary
// API (/stats/summary), the resource metrics (/metrics/resource) and
// cAdvisor-compatible metrics (/metrics/cadvisor), from CRI container stats,
// the pod sandboxes' network counters and the machine's /proc and statfs.
package stats

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bosun-dev/bosun/internal/cgroupstats"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
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
	// Cgroups reads the containers' cgroups for /metrics/cadvisor (nil:
	// only the runtime's figures are reported).
	Cgroups *cgroupstats.Reader
	// MaxAge lets a request be answered from the last collection while it is
	// younger than this and the running containers are the same (0: every
	// request collects). Run keeps that collection fresh.
	MaxAge time.Duration
	// ChangesFollowed says that the agent calls ContainersChanged at every
	// change of the running containers (its PLEG does): a request then
	// checks that count instead of listing the runtime's containers.
	ChangesFollowed bool
	changes         atomic.Uint64
	mu              sync.Mutex
	prevCPU         map[string]cpuSample // id ("" for the node) -> last cumulative reading
	procs           map[string]procInfo  // sandbox or container ID -> its first process
	last            *snapshot            // the last collection (MaxAge > 0)
	collMu          sync.Mutex           // one collection at a time
	// cadvisorPage and resourcePage are those pages rendered from the last
	// collection: every request answered from it shares one rendering.
	cadvisorPage, resourcePage page
	// reads are the cgroups' last reads (collMu), by cgroup path; period is
	// Run's (0: each collection reads every cgroup).
	reads  map[string]*cgroupRead
	period time.Duration
	// files counts the cgroups' processes' open files and sockets.
	files cgroupstats.FileCounts
	// cgroupOf, in tests, names the cgroup of a sandbox or container;
	// swapOn says whether the node has swap.
	cgroupOf func(id string) string
	swapOn   func() bool
}

// procInfo is what the runtime says of a sandbox's or container's process.
type procInfo struct {
	pid    int
	image  string // the sandbox's (pause) image
	cgroup string // its cgroup path ("" unknown)
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
	swap, swapAvailable                                    *uint64 // the runtime's, when it reports them
}

// netSnap is one pod's network counters (eth0, as upstream reports).
type netSnap struct {
	iface                                string
	rxBytes, rxErrors, txBytes, txErrors uint64
	rxPackets, rxDropped                 uint64
	txPackets, txDropped                 uint64
}

// snapshot is everything one request reports, read at one time.
type snapshot struct {
	at         time.Time
	changes    uint64 // Provider.changes when the collection began
	containers []containerSnap
	podNet     map[string]netSnap // pod UID -> network
	sandboxes  map[string]*runtimeapi.PodSandbox
	node       nodeSnap
	ids        []string     // the running containers' IDs, sorted
	cgroups    []cgroupSnap // /metrics/cadvisor's rows (Cgroups set)
	machine    machineSnap  // /metrics/cadvisor's machine_* figures
}

type nodeSnap struct {
	bootTime                                         time.Time
	cpuNanos, cpuNanoCores                           uint64
	memTotal, memFree, memAvailable, memInactiveFile uint64
	swapTotal, swapFree                              uint64
	fsCapacity, fsAvailable, fsInodes, fsInodesFree  uint64
	imageFsUsed, imageFsInodes                       uint64
	net                                              []netSnap
}

func (p *Provider) collect(ctx context.Context) (*snapshot, error) {
	s := &snapshot{at: time.Now(), changes: p.changes.Load(), podNet: map[string]netSnap{}, sandboxes: map[string]*runtimeapi.PodSandbox{}}
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
	if p.prevCPU == nil {
		p.prevCPU = map[string]cpuSample{}
	}
	for _, c := range ctrs {
		s.containers = append(s.containers, p.containerSnap(c, byID[c.Id], s.sandboxes[c.PodSandboxId], s.at))
		s.ids = append(s.ids, c.Id)
	}
	p.mu.Unlock()
	sort.Strings(s.ids)
	s.node = p.nodeSnap(ctx, s.at)
	if p.Cgroups != nil {
		swap := s.node.swapTotal > 0
		if p.swapOn != nil {
			swap = p.swapOn()
		}
		p.Cgroups.SetSwap(swap)
		p.collectCgroups(ctx, s, ctrs)
	}
	keep := map[string]bool{}
	for id := range s.sandboxes {
		keep[id] = true
	}
	for _, id := range s.ids {
		keep[id] = true
	}
	p.forget(keep)
	return s, nil
}

// page is a page rendered from one collection, kept gzip-compressed: the
// /metrics/cadvisor page of a hundred pods is megabytes of text and a tenth
// of that compressed, and the scrapers that ask for it (Prometheus, the
// apiserver's proxy) take gzip.
type page struct {
	mu   sync.Mutex
	from *snapshot
	gz   []byte
}

// GzipWriter is a response that takes a gzip-compressed body as it is (an
// HTTP response to a client that accepts gzip).
type GzipWriter interface {
	io.Writer
	WriteGzip(body []byte) error
}

// gzipWriters keeps the compressors between renderings. They are
// klauspost/compress's: at its fastest level it compresses a 100-pod
// /metrics/cadvisor page (3.5 MB) in about 40 % of the standard library's
// time, to the same format.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return zw
}}

// write writes the page of s, rendering it only when s is not the
// collection it was last rendered from. Requests that arrive while it
// renders wait for that rendering rather than making their own. A w that is
// a GzipWriter gets the compressed page; any other gets it decompressed.
func (pg *page) write(w io.Writer, s *snapshot, render func(*snapshot, io.Writer) error) error {
	pg.mu.Lock()
	if pg.from != s {
		var buf bytes.Buffer
		buf.Grow(len(pg.gz) + len(pg.gz)/8) // about the last page's size
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(&buf)
		err := render(s, zw)
		if err == nil {
			err = zw.Close()
		}
		gzipWriters.Put(zw)
		if err != nil {
			pg.mu.Unlock()
			return err
		}
		pg.from, pg.gz = s, buf.Bytes()
	}
	gz := pg.gz
	pg.mu.Unlock()
	if gw, ok := w.(GzipWriter); ok {
		return gw.WriteGzip(gz)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return err
	}
	_, err = io.Copy(w, zr)
	return err
}

// ContainersChanged says that a container or sandbox started, exited or
// went away: the next request collects anew (ChangesFollowed).
func (p *Provider) ContainersChanged() { p.changes.Add(1) }

// latest is a collection for one request: the last one while it is younger
// than MaxAge and the same containers run, else a new one.
func (p *Provider) latest(ctx context.Context) (*snapshot, error) {
	asked := time.Now()
	if p.MaxAge > 0 {
		p.mu.Lock()
		last := p.last
		p.mu.Unlock()
		if last != nil && asked.Sub(last.at) < p.MaxAge && p.sameContainers(ctx, last) {
			return last, nil
		}
	}
	return p.refresh(ctx, asked)
}

// sameContainers reports whether the containers of collection s still run
// and no other does: by the count of changes the agent told of
// (ChangesFollowed), else by listing the runtime's running containers.
func (p *Provider) sameContainers(ctx context.Context, s *snapshot) bool {
	if p.ChangesFollowed {
		return s.changes == p.changes.Load()
	}
	ctrs, err := p.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	return err == nil && slices.Equal(runningIDs(ctrs), s.ids)
}

// refresh collects and keeps the collection for the next requests. A
// request that waited for another's collection begun after it asked takes
// that one: concurrent requests share one collection instead of making one
// each in turn.
func (p *Provider) refresh(ctx context.Context, asked time.Time) (*snapshot, error) {
	p.collMu.Lock()
	defer p.collMu.Unlock()
	if p.MaxAge > 0 {
		p.mu.Lock()
		last := p.last
		p.mu.Unlock()
		if last != nil && !last.at.Before(asked) {
			return last, nil
		}
	}
	s, err := p.collect(ctx)
	if err == nil && p.MaxAge > 0 {
		p.mu.Lock()
		p.last = s
		p.mu.Unlock()
	}
	return s, err
}

// Run collects every period until ctx ends, so that requests are answered
// from a collection at most a period old (upstream's cAdvisor housekeeping).
func (p *Provider) Run(ctx context.Context, period time.Duration) {
	p.collMu.Lock()
	p.period = period
	p.collMu.Unlock()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if _, err := p.refresh(ctx, time.Now()); err != nil && ctx.Err() == nil {
			klog.V(4).InfoS("Stats collection failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func runningIDs(ctrs []*runtimeapi.Container) []string {
	ids := make([]string, 0, len(ctrs))
	for _, c := range ctrs {
		ids = append(ids, c.Id)
	}
	sort.Strings(ids)
	return ids
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
		if sw := st.GetSwap(); sw != nil {
			if u := sw.GetSwapUsageBytes(); u != nil {
				cs.swap = u64(u.GetValue())
			}
			if a := sw.GetSwapAvailableBytes(); a != nil {
				cs.swapAvailable = u64(a.GetValue())
			}
		}
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

// proc is the first process of sandbox or container id, asked of the
// runtime once (its verbose status) and remembered.
func (p *Provider) proc(ctx context.Context, id string, sandbox bool) procInfo {
	p.mu.Lock()
	pi, ok := p.procs[id]
	p.mu.Unlock()
	if ok {
		return pi
	}
	var info map[string]string
	if sandbox {
		st, err := p.Runtime.PodSandboxStatus(ctx, id, true)
		if err != nil {
			return procInfo{}
		}
		info = st.GetInfo()
	} else {
		st, err := p.Runtime.ContainerStatus(ctx, id, true)
		if err != nil {
			return procInfo{}
		}
		info = st.GetInfo()
	}
	var v struct {
		Pid   int    `json:"pid"`
		Image string `json:"image"`
	}
	_ = json.Unmarshal([]byte(info["info"]), &v)
	pi = procInfo{pid: v.Pid, image: v.Image}
	switch {
	case p.cgroupOf != nil:
		pi.cgroup = p.cgroupOf(id)
	case p.Cgroups != nil && pi.pid > 0:
		pi.cgroup = p.Cgroups.OfProcess(pi.pid)
	}
	p.mu.Lock()
	if p.procs == nil {
		p.procs = map[string]procInfo{}
	}
	p.procs[id] = pi
	p.mu.Unlock()
	return pi
}

// forget drops what is remembered of sandboxes and containers not in keep.
func (p *Provider) forget(keep map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.procs {
		if !keep[id] {
			delete(p.procs, id)
		}
	}
	for id := range p.prevCPU {
		if id != "" && !keep[id] {
			delete(p.prevCPU, id)
		}
	}
}

// sandboxNet reads eth0 of the sandbox's network namespace through its
// first process.
func (p *Provider) sandboxNet(ctx context.Context, id string) (netSnap, bool) {
	pid := p.proc(ctx, id, true).pid
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
		out = append(out, netSnap{iface: strings.TrimSpace(name), rxBytes: u(0), rxPackets: u(1), rxErrors: u(2), rxDropped: u(3),
			txBytes: u(8), txPackets: u(9), txErrors: u(10), txDropped: u(11)})
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
	p.mu.Lock()
	n.cpuNanoCores, _ = p.rate("", n.cpuNanos, now)
	p.mu.Unlock()
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
	n.swapTotal, n.swapFree = mem["SwapTotal"], mem["SwapFree"]
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
