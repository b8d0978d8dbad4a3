// Package allocation keeps the resources allocated to each pod, apart from
// what its spec asks for: an in-place resize changes the spec at once, and
// the allocation follows only once the new requests fit on the node beside
// the other pods' allocations. Until then the resize is pending (condition
// PodResizePending, reason Deferred, with the admission's message) and the
// pod runs as allocated; once allocated it is in progress
// (PodResizeInProgress) until the runtime reports the containers resized.
// Deferred resizes are tried again when pods stop or go, and every few
// minutes. Allocations are kept in upstream's checkpoint file in the root
// dir, so that they survive restarts and swaps with the upstream kubelet.
package allocation

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/klog/v2"

	"github.com/bosun-dev/bosun/internal/atomicfile"
	"github.com/bosun-dev/bosun/internal/podsync"
)

// Upstream's pod condition reasons and event reasons for resizes.
const (
	ReasonDeferred   = "Deferred"
	ReasonInfeasible = "Infeasible"
	ReasonError      = "Error"

	EventResizeStarted    = "ResizeStarted"
	EventResizeCompleted  = "ResizeCompleted"
	EventResizeDeferred   = "ResizeDeferred"
	EventResizeInfeasible = "ResizeInfeasible"
	EventResizeError      = "ResizeError"
)

// Upstream's retry periods for deferred resizes: the first look 30 s after
// start, then every 3 minutes (and whenever a pod stops or goes).
const (
	firstRetry = 30 * time.Second
	retryEvery = 3 * time.Minute
)

// FitFunc says whether pod, with the resources it asks for, fits beside
// others (as allocated): admission's predicates, with its reason and message.
type FitFunc func(pod *corev1.Pod, others []*corev1.Pod) (ok bool, reason, message string)

// Config wires a manager.
type Config struct {
	RootDir  string
	Recorder record.EventRecorder
	// Fit is the admission check a resize must pass.
	Fit FitFunc
	// Active lists the pods whose containers hold node resources, as
	// allocated (the pod workers' pods that have not terminated).
	Active func() []*corev1.Pod
	// Resync has a pod whose resize may now be allocated resolved again
	// from its latest version (its worker calls Resolve).
	Resync func(uid types.UID)
	// Known reports whether a pod UID still has a worker (orphaned
	// allocations are dropped).
	Known func(uid types.UID) bool
	// Ready reports whether every pod source has delivered its pods:
	// deferred resizes wait for it, so that none is allocated before the
	// pods that already hold the node are all known.
	Ready func() bool
	Now   func() time.Time
}

type conditions struct {
	pending, inProgress *corev1.PodCondition
}

// Manager keeps allocations, resize conditions and deferred resizes.
type Manager struct {
	cfg  Config
	path string
	kick chan struct{}

	mu        sync.Mutex
	allocated map[types.UID]PodResources
	conds     map[types.UID]*conditions
	desired   map[types.UID]*corev1.Pod // pods whose resize is not allocated yet
	lastSaved []byte
}

// New loads the checkpoint from the root dir. A file that cannot be read
// or is corrupt is set aside with a warning: each pod then counts as
// allocated what its spec asks for, which is what a node without the file
// would do.
func New(logger klog.Logger, cfg Config) *Manager {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{cfg: cfg, path: filepath.Join(cfg.RootDir, FileName), kick: make(chan struct{}, 1),
		allocated: map[types.UID]PodResources{}, conds: map[types.UID]*conditions{}, desired: map[types.UID]*corev1.Pod{}}
	b, err := os.ReadFile(m.path)
	switch {
	case os.IsNotExist(err):
	case err != nil:
		logger.Error(err, "Cannot read the pod allocation checkpoint; allocations start from the pods' specs", "path", m.path)
	default:
		entries, err := decode(b)
		if err != nil {
			logger.Error(err, "Ignoring the pod allocation checkpoint; allocations start from the pods' specs", "path", m.path)
			break
		}
		m.allocated, m.lastSaved = entries, b
	}
	return m
}

// allocationOf is what a pod's spec asks for, as an allocation (every
// container, init containers included, and the pod-level resources).
func allocationOf(pod *corev1.Pod) PodResources {
	out := PodResources{ContainerResources: map[string]corev1.ResourceRequirements{}}
	if pod.Spec.Resources != nil {
		out.PodLevelResources = pod.Spec.Resources.DeepCopy()
	}
	for _, c := range pod.Spec.InitContainers {
		out.ContainerResources[c.Name] = *c.Resources.DeepCopy()
	}
	for _, c := range pod.Spec.Containers {
		out.ContainerResources[c.Name] = *c.Resources.DeepCopy()
	}
	return out
}

// withAllocation returns pod with its allocated resources in place of the
// ones its spec asks for (a copy, when they differ), and whether they differ.
func withAllocation(pod *corev1.Pod, a PodResources) (*corev1.Pod, bool) {
	differs := false
	out := pod
	cp := func() {
		if !differs {
			out, differs = pod.DeepCopy(), true
		}
	}
	if !apiequality.Semantic.DeepEqual(pod.Spec.Resources, a.PodLevelResources) {
		cp()
		out.Spec.Resources = a.PodLevelResources.DeepCopy()
	}
	for i, c := range pod.Spec.InitContainers {
		if r, ok := a.ContainerResources[c.Name]; ok && !apiequality.Semantic.DeepEqual(c.Resources, r) {
			cp()
			out.Spec.InitContainers[i].Resources = *r.DeepCopy()
		}
	}
	for i, c := range pod.Spec.Containers {
		if r, ok := a.ContainerResources[c.Name]; ok && !apiequality.Semantic.DeepEqual(c.Resources, r) {
			cp()
			out.Spec.Containers[i].Resources = *r.DeepCopy()
		}
	}
	return out, differs
}

// Allocated returns the pod as allocated: what it runs with.
func (m *Manager) Allocated(pod *corev1.Pod) *corev1.Pod {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.allocated[pod.UID]
	if !ok {
		return pod
	}
	out, _ := withAllocation(pod, a)
	return out
}

// Admit runs admission for a new pod, with the resources allocated to it
// before (after a restart, the checkpoint's, not the spec's), beside the
// active pods as allocated; an admitted pod's allocation is recorded.
func (m *Manager) Admit(pod *corev1.Pod, active []*corev1.Pod, admit FitFunc) (bool, string, string) {
	allocated := m.Allocated(pod)
	others := make([]*corev1.Pod, 0, len(active))
	for _, p := range active {
		if p.UID != pod.UID {
			others = append(others, m.Allocated(p))
		}
	}
	m.Backfill(pod)
	ok, reason, msg := admit(allocated, others)
	if ok {
		m.mu.Lock()
		if _, had := m.allocated[pod.UID]; !had {
			m.allocated[pod.UID] = allocationOf(allocated)
			m.saveLocked()
		}
		m.mu.Unlock()
	}
	return ok, reason, msg
}

// Resolve takes the latest version of an admitted pod and returns it as
// it is to run. A spec whose resources differ from the allocation is a
// resize: allocated now if it fits (the pod comes back with the new
// resources, and the resize is in progress), otherwise deferred (the pod
// comes back as allocated before, with a PodResizePending condition). A
// deferred resize is looked at again only when its spec changes or on a
// retry: the updates of its own status change nothing.
func (m *Manager) Resolve(ctx context.Context, pod *corev1.Pod, retry bool) *corev1.Pod {
	m.mu.Lock()
	a, ok := m.allocated[pod.UID]
	m.mu.Unlock()
	if !ok {
		return pod
	}
	allocated, differs := withAllocation(pod, a)
	if !differs || pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		m.mu.Lock()
		delete(m.desired, pod.UID)
		if c := m.conds[pod.UID]; c != nil {
			c.pending = nil // a resize reverted before it was allocated
		}
		m.mu.Unlock()
		return allocated
	}
	if !retry {
		m.mu.Lock()
		last, pending := m.desired[pod.UID]
		m.mu.Unlock()
		if pending && sameResources(last, pod) {
			return allocated
		}
	}
	if m.cfg.Ready != nil && !m.cfg.Ready() {
		m.mu.Lock()
		m.desired[pod.UID] = pod // looked at once every pod is known
		m.mu.Unlock()
		m.Retry()
		return allocated
	}
	var others []*corev1.Pod
	if m.cfg.Active != nil {
		for _, p := range m.cfg.Active() {
			if p.UID != pod.UID {
				others = append(others, m.Allocated(p))
			}
		}
	}
	logger := klog.FromContext(ctx)
	fit, reason, msg := true, "", ""
	if m.cfg.Fit != nil {
		fit, reason, msg = m.cfg.Fit(pod, others)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.condsLocked(pod.UID)
	now := metav1.NewTime(m.cfg.Now())
	if !fit {
		why := reason // the event names admission's reason (OutOfcpu), as upstream's does
		if reason != ReasonInfeasible {
			reason = ReasonDeferred
		}
		changed := c.pending == nil || c.pending.Reason != reason || c.pending.ObservedGeneration != pod.Generation
		if changed || c.pending.Message != msg {
			c.pending = condition(corev1.PodResizePending, c.pending, reason, msg, pod.Generation, now)
		}
		m.desired[pod.UID] = pod
		if changed {
			logger.Info("Pod resize is pending", "pod", klog.KObj(pod), "reason", reason, "message", msg)
			event := EventResizeDeferred
			if reason == ReasonInfeasible {
				event = EventResizeInfeasible
			}
			m.event(pod, corev1.EventTypeWarning, event, resizeMessage("Pod resize "+why, pod, pod.Generation, msg))
		}
		return allocated
	}
	increasing := requestsIncrease(allocated, pod)
	m.allocated[pod.UID] = allocationOf(pod)
	m.saveLocked()
	delete(m.desired, pod.UID)
	c.pending = nil
	c.inProgress = condition(corev1.PodResizeInProgress, nil, "", "", pod.Generation, now)
	logger.V(2).Info("Pod resize allocated", "pod", klog.KObj(pod), "generation", pod.Generation)
	m.event(pod, corev1.EventTypeNormal, EventResizeStarted, resizeMessage("Pod resize started", pod, pod.Generation, ""))
	if !increasing && len(m.desired) > 0 {
		m.retrySoon() // resources were freed: deferred resizes may fit now
	}
	return pod
}

// sameResources reports whether two versions of a pod ask for the same
// resources.
func sameResources(a, b *corev1.Pod) bool {
	return apiequality.Semantic.DeepEqual(allocationOf(a), allocationOf(b))
}

// condsLocked returns the pod's resize conditions, made when missing.
// Callers hold m.mu.
func (m *Manager) condsLocked(uid types.UID) *conditions {
	c := m.conds[uid]
	if c == nil {
		c = &conditions{}
		m.conds[uid] = c
	}
	return c
}

// requestsIncrease reports whether any of the pod's cpu or memory requests
// grow from the allocated pod to the desired one.
func requestsIncrease(allocated, desired *corev1.Pod) bool {
	was := resourcehelper.PodRequests(allocated, resourcehelper.PodResourcesOptions{})
	will := resourcehelper.PodRequests(desired, resourcehelper.PodResourcesOptions{})
	return will.Cpu().Cmp(*was.Cpu()) > 0 || will.Memory().Cmp(*was.Memory()) > 0
}

// condition is a resize condition, keeping the transition time while its
// reason holds (upstream's rule).
func condition(t corev1.PodConditionType, old *corev1.PodCondition, reason, msg string, generation int64, now metav1.Time) *corev1.PodCondition {
	transition := now
	if old != nil && old.Reason == reason {
		transition = old.LastTransitionTime
	}
	return &corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastProbeTime: now, LastTransitionTime: transition,
		ObservedGeneration: generation, Reason: reason, Message: msg}
}

// Observe records whether an allocated resize is still to reach the pod's
// running containers (inProgress), after a sync of the allocated pod. The
// in-progress condition ends, with a ResizeCompleted event, once the
// runtime reports them resized.
func (m *Manager) Observe(pod *corev1.Pod, inProgress bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.conds[pod.UID]
	if inProgress {
		c = m.condsLocked(pod.UID)
		if c.inProgress == nil {
			c.inProgress = condition(corev1.PodResizeInProgress, nil, "", "", pod.Generation, metav1.NewTime(m.cfg.Now()))
		}
		return
	}
	if c == nil || c.inProgress == nil {
		return
	}
	generation := c.inProgress.ObservedGeneration
	c.inProgress = nil
	m.event(pod, corev1.EventTypeNormal, EventResizeCompleted, resizeMessage("Pod resize completed", pod, generation, ""))
}

// Failed records a resize the runtime refused: the in-progress condition
// says Error with the message (its generation kept), and a ResizeError
// event is recorded when that changes it.
func (m *Manager) Failed(pod *corev1.Pod, msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.condsLocked(pod.UID)
	generation := pod.Generation
	if c.inProgress != nil {
		generation = c.inProgress.ObservedGeneration
		if c.inProgress.Reason == ReasonError && c.inProgress.Message == msg {
			return
		}
	}
	c.inProgress = condition(corev1.PodResizeInProgress, c.inProgress, ReasonError, msg, generation, metav1.NewTime(m.cfg.Now()))
	m.event(pod, corev1.EventTypeWarning, EventResizeError, resizeMessage("Pod resize error", pod, generation, msg))
}

// Conditions are the pod's resize conditions for its status: pending
// first, then in progress. A terminal pod has none (and they are dropped).
func (m *Manager) Conditions(uid types.UID, terminal bool) []corev1.PodCondition {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.conds[uid]
	if c == nil {
		return nil
	}
	if terminal {
		delete(m.conds, uid)
		delete(m.desired, uid)
		return nil
	}
	var out []corev1.PodCondition
	if c.pending != nil {
		out = append(out, *c.pending)
	}
	if c.inProgress != nil {
		out = append(out, *c.inProgress)
	}
	return out
}

// Backfill takes the resize conditions a pod's status already shows (the
// agent before this one set them), so that their transition times and
// generations carry over.
func (m *Manager) Backfill(pod *corev1.Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.conds[pod.UID]; ok {
		return
	}
	c := &conditions{}
	for i := range pod.Status.Conditions {
		cond := pod.Status.Conditions[i]
		switch cond.Type {
		case corev1.PodResizePending:
			c.pending = &cond
		case corev1.PodResizeInProgress:
			c.inProgress = &cond
		}
	}
	if c.pending != nil || c.inProgress != nil {
		m.conds[pod.UID] = c
	}
}

// Remove drops what is kept for a pod that is gone, and looks at the
// deferred resizes again: its resources are free.
func (m *Manager) Remove(uid types.UID) {
	m.mu.Lock()
	_, had := m.allocated[uid]
	delete(m.allocated, uid)
	delete(m.conds, uid)
	delete(m.desired, uid)
	if had {
		m.saveLocked()
	}
	m.mu.Unlock()
	m.Retry()
}

// Retry asks for the deferred resizes to be looked at again soon.
func (m *Manager) Retry() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.desired) > 0 {
		m.retrySoon()
	}
}

func (m *Manager) retrySoon() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run retries deferred resizes when asked and periodically, and drops the
// allocations of pods that no longer exist, until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	timer := time.NewTimer(firstRetry)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-timer.C:
			timer.Reset(retryEvery)
		}
		if m.cfg.Ready != nil && !m.cfg.Ready() {
			continue
		}
		m.pruneOrphans()
		for _, pod := range m.pendingInOrder() {
			if m.cfg.Resync != nil {
				m.cfg.Resync(pod.UID)
			}
		}
	}
}

// pendingInOrder lists the pods with a deferred resize in upstream's order:
// resizes that grow no request first, then higher priority, then
// Guaranteed before others, then the longest pending.
func (m *Manager) pendingInOrder() []*corev1.Pod {
	m.mu.Lock()
	type item struct {
		pod        *corev1.Pod
		increasing bool
		since      time.Time
	}
	var items []item
	for uid, pod := range m.desired {
		it := item{pod: pod, increasing: true}
		if a, ok := m.allocated[uid]; ok {
			allocated, _ := withAllocation(pod, a)
			it.increasing = requestsIncrease(allocated, pod)
		}
		if c := m.conds[uid]; c != nil && c.pending != nil {
			it.since = c.pending.LastTransitionTime.Time
		}
		items = append(items, it)
	}
	m.mu.Unlock()
	priority := func(p *corev1.Pod) int32 {
		if p.Spec.Priority != nil {
			return *p.Spec.Priority
		}
		return 0
	}
	guaranteed := func(p *corev1.Pod) bool { return podsync.QOSClass(p) == corev1.PodQOSGuaranteed }
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if a.increasing != b.increasing {
			return !a.increasing
		}
		if pa, pb := priority(a.pod), priority(b.pod); pa != pb {
			return pa > pb
		}
		if ga, gb := guaranteed(a.pod), guaranteed(b.pod); ga != gb {
			return ga
		}
		if a.since.IsZero() != b.since.IsZero() {
			return !a.since.IsZero()
		}
		return a.since.Before(b.since)
	})
	out := make([]*corev1.Pod, len(items))
	for i, it := range items {
		out[i] = it.pod
	}
	return out
}

// pruneOrphans drops the allocations of pods no worker owns.
func (m *Manager) pruneOrphans() {
	if m.cfg.Known == nil {
		return
	}
	m.mu.Lock()
	uids := make([]types.UID, 0, len(m.allocated))
	for uid := range m.allocated {
		uids = append(uids, uid)
	}
	m.mu.Unlock()
	var gone []types.UID
	for _, uid := range uids {
		if !m.cfg.Known(uid) {
			gone = append(gone, uid)
		}
	}
	if len(gone) == 0 {
		return
	}
	m.mu.Lock()
	for _, uid := range gone {
		delete(m.allocated, uid)
		delete(m.conds, uid)
		delete(m.desired, uid)
	}
	m.saveLocked()
	m.mu.Unlock()
}

// saveLocked writes the checkpoint when it changed. Callers hold m.mu. A
// failed write is logged; the next change writes it again.
func (m *Manager) saveLocked() {
	b, err := encode(m.allocated)
	if err == nil && string(b) == string(m.lastSaved) {
		return
	}
	if err == nil {
		err = atomicfile.Write(m.path, b, 0o644)
	}
	if err != nil {
		klog.Background().Error(err, "Failed to write the pod allocation checkpoint", "path", m.path)
		return
	}
	m.lastSaved = b
}

func (m *Manager) event(pod *corev1.Pod, kind, reason, msg string) {
	if m.cfg.Recorder != nil {
		m.cfg.Recorder.Event(pod, kind, reason, msg)
	}
}

type containerResources struct {
	Name      string                      `json:"name"`
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
}

type resourceSummary struct {
	InitContainers []containerResources `json:"initContainers,omitempty"`
	Containers     []containerResources `json:"containers,omitempty"`
	Generation     int64                `json:"generation"`
	Error          string               `json:"error,omitempty"`
}

// resizeMessage is upstream's event message: a prefix, then the pod's
// container resources, generation and error as JSON.
func resizeMessage(prefix string, pod *corev1.Pod, generation int64, errMsg string) string {
	s := resourceSummary{Generation: generation, Error: errMsg}
	for _, c := range pod.Spec.InitContainers {
		s.InitContainers = append(s.InitContainers, containerResources{Name: c.Name, Resources: c.Resources})
	}
	for _, c := range pod.Spec.Containers {
		s.Containers = append(s.Containers, containerResources{Name: c.Name, Resources: c.Resources})
	}
	b, err := json.Marshal(s)
	if err != nil {
		return prefix
	}
	return fmt.Sprintf("%s: %s", prefix, b)
}
