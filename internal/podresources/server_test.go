package podresources

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	v1 "k8s.io/kubelet/pkg/apis/podresources/v1"
	"k8s.io/kubelet/pkg/apis/podresources/v1alpha1"

	"github.com/bosun-dev/bosun/hack/deviceplugin/plugin"
	"github.com/bosun-dev/bosun/internal/devices"
	"github.com/bosun-dev/bosun/internal/topology"
)

func TestPodResourcesAPI(t *testing.T) {
	root, err := os.MkdirTemp("/tmp", "pr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := devices.New(filepath.Join(root, "device-plugins"), func() {})
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	p := plugin.New("example.com/dev", filepath.Join(root, "device-plugins"), "dev.sock", 3)
	if err := p.Serve(); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if err := p.Register(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(m.Allocatable()) < 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("devices not offered")
		}
	}
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gpu", Namespace: "ns", UID: "uid-1"}, Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "once"}, {Name: "side", RestartPolicy: &always}},
		Containers: []corev1.Container{{Name: "main", Resources: corev1.ResourceRequirements{
			Limits: corev1.ResourceList{"example.com/dev": resource.MustParse("2")}}}, {Name: "plain"}}}}
	tm, err := topology.New(topology.PolicyNone, "", nil, topology.NUMA{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tm.Admit(ctx, pod, m); err != nil {
		t.Fatal(err)
	}
	s := &Server{Pods: func() []*corev1.Pod { return []*corev1.Pod{pod} }, Devices: m}
	if err := s.Serve(ctx, root); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(root, "pod-resources", "kubelet.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	c := v1.NewPodResourcesListerClient(conn)
	list, err := c.List(ctx, &v1.ListPodResourcesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.PodResources) != 1 {
		t.Fatalf("List: %v", list)
	}
	pr := list.PodResources[0]
	var names []string
	for _, cr := range pr.Containers {
		names = append(names, cr.Name)
	}
	// Sidecars and containers; not init containers that run once.
	if strings.Join(names, ",") != "side,main,plain" {
		t.Errorf("containers %v, want side,main,plain", names)
	}
	main := pr.Containers[1]
	if len(main.Devices) != 1 || main.Devices[0].ResourceName != "example.com/dev" || len(main.Devices[0].DeviceIds) != 2 || main.Devices[0].Topology != nil {
		t.Errorf("main's devices %v", main.Devices)
	}
	got, err := c.Get(ctx, &v1.GetPodResourcesRequest{PodName: "gpu", PodNamespace: "ns"})
	if err != nil || len(got.PodResources.Containers) != 3 {
		t.Errorf("Get: %v %v", got, err)
	}
	if _, err := c.Get(ctx, &v1.GetPodResourcesRequest{PodName: "none", PodNamespace: "ns"}); err == nil || !strings.Contains(err.Error(), "pod none in namespace ns not found") {
		t.Errorf("Get of an unknown pod: %v", err)
	}
	alloc, err := c.GetAllocatableResources(ctx, &v1.AllocatableResourcesRequest{})
	if err != nil || len(alloc.Devices) != 3 || len(alloc.CpuIds) != 0 {
		t.Errorf("GetAllocatableResources: %v %v", alloc, err)
	}
	old, err := v1alpha1.NewPodResourcesListerClient(conn).List(ctx, &v1alpha1.ListPodResourcesRequest{})
	if err != nil || len(old.PodResources) != 1 || len(old.PodResources[0].Containers) != 2 || len(old.PodResources[0].Containers[0].Devices[0].DeviceIds) != 2 {
		t.Errorf("v1alpha1 List: %v %v", old, err)
	}
	// A client calling in a tight loop is cut off, as upstream's limiter does.
	limited := 0
	for range 50 {
		if _, err := c.List(ctx, &v1.ListPodResourcesRequest{}); status.Code(err) == codes.ResourceExhausted {
			limited++
		}
	}
	if limited == 0 {
		t.Error("50 calls at once were not rate limited")
	}
}
