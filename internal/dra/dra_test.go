package dra

import (
	"context"
	"encoding/json"
	"hash/crc32"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	drahealth "k8s.io/kubelet/pkg/apis/dra-health/v1alpha1"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	drapbv1beta1 "k8s.io/kubelet/pkg/apis/dra/v1beta1"
)

// fakeDriver prepares every claim with one device per claim.
type fakeDriver struct {
	drapb.UnimplementedDRAPluginServer
	mu        sync.Mutex
	prepared  []string
	released  []string
	failClaim string
	// health, when set, is served as the DRAResourceHealth stream.
	health chan *drahealth.NodeWatchResourcesResponse
	drahealth.UnimplementedDRAResourceHealthServer
}

func (f *fakeDriver) NodeWatchResources(_ *drahealth.NodeWatchResourcesRequest, s drahealth.DRAResourceHealth_NodeWatchResourcesServer) error {
	for {
		select {
		case r, ok := <-f.health:
			if !ok {
				return nil
			}
			if err := s.Send(r); err != nil {
				return err
			}
		case <-s.Context().Done():
			return nil
		}
	}
}

func (f *fakeDriver) NodePrepareResources(_ context.Context, r *drapb.NodePrepareResourcesRequest) (*drapb.NodePrepareResourcesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &drapb.NodePrepareResourcesResponse{Claims: map[string]*drapb.NodePrepareResourceResponse{}}
	for _, c := range r.Claims {
		f.prepared = append(f.prepared, c.Name)
		if c.Name == f.failClaim {
			out.Claims[c.Uid] = &drapb.NodePrepareResourceResponse{Error: "no such device"}
			continue
		}
		out.Claims[c.Uid] = &drapb.NodePrepareResourceResponse{Devices: []*drapb.Device{
			{RequestNames: []string{"gpu"}, PoolName: "pool", DeviceName: "dev-" + c.Name, CdiDeviceIds: []string{"vendor/class=" + c.Name}},
		}}
	}
	return out, nil
}

func (f *fakeDriver) NodeUnprepareResources(_ context.Context, r *drapb.NodeUnprepareResourcesRequest) (*drapb.NodeUnprepareResourcesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &drapb.NodeUnprepareResourcesResponse{Claims: map[string]*drapb.NodeUnprepareResourceResponse{}}
	for _, c := range r.Claims {
		f.released = append(f.released, c.Name)
		out.Claims[c.Uid] = &drapb.NodeUnprepareResourceResponse{}
	}
	return out, nil
}

func allocatedClaim(name string, reservedFor ...*corev1.Pod) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name)},
		Status: resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{
			Results: []resourceapi.DeviceRequestAllocationResult{{Request: "gpu", Driver: "drv.example", Pool: "pool", Device: "dev-" + name}},
		}}}}
	for _, p := range reservedFor {
		c.Status.ReservedFor = append(c.Status.ReservedFor, resourceapi.ResourceClaimConsumerReference{Resource: "pods", Name: p.Name, UID: p.UID})
	}
	return c
}

func claimPod(uid string, claims ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pod-" + uid, Namespace: "ns", UID: types.UID(uid)}}
	for _, c := range claims {
		p.Spec.ResourceClaims = append(p.Spec.ResourceClaims, corev1.PodResourceClaim{Name: "r-" + c, ResourceClaimName: &c})
	}
	return p
}

func start(t *testing.T, f *fakeDriver, root string, claims ...*resourceapi.ResourceClaim) *Manager {
	t.Helper()
	return startWith(t, f, root, []string{"v1beta1.DRAPlugin", drapb.DRAPluginService}, claims...)
}

// startWith serves the fake driver on the first service of offered.
func startWith(t *testing.T, f *fakeDriver, root string, offered []string, claims ...*resourceapi.ResourceClaim) *Manager {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "dra")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "dra.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	if f.health != nil {
		drahealth.RegisterDRAResourceHealthServer(srv, f)
	}
	if offered[0] == drapbv1beta1.DRAPluginService {
		drapbv1beta1.RegisterDRAPluginServer(srv, drapbv1beta1.V1ServerWrapper{DRAPluginServer: f})
	} else {
		drapb.RegisterDRAPluginServer(srv, f)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	client := fake.NewClientset()
	for _, c := range claims {
		if _, err := client.ResourceV1().ResourceClaims("ns").Create(context.Background(), c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := New(Config{Client: client, NodeName: "node", RootDir: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterPlugin(context.Background(), "drv.example", sock, offered); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPrepareCDIUnprepareWithASharedClaim(t *testing.T) {
	a, b := claimPod("a", "shared"), claimPod("b", "shared")
	f := &fakeDriver{}
	root := t.TempDir()
	m := start(t, f, root, allocatedClaim("shared", a, b))
	ctx := context.Background()
	for _, p := range []*corev1.Pod{a, b, a} {
		if err := m.Prepare(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.prepared) != 1 {
		t.Errorf("a claim prepared %d times for two pods", len(f.prepared))
	}
	c := &corev1.Container{Name: "c", Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "r-shared", Request: "gpu"}}}}
	if ids, err := m.CDIDevices(a, c); err != nil || len(ids) != 1 || ids[0] != "vendor/class=shared" {
		t.Errorf("CDI devices: %v %v", ids, err)
	}
	if got := m.ContainerClaims(a, c); len(got) != 1 || got[0].ClaimName != "shared" || len(got[0].ClaimResources) != 1 ||
		got[0].ClaimResources[0].DeviceName != "dev-shared" || got[0].ClaimResources[0].DriverName != "drv.example" ||
		got[0].ClaimResources[0].CdiDevices[0].Name != "vendor/class=shared" {
		t.Errorf("pod resources: %v", got)
	}
	if got := m.ContainerClaims(a, &corev1.Container{Name: "other"}); len(got) != 0 {
		t.Errorf("pod resources of a container without claims: %v", got)
	}
	c.Resources.Claims[0].Request = "other"
	if ids, _ := m.CDIDevices(a, c); len(ids) != 0 {
		t.Errorf("CDI devices of another request: %v", ids)
	}

	// The checkpoint is upstream's: checksummed JSON with the pods' UIDs.
	raw, err := os.ReadFile(filepath.Join(root, "dra_manager_state"))
	if err != nil {
		t.Fatal(err)
	}
	var cp struct {
		Data     string
		Checksum uint32
	}
	if err := json.Unmarshal(raw, &cp); err != nil || crc32.ChecksumIEEE([]byte(cp.Data)) != cp.Checksum {
		t.Fatalf("checkpoint %s: %v", raw, err)
	}
	for _, want := range []string{`"kind":"DRACheckpoint"`, `"apiVersion":"checkpoint.dra.kubelet.k8s.io/v1"`, `"PodUIDs":{"a":{},"b":{}}`, `"CDIDeviceIDs":["vendor/class=shared"]`} {
		if !strings.Contains(cp.Data, want) {
			t.Errorf("checkpoint data lacks %s: %s", want, cp.Data)
		}
	}
	// A restarted agent reads it back and can unprepare.
	m2, err := New(Config{Client: fake.NewClientset(), NodeName: "node", RootDir: root})
	if err != nil {
		t.Fatal(err)
	}
	m2.drivers = m.drivers
	if err := m2.Unprepare(ctx, "a"); err != nil || len(f.released) != 0 {
		t.Errorf("the first pod's unprepare released a claim the other pod uses: %v %v", err, f.released)
	}
	if err := m2.Unprepare(ctx, "b"); err != nil || len(f.released) != 1 {
		t.Errorf("the last pod's unprepare: %v %v", err, f.released)
	}
	if len(m2.claims) != 0 {
		t.Errorf("claims left: %+v", m2.claims)
	}
}

func TestPrepareRefusals(t *testing.T) {
	p := claimPod("p", "notmine", "failing", "unallocated")
	other := claimPod("other")
	unallocated := allocatedClaim("unallocated", p)
	unallocated.Status.Allocation = nil
	f := &fakeDriver{failClaim: "failing"}
	m := start(t, f, t.TempDir(), allocatedClaim("notmine", other), allocatedClaim("failing", p), unallocated)
	ctx := context.Background()
	for claims, want := range map[string]string{
		"notmine":     "pod pod-p (p) is not allowed to use ResourceClaim notmine (uid-notmine)",
		"failing":     "NodePrepareResources failed for ResourceClaim failing: no such device",
		"unallocated": "ResourceClaim unallocated: unallocated ResourceClaim",
		"missing":     "fetch ResourceClaim missing",
	} {
		err := m.Prepare(ctx, claimPod("p", claims))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("claim %s: %v, want %q", claims, err, want)
		}
	}
	m.DeRegisterPlugin("drv.example", m.drivers["drv.example"][0].endpoint)
	if err := m.Prepare(ctx, claimPod("p", "failing")); err == nil || err.Error() != "DRA driver drv.example is not registered" {
		t.Errorf("with the driver gone: %v", err)
	}
	if err := m.ValidatePlugin("d", "/x", []string{"v1alpha3.Node"}); err == nil {
		t.Error("a driver without the v1 service was accepted")
	}
}

// A driver that offers only the v1beta1 service is spoken to in v1beta1.
func TestV1beta1Driver(t *testing.T) {
	p := claimPod("p", "c")
	f := &fakeDriver{}
	m := startWith(t, f, t.TempDir(), []string{drapbv1beta1.DRAPluginService}, allocatedClaim("c", p))
	ctx := context.Background()
	if err := m.Prepare(ctx, p); err != nil {
		t.Fatal(err)
	}
	c := &corev1.Container{Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "r-c"}}}}
	if ids, err := m.CDIDevices(p, c); err != nil || len(ids) != 1 || ids[0] != "vendor/class=c" {
		t.Errorf("CDI devices through v1beta1: %v %v", ids, err)
	}
	if err := m.Unprepare(ctx, p.UID); err != nil || len(f.released) != 1 {
		t.Errorf("unprepare through v1beta1: %v %v", err, f.released)
	}
}

// A rolling update registers the driver's new instance on another socket
// before the old one goes: the newest is called, and the old one's
// deregistration leaves the new one registered.
func TestRollingUpdateKeepsTheNewInstance(t *testing.T) {
	pod := claimPod("a", "c1")
	oldDrv, newDrv := &fakeDriver{}, &fakeDriver{}
	root := t.TempDir()
	m := start(t, oldDrv, root, allocatedClaim("c1", pod))
	oldEndpoint := m.drivers["drv.example"][0].endpoint
	other := start(t, newDrv, t.TempDir())
	newEndpoint := other.drivers["drv.example"][0].endpoint
	ctx := context.Background()
	if err := m.RegisterPlugin(ctx, "drv.example", newEndpoint, []string{drapbv1beta1.DRAPluginService}); err != nil {
		t.Fatal(err)
	}
	m.DeRegisterPlugin("drv.example", oldEndpoint)
	if err := m.Prepare(ctx, pod); err != nil {
		t.Fatalf("prepare after the old instance left: %v", err)
	}
	if len(newDrv.prepared) != 1 || len(oldDrv.prepared) != 0 {
		t.Errorf("prepared by the new instance %v, the old %v", newDrv.prepared, oldDrv.prepared)
	}
	m.DeRegisterPlugin("drv.example", newEndpoint)
	if _, err := m.driver("drv.example"); err == nil {
		t.Error("the driver is still registered with both instances gone")
	}
}
