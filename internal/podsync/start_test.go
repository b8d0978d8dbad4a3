package podsync

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	apitest "k8s.io/cri-api/pkg/apis/testing"
)

// cancelOnStart ends the pod's context while the runtime starts the
// container, as a pod deletion does, and records whether the start's own
// context ended with it.
type cancelOnStart struct {
	*apitest.FakeRuntimeService
	cancel    context.CancelFunc
	cancelled bool
}

func (r *cancelOnStart) StartContainer(ctx context.Context, id string) error {
	r.cancel()
	r.cancelled = ctx.Err() != nil
	return r.FakeRuntimeService.StartContainer(ctx, id)
}

// A pod killed while its container starts does not cut the start short:
// containerd leaves a cancelled start's container unremovable
// (containerd#11037), so the start completes and the kill then stops it.
func TestContainerStartOutlivesThePodsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt := &cancelOnStart{FakeRuntimeService: apitest.NewFakeRuntimeService(), cancel: cancel}
	images := apitest.NewFakeImageService()
	images.SetFakeImages([]string{"registry.example/app:1"})
	s, err := NewSyncer(SyncerConfig{Runtime: rt, Images: NewImagePuller(images, nil, false, 0), Volumes: &fakeVolumes{},
		Node: NodeSettings{RootDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}
	pod.Name, pod.Namespace, pod.UID = "p", "ns", "uid"
	sb := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns", Uid: "uid"}, LogDirectory: t.TempDir()}
	waiting, err := s.startContainer(ctx, pod, &RuntimePod{}, "app", "sb", sb, nil, nil)
	if err != nil || waiting != nil {
		t.Fatalf("startContainer: waiting %v, err %v", waiting, err)
	}
	if rt.cancelled {
		t.Error("the container's start was cancelled with the pod's context")
	}
	var started int
	for _, c := range rt.Containers {
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			started++
		}
	}
	if started != 1 {
		t.Errorf("%d containers running, want 1", started)
	}
}

// A sync that finds the pod as its spec wants it changes nothing in the
// runtime and reads the runtime once; a sync that starts something reads
// it again, to report what it started.
func TestSettledPodSyncReadsTheRuntimeOnce(t *testing.T) {
	rt := apitest.NewFakeRuntimeService()
	images := apitest.NewFakeImageService()
	images.SetFakeImages([]string{"registry.example/app:1"})
	s, err := NewSyncer(SyncerConfig{Runtime: rt, Images: NewImagePuller(images, nil, false, 0), Volumes: &fakeVolumes{},
		Node: NodeSettings{RootDir: t.TempDir(), PodLogsDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}
	pod.Name, pod.Namespace, pod.UID = "p", "ns", "uid"
	lists := func() (n int) {
		for _, c := range rt.GetCalls() {
			if c == "ListPodSandbox" {
				n++
			}
		}
		return n
	}
	running := func(rp *RuntimePod) bool {
		c := rp.Latest("app")
		return c != nil && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING
	}
	res, err := s.Sync(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	if !running(res.Runtime) || lists() != 2 {
		t.Fatalf("first sync: container running %v after %d reads of the runtime; want running, after 2", running(res.Runtime), lists())
	}
	before := lists()
	if res, err = s.Sync(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if !running(res.Runtime) || lists()-before != 1 {
		t.Errorf("settled sync: container running %v after %d reads of the runtime; want running, after 1", running(res.Runtime), lists()-before)
	}
}
