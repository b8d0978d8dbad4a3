package topology

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
)

// Provider is a resource manager that places resources on NUMA nodes (the
// device manager, the CPU manager).
type Provider interface {
	// ContainerHints and PodHints say where the container's (the pod's)
	// requests could be placed; nil: the provider has no preference.
	ContainerHints(pod *corev1.Pod, c *corev1.Container) Hints
	PodHints(pod *corev1.Pod) Hints
	// AllocateContainer gives the container its resources, from the
	// nodes of the hint's affinity first (zero: anywhere).
	AllocateContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container, hint Hint) error
	// Abort takes back what this admission gave the pod; Commit records it.
	Abort(ctx context.Context, pod *corev1.Pod)
	Commit(ctx context.Context, pod *corev1.Pod)
}

// AffinityError is the refusal of a pod whose resources cannot be placed as
// the policy asks; its reason and message are upstream's.
type AffinityError struct{}

func (AffinityError) Error() string { return "Resources cannot be allocated with Topology locality" }

// Reason is the pod's status reason.
func (AffinityError) Reason() string { return "TopologyAffinityError" }

// Manager is the topology manager.
type Manager struct {
	policy string
	scope  string
	opts   Options
	numa   NUMA

	mu       sync.Mutex
	affinity map[types.UID]map[string]Mask
}

// New makes the manager for a policy and scope on a machine's NUMA layout,
// with upstream's refusals: unknown policies, scopes and options, and more
// NUMA nodes than max-allowable-numa-nodes.
func New(policy, scope string, options map[string]string, numa NUMA) (*Manager, error) {
	m := &Manager{policy: policy, scope: scope, numa: numa, affinity: map[types.UID]map[string]Mask{}}
	if policy == "" || policy == PolicyNone {
		m.policy = PolicyNone
		return m, nil
	}
	opts, err := ParseOptions(options)
	if err != nil {
		return nil, err
	}
	m.opts = opts
	switch policy {
	case PolicyBestEffort, PolicyRestricted, PolicySingleNUMANode:
	default:
		return nil, fmt.Errorf("unknown policy: %q", policy)
	}
	switch scope {
	case ScopeContainer, ScopePod:
	default:
		return nil, fmt.Errorf("unknown scope: %q", scope)
	}
	if opts.PreferClosestNUMA {
		for _, n := range numa.Nodes {
			if len(numa.Distances[n]) == 0 {
				return nil, fmt.Errorf("cannot discover NUMA topology: error getting NUMA distances of node %d", n)
			}
		}
	}
	if len(numa.Nodes) > opts.MaxNUMANodes {
		return nil, fmt.Errorf("unsupported on machines with more than %v NUMA Nodes", opts.MaxNUMANodes)
	}
	for _, s := range []string{ScopeContainer, ScopePod} {
		bmetrics.AlignedResources.WithLabelValues(s, "numa_node").Add(0)
		bmetrics.AlignedResourcesFailures.WithLabelValues(s, "numa_node").Add(0)
	}
	return m, nil
}

// Policy is the policy's name.
func (m *Manager) Policy() string { return m.policy }

// NUMANodes lists the machine's NUMA nodes.
func (m *Manager) NUMANodes() []int { return slices.Clone(m.numa.Nodes) }

// Affinity is the NUMA affinity chosen for a container at its pod's
// admission (zero: none).
func (m *Manager) Affinity(uid types.UID, container string) Mask {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.affinity[uid][container]
}

// Forget drops what the manager keeps for a pod that has ended.
func (m *Manager) Forget(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.affinity, uid)
}

// ForgetUnless drops what the manager keeps for every pod keep says has
// ended.
func (m *Manager) ForgetUnless(keep func(types.UID) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for uid := range m.affinity {
		if !keep(uid) {
			delete(m.affinity, uid)
		}
	}
}

func (m *Manager) set(uid types.UID, container string, a Mask) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.affinity[uid] == nil {
		m.affinity[uid] = map[string]Mask{}
	}
	m.affinity[uid][container] = a
}

// Admit places the pod's resources: under the policy's scope it merges the
// providers' hints (for each container in turn, or once for the pod),
// refuses the pod with an AffinityError when the policy does not admit the
// best merge, and has each provider allocate each container on the chosen
// nodes, in the providers' order. On any refusal or error what the
// providers allocated for this pod is taken back; on success each records
// it.
func (m *Manager) Admit(ctx context.Context, pod *corev1.Pod, providers ...Provider) (err error) {
	logger := klog.FromContext(ctx)
	bmetrics.TopologyAdmissions.Inc()
	defer func(start time.Time) {
		bmetrics.TopologyAdmissionDuration.Observe(float64(time.Since(start).Milliseconds()))
		if err != nil {
			for _, p := range providers {
				p.Abort(ctx, pod)
			}
			m.Forget(pod.UID)
			return
		}
		for _, p := range providers {
			p.Commit(ctx, pod)
		}
	}(time.Now())
	containers := slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers)
	allocate := func(c *corev1.Container, h Hint) error {
		for _, p := range providers {
			if err := p.AllocateContainer(ctx, pod, c, h); err != nil {
				if m.policy != PolicyNone {
					bmetrics.TopologyAdmissionErrors.Inc()
				}
				return err
			}
		}
		return nil
	}
	refuse := func() error {
		if m.policy == PolicySingleNUMANode {
			bmetrics.AlignedResourcesFailures.WithLabelValues(m.scope, "numa_node").Inc()
		}
		bmetrics.TopologyAdmissionErrors.Inc()
		return AffinityError{}
	}
	aligned := func() {
		if m.policy == PolicySingleNUMANode {
			bmetrics.AlignedResources.WithLabelValues(m.scope, "numa_node").Inc()
		}
	}
	switch {
	case m.policy == PolicyNone:
		for i := range containers {
			if err := allocate(&containers[i], Hint{}); err != nil {
				return err
			}
		}
		return nil
	case m.scope == ScopePod:
		answers := make([]Hints, 0, len(providers))
		for _, p := range providers {
			answers = append(answers, p.PodHints(pod))
		}
		best, ok := merge(m.policy, m.opts, m.numa, answers)
		logger.V(2).Info("Topology affinity", "pod", klog.KObj(pod), "affinity", best.Affinity.String(), "preferred", best.Preferred, "admit", ok)
		if !ok {
			return refuse()
		}
		for i := range containers {
			m.set(pod.UID, containers[i].Name, best.Affinity)
			if err := allocate(&containers[i], best); err != nil {
				return err
			}
		}
		aligned()
		return nil
	}
	for i := range containers {
		c := &containers[i]
		answers := make([]Hints, 0, len(providers))
		for _, p := range providers {
			answers = append(answers, p.ContainerHints(pod, c))
		}
		best, ok := merge(m.policy, m.opts, m.numa, answers)
		logger.V(2).Info("Topology affinity", "pod", klog.KObj(pod), "containerName", c.Name, "affinity", best.Affinity.String(), "preferred", best.Preferred, "admit", ok)
		if !ok {
			return refuse()
		}
		m.set(pod.UID, c.Name, best.Affinity)
		if err := allocate(c, best); err != nil {
			return err
		}
		aligned()
	}
	return nil
}
