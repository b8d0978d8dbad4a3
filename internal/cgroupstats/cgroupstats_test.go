package cgroupstats

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadV1(t *testing.T) {
	root := t.TempDir()
	name := "/kubepods/burstable/podabc/c1"
	write(t, filepath.Join(root, "cpuacct", name), map[string]string{
		"cpuacct.usage": "5000000000\n",
		"cpuacct.stat":  "user 300\nsystem 120\n",
	})
	write(t, filepath.Join(root, "cpu", name), map[string]string{
		"cpu.stat":          "nr_periods 40\nnr_throttled 7\nthrottled_time 900000000\nnr_bursts 2\nburst_time 3000\n",
		"cpu.shares":        "512\n",
		"cpu.cfs_period_us": "100000\n",
		"cpu.cfs_quota_us":  "50000\n",
		"cgroup.procs":      "11\n12\n",
	})
	write(t, filepath.Join(root, "cpu", name, "child"), map[string]string{"cgroup.procs": "13\n"})
	write(t, filepath.Join(root, "memory", name), map[string]string{
		"memory.usage_in_bytes":       "10485760\n",
		"memory.max_usage_in_bytes":   "20971520\n",
		"memory.failcnt":              "3\n",
		"memory.kmem.usage_in_bytes":  "65536\n",
		"memory.memsw.usage_in_bytes": "11534336\n",
		"memory.limit_in_bytes":       "67108864\n",
		"memory.soft_limit_in_bytes":  "9223372036854771712\n",
		"memory.memsw.limit_in_bytes": "9223372036854771712\n",
		"memory.oom_control":          "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
		"memory.stat": "cache 1\nrss 2\npgfault 100\npgmajfault 4\ntotal_cache 4194304\ntotal_rss 5242880\n" +
			"total_mapped_file 1048576\ntotal_active_file 2097152\ntotal_inactive_file 1048576\ntotal_dirty 4096\n" +
			"total_writeback 8192\ntotal_pgfault 150\ntotal_pgmajfault 6\n",
	})
	write(t, filepath.Join(root, "pids", name), map[string]string{"pids.current": "9\n", "pids.max": "max\n"})
	write(t, filepath.Join(root, "blkio", name), map[string]string{
		"blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n253:1 Read 1\n253:1 Write 2\nTotal 12288\n",
		"blkio.throttle.io_serviced_recursive":      "8:0 Read 3\n8:0 Write 5\n253:1 Read 7\n253:1 Write 9\nTotal 8\n",
	})

	r := New(root)
	if r.V2() {
		t.Fatal("a tree without cgroup.controllers was taken for v2")
	}
	r.SetSwap(true)
	s, err := r.Read(name)
	if err != nil {
		t.Fatal(err)
	}
	c := s.CPU
	if c.UsageNanos != 5e9 || c.UserNanos != 3e9 || c.SystemNanos != 1.2e9 {
		t.Errorf("cpu time: %+v", c)
	}
	if c.Periods != 40 || c.ThrottledPeriods != 7 || c.ThrottledNanos != 9e8 || c.BurstPeriods != 2 || c.BurstNanos != 3000 {
		t.Errorf("cfs: %+v", c)
	}
	if !c.HasLimits || c.Shares != 512 || c.PeriodUS != 100000 || c.QuotaUS != 50000 {
		t.Errorf("cpu limits: %+v", c)
	}
	m := s.Memory
	if m.Usage != 10485760 || m.MaxUsage != 20971520 || m.Failcnt != 3 || m.KernelUsage != 65536 {
		t.Errorf("memory usage: %+v", m)
	}
	if m.Swap != 1048576 {
		t.Errorf("swap = %d, want memsw usage minus usage 1048576", m.Swap)
	}
	if m.Cache != 4194304 || m.RSS != 5242880 || m.MappedFile != 1048576 || m.ActiveFile != 2097152 || m.InactiveFile != 1048576 {
		t.Errorf("memory.stat: %+v", m)
	}
	if m.WorkingSet != 10485760-1048576 {
		t.Errorf("working set = %d, want usage minus inactive file", m.WorkingSet)
	}
	if m.Pgfault != 100 || m.Pgmajfault != 4 || m.HierPgfault != 150 || m.HierPgmajfault != 6 || m.OOMKills != 2 {
		t.Errorf("faults and OOM kills: %+v", m)
	}
	if m.Dirty != 4096 || m.Writeback != 8192 {
		t.Errorf("dirty/writeback: %+v", m)
	}
	if !m.HasLimits || m.Limit != 67108864 || m.Reservation != 9223372036854771712 {
		t.Errorf("memory limits: %+v", m)
	}
	if s.Pids.Current != 9 || s.Pids.Max != 0 {
		t.Errorf("pids: %+v", s.Pids)
	}
	want := []DeviceIO{{8, 0, 4096, 8192, 3, 5}, {253, 1, 1, 2, 7, 9}}
	if len(s.IO) != 2 || s.IO[0] != want[0] || s.IO[1] != want[1] {
		t.Errorf("io = %+v, want %+v", s.IO, want)
	}
	if len(s.Procs) != 2 {
		t.Errorf("procs = %v, want the cgroup's own two (not its child's)", s.Procs)
	}

	if _, err := r.Read("/kubepods/gone"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing cgroup: %v, want not-exist", err)
	}

	// A node without swap: no swap is read (memsw usage would be the
	// memory usage, read at another instant). A cgroup without a CPU quota:
	// no CFS figures.
	write(t, filepath.Join(root, "cpu", name), map[string]string{"cpu.cfs_quota_us": "-1\n"})
	s, err = New(root).Read(name)
	if err != nil {
		t.Fatal(err)
	}
	if s.Memory.Swap != 0 || s.CPU.Periods != 0 || s.CPU.ThrottledNanos != 0 || s.CPU.QuotaUS != 0 {
		t.Errorf("without swap and quota: swap %d, cfs %+v", s.Memory.Swap, s.CPU)
	}
	// A cgroup whose first file is missing but whose folder is there reads
	// as zeros, not as gone.
	if err := os.Remove(filepath.Join(root, "cpuacct", name, "cpuacct.usage")); err != nil {
		t.Fatal(err)
	}
	if s, err = r.Read(name); err != nil || s.CPU.UsageNanos != 0 || s.Memory.Usage != 10485760 {
		t.Errorf("without cpuacct.usage: %v, %+v", err, s)
	}
}

func TestReadV2(t *testing.T) {
	root := t.TempDir()
	write(t, root, map[string]string{"cgroup.controllers": "cpu memory pids io\n"})
	name := "/kubepods.slice/kubepods-pod1.slice/cri-containerd-c1.scope"
	write(t, filepath.Join(root, name), map[string]string{
		"cpu.stat":            "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 10\nnr_throttled 2\nthrottled_usec 300\n",
		"cpu.weight":          "79\n",
		"cpu.max":             "max 100000\n",
		"memory.current":      "8192\n",
		"memory.peak":         "16384\n",
		"memory.swap.current": "0\n",
		"memory.stat":         "anon 4096\nfile 2048\nfile_mapped 1024\nactive_file 1024\ninactive_file 1024\nkernel 512\npgfault 30\npgmajfault 1\n",
		"memory.events":       "low 0\nhigh 4\nmax 5\noom 1\noom_kill 1\n",
		"memory.max":          "max\n",
		"memory.low":          "0\n",
		"memory.swap.max":     "0\n",
		"pids.current":        "4\n",
		"pids.max":            "1024\n",
		"io.stat":             "8:16 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n",
		"cgroup.procs":        "42\n",
	})
	r := New(root)
	if !r.V2() {
		t.Fatal("cgroup.controllers at the root: want v2")
	}
	s, err := r.Read(name)
	if err != nil {
		t.Fatal(err)
	}
	if s.CPU.UsageNanos != 2e6 || s.CPU.UserNanos != 1.5e6 || s.CPU.ThrottledNanos != 3e5 || s.CPU.QuotaUS != 0 || s.CPU.PeriodUS != 100000 {
		t.Errorf("cpu: %+v", s.CPU)
	}
	if s.CPU.Shares != WeightToShares(79) || s.CPU.Shares < 2000 || s.CPU.Shares > 2100 {
		t.Errorf("shares from weight 79 = %d, want about 2048", s.CPU.Shares)
	}
	m := s.Memory
	if m.Usage != 8192 || m.MaxUsage != 16384 || m.RSS != 4096 || m.Cache != 2048 || m.WorkingSet != 7168 || m.KernelUsage != 512 {
		t.Errorf("memory: %+v", m)
	}
	if m.OOMKills != 1 || m.EventsHigh != 4 || m.EventsMax != 5 || m.Limit != ^uint64(0) {
		t.Errorf("memory events and limit: %+v", m)
	}
	if s.Pids.Current != 4 || s.Pids.Max != 1024 {
		t.Errorf("pids: %+v", s.Pids)
	}
	if len(s.IO) != 1 || s.IO[0] != (DeviceIO{8, 16, 100, 200, 1, 2}) {
		t.Errorf("io: %+v", s.IO)
	}
	if len(s.Procs) != 1 || s.Procs[0] != 42 {
		t.Errorf("procs: %v", s.Procs)
	}
}

func TestParseProcCgroup(t *testing.T) {
	v1 := []byte("9:name=systemd:/\n4:memory:/kubepods/pod1/c\n2:cpu,cpuacct:/kubepods/pod1/c\n0::/\n")
	if got := parseProcCgroup(v1, false); got != "/kubepods/pod1/c" {
		t.Errorf("v1: %q", got)
	}
	if got := parseProcCgroup([]byte("0::/kubepods.slice/x.scope\n"), true); got != "/kubepods.slice/x.scope" {
		t.Errorf("v2: %q", got)
	}
	if got := parseProcCgroup([]byte("garbage"), false); got != "" {
		t.Errorf("garbage: %q", got)
	}
}

func TestOwnProcess(t *testing.T) {
	fds, _ := OpenFiles([]int{os.Getpid()})
	if fds < 3 {
		t.Errorf("this test process has %d open files, want at least stdin, stdout, stderr", fds)
	}
	if v, ok := MaxOpenFilesSoft(os.Getpid()); !ok || v == 0 {
		t.Errorf("max open files: %d %v", v, ok)
	}
}

// TestUnchanged reads a v1 and a v2 cgroup in full, then changes each of
// the three figures the short read looks at, one at a time.
func TestUnchanged(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		root := t.TempDir()
		name := "/kubepods/podabc/c1"
		cpuDir, cpuFile, cpuValue, cpuNext := filepath.Join(root, "cpuacct", name), "cpuacct.usage", "5000000000\n", "5000000001\n"
		memDir, memFile := filepath.Join(root, "memory", name), "memory.usage_in_bytes"
		procsDir := filepath.Join(root, "cpu", name)
		if v2 {
			write(t, root, map[string]string{"cgroup.controllers": "cpu memory\n"})
			cpuDir, cpuFile, cpuValue, cpuNext = filepath.Join(root, name), "cpu.stat", "usage_usec 5000000\nuser_usec 1\n", "usage_usec 5000001\nuser_usec 1\n"
			memDir, memFile, procsDir = cpuDir, "memory.current", cpuDir
		}
		write(t, cpuDir, map[string]string{cpuFile: cpuValue})
		write(t, memDir, map[string]string{memFile: "10485760\n"})
		write(t, procsDir, map[string]string{"cgroup.procs": "11\n12\n"})
		r := New(root)
		if r.V2() != v2 {
			t.Fatalf("v2 %v: detected as %v", v2, r.V2())
		}
		last, err := r.Read(name)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Unchanged(name, last) {
			t.Errorf("v2 %v: a cgroup read a moment ago is not unchanged", v2)
		}
		for _, c := range []struct{ dir, file, to, back string }{
			{cpuDir, cpuFile, cpuNext, cpuValue},
			{memDir, memFile, "10489856\n", "10485760\n"},
			{procsDir, "cgroup.procs", "11\n12\n13\n", "11\n12\n"},
		} {
			write(t, c.dir, map[string]string{c.file: c.to})
			if r.Unchanged(name, last) {
				t.Errorf("v2 %v: %s changed to %q, still unchanged", v2, c.file, c.to)
			}
			write(t, c.dir, map[string]string{c.file: c.back})
		}
		if err := os.RemoveAll(cpuDir); err != nil {
			t.Fatal(err)
		}
		if r.Unchanged(name, last) {
			t.Errorf("v2 %v: a cgroup that is gone is unchanged", v2)
		}
	}
}
