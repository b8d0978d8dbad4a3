package probes

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// registered makes w its manager's worker, as Sync does (a result settles
// only for a worker still registered).
func registered(w *worker) *worker {
	w.m.mu.Lock()
	w.m.workers[workerKey{w.id, w.kind}] = w
	w.m.mu.Unlock()
	return w
}

func readyProbeContainer() *corev1.Container {
	return &corev1.Container{Name: "web", ReadinessProbe: &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(1)}},
		PeriodSeconds: 3600, InitialDelaySeconds: 3600, FailureThreshold: 1, SuccessThreshold: 1,
	}}
}

func podWithStatus(ready bool, id string) *corev1.Pod {
	started := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{UID: "uid-1", Name: "p", Namespace: "ns"},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name: "web", ContainerID: "containerd://" + id, Ready: ready, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
		}}},
	}
}

func TestSeedFromStatusKeepsReadyContainerReady(t *testing.T) {
	m := New(context.Background(), Config{})
	c := readyProbeContainer()
	if m.Ready(c, "abc") {
		t.Fatal("a container with a readiness probe and no result must not be ready")
	}
	m.SeedFromStatus(podWithStatus(true, "abc"), true)
	if !m.Ready(c, "abc") {
		t.Error("the pod status said this container ID was ready: it must stay ready until a fresh result")
	}
	if m.Ready(c, "other") {
		t.Error("a different container ID (the container was replaced) must not inherit readiness")
	}
}

func TestSeedFromStatusOnlyOncePerPod(t *testing.T) {
	m := New(context.Background(), Config{})
	c := readyProbeContainer()
	m.SeedFromStatus(podWithStatus(false, "abc"), true)
	m.SeedFromStatus(podWithStatus(true, "abc"), true) // a stale status seen later must not override
	if m.Ready(c, "abc") {
		t.Error("the first status seen said unready; a later read of the status must not seed readiness")
	}
}

// A static pod's status from the agent's own checkpoint (not final) seeds,
// but the mirror's status read later seeds too: another agent ran the pod in
// between and saw the container become ready (a swap and back).
func TestCheckpointedStaticStatusDoesNotBlockTheMirrors(t *testing.T) {
	m := New(context.Background(), Config{})
	c := readyProbeContainer()
	m.SeedFromStatus(podWithStatus(false, "abc"), false)
	if m.Ready(c, "abc") {
		t.Fatal("the checkpoint said unready")
	}
	m.SeedFromStatus(podWithStatus(true, "abc"), true)
	if !m.Ready(c, "abc") {
		t.Error("the mirror pod's status, read after the checkpoint's, said ready: it must seed readiness")
	}
	m.SeedFromStatus(podWithStatus(false, "abc"), true)
	if !m.Ready(c, "abc") {
		t.Error("a status seen after the mirror's seeded nothing more")
	}
}

// A pod seen first without container statuses (a static pod whose mirror
// cannot be read yet) is seeded from the first status that has them.
func TestSeedWaitsForAStatus(t *testing.T) {
	m := New(context.Background(), Config{})
	c := readyProbeContainer()
	empty := podWithStatus(true, "abc")
	empty.Status = corev1.PodStatus{}
	m.SeedFromStatus(empty, true)
	m.SeedFromStatus(podWithStatus(true, "abc"), true)
	if !m.Ready(c, "abc") {
		t.Error("the mirror's status, the first with containers, said ready: the container must stay ready")
	}
}

func TestFreshResultReplacesPrior(t *testing.T) {
	m := New(context.Background(), Config{})
	c := readyProbeContainer()
	m.SeedFromStatus(podWithStatus(true, "abc"), true)
	w := registered(&worker{m: m, kind: Readiness, pod: podWithStatus(true, "abc"), c: c, id: "abc"})
	w.settle(Failure)
	if m.Ready(c, "abc") {
		t.Error("a fresh Failure must replace the prior Success")
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "probes", "checkpoint.json")
	m := New(context.Background(), Config{})
	m.LoadCheckpoint(path) // missing: no prior, no error
	c := readyProbeContainer()
	for _, id := range []string{"ready", "unready"} {
		w := registered(&worker{m: m, kind: Readiness, pod: podWithStatus(false, id), c: c, id: id})
		if id == "ready" {
			w.settle(Success)
		} else {
			w.settle(Failure)
		}
	}
	if err := m.WriteCheckpoint(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("the checkpoint folder holds %d files, want only the checkpoint (no temporary left)", len(entries))
	}
	m2 := New(context.Background(), Config{})
	m2.LoadCheckpoint(path)
	if !m2.Ready(c, "ready") {
		t.Error("a container ready before the restart must be ready after it")
	}
	if m2.Ready(c, "unready") {
		t.Error("a container unready before the restart must stay unready")
	}
	// The checkpoint wins over a status that says otherwise.
	m2.SeedFromStatus(podWithStatus(true, "unready"), true)
	if m2.Ready(c, "unready") {
		t.Error("the checkpoint's Failure must win over the apiserver's older Ready")
	}
}

// After a swap to the upstream kubelet and back, the checkpoint is older
// than what the apiserver says: the pod became Ready after the checkpoint
// was written (the other agent saw it), so the apiserver's status wins, even
// once a probe worker for the container is running.
func TestStatusNewerThanTheCheckpointWins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "checkpoint.json")
	m := New(context.Background(), Config{})
	m.LoadCheckpoint(path)
	c := readyProbeContainer()
	(&worker{m: m, kind: Readiness, pod: podWithStatus(false, "abc"), c: c, id: "abc"}).settle(Failure)
	if err := m.WriteCheckpoint(); err != nil {
		t.Fatal(err)
	}
	written := time.Now().Add(-time.Minute)
	if err := os.Chtimes(path, written, written); err != nil {
		t.Fatal(err)
	}
	seed := func(readyAt time.Time) bool {
		m2 := New(context.Background(), Config{})
		m2.LoadCheckpoint(path)
		m2.mu.Lock()
		m2.workers[resultKey{"abc", Readiness}] = &worker{} // a worker started, no result yet
		m2.mu.Unlock()
		pod := podWithStatus(true, "abc")
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(readyAt)}}
		m2.SeedFromStatus(pod, true)
		return m2.Ready(c, "abc")
	}
	if !seed(written.Add(30 * time.Second)) {
		t.Error("the pod became Ready after the checkpoint was written: the apiserver's Ready must win over the checkpoint's Failure")
	}
	if seed(written.Add(-30 * time.Second)) {
		t.Error("the pod was Ready before the checkpoint was written: the checkpoint's Failure must win")
	}
}

func TestCorruptOrForeignCheckpointIgnored(t *testing.T) {
	dir := t.TempDir()
	c := readyProbeContainer()
	for name, body := range map[string]string{
		"corrupt": `{"version":1,"results":[{"containerID":"abc","kind":"Readiness","res`,
		"foreign": `{"version":99,"results":[{"containerID":"abc","kind":"Readiness","result":"Success"}]}`,
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		m := New(context.Background(), Config{})
		m.LoadCheckpoint(path)
		if m.Ready(c, "abc") {
			t.Errorf("%s checkpoint: must be ignored, but gave readiness", name)
		}
	}
}

func TestPriorExpires(t *testing.T) {
	m := New(context.Background(), Config{})
	c := readyProbeContainer()
	m.SeedFromStatus(podWithStatus(true, "abc"), true)
	m.born = time.Now().Add(-2 * priorTTL)
	if err := m.WriteCheckpoint(); err != nil {
		t.Fatal(err)
	}
	if m.Ready(c, "abc") {
		t.Error("prior results older than priorTTL must be dropped")
	}
}

// A worker stopped while it probed (its container or pod gone) keeps no
// result: nothing would ever remove it.
func TestStoppedWorkerKeepsNoResult(t *testing.T) {
	m := New(context.Background(), Config{})
	w := &worker{m: m, kind: Readiness, pod: podWithStatus(false, "gone"), c: readyProbeContainer(), id: "gone"}
	w.settle(Success)
	if len(m.results) != 0 {
		t.Errorf("results %v: a stopped worker's result was kept", m.results)
	}
}
