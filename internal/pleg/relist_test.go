package pleg

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

// eventRuntime serves container events from a channel the test feeds; a
// stream ends when the test sends on end.
type eventRuntime struct {
	*critest.FakeRuntimeService
	events chan *runtimeapi.ContainerEventResponse
	end    chan error
}

func (e *eventRuntime) GetContainerEvents(ctx context.Context, ch chan *runtimeapi.ContainerEventResponse, _ func(runtimeapi.RuntimeService_GetContainerEventsClient)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-e.end:
			return err
		case ev := <-e.events:
			ch <- ev
		}
	}
}

func (e *eventRuntime) relists() int {
	e.Lock()
	defer e.Unlock()
	n := 0
	for _, c := range e.Called {
		if c == "ListContainers" {
			n++
		}
	}
	return n
}

type wakes struct {
	mu   sync.Mutex
	uids []types.UID
}

func (w *wakes) wake(uid types.UID) {
	w.mu.Lock()
	w.uids = append(w.uids, uid)
	w.mu.Unlock()
}

func (w *wakes) has(uid types.UID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, u := range w.uids {
		if u == uid {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With the stream up, an event wakes its pod at once and the relist slows
// to the safety period; when the stream breaks, the relist is back at its
// period until the stream is open again.
func TestEventsWakePodsAndSlowTheRelist(t *testing.T) {
	rt := &eventRuntime{FakeRuntimeService: critest.NewFakeRuntimeService(),
		events: make(chan *runtimeapi.ContainerEventResponse), end: make(chan error)}
	rt.SetFakeContainers([]*critest.FakeContainer{{ContainerStatus: runtimeapi.ContainerStatus{Id: "gone-soon",
		State: runtimeapi.ContainerState_CONTAINER_RUNNING, Labels: map[string]string{podUIDLabel: "old-pod"}}}})
	w := &wakes{}
	r := New(rt, 20*time.Millisecond, w.wake).WithEvents(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	waitFor(t, "the stream to be up", r.Streaming)

	rt.events <- &runtimeapi.ContainerEventResponse{ContainerId: "c1", ContainerEventType: runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT,
		PodSandboxStatus: &runtimeapi.PodSandboxStatus{Metadata: &runtimeapi.PodSandboxMetadata{Uid: "pod-a"}}}
	waitFor(t, "pod-a woken", func() bool { return w.has("pod-a") })
	// No sandbox status (the sandbox is gone): the pod the container was
	// last listed in.
	rt.events <- &runtimeapi.ContainerEventResponse{ContainerId: "gone-soon", ContainerEventType: runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT}
	waitFor(t, "old-pod woken", func() bool { return w.has("old-pod") })

	before := rt.relists()
	time.Sleep(300 * time.Millisecond)
	if n := rt.relists() - before; n > 1 {
		t.Errorf("%d relists in 300 ms with the stream up, want at most 1 (safety period an hour)", n)
	}

	rt.end <- status.Error(codes.Unavailable, "runtime restarted")
	waitFor(t, "the stream to be down", func() bool { return !r.Streaming() })
	before = rt.relists()
	time.Sleep(300 * time.Millisecond)
	if n := rt.relists() - before; n < 5 {
		t.Errorf("%d relists in 300 ms with the stream down, want the 20 ms period", n)
	}
	waitFor(t, "the stream back after its back-off", r.Streaming)
}

// A runtime without the stream (Unimplemented) is relisted every period
// for good.
func TestNoEventStreamKeepsTheRelist(t *testing.T) {
	rt := &eventRuntime{FakeRuntimeService: critest.NewFakeRuntimeService(),
		events: make(chan *runtimeapi.ContainerEventResponse), end: make(chan error, 1)}
	rt.end <- status.Error(codes.Unimplemented, "unknown method GetContainerEvents")
	w := &wakes{}
	r := New(rt, 20*time.Millisecond, w.wake).WithEvents(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	time.Sleep(1500 * time.Millisecond)
	if r.Streaming() {
		t.Fatal("streaming without a stream")
	}
	before := rt.relists()
	time.Sleep(300 * time.Millisecond)
	if n := rt.relists() - before; n < 5 {
		t.Errorf("%d relists in 300 ms, want the 20 ms period", n)
	}
}
