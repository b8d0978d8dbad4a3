// Package cpumanager is the kubelet's CPU manager: under the "static"
// policy a container of a Guaranteed pod that asks for a whole number of
// CPUs gets those CPUs to itself, and every other container runs on the
// shared pool (all CPUs but the exclusive ones, the reserved ones
// included). Allocation happens at admission; each container is created
// with its CPU set, and a reconcile loop moves running containers to the
// shared pool as it shrinks and grows. The state is upstream's
// <root-dir>/cpu_manager_state, same layout and checksum, so either agent
// takes over the other's allocations. Under the "none" policy nothing is
// pinned and the file only records the policy, as upstream's.
package cpumanager

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/cpuset"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
	"github.com/bosun-dev/bosun/internal/podsync"
	"github.com/bosun-dev/bosun/internal/topology"
)

// The policies.
const (
	PolicyNone   = "none"
	PolicyStatic = "static"
)

// Config is what the manager needs.
type Config struct {
	Policy   string   // cpuManagerPolicy ("" is none)
	RootDir  string   // where the state file lives
	Topology Topology // the node's CPUs
	// Reserved is reservedSystemCPUs; when empty, ReservedCPU (kube- plus
	// system-reserved cpu) rounded up is how many CPUs are reserved, taken
	// as exclusive CPUs would be.
	Reserved    cpuset.CPUSet
	ReservedCPU resource.Quantity
	// Options is cpuManagerPolicyOptions; Alpha and Beta say whether the
	// CPUManagerPolicyAlphaOptions and CPUManagerPolicyBetaOptions gates
	// are on.
	Options     map[string]string
	Alpha, Beta bool
}

// Manager allocates CPUs.
type Manager struct {
	policy   string
	path     string
	topo     Topology
	reserved cpuset.CPUSet
	opts     Options
	// reservedCores is the whole cores of the reserved CPUs, which
	// full-pcpus-only keeps out of its count of free physical CPUs.
	reservedCores cpuset.CPUSet
	perCore       int

	mu    sync.Mutex
	state state
	// reuse is the CPUs a pod's init containers held, which its later
	// containers may take (one pod at a time, as upstream).
	reuse map[string]cpuset.CPUSet
	// applied is the CPU set each running container was last given.
	applied map[string]string
	// pending is the containers each pod's admission under way has given
	// CPUs, taken back if the admission fails.
	pending map[string][]string
}

// New checks the configuration as upstream does at start.
func New(cfg Config) (*Manager, error) {
	m := &Manager{policy: cfg.Policy, path: filepath.Join(cfg.RootDir, StateFile), topo: cfg.Topology,
		reuse: map[string]cpuset.CPUSet{}, applied: map[string]string{}, pending: map[string][]string{}}
	if m.policy == "" {
		m.policy = PolicyNone
	}
	if !cfg.Reserved.IsSubsetOf(m.topo.CPUs()) {
		return nil, fmt.Errorf("reserved-cpus: %s is not a subset of online-cpus: %s", cfg.Reserved.String(), m.topo.CPUs().String())
	}
	switch m.policy {
	case PolicyNone:
		if len(cfg.Options) > 0 {
			return nil, fmt.Errorf("new none policy error: None policy: received unsupported options=%v", cfg.Options)
		}
		return m, nil
	case PolicyStatic:
	default:
		return nil, fmt.Errorf("unknown policy: %q", cfg.Policy)
	}
	opts, err := ParseOptions(cfg.Options, cfg.Alpha, cfg.Beta)
	if err != nil {
		return nil, fmt.Errorf("new static policy error: %w", err)
	}
	m.opts = opts
	_, _, m.perCore, _ = m.topo.counts()
	if cfg.ReservedCPU.IsZero() && cfg.Reserved.IsEmpty() {
		return nil, errors.New("[cpumanager] the static policy requires systemreserved.cpu + kubereserved.cpu to be greater than zero")
	}
	n := int(math.Ceil(float64(cfg.ReservedCPU.MilliValue()) / 1000))
	reserved := cfg.Reserved
	if reserved.IsEmpty() {
		reserved, _ = m.topo.take(m.topo.CPUs(), n)
	} else {
		n = reserved.Size()
	}
	if reserved.Size() != n {
		return nil, fmt.Errorf("[cpumanager] unable to reserve the required amount of CPUs (size of %s did not equal %d)", reserved, n)
	}
	m.reserved = reserved
	m.reservedCores = cpuset.New()
	byCoreSets := m.topo.group(m.topo.CPUs(), byCore)
	for _, c := range reserved.UnsortedList() {
		m.reservedCores = m.reservedCores.Union(byCoreSets[m.topo[c].Core])
	}
	return m, nil
}

// Policy is the policy's name.
func (m *Manager) Policy() string { return m.policy }

// Start reads the state file, or writes a new one; a file another policy
// wrote, or one that does not match this node's CPUs, stops the agent with
// upstream's advice.
func (m *Manager) Start(logger klog.Logger) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := readState(m.path, m.policy)
	if errors.Is(err, errNoState) {
		s, err = &state{assignments: map[string]map[string]cpuset.CPUSet{}}, nil
	}
	if err == nil && m.policy == PolicyStatic {
		err = m.validate(s)
	}
	if err != nil {
		return fmt.Errorf("could not restore state from checkpoint: %w, please drain this node and delete the CPU manager checkpoint file %q before restarting the node agent", err, m.path)
	}
	m.state = *s
	if err := writeState(m.path, m.policy, &m.state); err != nil {
		return err
	}
	if m.policy == PolicyStatic {
		logger.Info("CPU manager started", "policy", m.policy, "reserved", m.reserved.String(), "defaultCPUSet", m.state.defaultSet.String(), "options", m.opts)
		m.metricsLocked()
		bmetrics.AlignedResources.WithLabelValues("container", "physical_cpu").Add(0)
		bmetrics.AlignedResourcesFailures.WithLabelValues("container", "physical_cpu").Add(0)
		bmetrics.AlignedResources.WithLabelValues("container", "uncore_cache").Add(0)
	}
	return nil
}

// validate checks a static state against this node, as upstream: a new
// state gets every CPU as its shared pool.
func (m *Manager) validate(s *state) error {
	all := m.topo.CPUs()
	strict := m.opts[OptionStrictCPUReservation]
	if s.defaultSet.IsEmpty() {
		if len(s.assignments) != 0 {
			return errors.New("default cpuset cannot be empty")
		}
		s.defaultSet = all
		if strict {
			s.defaultSet = all.Difference(m.reserved)
		}
		return nil
	}
	if strict {
		if in := m.reserved.Intersection(s.defaultSet); !in.IsEmpty() {
			return fmt.Errorf("some of strictly reserved cpus: %q are present in defaultCpuSet: %q", in.String(), s.defaultSet.String())
		}
	} else if !m.reserved.Intersection(s.defaultSet).Equals(m.reserved) {
		return fmt.Errorf("not all reserved cpus: %q are present in defaultCpuSet: %q", m.reserved.String(), s.defaultSet.String())
	}
	known := s.defaultSet
	if strict {
		known = known.Union(m.reserved)
	}
	for uid, containers := range s.assignments {
		for name, set := range containers {
			if !s.defaultSet.Intersection(set).IsEmpty() {
				return fmt.Errorf("pod: %s, container: %s cpuset: %q overlaps with default cpuset %q", uid, name, set.String(), s.defaultSet.String())
			}
			known = known.Union(set)
		}
	}
	if !known.Equals(all) {
		return fmt.Errorf("current set of available CPUs %q doesn't match with CPUs in state %q", all.String(), known.String())
	}
	return nil
}

func (m *Manager) exclusiveLocked() cpuset.CPUSet {
	out := cpuset.New()
	for _, containers := range m.state.assignments {
		for _, set := range containers {
			out = out.Union(set)
		}
	}
	return out
}

func (m *Manager) save(logger klog.Logger) {
	if err := writeState(m.path, m.policy, &m.state); err != nil {
		logger.Error(err, "Failed to write the CPU manager state")
	}
}

// guaranteedCPUs is how many exclusive CPUs a container gets: its whole
// CPU request in a Guaranteed pod, otherwise none.
func guaranteedCPUs(pod *corev1.Pod, c *corev1.Container) int {
	if podsync.QOSClass(pod) != corev1.PodQOSGuaranteed {
		return 0
	}
	q := c.Resources.Requests[corev1.ResourceCPU]
	if q.Value()*1000 != q.MilliValue() {
		return 0
	}
	return int(q.Value())
}

// AdmissionError is a pod the CPUs cannot be found for: upstream's reason
// and message.
type AdmissionError struct{ Err error }

func (e *AdmissionError) Error() string {
	return fmt.Sprintf("Allocate failed due to %v, which is unexpected", e.Err)
}

// Reason is the pod's status reason.
func (e *AdmissionError) Reason() string { return "UnexpectedAdmissionError" }

// cpuHints is the hints for n exclusive CPUs taken from available plus
// reusable (CPUs the pod's finished init containers held, which must all
// lie in a hint's nodes), as upstream's static policy generates them.
func (m *Manager) cpuHints(available, reusable cpuset.CPUSet, n int) topology.Hints {
	byNode := m.topo.group(m.topo.CPUs(), byNUMA)
	nodes := make([]int, 0, len(byNode))
	for id := range byNode {
		nodes = append(nodes, id)
	}
	slices.Sort(nodes)
	in := func(set cpuset.CPUSet, mask topology.Mask) int { return m.onNodes(set, mask).Size() }
	hints := topology.Generate(nodes, n, func(mask topology.Mask) int { return in(m.topo.CPUs(), mask) },
		func(mask topology.Mask) (int, bool) {
			if in(reusable, mask) != reusable.Size() {
				return 0, false
			}
			return reusable.Size() + in(available, mask), true
		})
	return topology.Hints{string(corev1.ResourceCPU): hints}
}

// onNodes is the CPUs of set that lie on the mask's NUMA nodes.
func (m *Manager) onNodes(set cpuset.CPUSet, mask topology.Mask) cpuset.CPUSet {
	var out []int
	for _, c := range set.UnsortedList() {
		if mask.Has(m.topo[c].NUMA) {
			out = append(out, c)
		}
	}
	return cpuset.New(out...)
}

// ContainerHints says on which NUMA nodes a container's exclusive CPUs
// could lie (nil: it gets none).
func (m *Manager) ContainerHints(pod *corev1.Pod, c *corev1.Container) topology.Hints {
	n := guaranteedCPUs(pod, c)
	if m.policy != PolicyStatic || n == 0 || podsync.HasPodLevelResources(pod) {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if set, ok := m.state.assignments[string(pod.UID)][c.Name]; ok {
		if set.Size() != n {
			return topology.Hints{string(corev1.ResourceCPU): {}}
		}
		return m.cpuHints(set, cpuset.New(), n)
	}
	return m.cpuHints(m.state.defaultSet.Difference(m.reserved), m.reuse[string(pod.UID)], n)
}

// PodHints is ContainerHints for the whole pod (the pod scope): the most
// exclusive CPUs the pod holds at once, its init containers' and its
// long-running containers' counted as upstream counts them.
func (m *Manager) PodHints(pod *corev1.Pod) topology.Hints {
	if m.policy != PolicyStatic || podsync.HasPodLevelResources(pod) {
		return nil
	}
	n := podsync.MostAtOnce(pod, func(c *corev1.Container) map[corev1.ResourceName]int {
		return map[corev1.ResourceName]int{corev1.ResourceCPU: guaranteedCPUs(pod, c)}
	})[corev1.ResourceCPU]
	if n == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	uid := string(pod.UID)
	assigned := cpuset.New()
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if set, ok := m.state.assignments[uid][c.Name]; ok {
			if set.Size() != guaranteedCPUs(pod, &c) {
				return topology.Hints{string(corev1.ResourceCPU): {}}
			}
			assigned = assigned.Union(set)
		}
	}
	if assigned.Size() == n {
		return m.cpuHints(assigned, cpuset.New(), n)
	}
	return m.cpuHints(m.state.defaultSet.Difference(m.reserved), m.reuse[uid].Union(assigned), n)
}

// AllocateContainer gives a container of a Guaranteed pod that asks for
// whole CPUs its exclusive CPUs at admission, from the affinity's NUMA
// nodes first, as many as they have, then packed from the rest. A
// container that has its CPUs (a restart, a re-admission) keeps them.
func (m *Manager) AllocateContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container, hint topology.Hint) error {
	affinity := hint.Affinity
	n := guaranteedCPUs(pod, c)
	if m.policy != PolicyStatic || n == 0 || podsync.HasPodLevelResources(pod) {
		return nil
	}
	logger := klog.FromContext(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	bmetrics.CPUPinningRequests.Inc()
	if err := m.smtAligned(n); err != nil {
		bmetrics.CPUPinningErrors.Inc()
		bmetrics.AlignedResourcesFailures.WithLabelValues("container", "physical_cpu").Inc()
		return err
	}
	uid := string(pod.UID)
	if set, ok := m.state.assignments[uid][c.Name]; ok {
		m.updateReuse(pod, c, set)
		return nil
	}
	free := m.state.defaultSet.Difference(m.reserved).Union(m.reuse[uid])
	set := cpuset.New()
	if affinity != 0 {
		aligned := m.onNodes(free, affinity)
		set, _ = m.topo.take(aligned, min(n, aligned.Size()))
	}
	rest, err := m.topo.take(free.Difference(set), n-set.Size())
	if err != nil {
		bmetrics.CPUPinningErrors.Inc()
		logger.Info("Not enough CPUs for the container", "pod", klog.KObj(pod), "containerName", c.Name, "err", err)
		return &AdmissionError{Err: err}
	}
	set = set.Union(rest)
	m.state.defaultSet = m.state.defaultSet.Difference(set)
	if m.state.assignments[uid] == nil {
		m.state.assignments[uid] = map[string]cpuset.CPUSet{}
	}
	m.state.assignments[uid][c.Name] = set
	m.pending[uid] = append(m.pending[uid], c.Name)
	m.updateReuse(pod, c, set)
	if m.opts[OptionFullPCPUsOnly] {
		bmetrics.AlignedResources.WithLabelValues("container", "physical_cpu").Inc()
	}
	logger.V(2).Info("Allocated exclusive CPUs", "pod", klog.KObj(pod), "containerName", c.Name, "cpuset", set.String(), "affinity", affinity.String())
	return nil
}

// smtAligned refuses, under full-pcpus-only, a request that is not a whole
// number of cores, or more than the free CPUs outside the reserved CPUs'
// cores, as upstream.
func (m *Manager) smtAligned(n int) error {
	if !m.opts[OptionFullPCPUsOnly] {
		return nil
	}
	if n%m.perCore != 0 {
		return &SMTAlignmentError{Requested: n, PerCore: m.perCore}
	}
	if free := m.state.defaultSet.Difference(m.reservedCores).Size(); n > free {
		return &SMTAlignmentError{Requested: n, PerCore: m.perCore, Available: free, ByPhysicalCPUs: true}
	}
	return nil
}

// Abort gives back the CPUs this admission gave the pod: a pod that cannot
// get all it asks for gets none.
func (m *Manager) Abort(_ context.Context, pod *corev1.Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	uid := string(pod.UID)
	for _, name := range m.pending[uid] {
		m.removeLocked(uid, name)
	}
	delete(m.pending, uid)
}

// Commit writes the state file when this admission changed it.
func (m *Manager) Commit(ctx context.Context, pod *corev1.Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	uid := string(pod.UID)
	if len(m.pending[uid]) > 0 {
		m.metricsLocked()
		m.save(klog.FromContext(ctx))
	}
	delete(m.pending, uid)
}

// updateReuse keeps what the pod's finished init containers held available
// to its later containers, as upstream does.
func (m *Manager) updateReuse(pod *corev1.Pod, c *corev1.Container, set cpuset.CPUSet) {
	uid := string(pod.UID)
	for other := range m.reuse {
		if other != uid {
			delete(m.reuse, other)
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == c.Name && !podsync.IsSidecar(*c) {
			m.reuse[uid] = m.reuse[uid].Union(set)
			return
		}
	}
	m.reuse[uid] = m.reuse[uid].Difference(set)
}

// removeLocked gives a container's CPUs back to the shared pool, but those
// a sibling holds too (an init container's, reused).
func (m *Manager) removeLocked(uid, name string) {
	set, ok := m.state.assignments[uid][name]
	if !ok {
		return
	}
	delete(m.state.assignments[uid], name)
	for _, other := range m.state.assignments[uid] {
		set = set.Difference(other)
	}
	if len(m.state.assignments[uid]) == 0 {
		delete(m.state.assignments, uid)
	}
	m.state.defaultSet = m.state.defaultSet.Union(set)
}

func (m *Manager) metricsLocked() {
	bmetrics.CPUSharedPool.Set(float64(m.state.defaultSet.Difference(m.reserved).Size() * 1000))
	bmetrics.CPUExclusive.Set(float64(m.exclusiveLocked().Size()))
}

// Release returns the CPUs of pods for which active says false (their
// containers stopped for good, or unknown).
func (m *Manager) Release(logger klog.Logger, active func(types.UID) bool) {
	if m.policy != PolicyStatic {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for uid, containers := range m.state.assignments {
		if active(types.UID(uid)) {
			continue
		}
		for name := range containers {
			m.removeLocked(uid, name)
			logger.V(2).Info("Released exclusive CPUs", "podUID", uid, "containerName", name)
		}
		changed = true
	}
	if changed {
		m.metricsLocked()
		m.save(logger)
	}
}

// ForContainer is the CPU set a container runs on ("" under the none
// policy) and whether it is the container's own.
func (m *Manager) ForContainer(uid types.UID, container string) (string, bool) {
	if m.policy != PolicyStatic {
		return "", false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if set, ok := m.state.assignments[string(uid)][container]; ok {
		return set.String(), true
	}
	return m.state.defaultSet.String(), false
}

// Exclusive is a container's exclusive CPUs (none: nil), for the pod
// resources API.
func (m *Manager) Exclusive(uid types.UID, container string) []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return ids(m.state.assignments[string(uid)][container])
}

// Allocatable is the CPUs exclusive allocations may take: all but the
// reserved ones under the static policy, none under none.
func (m *Manager) Allocatable() []int64 {
	if m.policy != PolicyStatic {
		return nil
	}
	return ids(m.topo.CPUs().Difference(m.reserved))
}

func ids(set cpuset.CPUSet) []int64 {
	var out []int64
	for _, c := range set.List() {
		out = append(out, int64(c))
	}
	return out
}

// Runtime is the CRI calls the reconcile loop makes.
type Runtime interface {
	ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
	UpdateContainerResources(ctx context.Context, id string, r *runtimeapi.ContainerResources) error
}

// CRI labels naming a container's pod and name.
const (
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"
)

// Reconcile gives each running container of an active pod its CPU set,
// when it changed since the container was last given one. (Release gives
// back what stopped pods held; it needs every pod known, which only the
// caller can tell.)
func (m *Manager) Reconcile(ctx context.Context, rt Runtime, active func(types.UID) bool) {
	if m.policy != PolicyStatic {
		return
	}
	logger := klog.FromContext(ctx)
	ctrs, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		logger.Error(err, "CPU manager: failed to list containers")
		return
	}
	seen := map[string]bool{}
	for _, c := range ctrs {
		uid := types.UID(c.Labels[labelPodUID])
		name := c.Labels[labelContainerName]
		if uid == "" || name == "" || !active(uid) {
			continue
		}
		seen[c.Id] = true
		want, _ := m.ForContainer(uid, name)
		m.mu.Lock()
		last := m.applied[c.Id]
		m.mu.Unlock()
		if want == "" || want == last {
			continue
		}
		if err := rt.UpdateContainerResources(ctx, c.Id, &runtimeapi.ContainerResources{
			Linux: &runtimeapi.LinuxContainerResources{CpusetCpus: want}}); err != nil {
			logger.Error(err, "CPU manager: failed to update the container's CPU set", "containerID", c.Id, "podUID", uid, "containerName", name, "cpuSet", want)
			continue
		}
		logger.V(4).Info("CPU manager: updated the container's CPU set", "containerID", c.Id, "podUID", uid, "containerName", name, "cpuSet", want)
		m.mu.Lock()
		m.applied[c.Id] = want
		m.mu.Unlock()
	}
	m.mu.Lock()
	for id := range m.applied {
		if !seen[id] {
			delete(m.applied, id)
		}
	}
	m.mu.Unlock()
}

// Run reconciles every period until ctx ends.
func (m *Manager) Run(ctx context.Context, rt Runtime, period time.Duration, active func(types.UID) bool) {
	if m.policy != PolicyStatic {
		return
	}
	if period <= 0 {
		period = 10 * time.Second
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.Reconcile(ctx, rt, active)
		}
	}
}
