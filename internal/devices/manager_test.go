package devices

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/bosun-dev/bosun/hack/deviceplugin/plugin"
	"github.com/bosun-dev/bosun/internal/devices/checkpoint"
	"github.com/bosun-dev/bosun/internal/topology"
)

const res = "example.com/dev"

type harness struct {
	root    string
	m       *Manager
	changes atomic.Int32
	cancel  context.CancelFunc
}

// start runs a manager in a short temporary folder (socket paths are limited
// to 108 bytes).
func start(t *testing.T, root string) *harness {
	t.Helper()
	h := &harness{root: root}
	h.m = New(filepath.Join(root, "device-plugins"), func() { h.changes.Add(1) })
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	if err := h.m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return h
}

func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("/tmp", "dev")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func servePlugin(t *testing.T, h *harness, n int, setup func(*plugin.Plugin)) *plugin.Plugin {
	t.Helper()
	p := plugin.New(res, filepath.Join(h.root, "device-plugins"), "dev.sock", n)
	if setup != nil {
		setup(p)
	}
	if err := p.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	if err := p.Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func offered(m *Manager) (int64, int64) {
	c, a, _ := m.Resources()
	cq, aq := c[res], a[res]
	return cq.Value(), aq.Value()
}

func devicePod(uid string, init, main int64) *corev1.Pod {
	lim := func(n int64) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Limits: corev1.ResourceList{res: *resource.NewQuantity(n, resource.DecimalSI)}}
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uid, UID: types.UID(uid)}}
	if init > 0 {
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Resources: lim(init)}}
	}
	p.Spec.Containers = []corev1.Container{{Name: "main", Resources: lim(main)}}
	return p
}

func TestRegistrationIsValidated(t *testing.T) {
	h := start(t, shortDir(t))
	dir := filepath.Join(h.root, "device-plugins")
	for _, tc := range []struct {
		req  *pluginapi.RegisterRequest
		want string
	}{
		{&pluginapi.RegisterRequest{Version: "v1alpha", Endpoint: "x.sock", ResourceName: res}, `requested API version "v1alpha" is not supported`},
		{&pluginapi.RegisterRequest{Version: pluginapi.Version, Endpoint: "x.sock", ResourceName: "nvidia"}, `the ResourceName "nvidia" is invalid`},
		{&pluginapi.RegisterRequest{Version: pluginapi.Version, Endpoint: "x.sock", ResourceName: "kubernetes.io/dev"}, "is invalid"},
		{&pluginapi.RegisterRequest{Version: pluginapi.Version, Endpoint: "../x.sock", ResourceName: res}, "must be a socket name in " + dir},
		{&pluginapi.RegisterRequest{Version: pluginapi.Version, Endpoint: "absent.sock", ResourceName: res}, "device plugin options"},
	} {
		_, err := h.m.Register(context.Background(), tc.req)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Register(%v) = %v, want %q", tc.req, err, tc.want)
		}
	}
	if c, _, _ := h.m.Resources(); len(c) != 0 {
		t.Errorf("a refused plugin left resources %v", c)
	}
}

func TestDevicesBecomeNodeResourcesAndFollowHealth(t *testing.T) {
	h := start(t, shortDir(t))
	p := servePlugin(t, h, 3, nil)
	waitFor(t, "3 devices", func() bool { c, a := offered(h.m); return c == 3 && a == 3 })
	p.SetHealth("dev-1", pluginapi.Unhealthy)
	waitFor(t, "an unhealthy device out of allocatable", func() bool { c, a := offered(h.m); return c == 3 && a == 2 })
	if h.changes.Load() < 2 {
		t.Error("the node was not told of the changes")
	}
	// The plugin goes away: its devices stay in capacity, none allocatable,
	// until the grace period ends; then the resource is removed.
	p.Stop()
	waitFor(t, "devices unhealthy after the plugin left", func() bool { c, a := offered(h.m); return c == 3 && a == 0 })
	h.m.mu.Lock()
	h.m.grace = 0
	h.m.mu.Unlock()
	time.Sleep(time.Millisecond)
	c, _, removed := h.m.Resources()
	if len(c) != 0 || len(removed) != 1 || removed[0] != res {
		t.Errorf("after the grace period: capacity %v, removed %v", c, removed)
	}
}

func TestAllocationAtAdmissionAndContainerOptions(t *testing.T) {
	h := start(t, shortDir(t))
	hostDir := t.TempDir()
	p := servePlugin(t, h, 4, func(p *plugin.Plugin) {
		p.PreStartRequired, p.PreferredAllocation, p.HostMount = true, true, hostDir
	})
	waitFor(t, "4 devices", func() bool { _, a := offered(h.m); return a == 4 })
	ctx := context.Background()
	a := devicePod("pod-a", 0, 2)
	if err := h.m.allocatePod(ctx, a); err != nil {
		t.Fatal(err)
	}
	// The plugin prefers the highest-numbered devices.
	if len(p.Allocs) != 1 || strings.Join(p.Allocs[0], ",") != "dev-2,dev-3" {
		t.Fatalf("allocations %v, want the preferred dev-2,dev-3", p.Allocs)
	}
	opts, err := h.m.ForContainer(ctx, a, &a.Spec.Containers[0])
	if err != nil {
		t.Fatal(err)
	}
	if opts.Envs["BOSUN_TEST_DEVICES"] != "dev-2,dev-3" || len(opts.Mounts) != 1 || opts.Mounts[0].HostPath != hostDir ||
		opts.Annotations["example.com/devices"] != "dev-2,dev-3" {
		t.Errorf("container options %+v", opts)
	}
	if len(p.PreStart) != 1 {
		t.Errorf("PreStartContainer calls %v, want 1", p.PreStart)
	}
	// Three more do not fit: upstream's reason and message.
	b := devicePod("pod-b", 0, 3)
	err = h.m.allocatePod(ctx, b)
	var ae *AdmissionError
	if !errors.As(err, &ae) || ae.Reason() != "UnexpectedAdmissionError" ||
		err.Error() != "Allocate failed due to requested number of devices unavailable for example.com/dev. Requested: 3, Available: 2, which is unexpected" {
		t.Fatalf("over-allocation: %v", err)
	}
	// An init container's devices are reused by the containers after it.
	c := devicePod("pod-c", 2, 1)
	if err := h.m.allocatePod(ctx, c); err != nil {
		t.Fatal(err)
	}
	initIDs := flatten(h.m.alloc["pod-c"]["init"][res].ids)
	mainIDs := flatten(h.m.alloc["pod-c"]["main"][res].ids)
	if len(initIDs) != 2 || len(mainIDs) != 1 || !strings.Contains(strings.Join(initIDs, ","), mainIDs[0]) {
		t.Errorf("init %v, main %v: main must reuse an init device", initIDs, mainIDs)
	}
	// A pod that ended gives its devices back; housekeeping frees those of
	// pods the workers no longer hold.
	h.m.Release("pod-a")
	if err := h.m.allocatePod(ctx, devicePod("pod-d", 0, 2)); err != nil {
		t.Errorf("devices of a finished pod were not given back: %v", err)
	}
	h.m.ReleaseUnless(func(uid types.UID) bool { return uid != "pod-c" })
	if h.m.alloc["pod-c"] != nil || h.m.alloc["pod-d"] == nil {
		t.Errorf("ReleaseUnless: %v", h.m.alloc)
	}
}

func TestAllocationsSurviveARestart(t *testing.T) {
	root := shortDir(t)
	h := start(t, root)
	servePlugin(t, h, 2, nil)
	waitFor(t, "2 devices", func() bool { _, a := offered(h.m); return a == 2 })
	pod := devicePod("pod-a", 0, 1)
	ctx := context.Background()
	if err := h.m.allocatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	before, _ := h.m.ForContainer(ctx, pod, &pod.Spec.Containers[0])
	h.m.Stop()
	// The next agent: the checkpoint gives it the allocation and the
	// resource (unallocatable until the plugin registers again).
	h2 := start(t, root)
	if c, _, _ := h2.m.Resources(); len(c) != 1 {
		t.Errorf("restored resources %v, want %s (with no devices until its plugin is back)", c, res)
	}
	if c, a := offered(h2.m); c != 0 || a != 0 {
		t.Errorf("restored resource: capacity %d allocatable %d, want 0 and 0", c, a)
	}
	if _, err := os.Stat(filepath.Join(root, "device-plugins", "dev.sock")); !os.IsNotExist(err) {
		t.Errorf("the last run's plugin socket was not removed: %v", err)
	}
	servePlugin(t, h2, 2, nil)
	waitFor(t, "plugin back", func() bool { _, a := offered(h2.m); return a == 2 })
	after, err := h2.m.ForContainer(ctx, pod, &pod.Spec.Containers[0])
	if err != nil || after.Envs["BOSUN_TEST_DEVICES"] != before.Envs["BOSUN_TEST_DEVICES"] {
		t.Fatalf("after restart: %+v %v, before %+v", after, err, before)
	}
	// The other device is still free, the allocated one is not.
	if err := h2.m.allocatePod(ctx, devicePod("pod-b", 0, 2)); err == nil {
		t.Error("a restored allocation was handed out again")
	}
	if err := h2.m.allocatePod(ctx, devicePod("pod-c", 0, 1)); err != nil {
		t.Errorf("the free device: %v", err)
	}
}

func TestIsExtendedResourceName(t *testing.T) {
	for name, want := range map[string]bool{
		"example.com/dev": true, "nvidia.com/gpu": true, "cpu": false, "kubernetes.io/foo": false,
		"requests.example.com/dev": false, "example.com/": false, "bad name/x": false,
	} {
		if got := IsExtendedResourceName(name); got != want {
			t.Errorf("IsExtendedResourceName(%q) = %v, want %v", name, got, want)
		}
	}
}

// Devices that name their NUMA node give hints over the machine's nodes,
// and an allocation takes the devices of the chosen node first.
func TestTopologyHintsAndAlignedAllocation(t *testing.T) {
	h := start(t, shortDir(t))
	h.m.SetNUMANodes([]int{0, 1})
	servePlugin(t, h, 5, func(p *plugin.Plugin) {
		p.SetNUMA("dev-0", 0)
		p.SetNUMA("dev-1", 0)
		p.SetNUMA("dev-2", 1)
		p.SetNUMA("dev-3", 1)
		p.SetNUMA("dev-4", 7) // a node this machine does not have
	})
	waitFor(t, "devices offered", func() bool { _, a := offered(h.m); return a == 5 })
	pod := devicePod("pod-a", 0, 2)
	got := h.m.ContainerHints(pod, &pod.Spec.Containers[0])[res]
	want := []topology.Hint{{Affinity: topology.NewMask(0), Preferred: true}, {Affinity: topology.NewMask(1), Preferred: true},
		{Affinity: topology.NewMask(0, 1)}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("hints %v, want %v", got, want)
	}
	ctx := context.Background()
	if err := h.m.AllocateContainer(ctx, pod, &pod.Spec.Containers[0], topology.Hint{Affinity: topology.NewMask(1)}); err != nil {
		t.Fatal(err)
	}
	h.m.Commit(ctx, pod)
	if ids := h.m.Assigned(pod.UID, "main")[res]; !reflect.DeepEqual(ids, checkpoint.DevicesPerNUMA{1: {"dev-2", "dev-3"}}) {
		t.Fatalf("on node 1: %v", ids)
	}
	// Node 1 is used up: three devices now fit no single node.
	pod = devicePod("pod-b", 0, 3)
	got = h.m.ContainerHints(pod, &pod.Spec.Containers[0])[res]
	if want := []topology.Hint{}; !reflect.DeepEqual(got, want) {
		t.Fatalf("3 of the 3 left (one on no known node): %v, want none", got)
	}
	pod = devicePod("pod-c", 0, 2)
	got = h.m.ContainerHints(pod, &pod.Spec.Containers[0])[res]
	if want := []topology.Hint{{Affinity: topology.NewMask(0), Preferred: true}, {Affinity: topology.NewMask(0, 1)}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("2 of node 0's: %v, want %v", got, want)
	}
	// An allocation that is then taken back leaves the devices free.
	if err := h.m.AllocateContainer(ctx, pod, &pod.Spec.Containers[0], topology.Hint{Affinity: topology.NewMask(0)}); err != nil {
		t.Fatal(err)
	}
	h.m.Abort(ctx, pod)
	if ids := h.m.Assigned(pod.UID, "main"); len(ids) != 0 {
		t.Fatalf("aborted allocation kept: %v", ids)
	}
}

func TestDevicesWithoutTopologyHaveNoPreference(t *testing.T) {
	h := start(t, shortDir(t))
	h.m.SetNUMANodes([]int{0})
	servePlugin(t, h, 2, nil)
	waitFor(t, "devices offered", func() bool { _, a := offered(h.m); return a == 2 })
	pod := devicePod("pod-a", 0, 1)
	hints := h.m.ContainerHints(pod, &pod.Spec.Containers[0])
	if got, ok := hints[res]; !ok || got != nil {
		t.Fatalf("hints %v", hints)
	}
}

// The pod scope counts a regular init container together with the sidecars
// started before it, as upstream's resource.PodLimits: a sidecar with one
// device and an init container with two need three at once, which no single
// NUMA node here has.
func TestPodHintsCountSidecarsBeforeAnInitContainer(t *testing.T) {
	h := start(t, shortDir(t))
	h.m.SetNUMANodes([]int{0, 1})
	servePlugin(t, h, 4, func(p *plugin.Plugin) {
		p.SetNUMA("dev-0", 0)
		p.SetNUMA("dev-1", 0)
		p.SetNUMA("dev-2", 1)
		p.SetNUMA("dev-3", 1)
	})
	waitFor(t, "devices offered", func() bool { _, a := offered(h.m); return a == 4 })
	pod := devicePod("pod-a", 2, 0)
	always := corev1.ContainerRestartPolicyAlways
	sidecar := corev1.Container{Name: "side", RestartPolicy: &always, Resources: corev1.ResourceRequirements{
		Limits: corev1.ResourceList{res: *resource.NewQuantity(1, resource.DecimalSI)}}}
	pod.Spec.InitContainers = append([]corev1.Container{sidecar}, pod.Spec.InitContainers...)
	want := []topology.Hint{{Affinity: topology.NewMask(0, 1), Preferred: true}}
	if got := h.m.PodHints(pod)[res]; !reflect.DeepEqual(got, want) {
		t.Fatalf("hints %v, want %v (three devices at once)", got, want)
	}
	// After the init container, the sidecar alone counts: two fit one node.
	pod.Spec.InitContainers = []corev1.Container{pod.Spec.InitContainers[1], sidecar}
	want = []topology.Hint{{Affinity: topology.NewMask(0), Preferred: true}, {Affinity: topology.NewMask(1), Preferred: true}, {Affinity: topology.NewMask(0, 1)}}
	if got := h.m.PodHints(pod)[res]; !reflect.DeepEqual(got, want) {
		t.Fatalf("hints %v, want %v (two devices at once)", got, want)
	}
}

// A resource a DRA claim serves for a container (DRAExtendedResource) is
// not the plugins' to allocate, even when a plugin offers it: upstream's
// device manager skips it.
func TestClaimBackedResourcesAreNotAllocated(t *testing.T) {
	h := start(t, shortDir(t))
	p := servePlugin(t, h, 2, nil)
	waitFor(t, "2 devices", func() bool { _, a := offered(h.m); return a == 2 })
	h.m.SetClaimBacked(func(pod *corev1.Pod, container string, name corev1.ResourceName) bool {
		return pod.UID == "by-claim" && container == "main" && name == res
	})
	ctx := context.Background()
	byClaim := devicePod("by-claim", 0, 2)
	byClaim.Status.ExtendedResourceClaimStatus = &corev1.PodExtendedResourceClaimStatus{ResourceClaimName: "ext"}
	if err := h.m.allocatePod(ctx, byClaim); err != nil {
		t.Fatal(err)
	}
	opts, err := h.m.ForContainer(ctx, byClaim, &byClaim.Spec.Containers[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Allocs) != 0 || h.m.alloc["by-claim"] != nil || len(opts.Envs) != 0 {
		t.Errorf("the plugin allocated a claim's resource: allocations %v, options %+v", p.Allocs, opts)
	}
	if hints := h.m.ContainerHints(byClaim, &byClaim.Spec.Containers[0]); len(hints) != 0 {
		t.Errorf("hints for a claim's resource: %v", hints)
	}
	// Both devices are still free for a pod the plugin serves.
	if err := h.m.allocatePod(ctx, devicePod("plugin", 0, 2)); err != nil || len(p.Allocs) != 1 {
		t.Errorf("a plugin pod after the claim's pod: %v, allocations %v", err, p.Allocs)
	}
}
