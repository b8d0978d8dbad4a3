package podsync

import (
	"testing"
	"time"

	critest "k8s.io/cri-api/pkg/apis/testing"
)

// crashLoopBackOff.maxContainerRestartPeriod is the crash-loop ceiling; one
// below upstream's first delay (10 s) is the first delay too.
func TestSyncerRestartBackOffCeiling(t *testing.T) {
	cfg := SyncerConfig{Runtime: critest.NewFakeRuntimeService(), Images: &ImagePuller{}, Volumes: &fakeVolumes{}}
	for _, tc := range []struct {
		max, wantInitial, wantMax time.Duration
	}{
		{0, 10 * time.Second, 5 * time.Minute},
		{time.Minute, 10 * time.Second, time.Minute},
		{3 * time.Second, 3 * time.Second, 3 * time.Second},
	} {
		cfg.MaxRestartBackOff = tc.max
		s, err := NewSyncer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if s.backoff.Initial != tc.wantInitial || s.backoff.Max != tc.wantMax {
			t.Errorf("maxContainerRestartPeriod %s: back-off %s doubling to %s, want %s to %s", tc.max, s.backoff.Initial, s.backoff.Max, tc.wantInitial, tc.wantMax)
		}
	}
}
