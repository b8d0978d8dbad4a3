// Package cgroupstats reads what a cgroup has used and what it may use, from
// the kernel's files under /sys/fs/cgroup, for cgroup v1 (one hierarchy per
// controller) and v2 (the unified tree): CPU time and CFS throttling, memory
// with its page cache, RSS, swap and faults, block I/O per device, tasks and
// open files, and the limits (shares, quota, memory limit). These are the
// figures cAdvisor exports as container_* metrics; the stats package turns
// them into /metrics/cadvisor.
package cgroupstats

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// userHZ is the unit of cpuacct.stat (USER_HZ, 100 on every Linux ABI).
const userHZ = 100

// Stats are one cgroup's figures; a figure the kernel does not offer is 0.
type Stats struct {
	CPU    CPU
	Memory Memory
	Pids   Pids
	IO     []DeviceIO // per block device, sorted by major:minor
	Procs  []int      // the processes in the cgroup itself, not its descendants (cAdvisor's count)
}

// CPU is time in nanoseconds and CFS enforcement.
type CPU struct {
	UsageNanos, UserNanos, SystemNanos uint64
	Periods, ThrottledPeriods          uint64
	ThrottledNanos                     uint64
	BurstPeriods, BurstNanos           uint64
	// Limits: Shares as cpu.shares (v2 weight converted back), QuotaUS 0
	// when unlimited, PeriodUS the CFS period.
	Shares, PeriodUS uint64
	QuotaUS          int64
	HasLimits        bool
}

// Memory is in bytes, except the fault and event counts.
type Memory struct {
	Usage, MaxUsage, WorkingSet   uint64
	Cache, RSS, MappedFile, Swap  uint64
	KernelUsage                   uint64
	ActiveFile, InactiveFile      uint64
	Dirty, Writeback              uint64
	Failcnt                       uint64
	Pgfault, Pgmajfault           uint64 // this cgroup only
	HierPgfault, HierPgmajfault   uint64 // with its descendants
	OOMKills                      uint64
	EventsHigh, EventsMax         uint64 // v2 memory.events
	Limit, Reservation, SwapLimit uint64 // unlimited: a huge number, as the kernel says
	HasLimits                     bool
}

// Pids are the tasks (threads) in the cgroup and the pids limit (0: none).
type Pids struct{ Current, Max uint64 }

// DeviceIO is the cgroup's I/O on one block device.
type DeviceIO struct {
	Major, Minor                         uint64
	ReadBytes, WriteBytes, Reads, Writes uint64
}

// Reader reads cgroups under Root (normally /sys/fs/cgroup).
type Reader struct {
	Root string
	v2   bool

	mu       sync.Mutex
	limits   map[string]limits // by cgroup name
	throttle int               // v1 blkio: 0 not known yet, 1 the throttle files, 2 the scheduler's
	swap     bool              // the node has swap (SetSwap)
}

// New detects the cgroup version under root.
func New(root string) *Reader {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return &Reader{Root: root, v2: err == nil}
}

// V2 reports whether the unified hierarchy is in use.
func (r *Reader) V2() bool { return r.v2 }

// dir is cgroup name's folder for controller ctrl (ignored on v2).
func (r *Reader) dir(ctrl, name string) string {
	name = filepath.Clean("/" + name)
	if r.v2 {
		return filepath.Join(r.Root, name)
	}
	return filepath.Join(r.Root, ctrl, name)
}

// Exists reports whether cgroup name is there (in the cpu hierarchy on v1).
func (r *Reader) Exists(name string) bool {
	_, err := os.Stat(r.dir("cpu", name))
	return err == nil
}

// SetSwap says whether the node has swap (SwapTotal in /proc/meminfo): a
// v1 cgroup's swap is read only where there is some to use, since without
// swap memsw usage is the memory usage itself.
func (r *Reader) SetSwap(on bool) {
	r.mu.Lock()
	r.swap = on
	r.mu.Unlock()
}

// Read reads cgroup name (e.g. /kubepods/burstable/pod<uid>/<container id>).
// It fails only when the cgroup is gone; a missing file leaves its figures 0.
func (r *Reader) Read(name string) (*Stats, error) {
	s := &Stats{}
	var found bool
	if r.v2 {
		found = r.readV2(name, s)
	} else {
		found = r.readV1(name, s)
	}
	// The first file's absence is told apart from the cgroup's only then.
	if !found && !r.Exists(name) {
		return nil, fmt.Errorf("cgroup %s: %w", name, os.ErrNotExist)
	}
	// As cAdvisor, the cgroup's own cgroup.procs: a pod's or QoS class's
	// processes are in its containers' cgroups, counted there.
	s.Procs = parsePids(readFast(filepath.Join(r.dir("cpu", name), "cgroup.procs")))
	if s.Memory.Usage > s.Memory.InactiveFile {
		s.Memory.WorkingSet = s.Memory.Usage - s.Memory.InactiveFile
	}
	return s, nil
}

// Unchanged reports whether cgroup name's CPU time, memory usage and own
// processes are still last's, from three files where Read reads about a
// dozen and counts open files. When they are, nothing in the cgroup has run
// since last was read, so its other figures are last's too, but for what
// the kernel changes on its own (page cache aging, writeback): a caller
// keeps a bound on how long it trusts this. A cgroup that is gone is not
// unchanged.
func (r *Reader) Unchanged(name string, last *Stats) bool {
	if r.v2 {
		d := r.dir("", name)
		data, err := readFastErr(filepath.Join(d, "cpu.stat"))
		if err != nil || parseKV(data)["usage_usec"]*1000 != last.CPU.UsageNanos ||
			readUint(filepath.Join(d, "memory.current")) != last.Memory.Usage {
			return false
		}
	} else {
		usage, err := readUintErr(filepath.Join(r.dir("cpuacct", name), "cpuacct.usage"))
		if err != nil || usage != last.CPU.UsageNanos ||
			readUint(filepath.Join(r.dir("memory", name), "memory.usage_in_bytes")) != last.Memory.Usage {
			return false
		}
	}
	return slices.Equal(parsePids(readFast(filepath.Join(r.dir("cpu", name), "cgroup.procs"))), last.Procs)
}

// readV1 reads cgroup name's v1 files into s; false when its first file
// was not there.
func (r *Reader) readV1(name string, s *Stats) bool {
	cpuacct, cpu, mem := r.dir("cpuacct", name), r.dir("cpu", name), r.dir("memory", name)
	usage, err := readUintErr(filepath.Join(cpuacct, "cpuacct.usage"))
	s.CPU.UsageNanos = usage
	st := readKV(filepath.Join(cpuacct, "cpuacct.stat"))
	s.CPU.UserNanos, s.CPU.SystemNanos = st["user"]*(1e9/userHZ), st["system"]*(1e9/userHZ)
	lim := r.limitsOf(name, func(l *limits) {
		if shares, err := readUintErr(filepath.Join(cpu, "cpu.shares")); err == nil {
			l.cpu, l.shares = true, shares
			l.period = readUint(filepath.Join(cpu, "cpu.cfs_period_us"))
			if q := readInt(filepath.Join(cpu, "cpu.cfs_quota_us")); q > 0 {
				l.quota = q
			}
		}
		if limit, err := readUintErr(filepath.Join(mem, "memory.limit_in_bytes")); err == nil {
			l.mem, l.limit = true, limit
			l.reservation = readUint(filepath.Join(mem, "memory.soft_limit_in_bytes"))
			l.swapLimit = readUint(filepath.Join(mem, "memory.memsw.limit_in_bytes"))
		}
		l.pidsMax = readUint(filepath.Join(r.dir("pids", name), "pids.max")) // "max" reads as 0
	})
	lim.apply(s)
	// CFS enforcement counts only where there is a quota to enforce (the
	// throttling figures are reported for those cgroups alone).
	if lim.quota > 0 {
		cs := readKV(filepath.Join(cpu, "cpu.stat"))
		s.CPU.Periods, s.CPU.ThrottledPeriods, s.CPU.ThrottledNanos = cs["nr_periods"], cs["nr_throttled"], cs["throttled_time"]
		s.CPU.BurstPeriods, s.CPU.BurstNanos = cs["nr_bursts"], cs["burst_time"]
	}

	m := &s.Memory
	m.Usage = readUint(filepath.Join(mem, "memory.usage_in_bytes"))
	m.MaxUsage = readUint(filepath.Join(mem, "memory.max_usage_in_bytes"))
	m.Failcnt = readUint(filepath.Join(mem, "memory.failcnt"))
	m.KernelUsage = readUint(filepath.Join(mem, "memory.kmem.usage_in_bytes"))
	r.mu.Lock()
	swap := r.swap
	r.mu.Unlock()
	if swap {
		if memsw := readUint(filepath.Join(mem, "memory.memsw.usage_in_bytes")); memsw > m.Usage {
			m.Swap = memsw - m.Usage
		}
	}
	ms := readKV(filepath.Join(mem, "memory.stat"))
	m.Cache, m.RSS, m.MappedFile = ms["total_cache"], ms["total_rss"], ms["total_mapped_file"]
	m.ActiveFile, m.InactiveFile = ms["total_active_file"], ms["total_inactive_file"]
	m.Dirty, m.Writeback = ms["total_dirty"], ms["total_writeback"]
	m.Pgfault, m.Pgmajfault = ms["pgfault"], ms["pgmajfault"]
	m.HierPgfault, m.HierPgmajfault = ms["total_pgfault"], ms["total_pgmajfault"]
	m.OOMKills = readKV(filepath.Join(mem, "memory.oom_control"))["oom_kill"]

	s.Pids.Current = readUint(filepath.Join(r.dir("pids", name), "pids.current"))

	blkio := r.dir("blkio", name)
	bytesFile, opsFile := "blkio.io_service_bytes_recursive", "blkio.io_serviced_recursive"
	if r.throttleBlkio(blkio) {
		bytesFile, opsFile = "blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"
	}
	devs := map[[2]uint64]*DeviceIO{}
	dev := func(maj, min uint64) *DeviceIO {
		k := [2]uint64{maj, min}
		if devs[k] == nil {
			devs[k] = &DeviceIO{Major: maj, Minor: min}
		}
		return devs[k]
	}
	readBlkio(filepath.Join(blkio, bytesFile), func(maj, min uint64, op string, v uint64) {
		switch op {
		case "Read":
			dev(maj, min).ReadBytes = v
		case "Write":
			dev(maj, min).WriteBytes = v
		}
	})
	readBlkio(filepath.Join(blkio, opsFile), func(maj, min uint64, op string, v uint64) {
		switch op {
		case "Read":
			dev(maj, min).Reads = v
		case "Write":
			dev(maj, min).Writes = v
		}
	})
	s.IO = sortedDevices(devs)
	return err == nil
}

// readV2 reads cgroup name's v2 files into s; false when its first file
// was not there.
func (r *Reader) readV2(name string, s *Stats) bool {
	d := r.dir("", name)
	data, err := readFastErr(filepath.Join(d, "cpu.stat"))
	cs := parseKV(data)
	s.CPU.UsageNanos, s.CPU.UserNanos, s.CPU.SystemNanos = cs["usage_usec"]*1000, cs["user_usec"]*1000, cs["system_usec"]*1000
	s.CPU.Periods, s.CPU.ThrottledPeriods, s.CPU.ThrottledNanos = cs["nr_periods"], cs["nr_throttled"], cs["throttled_usec"]*1000
	s.CPU.BurstPeriods, s.CPU.BurstNanos = cs["nr_bursts"], cs["burst_usec"]*1000
	lim := r.limitsOf(name, func(l *limits) {
		if w, err := readUintErr(filepath.Join(d, "cpu.weight")); err == nil {
			l.cpu = true
			l.shares = WeightToShares(w)
			if f := strings.Fields(readString(filepath.Join(d, "cpu.max"))); len(f) == 2 {
				if q, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					l.quota = q
				}
				l.period, _ = strconv.ParseUint(f[1], 10, 64)
			}
		}
		if _, err := os.Stat(filepath.Join(d, "memory.max")); err == nil {
			l.mem = true
			l.limit = readMax(filepath.Join(d, "memory.max"))
			l.reservation = readMax(filepath.Join(d, "memory.low"))
			l.swapLimit = readMax(filepath.Join(d, "memory.swap.max"))
		}
		l.pidsMax = readUint(filepath.Join(d, "pids.max"))
	})
	lim.apply(s)

	m := &s.Memory
	m.Usage = readUint(filepath.Join(d, "memory.current"))
	m.MaxUsage = readUint(filepath.Join(d, "memory.peak"))
	m.Swap = readUint(filepath.Join(d, "memory.swap.current"))
	ms := readKV(filepath.Join(d, "memory.stat"))
	m.Cache, m.RSS, m.MappedFile = ms["file"], ms["anon"], ms["file_mapped"]
	m.ActiveFile, m.InactiveFile = ms["active_file"], ms["inactive_file"]
	m.Dirty, m.Writeback = ms["file_dirty"], ms["file_writeback"]
	m.KernelUsage = ms["kernel"]
	if m.KernelUsage == 0 {
		m.KernelUsage = ms["kernel_stack"] + ms["slab"] + ms["sock"] + ms["pagetables"]
	}
	// v2 counts faults for the whole subtree only.
	m.Pgfault, m.Pgmajfault = ms["pgfault"], ms["pgmajfault"]
	m.HierPgfault, m.HierPgmajfault = m.Pgfault, m.Pgmajfault
	ev := readKV(filepath.Join(d, "memory.events"))
	m.OOMKills, m.EventsHigh, m.EventsMax = ev["oom_kill"], ev["high"], ev["max"]
	m.Failcnt = ev["max"]

	s.Pids.Current = readUint(filepath.Join(d, "pids.current"))

	devs := map[[2]uint64]*DeviceIO{}
	for _, line := range strings.Split(readString(filepath.Join(d, "io.stat")), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		maj, min, ok := majorMinor(f[0])
		if !ok {
			continue
		}
		io := &DeviceIO{Major: maj, Minor: min}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseUint(v, 10, 64)
			switch k {
			case "rbytes":
				io.ReadBytes = n
			case "wbytes":
				io.WriteBytes = n
			case "rios":
				io.Reads = n
			case "wios":
				io.Writes = n
			}
		}
		devs[[2]uint64{maj, min}] = io
	}
	s.IO = sortedDevices(devs)
	return err == nil
}

// WeightToShares turns a v2 cpu.weight back into v1 cpu.shares, the inverse
// of the kubelet's shares-to-weight conversion, as cAdvisor reports it.
func WeightToShares(weight uint64) uint64 {
	if weight == 0 {
		return 0
	}
	return 2 + ((weight-1)*262142)/9999
}

// OfProcess returns the cgroup path of process pid: the unified path on v2,
// the cpu controller's on v1 ("" when unknown).
func (r *Reader) OfProcess(pid int) string {
	data := readFast(fmt.Sprintf("/proc/%d/cgroup", pid))
	if data == nil {
		return ""
	}
	return parseProcCgroup(data, r.v2)
}

func parseProcCgroup(data []byte, v2 bool) string {
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if v2 {
			if parts[0] == "0" && parts[1] == "" {
				return parts[2]
			}
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "cpu" {
				return parts[2]
			}
		}
	}
	return ""
}

var selfPid = os.Getpid()

// OpenFiles counts the open file descriptors and, among them, the sockets
// of the given processes (for the agent's own, not the descriptor it reads
// its list through). It reads each /proc/<pid>/fd with getdents and
// each link with readlinkat on that folder, into buffers of its own: a
// collection reads thousands of links, and os.ReadDir and os.Readlink
// would allocate for each.
func OpenFiles(pids []int) (fds, sockets uint64) {
	var dirents [8192]byte
	var target [16]byte // "socket:[" is all that is looked at
	path := make([]byte, 0, 32)
	for _, pid := range pids {
		path = append(strconv.AppendInt(append(path[:0], "/proc/"...), int64(pid), 10), "/fd"...)
		dfd, err := syscall.Open(string(path), syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		var own []byte
		if pid == selfPid {
			own = strconv.AppendInt(nil, int64(dfd), 10)
		}
		for {
			n, err := syscall.Getdents(dfd, dirents[:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				break
			}
			// struct linux_dirent64: ino (8), off (8), reclen (2), type (1),
			// then the name, NUL-terminated.
			for off := 0; off+19 < n; {
				reclen := int(binary.NativeEndian.Uint16(dirents[off+16:]))
				if reclen == 0 {
					break
				}
				name := dirents[off+19 : off+reclen]
				off += reclen
				if name[0] == '.' { // "." and ".."
					continue
				}
				if end := bytes.IndexByte(name, 0); own != nil && end >= 0 && bytes.Equal(name[:end], own) {
					continue // the folder being read, open only to read it
				}
				fds++
				got, _, e := syscall.Syscall6(syscall.SYS_READLINKAT, uintptr(dfd), uintptr(unsafe.Pointer(&name[0])),
					uintptr(unsafe.Pointer(&target[0])), uintptr(len(target)), 0, 0)
				if e == 0 && bytes.HasPrefix(target[:got], []byte("socket:")) {
					sockets++
				}
			}
		}
		syscall.Close(dfd)
	}
	return fds, sockets
}

// FileCounts counts processes' open files and sockets across collections.
// A process's open files are counted at every collection, from the size of
// its /proc/<pid>/fd (one stat since Linux 6.2). Telling sockets apart takes
// a readlinkat per file, so a process's socket count is kept and counted
// again only when its number of open files changed, or at the latest
// socketsRecountEvery after its last count. On a node the root cgroup holds
// every runtime shim, a couple of hundred processes with pods running,
// nearly all idle between collections. The zero value is ready to use.
type FileCounts struct {
	mu    sync.Mutex
	procs map[int]fileCount
	swept time.Time
}

type fileCount struct {
	fds, sockets  uint64
	counted, seen time.Time
}

// socketsRecountEvery bounds how long a process's socket count is kept
// while its number of open files stays the same: a file closed and a socket
// opened in its place between two collections is seen within this.
const socketsRecountEvery = time.Minute

// Count is OpenFiles for a collection made at now.
func (c *FileCounts) Count(pids []int, now time.Time) (fds, sockets uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.procs == nil {
		c.procs = map[int]fileCount{}
	}
	path := make([]byte, 0, 32)
	for _, pid := range pids {
		path = append(strconv.AppendInt(append(path[:0], "/proc/"...), int64(pid), 10), "/fd"...)
		var st syscall.Stat_t
		last, known := c.procs[pid]
		// Before Linux 6.2 the folder's size is 0: every collection counts.
		if syscall.Stat(string(path), &st) == nil && st.Size > 0 && known && last.fds == uint64(st.Size) && now.Sub(last.counted) < socketsRecountEvery {
			last.seen = now
			c.procs[pid] = last
			fds, sockets = fds+last.fds, sockets+last.sockets
			continue
		}
		f, s := OpenFiles([]int{pid})
		c.procs[pid] = fileCount{fds: f, sockets: s, counted: now, seen: now}
		fds, sockets = fds+f, sockets+s
	}
	if now.Sub(c.swept) >= socketsRecountEvery {
		for pid, fc := range c.procs {
			if now.Sub(fc.seen) >= socketsRecountEvery {
				delete(c.procs, pid)
			}
		}
		c.swept = now
	}
	return fds, sockets
}

// MaxOpenFilesSoft is the soft "Max open files" limit of process pid
// (-1: unlimited, false: unknown).
func MaxOpenFilesSoft(pid int) (int64, bool) {
	data := readFast(fmt.Sprintf("/proc/%d/limits", pid))
	if data == nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "Max open files")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, false
		}
		if f[0] == "unlimited" {
			return -1, true
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		return v, err == nil
	}
	return 0, false
}

// DeviceName is the /dev name of block device major:minor ("" when unknown).
func DeviceName(major, minor uint64) string {
	data, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", major, minor))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			return "/dev/" + v
		}
	}
	return ""
}

func sortedDevices(devs map[[2]uint64]*DeviceIO) []DeviceIO {
	out := make([]DeviceIO, 0, len(devs))
	for _, d := range devs {
		out = append(out, *d)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && (out[j].Major < out[j-1].Major || out[j].Major == out[j-1].Major && out[j].Minor < out[j-1].Minor); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// readBlkio parses v1 blkio files: "major:minor Op value" lines.
func readBlkio(path string, fn func(maj, min uint64, op string, v uint64)) {
	for _, line := range strings.Split(string(readRecord(path)), "\n") {
		p := strings.Fields(line)
		if len(p) != 3 {
			continue
		}
		maj, min, ok := majorMinor(p[0])
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(p[2], 10, 64)
		if err != nil {
			continue
		}
		fn(maj, min, p[1], v)
	}
}

func majorMinor(s string) (uint64, uint64, bool) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, false
	}
	maj, err1 := strconv.ParseUint(a, 10, 64)
	min, err2 := strconv.ParseUint(b, 10, 64)
	return maj, min, err1 == nil && err2 == nil
}

func readString(path string) string {
	return string(bytes.TrimSpace(readRecord(path)))
}

func readUintErr(path string) (uint64, error) {
	data, err := readFastErr(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(string(bytes.TrimSpace(data)), 10, 64)
}

func readUint(path string) uint64 {
	v, _ := readUintErr(path)
	return v
}

func readInt(path string) int64 {
	v, _ := strconv.ParseInt(readString(path), 10, 64)
	return v
}

// readMax reads a v2 limit: "max" is unlimited (the largest value).
func readMax(path string) uint64 {
	s := readString(path)
	if s == "max" {
		return ^uint64(0)
	}
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}

// readKV parses a file of "key value" lines (memory.stat, cpu.stat, ...).
func readKV(path string) map[string]uint64 {
	return parseKV(readRecord(path))
}

func parseKV(data []byte) map[string]uint64 {
	out := map[string]uint64{}
	for _, line := range strings.Split(string(bytes.TrimSpace(data)), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}
