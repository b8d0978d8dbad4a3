// Package pleg turns changes in the runtime (containers and sandboxes
// starting, exiting, vanishing) into wake-ups of the affected pods' workers,
// by relisting the runtime every period.
package pleg

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	internalapi "k8s.io/cri-api/pkg/apis"
	"k8s.io/klog/v2"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
)

// unhealthyAfter is how long without a successful relist makes PLEG unhealthy.
const unhealthyAfter = 3 * time.Minute

// Relister relists the runtime and wakes pods whose containers changed.
type Relister struct {
	rt     internalapi.RuntimeService
	period time.Duration
	wake   func(types.UID)
	mu     sync.Mutex
	last   time.Time // last successful relist
	// lastStart is when the last relist began (the relist loop's own).
	lastStart time.Time
	seen      map[string]record // container or sandbox ID -> what it was
}

// record is one container's or sandbox's state and pod.
type record struct {
	state string
	pod   types.UID
}

// podUIDLabel is the label the agent puts on every sandbox and container.
const podUIDLabel = "io.kubernetes.pod.uid"

// New returns a relister that calls wake for each pod with a change.
func New(rt internalapi.RuntimeService, period time.Duration, wake func(types.UID)) *Relister {
	return &Relister{rt: rt, period: period, wake: wake, seen: map[string]record{}}
}

// Run relists until ctx ends.
func (r *Relister) Run(ctx context.Context) {
	t := time.NewTicker(r.period)
	defer t.Stop()
	for {
		if err := r.relist(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "PLEG relist failed")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Relister) relist(ctx context.Context) (err error) {
	start := time.Now()
	if !r.lastStart.IsZero() {
		bmetrics.PLEGRelistInterval.Observe(start.Sub(r.lastStart).Seconds())
	}
	r.lastStart = start
	defer func() {
		bmetrics.PLEGRelistDuration.Observe(time.Since(start).Seconds())
		if err == nil {
			bmetrics.PLEGLastSeen.Set(float64(time.Now().Unix()))
		}
	}()
	ctrs, err := r.rt.ListContainers(ctx, nil)
	if err != nil {
		return err
	}
	sandboxes, err := r.rt.ListPodSandbox(ctx, nil)
	if err != nil {
		return err
	}
	now := make(map[string]record, len(ctrs)+len(sandboxes))
	for _, c := range ctrs {
		now[c.Id] = record{state: c.State.String(), pod: types.UID(c.Labels[podUIDLabel])}
	}
	for _, s := range sandboxes {
		now[s.Id] = record{state: s.State.String(), pod: types.UID(s.Labels[podUIDLabel])}
	}
	changed := map[types.UID]bool{}
	r.mu.Lock()
	for id, rec := range now {
		if r.seen[id] != rec {
			changed[rec.pod] = true
		}
	}
	for id, rec := range r.seen {
		if _, ok := now[id]; !ok {
			changed[rec.pod] = true
		}
	}
	r.seen = now
	r.last = time.Now()
	r.mu.Unlock()
	running, ready := 0, 0
	for _, rec := range now {
		switch rec.state {
		case "CONTAINER_RUNNING":
			running++
		case "SANDBOX_READY":
			ready++
		}
	}
	bmetrics.RunningContainers.WithLabelValues("running").Set(float64(running))
	bmetrics.RunningPods.Set(float64(ready))
	for uid := range changed {
		if uid != "" {
			r.wake(uid)
		}
	}
	return nil
}

// Healthy reports an error when the last successful relist is too old.
func (r *Relister) Healthy() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if since := time.Since(r.last); r.last.IsZero() || since > unhealthyAfter {
		return fmt.Errorf("PLEG is not healthy: pleg was last seen active %v ago; threshold is %v", since.Round(time.Second), unhealthyAfter)
	}
	return nil
}
