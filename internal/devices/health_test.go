package devices

import (
	"context"
	"reflect"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// A container's devices and their health are in its status; a change of
// health syncs the pods holding the device again, and a plugin that goes
// away leaves its devices unhealthy there.
func TestDeviceHealthInContainerStatus(t *testing.T) {
	h := start(t, shortDir(t))
	p := servePlugin(t, h, 2, nil)
	waitFor(t, "2 devices", func() bool { _, a := offered(h.m); return a == 2 })
	var mu sync.Mutex
	var woken []types.UID
	h.m.OnHealthChange(func(uids []types.UID) { mu.Lock(); woken = append(woken, uids...); mu.Unlock() })
	pod := devicePod("pod-a", 0, 1)
	if err := h.m.allocatePod(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	id := flatten(h.m.alloc["pod-a"]["main"][res].ids)[0]
	other := "dev-0"
	if id == other {
		other = "dev-1"
	}
	status := func() []corev1.ResourceStatus {
		st := &corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "main", AllocatedResourcesStatus: []corev1.ResourceStatus{
			{Name: "claim:gpu", Resources: []corev1.ResourceHealth{{ResourceID: "x", Health: corev1.ResourceHealthStatusUnknown}}},
		}}}}
		h.m.UpdateAllocatedResourcesStatus(pod, st)
		return st.ContainerStatuses[0].AllocatedResourcesStatus
	}
	want := func(health corev1.ResourceHealthStatus) []corev1.ResourceStatus {
		return []corev1.ResourceStatus{
			{Name: "claim:gpu", Resources: []corev1.ResourceHealth{{ResourceID: "x", Health: corev1.ResourceHealthStatusUnknown}}},
			{Name: res, Resources: []corev1.ResourceHealth{{ResourceID: corev1.ResourceID(id), Health: health}}},
		}
	}
	if got := status(); !reflect.DeepEqual(got, want(corev1.ResourceHealthStatusHealthy)) {
		t.Fatalf("status %+v", got)
	}
	// A device the pod does not hold changes: nothing to sync.
	p.SetHealth(other, pluginapi.Unhealthy)
	waitFor(t, "the other device unhealthy", func() bool { _, a := offered(h.m); return a == 1 })
	mu.Lock()
	if len(woken) != 0 {
		t.Errorf("pods synced for a device they do not hold: %v", woken)
	}
	mu.Unlock()
	p.SetHealth(id, pluginapi.Unhealthy)
	// Each change syncs the pod at least once (a poll may see two syncs at once).
	waitFor(t, "the pod synced", func() bool { mu.Lock(); defer mu.Unlock(); return len(woken) >= 1 && woken[0] == "pod-a" })
	mu.Lock()
	synced := len(woken)
	mu.Unlock()
	if got := status(); !reflect.DeepEqual(got, want(corev1.ResourceHealthStatusUnhealthy)) {
		t.Fatalf("status %+v", got)
	}
	p.SetHealth(id, pluginapi.Healthy)
	waitFor(t, "the pod synced again", func() bool { mu.Lock(); defer mu.Unlock(); return len(woken) > synced })
	mu.Lock()
	synced = len(woken)
	mu.Unlock()
	p.Stop()
	waitFor(t, "the pod synced when the plugin left", func() bool { mu.Lock(); defer mu.Unlock(); return len(woken) > synced })
	if got := status(); !reflect.DeepEqual(got, want(corev1.ResourceHealthStatusUnhealthy)) {
		t.Fatalf("status after the plugin left %+v", got)
	}
}
