package dra

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	drahealth "k8s.io/kubelet/pkg/apis/dra-health/v1alpha1"
)

func report(dev string, h drahealth.HealthStatus, msg string) *drahealth.NodeWatchResourcesResponse {
	return &drahealth.NodeWatchResourcesResponse{Devices: []*drahealth.DeviceHealth{{
		Device: &drahealth.DeviceIdentifier{PoolName: "pool", DeviceName: dev}, Health: h, Message: msg, LastUpdatedTime: time.Now().Unix()}}}
}

// The driver's health stream reaches the statuses of the containers that
// name a claim with the device, the pods using it are synced again, the
// reports are kept in dra_health_state, a report older than its timeout
// reads Unknown, and an ended stream forgets the driver's reports.
func TestDeviceHealthFromTheDriverStream(t *testing.T) {
	pod := claimPod("p1", "a")
	pod.Spec.Containers = []corev1.Container{
		{Name: "user", Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "r-a"}}}},
		{Name: "other"},
	}
	f := &fakeDriver{health: make(chan *drahealth.NodeWatchResourcesResponse)}
	root := t.TempDir()
	m := start(t, f, root, allocatedClaim("a", pod))
	var mu sync.Mutex
	var woken []types.UID
	m.OnHealthChange(func(uids []types.UID) { mu.Lock(); woken = append(woken, uids...); mu.Unlock() })
	if err := m.Prepare(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	status := func() *corev1.PodStatus {
		st := &corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
			{Name: "user", AllocatedResourcesStatus: []corev1.ResourceStatus{{Name: "example.com/dev", Resources: []corev1.ResourceHealth{{ResourceID: "d0", Health: "Healthy"}}}}},
			{Name: "other"},
		}}
		m.UpdateAllocatedResourcesStatus(pod, st)
		return st
	}
	claimStatus := func(h corev1.ResourceHealthStatus, msg string) []corev1.ResourceStatus {
		rh := corev1.ResourceHealth{ResourceID: "vendor/class=a", Health: h}
		if msg != "" {
			rh.Message = &msg
		}
		return []corev1.ResourceStatus{
			{Name: "example.com/dev", Resources: []corev1.ResourceHealth{{ResourceID: "d0", Health: "Healthy"}}},
			{Name: "claim:r-a", Resources: []corev1.ResourceHealth{rh}},
		}
	}
	// Before any report: Unknown.
	if got := status().ContainerStatuses[0].AllocatedResourcesStatus; !reflect.DeepEqual(got, claimStatus("Unknown", "")) {
		t.Fatalf("before a report: %+v", got)
	}
	wokenN := func(n int) func(context.Context) (bool, error) {
		return func(context.Context) (bool, error) { mu.Lock(); defer mu.Unlock(); return len(woken) == n, nil }
	}
	f.health <- report("dev-a", drahealth.HealthStatus_HEALTHY, "")
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, wokenN(1)); err != nil || woken[0] != "p1" {
		t.Fatalf("the pod was not synced: %v", woken)
	}
	if got := status().ContainerStatuses[0].AllocatedResourcesStatus; !reflect.DeepEqual(got, claimStatus("Healthy", "")) {
		t.Fatalf("healthy: %+v", got)
	}
	// A device no pod uses: no sync.
	f.health <- report("dev-z", drahealth.HealthStatus_UNHEALTHY, "")
	f.health <- report("dev-a", drahealth.HealthStatus_UNHEALTHY, "ECC errors")
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, wokenN(2)); err != nil {
		t.Fatalf("the pod was not synced again: %v", woken)
	}
	st := status()
	if got := st.ContainerStatuses[0].AllocatedResourcesStatus; !reflect.DeepEqual(got, claimStatus("Unhealthy", "ECC errors")) {
		t.Fatalf("unhealthy: %+v", got)
	}
	if st.ContainerStatuses[1].AllocatedResourcesStatus != nil {
		t.Errorf("a container without claims: %+v", st.ContainerStatuses[1].AllocatedResourcesStatus)
	}
	raw, err := os.ReadFile(filepath.Join(root, "dra_health_state"))
	if err != nil || !strings.Contains(string(raw), `"drv.example":{"Devices":{"pool/dev-a":{"PoolName":"pool","DeviceName":"dev-a","Health":"Unhealthy"`) {
		t.Errorf("dra_health_state: %s %v", raw, err)
	}
	if h := m.healthOf("drv.example", "pool", "dev-a", time.Now().Add(DefaultHealthTimeout+time.Second)); h.Health != unknown {
		t.Errorf("a report past its timeout: %+v", h)
	}
	// A restarted agent reads the reports back.
	m2, err := New(Config{Client: m.cfg.Client, NodeName: "node", RootDir: root})
	if err != nil {
		t.Fatal(err)
	}
	if h := m2.healthOf("drv.example", "pool", "dev-a", time.Now()); h.Health != unhealthy {
		t.Errorf("after a restart: %+v", h)
	}
	close(f.health)
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		return m.healthOf("drv.example", "pool", "dev-a", time.Now()).Health == unknown, nil
	}); err != nil {
		t.Errorf("the driver's reports outlived its stream")
	}
}

// A container that names a claim's request gets the devices of that
// request's subrequests too ("<request>/<subrequest>").
func TestDeviceHealthOfASubrequest(t *testing.T) {
	m, err := New(Config{Client: fakeClient(), NodeName: "node", RootDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	m.claims["ns/c"] = &claimState{ClaimName: "c", Namespace: "ns", PodUIDs: map[string]struct{}{"p1": {}},
		DriverState: map[string]driverState{"drv": {Devices: []device{
			{PoolName: "pool", DeviceName: "d1", RequestNames: []string{"gpu/small"}, CDIDeviceIDs: []string{"v/c=d1"}},
			{PoolName: "pool", DeviceName: "d2", RequestNames: []string{"nic"}, CDIDeviceIDs: []string{"v/c=d2"}},
		}}}}
	name := "c"
	pod := claimPod("p1")
	pod.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "r", ResourceClaimName: &name}}
	pod.Spec.Containers = []corev1.Container{{Name: "user", Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "r", Request: "gpu"}}}}}
	st := &corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "user"}}}
	m.UpdateAllocatedResourcesStatus(pod, st)
	want := []corev1.ResourceStatus{{Name: "claim:r/gpu", Resources: []corev1.ResourceHealth{{ResourceID: "v/c=d1", Health: "Unknown"}}}}
	if got := st.ContainerStatuses[0].AllocatedResourcesStatus; !reflect.DeepEqual(got, want) {
		t.Errorf("status %+v, want %+v", got, want)
	}
}

func fakeClient() *fake.Clientset { return fake.NewClientset() }
