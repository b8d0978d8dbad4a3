package stats

import (
	"bufio"
	"context"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bosun-dev/bosun/internal/cgroupstats"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cgroupSnap is one row of /metrics/cadvisor: a cgroup with cAdvisor's
// labels. The rows are the root cgroup, the QoS cgroups, each pod's cgroup,
// each pod's sandbox and each running container, as upstream's cAdvisor
// reports them for the kubelet.
type cgroupSnap struct {
	id, name, image, container, pod, namespace string
	created                                    time.Time
	at                                         time.Time // when st was read
	st                                         *cgroupstats.Stats
	fds, sockets                               uint64
	openFilesSoft                              int64
	hasOpenFiles                               bool
	net                                        []netSnap
	fs                                         *fsSnap
	fss                                        []fsSnap // the root's: the machine's filesystems
}

// fsSnap is a filesystem's figures for container_fs_*.
type fsSnap struct {
	device                           string
	limit, usage, inodes, inodesFree uint64
	hasLimit                         bool
	io                               *diskIO // the device's /proc/diskstats (the root's filesystems)
}

// diskIO is one block device's line of /proc/diskstats (times in ms).
type diskIO struct {
	reads, readsMerged, sectorsRead, readMs       uint64
	writes, writesMerged, sectorsWritten, writeMs uint64
	inProgress, ioMs, weightedIoMs                uint64
}

// machineSnap is what machine_* reports.
type machineSnap struct {
	machineID, systemUUID, bootID string
	cores, physicalCores, sockets int
	books, drawers                int
	memoryBytes, swapBytes        uint64
	kernelVersion, osVersion      string
}

// collectCgroups reads the cgroups of the sandboxes and containers of s and
// of the pods and QoS classes above them.
func (p *Provider) collectCgroups(ctx context.Context, s *snapshot, ctrs []*runtimeapi.Container) {
	type podRef struct {
		name, namespace, uid string
		created              time.Time
	}
	var rows []cgroupSnap
	pods := map[string]podRef{} // pod cgroup -> pod
	p.Cgroups.ForgetOldLimits(time.Now())
	reads := make(map[string]*cgroupRead, len(p.reads))
	add := func(r cgroupSnap) {
		last := p.reads[r.id]
		gen := cgroupstats.LimitsGeneration(r.id)
		if due(last, s.at, p.period, gen) {
			if c := carry(last, s.at, gen, func(st *cgroupstats.Stats) bool { return p.Cgroups.Unchanged(r.id, st) }); c != nil {
				last = c
			} else {
				st, err := p.Cgroups.Read(r.id)
				if err != nil {
					return
				}
				// Each row counts the open files of its own processes, as
				// cAdvisor does: every process is counted once, in its
				// container's row.
				fds, sockets := p.files.Count(st.Procs, s.at)
				read := &cgroupRead{at: s.at, full: s.at, st: st, fds: fds, sockets: sockets, gen: gen}
				read.quiet = last != nil && last.same(read)
				last = read
			}
		}
		reads[r.id] = last
		r.at, r.st, r.fds, r.sockets = last.at, last.st, last.fds, last.sockets
		if r.id == "/" {
			// cAdvisor's ulimits are its root process's, and only the
			// machine's row has one (PID 1).
			r.openFilesSoft, r.hasOpenFiles = cgroupstats.MaxOpenFilesSoft(1)
		}
		rows = append(rows, r)
	}
	for id, sb := range s.sandboxes {
		pi := p.proc(ctx, id, true)
		if pi.cgroup == "" || pi.cgroup == "/" {
			continue
		}
		ref := podRef{sb.Metadata.GetName(), sb.Metadata.GetNamespace(), sb.Metadata.GetUid(), timeOf(sb.CreatedAt)}
		r := cgroupSnap{id: pi.cgroup, name: id, image: pi.image, pod: ref.name, namespace: ref.namespace, created: ref.created}
		if n, ok := s.podNet[ref.uid]; ok {
			r.net = []netSnap{n}
		}
		add(r)
		pods[path.Dir(pi.cgroup)] = ref
	}
	rootfs := map[string]uint64{}
	for _, c := range s.containers {
		rootfs[c.id] = c.rootfsUsed
	}
	for _, c := range ctrs {
		pi := p.proc(ctx, c.Id, false)
		if pi.cgroup == "" || pi.cgroup == "/" {
			continue
		}
		// cAdvisor labels a container with its image's name, as the pod
		// asked for it; the runtime's Image is often the image ID.
		image := c.Image.GetUserSpecifiedImage()
		if image == "" {
			image = c.Image.GetImage()
		}
		r := cgroupSnap{id: pi.cgroup, name: c.Id, image: image, container: c.Metadata.GetName(),
			pod: c.Labels["io.kubernetes.pod.name"], namespace: c.Labels["io.kubernetes.pod.namespace"], created: timeOf(c.CreatedAt),
			fs: &fsSnap{usage: rootfs[c.Id]}}
		add(r)
		if _, ok := pods[path.Dir(pi.cgroup)]; !ok {
			pods[path.Dir(pi.cgroup)] = podRef{name: r.pod, namespace: r.namespace, uid: c.Labels["io.kubernetes.pod.uid"], created: r.created}
		}
	}
	above := map[string]bool{}
	for cg, ref := range pods {
		r := cgroupSnap{id: cg, pod: ref.name, namespace: ref.namespace, created: ref.created}
		if n, ok := s.podNet[ref.uid]; ok {
			r.net = []netSnap{n}
		}
		add(r)
		for d := path.Dir(cg); d != "/" && d != "." && !above[d]; d = path.Dir(d) {
			above[d] = true
		}
	}
	for d := range above {
		if _, isPod := pods[d]; !isPod {
			add(cgroupSnap{id: d, created: s.node.bootTime})
		}
	}
	root := cgroupSnap{id: "/", created: s.node.bootTime, fss: machineFilesystems()}
	root.net = s.node.net
	add(root)
	sort.Slice(rows, func(i, j int) bool { return rows[i].id < rows[j].id })
	s.cgroups = rows
	p.reads = reads
	// Swap, where the runtime did not report it, from the container's
	// cgroup, as upstream's cAdvisor gives it to the Summary API.
	byID := map[string]*cgroupstats.Stats{}
	for _, r := range rows {
		if r.container != "" {
			byID[r.name] = r.st
		}
	}
	for i := range s.containers {
		c := &s.containers[i]
		st, ok := byID[c.id]
		if !ok || c.swap != nil || !st.Memory.HasLimits {
			continue
		}
		c.swap = u64(st.Memory.Swap)
		if lim := st.Memory.SwapLimit; lim <= maxMemory && lim >= st.Memory.Swap {
			c.swapAvailable = u64(lim - st.Memory.Swap)
		}
	}
	s.machine = readMachine()
}

// machineFilesystems are the mounted block-device filesystems (ext*, xfs,
// btrfs), once per device: their space from statfs, their I/O from
// /proc/diskstats, for the root row as cAdvisor reports them.
func machineFilesystems() []fsSnap {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	stats := readDiskstats()
	seen := map[string]bool{}
	var out []fsSnap
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 2 {
			continue
		}
		fstype, source, mountpoint := g[0], g[1], f[4]
		switch fstype {
		case "ext2", "ext3", "ext4", "xfs", "btrfs":
		default:
			continue
		}
		if !strings.HasPrefix(source, "/dev/") || seen[source] {
			continue
		}
		var st unix.Statfs_t
		if unix.Statfs(mountpoint, &st) != nil {
			continue
		}
		seen[source] = true
		fs := fsSnap{device: source, limit: st.Blocks * uint64(st.Bsize), usage: (st.Blocks - st.Bfree) * uint64(st.Bsize),
			inodes: st.Files, inodesFree: st.Ffree, hasLimit: true}
		if io, ok := stats[strings.TrimPrefix(source, "/dev/")]; ok {
			fs.io = &io
		}
		out = append(out, fs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].device < out[j].device })
	return out
}

// readDiskstats reads /proc/diskstats by device name.
func readDiskstats() map[string]diskIO {
	data, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return nil
	}
	out := map[string]diskIO{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 14 {
			continue
		}
		u := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		out[f[2]] = diskIO{reads: u(3), readsMerged: u(4), sectorsRead: u(5), readMs: u(6), writes: u(7), writesMerged: u(8),
			sectorsWritten: u(9), writeMs: u(10), inProgress: u(11), ioMs: u(12), weightedIoMs: u(13)}
	}
	return out
}

// countTopology counts the distinct values of a CPU topology file
// (book_id, drawer_id: s390 only; 0 where the kernel has none).
func countTopology(file string) int {
	paths, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*/topology/" + file)
	ids := map[string]bool{}
	for _, p := range paths {
		if v := firstLine(p); v != "" {
			ids[v] = true
		}
	}
	return len(ids)
}

// readMachine reads the machine's identity, CPUs and memory.
func readMachine() machineSnap {
	m := machineSnap{cores: runtime.NumCPU()}
	m.machineID = firstLine("/etc/machine-id")
	m.systemUUID = firstLine("/sys/class/dmi/id/product_uuid")
	if m.systemUUID == "" {
		m.systemUUID = m.machineID // as upstream reports it where the DMI table is not readable
	}
	m.books, m.drawers = countTopology("book_id"), countTopology("drawer_id")
	m.bootID = firstLine("/proc/sys/kernel/random/boot_id")
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		cores, sockets := map[string]bool{}, map[string]bool{}
		physID, processors := "", 0
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			switch k {
			case "processor":
				processors++
			case "physical id":
				physID = v
				sockets[v] = true
			case "core id":
				cores[physID+"/"+v] = true
			}
		}
		f.Close()
		if processors > 0 {
			m.cores = processors
		}
		m.physicalCores, m.sockets = len(cores), len(sockets)
		if m.physicalCores == 0 {
			m.physicalCores = m.cores
		}
		if m.sockets == 0 {
			m.sockets = 1
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			v, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "MemTotal:":
				m.memoryBytes = v * 1024
			case "SwapTotal:":
				m.swapBytes = v * 1024
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.kernelVersion = unix.ByteSliceToString(u.Release[:])
	}
	if data, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.osVersion = strings.Trim(v, `"`)
			}
		}
	}
	return m
}

func firstLine(p string) string {
	data, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(line)
}

// familySizes is each family's size in the page last written (name ->
// bytes), so the next page sizes its buffers once rather than growing them
// sample by sample.
var familySizes sync.Map

// families collects samples by family and writes them sorted by name, as
// the Prometheus client does.
type families struct {
	help, kind map[string]string
	lines      map[string][]byte // each family's samples, one a line
}

func newFamilies() *families {
	return &families{help: map[string]string{}, kind: map[string]string{}, lines: map[string][]byte{}}
}

// add adds one sample; ts 0 writes none.
func (f *families) add(name, kind, help string, value float64, ts int64, labels ...string) {
	b := appendSeries(f.family(name, kind, help), name, sortedPairs(labels))
	f.end(name, b, value, ts)
}

// family is the lines of family name so far, the family registered with
// its help and kind at its first sample.
func (f *families) family(name, kind, help string) []byte {
	if _, ok := f.kind[name]; !ok {
		f.help[name], f.kind[name] = help, kind
		// The family's last page is about the size of this one.
		if n, ok := familySizes.Load(name); ok {
			f.lines[name] = make([]byte, 0, n.(int)+n.(int)/8)
		}
	}
	return f.lines[name]
}

// end ends the sample whose series b ends with: its value and timestamp
// (none when ts is 0).
func (f *families) end(name string, b []byte, value float64, ts int64) {
	b = append(b, ' ')
	b = strconv.AppendFloat(b, value, 'g', -1, 64)
	if ts != 0 {
		b = append(b, ' ')
		b = strconv.AppendInt(b, ts, 10)
	}
	f.lines[name] = append(b, '\n')
}

// rowLabels are a /metrics/cadvisor row's own labels (rowKeys), written
// once per row as `key="value",` each; off[i] is where the i-th starts.
// Most of a row's samples carry only these, the others one or a few more
// whose places among them are found by name.
type rowLabels struct {
	b   []byte
	off [len(rowKeys) + 1]int
}

// rowKeys are the labels of every cAdvisor row, in order.
var rowKeys = [...]string{"container", "id", "image", "name", "namespace", "pod"}

func (rl *rowLabels) set(values ...string) {
	rl.b = rl.b[:0]
	for i, k := range rowKeys {
		rl.off[i] = len(rl.b)
		rl.b = appendPair(rl.b, k, values[i])
		rl.b = append(rl.b, ',')
	}
	rl.off[len(rowKeys)] = len(rl.b)
}

// appendPair appends key="value", the value quoted as the Prometheus
// client quotes it.
func appendPair(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, '=')
	if plainLabel(v) {
		b = append(b, '"')
		b = append(b, v...)
		return append(b, '"')
	}
	return strconv.AppendQuote(b, v)
}

// addRow adds one sample of a row: its labels and extra's (name/value
// pairs, in name order).
func (f *families) addRow(name, kind, help string, value float64, ts int64, rl *rowLabels, extra ...string) {
	b := append(f.family(name, kind, help), name...)
	b = append(b, '{')
	pos := 0
	for i := 0; i+1 < len(extra); i += 2 {
		j := pos
		for j < len(rowKeys) && rowKeys[j] < extra[i] {
			j++
		}
		b = append(b, rl.b[rl.off[pos]:rl.off[j]]...)
		b = appendPair(b, extra[i], extra[i+1])
		b = append(b, ',')
		pos = j
	}
	b = append(b, rl.b[rl.off[pos]:]...)
	b[len(b)-1] = '}'
	f.end(name, b, value, ts)
}

// sortedPairs orders name/value pairs by name, as the Prometheus client
// writes labels (pairs already in order are returned as they are).
func sortedPairs(labels []string) []string {
	sorted := true
	for i := 2; i+1 < len(labels); i += 2 {
		if labels[i-2] > labels[i] {
			sorted = false
			break
		}
	}
	if sorted {
		return labels
	}
	n := len(labels) / 2
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return labels[2*idx[a]] < labels[2*idx[b]] })
	out := make([]string, 0, 2*n)
	for _, i := range idx {
		out = append(out, labels[2*i], labels[2*i+1])
	}
	return out
}

func (f *families) write(w io.Writer) error {
	names := make([]string, 0, len(f.lines))
	for n := range f.lines {
		names = append(names, n)
	}
	sort.Strings(names)
	bw := bufio.NewWriter(w)
	for _, n := range names {
		bw.WriteString("# HELP " + n + " " + f.help[n] + "\n# TYPE " + n + " " + f.kind[n] + "\n")
		bw.Write(f.lines[n])
		familySizes.Store(n, len(f.lines[n]))
	}
	return bw.Flush()
}

// maxMemory is where cAdvisor takes a memory limit for "none".
const maxMemory = uint64(1 << 62)

func memLimit(v uint64) float64 {
	if v > maxMemory {
		return 0
	}
	return float64(v)
}

// WriteCadvisorMetrics writes /metrics/cadvisor: cAdvisor's families, names,
// help and labels (container, id, image, name, namespace, pod) for the rows
// of collectCgroups, and the machine_* families.
func (p *Provider) WriteCadvisorMetrics(ctx context.Context, w io.Writer) error {
	s, err := p.latest(ctx)
	if err != nil {
		f := newFamilies()
		f.add("container_scrape_error", "gauge", "1 if there was an error while getting container metrics, 0 otherwise", 1, 0)
		return f.write(w)
	}
	return p.cadvisorPage.write(w, s, renderCadvisor)
}

// renderCadvisor writes the /metrics/cadvisor page of one collection.
func renderCadvisor(s *snapshot, w io.Writer) error {
	f := newFamilies()
	const (
		counter = "counter"
		gauge   = "gauge"
	)
	now := s.at.UnixMilli()
	var rl rowLabels
	for _, r := range s.cgroups {
		// Each row's figures carry the time they were read, as cAdvisor's
		// do: a quiet cgroup's may be a collection older than the page.
		// The network and filesystem figures are read at every collection
		// (now).
		ts := r.at.UnixMilli()
		rl.set(r.container, r.id, r.image, r.name, r.namespace, r.pod)
		st := r.st
		// The spec: written without a timestamp, as cAdvisor does.
		f.addRow("container_start_time_seconds", gauge, "Start time of the container since unix epoch in seconds.", float64(r.created.Unix()), 0, &rl)
		if st.CPU.HasLimits {
			f.addRow("container_spec_cpu_period", gauge, "CPU period of the container.", float64(st.CPU.PeriodUS), 0, &rl)
			if st.CPU.QuotaUS != 0 {
				f.addRow("container_spec_cpu_quota", gauge, "CPU quota of the container.", float64(st.CPU.QuotaUS), 0, &rl)
			}
			f.addRow("container_spec_cpu_shares", gauge, "CPU share of the container.", float64(st.CPU.Shares), 0, &rl)
		}
		if st.Memory.HasLimits {
			f.addRow("container_spec_memory_limit_bytes", gauge, "Memory limit for the container.", memLimit(st.Memory.Limit), 0, &rl)
			f.addRow("container_spec_memory_swap_limit_bytes", gauge, "Memory swap limit for the container.", memLimit(st.Memory.SwapLimit), 0, &rl)
			f.addRow("container_spec_memory_reservation_limit_bytes", gauge, "Memory reservation limit for the container.", memLimit(st.Memory.Reservation), 0, &rl)
		}

		f.addRow("container_last_seen", gauge, "Last time a container was seen by the exporter", float64(s.at.Unix()), now, &rl)
		c := st.CPU
		f.addRow("container_cpu_user_seconds_total", counter, "Cumulative user cpu time consumed in seconds.", float64(c.UserNanos)/1e9, ts, &rl)
		f.addRow("container_cpu_system_seconds_total", counter, "Cumulative system cpu time consumed in seconds.", float64(c.SystemNanos)/1e9, ts, &rl)
		f.addRow("container_cpu_usage_seconds_total", counter, "Cumulative cpu time consumed in seconds.", float64(c.UsageNanos)/1e9, ts, &rl, "cpu", "total")
		if c.QuotaUS != 0 {
			f.addRow("container_cpu_cfs_periods_total", counter, "Number of elapsed enforcement period intervals.", float64(c.Periods), ts, &rl)
			f.addRow("container_cpu_cfs_throttled_periods_total", counter, "Number of throttled period intervals.", float64(c.ThrottledPeriods), ts, &rl)
			f.addRow("container_cpu_cfs_throttled_seconds_total", counter, "Total time duration the container has been throttled.", float64(c.ThrottledNanos)/1e9, ts, &rl)
			f.addRow("container_cpu_cfs_burst_periods_total", counter, "Number of periods when burst occurs.", float64(c.BurstPeriods), ts, &rl)
			f.addRow("container_cpu_cfs_burst_seconds_total", counter, "Total time duration the container has been bursted.", float64(c.BurstNanos)/1e9, ts, &rl)
		}
		// cAdvisor's health state is Docker's HEALTHCHECK; CRI containers have
		// none, which it reports as -1.
		f.addRow("container_health_state", gauge, "The result of the container's health check", -1, ts, &rl)

		m := st.Memory
		for _, g := range []struct {
			name, kind, help string
			v                uint64
		}{
			{"container_memory_cache", gauge, "Number of bytes of page cache memory.", m.Cache},
			{"container_memory_rss", gauge, "Size of RSS in bytes.", m.RSS},
			{"container_memory_kernel_usage", gauge, "Size of kernel memory allocated in bytes.", m.KernelUsage},
			{"container_memory_mapped_file", gauge, "Size of memory mapped files in bytes.", m.MappedFile},
			{"container_memory_swap", gauge, "Container swap usage in bytes.", m.Swap},
			{"container_memory_failcnt", counter, "Number of memory usage hits limits", m.Failcnt},
			{"container_memory_usage_bytes", gauge, "Current memory usage in bytes, including all memory regardless of when it was accessed", m.Usage},
			{"container_memory_max_usage_bytes", gauge, "Maximum memory usage recorded in bytes", m.MaxUsage},
			{"container_memory_working_set_bytes", gauge, "Current working set in bytes.", m.WorkingSet},
			{"container_memory_total_active_file_bytes", gauge, "Current total active file in bytes.", m.ActiveFile},
			{"container_memory_total_inactive_file_bytes", gauge, "Current total inactive file in bytes.", m.InactiveFile},
			{"container_oom_events_total", counter, "Count of out of memory events observed for the container", m.OOMKills},
		} {
			f.addRow(g.name, g.kind, g.help, float64(g.v), ts, &rl)
		}
		const failures = "Cumulative count of memory allocation failures."
		f.addRow("container_memory_failures_total", counter, failures, float64(m.Pgfault), ts, &rl, "failure_type", "pgfault", "scope", "container")
		f.addRow("container_memory_failures_total", counter, failures, float64(m.Pgmajfault), ts, &rl, "failure_type", "pgmajfault", "scope", "container")
		f.addRow("container_memory_failures_total", counter, failures, float64(m.HierPgfault), ts, &rl, "failure_type", "pgfault", "scope", "hierarchy")
		f.addRow("container_memory_failures_total", counter, failures, float64(m.HierPgmajfault), ts, &rl, "failure_type", "pgmajfault", "scope", "hierarchy")

		for _, io := range st.IO {
			dev := cgroupstats.DeviceName(io.Major, io.Minor)
			maj, min := strconv.FormatUint(io.Major, 10), strconv.FormatUint(io.Minor, 10)
			f.addRow("container_blkio_device_usage_total", counter, "Blkio Device bytes usage", float64(io.ReadBytes), ts, &rl, "device", dev, "major", maj, "minor", min, "operation", "Read")
			f.addRow("container_blkio_device_usage_total", counter, "Blkio Device bytes usage", float64(io.WriteBytes), ts, &rl, "device", dev, "major", maj, "minor", min, "operation", "Write")
			if dev == "" {
				continue
			}
			f.addRow("container_fs_reads_bytes_total", counter, "Cumulative count of bytes read", float64(io.ReadBytes), ts, &rl, "device", dev)
			f.addRow("container_fs_reads_total", counter, "Cumulative count of reads completed", float64(io.Reads), ts, &rl, "device", dev)
			f.addRow("container_fs_writes_bytes_total", counter, "Cumulative count of bytes written", float64(io.WriteBytes), ts, &rl, "device", dev)
			f.addRow("container_fs_writes_total", counter, "Cumulative count of writes completed", float64(io.Writes), ts, &rl, "device", dev)
		}
		for _, fs := range r.fss {
			d := []string{"device", fs.device}
			f.addRow("container_fs_usage_bytes", gauge, "Number of bytes that are consumed by the container on this filesystem.", float64(fs.usage), now, &rl, d...)
			f.addRow("container_fs_limit_bytes", gauge, "Number of bytes that can be consumed by the container on this filesystem.", float64(fs.limit), now, &rl, d...)
			f.addRow("container_fs_inodes_total", gauge, "Number of Inodes", float64(fs.inodes), now, &rl, d...)
			f.addRow("container_fs_inodes_free", gauge, "Number of available Inodes", float64(fs.inodesFree), now, &rl, d...)
			io := fs.io
			if io == nil {
				continue
			}
			for _, g := range []struct {
				name, kind, help string
				v                float64
			}{
				{"container_fs_reads_total", counter, "Cumulative count of reads completed", float64(io.reads)},
				{"container_fs_reads_merged_total", counter, "Cumulative count of reads merged", float64(io.readsMerged)},
				{"container_fs_sector_reads_total", counter, "Cumulative count of sector reads completed", float64(io.sectorsRead)},
				{"container_fs_read_seconds_total", counter, "Cumulative count of seconds spent reading", float64(io.readMs) / 1e3},
				{"container_fs_writes_total", counter, "Cumulative count of writes completed", float64(io.writes)},
				{"container_fs_writes_merged_total", counter, "Cumulative count of writes merged", float64(io.writesMerged)},
				{"container_fs_sector_writes_total", counter, "Cumulative count of sector writes completed", float64(io.sectorsWritten)},
				{"container_fs_write_seconds_total", counter, "Cumulative count of seconds spent writing", float64(io.writeMs) / 1e3},
				{"container_fs_io_current", gauge, "Number of I/Os currently in progress", float64(io.inProgress)},
				{"container_fs_io_time_seconds_total", counter, "Cumulative count of seconds spent doing I/Os", float64(io.ioMs) / 1e3},
				{"container_fs_io_time_weighted_seconds_total", counter, "Cumulative weighted I/O time in seconds", float64(io.weightedIoMs) / 1e3},
			} {
				f.addRow(g.name, g.kind, g.help, g.v, now, &rl, d...)
			}
		}
		if fs := r.fs; fs != nil {
			f.addRow("container_fs_usage_bytes", gauge, "Number of bytes that are consumed by the container on this filesystem.", float64(fs.usage), now, &rl, "device", fs.device)
			if fs.hasLimit {
				f.addRow("container_fs_limit_bytes", gauge, "Number of bytes that can be consumed by the container on this filesystem.", float64(fs.limit), now, &rl, "device", fs.device)
				f.addRow("container_fs_inodes_total", gauge, "Number of Inodes", float64(fs.inodes), now, &rl, "device", fs.device)
				f.addRow("container_fs_inodes_free", gauge, "Number of available Inodes", float64(fs.inodesFree), now, &rl, "device", fs.device)
			}
		}

		for _, n := range r.net {
			l := []string{"interface", n.iface}
			f.addRow("container_network_receive_bytes_total", counter, "Cumulative count of bytes received", float64(n.rxBytes), now, &rl, l...)
			f.addRow("container_network_receive_packets_total", counter, "Cumulative count of packets received", float64(n.rxPackets), now, &rl, l...)
			f.addRow("container_network_receive_packets_dropped_total", counter, "Cumulative count of packets dropped while receiving", float64(n.rxDropped), now, &rl, l...)
			f.addRow("container_network_receive_errors_total", counter, "Cumulative count of errors encountered while receiving", float64(n.rxErrors), now, &rl, l...)
			f.addRow("container_network_transmit_bytes_total", counter, "Cumulative count of bytes transmitted", float64(n.txBytes), now, &rl, l...)
			f.addRow("container_network_transmit_packets_total", counter, "Cumulative count of packets transmitted", float64(n.txPackets), now, &rl, l...)
			f.addRow("container_network_transmit_packets_dropped_total", counter, "Cumulative count of packets dropped while transmitting", float64(n.txDropped), now, &rl, l...)
			f.addRow("container_network_transmit_errors_total", counter, "Cumulative count of errors encountered while transmitting", float64(n.txErrors), now, &rl, l...)
		}

		f.addRow("container_processes", gauge, "Number of processes running inside the container.", float64(len(st.Procs)), ts, &rl)
		f.addRow("container_threads", gauge, "Number of threads running inside the container", float64(st.Pids.Current), ts, &rl)
		f.addRow("container_threads_max", gauge, "Maximum number of threads allowed inside the container, infinity if value is zero", float64(st.Pids.Max), ts, &rl)
		f.addRow("container_file_descriptors", gauge, "Number of open file descriptors for the container.", float64(r.fds), ts, &rl)
		f.addRow("container_sockets", gauge, "Number of open sockets for the container.", float64(r.sockets), ts, &rl)
		if r.hasOpenFiles {
			f.addRow("container_ulimits_soft", gauge, "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice",
				float64(r.openFilesSoft), ts, &rl, "ulimit", "max_open_files")
		}
	}

	mc := s.machine
	ml := []string{"boot_id", mc.bootID, "machine_id", mc.machineID, "system_uuid", mc.systemUUID}
	f.add("machine_cpu_cores", gauge, "Number of logical CPU cores.", float64(mc.cores), 0, ml...)
	f.add("machine_cpu_physical_cores", gauge, "Number of physical CPU cores.", float64(mc.physicalCores), 0, ml...)
	f.add("machine_cpu_sockets", gauge, "Number of CPU sockets.", float64(mc.sockets), 0, ml...)
	f.add("machine_memory_bytes", gauge, "Amount of memory installed on the machine.", float64(mc.memoryBytes), 0, ml...)
	f.add("machine_swap_bytes", gauge, "Amount of swap memory available on the machine.", float64(mc.swapBytes), 0, ml...)
	f.add("machine_cpu_books", gauge, "Number of CPU books.", float64(mc.books), 0, ml...)
	f.add("machine_cpu_drawers", gauge, "Number of CPU drawers.", float64(mc.drawers), 0, ml...)
	// Persistent memory (NVM) is read through Intel's ipmctl, which neither
	// Bosun nor upstream's build links: upstream reports 0, and so does Bosun.
	f.add("machine_nvm_capacity", gauge, "NVM capacity value labeled by NVM mode (memory mode or app direct mode).", 0, 0, append(ml, "mode", "memory_mode")...)
	f.add("machine_nvm_capacity", gauge, "NVM capacity value labeled by NVM mode (memory mode or app direct mode).", 0, 0, append(ml, "mode", "app_direct_mode")...)
	f.add("machine_nvm_avg_power_budget_watts", gauge, "NVM power budget.", 0, 0, ml...)
	f.add("machine_scrape_error", gauge, "1 if there was an error while getting machine metrics, 0 otherwise.", 0, 0)
	f.add("cadvisor_version_info", gauge, "A metric with a constant '1' value labeled by kernel version, OS version, docker version, cadvisor version & cadvisor revision.", 1, 0,
		"cadvisorRevision", "", "cadvisorVersion", "", "dockerVersion", "", "kernelVersion", mc.kernelVersion, "osVersion", mc.osVersion)
	f.add("container_scrape_error", gauge, "1 if there was an error while getting container metrics, 0 otherwise", 0, 0)
	return f.write(w)
}
