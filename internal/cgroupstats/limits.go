package cgroupstats

import (
	"os"
	"path"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// A cgroup's limits (CPU shares, quota and period, the memory limits, the
// pids limit) change only when someone sets them, which for a node's pods is
// the agent itself: at a container's creation and at an in-place resize.
// They are read once and kept, and read again when LimitsChanged or
// LimitsChangedOf (the cgroup) was called since, or after limitsTTL (a
// change made by someone else).
const limitsTTL = time.Minute

// limitsGeneration counts LimitsChanged calls.
var limitsGeneration atomic.Uint64

// namedChanges counts LimitsChangedOf calls by cgroup.
var namedChanges struct {
	sync.Mutex
	m map[string]namedChange
}

type namedChange struct {
	n  uint64
	at time.Time
}

// LimitsChanged says that limits were just set on some cgroup, which one
// not known (a runtime's UpdateContainerResources): the next read of every
// cgroup reads its limits again.
func LimitsChanged() { limitsGeneration.Add(1) }

// LimitsChangedOf says that cgroup name's limits were just set (a pod or
// QoS cgroup written by the agent): its next read reads them again.
func LimitsChangedOf(name string) {
	name = path.Clean("/" + name)
	now := time.Now()
	namedChanges.Lock()
	defer namedChanges.Unlock()
	if namedChanges.m == nil {
		namedChanges.m = map[string]namedChange{}
	}
	if len(namedChanges.m) >= 1024 {
		// Forget old changes (gone pods' cgroups). A forgotten count moves
		// the cgroup's generation too, which costs one read, never a stale one.
		for n, c := range namedChanges.m {
			if now.Sub(c.at) > 2*limitsTTL {
				delete(namedChanges.m, n)
			}
		}
	}
	c := namedChanges.m[name]
	namedChanges.m[name] = namedChange{n: c.n + 1, at: now}
}

// LimitsGeneration moves whenever cgroup name's limits may have been set
// by the agent (LimitsChanged, or LimitsChangedOf name): a reader that
// kept the cgroup's figures reads them again when it moved.
func LimitsGeneration(name string) uint64 {
	name = path.Clean("/" + name)
	g := limitsGeneration.Load()
	namedChanges.Lock()
	c, ok := namedChanges.m[name]
	namedChanges.Unlock()
	if ok {
		g += c.n
	}
	return g
}

type limits struct {
	cpu            bool // the cpu controller's limits are there
	shares, period uint64
	quota          int64
	mem            bool // the memory controller's limits are there
	limit          uint64
	reservation    uint64
	swapLimit      uint64
	pidsMax        uint64

	at  time.Time
	gen uint64
}

func (l limits) apply(s *Stats) {
	s.CPU.HasLimits, s.CPU.Shares, s.CPU.PeriodUS, s.CPU.QuotaUS = l.cpu, l.shares, l.period, l.quota
	s.Memory.HasLimits, s.Memory.Limit, s.Memory.Reservation, s.Memory.SwapLimit = l.mem, l.limit, l.reservation, l.swapLimit
	s.Pids.Max = l.pidsMax
}

// limitsOf returns cgroup name's limits, reading them with read when they
// are not kept or may have changed.
func (r *Reader) limitsOf(name string, read func(*limits)) limits {
	gen, now := LimitsGeneration(name), time.Now()
	r.mu.Lock()
	l, ok := r.limits[name]
	r.mu.Unlock()
	if ok && l.gen == gen && now.Sub(l.at) < limitsTTL {
		return l
	}
	l = limits{at: now, gen: gen}
	read(&l)
	r.mu.Lock()
	if r.limits == nil {
		r.limits = map[string]limits{}
	}
	r.limits[name] = l
	r.mu.Unlock()
	return l
}

// ForgetOldLimits drops the limits of cgroups not read for a while (gone):
// a collection calls it before it reads.
func (r *Reader) ForgetOldLimits(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, l := range r.limits {
		if now.Sub(l.at) > 2*limitsTTL {
			delete(r.limits, name)
		}
	}
}

// throttleBlkio says whether v1's blkio counters are the throttle policy's
// files (the I/O scheduler's are not there): the same for every cgroup of
// the kernel, so looked at once.
func (r *Reader) throttleBlkio(dir string) bool {
	r.mu.Lock()
	t := r.throttle
	r.mu.Unlock()
	if t == 0 {
		if _, err := os.Stat(filepath.Join(dir, "blkio.io_service_bytes_recursive")); err == nil {
			t = 2
		} else if _, err := os.Stat(filepath.Join(dir, "blkio.throttle.io_service_bytes_recursive")); err == nil {
			t = 1
		} else {
			return true // neither (the cgroup went?): look again next time
		}
		r.mu.Lock()
		r.throttle = t
		r.mu.Unlock()
	}
	return t == 1
}
