package memorymanager

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The files in testdata were written by upstream's own state package
// (k8s.io/kubernetes v1.36.3, pkg/kubelet/cm/memorymanager/state) for the
// contents below: Bosun's must be the same bytes, checksum included, and
// read back.
func TestStateFileIsUpstreams(t *testing.T) {
	dir := t.TempDir()
	machine := NUMANodeMap{
		0: {NumberOfAssignments: 2, Cells: []int{0}, MemoryMap: map[corev1.ResourceName]*MemoryTable{
			corev1.ResourceMemory: {TotalMemSize: 4 << 30, SystemReserved: 1 << 30, Allocatable: 3 << 30, Reserved: 256 << 20, Free: 3<<30 - 256<<20},
			"hugepages-2Mi":       {},
		}},
		1: {Cells: []int{1}, MemoryMap: map[corev1.ResourceName]*MemoryTable{
			corev1.ResourceMemory: {TotalMemSize: 4 << 30, Allocatable: 4 << 30, Free: 4 << 30},
		}},
	}
	entries := ContainerMemoryAssignments{"pod-uid": {
		"main": {{NUMAAffinity: []int{0}, Type: corev1.ResourceMemory, Size: 256 << 20}},
		"side": {{NUMAAffinity: []int{0}, Type: corev1.ResourceMemory, Size: 0}},
	}}
	for _, tc := range []struct {
		policy, file string
		machine      NUMANodeMap
		entries      ContainerMemoryAssignments
	}{
		{PolicyNone, "upstream_none_state", NUMANodeMap{}, ContainerMemoryAssignments{}},
		{PolicyStatic, "upstream_static_state", machine, entries},
	} {
		path := filepath.Join(dir, tc.policy)
		if err := writeState(path, tc.policy, tc.machine, tc.entries); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		want, err := os.ReadFile(filepath.Join("testdata", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s:\n got %s\nwant %s", tc.policy, got, want)
		}
		c, err := readState(filepath.Join("testdata", tc.file), tc.policy)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if len(c.MachineState) != len(tc.machine) || len(c.Entries) != len(tc.entries) {
			t.Errorf("%s read back as %+v", tc.file, c)
		}
	}
	if _, err := readState(filepath.Join("testdata", "upstream_static_state"), PolicyNone); err == nil ||
		err.Error() != `[memorymanager] configured policy "None" differs from state checkpoint policy "Static"` {
		t.Errorf("another policy's file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	data, _ := os.ReadFile(filepath.Join("testdata", "upstream_static_state"))
	if err := os.WriteFile(bad, []byte(string(data[:len(data)-3])+"7}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readState(bad, PolicyStatic); err == nil {
		t.Error("a file with a wrong checksum was read")
	}
}
