package podworkers

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
	"github.com/bosun-dev/bosun/internal/podsync"
	"k8s.io/component-base/metrics/testutil"
)

// fakeSyncer records calls; Sync blocks while block is set, until its
// context ends, to stand for an image pull in flight.
type fakeSyncer struct {
	mu        sync.Mutex
	block     map[types.UID]bool
	fail      map[types.UID]bool
	syncs     map[types.UID][]time.Time
	cancelled map[types.UID]bool
	running   map[types.UID]bool // "containers" up
	events    []string
}

func newFakeSyncer() *fakeSyncer {
	return &fakeSyncer{block: map[types.UID]bool{}, fail: map[types.UID]bool{}, syncs: map[types.UID][]time.Time{},
		cancelled: map[types.UID]bool{}, running: map[types.UID]bool{}}
}

func (f *fakeSyncer) log(e string) {
	f.mu.Lock()
	f.events = append(f.events, e)
	f.mu.Unlock()
}

func (f *fakeSyncer) Sync(ctx context.Context, pod *corev1.Pod) (*podsync.SyncResult, error) {
	f.mu.Lock()
	f.syncs[pod.UID] = append(f.syncs[pod.UID], time.Now())
	block, fail := f.block[pod.UID], f.fail[pod.UID]
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		f.mu.Lock()
		f.cancelled[pod.UID] = true
		f.mu.Unlock()
		return nil, ctx.Err()
	}
	if fail {
		return nil, errors.New("runtime says no")
	}
	f.mu.Lock()
	if !f.running[pod.UID] {
		f.running[pod.UID] = true
		f.mu.Unlock()
		f.log("start " + string(pod.UID))
	} else {
		f.mu.Unlock()
	}
	return &podsync.SyncResult{Runtime: &podsync.RuntimePod{}}, nil
}

func (f *fakeSyncer) Inspect(context.Context, string) (*podsync.RuntimePod, error) {
	return &podsync.RuntimePod{}, nil
}

func (f *fakeSyncer) Kill(ctx context.Context, pod *corev1.Pod, _ *podsync.RuntimePod, grace int64) error {
	f.mu.Lock()
	was := f.running[pod.UID]
	f.mu.Unlock()
	if !was {
		return nil
	}
	f.log(fmt.Sprintf("stopping %s grace %d", pod.UID, grace))
	// Stopping takes the grace period (in tenths of a second here) unless
	// the context ends first.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Duration(grace)*100*time.Millisecond + 300*time.Millisecond):
	}
	f.mu.Lock()
	f.running[pod.UID] = false
	f.mu.Unlock()
	f.log("stop " + string(pod.UID))
	return nil
}

func (f *fakeSyncer) KillContainer(_ context.Context, pod *corev1.Pod, id string, grace int64, reason string) {
	f.log(fmt.Sprintf("kill container %s of %s: %s", id, pod.UID, reason))
}

func (f *fakeSyncer) UnprepareClaims(_ context.Context, pod *corev1.Pod) error {
	f.log("unprepare " + string(pod.UID))
	return nil
}

func (f *fakeSyncer) Reclaim(_ context.Context, pod *corev1.Pod) error {
	f.mu.Lock()
	fail := f.fail[pod.UID]
	f.mu.Unlock()
	if fail {
		return errors.New("volume busy")
	}
	f.log("reclaim " + string(pod.UID))
	return nil
}

func (f *fakeSyncer) Remove(_ context.Context, pod *corev1.Pod) error {
	f.log("remove " + string(pod.UID))
	return nil
}

type nopStatus struct{}

func (nopStatus) SetPodStatus(*corev1.Pod, corev1.PodStatus) {}
func (nopStatus) Finalize(*corev1.Pod, corev1.PodStatus)     {}
func (nopStatus) Forget(types.UID)                           {}

func newWorkers(t *testing.T, f *fakeSyncer) *Workers {
	ctx, cancel := context.WithCancel(context.Background())
	w := New(ctx, Config{Syncer: f, Status: nopStatus{}, Resync: time.Hour,
		Build: func(*corev1.Pod, *podsync.RuntimePod, map[string]podsync.Waiting, bool, podsync.End) corev1.PodStatus {
			return corev1.PodStatus{Phase: corev1.PodRunning}
		}})
	t.Cleanup(func() { cancel(); w.Wait() })
	return w
}

func testPod(uid, name string, static bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), Name: name, Namespace: "ns"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
	if static {
		p.Annotations = map[string]string{"kubernetes.io/config.source": "file"}
	}
	return p
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeletingAPodCancelsItsSyncInFlight(t *testing.T) {
	f := newFakeSyncer()
	f.block["a"] = true
	w := newWorkers(t, f)
	pod := testPod("a", "a", false)
	w.Update(pod)
	eventually(t, "the first sync", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.syncs["a"]) > 0 })
	deleted := pod.DeepCopy()
	now := metav1.Now()
	deleted.DeletionTimestamp = &now
	w.Update(deleted)
	eventually(t, "the sync in flight to be cancelled", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.cancelled["a"] })
}

func TestEditedStaticPodStopsBeforeItsSuccessorStarts(t *testing.T) {
	f := newFakeSyncer()
	w := newWorkers(t, f)
	old := testPod("old", "etcd", true)
	w.Update(old)
	eventually(t, "the old static pod to start", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.running["old"] })
	// The file source sees the edit: the old pod goes, the new one (same
	// name, new UID) comes, in that order and at once.
	w.Delete(old)
	w.Update(testPod("new", "etcd", true))
	eventually(t, "the new static pod to start", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.running["new"] })
	f.mu.Lock()
	defer f.mu.Unlock()
	var got []string
	for _, e := range f.events {
		if strings.HasPrefix(e, "start") || strings.HasPrefix(e, "stop") {
			got = append(got, e)
		}
	}
	want := []string{"start old", "stopping old grace 30", "stop old", "start new"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events = %v, want %v (the old pod stopped before the new one started)", got, want)
	}
}

func TestFailedSyncsBackOff(t *testing.T) {
	f := newFakeSyncer()
	f.fail["a"] = true
	w := newWorkers(t, f)
	w.Update(testPod("a", "a", false))
	time.Sleep(3500 * time.Millisecond)
	f.mu.Lock()
	n := len(f.syncs["a"])
	f.mu.Unlock()
	// 1 s, 2 s, 4 s (each +-20%): within 3.5 s at most 3 tries; a constant
	// 1 s retry would have made 4.
	if n < 2 || n > 3 {
		t.Errorf("%d syncs in 3.5 s, want 2 or 3 with a doubling backoff", n)
	}
}

func TestRetryDelayDoublesToCap(t *testing.T) {
	wk := &worker{}
	for i := 0; i < 10; i++ {
		d := wk.retryDelay()
		base := min(retryAfterError<<i, maxRetryDelay)
		if d < base || d > base+base/5 {
			t.Fatalf("try %d: delay %s, want within [%s, %s]", i+1, d, base, base+base/5)
		}
	}
	wk.succeeded()
	if d := wk.retryDelay(); d > retryAfterError+retryAfterError/5 {
		t.Errorf("after a success the delay is %s, want it back at %s", d, retryAfterError)
	}
}

// A force delete (or a shorter grace period) while the pod is stopping
// with a long grace period stops it again at once.
func TestForceDeleteShortensAStopInFlight(t *testing.T) {
	f, w, deleted := stoppingPod(t)
	start := time.Now()
	w.Delete(deleted) // force-deleted from the apiserver
	eventually(t, "the pod to stop", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return !f.running["a"] })
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a force delete took %s to stop the pod; the 60 s grace period was not cut short", took)
	}
	if !f.has("stopping a grace 0") {
		t.Errorf("no stop with grace 0 after the force delete: %v", f.events)
	}
}

// Probe kills are carried out by the pod's worker.
func TestProbeKillGoesThroughTheWorker(t *testing.T) {
	f := newFakeSyncer()
	w := newWorkers(t, f)
	pod := testPod("a", "a", false)
	w.Update(pod)
	eventually(t, "the pod to start", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.running["a"] })
	w.KillContainer(context.Background(), pod, "c1", 5, "liveness failed")
	eventually(t, "the kill", func() bool { return f.has("kill container c1 of a: liveness failed") })
}

func (f *fakeSyncer) has(event string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.events {
		if e == event {
			return true
		}
	}
	return false
}

func ptrTo[T any](v T) *T { return &v }

// stoppingPod starts pod "a" with a minute's grace period (in the fake's
// time), deletes it, and returns once its graceful stop has begun.
func stoppingPod(t *testing.T) (*fakeSyncer, *Workers, *corev1.Pod) {
	t.Helper()
	f := newFakeSyncer()
	w := newWorkers(t, f)
	pod := testPod("a", "a", false)
	pod.Spec.TerminationGracePeriodSeconds = ptrTo(int64(600))
	w.Update(pod)
	eventually(t, "the pod to start", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.running["a"] })
	deleted := pod.DeepCopy()
	now := metav1.Now()
	deleted.DeletionTimestamp, deleted.DeletionGracePeriodSeconds = &now, ptrTo(int64(600))
	w.Update(deleted)
	eventually(t, "the graceful stop to begin", func() bool { return f.has("stopping a grace 600") })
	return f, w, deleted
}

// A pod still stopping counts for admission while the apiserver has it, and
// no longer once it is gone from there, as upstream's active pods.
func TestActiveCountsStoppingPodsUntilRemoved(t *testing.T) {
	_, w, _ := stoppingPod(t)
	if n := len(w.Active()); n != 1 {
		t.Fatalf("%d active pods while one stops, want 1", n)
	}
	w.mu.Lock()
	w.pods["a"].mu.Lock()
	w.pods["a"].removed = true // gone from the apiserver, its containers still stopping
	w.pods["a"].mu.Unlock()
	w.mu.Unlock()
	if n := len(w.Active()); n != 0 {
		t.Errorf("%d active pods once the stopping one is gone from the apiserver, want 0", n)
	}
}

// recordingStatus logs the statuses the workers send, in the fake's log.
type recordingStatus struct{ f *fakeSyncer }

func (r recordingStatus) SetPodStatus(pod *corev1.Pod, st corev1.PodStatus) {
	r.f.log(fmt.Sprintf("status %s %s", pod.UID, st.Phase))
}
func (r recordingStatus) Finalize(pod *corev1.Pod, st corev1.PodStatus) {
	r.f.log(fmt.Sprintf("finalize %s %s", pod.UID, st.Phase))
}
func (recordingStatus) Forget(types.UID) {}

// A pod that finished releases its claims before its final status, and
// its volumes after, while its object stays (upstream's SyncTerminatingPod
// and SyncTerminatedPod); a deleted one is deleted only once they are
// released, and a reclaim that fails is retried before it is.
func TestTerminatedPodReleasesClaimsAndVolumes(t *testing.T) {
	f := newFakeSyncer()
	ctx, cancel := context.WithCancel(context.Background())
	w := New(ctx, Config{Syncer: f, Status: recordingStatus{f}, Resync: time.Hour,
		Build: func(pod *corev1.Pod, _ *podsync.RuntimePod, _ map[string]podsync.Waiting, terminal bool, _ podsync.End) corev1.PodStatus {
			if pod.UID == "job" || terminal {
				return corev1.PodStatus{Phase: corev1.PodSucceeded}
			}
			return corev1.PodStatus{Phase: corev1.PodRunning}
		}})
	t.Cleanup(func() { cancel(); w.Wait() })

	job := testPod("job", "job", false)
	job.Spec.TerminationGracePeriodSeconds = ptrTo(int64(0))
	w.Update(job)
	eventually(t, "the finished pod's volumes to be released", func() bool { return f.has("reclaim job") })
	f.mu.Lock()
	order := indexes(f.events, "stop job", "unprepare job", "reclaim job")
	final := indexes(f.events[max(order[1], 0):], "status job Succeeded")[0]
	f.mu.Unlock()
	if order[0] > order[1] || order[1] > order[2] || final < 0 || order[1]+final > order[2] {
		t.Errorf("events %v: want claims unprepared, then the final status, then the volumes released", f.events)
	}
	if f.has("remove job") {
		t.Error("a finished pod whose object stays was removed")
	}

	pod := testPod("svc", "svc", false)
	w.Update(pod)
	eventually(t, "the pod to start", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.running["svc"] })
	f.mu.Lock()
	f.fail["svc"] = true // its first reclaims fail
	f.mu.Unlock()
	deleted := pod.DeepCopy()
	now := metav1.Now()
	deleted.DeletionTimestamp, deleted.DeletionGracePeriodSeconds = &now, ptrTo(int64(0))
	w.Update(deleted)
	eventually(t, "the pod to stop", func() bool { return f.has("stop svc") })
	time.Sleep(300 * time.Millisecond)
	if f.has("finalize svc Succeeded") {
		t.Fatal("the pod object was deleted while its volumes were still mounted")
	}
	f.mu.Lock()
	f.fail["svc"] = false
	f.mu.Unlock()
	eventually(t, "the deleted pod's final status", func() bool { return f.has("finalize svc Succeeded") })
	f.mu.Lock()
	order = indexes(f.events, "stop svc", "unprepare svc", "reclaim svc", "finalize svc Succeeded")
	f.mu.Unlock()
	if order[0] > order[1] || order[1] > order[2] || order[2] > order[3] {
		t.Errorf("events %v: want stop, unprepare, reclaim, then the final status", f.events)
	}
}

// indexes finds each event's first place in events (-1: absent).
func indexes(events []string, want ...string) []int {
	out := make([]int, len(want))
	for i, w := range want {
		out[i] = -1
		for j, e := range events {
			if e == w {
				out[i] = j
				break
			}
		}
	}
	return out
}

// kubelet_pod_worker_duration_seconds: a pod's first sync is "create", a
// sync of a new version of the pod "update", any other "sync".
func TestPodWorkerDurationByOperation(t *testing.T) {
	bmetrics.Register("node-1")
	count := func(op string) uint64 {
		n, err := testutil.GetHistogramMetricCount(bmetrics.PodWorkerDuration.WithLabelValues(op))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	create, update := count("create"), count("update")
	f := newFakeSyncer()
	w := newWorkers(t, f)
	pod := testPod("m", "m", false)
	pod.ResourceVersion = "1"
	w.Update(pod)
	eventually(t, "the first sync to be timed as create", func() bool { return count("create") == create+1 })
	next := pod.DeepCopy()
	next.ResourceVersion = "2"
	next.Labels = map[string]string{"new": "label"}
	w.Update(next)
	eventually(t, "the new version's sync to be timed as update", func() bool { return count("update") == update+1 })
}

// The pod gauges: an API pod and a static pod with an ephemeral container
// are desired and active, the static one has a mirror; a deleted pod is an
// orphan until its worker ends, and no longer desired nor active.
func TestCounts(t *testing.T) {
	f := newFakeSyncer()
	w := newWorkers(t, f)
	api := testPod("a", "a", false)
	static := testPod("s", "s", true)
	static.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "dbg"}}}
	w.Update(api)
	w.Update(static)
	eventually(t, "both pods active", func() bool { n := w.Counts(); return n.Active[""] == 1 && n.Active["true"] == 1 })
	n := w.Counts()
	if n.Desired[""] != 1 || n.Desired["true"] != 1 || n.Mirror != 1 || n.Ephemeral != 1 ||
		n.Working[bmetrics.WorkingKey{Config: "desired", Lifecycle: "sync", Static: "true"}] != 1 {
		t.Errorf("counts with two pods: %+v", n)
	}
	w.Delete(api)
	eventually(t, "the deleted pod to be neither desired nor active", func() bool {
		n := w.Counts()
		desired := 0
		for k, v := range n.Working {
			if k.Static == "" && k.Config == "desired" {
				desired += v
			}
		}
		return n.Active[""] == 0 && n.Desired[""] == 0 && desired == 0 && n.Active["true"] == 1
	})
}

// forgettingStatus records which pods' statuses were set and forgotten.
type forgettingStatus struct {
	mu        sync.Mutex
	set, gone map[types.UID]bool
}

func (f *forgettingStatus) SetPodStatus(pod *corev1.Pod, _ corev1.PodStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set[pod.UID] = true
}
func (f *forgettingStatus) Finalize(*corev1.Pod, corev1.PodStatus) {}
func (f *forgettingStatus) Forget(uid types.UID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gone[uid] = true
}

// A pod rejected at admission has a status and no worker; once it is gone
// from the apiserver, its status is forgotten too.
func TestRejectedPodStatusForgottenWhenDeleted(t *testing.T) {
	st := &forgettingStatus{set: map[types.UID]bool{}, gone: map[types.UID]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	w := New(ctx, Config{Syncer: newFakeSyncer(), Status: st, Resync: time.Hour,
		Admit: func(*corev1.Pod, []*corev1.Pod) (bool, string, string) { return false, "OutOfcpu", "no cpu" },
		Build: func(*corev1.Pod, *podsync.RuntimePod, map[string]podsync.Waiting, bool, podsync.End) corev1.PodStatus {
			return corev1.PodStatus{}
		}})
	t.Cleanup(func() { cancel(); w.Wait() })
	pod := testPod("r", "rejected", false)
	w.Update(pod)
	st.mu.Lock()
	set, gone := st.set["r"], st.gone["r"]
	st.mu.Unlock()
	if !set || gone {
		t.Fatalf("rejected pod: status set %v, forgotten %v; want set and kept", set, gone)
	}
	w.Delete(pod)
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.gone["r"] {
		t.Error("the rejected pod's status was kept after it was deleted")
	}
}
