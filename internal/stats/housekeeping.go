package stats

import (
	"slices"
	"time"

	"github.com/bosun-dev/bosun/internal/cgroupstats"
)

// cgroupRead is one cgroup's last read for /metrics/cadvisor and when it
// was made: its figures and its processes' open files. A pod's network
// counters are not part of it: they are read at every collection.
type cgroupRead struct {
	at           time.Time
	st           *cgroupstats.Stats
	fds, sockets uint64
	// gen is the cgroup's cgroupstats.LimitsGeneration at the read.
	gen uint64
	// quiet: this read found the same figures as the one before it.
	quiet bool
	// full is when the figures were read in full; at is later when a
	// short read found them unchanged since (see carry).
	full time.Time
}

// fullReadEvery bounds how long a cgroup's figures are carried forward by
// short reads that found its CPU time, memory usage and processes
// unchanged: what the kernel changes without the cgroup running (its page
// cache aging between the active and inactive lists) is read at least this
// often. Dirty and writeback pages are written out by the kernel on its own
// too: a cgroup that had some at its last full read is read in full at
// every look until it has none (the kernel writes a dirty page out within
// 30 s by default).
const fullReadEvery = 2 * time.Minute

// carry is last's figures confirmed at now by a short read (the cgroup's
// CPU time, memory usage and processes unchanged, reader.Unchanged), or nil
// when a full read is due: the short read found a change, the limits were
// set since, last had pages waiting to be written out, or the figures were
// read in full over fullReadEvery ago.
func carry(last *cgroupRead, now time.Time, gen uint64, unchanged func(*cgroupstats.Stats) bool) *cgroupRead {
	if last == nil || last.gen != gen || now.Sub(last.full) >= fullReadEvery ||
		last.st.Memory.Dirty+last.st.Memory.Writeback > 0 || !unchanged(last.st) {
		return nil
	}
	c := *last
	c.at, c.quiet = now, true
	return &c
}

// same reports whether b's figures are a's (the time aside).
func (a *cgroupRead) same(b *cgroupRead) bool {
	return a.st.CPU == b.st.CPU && a.st.Memory == b.st.Memory && a.st.Pids == b.st.Pids &&
		slices.Equal(a.st.IO, b.st.IO) && slices.Equal(a.st.Procs, b.st.Procs) &&
		a.fds == b.fds && a.sockets == b.sockets
}

// due reports whether a cgroup last read as last is to be read again at
// now, collections being period apart. This is cAdvisor's dynamic
// housekeeping as the upstream kubelet runs it: a cgroup is read every
// housekeeping period while its figures change, and less often once two
// reads in a row found the same (cAdvisor doubles its interval, up to
// 15 s, then waits up to as long again at random: 15 to 30 s). Here a quiet
// cgroup is looked at every other collection (20 s), any other every
// collection; a look is a short read first (carry), and a full read only
// when it found the cgroup changed. cAdvisor counts a container's network
// in its figures, so that the broadcasts every pod's interface receives
// keep it busy; here the network counters are read at every collection,
// apart.
//
// A collection made between two periodic ones, for a request that found
// the running containers changed, reads only the cgroups it has not read
// for half a period: the new containers' and those due. A cgroup is read
// again once the agent has set its limits since the read (gen: its pod
// cgroup made or resized, a container's resources updated), so that the
// limits reported follow.
func due(last *cgroupRead, now time.Time, period time.Duration, gen uint64) bool {
	if last == nil || period <= 0 || last.gen != gen {
		return true
	}
	interval := period
	if last.quiet {
		interval = 2 * period
	}
	return now.Sub(last.at) >= interval-period/2
}
