package logrotate

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

func TestRotateKeepsMaxFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	rt := critest.NewFakeRuntimeService()
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &Rotator{Runtime: rt, MaxSize: 10, MaxFiles: 3, Now: func() time.Time { now = now.Add(time.Second); return now }}
	for i := 0; i < 5; i++ {
		if err := os.WriteFile(path, []byte("0123456789abc"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := r.Rotate(context.Background(), "c1", path); err != nil {
			t.Fatal(err)
		}
	}
	rotated, _ := filepath.Glob(path + ".*")
	if len(rotated) != 2 {
		t.Errorf("%d rotated files, want MaxFiles-1 = 2: %v", len(rotated), rotated)
	}
	if err := os.WriteFile(path, []byte("small"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Rotate(context.Background(), "c1", path); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); string(data) != "small" {
		t.Error("a log under the size was rotated")
	}
}

// TestLogPathAskedOnce: each round rotates the running containers' logs,
// and asks the runtime for a container's log path only the first time.
func TestLogPathAskedOnce(t *testing.T) {
	dir := t.TempDir()
	rt := critest.NewFakeRuntimeService()
	running := func(ids ...string) {
		var cs []*critest.FakeContainer
		for _, id := range ids {
			cs = append(cs, &critest.FakeContainer{ContainerStatus: runtimeapi.ContainerStatus{Id: id, State: runtimeapi.ContainerState_CONTAINER_RUNNING,
				Metadata: &runtimeapi.ContainerMetadata{Name: id}, LogPath: filepath.Join(dir, id+".log")}})
		}
		rt.SetFakeContainers(cs)
	}
	statusCalls := func() (n int) {
		for _, c := range rt.GetCalls() {
			if c == "ContainerStatus" {
				n++
			}
		}
		return n
	}
	r := &Rotator{Runtime: rt, MaxSize: 10, MaxFiles: 2, Now: time.Now}
	ctx := context.Background()
	running("a", "b")
	for round := 0; round < 3; round++ {
		if err := os.WriteFile(filepath.Join(dir, "a.log"), []byte("0123456789abc"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := r.rotateAll(ctx); err != nil {
			t.Fatal(err)
		}
		if rotated, _ := filepath.Glob(filepath.Join(dir, "a.log.*")); len(rotated) != 1 {
			t.Errorf("round %d: rotated files %v, want one", round, rotated)
		}
	}
	if n := statusCalls(); n != 2 {
		t.Errorf("%d ContainerStatus calls over three rounds of two containers, want 2", n)
	}
	// A new container is asked about; one gone is forgotten.
	running("b", "c")
	if err := r.rotateAll(ctx); err != nil {
		t.Fatal(err)
	}
	if n := statusCalls(); n != 3 {
		t.Errorf("%d ContainerStatus calls after a new container, want 3", n)
	}
	if _, ok := r.logPaths["a"]; ok || len(r.logPaths) != 2 {
		t.Errorf("log paths kept: %v", r.logPaths)
	}
}
