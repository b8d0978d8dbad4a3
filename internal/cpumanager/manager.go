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
}

// Manager allocates CPUs.
type Manager struct {
	policy   string
	path     string
	topo     Topology
	reserved cpuset.CPUSet

	mu    sync.Mutex
	state state
	// reuse is the CPUs a pod's init containers held, which its later
	// containers may take (one pod at a time, as upstream).
	reuse map[string]cpuset.CPUSet
	// applied is the CPU set each running container was last given.
	applied map[string]string
}

// New checks the configuration as upstream does at start.
func New(cfg Config) (*Manager, error) {
	m := &Manager{policy: cfg.Policy, path: filepath.Join(cfg.RootDir, StateFile), topo: cfg.Topology,
		reuse: map[string]cpuset.CPUSet{}, applied: map[string]string{}}
	if m.policy == "" {
		m.policy = PolicyNone
	}
	if !cfg.Reserved.IsSubsetOf(m.topo.CPUs()) {
		return nil, fmt.Errorf("reserved-cpus: %s is not a subset of online-cpus: %s", cfg.Reserved.String(), m.topo.CPUs().String())
	}
	switch m.policy {
	case PolicyNone:
		return m, nil
	case PolicyStatic:
	default:
		return nil, fmt.Errorf("unknown policy: %q", cfg.Policy)
	}
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
		logger.Info("CPU manager started", "policy", m.policy, "reserved", m.reserved.String(), "defaultCPUSet", m.state.defaultSet.String())
		m.metricsLocked()
	}
	return nil
}

// validate checks a static state against this node, as upstream: a new
// state gets every CPU as its shared pool.
func (m *Manager) validate(s *state) error {
	all := m.topo.CPUs()
	if s.defaultSet.IsEmpty() {
		if len(s.assignments) != 0 {
			return errors.New("default cpuset cannot be empty")
		}
		s.defaultSet = all
		return nil
	}
	if !m.reserved.Intersection(s.defaultSet).Equals(m.reserved) {
		return fmt.Errorf("not all reserved cpus: %q are present in defaultCpuSet: %q", m.reserved.String(), s.defaultSet.String())
	}
	known := s.defaultSet
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

// Allocate gives the pod's containers their exclusive CPUs at admission,
// init containers first (a later container may reuse what a finished init
// container held). A pod that cannot get them all gets none. Pods for
// which active says false (stopped for good) first give theirs back.
func (m *Manager) Allocate(logger klog.Logger, pod *corev1.Pod, active func(types.UID) bool) error {
	if m.policy != PolicyStatic {
		return nil
	}
	if pod.Spec.Resources != nil && (len(pod.Spec.Resources.Requests) > 0 || len(pod.Spec.Resources.Limits) > 0) {
		// As upstream while its PodLevelResourceManagers gate is off (the
		// default): such a pod's containers share the pool.
		return nil
	}
	if active != nil {
		m.Release(logger, active)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	uid := string(pod.UID)
	var taken []string
	var err error
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		n := guaranteedCPUs(pod, &c)
		if n == 0 {
			continue
		}
		bmetrics.CPUPinningRequests.Inc()
		if set, ok := m.state.assignments[uid][c.Name]; ok {
			m.updateReuse(pod, &c, set)
			continue // allocated before (a restart, a re-admission)
		}
		var set cpuset.CPUSet
		set, err = m.topo.take(m.state.defaultSet.Difference(m.reserved).Union(m.reuse[uid]), n)
		if err != nil {
			bmetrics.CPUPinningErrors.Inc()
			break
		}
		m.state.defaultSet = m.state.defaultSet.Difference(set)
		if m.state.assignments[uid] == nil {
			m.state.assignments[uid] = map[string]cpuset.CPUSet{}
		}
		m.state.assignments[uid][c.Name] = set
		taken = append(taken, c.Name)
		m.updateReuse(pod, &c, set)
		logger.V(2).Info("Allocated exclusive CPUs", "pod", klog.KObj(pod), "containerName", c.Name, "cpuset", set.String())
	}
	if err != nil {
		for _, name := range taken {
			m.removeLocked(uid, name)
		}
		logger.Info("Not enough CPUs for the pod", "pod", klog.KObj(pod), "err", err)
	}
	if len(taken) > 0 {
		m.metricsLocked()
		m.save(logger)
	}
	if err != nil {
		return &AdmissionError{Err: err}
	}
	return nil
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
