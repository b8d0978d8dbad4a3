// Package podworkers runs one worker per pod UID, the single owner of that
// pod's actual state. A worker moves through syncing -> terminating ->
// terminated: while syncing it asks the syncer to make the runtime match the
// spec; once the pod is deleted, finished or past its deadline it stops the
// pod's containers; once terminated it reports the final status and, when
// the pod is gone from the apiserver, removes what is left in the runtime.
package podworkers

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
	"github.com/bosun-dev/bosun/internal/podsync"
)

// Syncer acts on the runtime for one pod. It may be called again for the
// same pod at any time; each call does the next step.
type Syncer interface {
	Sync(ctx context.Context, pod *corev1.Pod) (*podsync.SyncResult, error)
	Inspect(ctx context.Context, uid string) (*podsync.RuntimePod, error)
	Kill(ctx context.Context, pod *corev1.Pod, rp *podsync.RuntimePod, grace int64) error
	// UnprepareClaims releases the pod's dynamic resources once its
	// containers have stopped, before its final status is written, so that
	// the claims' deallocation never races a container still using them.
	UnprepareClaims(ctx context.Context, pod *corev1.Pod) error
	// Reclaim unmounts the volumes of a pod whose containers have all
	// stopped for good, and removes its cgroup; the pod object is deleted
	// only after. Its containers and folder stay until the object goes.
	Reclaim(ctx context.Context, pod *corev1.Pod) error
	Remove(ctx context.Context, pod *corev1.Pod) error
	// KillContainer stops one container (a failed liveness or startup
	// probe) with grace seconds, recording reason.
	KillContainer(ctx context.Context, pod *corev1.Pod, id string, grace int64, reason string)
}

// StatusSink receives pod statuses and the end of pods.
type StatusSink interface {
	// SetPodStatus records the pod's latest status, to be sent to the apiserver.
	SetPodStatus(pod *corev1.Pod, status corev1.PodStatus)
	// Finalize sends the final status of a deleted pod and then deletes the
	// pod object with grace 0.
	Finalize(pod *corev1.Pod, status corev1.PodStatus)
	// Forget drops what is kept for a pod that is gone.
	Forget(uid types.UID)
}

// StatusBuilder turns a sync result into a pod status.
// end is why the agent ended the pod, if it did.
type StatusBuilder func(pod *corev1.Pod, rp *podsync.RuntimePod, waiting map[string]podsync.Waiting, terminal bool, end podsync.End) corev1.PodStatus

// Config wires the workers.
type Config struct {
	Syncer Syncer
	Status StatusSink
	Build  StatusBuilder
	Resync time.Duration // re-sync a running pod at least this often (syncFrequency)
	Admit  func(pod *corev1.Pod, active []*corev1.Pod) (ok bool, reason, message string)
	Clock  func() time.Time
	// Recorder records the events of pods refused at admission (nil: none).
	Recorder record.EventRecorder
	// Terminated is told when a pod's containers have all stopped for good
	// (its devices may go to other pods).
	Terminated func(pod *corev1.Pod)
	// Allocation gives each pod the resources allocated to it, which an
	// in-place resize changes only once they fit (nil: the spec's).
	Allocation Allocation
}

// Allocation is what the workers ask of the resource allocation.
type Allocation interface {
	// Allocated returns the pod with the resources allocated to it.
	Allocated(pod *corev1.Pod) *corev1.Pod
	// Resolve returns the latest version of an admitted pod as it is to
	// run, allocating a resize of its resources when it fits.
	// retry says the pod has not changed, but a deferred resize may fit.
	Resolve(ctx context.Context, pod *corev1.Pod, retry bool) *corev1.Pod
	// Remove drops what is kept for a pod that is gone.
	Remove(uid types.UID)
}

type state int

const (
	syncing state = iota
	terminating
	terminated
)

// Workers holds one worker per pod UID.
type Workers struct {
	cfg  Config
	ctx  context.Context
	mu   sync.Mutex
	pods map[types.UID]*worker
	wg   sync.WaitGroup
	seq  uint64
}

// worker is one pod's goroutine and its mailbox.
type worker struct {
	mu      sync.Mutex
	pod     *corev1.Pod // latest pod, as allocated: what runs
	desired *corev1.Pod // latest pod, as its spec says
	// resolving serializes turning desired into pod, so that an older
	// version never overwrites a newer one.
	resolving sync.Mutex
	removed   bool          // gone from the apiserver
	reclaimed bool          // volumes and cgroup released after termination
	wake      chan struct{} // a new event, buffered 1
	state     state
	// why the agent ended the pod (an eviction, DeadlineExceeded)
	end podsync.End
	// syncCtx is the context of the pod's syncs (pulls, creates, starts);
	// cancelled the moment the pod is to stop, so that work in flight for
	// a pod being deleted ends at once.
	syncCtx    context.Context
	cancelSync context.CancelFunc
	seq        uint64 // creation order, for static pods sharing a name
	// syncedVersion is the resource version of the pod last synced ("" none
	// yet), for kubelet_pod_worker_duration_seconds' operation type.
	syncedVersion string
	failures      int // consecutive failed steps, for the retry backoff
	// killCtx is the context of the pod's stop in flight, and killGrace
	// its grace period: a shorter grace period or a force delete cancels
	// it, and the stop starts again with the new one.
	killCtx    context.Context
	cancelKill context.CancelFunc
	killGrace  int64
	// kills are container kills asked for by probes, carried out by the
	// worker, the pod's single owner, before its next sync.
	kills []killRequest
}

type killRequest struct {
	id     string
	grace  int64
	reason string
}

// New returns workers that stop when ctx ends.
func New(ctx context.Context, cfg Config) *Workers {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Resync == 0 {
		cfg.Resync = time.Minute
	}
	return &Workers{cfg: cfg, ctx: ctx, pods: map[types.UID]*worker{}}
}

// SetAdmit sets the admission check for new pods (before any Update).
func (w *Workers) SetAdmit(admit func(pod *corev1.Pod, active []*corev1.Pod) (bool, string, string)) {
	w.mu.Lock()
	w.cfg.Admit = admit
	w.mu.Unlock()
}

// Update delivers the latest version of a pod bound to this node. A pod seen
// for the first time is admitted or rejected first.
func (w *Workers) Update(pod *corev1.Pod) {
	w.mu.Lock()
	wk, ok := w.pods[pod.UID]
	if !ok {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			if pod.DeletionTimestamp == nil {
				w.mu.Unlock()
				return // finished before this agent started: nothing to run
			}
		}
		if reject, reason, msg := w.rejected(pod); reject {
			w.mu.Unlock()
			klog.FromContext(w.ctx).Info("Pod admission denied", "pod", klog.KObj(pod), "podUID", pod.UID, "reason", reason, "message", msg)
			// As upstream: an event with admission's message, and the status
			// saying the pod was rejected.
			if w.cfg.Recorder != nil {
				w.cfg.Recorder.Event(pod, corev1.EventTypeWarning, reason, msg)
			}
			st := *pod.Status.DeepCopy()
			st.Phase, st.Reason, st.Message, st.QOSClass = corev1.PodFailed, reason, "Pod was rejected: "+msg, podsync.QOSClass(pod)
			w.cfg.Status.SetPodStatus(pod, st)
			return
		}
		w.seq++
		first := pod
		if w.cfg.Allocation != nil {
			first = w.cfg.Allocation.Allocated(pod)
		}
		wk = &worker{pod: first, desired: pod, wake: make(chan struct{}, 1), seq: w.seq}
		wk.syncCtx, wk.cancelSync = context.WithCancel(w.ctx)
		w.pods[pod.UID] = wk
		w.wg.Add(1)
		go w.run(pod.UID, wk)
	}
	w.mu.Unlock()
	w.resolve(wk, pod)
	if pod.DeletionTimestamp != nil {
		wk.cancelSync()
		if g := pod.DeletionGracePeriodSeconds; g != nil {
			wk.shortenKill(*g)
		}
	}
	wk.poke()
}

// resolve makes desired the worker's latest pod, as allocated.
func (w *Workers) resolve(wk *worker, desired *corev1.Pod) {
	wk.resolving.Lock()
	defer wk.resolving.Unlock()
	retry := desired == nil
	if retry {
		wk.mu.Lock()
		desired = wk.desired
		wk.mu.Unlock()
	}
	pod := desired
	if w.cfg.Allocation != nil {
		pod = w.cfg.Allocation.Resolve(w.ctx, desired, retry)
	}
	wk.mu.Lock()
	wk.desired, wk.pod = desired, pod
	wk.mu.Unlock()
}

// Resolve looks at a pod's latest version again (a deferred resize that
// may fit now) and wakes its worker.
func (w *Workers) Resolve(uid types.UID) {
	wk, ok := w.worker(uid)
	if !ok {
		return
	}
	w.resolve(wk, nil)
	wk.poke()
}

// shortenKill cancels a stop in flight that uses a longer grace period.
func (wk *worker) shortenKill(grace int64) {
	wk.mu.Lock()
	defer wk.mu.Unlock()
	if wk.cancelKill != nil && grace < wk.killGrace {
		wk.cancelKill()
	}
}

// KillContainer asks a pod's worker to stop one of its containers (a
// failed liveness or startup probe); the worker does it before its next
// sync, so that no two parties act on the pod at once.
func (w *Workers) KillContainer(_ context.Context, pod *corev1.Pod, id string, grace int64, reason string) {
	wk, ok := w.worker(pod.UID)
	if !ok {
		return
	}
	wk.mu.Lock()
	wk.kills = append(wk.kills, killRequest{id: id, grace: grace, reason: reason})
	wk.mu.Unlock()
	wk.poke()
}

// worker returns the worker of a pod UID.
func (w *Workers) worker(uid types.UID) (*worker, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wk, ok := w.pods[uid]
	return wk, ok
}

// rejected runs admission for a new pod against the active ones. Callers hold w.mu.
func (w *Workers) rejected(pod *corev1.Pod) (bool, string, string) {
	if w.cfg.Admit == nil || pod.DeletionTimestamp != nil {
		return false, "", ""
	}
	// Pods still stopping count, as upstream's active pods do: their
	// containers still hold the node's resources.
	ok, reason, msg := w.cfg.Admit(pod, w.activeLocked())
	return !ok, reason, msg
}

// Delete says the pod is gone from the apiserver.
func (w *Workers) Delete(pod *corev1.Pod) {
	wk, ok := w.worker(pod.UID)
	if !ok {
		// No worker: a pod rejected at admission (or one already done). Its
		// rejected status, if any, has nothing left to be sent to.
		w.cfg.Status.Forget(pod.UID)
		return
	}
	wk.mu.Lock()
	wk.removed = true
	wk.mu.Unlock()
	wk.cancelSync()
	if !isStatic(pod) {
		wk.shortenKill(0) // force-deleted: no graceful phase left
	}
	wk.poke()
}

// Evict stops a pod for the node's sake: its worker terminates it and
// reports phase Failed with reason and message.
func (w *Workers) Evict(uid types.UID, end podsync.End) {
	w.mu.Lock()
	wk, ok := w.pods[uid]
	w.mu.Unlock()
	if !ok {
		return
	}
	wk.mu.Lock()
	if wk.state == syncing {
		wk.end, wk.state = end, terminating
	}
	wk.mu.Unlock()
	wk.cancelSync()
	wk.poke()
}

// Wake asks a pod's worker to look at the runtime again (a PLEG event).
func (w *Workers) Wake(uid types.UID) {
	w.mu.Lock()
	wk, ok := w.pods[uid]
	w.mu.Unlock()
	if ok {
		wk.poke()
	}
}

// Known reports whether a worker owns uid (for orphan cleanup).
func (w *Workers) Known(uid types.UID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.pods[uid]
	return ok
}

// HoldsDevices says whether a pod may still have running containers (its
// worker has not seen them all stop for good).
func (w *Workers) HoldsDevices(uid types.UID) bool {
	w.mu.Lock()
	wk, ok := w.pods[uid]
	w.mu.Unlock()
	if !ok {
		return false
	}
	_, _, st := wk.snapshot()
	return st != terminated
}

// Active lists the pods admission counts, as allocated: those not
// terminated, pods still stopping included, as upstream's active pods. A pod
// gone from the apiserver no longer counts, even while its containers stop:
// upstream's kubelet and the scheduler count it no more either, and would
// expect a pod bound in its place to be admitted.
func (w *Workers) Active() []*corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.activeLocked()
}

func (w *Workers) activeLocked() []*corev1.Pod {
	var out []*corev1.Pod
	for _, wk := range w.pods {
		wk.mu.Lock()
		if wk.state != terminated && !wk.removed {
			out = append(out, wk.pod)
		}
		wk.mu.Unlock()
	}
	return out
}

// Counts are the workers' numbers for the pod gauges on /metrics
// (kubelet_active_pods, kubelet_working_pods and the others).
func (w *Workers) Counts() bmetrics.PodCounts {
	n := bmetrics.PodCounts{Desired: map[string]int{}, Active: map[string]int{}, Working: map[bmetrics.WorkingKey]int{}}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, wk := range w.pods {
		wk.mu.Lock()
		static := ""
		if src := wk.pod.Annotations["kubernetes.io/config.source"]; src != "" && src != "api" {
			static = "true"
		}
		config := "desired"
		if wk.removed {
			config = "orphan"
		} else {
			n.Desired[static]++
		}
		lifecycle := map[state]string{syncing: "sync", terminating: "terminating", terminated: "terminated"}[wk.state]
		n.Working[bmetrics.WorkingKey{Config: config, Lifecycle: lifecycle, Static: static}]++
		if wk.state != terminated && !wk.removed {
			n.Active[static]++
			n.Ephemeral += len(wk.pod.Spec.EphemeralContainers)
			if static == "true" {
				n.Mirror++
			}
		}
		wk.mu.Unlock()
	}
	return n
}

// Running lists the pods whose containers should be running.
func (w *Workers) Running() []*corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*corev1.Pod
	for _, wk := range w.pods {
		wk.mu.Lock()
		if wk.state == syncing {
			out = append(out, wk.pod)
		}
		wk.mu.Unlock()
	}
	return out
}

// Wait blocks until every worker has exited (after ctx ends).
func (w *Workers) Wait() { w.wg.Wait() }

func (wk *worker) poke() {
	select {
	case wk.wake <- struct{}{}:
	default:
	}
}

func (wk *worker) snapshot() (*corev1.Pod, bool, state) {
	wk.mu.Lock()
	defer wk.mu.Unlock()
	return wk.pod, wk.removed, wk.state
}

func (wk *worker) setState(s state) {
	wk.mu.Lock()
	wk.state = s
	wk.mu.Unlock()
}

// run is one pod's loop.
func (w *Workers) run(uid types.UID, wk *worker) {
	defer w.wg.Done()
	logger := klog.FromContext(w.ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-wk.wake:
		case <-timer.C:
		}
		next, done := w.step(wk)
		if done {
			wk.cancelSync()
			w.mu.Lock()
			delete(w.pods, uid)
			w.mu.Unlock()
			w.cfg.Status.Forget(uid)
			if w.cfg.Allocation != nil {
				w.cfg.Allocation.Remove(uid)
			}
			logger.V(2).Info("Pod worker finished", "podUID", uid)
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// step does one unit of work and says when to run again, or that the pod is
// done and its worker may exit.
func (w *Workers) step(wk *worker) (time.Duration, bool) {
	pod, removed, st := wk.snapshot()
	if st == syncing && !removed && pod.DeletionTimestamp == nil && w.olderSameName(wk, pod) {
		// A static pod edited in place: the old pod of the same name stops
		// first (it may hold host ports), then this one starts.
		return staticHandoverPoll, false
	}
	switch st {
	case syncing:
		return w.stepSync(wk, pod, removed), false
	case terminating:
		return w.stepTerminate(wk, pod, removed), false
	default:
		return w.stepTerminated(wk, pod, removed)
	}
}

// staticHandoverPoll is how often a static pod waiting for its predecessor
// of the same name looks again.
const staticHandoverPoll = 500 * time.Millisecond

// olderSameName reports whether an older worker of a static pod with the
// same namespace and name is still running, so that this one must wait.
func (w *Workers) olderSameName(wk *worker, pod *corev1.Pod) bool {
	if !isStatic(pod) {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for uid, other := range w.pods {
		if uid == pod.UID || other.seq > wk.seq {
			continue
		}
		other.mu.Lock()
		same := other.pod.Namespace == pod.Namespace && other.pod.Name == pod.Name
		other.mu.Unlock()
		if same {
			return true
		}
	}
	return false
}

// retryDelay is the wait before retrying a failed step: 1 s doubling with
// each consecutive failure up to maxRetryDelay, with up to 20% jitter so
// that many pods failing together do not retry in lockstep.
func (wk *worker) retryDelay() time.Duration {
	wk.mu.Lock()
	wk.failures++
	n := wk.failures
	wk.mu.Unlock()
	d := retryAfterError
	for i := 1; i < n && d < maxRetryDelay; i++ {
		d *= 2
	}
	return wait.Jitter(min(d, maxRetryDelay), 0.2)
}

// succeeded resets the retry backoff.
func (wk *worker) succeeded() {
	wk.mu.Lock()
	wk.failures = 0
	wk.mu.Unlock()
}
