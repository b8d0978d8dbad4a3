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
// reads back in time by a period between them. A row's figures are the
// read's own: a re-read gives the row new ones.
func TestQuietCgroupsAreReadLessOften(t *testing.T) {
	p := cgroupFixture(t)
	p.period = 10 * time.Second
	ctx := context.Background()
	const ctr, pod = "/kubepods/burstable/poduid-1/c1", "/kubepods/burstable/poduid-1"
	usage := filepath.Join(p.Cgroups.Root, "cpuacct", ctr, "cpuacct.usage")
	setUsage := func(v string) {
		if err := os.WriteFile(usage, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	elapse := func(d time.Duration) {
		for _, r := range p.reads {
			r.at = r.at.Add(-d)
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
	if second[pod].st == first[pod].st {
		t.Error("the pod's cgroup was not read again a period later")
	}
	// The pod's figures were the same twice: it is quiet and skips a
	// collection. The container's changed: it is read at the next.
	setUsage("5000000000")
	elapse(p.period)
	third := collect()
	if third[pod].st != second[pod].st {
		t.Error("a quiet cgroup was read again after one period")
	}
	if got := third[ctr].st.CPU.UsageNanos; got != 5e9 {
		t.Errorf("the busy container's usage: %d, want 5e9", got)
	}
	elapse(p.period)
	fourth := collect()
	if fourth[pod].st == second[pod].st {
		t.Error("a quiet cgroup was not read after two periods")
	}
	// Limits set on the pod's cgroup: it alone is read at the next
	// collection, even within half a period of the last.
	cgroupstats.LimitsChangedOf(pod)
	fifth := collect()
	if fifth[pod].st == fourth[pod].st {
		t.Error("the pod's cgroup was not read again after its limits were set")
	}
	if fifth[ctr].st != fourth[ctr].st {
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
