// Package memorymanager is the kubelet's memory manager: under the "Static"
// policy each container of a Guaranteed pod gets its memory and hugepages
// from a group of NUMA nodes chosen at admission (with the topology
// manager's hints), is created with those nodes as its cpuset.mems, and a
// pod the nodes cannot hold is refused. reservedMemory says what each NUMA
// node keeps for the system, and must add up to the node's memory
// reservation. The state is upstream's <root-dir>/memory_manager_state,
// same layout and checksum, under either policy.
package memorymanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
	"github.com/bosun-dev/bosun/internal/podsync"
	"github.com/bosun-dev/bosun/internal/topology"
)

// The policies.
const (
	PolicyNone   = "None"
	PolicyStatic = "Static"
)

// Node is one NUMA node's memory, as the machine reports it.
type Node struct {
	ID     int
	Memory uint64 // bytes
	// HugePages is the node's huge pages: their count by page size in KiB.
	HugePages map[uint64]uint64
}

// Discover reads the NUMA nodes' memory and huge pages under sysfs
// (/sys/devices/system/node). A machine without that folder is one node
// holding all of /proc/meminfo's memory.
func Discover(sysfs, meminfo string) ([]Node, error) {
	dirs, _ := filepath.Glob(filepath.Join(sysfs, "devices/system/node/node[0-9]*"))
	var out []Node
	for _, dir := range dirs {
		id, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "node"))
		if err != nil {
			continue
		}
		mem, err := memTotal(filepath.Join(dir, "meminfo"))
		if err != nil {
			return nil, err
		}
		n := Node{ID: id, Memory: mem, HugePages: map[uint64]uint64{}}
		pages, _ := filepath.Glob(filepath.Join(dir, "hugepages/hugepages-*kB"))
		for _, p := range pages {
			size, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "hugepages-"), "kB"), 10, 64)
			if err != nil {
				continue
			}
			raw, err := os.ReadFile(filepath.Join(p, "nr_hugepages"))
			if err != nil {
				return nil, err
			}
			count, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", filepath.Join(p, "nr_hugepages"), err)
			}
			n.HugePages[size] = count
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		mem, err := memTotal(meminfo)
		if err != nil {
			return nil, err
		}
		out = []Node{{ID: 0, Memory: mem, HugePages: map[uint64]uint64{}}}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// memTotal reads MemTotal (kB) from a meminfo file, the machine's or a
// node's ("Node 0 MemTotal: ... kB").
func memTotal(path string) (uint64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "MemTotal:" {
				kb, err := strconv.ParseUint(f[i+1], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: bad MemTotal %q", path, f[i+1])
				}
				return kb * 1024, nil
			}
		}
	}
	return 0, fmt.Errorf("%s: no MemTotal", path)
}

// hugePageResource is the resource name of a page size in KiB
// ("hugepages-2Mi"), as upstream names it.
func hugePageResource(kib uint64) corev1.ResourceName {
	q := resource.NewQuantity(int64(kib)*1024, resource.BinarySI)
	return corev1.ResourceName(corev1.ResourceHugePagesPrefix + q.String())
}

func isMemory(name corev1.ResourceName) bool {
	return name == corev1.ResourceMemory || strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix)
}

// Config is what the manager needs.
type Config struct {
	Policy  string // memoryManagerPolicy ("" is None)
	RootDir string
	Nodes   []Node
	// Reservation is the node's memory reservation by kind (kube- and
	// system-reserved plus the hard eviction threshold, as node allocatable
	// counts it); Reserved is reservedMemory, which must add up to it.
	Reservation corev1.ResourceList
	Reserved    []kubeletv1beta1.MemoryReservation
}

// Manager allocates memory.
type Manager struct {
	policy   string
	path     string
	nodes    []Node
	reserved map[int]map[corev1.ResourceName]uint64 // per node, per kind

	mu      sync.Mutex
	machine NUMANodeMap
	entries ContainerMemoryAssignments
	// reusable is what the finished init containers of the pod being
	// admitted leave for its later containers: by NUMA mask, by kind.
	reusable map[string]map[topology.Mask]map[corev1.ResourceName]uint64
	// pending is the containers this admission gave memory; saved is the
	// state before it, put back if the admission fails.
	pending      map[string][]string
	saved        map[string]NUMANodeMap
	savedEntries map[string]map[string][]Block
}

// New checks the configuration as upstream does at start: under Static,
// reservedMemory must name existing nodes and add up, kind by kind, to the
// node's memory reservation.
func New(cfg Config) (*Manager, error) {
	m := &Manager{policy: cfg.Policy, path: filepath.Join(cfg.RootDir, StateFile), nodes: cfg.Nodes,
		reserved: map[int]map[corev1.ResourceName]uint64{}, machine: NUMANodeMap{}, entries: ContainerMemoryAssignments{},
		reusable: map[string]map[topology.Mask]map[corev1.ResourceName]uint64{}, pending: map[string][]string{}, saved: map[string]NUMANodeMap{},
		savedEntries: map[string]map[string][]Block{}}
	if m.policy == "" {
		m.policy = PolicyNone
	}
	switch m.policy {
	case PolicyNone:
		return m, nil
	case PolicyStatic:
	default:
		return nil, fmt.Errorf("unknown policy: %q", cfg.Policy)
	}
	known := map[int]bool{}
	for _, n := range cfg.Nodes {
		known[n.ID] = true
		m.reserved[n.ID] = map[corev1.ResourceName]uint64{}
	}
	total := map[corev1.ResourceName]*resource.Quantity{}
	for _, r := range cfg.Reserved {
		if !known[int(r.NumaNode)] {
			return nil, fmt.Errorf("the reserved memory configuration references a NUMA node %d that does not exist on this machine", r.NumaNode)
		}
		for name, q := range r.Limits {
			if total[name] == nil {
				total[name] = resource.NewQuantity(0, resource.DecimalSI)
			}
			total[name].Add(q)
			v, ok := q.AsInt64()
			if !ok {
				return nil, fmt.Errorf("could not covert a variable of type Quantity to int64")
			}
			m.reserved[int(r.NumaNode)][name] = uint64(v)
		}
	}
	kinds := map[corev1.ResourceName]bool{}
	for name := range total {
		kinds[name] = true
	}
	for name := range cfg.Reservation {
		if isMemory(name) {
			kinds[name] = true
		}
	}
	names := make([]string, 0, len(kinds))
	for name := range kinds {
		names = append(names, string(name))
	}
	sort.Strings(names)
	for _, name := range names {
		want := resource.NewQuantity(0, resource.DecimalSI)
		if q, ok := cfg.Reservation[corev1.ResourceName(name)]; ok {
			want.Add(q)
		}
		got := resource.NewQuantity(0, resource.DecimalSI)
		if q := total[corev1.ResourceName(name)]; q != nil {
			got.Add(*q)
		}
		if !want.Equal(*got) {
			return nil, fmt.Errorf("the total amount %q of type %q is not equal to the value %q determined by Node Allocatable feature", got.String(), name, want.String())
		}
	}
	return m, nil
}

// Policy is the policy's name.
func (m *Manager) Policy() string { return m.policy }

// Start reads the state file, or writes a new one. A file another policy
// wrote, or whose machine state does not match this machine and the
// assignments it records, stops the agent with upstream's advice.
func (m *Manager) Start(logger klog.Logger) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := readState(m.path, m.policy)
	if errors.Is(err, errNoState) {
		c, err = &MemoryManagerCheckpoint{MachineState: NUMANodeMap{}, Entries: ContainerMemoryAssignments{}}, nil
	}
	if err == nil && m.policy == PolicyStatic {
		err = m.validate(c)
	}
	if err != nil {
		return fmt.Errorf("could not restore the memory manager state: %w; please drain this node and delete the memory manager checkpoint file %q before restarting the node agent", err, m.path)
	}
	m.machine, m.entries = c.MachineState, c.Entries
	if m.policy == PolicyStatic {
		logger.Info("Memory manager started", "policy", m.policy, "nodes", len(m.machine))
	}
	return m.saveLocked()
}

func (m *Manager) saveLocked() error {
	return writeState(m.path, m.policy, m.machine, m.entries)
}

// defaultMachine is the machine state with nothing allocated.
func (m *Manager) defaultMachine() NUMANodeMap {
	out := NUMANodeMap{}
	for _, n := range m.nodes {
		s := &NUMANodeState{MemoryMap: map[corev1.ResourceName]*MemoryTable{}, Cells: []int{n.ID}}
		var huge uint64
		for size, count := range n.HugePages {
			name := hugePageResource(size)
			total := count * size * 1024
			reserved := m.reserved[n.ID][name]
			s.MemoryMap[name] = &MemoryTable{TotalMemSize: total, SystemReserved: reserved, Allocatable: total - reserved, Free: total - reserved}
			huge += total
		}
		reserved := m.reserved[n.ID][corev1.ResourceMemory]
		allocatable := n.Memory - reserved - huge
		s.MemoryMap[corev1.ResourceMemory] = &MemoryTable{TotalMemSize: n.Memory, SystemReserved: reserved, Allocatable: allocatable, Free: allocatable}
		out[n.ID] = s
	}
	return out
}

// validate checks a Static state against this machine: the machine state
// must be what the recorded assignments make of a fresh one.
func (m *Manager) validate(c *MemoryManagerCheckpoint) error {
	if len(c.MachineState) == 0 {
		if len(c.Entries) != 0 {
			return errors.New("[memorymanager] machine state can not be empty when it has memory assignments")
		}
		c.MachineState = m.defaultMachine()
		return nil
	}
	expected := m.defaultMachine()
	for uid, containers := range c.Entries {
		for name, blocks := range containers {
			for _, b := range blocks {
				for _, id := range b.NUMAAffinity {
					n, ok := expected[id]
					if !ok {
						return fmt.Errorf("[memorymanager] (pod: %s, container: %s) the memory assignment uses the NUMA that does not exist", uid, name)
					}
					if _, ok := n.MemoryMap[b.Type]; !ok {
						return fmt.Errorf("[memorymanager] (pod: %s, container: %s) the memory assignment uses memory resource that does not exist", uid, name)
					}
				}
				reserve(expected, b.NUMAAffinity, b.Type, b.Size)
			}
		}
	}
	if !sameMachine(c.MachineState, expected) {
		return errors.New("[memorymanager] the expected machine state is different from the real one")
	}
	return nil
}

// reserve takes size bytes of a kind from the group's nodes in turn, and
// counts the block on each, as upstream's machine state update.
func reserve(machine NUMANodeMap, group []int, kind corev1.ResourceName, size uint64) {
	for _, id := range group {
		machine[id].NumberOfAssignments++
		machine[id].Cells = slices.Clone(group)
		t := machine[id].MemoryMap[kind]
		if size == 0 || t == nil || t.Free == 0 {
			continue
		}
		take := min(size, t.Free)
		t.Reserved += take
		t.Free -= take
		size -= take
	}
}

// release gives a container's blocks back, as upstream's.
func release(machine NUMANodeMap, blocks []Block) {
	for _, b := range blocks {
		size := b.Size
		for _, id := range b.NUMAAffinity {
			n := machine[id]
			if n == nil {
				continue
			}
			n.NumberOfAssignments--
			if n.NumberOfAssignments == 0 {
				n.Cells = []int{id}
			}
			t := n.MemoryMap[b.Type]
			if size == 0 || t == nil || t.Reserved == 0 {
				continue
			}
			back := min(size, t.Reserved)
			t.Free += back
			t.Reserved -= back
			size -= back
		}
	}
}

func sameGroup(a, b []int) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// sameMachine compares machine states as upstream does: per node, the
// assignment count, group, and each kind's sizes, with free and reserved
// summed over the group.
func sameMachine(a, b NUMANodeMap) bool {
	if len(a) != len(b) {
		return false
	}
	for id, na := range a {
		nb, ok := b[id]
		if !ok || na.NumberOfAssignments != nb.NumberOfAssignments || !sameGroup(na.Cells, nb.Cells) || len(na.MemoryMap) != len(nb.MemoryMap) {
			return false
		}
		for kind, ta := range na.MemoryMap {
			tb, ok := nb.MemoryMap[kind]
			if !ok || ta.TotalMemSize != tb.TotalMemSize || ta.SystemReserved != tb.SystemReserved || ta.Allocatable != tb.Allocatable {
				return false
			}
			var fa, ra, fb, rb uint64
			for _, c := range na.Cells {
				if a[c] == nil || b[c] == nil || a[c].MemoryMap[kind] == nil || b[c].MemoryMap[kind] == nil {
					return false
				}
				fa, ra = fa+a[c].MemoryMap[kind].Free, ra+a[c].MemoryMap[kind].Reserved
				fb, rb = fb+b[c].MemoryMap[kind].Free, rb+b[c].MemoryMap[kind].Reserved
			}
			if fa != fb || ra != rb {
				return false
			}
		}
	}
	return true
}

// requests is a container's memory and hugepages requests, in bytes; none
// outside a Guaranteed pod, and none for a pod with pod-level resources
// (as upstream while its PodLevelResourceManagers gate is off).
func requests(pod *corev1.Pod, c *corev1.Container) map[corev1.ResourceName]uint64 {
	if podsync.QOSClass(pod) != corev1.PodQOSGuaranteed || podsync.HasPodLevelResources(pod) {
		return nil
	}
	out := map[corev1.ResourceName]uint64{}
	for name, q := range c.Resources.Requests {
		if !isMemory(name) {
			continue
		}
		if v, ok := q.AsInt64(); ok {
			out[name] = uint64(v)
		}
	}
	return out
}

// initKind says whether a container of the pod is an init container, and
// whether that one is a sidecar.
func initKind(pod *corev1.Pod, name string) (initC, sidecar bool) {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return true, podsync.IsSidecar(c)
		}
	}
	return false, false
}

// podRequests is the most of each kind the pod holds at once.
func podRequests(pod *corev1.Pod) map[corev1.ResourceName]uint64 {
	return podsync.MostAtOnce(pod, func(c *corev1.Container) map[corev1.ResourceName]uint64 { return requests(pod, c) })
}

// hintsLocked is upstream's hint calculation: every group of nodes whose
// allocatable memory of each kind can hold the request, that is free to be
// used as a group (no node of it allocated alone or in another group), and
// whose free memory (plus what the pod's init containers leave) holds it;
// preferred when as small as the smallest group that could hold it.
func (m *Manager) hintsLocked(uid string, req map[corev1.ResourceName]uint64) topology.Hints {
	nodes := make([]int, 0, len(m.machine))
	for id := range m.machine {
		nodes = append(nodes, id)
	}
	slices.Sort(nodes)
	minSize := len(nodes)
	var masks []topology.Mask
	topology.EachMask(nodes, func(mask topology.Mask) {
		ids := mask.Nodes()
		free, allocatable := map[corev1.ResourceName]uint64{}, map[corev1.ResourceName]uint64{}
		for _, id := range ids {
			for kind := range req {
				if t := m.machine[id].MemoryMap[kind]; t != nil {
					free[kind] += t.Free
					allocatable[kind] += t.Allocatable
				}
			}
		}
		for kind, v := range req {
			if allocatable[kind] < v {
				return
			}
		}
		minSize = min(minSize, mask.Count())
		single := len(ids) == 1
		if single && len(m.machine[ids[0]].Cells) > 1 {
			return // the node is part of a group already
		}
		for _, id := range ids {
			if !single && m.machine[id].NumberOfAssignments > 0 &&
				(len(m.machine[id].Cells) == 1 || !sameGroup(m.machine[id].Cells, ids)) {
				return
			}
		}
		for kind, v := range req {
			if free[kind]+m.reusable[uid][mask][kind] < v {
				return
			}
		}
		masks = append(masks, mask)
	})
	if len(masks) == 0 {
		return topology.Hints{}
	}
	out := topology.Hints{}
	for kind := range req {
		for _, mask := range masks {
			out[string(kind)] = append(out[string(kind)], topology.Hint{Affinity: mask, Preferred: mask.Count() == minSize})
		}
	}
	return out
}

// regenerate is the hints of a container that has its blocks: their nodes,
// preferred, or none when they do not match the request.
func regenerate(blocks []Block, req map[corev1.ResourceName]uint64) topology.Hints {
	if len(blocks) != len(req) {
		return nil
	}
	out := topology.Hints{}
	for kind := range req {
		out[string(kind)] = []topology.Hint{}
	}
	for _, b := range blocks {
		if v, ok := req[b.Type]; !ok || v != b.Size {
			return nil
		}
		out[string(b.Type)] = append(out[string(b.Type)], topology.Hint{Affinity: topology.NewMask(b.NUMAAffinity...), Preferred: true})
	}
	return out
}

// ContainerHints says from which NUMA nodes a container's memory could come
// (nil: it gets none of its own).
func (m *Manager) ContainerHints(pod *corev1.Pod, c *corev1.Container) topology.Hints {
	if m.policy != PolicyStatic {
		return nil
	}
	req := requests(pod, c)
	if len(req) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if blocks := m.entries[string(pod.UID)][c.Name]; blocks != nil {
		return regenerate(blocks, req)
	}
	return m.hintsLocked(string(pod.UID), req)
}

// PodHints is ContainerHints for the whole pod (the pod scope).
func (m *Manager) PodHints(pod *corev1.Pod) topology.Hints {
	if m.policy != PolicyStatic || podsync.QOSClass(pod) != corev1.PodQOSGuaranteed || podsync.HasPodLevelResources(pod) {
		return nil
	}
	req := podRequests(pod)
	if len(req) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if blocks := m.entries[string(pod.UID)][c.Name]; blocks != nil {
			return regenerate(blocks, req)
		}
	}
	return m.hintsLocked(string(pod.UID), req)
}

// best is the preferred, then narrowest, of hints.
func best(hints []topology.Hint) topology.Hint {
	var out topology.Hint
	for _, h := range hints {
		switch {
		case out.Affinity == 0, h.Preferred && !out.Preferred,
			h.Preferred == out.Preferred && h.Affinity.NarrowerThan(out.Affinity):
			out = h
		}
	}
	return out
}

// within says whether every node of a lies in group.
func within(a topology.Mask, group []int) bool {
	return a&^topology.NewMask(group...) == 0
}

// AdmissionError is a container whose memory cannot be placed; the pod's
// reason and message are upstream's.
type AdmissionError struct{ Err error }

func (e *AdmissionError) Error() string {
	return fmt.Sprintf("Allocate failed due to %v, which is unexpected", e.Err)
}

// Reason is the pod's status reason.
func (e *AdmissionError) Reason() string { return "UnexpectedAdmissionError" }

// AllocateContainer gives a container of a Guaranteed pod its memory from
// the hint's NUMA nodes, or, without one, from the best group that can
// hold it; a group too small is widened to one that holds it, as
// upstream's. A container that has its blocks keeps them.
func (m *Manager) AllocateContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container, hint topology.Hint) error {
	if m.policy != PolicyStatic {
		return nil
	}
	req := requests(pod, c)
	if len(req) == 0 {
		return nil
	}
	logger := klog.FromContext(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	bmetrics.MemoryPinningRequests.Inc()
	uid := string(pod.UID)
	if blocks := m.entries[uid][c.Name]; blocks != nil {
		m.updateReusableLocked(pod, c, blocks)
		return nil
	}
	fail := func(err error) error {
		bmetrics.MemoryPinningErrors.Inc()
		logger.Info("Memory cannot be allocated", "pod", klog.KObj(pod), "containerName", c.Name, "err", err)
		return &AdmissionError{Err: err}
	}
	chosen := hint
	if hint.Affinity == 0 {
		hints := m.hintsLocked(uid, req)
		if len(hints) == 0 {
			return fail(errors.New("[memorymanager] failed to get the default NUMA affinity, no NUMA nodes with enough memory is available"))
		}
		d := best(hints[string(corev1.ResourceMemory)])
		if !d.Preferred && hint.Preferred {
			return fail(errors.New("[memorymanager] failed to find the default preferred hint"))
		}
		chosen = d
	}
	if !m.fitsLocked(chosen.Affinity, req) {
		var wider []topology.Hint
		for _, h := range m.hintsLocked(uid, req)[string(corev1.ResourceMemory)] {
			if within(chosen.Affinity, h.Affinity.Nodes()) {
				wider = append(wider, h)
			}
		}
		if len(wider) == 0 {
			return fail(errors.New("[memorymanager] failed to find NUMA nodes to extend the current topology hint"))
		}
		w := best(wider)
		if !w.Preferred && chosen.Preferred {
			return fail(errors.New("[memorymanager] failed to find the extended preferred hint"))
		}
		chosen = w
	}
	group := chosen.Affinity.Nodes()
	if len(group) > 1 {
		for _, id := range group {
			if n := m.machine[id]; n.NumberOfAssignments > 0 && (len(n.Cells) == 1 || !sameGroup(n.Cells, group)) {
				return fail(errors.New("[memorymanager] preferred hint violates NUMA node allocation"))
			}
		}
	}
	if _, ok := m.saved[uid]; !ok {
		m.saved[uid] = m.machine.clone()
		m.savedEntries[uid] = ContainerMemoryAssignments{uid: m.entries[uid]}.clone()[uid]
	}
	kinds := make([]string, 0, len(req))
	for kind := range req {
		kinds = append(kinds, string(kind))
	}
	sort.Strings(kinds)
	var blocks []Block
	for _, k := range kinds {
		kind := corev1.ResourceName(k)
		size := req[kind]
		blocks = append(blocks, Block{NUMAAffinity: slices.Clone(group), Type: kind, Size: size})
		reuse := m.reusable[uid][chosen.Affinity][kind]
		reserve(m.machine, group, kind, size-min(size, reuse))
	}
	m.updateReusableLocked(pod, c, blocks)
	if m.entries[uid] == nil {
		m.entries[uid] = map[string][]Block{}
	}
	m.entries[uid][c.Name] = blocks
	m.shrinkInitBlocksLocked(pod, c, blocks)
	m.pending[uid] = append(m.pending[uid], c.Name)
	logger.V(2).Info("Allocated exclusive memory", "pod", klog.KObj(pod), "containerName", c.Name, "numaNodes", chosen.Affinity.String())
	return nil
}

// fitsLocked says whether the mask's nodes have the request free.
func (m *Manager) fitsLocked(mask topology.Mask, req map[corev1.ResourceName]uint64) bool {
	free := map[corev1.ResourceName]uint64{}
	for _, id := range mask.Nodes() {
		n := m.machine[id]
		if n == nil {
			return false
		}
		for kind := range req {
			if t := n.MemoryMap[kind]; t != nil {
				free[kind] += t.Free
			}
		}
	}
	for kind, v := range req {
		if free[kind] < v {
			return false
		}
	}
	return true
}

// updateReusableLocked keeps what the pod's regular init containers hold
// available to the containers after them (the largest block per group and
// kind), and counts down what a later container takes from it.
func (m *Manager) updateReusableLocked(pod *corev1.Pod, c *corev1.Container, blocks []Block) {
	uid := string(pod.UID)
	for other := range m.reusable {
		if other != uid {
			delete(m.reusable, other)
		}
	}
	if m.reusable[uid] == nil {
		m.reusable[uid] = map[topology.Mask]map[corev1.ResourceName]uint64{}
	}
	initC, sidecar := initKind(pod, c.Name)
	for _, b := range blocks {
		mask := topology.NewMask(b.NUMAAffinity...)
		if m.reusable[uid][mask] == nil {
			m.reusable[uid][mask] = map[corev1.ResourceName]uint64{}
		}
		r := m.reusable[uid][mask]
		if initC && !sidecar {
			r[b.Type] = max(r[b.Type], b.Size)
			continue
		}
		r[b.Type] -= min(r[b.Type], b.Size)
	}
}

// shrinkInitBlocksLocked takes a container's blocks out of the blocks of
// the regular init containers before it on the same nodes: memory reused,
// so that it is given back once, as upstream's.
func (m *Manager) shrinkInitBlocksLocked(pod *corev1.Pod, c *corev1.Container, blocks []Block) {
	uid := string(pod.UID)
	for _, b := range blocks {
		size := b.Size
		for _, ic := range pod.Spec.InitContainers {
			if ic.Name == c.Name || size == 0 {
				break
			}
			if podsync.IsSidecar(ic) {
				continue
			}
			for i := range m.entries[uid][ic.Name] {
				ib := &m.entries[uid][ic.Name][i]
				if ib.Size == 0 || ib.Type != b.Type || topology.NewMask(ib.NUMAAffinity...) != topology.NewMask(b.NUMAAffinity...) {
					continue
				}
				take := min(ib.Size, size)
				ib.Size -= take
				size -= take
			}
		}
	}
}

// Abort puts back the state as it was before this admission.
func (m *Manager) Abort(_ context.Context, pod *corev1.Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	uid := string(pod.UID)
	if saved, ok := m.saved[uid]; ok {
		m.machine = saved
		m.entries[uid] = m.savedEntries[uid]
		if len(m.entries[uid]) == 0 {
			delete(m.entries, uid)
		}
	}
	delete(m.saved, uid)
	delete(m.savedEntries, uid)
	delete(m.pending, uid)
	delete(m.reusable, uid)
}

// Commit writes the state file when this admission changed it.
func (m *Manager) Commit(ctx context.Context, pod *corev1.Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	uid := string(pod.UID)
	if len(m.pending[uid]) > 0 {
		if err := m.saveLocked(); err != nil {
			klog.FromContext(ctx).Error(err, "Failed to write the memory manager state")
		}
	}
	delete(m.saved, uid)
	delete(m.savedEntries, uid)
	delete(m.pending, uid)
}

// Release gives back the memory of pods for which active says false.
func (m *Manager) Release(logger klog.Logger, active func(types.UID) bool) {
	if m.policy != PolicyStatic {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for uid, containers := range m.entries {
		if active(types.UID(uid)) {
			continue
		}
		for name, blocks := range containers {
			release(m.machine, blocks)
			logger.V(2).Info("Released exclusive memory", "podUID", uid, "containerName", name)
		}
		delete(m.entries, uid)
		changed = true
	}
	if changed {
		if err := m.saveLocked(); err != nil {
			logger.Error(err, "Failed to write the memory manager state")
		}
	}
}

// ContainerCreated gives back, as upstream's memory manager does when a
// container is added, the memory of the pod's regular init containers
// before it: they have run to completion, and what a later container
// reuses of theirs was moved to its own blocks.
func (m *Manager) ContainerCreated(pod *corev1.Pod, container string) {
	if m.policy != PolicyStatic {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	uid := string(pod.UID)
	changed := false
	for _, ic := range pod.Spec.InitContainers {
		if ic.Name == container {
			break
		}
		if podsync.IsSidecar(ic) {
			continue
		}
		if blocks, ok := m.entries[uid][ic.Name]; ok {
			release(m.machine, blocks)
			delete(m.entries[uid], ic.Name)
			changed = true
		}
	}
	if changed {
		if len(m.entries[uid]) == 0 {
			delete(m.entries, uid)
		}
		if err := m.saveLocked(); err != nil {
			klog.Background().Error(err, "Failed to write the memory manager state")
		}
	}
}

// ForContainer is the NUMA nodes a container's memory comes from, as
// cpuset.mems ("" when it has none of its own).
func (m *Manager) ForContainer(uid types.UID, container string) string {
	if m.policy != PolicyStatic {
		return ""
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var mask topology.Mask
	for _, b := range m.entries[string(uid)][container] {
		mask |= topology.NewMask(b.NUMAAffinity...)
	}
	return mask.String()
}

// Memory is a container's blocks, for the pod resources API.
func (m *Manager) Memory(uid types.UID, container string) []Block {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneBlocks(m.entries[string(uid)][container])
}

// Allocatable is each node's allocatable memory by kind (none under None),
// for the pod resources API.
func (m *Manager) Allocatable() []Block {
	if m.policy != PolicyStatic {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Block
	ids := make([]int, 0, len(m.machine))
	for id := range m.machine {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		kinds := make([]string, 0, len(m.machine[id].MemoryMap))
		for kind := range m.machine[id].MemoryMap {
			kinds = append(kinds, string(kind))
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			if t := m.machine[id].MemoryMap[corev1.ResourceName(k)]; t.Allocatable > 0 {
				out = append(out, Block{NUMAAffinity: []int{id}, Type: corev1.ResourceName(k), Size: t.Allocatable})
			}
		}
	}
	return out
}
