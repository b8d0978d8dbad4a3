package cgroupstats

import (
	"path/filepath"
	"testing"
	"time"
)

// A cgroup's limits are kept between reads, and read again after
// LimitsChanged, LimitsChangedOf it, or once they are old; its usage is
// read every time.
func TestLimitsKeptUntilChanged(t *testing.T) {
	root := t.TempDir()
	name := "/kubepods/podabc/c1"
	set := func(shares, quota, mem, usage string) {
		write(t, filepath.Join(root, "cpu", name), map[string]string{"cpu.shares": shares, "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": quota})
		write(t, filepath.Join(root, "memory", name), map[string]string{"memory.limit_in_bytes": mem, "memory.usage_in_bytes": usage})
	}
	set("512", "50000", "1000", "10")
	r := New(root)
	read := func() *Stats {
		t.Helper()
		s, err := r.Read(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := read(); s.CPU.Shares != 512 || s.CPU.QuotaUS != 50000 || s.Memory.Limit != 1000 || s.Memory.Usage != 10 {
		t.Fatalf("first read: %+v %+v", s.CPU, s.Memory)
	}
	set("1024", "80000", "2000", "20")
	if s := read(); s.CPU.Shares != 512 || s.Memory.Limit != 1000 || s.Memory.Usage != 20 {
		t.Errorf("before LimitsChanged: limits %d %d (want the kept 512 1000), usage %d (want the new 20)", s.CPU.Shares, s.Memory.Limit, s.Memory.Usage)
	}
	LimitsChanged()
	if s := read(); s.CPU.Shares != 1024 || s.CPU.QuotaUS != 80000 || s.Memory.Limit != 2000 {
		t.Errorf("after LimitsChanged: %+v %+v", s.CPU, s.Memory)
	}
	// Limits set on another cgroup leave these kept; set on this one, they
	// are read again.
	set("1536", "80000", "2500", "25")
	LimitsChangedOf("/kubepods/podother")
	if s := read(); s.CPU.Shares != 1024 || s.Memory.Limit != 2000 {
		t.Errorf("after another cgroup's limits were set: limits %d %d, want the kept 1024 2000", s.CPU.Shares, s.Memory.Limit)
	}
	LimitsChangedOf("kubepods/podabc/c1/")
	if s := read(); s.CPU.Shares != 1536 || s.Memory.Limit != 2500 {
		t.Errorf("after its own limits were set: limits %d %d, want 1536 2500", s.CPU.Shares, s.Memory.Limit)
	}
	// Someone else's change is seen once the kept limits are old.
	set("2048", "80000", "3000", "30")
	r.mu.Lock()
	l := r.limits[name]
	l.at = l.at.Add(-limitsTTL)
	r.limits[name] = l
	r.mu.Unlock()
	if s := read(); s.CPU.Shares != 2048 || s.Memory.Limit != 3000 {
		t.Errorf("after the TTL: %+v %+v", s.CPU, s.Memory)
	}
	// A cgroup not read for long is forgotten.
	r.ForgetOldLimits(time.Now().Add(3 * limitsTTL))
	if len(r.limits) != 0 {
		t.Errorf("limits of cgroups not read for %s kept: %v", 3*limitsTTL, r.limits)
	}
}
