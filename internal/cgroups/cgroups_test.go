package cgroups

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func TestV1PodCgroup(t *testing.T) {
	root := t.TempDir()
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "blkio"} {
		_ = os.Mkdir(filepath.Join(root, c), 0o755)
	}
	m := New(root)
	if m.V2() {
		t.Fatal("v1 layout detected as v2")
	}
	pod := "/kubepods/burstable/pod123"
	if err := m.Ensure(pod, Limits{CPUShares: 512, CPUQuotaUS: 50000, CPUPeriodUS: 100000, MemoryBytes: 64 << 20, Pids: 100}); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"cpu/kubepods/burstable/pod123/cpu.shares":               "512",
		"cpu/kubepods/burstable/pod123/cpu.cfs_quota_us":         "50000",
		"cpu/kubepods/burstable/pod123/cpu.cfs_period_us":        "100000",
		"memory/kubepods/burstable/pod123/memory.limit_in_bytes": "67108864",
		"pids/kubepods/burstable/pod123/pids.max":                "100",
	} {
		if got := read(t, filepath.Join(root, file)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "memory/kubepods/burstable/pod123/memory.usage_in_bytes"), []byte("1234\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := m.MemoryUsage(pod); err != nil || got != 1234 {
		t.Errorf("memory usage %d, %v; want 1234", got, err)
	}
	if _, err := m.MemoryUsage("/kubepods/none"); err == nil {
		t.Error("memory usage of a missing cgroup read without error")
	}
	if _, err := os.Stat(filepath.Join(root, "blkio/kubepods")); err == nil {
		t.Error("made a cgroup in a hierarchy pods do not use")
	}
	if got := m.Children("/kubepods/burstable"); len(got) != 1 || got[0] != "pod123" {
		t.Errorf("children %v", got)
	}
	// No quota: -1; no memory limit: the file is left alone.
	if err := m.Ensure("/kubepods/burstable/pod456", Limits{CPUShares: 2, CPUPeriodUS: 100000}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "cpu/kubepods/burstable/pod456/cpu.cfs_quota_us")); got != "-1" {
		t.Errorf("quota without a limit: %s", got)
	}
	if _, err := os.Stat(filepath.Join(root, "memory/kubepods/burstable/pod456/memory.limit_in_bytes")); err == nil {
		t.Error("memory limit written without a limit")
	}
	// Remove takes empty folders (a container's, left by the runtime) too.
	empty := "/kubepods/besteffort/pod789"
	for _, c := range controllers {
		_ = os.MkdirAll(filepath.Join(root, c, empty, "ctr"), 0o755)
	}
	if err := m.Remove(empty); err != nil {
		t.Fatal(err)
	}
	for _, c := range controllers {
		if _, err := os.Stat(filepath.Join(root, c, empty)); !os.IsNotExist(err) {
			t.Errorf("%s: %v", c, err)
		}
	}
}

func TestV2PodCgroup(t *testing.T) {
	root := t.TempDir()
	_ = os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644)
	m := New(root)
	if !m.V2() {
		t.Fatal("v2 layout not detected")
	}
	if err := m.Ensure("/kubepods/pod1", Limits{CPUShares: 1024, CPUQuotaUS: 200000, CPUPeriodUS: 100000, MemoryBytes: 1 << 30, Pids: 50}); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"cgroup.subtree_control":          "+cpu +memory +pids",
		"kubepods/cgroup.subtree_control": "+cpu +memory +pids",
		"kubepods/pod1/cpu.weight":        "39",
		"kubepods/pod1/cpu.max":           "200000 100000",
		"kubepods/pod1/memory.max":        "1073741824",
		"kubepods/pod1/pids.max":          "50",
	} {
		if got := read(t, filepath.Join(root, file)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
}

func TestSharesToWeight(t *testing.T) {
	for shares, want := range map[uint64]uint64{2: 1, 1024: 39, 262144: 10000} {
		if got := SharesToWeight(shares); got != want {
			t.Errorf("SharesToWeight(%d) = %d, want %d", shares, got, want)
		}
	}
}

func TestMissing(t *testing.T) {
	root := t.TempDir()
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids"} {
		if err := os.MkdirAll(filepath.Join(root, c, "present"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "memory", "half"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := New(root)
	if got := m.Missing("/present"); len(got) != 0 {
		t.Errorf("Missing(/present) = %v, want none", got)
	}
	got := m.Missing("/half")
	want := []string{filepath.Join(root, "cpu"), filepath.Join(root, "cpuacct"), filepath.Join(root, "pids")}
	if !slices.Equal(got, want) {
		t.Errorf("Missing(/half) = %v, want %v", got, want)
	}
}

// Update sets limits on a cgroup something else made, and refuses one that
// is missing in a hierarchy instead of making it.
func TestUpdateExistingCgroupOnly(t *testing.T) {
	root := t.TempDir()
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids"} {
		_ = os.Mkdir(filepath.Join(root, c), 0o755)
	}
	m := New(root)
	err := m.Update("/system.slice", Limits{CPUShares: 102, MemoryBytes: 64 << 20})
	if err == nil || !strings.Contains(err.Error(), `cgroup "/system.slice" has some missing paths: `+filepath.Join(root, "cpu", "system.slice")) {
		t.Fatalf("missing cgroup: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "cpu", "system.slice")); err == nil {
		t.Fatal("Update made the missing cgroup")
	}
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids"} {
		_ = os.Mkdir(filepath.Join(root, c, "system.slice"), 0o755)
	}
	if err := m.Update("/system.slice", Limits{CPUShares: 102, MemoryBytes: 64 << 20, Pids: 1000}); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{"cpu/system.slice/cpu.shares": "102", "memory/system.slice/memory.limit_in_bytes": "67108864",
		"pids/system.slice/pids.max": "1000"} {
		if got := read(t, filepath.Join(root, file)); got != want {
			t.Errorf("%s = %s, want %s", file, got, want)
		}
	}
}
