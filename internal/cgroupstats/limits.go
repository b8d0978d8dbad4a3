package cgroupstats

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// A cgroup's limits (CPU shares, quota and period, the memory limits, the
// pids limit) change only when someone sets them, which for a node's pods is
// the agent itself: at a container's creation and at an in-place resize.
// They are read once and kept, and read again when LimitsChanged was called
// since, or after limitsTTL (a change made by someone else).
const limitsTTL = time.Minute

// limitsGeneration counts LimitsChanged calls.
var limitsGeneration atomic.Uint64

// LimitsChanged says that some cgroup's limits were just set (a runtime's
// UpdateContainerResources, a pod or QoS cgroup written): the next read of
// every cgroup reads its limits again.
func LimitsChanged() { limitsGeneration.Add(1) }

// LimitsGeneration counts LimitsChanged calls: a reader that kept a
// cgroup's figures reads them again when it moved.
func LimitsGeneration() uint64 { return limitsGeneration.Load() }

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
	gen, now := limitsGeneration.Load(), time.Now()
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
