package allocation

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
)

func pod(uid, cpu string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p-" + uid, Namespace: "ns", UID: types.UID(uid), Generation: 1},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}}}}
}

func resized(p *corev1.Pod, cpu string) *corev1.Pod {
	out := p.DeepCopy()
	out.Generation++
	out.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse(cpu)
	return out
}

func cpuOf(p *corev1.Pod) string {
	q := p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]
	return q.String()
}

// fitCPU admits while the cpu requests stay within capacity millicores.
func fitCPU(capacity int64) FitFunc {
	return func(pod *corev1.Pod, others []*corev1.Pod) (bool, string, string) {
		var used int64
		for _, o := range others {
			for _, c := range o.Spec.Containers {
				used += c.Resources.Requests.Cpu().MilliValue()
			}
		}
		req := pod.Spec.Containers[0].Resources.Requests.Cpu().MilliValue()
		if used+req > capacity {
			return false, "OutOfcpu", "Node didn't have enough resource: cpu"
		}
		return true, "", ""
	}
}

type node struct {
	mu     sync.Mutex
	active map[types.UID]*corev1.Pod
}

func (n *node) list() []*corev1.Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*corev1.Pod
	for _, p := range n.active {
		out = append(out, p)
	}
	return out
}

func newManager(t *testing.T, dir string, n *node, rec *record.FakeRecorder) *Manager {
	t.Helper()
	return New(klog.Background(), Config{RootDir: dir, Recorder: rec, Fit: fitCPU(1000), Active: n.list,
		Known: func(uid types.UID) bool { n.mu.Lock(); defer n.mu.Unlock(); return n.active[uid] != nil }})
}

func events(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func conditionOf(m *Manager, uid types.UID, t corev1.PodConditionType) *corev1.PodCondition {
	for _, c := range m.Conditions(uid, false) {
		if c.Type == t {
			return &c
		}
	}
	return nil
}

// A resize that fits is allocated at once and in progress until the
// runtime has it; one that does not is deferred with admission's message,
// and allocated once another pod goes.
func TestResizeAllocatedOrDeferred(t *testing.T) {
	dir := t.TempDir()
	n := &node{active: map[types.UID]*corev1.Pod{}}
	rec := record.NewFakeRecorder(20)
	m := newManager(t, dir, n, rec)
	a, b := pod("a", "400m"), pod("b", "400m")
	for _, p := range []*corev1.Pod{a, b} {
		if ok, _, msg := m.Admit(p, n.list(), fitCPU(1000)); !ok {
			t.Fatalf("admit %s: %s", p.Name, msg)
		}
		n.active[p.UID] = p
	}
	ctx := context.Background()

	// 400m -> 500m fits beside b's 400m.
	got := m.Resolve(ctx, resized(a, "500m"), false)
	if cpuOf(got) != "500m" {
		t.Fatalf("a resize that fits runs with %s", cpuOf(got))
	}
	n.active[a.UID] = got
	if c := conditionOf(m, a.UID, corev1.PodResizeInProgress); c == nil || c.ObservedGeneration != 2 {
		t.Errorf("in-progress condition %+v, want one for generation 2", c)
	}
	m.Observe(got, false)
	if c := conditionOf(m, a.UID, corev1.PodResizeInProgress); c != nil {
		t.Errorf("in-progress condition %+v after the runtime has the resize", c)
	}
	ev := events(rec)
	if len(ev) != 2 || !strings.HasPrefix(ev[0], "Normal ResizeStarted Pod resize started: {\"containers\":[{\"name\":\"c\",\"resources\":{\"requests\":{\"cpu\":\"500m\"}}}],\"generation\":2}") ||
		!strings.HasPrefix(ev[1], "Normal ResizeCompleted Pod resize completed: ") {
		t.Errorf("events %q", ev)
	}

	// b: 400m -> 600m does not fit beside a's 500m.
	bigB := resized(b, "600m")
	got = m.Resolve(ctx, bigB, false)
	if cpuOf(got) != "400m" {
		t.Fatalf("a deferred resize runs with %s, want the allocated 400m", cpuOf(got))
	}
	c := conditionOf(m, b.UID, corev1.PodResizePending)
	if c == nil || c.Reason != "Deferred" || c.Message != "Node didn't have enough resource: cpu" || c.ObservedGeneration != 2 {
		t.Fatalf("pending condition %+v", c)
	}
	if ev := events(rec); len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning ResizeDeferred Pod resize OutOfcpu: ") ||
		!strings.Contains(ev[0], `"error":"Node didn't have enough resource: cpu"`) {
		t.Errorf("events %q", ev)
	}
	// Its own status updates (the same spec) change nothing.
	m.Resolve(ctx, bigB, false)
	if ev := events(rec); len(ev) != 0 {
		t.Errorf("events on an unchanged deferred resize: %q", ev)
	}

	// a goes: the retry loop has b resolved again, and it fits.
	resynced := make(chan types.UID, 4)
	m.cfg.Resync = func(uid types.UID) { resynced <- uid }
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go m.Run(runCtx)
	delete(n.active, a.UID)
	m.Remove(a.UID)
	select {
	case uid := <-resynced:
		if uid != b.UID {
			t.Fatalf("resynced %s, want b", uid)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no retry after a pod went")
	}
	got = m.Resolve(ctx, bigB, true)
	if cpuOf(got) != "600m" {
		t.Fatalf("after a went, b runs with %s, want 600m", cpuOf(got))
	}
	if c := conditionOf(m, b.UID, corev1.PodResizePending); c != nil {
		t.Errorf("pending condition %+v after the resize was allocated", c)
	}
}

// A pending resize that is reverted is no longer pending.
func TestRevertedResizeIsNotPending(t *testing.T) {
	n := &node{active: map[types.UID]*corev1.Pod{}}
	m := newManager(t, t.TempDir(), n, record.NewFakeRecorder(20))
	a := pod("a", "400m")
	m.Admit(a, nil, fitCPU(1000))
	n.active[a.UID] = a
	m.Resolve(context.Background(), resized(a, "2"), false)
	if conditionOf(m, a.UID, corev1.PodResizePending) == nil {
		t.Fatal("a resize beyond capacity is not pending")
	}
	back := resized(resized(a, "2"), "400m")
	if got := m.Resolve(context.Background(), back, false); cpuOf(got) != "400m" {
		t.Fatalf("runs with %s", cpuOf(got))
	}
	if c := conditionOf(m, a.UID, corev1.PodResizePending); c != nil {
		t.Errorf("pending condition %+v after the resize was reverted", c)
	}
}

// Allocations survive a restart: a pod whose spec changed while the agent
// was down is admitted with what was allocated, and its resize is pending
// until every pod is known. A corrupt file is set aside.
func TestAllocationsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	n := &node{active: map[types.UID]*corev1.Pod{}}
	m := newManager(t, dir, n, record.NewFakeRecorder(20))
	a := pod("a", "400m")
	m.Admit(a, nil, fitCPU(1000))
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Fatalf("no checkpoint: %v", err)
	}

	m2 := newManager(t, dir, n, record.NewFakeRecorder(20))
	ready := false
	m2.cfg.Ready = func() bool { return ready }
	var admitted *corev1.Pod
	ok, _, _ := m2.Admit(resized(a, "700m"), nil, func(p *corev1.Pod, _ []*corev1.Pod) (bool, string, string) {
		admitted = p
		return true, "", ""
	})
	if !ok || cpuOf(admitted) != "400m" {
		t.Fatalf("admitted with %v after a restart, want the allocated 400m", admitted)
	}
	if got := m2.Resolve(context.Background(), resized(a, "700m"), false); cpuOf(got) != "400m" {
		t.Fatalf("before every pod is known it runs with %s, want 400m", cpuOf(got))
	}
	ready = true
	if got := m2.Resolve(context.Background(), resized(a, "700m"), true); cpuOf(got) != "700m" {
		t.Fatalf("once every pod is known it runs with %s, want 700m", cpuOf(got))
	}

	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(`{"data":"{}","checksum":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	m3 := newManager(t, dir, n, record.NewFakeRecorder(20))
	if got := m3.Allocated(resized(a, "900m")); cpuOf(got) != "900m" {
		t.Errorf("with a corrupt checkpoint the pod runs with %s, want its spec's 900m", cpuOf(got))
	}
}

// A resize the runtime refuses is in progress with reason Error.
func TestFailedResize(t *testing.T) {
	n := &node{active: map[types.UID]*corev1.Pod{}}
	rec := record.NewFakeRecorder(20)
	m := newManager(t, t.TempDir(), n, rec)
	a := pod("a", "400m")
	m.Admit(a, nil, fitCPU(1000))
	got := m.Resolve(context.Background(), resized(a, "500m"), false)
	m.Failed(got, "boom")
	m.Failed(got, "boom")
	c := conditionOf(m, a.UID, corev1.PodResizeInProgress)
	if c == nil || c.Reason != "Error" || c.Message != "boom" || c.ObservedGeneration != 2 {
		t.Fatalf("in-progress condition %+v", c)
	}
	ev := events(rec)
	if len(ev) != 2 || !strings.HasPrefix(ev[1], "Warning ResizeError Pod resize error: ") {
		t.Errorf("events %q, want ResizeStarted and one ResizeError", ev)
	}
	if m.Conditions(a.UID, true) != nil || m.Conditions(a.UID, false) != nil {
		t.Error("a terminal pod keeps resize conditions")
	}
}
