package kernel

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

type fakeSysctl struct {
	values map[string]int
	setErr error
	sets   []string
}

func (f *fakeSysctl) GetSysctl(name string) (int, error) {
	v, ok := f.values[name]
	if !ok {
		return 0, errors.New("no " + name)
	}
	return v, nil
}

func (f *fakeSysctl) SetSysctl(name string, value int) error {
	f.sets = append(f.sets, name)
	if f.setErr != nil {
		return f.setErr
	}
	f.values[name] = value
	return nil
}

func wanted() map[string]int {
	m := map[string]int{}
	for _, t := range Tunables {
		m[t.Name] = t.Value
	}
	return m
}

func TestSetupSetsOrProtects(t *testing.T) {
	logger := klog.Background()
	ok := &fakeSysctl{values: wanted()}
	if err := setup(logger, ok, true, false); err != nil || len(ok.sets) != 0 {
		t.Errorf("every tunable right, protected: %v, set %v", err, ok.sets)
	}

	off := wanted()
	off["vm/overcommit_memory"] = 0
	off["kernel/panic"] = 0
	f := &fakeSysctl{values: off}
	err := setup(logger, f, true, false)
	if err == nil || !strings.Contains(err.Error(), "invalid kernel flag: vm/overcommit_memory, expected value: 1, actual value: 0") ||
		!strings.Contains(err.Error(), "kernel/panic, expected value: 10") || len(f.sets) != 0 {
		t.Errorf("protected, two differ: %v, set %v", err, f.sets)
	}

	if err := setup(logger, f, false, false); err != nil || len(f.sets) != 2 || f.values["vm/overcommit_memory"] != 1 || f.values["kernel/panic"] != 10 {
		t.Errorf("not protected: %v, set %v, values %v", err, f.sets, f.values)
	}

	off = wanted()
	off["kernel/panic_on_oops"] = 0
	failing := &fakeSysctl{values: off, setErr: errors.New("read-only file system")}
	if err := setup(logger, failing, false, false); err == nil || !strings.Contains(err.Error(), "setting kernel flag kernel/panic_on_oops to 1: read-only file system") {
		t.Errorf("a tunable that cannot be set: %v", err)
	}
	if err := setup(logger, failing, false, true); err != nil {
		t.Errorf("a tunable that cannot be set inside a user namespace is only logged: %v", err)
	}
	if inUserNamespace() {
		t.Log("this test runs inside a user namespace")
	}
}

// oomScoreAdj is written to the process's oom_score_adj; a refused write is
// reported, not fatal.
func TestProcessSettingsOOMScoreAdj(t *testing.T) {
	dir := t.TempDir()
	ProcessSettings(klog.Background(), dir, -999, 0)
	data, err := os.ReadFile(filepath.Join(dir, "oom_score_adj"))
	if err != nil || string(data) != "-999" {
		t.Errorf("oom_score_adj %q, %v; want -999", data, err)
	}
	if err := writeOOMScoreAdj(filepath.Join(dir, "missing"), 5); err == nil {
		t.Errorf("a write into a missing folder gave no error")
	}
}
