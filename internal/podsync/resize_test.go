package podsync

import (
	"context"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

// updateRecorder records what UpdateContainerResources and StopContainer are
// given.
type updateRecorder struct {
	*critest.FakeRuntimeService
	mu      sync.Mutex
	updated map[string]*runtimeapi.LinuxContainerResources
	stopped []string
	usage   map[string]uint64 // memory usage by container ID
}

func (r *updateRecorder) UpdateContainerResources(_ context.Context, id string, res *runtimeapi.ContainerResources) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updated[id] = res.GetLinux()
	return nil
}

func (r *updateRecorder) StopContainer(_ context.Context, id string, _ int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = append(r.stopped, id)
	return nil
}

func TestResizeRunningUpdatesInPlaceOrRestartsByPolicy(t *testing.T) {
	rec := &updateRecorder{FakeRuntimeService: critest.NewFakeRuntimeService(), updated: map[string]*runtimeapi.LinuxContainerResources{}}
	s := &Syncer{cfg: SyncerConfig{Runtime: rec, Node: NodeSettings{CPUCFSQuota: true, CFSPeriodUS: 100000}}, backoff: NewBackoff()}
	res := func(cpu, mem string) corev1.ResourceRequirements {
		l := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}
		return corev1.ResourceRequirements{Requests: l, Limits: l}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}, Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Name: "grow", Resources: res("200m", "64Mi")},
		{Name: "same", Resources: res("100m", "64Mi")},
		{Name: "restart", Resources: res("100m", "128Mi"), ResizePolicy: []corev1.ContainerResizePolicy{{ResourceName: corev1.ResourceMemory, RestartPolicy: corev1.RestartContainer}}},
	}}}
	running := func(id, name, cpu, mem string) *Container {
		c := corev1.Container{Name: name, Resources: res(cpu, mem)}
		return &Container{SandboxID: "sb", ContainerStatus: &runtimeapi.ContainerStatus{Id: id, Metadata: &runtimeapi.ContainerMetadata{Name: name},
			State: runtimeapi.ContainerState_CONTAINER_RUNNING, Resources: &runtimeapi.ContainerResources{Linux: containerResources(s.cfg.Node, pod, &c, 0)}}}
	}
	rp := &RuntimePod{Containers: []*Container{running("id-grow", "grow", "100m", "64Mi"), running("id-same", "same", "100m", "64Mi"), running("id-restart", "restart", "100m", "64Mi")}}
	if acted, err := s.resizeRunning(context.Background(), pod, rp, "sb"); err != nil || !acted {
		t.Fatalf("resize: acted %v, err %v; want it to act", acted, err)
	}
	got := rec.updated["id-grow"]
	if got == nil || got.CpuShares != 204 || got.CpuQuota != 20000 || got.MemoryLimitInBytes != 64<<20 {
		t.Errorf("the grown container got %+v, want 204 shares, a 20000 quota and 64 MiB", got)
	}
	if _, ok := rec.updated["id-same"]; ok {
		t.Error("an unchanged container was updated")
	}
	if _, ok := rec.updated["id-restart"]; ok || len(rec.stopped) != 1 || rec.stopped[0] != "id-restart" {
		t.Errorf("the RestartContainer container: updated %v, stopped %v; want it stopped, not updated", rec.updated["id-restart"], rec.stopped)
	}
	// Once the runtime runs the new values, nothing more happens.
	rec.updated, rec.stopped = map[string]*runtimeapi.LinuxContainerResources{}, nil
	rp = &RuntimePod{Containers: []*Container{running("id-grow", "grow", "200m", "64Mi"), running("id-same", "same", "100m", "64Mi"), running("id-restart2", "restart", "100m", "128Mi")}}
	if acted, err := s.resizeRunning(context.Background(), pod, rp, "sb"); err != nil || acted || len(rec.updated)+len(rec.stopped) != 0 {
		t.Errorf("a settled pod: acted %v, err %v, updated %v, stopped %v", acted, err, rec.updated, rec.stopped)
	}
}

func (r *updateRecorder) ContainerStats(_ context.Context, id string) (*runtimeapi.ContainerStats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &runtimeapi.ContainerStats{Memory: &runtimeapi.MemoryUsage{UsageBytes: &runtimeapi.UInt64Value{Value: r.usage[id]}}}, nil
}

// A memory limit is not lowered to or below what the container uses: the
// resize is refused whole, as upstream refuses it, and reported; once the
// usage allows it, it is applied. ResizeInProgress tells the two apart.
func TestResizeRefusesMemoryLimitBelowUsage(t *testing.T) {
	rec := &updateRecorder{FakeRuntimeService: critest.NewFakeRuntimeService(), updated: map[string]*runtimeapi.LinuxContainerResources{},
		usage: map[string]uint64{"id-a": 100 << 20}}
	var failed []string
	s := &Syncer{cfg: SyncerConfig{Runtime: rec, Node: NodeSettings{CPUCFSQuota: true, CFSPeriodUS: 100000},
		ResizeFailed: func(_ *corev1.Pod, msg string) { failed = append(failed, msg) }}, backoff: NewBackoff()}
	res := func(cpu, mem string) corev1.ResourceRequirements {
		l := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}
		return corev1.ResourceRequirements{Requests: l, Limits: l}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}, Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Name: "a", Resources: res("200m", "64Mi")},
	}}}
	was := corev1.Container{Name: "a", Resources: res("100m", "128Mi")}
	rp := &RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("sb", 0)}, Containers: []*Container{{SandboxID: "sb", ContainerStatus: &runtimeapi.ContainerStatus{
		Id: "id-a", Metadata: &runtimeapi.ContainerMetadata{Name: "a"}, State: runtimeapi.ContainerState_CONTAINER_RUNNING,
		Resources: &runtimeapi.ContainerResources{Linux: containerResources(s.cfg.Node, pod, &was, 0)}}}}}
	if !s.ResizeInProgress(pod, rp) {
		t.Fatal("a container running with its old resources is not in progress")
	}
	_, err := s.resizeRunning(context.Background(), pod, rp, "sb")
	want := `cannot decrease memory limits: attempting to set container "a" memory limit (67108864) below current usage (104857600)`
	if err == nil || err.Error() != want || len(failed) != 1 || failed[0] != want {
		t.Fatalf("err %v, reported %q; want %q", err, failed, want)
	}
	if len(rec.updated) != 0 {
		t.Fatalf("a refused resize updated %v (its cpu too must wait)", rec.updated)
	}
	rec.usage["id-a"] = 10 << 20
	if _, err := s.resizeRunning(context.Background(), pod, rp, "sb"); err != nil {
		t.Fatal(err)
	}
	if got := rec.updated["id-a"]; got == nil || got.MemoryLimitInBytes != 64<<20 {
		t.Errorf("with usage below the new limit the container got %+v", got)
	}
}
