package logrotate

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

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
