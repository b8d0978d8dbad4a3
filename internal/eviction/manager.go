// Package eviction watches the node's eviction signals (memory.available
// from the root cgroup's working set, nodefs, imagefs and containerfs space
// and inodes, pid.available) against the hard and soft thresholds, reports
// memory, disk and PID pressure, refuses pods the pressure forbids, reclaims
// images before evicting for disk, and evicts pods one at a time, ranked as
// upstream ranks them, while a threshold is met past its grace period.
package eviction

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Signals are the node's observed resources.
type Signals struct {
	MemoryAvailable  int64 // bytes: capacity less the working set
	MemoryCapacity   int64
	NodeFsAvailable  int64
	NodeFsCapacity   int64
	NodeFsInodesFree int64
	NodeFsInodes     int64
	PIDAvailable     int64 // process IDs
	PIDCapacity      int64
}

// Pressure is what the node's pressure conditions say.
type Pressure struct{ Memory, Disk, PID bool }

// conditions lists the pressure's node conditions, in upstream's order.
func (p Pressure) conditions() []corev1.NodeConditionType {
	var out []corev1.NodeConditionType
	if p.Memory {
		out = append(out, corev1.NodeMemoryPressure)
	}
	if p.Disk {
		out = append(out, corev1.NodeDiskPressure)
	}
	if p.PID {
		out = append(out, corev1.NodePIDPressure)
	}
	return out
}

// Eviction is what the manager asks of the pod's worker.
type Eviction struct {
	Message string
	// Grace is the stop's grace period: 1 second for a hard threshold or a
	// local storage limit, the pod's capped by evictionMaxPodGracePeriod
	// for a soft one.
	Grace int64
	// DisruptionTarget: a pressure eviction, which upstream marks with the
	// pod's DisruptionTarget condition.
	DisruptionTarget bool
}

// Config wires a Manager.
type Config struct {
	Thresholds []Threshold
	// MaxPodGracePeriod caps a pod's grace period when it is evicted for a
	// soft threshold (evictionMaxPodGracePeriod).
	MaxPodGracePeriod int64
	RootDir           string               // the node fs
	Pods              func() []*corev1.Pod // running pods
	Evict             func(uid types.UID, e Eviction)
	// PodStats are the pods' usage: for ranking and local storage limits.
	PodStats func(ctx context.Context) ([]statsapi.PodStats, error)
	// EmptyDirUsage is a pod's disk-backed emptyDir usage by volume.
	EmptyDirUsage func(pod *corev1.Pod) map[string]int64
	// LocalStorageLimits enforces ephemeral-storage limits and emptyDir
	// size limits whatever the pressure.
	LocalStorageLimits bool
	ReclaimImages      func(ctx context.Context) error // image GC, tried before evicting for disk
	Every              time.Duration
	Read               func() (Signals, error) // for tests; defaults to the machine
	// TransitionPeriod is how long a pressure condition stays after its
	// signal was last over a threshold (evictionPressureTransitionPeriod),
	// so that it does not flap.
	TransitionPeriod time.Duration
	Now              func() time.Time
	// Recorder records the Evicted events on pods and EvictionThresholdMet
	// on Node (nil: none).
	Recorder record.EventRecorder
	Node     *corev1.ObjectReference
}

// Manager runs the checks.
type Manager struct {
	cfg      Config
	mu       sync.Mutex
	pressure Pressure
	// when each pressure's signal was last seen over a threshold
	lastSeen map[corev1.NodeConditionType]time.Time
	// when each threshold (by index) was first seen met, while it is
	firstSeen map[int]time.Time
	// the thresholds met past their grace periods in the last check: they
	// count until their minimum reclaim is available
	acting []int
}

// New returns a manager.
func New(cfg Config) *Manager {
	if cfg.Read == nil {
		cfg.Read = func() (Signals, error) { return ReadSignals(cfg.RootDir) }
	}
	if cfg.Every == 0 {
		cfg.Every = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Manager{cfg: cfg, lastSeen: map[corev1.NodeConditionType]time.Time{}, firstSeen: map[int]time.Time{}}
}

// Pressure reports the node's pressure, for its conditions.
func (m *Manager) Pressure() Pressure {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pressure
}

// Admit refuses a new pod the node's pressure forbids, as upstream: under
// memory pressure alone, BestEffort pods that do not tolerate the
// memory-pressure taint; under any other pressure, every pod. Critical pods
// are always admitted.
func (m *Manager) Admit(pod *corev1.Pod) (bool, string, string) {
	conds := m.Pressure().conditions()
	if len(conds) == 0 || critical(pod) {
		return true, "", ""
	}
	if len(conds) == 1 && conds[0] == corev1.NodeMemoryPressure {
		if pod.Status.QOSClass != corev1.PodQOSBestEffort && qosOf(pod) != corev1.PodQOSBestEffort {
			return true, "", ""
		}
		taint := corev1.Taint{Key: corev1.TaintNodeMemoryPressure, Effect: corev1.TaintEffectNoSchedule}
		for _, t := range pod.Spec.Tolerations {
			if t.ToleratesTaint(klog.Background(), &taint, false) {
				return true, "", ""
			}
		}
	}
	return false, reasonEvicted, fmt.Sprintf("The node had condition: %v. ", conds)
}

const reasonEvicted = "Evicted"

// Run checks until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.Every)
	defer t.Stop()
	for {
		m.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// met lists the thresholds (by index) the signals meet, and those that
// acted in the last check and whose minimum reclaim is not available yet.
func (m *Manager) met(s Signals, acting []int) []int {
	var out []int
	for i, t := range m.cfg.Thresholds {
		if t.met(s, false) {
			out = append(out, i)
		}
	}
	for _, i := range acting {
		if !contains(out, i) && m.cfg.Thresholds[i].met(s, true) {
			out = append(out, i)
		}
	}
	return out
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func conditionOf(signal string) corev1.NodeConditionType {
	switch {
	case isMemory(signal):
		return corev1.NodeMemoryPressure
	case signal == "pid.available":
		return corev1.NodePIDPressure
	}
	return corev1.NodeDiskPressure
}

// Check reads the signals once and acts: pressure first, then pods over
// their local storage limits, then one eviction for the thresholds past
// their grace periods.
func (m *Manager) Check(ctx context.Context) {
	logger := klog.FromContext(ctx)
	s, err := m.cfg.Read()
	if err != nil {
		logger.Error(err, "Failed to read eviction signals")
		return
	}
	now := m.cfg.Now()
	m.mu.Lock()
	met := m.met(s, m.acting)
	first := map[int]time.Time{}
	for _, i := range met {
		first[i] = now
		if at, ok := m.firstSeen[i]; ok {
			first[i] = at
		}
		m.lastSeen[conditionOf(m.cfg.Thresholds[i].Signal)] = now
	}
	m.firstSeen = first
	// As upstream: a condition holds from the moment a threshold is met
	// (whatever its grace period) until the transition period has passed
	// since it last was.
	held := func(c corev1.NodeConditionType) bool {
		at, ok := m.lastSeen[c]
		return ok && (now.Sub(at) < m.cfg.TransitionPeriod || at.Equal(now))
	}
	m.pressure = Pressure{Memory: held(corev1.NodeMemoryPressure), Disk: held(corev1.NodeDiskPressure), PID: held(corev1.NodePIDPressure)}
	var acting []int
	for _, i := range met {
		if now.Sub(first[i]) >= m.cfg.Thresholds[i].GracePeriod {
			acting = append(acting, i)
		}
	}
	m.acting = acting
	m.mu.Unlock()

	if m.cfg.Pods == nil || m.cfg.Evict == nil {
		return
	}
	var stats map[string]*statsapi.PodStats // read once, when needed
	podStats := func() map[string]*statsapi.PodStats {
		if stats == nil {
			stats = m.podStats(ctx)
		}
		return stats
	}
	if m.cfg.LocalStorageLimits && m.checkLocalStorage(ctx, podStats) > 0 {
		return // as upstream: pods over their own limits go first, pressure waits for the next round
	}
	if len(acting) == 0 {
		return
	}
	t := m.cfg.Thresholds[acting[0]]
	for _, i := range acting {
		if isMemory(m.cfg.Thresholds[i].Signal) {
			t = m.cfg.Thresholds[i] // memory first, as upstream ranks it
			break
		}
	}
	res := signalResource[t.Signal]
	logger.Info("Eviction manager: attempting to reclaim", "resourceName", res, "threshold", t.String())
	m.nodeEvent("EvictionThresholdMet", "Attempting to reclaim "+string(res))
	if conditionOf(t.Signal) == corev1.NodeDiskPressure && m.cfg.ReclaimImages != nil {
		if err := m.cfg.ReclaimImages(ctx); err != nil {
			logger.Error(err, "Eviction manager: failed to reclaim images")
		}
		if s2, err := m.cfg.Read(); err == nil {
			s = s2
			reclaimed := true
			for _, i := range acting {
				reclaimed = reclaimed && !m.cfg.Thresholds[i].met(s, true)
			}
			if reclaimed {
				logger.Info("Eviction manager: able to reduce resource pressure without evicting pods", "resourceName", res)
				return
			}
		}
	}
	pods := rank(m.cfg.Pods(), podStats(), m.cfg.EmptyDirUsage, res)
	if len(pods) == 0 {
		logger.Error(nil, "Eviction manager: eviction thresholds have been met, but no pods can be evicted")
		return
	}
	victim := pods[0]
	grace := int64(1) // upstream's immediate eviction grace period
	if !t.Hard() {
		grace = m.cfg.MaxPodGracePeriod
		if g := victim.Spec.TerminationGracePeriodSeconds; g != nil && *g < grace {
			grace = *g
		}
	}
	msg, annotations := evictionMessage(t, s, victim, podStats()[string(victim.UID)], res)
	logger.Info("Evicting pod", "pod", klog.KObj(victim), "reason", msg, "gracePeriod", grace)
	m.podEvent(victim, annotations, msg)
	m.cfg.Evict(victim.UID, Eviction{Message: msg, Grace: grace, DisruptionTarget: true})
}

// podStats reads the pods' usage by UID (none when it cannot be read).
func (m *Manager) podStats(ctx context.Context) map[string]*statsapi.PodStats {
	out := map[string]*statsapi.PodStats{}
	if m.cfg.PodStats == nil {
		return out
	}
	all, err := m.cfg.PodStats(ctx)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Eviction manager: failed to read pod stats")
		return out
	}
	for i := range all {
		out[all[i].PodRef.UID] = &all[i]
	}
	return out
}

func (m *Manager) podEvent(pod *corev1.Pod, annotations map[string]string, msg string) {
	if m.cfg.Recorder != nil {
		m.cfg.Recorder.AnnotatedEventf(pod, annotations, corev1.EventTypeWarning, reasonEvicted, "%s", msg)
	}
}

func (m *Manager) nodeEvent(reason, msg string) {
	if m.cfg.Recorder != nil && m.cfg.Node != nil {
		m.cfg.Recorder.Event(m.cfg.Node, corev1.EventTypeWarning, reason, msg)
	}
}

// evictionMessage is upstream's: the resource, the threshold and what is
// available, then each container using more than it requests; with the
// event's annotations naming them.
func evictionMessage(t Threshold, s Signals, pod *corev1.Pod, stats *statsapi.PodStats, res corev1.ResourceName) (string, map[string]string) {
	avail, capacity := observed(t.Signal, s)
	format := resource.BinarySI
	if res == resourceInodes || res == resourcePIDs {
		format = resource.DecimalSI
	}
	threshold := t.Quantity
	if threshold == nil {
		threshold = resource.NewQuantity(t.limit(capacity), format)
	}
	msg := fmt.Sprintf("The node was low on resource: %s. Threshold quantity: %s, available: %s. ",
		res, threshold.String(), resource.NewQuantity(avail, format).String())
	if stats == nil {
		return msg, nil
	}
	var names, usages []string
	containers := append(append([]corev1.Container{}, pod.Spec.Containers...), pod.Spec.InitContainers...)
	for _, cs := range stats.Containers {
		for _, c := range containers {
			if c.Name != cs.Name {
				continue
			}
			req := c.Resources.Requests[res]
			var use *resource.Quantity
			switch res {
			case corev1.ResourceMemory:
				if cs.Memory != nil && cs.Memory.WorkingSetBytes != nil {
					use = resource.NewQuantity(int64(*cs.Memory.WorkingSetBytes), resource.BinarySI)
				}
			case corev1.ResourceEphemeralStorage:
				if cs.Rootfs != nil && cs.Rootfs.UsedBytes != nil && cs.Logs != nil && cs.Logs.UsedBytes != nil {
					use = resource.NewQuantity(int64(*cs.Rootfs.UsedBytes+*cs.Logs.UsedBytes), resource.BinarySI)
				}
			}
			if use != nil && use.Cmp(req) > 0 {
				msg += fmt.Sprintf("Container %s was using %s, request is %s, has larger consumption of %s. ", c.Name, use.String(), req.String(), res)
				names = append(names, c.Name)
				usages = append(usages, use.String())
			}
			break
		}
	}
	return msg, map[string]string{
		"offending_containers":       strings.Join(names, ","),
		"offending_containers_usage": strings.Join(usages, ","),
		"starved_resource":           string(res),
	}
}

// ReadSignals reads the machine: memory as the root cgroup's working set
// (usage less inactive file pages, as upstream's memory.available), statfs
// of the node fs, and the process IDs in use.
func ReadSignals(rootDir string) (Signals, error) {
	var s Signals
	mem, err := meminfo()
	if err != nil {
		return s, err
	}
	s.MemoryCapacity = mem["MemTotal"]
	s.MemoryAvailable = s.MemoryCapacity - workingSet(mem)
	var st unix.Statfs_t
	if err := unix.Statfs(rootDir, &st); err != nil {
		return s, err
	}
	s.NodeFsCapacity, s.NodeFsAvailable = int64(st.Blocks)*st.Bsize, int64(st.Bavail)*st.Bsize
	s.NodeFsInodes, s.NodeFsInodesFree = int64(st.Files), int64(st.Ffree)
	s.PIDCapacity, s.PIDAvailable = pids()
	return s, nil
}
