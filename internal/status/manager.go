// Package status sends pod statuses to the apiserver: the latest status per
// pod, one patch in flight per pod, coalesced, never lost. A loss of
// readiness is never coalesced away: a pod that went unready and back before
// its status went out is reported unready first, so that whoever watches its
// readiness (endpoints, rollouts) sees every time it stopped serving (the
// latest status, with the readiness it had). Static pods are left out: see
// set.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
)

// mirrorAnnotation marks the apiserver's copy of a static pod, whose status
// is the static pod's.
const mirrorAnnotation = "kubernetes.io/config.mirror"

// entry is the latest status Bosun holds for one pod.
type entry struct {
	namespace, name string
	uid             types.UID
	status          corev1.PodStatus
	finalize        bool // delete the pod object once the status is sent
	static          bool // its status goes to its mirror pod
	// provisional: a static pod's status set before the apiserver's pods
	// were listed, built on this agent's last checkpoint rather than on
	// the mirror (which another agent may have updated since). It is never
	// sent: the rebuild once the mirror is readable replaces it.
	provisional   bool
	version, sent uint64
	// unready is a not-Ready status that a Ready one replaced before it
	// was sent; it goes out first.
	unready *corev1.PodStatus
	// after is the pod as the patch that sent unready left it: the next
	// patch diffs from it, as the lister may not have seen it yet.
	after *corev1.Pod
	// changed is when the status first changed since it was last sent
	// (kubelet_pod_status_sync_duration_seconds; zero: nothing pending).
	changed time.Time
}

// withReadinessOf is the latest status with the readiness of an earlier,
// unready one: its Ready and ContainersReady conditions and its containers'
// ready flags. Only readiness is taken from the earlier status: its other
// fields may be older than what the latest status says.
func withReadinessOf(latest, unready *corev1.PodStatus) corev1.PodStatus {
	out := *latest.DeepCopy()
	for _, t := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
		for _, c := range unready.Conditions {
			if c.Type != t {
				continue
			}
			found := false
			for i := range out.Conditions {
				if out.Conditions[i].Type == t {
					out.Conditions[i], found = c, true
				}
			}
			if !found {
				out.Conditions = append(out.Conditions, c)
			}
		}
	}
	notReady := map[string]bool{}
	for _, cs := range append(append([]corev1.ContainerStatus{}, unready.InitContainerStatuses...), unready.ContainerStatuses...) {
		if !cs.Ready {
			notReady[cs.Name] = true
		}
	}
	for _, list := range [][]corev1.ContainerStatus{out.InitContainerStatuses, out.ContainerStatuses} {
		for i := range list {
			if notReady[list[i].Name] {
				list[i].Ready = false
			}
		}
	}
	return out
}

// podReady reports whether the status has the Ready condition true.
func podReady(st *corev1.PodStatus) bool {
	for _, c := range st.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// mirrorRetry is how often a static pod's status looks for its mirror pod.
const mirrorRetry = 2 * time.Second

// Manager keeps the latest status per pod and patches it to the apiserver.
type Manager struct {
	client  kubernetes.Interface
	pods    corelisters.PodLister // the apiserver's view of this node's pods
	queue   workqueue.TypedRateLimitingInterface[types.UID]
	mu      sync.Mutex
	entries map[types.UID]*entry
	// Ready reports whether the apiserver's pods are listed; statuses are
	// held until then, so that a status built before a static pod's mirror
	// could be read never overwrites the mirror's (nil: always ready).
	Ready func() bool
	// static pods' last statuses, kept in the checkpoint file (checkpoint.go)
	static      map[types.UID]*corev1.PodStatus
	checkpoint  string
	staticDirty chan struct{}
}

// New returns a manager; pods lists this node's pods as the apiserver has them.
func New(client kubernetes.Interface, pods corelisters.PodLister) *Manager {
	return &Manager{
		client: client, pods: pods, entries: map[types.UID]*entry{},
		static: map[types.UID]*corev1.PodStatus{}, staticDirty: make(chan struct{}, 1),
		// Retries back off from half a second to half a minute per pod: an
		// apiserver outage must not turn into a flood of patches and logs.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[types.UID](500*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "pod_status"}),
	}
}

// SetPodStatus records the pod's latest status.
func (m *Manager) SetPodStatus(pod *corev1.Pod, st corev1.PodStatus) { m.set(pod, st, false) }

// Finalize records the final status of a deleted pod; once it is sent the
// pod object is deleted with grace 0.
func (m *Manager) Finalize(pod *corev1.Pod, st corev1.PodStatus) { m.set(pod, st, true) }

func (m *Manager) set(pod *corev1.Pod, st corev1.PodStatus, finalize bool) {
	m.mu.Lock()
	e, ok := m.entries[pod.UID]
	if !ok {
		e = &entry{namespace: pod.Namespace, name: pod.Name, uid: pod.UID, static: isStatic(pod)}
		m.entries[pod.UID] = e
	}
	// Not for static pods: their statuses are built on their mirror's, which
	// the agent reads only once the apiserver's pods are listed; what they
	// show before (placeholders, probes not yet seeded) is no readiness lost.
	if e.version != e.sent && e.unready == nil && !e.static && !podReady(&e.status) && podReady(&st) {
		e.unready = e.status.DeepCopy()
	}
	if e.changed.IsZero() && !apiequality.Semantic.DeepEqual(e.status, st) {
		e.changed = time.Now()
	}
	e.status = *st.DeepCopy()
	e.provisional = e.static && m.Ready != nil && !m.Ready()
	e.version++
	e.finalize = e.finalize || finalize
	static := isStatic(pod)
	if static {
		m.static[pod.UID] = st.DeepCopy()
	}
	m.mu.Unlock()
	if static {
		select {
		case m.staticDirty <- struct{}{}:
		default:
		}
	}
	m.queue.Add(pod.UID)
}

// Forget drops a pod that is gone.
func (m *Manager) Forget(uid types.UID) {
	m.mu.Lock()
	delete(m.entries, uid)
	_, static := m.static[uid]
	delete(m.static, uid)
	m.mu.Unlock()
	if static {
		select {
		case m.staticDirty <- struct{}{}:
		default:
		}
	}
}

// Status returns the latest status Bosun holds for a pod.
func (m *Manager) Status(uid types.UID) (corev1.PodStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[uid]
	if !ok {
		return corev1.PodStatus{}, false
	}
	return *e.status.DeepCopy(), true
}

// Version is the version of the pod's status the agent holds (it moves
// with every change), without copying the status.
func (m *Manager) Version(uid types.UID) (uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[uid]
	if !ok {
		return 0, false
	}
	return e.version, true
}

// StatusVersion is Status with its Version, read together.
func (m *Manager) StatusVersion(uid types.UID) (corev1.PodStatus, uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[uid]
	if !ok {
		return corev1.PodStatus{}, 0, false
	}
	return *e.status.DeepCopy(), e.version, true
}

// reconcilePeriod is how often sent statuses are compared with the
// apiserver's (upstream's status manager syncs every 10 s).
const reconcilePeriod = 10 * time.Second

// ownConditions are the pod conditions the agent sets.
var ownConditions = []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady, corev1.PodInitialized, corev1.PodReadyToStartContainers}

// reconcile queues each pod whose status in the apiserver (the lister's
// copy, no request) disagrees with the one last sent on its phase or the
// agent's own conditions: another writer changed them, such as the node
// lifecycle controller, which marks every pod of a node not Ready while the
// node is NotReady and leaves it to the agent to set them back, as
// upstream's status manager does.
func (m *Manager) reconcile() {
	type sent struct {
		uid             types.UID
		namespace, name string
		status          *corev1.PodStatus
	}
	var all []sent
	m.mu.Lock()
	for uid, e := range m.entries {
		if e.sent == e.version && e.version > 0 && !e.provisional && !e.finalize {
			all = append(all, sent{uid, e.namespace, e.name, e.status.DeepCopy()})
		}
	}
	m.mu.Unlock()
	for _, s := range all {
		current, err := m.pods.Pods(s.namespace).Get(s.name)
		if err != nil || (current.UID != s.uid && current.Annotations[mirrorAnnotation] != string(s.uid)) {
			continue
		}
		if drifted(&current.Status, s.status) {
			m.queue.Add(s.uid)
		}
	}
}

// drifted: the apiserver's status differs from ours in phase or in the
// status of a condition the agent sets.
func drifted(api, ours *corev1.PodStatus) bool {
	if api.Phase == corev1.PodSucceeded || api.Phase == corev1.PodFailed {
		return false // a pod someone ended stays ended
	}
	if api.Phase != ours.Phase {
		return true
	}
	for _, t := range ownConditions {
		o := condition(ours, t)
		if o == nil {
			continue
		}
		if a := condition(api, t); a == nil || a.Status != o.Status {
			return true
		}
	}
	return false
}

func condition(st *corev1.PodStatus, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

// Run sends statuses with workers goroutines until ctx ends.
func (m *Manager) Run(ctx context.Context, workers int) {
	go func() { <-ctx.Done(); m.queue.ShutDown() }()
	go m.runCheckpoint(ctx.Done(), klog.FromContext(ctx))
	go func() {
		t := time.NewTicker(reconcilePeriod)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if m.Ready == nil || m.Ready() {
					m.reconcile()
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m.processNext(ctx) {
			}
		}()
	}
	wg.Wait()
}

func (m *Manager) processNext(ctx context.Context) bool {
	uid, quit := m.queue.Get()
	if quit {
		return false
	}
	defer m.queue.Done(uid)
	if m.Ready != nil && !m.Ready() {
		m.queue.AddAfter(uid, time.Second) // held until the apiserver's pods are listed
		return true
	}
	if err := m.sync(ctx, uid); err != nil {
		if n := m.queue.NumRequeues(uid); n == 0 || n%10 == 0 { // the first failure, then every tenth
			klog.FromContext(ctx).Error(err, "Failed to update pod status, will retry", "podUID", uid, "failures", n+1)
		}
		m.queue.AddRateLimited(uid)
		return true
	}
	m.queue.Forget(uid)
	return true
}

// sync sends one pod's latest status, and deletes the pod when finalizing.
func (m *Manager) sync(ctx context.Context, uid types.UID) error {
	m.mu.Lock()
	e, ok := m.entries[uid]
	var want entry
	lost := false
	if ok {
		want = *e
		want.status = *e.status.DeepCopy()
		if e.unready != nil {
			want.status, want.finalize, lost = withReadinessOf(&e.status, e.unready), false, true
		}
		e.after = nil
	}
	m.mu.Unlock()
	if !ok || want.provisional {
		return nil
	}
	current, err := m.pods.Pods(want.namespace).Get(want.name)
	if want.after != nil && err == nil && current.UID == want.after.UID {
		current = want.after
	}
	if apierrors.IsNotFound(err) {
		current, err = m.client.CoreV1().Pods(want.namespace).Get(ctx, want.name, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
		if want.static {
			// A static pod whose mirror does not exist yet: look again
			// shortly, quietly, until the mirror is there or the pod ends.
			m.queue.AddAfter(uid, mirrorRetry)
		}
		// Gone, or not ours to read: nothing to report to now.
		return nil
	}
	if err != nil {
		return err
	}
	if current.UID != uid && current.Annotations[mirrorAnnotation] != string(uid) {
		return nil // a new pod took the name
	}
	var after *corev1.Pod
	normalizeTimes(&want.status)
	notOurs(&want.status, &current.Status)
	if !apiequality.Semantic.DeepEqual(current.Status, want.status) {
		if after, err = m.patch(ctx, current, want.status); err != nil {
			return err
		}
	}
	m.mu.Lock()
	if lost {
		e.unready, e.after = nil, after
		m.queue.Add(uid) // the latest status next
	} else if e.sent < want.version {
		e.sent = want.version
		if e.sent == e.version && !e.changed.IsZero() {
			if after != nil {
				bmetrics.PodStatusSyncDuration.Observe(time.Since(e.changed).Seconds())
			}
			e.changed = time.Time{}
		}
	}
	m.mu.Unlock()
	if want.finalize {
		grace := int64(0)
		err := m.client.CoreV1().Pods(want.namespace).Delete(ctx, want.name, metav1.DeleteOptions{
			GracePeriodSeconds: &grace, Preconditions: &metav1.Preconditions{UID: &uid},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("failed to delete pod %s/%s: %w", want.namespace, want.name, err)
		}
	}
	return nil
}

// notOurs copies into st the fields of the pod's status that others own
// (the claim controller's and the scheduler's DRA claim statuses, which the
// NodeRestriction admission refuses to let a node change), as upstream's
// status manager keeps them.
func notOurs(st, current *corev1.PodStatus) {
	st.ResourceClaimStatuses = current.ResourceClaimStatuses
	st.ExtendedResourceClaimStatus = current.ExtendedResourceClaimStatus
}

// patch sends a strategic merge patch from the apiserver's status to ours,
// guarded by the pod's UID.
func (m *Manager) patch(ctx context.Context, current *corev1.Pod, st corev1.PodStatus) (*corev1.Pod, error) {
	oldJSON, err := json.Marshal(corev1.Pod{Status: current.Status})
	if err != nil {
		return nil, err
	}
	newJSON, err := json.Marshal(corev1.Pod{Status: st})
	if err != nil {
		return nil, err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, corev1.Pod{})
	if err != nil {
		return nil, err
	}
	var body map[string]any
	if err := json.Unmarshal(patch, &body); err != nil {
		return nil, err
	}
	if len(body) == 0 {
		// The statuses differ only in what their JSON does not carry:
		// the apiserver has ours already.
		return current, nil
	}
	body["metadata"] = map[string]any{"uid": string(current.UID)}
	patch, _ = json.Marshal(body)
	start := time.Now()
	after, err := m.client.CoreV1().Pods(current.Namespace).Patch(ctx, current.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return nil, fmt.Errorf("failed to patch status of pod %s/%s: %w", current.Namespace, current.Name, err)
	}
	klog.FromContext(ctx).V(3).Info("Patched pod status", "pod", klog.KObj(current), "phase", st.Phase, "took", time.Since(start))
	return after, nil
}

// normalizeTimes truncates the status's times to whole seconds, as the
// apiserver stores them (RFC 3339), as upstream's status manager does: a
// status built from the runtime's nanosecond times otherwise never equals
// the apiserver's copy of itself, and each resync sent a patch that changed
// nothing.
func normalizeTimes(st *corev1.PodStatus) {
	sec := func(t *metav1.Time) {
		if t != nil && !t.IsZero() {
			*t = t.Rfc3339Copy()
		}
	}
	sec(st.StartTime)
	for i := range st.Conditions {
		sec(&st.Conditions[i].LastProbeTime)
		sec(&st.Conditions[i].LastTransitionTime)
	}
	state := func(s *corev1.ContainerState) {
		if s.Running != nil {
			sec(&s.Running.StartedAt)
		}
		if s.Terminated != nil {
			sec(&s.Terminated.StartedAt)
			sec(&s.Terminated.FinishedAt)
		}
	}
	for _, list := range [][]corev1.ContainerStatus{st.InitContainerStatuses, st.ContainerStatuses, st.EphemeralContainerStatuses} {
		for i := range list {
			state(&list[i].State)
			state(&list[i].LastTerminationState)
		}
	}
}
