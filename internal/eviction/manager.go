// Package eviction watches the node's hard eviction signals
// (memory.available, nodefs.available, nodefs.inodesFree, imagefs.available),
// reports memory and disk pressure, reclaims images when the image
// filesystem is over imageGCHighThresholdPercent, and evicts pods one at a
// time while a hard threshold is crossed.
package eviction

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// Signals are the node's observed resources.
type Signals struct {
	MemoryAvailable  int64 // bytes
	MemoryCapacity   int64
	NodeFsAvailable  int64
	NodeFsCapacity   int64
	NodeFsInodesFree int64
	NodeFsInodes     int64
}

// Threshold is one parsed hard threshold.
type Threshold struct {
	Signal   string
	Quantity *resource.Quantity // absolute, or
	Percent  float64            // of capacity
}

// ParseThresholds reads evictionHard.
func ParseThresholds(m map[string]string) ([]Threshold, error) {
	var out []Threshold
	for signal, v := range m {
		t := Threshold{Signal: signal}
		if p, ok := strings.CutSuffix(v, "%"); ok {
			f, err := strconv.ParseFloat(p, 64)
			if err != nil {
				return nil, fmt.Errorf("evictionHard[%s]: %w", signal, err)
			}
			t.Percent = f
		} else {
			q, err := resource.ParseQuantity(v)
			if err != nil {
				return nil, fmt.Errorf("evictionHard[%s]: %w", signal, err)
			}
			t.Quantity = &q
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Signal < out[j].Signal })
	return out, nil
}

// observed is what the signals say of one threshold's signal: available and
// capacity (available -1 when the signal is not observed).
func observed(signal string, s Signals) (avail, capacity int64) {
	switch signal {
	case "memory.available":
		return s.MemoryAvailable, s.MemoryCapacity
	case "nodefs.available", "imagefs.available", "containerfs.available":
		return s.NodeFsAvailable, s.NodeFsCapacity
	case "nodefs.inodesFree", "imagefs.inodesFree", "containerfs.inodesFree":
		return s.NodeFsInodesFree, s.NodeFsInodes
	}
	return -1, 0
}

// limit is the threshold's absolute value for capacity.
func (t Threshold) limit(capacity int64) int64 {
	if t.Quantity != nil {
		return t.Quantity.Value()
	}
	return int64(float64(capacity) * t.Percent / 100)
}

// Crossed returns the thresholds the signals are under.
func Crossed(ts []Threshold, s Signals) []Threshold {
	var out []Threshold
	for _, t := range ts {
		avail, capacity := observed(t.Signal, s)
		if avail < 0 || capacity == 0 {
			continue
		}
		if avail < t.limit(capacity) {
			out = append(out, t)
		}
	}
	return out
}

// pressureMessage is upstream's eviction message for a crossed threshold:
// the resource to reclaim, then the threshold and what is available.
func pressureMessage(t Threshold, s Signals) string {
	avail, capacity := observed(t.Signal, s)
	resourceName, format := "ephemeral-storage", resource.BinarySI
	switch {
	case t.Signal == "memory.available":
		resourceName = "memory"
	case strings.HasSuffix(t.Signal, "inodesFree"):
		resourceName, format = "inodes", resource.DecimalSI
	}
	threshold := t.Quantity
	if threshold == nil {
		threshold = resource.NewQuantity(t.limit(capacity), format)
	}
	return fmt.Sprintf("The node was low on resource: %s. Threshold quantity: %s, available: %s. ",
		resourceName, threshold.String(), resource.NewQuantity(avail, format).String())
}

// Config wires a Manager.
type Config struct {
	Thresholds    []Threshold
	RootDir       string               // the node fs
	Pods          func() []*corev1.Pod // running pods
	Evict         func(uid types.UID, reason, message string)
	ReclaimImages func(ctx context.Context) error // image GC, tried before evicting for disk
	Every         time.Duration
	Read          func() (Signals, error) // for tests; defaults to the machine
	LocalStorage  *LocalStorage           // ephemeral storage limits (nil: not enforced)
	// TransitionPeriod is how long a pressure condition stays after its
	// signal was last over a threshold (evictionPressureTransitionPeriod),
	// so that it does not flap.
	TransitionPeriod time.Duration
	Now              func() time.Time
}

// Manager runs the checks.
type Manager struct {
	cfg    Config
	mu     sync.Mutex
	memory bool
	disk   bool
	// when each signal was last seen over a threshold
	memoryAt, diskAt time.Time
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
	return &Manager{cfg: cfg}
}

// Pressure reports memory and disk pressure, for the node's conditions.
func (m *Manager) Pressure() (memory, disk bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.memory, m.disk
}

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

// Check reads the signals once and acts.
func (m *Manager) Check(ctx context.Context) {
	if m.checkLocalStorage(ctx) > 0 {
		return // as upstream: pods over their own limits go first, pressure waits for the next round
	}
	s, err := m.cfg.Read()
	if err != nil {
		klog.FromContext(ctx).Error(err, "Failed to read eviction signals")
		return
	}
	crossed := Crossed(m.cfg.Thresholds, s)
	memory, disk := false, false
	for _, t := range crossed {
		if t.Signal == "memory.available" {
			memory = true
		} else {
			disk = true
		}
	}
	if disk && m.cfg.ReclaimImages != nil {
		_ = m.cfg.ReclaimImages(ctx)
		if s2, err := m.cfg.Read(); err == nil {
			s = s2
			crossed = Crossed(m.cfg.Thresholds, s2)
			disk = false
			for _, t := range crossed {
				disk = disk || t.Signal != "memory.available"
			}
		}
	}
	now := m.cfg.Now()
	m.mu.Lock()
	if memory {
		m.memoryAt = now
	}
	if disk {
		m.diskAt = now
	}
	// As upstream: a condition holds for the transition period after its
	// signal was last over a threshold.
	m.memory = !m.memoryAt.IsZero() && now.Sub(m.memoryAt) < m.cfg.TransitionPeriod || memory
	m.disk = !m.diskAt.IsZero() && now.Sub(m.diskAt) < m.cfg.TransitionPeriod || disk
	m.mu.Unlock()
	if len(crossed) == 0 || m.cfg.Pods == nil || m.cfg.Evict == nil {
		return
	}
	victim := rank(m.cfg.Pods())
	if victim == nil {
		return
	}
	reclaim := crossed[0]
	for _, t := range crossed {
		if t.Signal == "memory.available" {
			reclaim = t // memory first, as upstream ranks it
		}
	}
	msg := pressureMessage(reclaim, s)
	klog.FromContext(ctx).Info("Evicting pod", "pod", klog.KObj(victim), "reason", msg)
	m.cfg.Evict(victim.UID, "Evicted", msg)
}

// rank picks the pod to evict: never static or critical pods; BestEffort
// first, then Burstable, then Guaranteed; lower priority first.
func rank(pods []*corev1.Pod) *corev1.Pod {
	var cands []*corev1.Pod
	for _, p := range pods {
		if p.Annotations["kubernetes.io/config.source"] == "file" || (p.Spec.Priority != nil && *p.Spec.Priority >= 2000000000) {
			continue
		}
		cands = append(cands, p)
	}
	if len(cands) == 0 {
		return nil
	}
	order := map[corev1.PodQOSClass]int{corev1.PodQOSBestEffort: 0, corev1.PodQOSBurstable: 1, corev1.PodQOSGuaranteed: 2}
	prio := func(p *corev1.Pod) int32 {
		if p.Spec.Priority != nil {
			return *p.Spec.Priority
		}
		return 0
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if prio(a) != prio(b) {
			return prio(a) < prio(b)
		}
		return order[a.Status.QOSClass] < order[b.Status.QOSClass]
	})
	return cands[0]
}

// ReadSignals reads the machine: MemAvailable, and statfs of the node fs.
func ReadSignals(rootDir string) (Signals, error) {
	var s Signals
	mem, err := meminfo()
	if err != nil {
		return s, err
	}
	s.MemoryCapacity, s.MemoryAvailable = mem["MemTotal"], mem["MemAvailable"]
	var st unix.Statfs_t
	if err := unix.Statfs(rootDir, &st); err != nil {
		return s, err
	}
	s.NodeFsCapacity, s.NodeFsAvailable = int64(st.Blocks)*st.Bsize, int64(st.Bavail)*st.Bsize
	s.NodeFsInodes, s.NodeFsInodesFree = int64(st.Files), int64(st.Ffree)
	return s, nil
}
