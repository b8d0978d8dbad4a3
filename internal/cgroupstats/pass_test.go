package cgroupstats

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// A pass reads what Read reads, and a parent's processes are its own and
// every descendant's, however the cgroups are asked for.
func TestPassReadsAsRead(t *testing.T) {
	root := t.TempDir()
	for dir, procs := range map[string]string{
		"kubepods":                    "",
		"kubepods/besteffort":         "1\n",
		"kubepods/besteffort/poda":    "",
		"kubepods/besteffort/poda/c1": "11\n12\n",
		"kubepods/besteffort/poda/c2": "13\n",
		"kubepods/besteffort/podb/c3": "21\n",
	} {
		write(t, filepath.Join(root, "cpu", dir), map[string]string{"cgroup.procs": procs, "cpu.shares": "2\n"})
		write(t, filepath.Join(root, "memory", dir), map[string]string{"memory.usage_in_bytes": "4096\n", "memory.stat": "total_inactive_file 1024\n"})
	}
	r := New(root)
	pass := r.NewPass()
	// Children first and parents after, then the other way round.
	for _, name := range []string{"/kubepods/besteffort/poda/c1", "/kubepods/besteffort/poda", "/kubepods", "/kubepods/besteffort/podb/c3", "/kubepods/besteffort"} {
		want, err := r.Read(name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pass.Read(name)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(want.Procs)
		slices.Sort(got.Procs)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the pass read %+v, Read %+v", name, got, want)
		}
	}
	all, _ := pass.Read("/kubepods")
	slices.Sort(all.Procs)
	if !slices.Equal(all.Procs, []int{1, 11, 12, 13, 21}) {
		t.Errorf("kubepods' processes %v", all.Procs)
	}
	if _, err := pass.Read("/kubepods/gone"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing cgroup: %v, want not-exist", err)
	}
}

// Each process's open files are counted once per pass: a later pass sees
// what changed.
func TestPassCountsOpenFilesOnce(t *testing.T) {
	pid := os.Getpid()
	pass := New(t.TempDir()).NewPass()
	before, _ := pass.OpenFiles([]int{pid})
	if before == 0 {
		t.Fatal("no open files counted for the test's own process")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if again, _ := pass.OpenFiles([]int{pid, pid}); again != 2*before {
		t.Errorf("the same pass counted %d for the process twice, want %d (its first count, twice)", again, 2*before)
	}
	if fresh, _ := New(t.TempDir()).NewPass().OpenFiles([]int{pid}); fresh != before+1 {
		t.Errorf("a new pass counted %d, want %d with the file opened since", fresh, before+1)
	}
	if v, ok := pass.MaxOpenFilesSoft(pid); !ok || v == 0 {
		t.Errorf("soft open-files limit %d, %v", v, ok)
	}
}

func TestReadFast(t *testing.T) {
	dir := t.TempDir()
	big := make([]byte, 10000)
	for i := range big {
		big[i] = byte('0' + i%10)
	}
	write(t, dir, map[string]string{"big": string(big), "empty": ""})
	if got := readFast(filepath.Join(dir, "big")); string(got) != string(big) {
		t.Errorf("read %d bytes of a 10000-byte file", len(got))
	}
	if got := readFast(filepath.Join(dir, "empty")); got == nil || len(got) != 0 {
		t.Errorf("an empty file read as %v", got)
	}
	if got := readFast(filepath.Join(dir, "missing")); got != nil {
		t.Errorf("a missing file read as %q", got)
	}
}
