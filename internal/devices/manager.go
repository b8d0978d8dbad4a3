// Package devices is the node agent's side of the device plugin API
// (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1), as the upstream kubelet has
// it: plugins register on /var/lib/kubelet/device-plugins/kubelet.sock (a
// fixed path, whatever --root-dir says, which device plugin DaemonSets
// mount), their
// devices become the node's extended resources (capacity counts every device,
// allocatable the healthy ones), pods are given devices at admission through
// the plugin's Allocate (and GetPreferredAllocation, PreStartContainer when the
// plugin asks for them), and the allocations are kept in upstream's checkpoint
// file so that they survive restarts and a swap of agents.
package devices

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/bosun-dev/bosun/internal/atomicfile"
	"github.com/bosun-dev/bosun/internal/devices/checkpoint"
	"github.com/bosun-dev/bosun/internal/topology"
)

// StopGracePeriod is how long a resource whose plugin went away stays on the
// node (with no allocatable devices) before it is removed, as upstream.
const StopGracePeriod = 5 * time.Minute

// Manager is the device plugin registry and allocator.
type Manager struct {
	dir     string // Dir (a test's folder in tests)
	changed func() // the node's resources changed
	grace   time.Duration

	allocating sync.Mutex // one allocation at a time (plugin calls happen without mu)
	mu         sync.Mutex
	resources  map[string]*pluginResource
	removed    map[string]bool                                 // resources whose plugin is gone for good (reported as zero)
	alloc      map[types.UID]map[string]map[string]*allocation // pod -> container -> resource
	server     *grpc.Server
	stopping   bool // Stop was called: the checkpoint is no longer written
	numaNodes  []int
	// reuse is the devices the finished init containers of the pod being
	// admitted held, which its later containers take first; pending is the
	// (container, resource) allocations its admission made so far.
	reuse   map[types.UID]map[string][]string
	pending map[types.UID][][2]string
	// healthChanged is called with the pods whose devices changed health.
	healthChanged func([]types.UID)
	// claimBacked says which containers' extended resources a DRA claim
	// serves instead of a plugin (nil: none).
	claimBacked func(pod *corev1.Pod, container string, res corev1.ResourceName) bool
	pluginapi.UnsafeRegistrationServer
}

// SetClaimBacked names the extended resources that a DRA claim serves
// (DRAExtendedResource): the plugins allocate none of them, as upstream's
// device manager skips them, even when a plugin offers the same resource.
func (m *Manager) SetClaimBacked(f func(pod *corev1.Pod, container string, res corev1.ResourceName) bool) {
	m.mu.Lock()
	m.claimBacked = f
	m.mu.Unlock()
}

// limits are the container's limits the plugins may serve; the caller
// holds mu.
func (m *Manager) limitsLocked(pod *corev1.Pod, c *corev1.Container) corev1.ResourceList {
	if m.claimBacked == nil || pod.Status.ExtendedResourceClaimStatus == nil {
		return c.Resources.Limits
	}
	out := make(corev1.ResourceList, len(c.Resources.Limits))
	for name, q := range c.Resources.Limits {
		if !m.claimBacked(pod, c.Name, name) {
			out[name] = q
		}
	}
	return out
}

type pluginResource struct {
	name    string
	conn    *grpc.ClientConn // nil once the plugin went away
	client  pluginapi.DevicePluginClient
	opts    *pluginapi.DevicePluginOptions
	devices map[string]*pluginapi.Device
	stopped time.Time // when the plugin went away (zero: connected)
}

type allocation struct {
	ids  checkpoint.DevicesPerNUMA
	resp *pluginapi.ContainerAllocateResponse
}

// Dir is where the upstream kubelet serves device plugins, whatever its
// --root-dir.
const Dir = "/var/lib/kubelet/device-plugins"

// New returns a manager serving in dir (Dir, or a test's folder); changed is
// called when the devices the node offers change. Devices stay allocated to
// a pod until Release (its containers stopped for good) or ReleaseUnless
// (housekeeping).
func New(dir string, changed func()) *Manager {
	return &Manager{
		dir: dir, changed: changed, grace: StopGracePeriod,
		resources: map[string]*pluginResource{}, removed: map[string]bool{}, alloc: map[types.UID]map[string]map[string]*allocation{},
	}
}

// SocketPath is the registration socket plugins dial.
func (m *Manager) SocketPath() string { return filepath.Join(m.dir, "kubelet.sock") }

// Start reads the checkpoint, removes the sockets of the last run (plugins
// watch for kubelet.sock to come back and register again) and serves the
// registration socket until ctx ends.
func (m *Manager) Start(ctx context.Context) error {
	log := klog.FromContext(ctx)
	if err := os.MkdirAll(m.dir, 0o750); err != nil {
		return fmt.Errorf("device plugins: %w", err)
	}
	m.readCheckpoint(log)
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return fmt.Errorf("device plugins: %w", err)
	}
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 {
			if err := os.Remove(filepath.Join(m.dir, e.Name())); err != nil {
				log.Error(err, "Failed to remove a device plugin socket of the last run", "path", e.Name())
			}
		}
	}
	ln, err := net.Listen("unix", m.SocketPath())
	if err != nil {
		return fmt.Errorf("device plugin registration socket: %w", err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(srv, m)
	m.mu.Lock()
	m.server = srv
	m.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil {
			log.Error(err, "Device plugin registration server stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		m.Stop()
	}()
	log.Info("Serving device plugin registration", "socket", m.SocketPath())
	return nil
}

// Stop closes the registration socket and the plugin connections; the
// checkpoint keeps what it held (streams ending now do not rewrite it).
func (m *Manager) Stop() {
	m.mu.Lock()
	m.stopping = true
	srv := m.server
	m.server = nil
	for _, r := range m.resources {
		if r.conn != nil {
			_ = r.conn.Close()
		}
	}
	m.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// Register is a plugin's registration call.
func (m *Manager) Register(ctx context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	log := klog.FromContext(ctx).WithValues("resourceName", r.ResourceName)
	log.Info("Got registration request from device plugin")
	if !slices.Contains(pluginapi.SupportedVersions[:], r.Version) {
		return &pluginapi.Empty{}, fmt.Errorf("requested API version %q is not supported by kubelet. Supported version is %q", r.Version, pluginapi.SupportedVersions)
	}
	if !IsExtendedResourceName(r.ResourceName) {
		return &pluginapi.Empty{}, fmt.Errorf("the ResourceName %q is invalid", r.ResourceName)
	}
	if r.Endpoint == "" || strings.ContainsRune(r.Endpoint, '/') || r.Endpoint == "." || r.Endpoint == ".." {
		return &pluginapi.Empty{}, fmt.Errorf("the endpoint %q must be a socket name in %s", r.Endpoint, m.dir)
	}
	if err := m.connect(ctx, r.ResourceName, filepath.Join(m.dir, r.Endpoint)); err != nil {
		return &pluginapi.Empty{}, err
	}
	return &pluginapi.Empty{}, nil
}

// connect dials a plugin's socket, reads its options and follows its devices.
func (m *Manager) connect(ctx context.Context, resourceName, socket string) error {
	log := klog.FromContext(ctx).WithValues("resourceName", resourceName)
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("localhost"))
	if err != nil {
		return fmt.Errorf("failed to dial device plugin: %w", err)
	}
	client := pluginapi.NewDevicePluginClient(conn)
	opts, err := client.GetDevicePluginOptions(dialCtx, &pluginapi.Empty{})
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("failed to get device plugin options: %w", err)
	}
	stream, err := client.ListAndWatch(context.Background(), &pluginapi.Empty{})
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("device plugin ListAndWatch: %w", err)
	}
	m.mu.Lock()
	old := m.resources[resourceName]
	res := &pluginResource{name: resourceName, conn: conn, client: client, opts: opts, devices: map[string]*pluginapi.Device{}}
	m.resources[resourceName] = res
	delete(m.removed, resourceName)
	m.mu.Unlock()
	if old != nil && old.conn != nil {
		_ = old.conn.Close() // a plugin registering again replaces itself
	}
	go m.watch(klog.NewContext(context.Background(), log), res, stream)
	log.Info("Device plugin registered", "socket", socket)
	return nil
}

// ValidatePlugin checks a device plugin found in the plugin registry folder
// (the plugin watcher's way to register).
func (m *Manager) ValidatePlugin(name, endpoint string, versions []string) error {
	if !slices.ContainsFunc(versions, func(v string) bool { return slices.Contains(pluginapi.SupportedVersions[:], v) }) {
		return fmt.Errorf("manager version, %s, is not among plugin supported versions %v", pluginapi.Version, versions)
	}
	if !IsExtendedResourceName(name) {
		return fmt.Errorf("invalid name of device plugin socket: the ResourceName %q is invalid", name)
	}
	return nil
}

// RegisterPlugin connects a device plugin the plugin watcher found.
func (m *Manager) RegisterPlugin(ctx context.Context, name, endpoint string, _ []string) error {
	return m.connect(ctx, name, endpoint)
}

// DeRegisterPlugin forgets a plugin whose registry socket went away: its
// devices turn unhealthy, as when its stream ends.
func (m *Manager) DeRegisterPlugin(name, _ string) {
	m.mu.Lock()
	r := m.resources[name]
	m.mu.Unlock()
	if r != nil && r.conn != nil {
		_ = r.conn.Close()
	}
}

// watch follows a plugin's device list until its stream ends; then its
// devices count as unhealthy until it registers again or the grace period ends.
func (m *Manager) watch(ctx context.Context, res *pluginResource, stream pluginapi.DevicePlugin_ListAndWatchClient) {
	log := klog.FromContext(ctx)
	for {
		resp, err := stream.Recv()
		if err != nil {
			log.Info("Device plugin went away", "err", err)
			var pods []types.UID
			m.mu.Lock()
			if m.resources[res.name] == res {
				res.stopped = time.Now()
				before := map[string]*pluginapi.Device{}
				for id, d := range res.devices {
					before[id] = proto.Clone(d).(*pluginapi.Device)
					d.Health = pluginapi.Unhealthy
				}
				pods = m.podsWithChangedHealth(res.name, before, res.devices)
				res.conn = nil
			}
			m.mu.Unlock()
			m.writeCheckpoint(log)
			m.changed()
			m.notifyHealth(pods)
			return
		}
		m.mu.Lock()
		if m.resources[res.name] != res {
			m.mu.Unlock()
			return
		}
		before := res.devices
		res.devices = map[string]*pluginapi.Device{}
		for _, d := range resp.Devices {
			res.devices[d.ID] = d
		}
		healthy := countHealthy(res)
		pods := m.podsWithChangedHealth(res.name, before, res.devices)
		m.mu.Unlock()
		log.V(2).Info("Device plugin's devices", "total", len(resp.Devices), "healthy", healthy)
		m.writeCheckpoint(log)
		m.changed()
		m.notifyHealth(pods)
	}
}

// Resources is what the node offers: each resource's devices in capacity,
// its healthy ones in allocatable, and the resources removed (their plugin
// gone for longer than the grace period), which the node status sets to zero.
func (m *Manager) Resources() (capacity, allocatable corev1.ResourceList, removed []string) {
	m.mu.Lock()
	capacity, allocatable = corev1.ResourceList{}, corev1.ResourceList{}
	dropped := false
	for name, r := range m.resources {
		if !r.stopped.IsZero() && time.Since(r.stopped) > m.grace {
			delete(m.resources, name)
			m.removed[name] = true
			dropped = true
			continue
		}
		healthy := countHealthy(r)
		capacity[corev1.ResourceName(name)] = *resource.NewQuantity(int64(len(r.devices)), resource.DecimalSI)
		allocatable[corev1.ResourceName(name)] = *resource.NewQuantity(int64(healthy), resource.DecimalSI)
	}
	for name := range m.removed {
		removed = append(removed, name)
	}
	m.mu.Unlock()
	sort.Strings(removed)
	if dropped {
		m.writeCheckpoint(klog.Background())
	}
	return capacity, allocatable, removed
}

// IsExtendedResourceName is upstream's test for a resource a device plugin
// may advertise: a domain-qualified name outside kubernetes.io, valid behind
// the "requests." quota prefix.
func IsExtendedResourceName(name string) bool {
	if !strings.Contains(name, "/") || strings.Contains(name, corev1.ResourceDefaultNamespacePrefix) ||
		strings.HasPrefix(name, corev1.DefaultResourceRequestsPrefix) {
		return false
	}
	return len(validation.IsQualifiedName(corev1.DefaultResourceRequestsPrefix+name)) == 0
}

// AdmissionError is an allocation that failed at admission: the pod is
// rejected with upstream's reason and message.
type AdmissionError struct{ Err error }

func (e *AdmissionError) Error() string {
	return fmt.Sprintf("Allocate failed due to %v, which is unexpected", e.Err)
}

// Reason is the pod status reason of the rejection.
func (e *AdmissionError) Reason() string { return "UnexpectedAdmissionError" }

func allContainers(pod *corev1.Pod) []corev1.Container {
	return slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers)
}

// SetNUMANodes tells the manager the machine's NUMA nodes, over which its
// topology hints range.
func (m *Manager) SetNUMANodes(nodes []int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.numaNodes = slices.Clone(nodes)
}

// deviceNodes is a device's NUMA nodes (none: no topology).
func deviceNodes(d *pluginapi.Device) []int {
	var out []int
	for _, n := range d.GetTopology().GetNodes() {
		out = append(out, int(n.ID))
	}
	return out
}

// hasTopology says whether any of the resource's devices names its NUMA
// node: only then does the resource have a NUMA preference.
func hasTopology(res *pluginResource) bool {
	for _, d := range res.devices {
		if len(deviceNodes(d)) > 0 {
			return true
		}
	}
	return false
}

// inUseLocked is the resource's devices some container holds.
func (m *Manager) inUseLocked(resource string) map[string]bool {
	out := map[string]bool{}
	for _, byContainer := range m.alloc {
		for _, byRes := range byContainer {
			if a := byRes[resource]; a != nil {
				for _, id := range flatten(a.ids) {
					out[id] = true
				}
			}
		}
	}
	return out
}

// hintsLocked is the hints for n devices of res taken from available plus
// reusable, as upstream's device manager generates them: over the NUMA
// nodes its devices name (those the machine has), or every node when they
// name none of those.
func (m *Manager) hintsLocked(res *pluginResource, available, reusable []string, n int) []topology.Hint {
	known := map[int]bool{}
	for _, id := range m.numaNodes {
		known[id] = true
	}
	var nodes []int
	for _, d := range res.devices {
		for _, id := range deviceNodes(d) {
			if known[id] && !slices.Contains(nodes, id) {
				nodes = append(nodes, id)
			}
		}
	}
	if len(nodes) == 0 {
		nodes = m.numaNodes
	}
	slices.Sort(nodes)
	return topology.Generate(nodes, n, func(mask topology.Mask) int {
		count := 0
		for _, d := range res.devices {
			if mask.HasAny(deviceNodes(d)) {
				count++
			}
		}
		return count
	}, func(mask topology.Mask) (int, bool) {
		count := 0
		for _, id := range reusable {
			if d := res.devices[id]; d != nil && len(deviceNodes(d)) > 0 {
				if !mask.HasAny(deviceNodes(d)) {
					return 0, false
				}
				count++
			}
		}
		for _, id := range available {
			if mask.HasAny(deviceNodes(res.devices[id])) {
				count++
			}
		}
		return count, true
	})
}

// availableLocked is the resource's healthy devices no container holds.
func (m *Manager) availableLocked(res *pluginResource) []string {
	inUse := m.inUseLocked(res.name)
	var out []string
	for id, d := range res.devices {
		if d.Health == pluginapi.Healthy && !inUse[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// ContainerHints says on which NUMA nodes the devices a container asks for
// could lie: nil for a resource whose devices name no NUMA node, no hint
// at all when there are not enough devices.
func (m *Manager) ContainerHints(pod *corev1.Pod, c *corev1.Container) topology.Hints {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := topology.Hints{}
	for name, q := range m.limitsLocked(pod, c) {
		res, ok := m.resources[string(name)]
		needed := int(q.Value())
		if !ok || needed == 0 {
			continue
		}
		if !hasTopology(res) {
			out[res.name] = nil
			continue
		}
		if a := m.alloc[pod.UID][c.Name][res.name]; a != nil {
			have := flatten(a.ids)
			if len(have) != needed {
				out[res.name] = []topology.Hint{}
				continue
			}
			out[res.name] = m.hintsLocked(res, have, nil, needed)
			continue
		}
		available, reusable := m.availableLocked(res), m.reuse[pod.UID][res.name]
		if len(union(available, reusable)) < needed {
			out[res.name] = []topology.Hint{}
			continue
		}
		out[res.name] = m.hintsLocked(res, available, reusable, needed)
	}
	return out
}

// PodHints is ContainerHints for the whole pod (the pod scope), for the
// most devices of each resource the pod holds at once.
func (m *Manager) PodHints(pod *corev1.Pod) topology.Hints {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	requests := map[string]int{}
	for name := range m.resources {
		byInit, bySidecars, byApps := 0, 0, 0
		for i := range pod.Spec.InitContainers {
			c := &pod.Spec.InitContainers[i]
			q := m.limitsLocked(pod, c)[corev1.ResourceName(name)]
			// A regular init container runs beside the sidecars started
			// before it (upstream's resource.PodLimits).
			if n := int(q.Value()); c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				bySidecars += n
			} else {
				byInit = max(byInit, bySidecars+n)
			}
		}
		for i := range pod.Spec.Containers {
			q := m.limitsLocked(pod, &pod.Spec.Containers[i])[corev1.ResourceName(name)]
			byApps += int(q.Value())
		}
		if n := max(byInit, byApps+bySidecars); n > 0 {
			requests[name] = n
		}
	}
	out := topology.Hints{}
	for name, needed := range requests {
		res := m.resources[name]
		if !hasTopology(res) {
			out[name] = nil
			continue
		}
		var have []string
		for _, byRes := range m.alloc[pod.UID] {
			if a := byRes[name]; a != nil {
				have = union(have, flatten(a.ids))
			}
		}
		if len(have) > 0 {
			if len(have) != needed {
				out[name] = []topology.Hint{}
				continue
			}
			out[name] = m.hintsLocked(res, have, nil, needed)
			continue
		}
		available := m.availableLocked(res)
		if len(available) < needed {
			out[name] = []topology.Hint{}
			continue
		}
		out[name] = m.hintsLocked(res, available, nil, needed)
	}
	return out
}

// AllocateContainer gives a container the devices it asks for, from the
// affinity's NUMA nodes first. Devices of an init container that runs to
// completion are reused by the containers after it; a container already
// allocated keeps its devices.
func (m *Manager) AllocateContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container, hint topology.Hint) error {
	if m == nil {
		return nil
	}
	m.allocating.Lock()
	defer m.allocating.Unlock()
	initC := slices.ContainsFunc(pod.Spec.InitContainers, func(ic corev1.Container) bool { return ic.Name == c.Name })
	sidecar := initC && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
	m.mu.Lock()
	reusable := m.reuse[pod.UID]
	if reusable == nil {
		reusable = map[string][]string{}
		m.reuse = map[types.UID]map[string][]string{pod.UID: reusable} // one pod at a time, as upstream
	}
	m.mu.Unlock()
	got, err := m.allocateContainer(ctx, pod, c, reusable, hint.Affinity)
	if err != nil {
		return &AdmissionError{Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for res, ids := range got {
		if initC && !sidecar {
			reusable[res] = union(reusable[res], ids)
		} else {
			reusable[res] = slices.DeleteFunc(reusable[res], func(id string) bool { return slices.Contains(ids, id) })
		}
	}
	return nil
}

// allocatePod allocates every container of a pod admitted before its
// devices' plugin was known, with no NUMA affinity.
func (m *Manager) allocatePod(ctx context.Context, pod *corev1.Pod) error {
	for _, c := range allContainers(pod) {
		if err := m.AllocateContainer(ctx, pod, &c, topology.Hint{}); err != nil {
			m.Abort(ctx, pod)
			return err
		}
	}
	m.Commit(ctx, pod)
	return nil
}

// Abort takes back the devices this admission gave the pod.
func (m *Manager) Abort(_ context.Context, pod *corev1.Pod) {
	if m == nil {
		return
	}
	m.allocating.Lock()
	defer m.allocating.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.pending[pod.UID] {
		delete(m.alloc[pod.UID][p[0]], p[1])
		if len(m.alloc[pod.UID][p[0]]) == 0 {
			delete(m.alloc[pod.UID], p[0])
		}
	}
	if len(m.alloc[pod.UID]) == 0 {
		delete(m.alloc, pod.UID)
	}
	delete(m.pending, pod.UID)
	delete(m.reuse, pod.UID)
}

// Commit writes the checkpoint when this admission gave the pod devices.
func (m *Manager) Commit(ctx context.Context, pod *corev1.Pod) {
	if m == nil {
		return
	}
	m.mu.Lock()
	changed := len(m.pending[pod.UID]) > 0
	delete(m.pending, pod.UID)
	m.mu.Unlock()
	if changed {
		m.writeCheckpoint(klog.FromContext(ctx))
	}
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// allocateContainer allocates one container's devices, returning them by resource.
func (m *Manager) allocateContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container, reusable map[string][]string, affinity topology.Mask) (map[string][]string, error) {
	got := map[string][]string{}
	m.mu.Lock()
	limits := m.limitsLocked(pod, c)
	m.mu.Unlock()
	names := make([]string, 0, len(limits))
	for name := range limits {
		names = append(names, string(name))
	}
	sort.Strings(names)
	for _, name := range names {
		q := limits[corev1.ResourceName(name)]
		needed := int(q.Value())
		m.mu.Lock()
		res, ok := m.resources[name]
		if !ok || needed == 0 {
			m.mu.Unlock()
			continue
		}
		if a := m.alloc[pod.UID][c.Name][name]; a != nil {
			have := flatten(a.ids)
			m.mu.Unlock()
			if len(have) != needed {
				return nil, fmt.Errorf("pod %q container %q changed request for resource %q from %d to %d", pod.UID, c.Name, name, len(have), needed)
			}
			got[name] = have
			continue
		}
		ids, err := m.pickLocked(ctx, res, pod.UID, c.Name, needed, reusable[name], affinity)
		client := res.client
		m.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if client == nil {
			return nil, fmt.Errorf("unknown Device Plugin %s", name)
		}
		resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}})
		if err != nil {
			m.mu.Lock()
			delete(m.alloc[pod.UID][c.Name], name)
			m.mu.Unlock()
			return nil, fmt.Errorf("device plugin %s Allocate: %w", name, err)
		}
		if len(resp.ContainerResponses) == 0 {
			m.mu.Lock()
			delete(m.alloc[pod.UID][c.Name], name)
			m.mu.Unlock()
			return nil, fmt.Errorf("no containers return in allocation response %v", resp)
		}
		m.mu.Lock()
		a := m.alloc[pod.UID][c.Name][name]
		if a != nil {
			a.resp = resp.ContainerResponses[0]
		}
		m.mu.Unlock()
		if a == nil {
			return nil, fmt.Errorf("pod %s ended while its devices were being allocated", pod.UID)
		}
		got[name] = ids
	}
	return got, nil
}

// pickLocked chooses needed healthy devices not held by another container,
// preferring ones an earlier init container of the pod freed, then those on
// the affinity's NUMA nodes, then the plugin's preference, as upstream
// orders them, and reserves them. It is called with m.mu and m.allocating
// held, and lets go of m.mu during the plugin call.
func (m *Manager) pickLocked(ctx context.Context, res *pluginResource, pod types.UID, container string, needed int, reusable []string, affinity topology.Mask) ([]string, error) {
	if countHealthy(res) == 0 {
		return nil, fmt.Errorf("no healthy devices present; cannot allocate unhealthy devices %s", res.name)
	}
	var picked []string
	for _, id := range reusable {
		if d := res.devices[id]; d != nil && d.Health == pluginapi.Healthy && len(picked) < needed {
			picked = append(picked, id)
		}
	}
	available := slices.DeleteFunc(m.availableLocked(res), func(id string) bool { return slices.Contains(picked, id) })
	if len(picked)+len(available) < needed {
		return nil, fmt.Errorf("requested number of devices unavailable for %s. Requested: %d, Available: %d", res.name, needed-len(picked), len(available))
	}
	if affinity != 0 && hasTopology(res) && len(picked) < needed {
		var aligned, other []string
		for _, id := range available {
			if affinity.HasAny(deviceNodes(res.devices[id])) {
				aligned = append(aligned, id)
			} else {
				other = append(other, id)
			}
		}
		// Devices naming a NUMA node come before those naming none.
		sort.SliceStable(other, func(i, j int) bool {
			return len(deviceNodes(res.devices[other[i]])) > 0 && len(deviceNodes(res.devices[other[j]])) == 0
		})
		if needed-len(picked) < len(aligned) {
			available = aligned // enough on the chosen nodes: the plugin picks among them
		} else {
			picked = append(picked, aligned...)
			available = other
		}
	}
	if len(picked) < needed && res.opts.GetGetPreferredAllocationAvailable() && res.client != nil {
		m.mu.Unlock()
		pref, err := res.client.GetPreferredAllocation(ctx, &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{
			AvailableDeviceIDs: slices.Concat(picked, available), MustIncludeDeviceIDs: picked, AllocationSize: int32(needed)}}})
		m.mu.Lock()
		if err != nil {
			return nil, fmt.Errorf("device plugin GetPreferredAllocation rpc failed with err: %w", err)
		}
		if rs := pref.GetContainerResponses(); len(rs) > 0 {
			for _, id := range rs[0].DeviceIDs {
				if i := slices.Index(available, id); i >= 0 && len(picked) < needed {
					picked = append(picked, id)
					available = slices.Delete(available, i, i+1)
				}
			}
		}
	}
	for len(picked) < needed {
		picked = append(picked, available[0])
		available = available[1:]
	}
	ids := checkpoint.DevicesPerNUMA{}
	for _, id := range picked {
		nodes := deviceNodes(res.devices[id])
		if len(nodes) == 0 {
			ids[-1] = append(ids[-1], id)
			continue
		}
		for _, n := range nodes {
			ids[int64(n)] = append(ids[int64(n)], id)
		}
	}
	if m.alloc[pod] == nil {
		m.alloc[pod] = map[string]map[string]*allocation{}
	}
	if m.alloc[pod][container] == nil {
		m.alloc[pod][container] = map[string]*allocation{}
	}
	m.alloc[pod][container][res.name] = &allocation{ids: ids}
	if m.pending == nil {
		m.pending = map[types.UID][][2]string{}
	}
	m.pending[pod] = append(m.pending[pod], [2]string{container, res.name})
	return picked, nil
}

func countHealthy(r *pluginResource) int {
	n := 0
	for _, d := range r.devices {
		if d.Health == pluginapi.Healthy {
			n++
		}
	}
	return n
}

// flatten lists the device IDs of an allocation once each, sorted.
func flatten(ids checkpoint.DevicesPerNUMA) []string {
	var out []string
	for _, l := range ids {
		for _, id := range l {
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	sort.Strings(out)
	return out
}

// ReleaseUnless frees the devices of every pod holding says no longer holds
// them (pods that ended while no agent ran, or whose end was missed).
func (m *Manager) ReleaseUnless(holding func(types.UID) bool) {
	if m == nil {
		return
	}
	m.allocating.Lock()
	defer m.allocating.Unlock()
	m.mu.Lock()
	dropped := false
	for uid := range m.alloc {
		if !holding(uid) {
			delete(m.alloc, uid)
			dropped = true
		}
	}
	m.mu.Unlock()
	if dropped {
		m.writeCheckpoint(klog.Background())
	}
}

// Release frees a pod's devices.
func (m *Manager) Release(uid types.UID) {
	if m == nil {
		return
	}
	m.allocating.Lock()
	defer m.allocating.Unlock()
	m.release(uid)
}

// release frees a pod's devices; callers hold m.allocating.
func (m *Manager) release(uid types.UID) {
	m.mu.Lock()
	_, had := m.alloc[uid]
	delete(m.alloc, uid)
	m.mu.Unlock()
	if had {
		m.writeCheckpoint(klog.Background())
	}
}

// ContainerOptions is what a container gets from its devices' plugins.
type ContainerOptions struct {
	Envs        map[string]string
	Mounts      []*pluginapi.Mount
	Devices     []*pluginapi.DeviceSpec
	Annotations map[string]string
	CDIDevices  []string
}

// ForContainer returns a container's device options, first calling
// PreStartContainer on each plugin that asks for it. A container whose
// allocation was lost (a checkpoint gone) is allocated again.
func (m *Manager) ForContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container) (*ContainerOptions, error) {
	if m == nil {
		return nil, nil
	}
	opts := &ContainerOptions{Envs: map[string]string{}, Annotations: map[string]string{}}
	names := make([]string, 0)
	m.mu.Lock()
	limits := m.limitsLocked(pod, c)
	m.mu.Unlock()
	for name, q := range limits {
		if !q.IsZero() {
			names = append(names, string(name))
		}
	}
	sort.Strings(names)
	for _, name := range names {
		m.mu.Lock()
		res, ok := m.resources[name]
		a := m.alloc[pod.UID][c.Name][name]
		m.mu.Unlock()
		if !ok {
			continue
		}
		if a == nil || a.resp == nil {
			if err := m.allocatePod(ctx, pod); err != nil {
				return nil, err
			}
			m.mu.Lock()
			a = m.alloc[pod.UID][c.Name][name]
			m.mu.Unlock()
			if a == nil || a.resp == nil {
				return nil, fmt.Errorf("no devices found allocated for pod %s, container %s, resource %s", pod.UID, c.Name, name)
			}
		}
		if res.opts.GetPreStartRequired() {
			if res.client == nil {
				return nil, fmt.Errorf("device plugin %s is not registered: cannot call PreStartContainer", name)
			}
			pctx, cancel := context.WithTimeout(ctx, pluginapi.KubeletPreStartContainerRPCTimeoutInSecs*time.Second)
			_, err := res.client.PreStartContainer(pctx, &pluginapi.PreStartContainerRequest{DevicesIds: flatten(a.ids)})
			cancel()
			if err != nil {
				return nil, fmt.Errorf("device plugin PreStartContainer rpc failed with err: %v", err)
			}
		}
		r := a.resp
		for k, v := range r.Envs {
			if _, dup := opts.Envs[k]; !dup {
				opts.Envs[k] = v
			}
		}
		for _, mnt := range r.Mounts {
			if !slices.ContainsFunc(opts.Mounts, func(o *pluginapi.Mount) bool { return o.ContainerPath == mnt.ContainerPath }) {
				opts.Mounts = append(opts.Mounts, mnt)
			}
		}
		for _, d := range r.Devices {
			if !slices.ContainsFunc(opts.Devices, func(o *pluginapi.DeviceSpec) bool { return o.ContainerPath == d.ContainerPath }) {
				opts.Devices = append(opts.Devices, d)
			}
		}
		for k, v := range r.Annotations {
			if _, dup := opts.Annotations[k]; !dup {
				opts.Annotations[k] = v
			}
		}
		for _, d := range r.CdiDevices {
			if !slices.Contains(opts.CDIDevices, d.Name) {
				opts.CDIDevices = append(opts.CDIDevices, d.Name)
			}
		}
	}
	return opts, nil
}

// writeCheckpoint saves allocations and registered devices atomically.
func (m *Manager) writeCheckpoint(log klog.Logger) {
	m.mu.Lock()
	if m.stopping {
		m.mu.Unlock()
		return
	}
	var entries []checkpoint.PodDevicesEntry
	for uid, byContainer := range m.alloc {
		for container, byRes := range byContainer {
			for res, a := range byRes {
				if a.resp == nil {
					continue
				}
				raw, err := proto.Marshal(a.resp)
				if err != nil {
					log.Error(err, "Cannot encode a device allocation", "pod", uid, "container", container)
					continue
				}
				entries = append(entries, checkpoint.PodDevicesEntry{PodUID: string(uid), ContainerName: container, ResourceName: res, DeviceIDs: a.ids, AllocResp: raw})
			}
		}
	}
	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		return a.PodUID+"\x00"+a.ContainerName+"\x00"+a.ResourceName < b.PodUID+"\x00"+b.ContainerName+"\x00"+b.ResourceName
	})
	registered := map[string][]string{}
	for name, r := range m.resources {
		ids := []string{}
		for id, d := range r.devices {
			if d.Health == pluginapi.Healthy {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		registered[name] = ids
	}
	m.mu.Unlock()
	data, err := checkpoint.Encode(entries, registered)
	if err == nil {
		err = atomicfile.Write(filepath.Join(m.dir, checkpoint.FileName), data, 0o600)
	}
	if err != nil {
		log.Error(err, "Failed to write the device checkpoint")
	}
}

// readCheckpoint restores allocations, and the resources registered then
// (as plugins that went away now, until they register again).
func (m *Manager) readCheckpoint(log klog.Logger) {
	data, err := os.ReadFile(filepath.Join(m.dir, checkpoint.FileName))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var entries []checkpoint.PodDevicesEntry
	var registered map[string][]string
	if err == nil {
		entries, registered, err = checkpoint.Decode(data)
	}
	if err != nil {
		log.Error(err, "Continuing without the device checkpoint: device allocations of running pods may be lost")
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range entries {
		resp := &pluginapi.ContainerAllocateResponse{}
		if err := proto.Unmarshal(e.AllocResp, resp); err != nil {
			log.Error(err, "Skipping an unreadable device allocation", "pod", e.PodUID, "container", e.ContainerName)
			continue
		}
		uid := types.UID(e.PodUID)
		if m.alloc[uid] == nil {
			m.alloc[uid] = map[string]map[string]*allocation{}
		}
		if m.alloc[uid][e.ContainerName] == nil {
			m.alloc[uid][e.ContainerName] = map[string]*allocation{}
		}
		m.alloc[uid][e.ContainerName][e.ResourceName] = &allocation{ids: e.DeviceIDs, resp: resp}
	}
	// As upstream: the resource is known again, with no devices until its
	// plugin registers and lists them.
	now := time.Now()
	for name := range registered {
		m.resources[name] = &pluginResource{name: name, devices: map[string]*pluginapi.Device{}, stopped: now}
	}
}

// Assigned is a container's devices by resource, grouped by NUMA node
// (-1: no topology), for the pod resources API.
func (m *Manager) Assigned(uid types.UID, container string) map[string]checkpoint.DevicesPerNUMA {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]checkpoint.DevicesPerNUMA{}
	for res, a := range m.alloc[uid][container] {
		out[res] = a.ids
	}
	return out
}

// Device is a healthy device the node offers, with its NUMA nodes.
type Device struct {
	Resource, ID string
	NUMA         []int64
}

// Allocatable lists every healthy device of every resource.
func (m *Manager) Allocatable() []Device {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Device
	for name, r := range m.resources {
		for id, d := range r.devices {
			if d.Health != pluginapi.Healthy {
				continue
			}
			dev := Device{Resource: name, ID: id}
			for _, n := range d.GetTopology().GetNodes() {
				dev.NUMA = append(dev.NUMA, n.ID)
			}
			out = append(out, dev)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Resource+"\x00"+out[i].ID < out[j].Resource+"\x00"+out[j].ID
	})
	return out
}
