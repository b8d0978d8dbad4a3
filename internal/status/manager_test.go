package status

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/klog/v2"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
)

func setUp(t *testing.T, pods ...*corev1.Pod) (*fake.Clientset, *Manager) {
	t.Helper()
	cs := fake.NewClientset()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, p := range pods {
		if _, err := cs.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		_ = idx.Add(p)
	}
	return cs, New(cs, corelisters.NewPodLister(idx))
}

// waitPatched waits up to 5 s for the first status patch.
func waitPatched(t *testing.T, cs *fake.Clientset, msg string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for patches(cs) == 0 {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func patches(cs *fake.Clientset) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "patch" && a.GetSubresource() == "status" {
			n++
		}
	}
	return n
}

// Statuses wait until the apiserver's pods are listed, then go out.
func TestStatusHeldUntilReady(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"}}
	cs, m := setUp(t, pod)
	var ready atomic.Bool
	m.Ready = ready.Load
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx, 1)
	m.SetPodStatus(pod, corev1.PodStatus{Phase: corev1.PodRunning})
	time.Sleep(1500 * time.Millisecond)
	if n := patches(cs); n != 0 {
		t.Fatalf("%d status patches sent before the pods were listed", n)
	}
	ready.Store(true)
	waitPatched(t, cs, "no status patch once ready")
	got, _ := cs.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
	if got.Status.Phase != corev1.PodRunning {
		t.Errorf("phase %q after the patch", got.Status.Phase)
	}
}

// A static pod's status set before the apiserver's pods were listed (built
// on the agent's checkpoint, not on the mirror) is never sent; the status
// set once they are listed is.
func TestProvisionalStaticStatusNotSent(t *testing.T) {
	mirror := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "s-node", Namespace: "ns", UID: "mirror-uid",
		Annotations: map[string]string{"kubernetes.io/config.source": "file", "kubernetes.io/config.mirror": "static-uid"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	static := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "s-node", Namespace: "ns", UID: "static-uid",
		Annotations: map[string]string{"kubernetes.io/config.source": "file", "kubernetes.io/config.hash": "static-uid"}}}
	cs, m := setUp(t, mirror)
	var ready atomic.Bool
	m.Ready = ready.Load
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx, 1)
	unready := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}}
	m.SetPodStatus(static, unready)
	ready.Store(true)
	time.Sleep(2500 * time.Millisecond)
	if n := patches(cs); n != 0 {
		got, _ := cs.CoreV1().Pods("ns").Get(ctx, "s-node", metav1.GetOptions{})
		t.Fatalf("%d patches of the provisional status; the mirror now says %+v", n, got.Status.Conditions)
	}
	rebuilt := corev1.PodStatus{Phase: corev1.PodRunning, Message: "rebuilt", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	m.SetPodStatus(static, rebuilt)
	deadline := time.Now().Add(5 * time.Second)
	for patches(cs) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the status set after the pods were listed was not sent")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, _ := cs.CoreV1().Pods("ns").Get(ctx, "s-node", metav1.GetOptions{}); got.Status.Message != "rebuilt" {
		t.Errorf("mirror status %+v", got.Status)
	}
}

// The node lifecycle controller marks a NotReady node's pods not Ready
// (their Ready condition only); once the agent has sent its status it sets
// Ready back, as upstream's status manager does, without being asked to.
func TestReadinessSetBackAfterAnotherWriter(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"}}
	cs, m := setUp(t, pod)
	ready := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{
		{Type: corev1.PodReady, Status: corev1.ConditionTrue}, {Type: corev1.ContainersReady, Status: corev1.ConditionTrue}}}
	m.SetPodStatus(pod, ready)
	ctx := context.Background()
	if !m.processNext(ctx) || patches(cs) != 1 {
		t.Fatalf("the status was not sent: %d patches", patches(cs))
	}
	// What the controller leaves: Ready False, ContainersReady still True.
	got, _ := cs.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
	got.Status.Conditions[0].Status = corev1.ConditionFalse
	got, err := cs.CoreV1().Pods("ns").UpdateStatus(ctx, got, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.pods = listerOf(t, got)
	m.reconcile()
	if m.queue.Len() != 1 || !m.processNext(ctx) {
		t.Fatalf("the drifted pod was not queued (queue %d)", m.queue.Len())
	}
	if got, _ := cs.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{}); !podReady(&got.Status) {
		t.Errorf("Ready not set back: %+v", got.Status.Conditions)
	}
	// No drift, nothing queued; a pod someone ended is left ended.
	got, _ = cs.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
	m.pods = listerOf(t, got)
	m.reconcile()
	if n := m.queue.Len(); n != 0 {
		t.Errorf("%d pods queued without a drift", n)
	}
	got.Status.Phase = corev1.PodFailed
	m.pods = listerOf(t, got)
	m.reconcile()
	if n := m.queue.Len(); n != 0 {
		t.Errorf("a pod failed by another writer was queued to be set running again")
	}
}

func listerOf(t *testing.T, pods ...*corev1.Pod) corelisters.PodLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return corelisters.NewPodLister(idx)
}

// The last status of a static pod survives a restart through the
// checkpoint; API pods are not written there.
func TestStaticStatusCheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bosun", "static.json")
	static := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns", UID: "static-uid",
		Annotations: map[string]string{"kubernetes.io/config.source": "file"}}}
	api := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", UID: "api-uid"}}
	_, m := setUp(t)
	m.LoadStaticCheckpoint(klog.Background(), path)
	start := metav1.NewTime(time.Unix(1000, 0).UTC())
	m.SetPodStatus(static, corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &start})
	m.SetPodStatus(api, corev1.PodStatus{Phase: corev1.PodRunning})
	if err := m.writeStaticCheckpoint(); err != nil {
		t.Fatal(err)
	}
	_, m2 := setUp(t)
	m2.LoadStaticCheckpoint(klog.Background(), path)
	st, ok := m2.LastStaticStatus("static-uid")
	if !ok || st.StartTime == nil || !st.StartTime.Equal(&start) {
		t.Errorf("static pod status after restart: %v %+v", ok, st)
	}
	if _, ok := m2.LastStaticStatus("api-uid"); ok {
		t.Error("an API pod's status was checkpointed")
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, m3 := setUp(t)
	m3.LoadStaticCheckpoint(klog.Background(), path)
	if _, ok := m3.LastStaticStatus("static-uid"); ok {
		t.Error("a corrupt checkpoint gave a status")
	}
}

func readyStatus(ready corev1.ConditionStatus, restarts int32) corev1.PodStatus {
	return corev1.PodStatus{Phase: corev1.PodRunning,
		Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "c", Ready: ready == corev1.ConditionTrue, RestartCount: restarts}}}
}

// A pod that goes unready and back before its status is sent is reported
// unready first, then ready: the loss of readiness is not coalesced away.
func TestUnreadyNotCoalescedAway(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"},
		Status: readyStatus(corev1.ConditionTrue, 0)}
	cs, m := setUp(t, pod)
	m.SetPodStatus(pod, readyStatus(corev1.ConditionFalse, 0))
	old := readyStatus(corev1.ConditionFalse, 1)
	old.HostIP = "10.0.0.1" // a field the earlier status had wrong
	m.SetPodStatus(pod, old)
	latest := readyStatus(corev1.ConditionTrue, 1)
	latest.HostIP = "10.0.0.2"
	m.SetPodStatus(pod, latest)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx, 1)
	deadline := time.Now().Add(5 * time.Second)
	for patches(cs) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d status patches, want 2", patches(cs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var sent []string
	for _, a := range cs.Actions() {
		if p, ok := a.(clienttesting.PatchAction); ok && a.GetSubresource() == "status" {
			sent = append(sent, string(p.GetPatch()))
		}
	}
	if len(sent) != 2 || !strings.Contains(sent[0], `"status":"False"`) || !strings.Contains(sent[1], `"status":"True"`) {
		t.Fatalf("patches sent: %q; want Ready=False, then Ready=True", sent)
	}
	if strings.Contains(sent[0], "10.0.0.1") || !strings.Contains(sent[0], "10.0.0.2") {
		t.Errorf("the unready patch %s carries more of the earlier status than its readiness", sent[0])
	}
	got, _ := cs.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
	if got.Status.Conditions[0].Status != corev1.ConditionTrue || got.Status.ContainerStatuses[0].RestartCount != 1 {
		t.Errorf("final status %+v, want Ready with 1 restart", got.Status)
	}
}

// kubelet_pod_status_sync_duration_seconds: a status change sent to the
// apiserver is observed once, from when it was set to when it went out.
func TestStatusSyncDurationObserved(t *testing.T) {
	bmetrics.Register("node-1")
	before, _ := testutil.GetHistogramMetricCount(bmetrics.PodStatusSyncDuration.ObserverMetric)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"}}
	cs, m := setUp(t, pod)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx, 1)
	m.SetPodStatus(pod, corev1.PodStatus{Phase: corev1.PodRunning})
	waitPatched(t, cs, "no status patch")
	deadline := time.Now().Add(5 * time.Second)
	for {
		after, _ := testutil.GetHistogramMetricCount(bmetrics.PodStatusSyncDuration.ObserverMetric)
		if after == before+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("observations went from %d to %d, want one more", before, after)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The same status again: nothing to send, nothing observed.
	m.SetPodStatus(pod, corev1.PodStatus{Phase: corev1.PodRunning})
	time.Sleep(300 * time.Millisecond)
	if after, _ := testutil.GetHistogramMetricCount(bmetrics.PodStatusSyncDuration.ObserverMetric); after != before+1 {
		t.Errorf("an unchanged status was observed: %d observations, want %d", after, before+1)
	}
}

// A status with the runtime's nanosecond times equals the apiserver's copy
// of it (whole seconds): sending it again costs no request, where every
// resync used to send a patch that changed nothing.
func TestSameStatusWithNanosecondsNotSentAgain(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"}}
	cs := fake.NewClientset(pod)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = idx.Add(pod)
	m := New(cs, corelisters.NewPodLister(idx))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx, 1)
	started := metav1.NewTime(time.Date(2026, 12, 6, 15, 0, 0, 123456789, time.UTC))
	status := func() corev1.PodStatus {
		return corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &started,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: started}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "c", Ready: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}}}}
	}
	m.SetPodStatus(pod, status())
	waitPatched(t, cs, "no status patch")
	// The informer's copy: what the apiserver stored, through JSON.
	got, err := cs.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(got)
	stored := &corev1.Pod{}
	if err := json.Unmarshal(data, stored); err != nil {
		t.Fatal(err)
	}
	if stored.Status.StartTime.Nanosecond() != 0 {
		t.Fatalf("the stored start time kept its nanoseconds: %v", stored.Status.StartTime)
	}
	_ = idx.Update(stored)
	// A resync builds the same status; the version moves on.
	st := status()
	st.Message = "changed"
	m.SetPodStatus(pod, st)
	m.SetPodStatus(pod, status())
	time.Sleep(500 * time.Millisecond)
	if n := patches(cs); n != 1 {
		t.Errorf("%d status patches, want 1: the same status went out again", n)
	}
}

// The pod's DRA claim statuses belong to the claim controller and the
// scheduler: a status patch keeps them as the apiserver has them (the
// NodeRestriction admission refuses a node's patch that changes them).
func TestClaimStatusesAreNotOurs(t *testing.T) {
	claim := "p-gpu-x1"
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"},
		Status: corev1.PodStatus{Phase: corev1.PodPending,
			ResourceClaimStatuses:       []corev1.PodResourceClaimStatus{{Name: "gpu", ResourceClaimName: &claim}},
			ExtendedResourceClaimStatus: &corev1.PodExtendedResourceClaimStatus{ResourceClaimName: "p-extended"}}}
	cs, m := setUp(t, pod)
	var sent []string
	cs.PrependReactor("patch", "pods", func(a clienttesting.Action) (bool, runtime.Object, error) {
		sent = append(sent, string(a.(clienttesting.PatchAction).GetPatch()))
		return false, nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx, 1)
	m.SetPodStatus(pod, corev1.PodStatus{Phase: corev1.PodRunning})
	waitPatched(t, cs, "no status patch")
	if len(sent) != 1 || strings.Contains(sent[0], "resourceClaimStatuses") || strings.Contains(sent[0], "extendedResourceClaimStatus") {
		t.Fatalf("patches %q touch the claim statuses", sent)
	}
	got, err := cs.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != corev1.PodRunning || len(got.Status.ResourceClaimStatuses) != 1 || got.Status.ExtendedResourceClaimStatus == nil {
		t.Errorf("stored status %+v", got.Status)
	}
}
