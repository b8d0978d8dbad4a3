// Package pleg turns changes in the runtime (containers and sandboxes
// starting, exiting, vanishing) into wake-ups of the affected pods' workers:
// from the runtime's container event stream (CRI GetContainerEvents) where
// it serves one, with a slow safety relist behind it, and by relisting the
// runtime every period where it does not or while the stream is down.
package pleg

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/types"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
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

	// safety is the relist period while the event stream is up (0: no
	// event stream).
	safety    time.Duration
	streaming atomic.Bool
	kick      chan struct{} // relist now: the stream went up or down
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
	return &Relister{rt: rt, period: period, wake: wake, seen: map[string]record{}, kick: make(chan struct{}, 1)}
}

// WithEvents has the relister follow the runtime's container events,
// relisting every safety period while the stream is up.
func (r *Relister) WithEvents(safety time.Duration) *Relister {
	r.safety = safety
	return r
}

// Streaming says whether the runtime's event stream is up.
func (r *Relister) Streaming() bool { return r.streaming.Load() }

// Run relists until ctx ends.
func (r *Relister) Run(ctx context.Context) {
	if r.safety > 0 {
		go r.follow(ctx)
	}
	for {
		if err := r.relist(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "PLEG relist failed")
		}
		wait := r.period
		if r.streaming.Load() {
			wait = r.safety
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-r.kick:
			t.Stop()
		}
	}
}

func (r *Relister) kickRelist() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// follow keeps the event stream open, waking the pod of every event. A
// runtime without the stream (containerd before 1.7) leaves the relist at
// its period for good; a broken stream is opened again after a back-off,
// the relist at its period meanwhile.
func (r *Relister) follow(ctx context.Context) {
	logger := klog.FromContext(ctx)
	backoff := time.Second
	for ctx.Err() == nil {
		events := make(chan *runtimeapi.ContainerEventResponse, 1024)
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- r.rt.GetContainerEvents(sctx, events, nil)
		}()
		// The stream counts as open at its first event, or when its first
		// receive has not failed within a second (a runtime without it
		// answers Unimplemented at once).
		opened := func() {
			if !r.streaming.Swap(true) {
				logger.Info("Following the runtime's container events", "safetyRelistPeriod", r.safety)
				r.kickRelist() // what changed before the stream opened
				backoff = time.Second
			}
		}
		settled := time.After(time.Second)
		var err error
	stream:
		for {
			select {
			case ev := <-events:
				opened()
				r.onEvent(ev)
			case err = <-done:
				break stream
			case <-settled:
				opened()
			}
		}
		cancel()
		was := r.streaming.Swap(false)
		r.kickRelist()
		if ctx.Err() != nil {
			return
		}
		if status.Code(err) == codes.Unimplemented {
			logger.Info("The runtime serves no container events: relisting it every period", "period", r.period)
			return
		}
		if was {
			logger.Error(err, "The runtime's container event stream broke: relisting every period until it is back", "period", r.period)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// onEvent wakes the pod an event is about: the sandbox's pod, or, for a
// container or sandbox already gone (no sandbox status), the pod it was
// last seen in.
func (r *Relister) onEvent(ev *runtimeapi.ContainerEventResponse) {
	uid := types.UID(ev.GetPodSandboxStatus().GetMetadata().GetUid())
	if uid == "" {
		uid = types.UID(ev.GetPodSandboxStatus().GetLabels()[podUIDLabel])
	}
	if uid == "" {
		r.mu.Lock()
		uid = r.seen[ev.GetContainerId()].pod
		r.mu.Unlock()
	}
	if uid != "" {
		r.wake(uid)
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
