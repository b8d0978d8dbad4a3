package cpumanager

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/utils/cpuset"
)

// The files the upstream kubelet v1.36.3 wrote (its state package, run
// once): Bosun writes the same bytes for the same state, and reads them.
const (
	upstreamNone   = `{"policyName":"none","defaultCpuSet":"","checksum":1353318690}`
	upstreamStatic = `{"policyName":"static","defaultCpuSet":"0,3-5","entries":{"0aa9b6a1-1b2c-4d5e-8f90-123456789abc":{"app":"1-2","side":"6"},"ffa9b6a1-1b2c-4d5e-8f90-123456789abc":{"x":"7"}},"checksum":2770913201}`
)

func TestCheckpointAsUpstreamWritesIt(t *testing.T) {
	none, err := (&state{}).encode("none")
	if err != nil {
		t.Fatal(err)
	}
	if string(none) != upstreamNone {
		t.Errorf("none policy file:\n got %s\nwant %s", none, upstreamNone)
	}
	s := &state{defaultSet: cpuset.New(0, 3, 4, 5), assignments: map[string]map[string]cpuset.CPUSet{
		"0aa9b6a1-1b2c-4d5e-8f90-123456789abc": {"app": cpuset.New(1, 2), "side": cpuset.New(6)},
		"ffa9b6a1-1b2c-4d5e-8f90-123456789abc": {"x": cpuset.New(7)},
	}}
	static, err := s.encode("static")
	if err != nil {
		t.Fatal(err)
	}
	if string(static) != upstreamStatic {
		t.Errorf("static policy file:\n got %s\nwant %s", static, upstreamStatic)
	}
}

func TestReadStateChecksPolicyAndChecksum(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StateFile)
	if _, err := readState(path, "static"); err != errNoState {
		t.Fatalf("missing file: %v", err)
	}
	os.WriteFile(path, []byte(upstreamNone), 0o600)
	if _, err := readState(path, "none"); err != nil {
		t.Errorf("upstream's none file: %v", err)
	}
	os.WriteFile(path, []byte(upstreamStatic), 0o600)
	s, err := readState(path, "static")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.assignments["0aa9b6a1-1b2c-4d5e-8f90-123456789abc"]["app"].String(); got != "1-2" || s.defaultSet.String() != "0,3-5" {
		t.Errorf("read %v, default %v", s.assignments, s.defaultSet)
	}
	if _, err := readState(path, "none"); err == nil || !strings.Contains(err.Error(), `configured policy "none" differs from state checkpoint policy "static"`) {
		t.Errorf("another policy's file: %v", err)
	}
	os.WriteFile(path, []byte(strings.Replace(upstreamStatic, `"x":"7"`, `"x":"6"`, 1)), 0o600)
	if _, err := readState(path, "static"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("edited file: %v", err)
	}
}
