package stats

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bosun-dev/bosun/internal/cgroupstats"
)

func TestDue(t *testing.T) {
	now := time.Now()
	const period = 10 * time.Second
	for _, c := range []struct {
		name string
		last *cgroupRead
		per  time.Duration
		want bool
	}{
		{"never read", nil, period, true},
		{"no period: every collection", &cgroupRead{at: now}, 0, true},
		{"read a moment ago", &cgroupRead{at: now.Add(-time.Second)}, period, false},
		{"read a period ago", &cgroupRead{at: now.Add(-period + 100*time.Millisecond)}, period, true},
		{"quiet, read a period ago", &cgroupRead{at: now.Add(-period), quiet: true}, period, false},
		{"quiet, read two periods ago", &cgroupRead{at: now.Add(-2*period + 100*time.Millisecond), quiet: true}, period, true},
		{"read a moment ago, limits set since", &cgroupRead{at: now, gen: 1}, period, true},
	} {
		if got := due(c.last, now, c.per, 0); got != c.want {
			t.Errorf("%s: due = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestQuietCgroupsAreReadLessOften runs collections on a cgroup tree whose
// container's CPU time changes and whose pod's does not, moving the last
// reads back in time by a period between them. A full read gives a row new
// figures (another Stats); a short read that finds the CPU time, memory
// usage and processes unchanged carries the figures forward, stamped with
// its own time.
func TestQuietCgroupsAreReadLessOften(t *testing.T) {
	p := cgroupFixture(t)
	p.period = 10 * time.Second
	ctx := context.Background()
	const ctr, pod = "/kubepods/burstable/poduid-1/c1", "/kubepods/burstable/poduid-1"
	write := func(ctrl, cg, file, v string) {
		if err := os.WriteFile(filepath.Join(p.Cgroups.Root, ctrl, cg, file), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setUsage := func(v string) { write("cpuacct", ctr, "cpuacct.usage", v) }
	elapse := func(d time.Duration) {
		for _, r := range p.reads {
			r.at, r.full = r.at.Add(-d), r.full.Add(-d)
		}
	}
	collect := func() map[string]cgroupSnap {
		s, err := p.collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rows := map[string]cgroupSnap{}
		for _, r := range s.cgroups {
			rows[r.id] = r
		}
		if len(rows) == 0 {
			t.Fatal("no cgroup rows")
		}
		return rows
	}

	first := collect()
	setUsage("4000000000")
	// A collection right after the last (a request's): nothing is due.
	again := collect()
	if got := again[ctr].st.CPU.UsageNanos; got != 2e9 || again[ctr].st != first[ctr].st || !again[ctr].at.Equal(first[ctr].at) {
		t.Errorf("re-read within half a period: usage %d read at %v", got, again[ctr].at)
	}
	elapse(p.period)
	second := collect()
	if got := second[ctr].st.CPU.UsageNanos; got != 4e9 {
		t.Errorf("the container's usage a period later: %d, want 4e9", got)
	}
	// The pod's CPU time, memory and processes are as they were: its
	// figures are carried, confirmed at this collection.
	if second[pod].st != first[pod].st {
		t.Error("the unchanged pod's cgroup was read in full a period later")
	}
	if !second[pod].at.After(first[pod].at) {
		t.Errorf("the pod's carried figures kept their old time %v", second[pod].at)
	}
	// The pod is quiet and skips a collection. The container's usage
	// changed: it is read in full at the next.
	setUsage("5000000000")
	elapse(p.period)
	third := collect()
	if third[pod].st != second[pod].st || third[pod].at.After(second[pod].at) {
		t.Error("a quiet cgroup was looked at again after one period")
	}
	if got := third[ctr].st.CPU.UsageNanos; got != 5e9 {
		t.Errorf("the busy container's usage: %d, want 5e9", got)
	}
	// Two periods on, the pod is looked at: its memory usage changed, so
	// it is read in full.
	write("memory", pod, "memory.usage_in_bytes", "9437184")
	elapse(p.period)
	fourth := collect()
	if fourth[pod].st == second[pod].st || fourth[pod].st.Memory.Usage != 9437184 {
		t.Errorf("a quiet cgroup whose memory changed was not read in full after two periods (usage %d)", fourth[pod].st.Memory.Usage)
	}
	// Unchanged figures are carried for a minute at most.
	collectAfter := func(d time.Duration) map[string]cgroupSnap { elapse(d); return collect() }
	fifth := collectAfter(2 * p.period)
	if fifth[pod].st != fourth[pod].st {
		t.Error("the pod, unchanged since its last full read, was read in full")
	}
	if sixth := collectAfter(fullReadEvery); sixth[pod].st == fifth[pod].st {
		t.Error("the pod's figures were carried for longer than a minute")
	}
	// Pages waiting to be written out at a full read: the pod is read in
	// full at each look until it has none, though it does not run.
	const stat = "total_cache 1048576\ntotal_rss 4194304\ntotal_inactive_file 524288\npgfault 10\ntotal_pgfault 20\n"
	write("memory", pod, "memory.stat", stat+"total_dirty 4096\n")
	write("memory", pod, "memory.usage_in_bytes", "9441280")
	if dirty := collectAfter(2 * p.period); dirty[pod].st.Memory.Dirty != 4096 {
		t.Fatalf("the pod's dirty pages: %d, want 4096", dirty[pod].st.Memory.Dirty)
	}
	write("memory", pod, "memory.stat", stat+"total_dirty 0\n")
	written := collectAfter(2 * p.period)
	if written[pod].st.Memory.Dirty != 0 {
		t.Errorf("the pod's dirty pages written out, still %d reported", written[pod].st.Memory.Dirty)
	}
	if clean := collectAfter(2 * p.period); clean[pod].st != written[pod].st {
		t.Error("the pod, with no dirty pages and unchanged, was read in full")
	}
	fourth = collect()
	// Limits set on the pod's cgroup: it alone is read at the next
	// collection, even within half a period of the last.
	cgroupstats.LimitsChangedOf(pod)
	limited := collect()
	if limited[pod].st == fourth[pod].st {
		t.Error("the pod's cgroup was not read again after its limits were set")
	}
	if limited[ctr].st != fourth[ctr].st {
		t.Error("the container's cgroup was read again after its pod's limits were set")
	}
	// Limits set by the agent (a resize): every cgroup is read at the next
	// collection, quiet or not.
	setUsage("5500000000")
	cgroupstats.LimitsChanged()
	if got := collect()[ctr].st.CPU.UsageNanos; got != 5.5e9 {
		t.Errorf("after limits were set: usage %d, want 5.5e9", got)
	}
	// Without a period (no Run), every collection reads every cgroup.
	p.period = 0
	setUsage("6000000000")
	if got := collect()[ctr].st.CPU.UsageNanos; got != 6e9 {
		t.Errorf("without a period: usage %d, want 6e9", got)
	}
}

// TestRowsCarryTheirReadsTime: a row answered from an earlier read carries
// that read's time; what every collection reads carries the collection's.
func TestRowsCarryTheirReadsTime(t *testing.T) {
	p := cgroupFixture(t)
	p.period = 10 * time.Second
	ctx := context.Background()
	first, err := p.collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	second, err := p.collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var page bytes.Buffer
	if err := renderCadvisor(second, &page); err != nil {
		t.Fatal(err)
	}
	stamp := func(prefix string) string {
		for _, line := range strings.Split(page.String(), "\n") {
			if strings.HasPrefix(line, prefix) {
				return line[strings.LastIndexByte(line, ' ')+1:]
			}
		}
		t.Fatalf("no %s sample", prefix)
		return ""
	}
	readAt, collectedAt := strconv.FormatInt(first.at.UnixMilli(), 10), strconv.FormatInt(second.at.UnixMilli(), 10)
	if readAt == collectedAt {
		t.Fatal("the two collections share a millisecond")
	}
	if got := stamp(`container_cpu_usage_seconds_total{container="app"`); got != readAt {
		t.Errorf("the container's CPU stamped %s, want its read's %s", got, readAt)
	}
	if got := stamp(`container_last_seen{container="app"`); got != collectedAt {
		t.Errorf("last seen stamped %s, want the collection's %s", got, collectedAt)
	}
}
