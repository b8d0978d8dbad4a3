// Package podresources serves the pod resources API
// (k8s.io/kubelet/pkg/apis/podresources v1 and v1alpha1) on
// <root-dir>/pod-resources/kubelet.sock, which monitoring agents and device
// exporters read: the devices each container of each active pod holds, and
// the devices the node can allocate, and the CPUs: a container's exclusive
// CPUs and the CPUs exclusive allocations may take (the CPU manager's
// static policy; empty under none, as upstream's), and the memory: a
// container's memory blocks and each NUMA node's allocatable memory (the
// memory manager's Static policy; empty under None).
package podresources

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	v1 "k8s.io/kubelet/pkg/apis/podresources/v1"
	"k8s.io/kubelet/pkg/apis/podresources/v1alpha1"

	"github.com/bosun-dev/bosun/internal/devices"
	"github.com/bosun-dev/bosun/internal/devices/checkpoint"
	"github.com/bosun-dev/bosun/internal/memorymanager"
)

// Upstream's limits: 100 requests a second, bursts of 10.
const (
	qps   = 100
	burst = 10
)

// Server answers the pod resources API.
type Server struct {
	Pods    func() []*corev1.Pod // the active pods
	Devices *devices.Manager
	// CPUs is the CPU manager (nil: no CPU IDs).
	CPUs interface {
		Exclusive(uid types.UID, container string) []int64
		Allocatable() []int64
	}
	// Memory is the memory manager (nil: no memory).
	Memory interface {
		Memory(uid types.UID, container string) []memorymanager.Block
		Allocatable() []memorymanager.Block
	}
	// Claims reports the DRA claims a container uses (nil: none).
	Claims interface {
		ContainerClaims(pod *corev1.Pod, c *corev1.Container) []*v1.DynamicResource
	}

	v1.UnsafePodResourcesListerServer
}

// Serve listens on <rootDir>/pod-resources/kubelet.sock until ctx ends.
func (s *Server) Serve(ctx context.Context, rootDir string) error {
	dir := filepath.Join(rootDir, "pod-resources")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("pod resources API: %w", err)
	}
	path := filepath.Join(dir, "kubelet.sock")
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("pod resources API: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("pod resources API: %w", err)
	}
	limiter := rate.NewLimiter(qps, burst)
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if !limiter.Allow() {
			return nil, status.Error(codes.ResourceExhausted, "rejected by rate limit")
		}
		return h(ctx, req)
	}))
	v1.RegisterPodResourcesListerServer(srv, s)
	v1alpha1.RegisterPodResourcesListerServer(srv, alpha{s: s})
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil {
			klog.FromContext(ctx).Error(err, "The pod resources API stopped")
		}
	}()
	klog.FromContext(ctx).Info("Serving the pod resources API", "socket", path)
	return nil
}

// List is every active pod's containers (and sidecars) with their devices.
func (s *Server) List(context.Context, *v1.ListPodResourcesRequest) (*v1.ListPodResourcesResponse, error) {
	out := &v1.ListPodResourcesResponse{}
	for _, pod := range s.sorted() {
		out.PodResources = append(out.PodResources, s.podResources(pod))
	}
	return out, nil
}

// Get is one active pod's.
func (s *Server) Get(_ context.Context, r *v1.GetPodResourcesRequest) (*v1.GetPodResourcesResponse, error) {
	for _, pod := range s.Pods() {
		if pod.Name == r.PodName && pod.Namespace == r.PodNamespace {
			return &v1.GetPodResourcesResponse{PodResources: s.podResources(pod)}, nil
		}
	}
	return nil, fmt.Errorf("pod %s in namespace %s not found", r.PodName, r.PodNamespace)
}

// GetAllocatableResources is the healthy devices, each with its NUMA nodes.
func (s *Server) GetAllocatableResources(context.Context, *v1.AllocatableResourcesRequest) (*v1.AllocatableResourcesResponse, error) {
	out := &v1.AllocatableResourcesResponse{}
	if s.CPUs != nil {
		out.CpuIds = s.CPUs.Allocatable()
	}
	if s.Memory != nil {
		out.Memory = memory(s.Memory.Allocatable())
	}
	for _, d := range s.Devices.Allocatable() {
		cd := &v1.ContainerDevices{ResourceName: d.Resource, DeviceIds: []string{d.ID}}
		if len(d.NUMA) > 0 {
			cd.Topology = &v1.TopologyInfo{}
			for _, n := range d.NUMA {
				cd.Topology.Nodes = append(cd.Topology.Nodes, &v1.NUMANode{ID: n})
			}
		}
		out.Devices = append(out.Devices, cd)
	}
	return out, nil
}

// memory turns memory manager blocks into the API's, each with its NUMA
// nodes.
func memory(blocks []memorymanager.Block) []*v1.ContainerMemory {
	var out []*v1.ContainerMemory
	for _, b := range blocks {
		m := &v1.ContainerMemory{MemoryType: string(b.Type), Size: b.Size, Topology: &v1.TopologyInfo{}}
		for _, n := range b.NUMAAffinity {
			m.Topology.Nodes = append(m.Topology.Nodes, &v1.NUMANode{ID: int64(n)})
		}
		out = append(out, m)
	}
	return out
}

func (s *Server) sorted() []*corev1.Pod {
	pods := s.Pods()
	sort.Slice(pods, func(i, j int) bool {
		return pods[i].Namespace+"/"+pods[i].Name < pods[j].Namespace+"/"+pods[j].Name
	})
	return pods
}

func (s *Server) podResources(pod *corev1.Pod) *v1.PodResources {
	pr := &v1.PodResources{Name: pod.Name, Namespace: pod.Namespace}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			pr.Containers = append(pr.Containers, s.containerResources(pod, c.Name))
		}
	}
	for _, c := range pod.Spec.Containers {
		pr.Containers = append(pr.Containers, s.containerResources(pod, c.Name))
	}
	return pr
}

func (s *Server) containerResources(pod *corev1.Pod, name string) *v1.ContainerResources {
	cr := &v1.ContainerResources{Name: name}
	if s.CPUs != nil {
		cr.CpuIds = s.CPUs.Exclusive(pod.UID, name)
	}
	if s.Memory != nil {
		cr.Memory = memory(s.Memory.Memory(pod.UID, name))
	}
	assigned := s.Devices.Assigned(pod.UID, name)
	resources := make([]string, 0, len(assigned))
	for r := range assigned {
		resources = append(resources, r)
	}
	sort.Strings(resources)
	for _, r := range resources {
		cr.Devices = append(cr.Devices, byNUMA(r, assigned[r])...)
	}
	if s.Claims != nil {
		for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
			for i := range cs {
				if cs[i].Name == name {
					cr.DynamicResources = s.Claims.ContainerClaims(pod, &cs[i])
				}
			}
		}
	}
	return cr
}

// byNUMA is one entry per NUMA node, as upstream groups them (no topology
// for devices without one).
func byNUMA(resource string, ids checkpoint.DevicesPerNUMA) []*v1.ContainerDevices {
	nodes := make([]int64, 0, len(ids))
	for n := range ids {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i] < nodes[j] })
	var out []*v1.ContainerDevices
	for _, n := range nodes {
		cd := &v1.ContainerDevices{ResourceName: resource, DeviceIds: append([]string(nil), ids[n]...)}
		if n >= 0 {
			cd.Topology = &v1.TopologyInfo{Nodes: []*v1.NUMANode{{ID: n}}}
		}
		out = append(out, cd)
	}
	return out
}

// alpha is the v1alpha1 API: List with devices only.
type alpha struct {
	s *Server
	v1alpha1.UnimplementedPodResourcesListerServer
}

func (a alpha) List(context.Context, *v1alpha1.ListPodResourcesRequest) (*v1alpha1.ListPodResourcesResponse, error) {
	out := &v1alpha1.ListPodResourcesResponse{}
	for _, pod := range a.s.sorted() {
		pr := &v1alpha1.PodResources{Name: pod.Name, Namespace: pod.Namespace}
		for _, c := range pod.Spec.Containers {
			cr := &v1alpha1.ContainerResources{Name: c.Name}
			for res, ids := range a.s.Devices.Assigned(pod.UID, c.Name) {
				var all []string
				for _, l := range ids {
					all = append(all, l...)
				}
				sort.Strings(all)
				cr.Devices = append(cr.Devices, &v1alpha1.ContainerDevices{ResourceName: res, DeviceIds: all})
			}
			sort.Slice(cr.Devices, func(i, j int) bool { return cr.Devices[i].ResourceName < cr.Devices[j].ResourceName })
			pr.Containers = append(pr.Containers, cr)
		}
		out.PodResources = append(out.PodResources, pr)
	}
	return out, nil
}
