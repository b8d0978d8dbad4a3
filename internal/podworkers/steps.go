package podworkers

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
	"github.com/bosun-dev/bosun/internal/podsync"
)

const (
	retryAfterError = time.Second      // the first retry after a failed step
	maxRetryDelay   = 30 * time.Second // retries back off to this
)

// stepSync brings the runtime one step closer to the spec and reports status.
func (w *Workers) stepSync(wk *worker, pod *corev1.Pod, removed bool) time.Duration {
	logger := klog.FromContext(w.ctx)
	if removed || pod.DeletionTimestamp != nil {
		wk.setState(terminating)
		return 0
	}
	if left, ok := deadlineLeft(pod, w.cfg.Clock()); ok && left <= 0 {
		wk.mu.Lock()
		wk.end = podsync.End{Reason: "DeadlineExceeded", Message: "Pod was active on the node longer than the specified deadline"}
		wk.mu.Unlock()
		wk.setState(terminating)
		return 0
	}
	wk.mu.Lock()
	kills := wk.kills
	wk.kills = nil
	wk.mu.Unlock()
	for _, k := range kills {
		w.cfg.Syncer.KillContainer(wk.syncCtx, pod, k.id, k.grace, k.reason)
	}
	start := time.Now()
	wk.mu.Lock()
	op := "sync" // upstream's operation types: the first sync creates, a new version of the pod updates
	switch {
	case wk.syncedVersion == "":
		op = "create"
	case wk.syncedVersion != pod.ResourceVersion:
		op = "update"
	}
	wk.syncedVersion = pod.ResourceVersion
	if wk.syncedVersion == "" {
		wk.syncedVersion = "-" // a static pod has no resource version
	}
	wk.mu.Unlock()
	defer func() { bmetrics.PodWorkerDuration.WithLabelValues(op).Observe(time.Since(start).Seconds()) }()
	res, err := w.cfg.Syncer.Sync(wk.syncCtx, pod)
	if err != nil {
		if wk.syncCtx.Err() != nil && w.ctx.Err() == nil {
			return 0 // cancelled: the pod is to stop; the next step stops it
		}
		delay := wk.retryDelay()
		logger.Error(err, "Error syncing pod, will retry", "pod", klog.KObj(pod), "podUID", pod.UID, "after", delay.Round(time.Millisecond))
		return delay
	}
	wk.succeeded()
	status := w.cfg.Build(pod, res.Runtime, res.Waiting, false, podsync.End{})
	w.cfg.Status.SetPodStatus(pod, status)
	if status.Phase == corev1.PodSucceeded || status.Phase == corev1.PodFailed {
		wk.setState(terminating)
		return 0
	}
	next := w.cfg.Resync
	if res.Requeue > 0 && res.Requeue < next {
		next = res.Requeue
	}
	if left, ok := deadlineLeft(pod, w.cfg.Clock()); ok && left < next {
		next = left
	}
	return next
}

// deadlineLeft is the time until activeDeadlineSeconds runs out.
func deadlineLeft(pod *corev1.Pod, now time.Time) (time.Duration, bool) {
	if pod.Spec.ActiveDeadlineSeconds == nil || pod.Status.StartTime == nil {
		return 0, false
	}
	end := pod.Status.StartTime.Add(time.Duration(*pod.Spec.ActiveDeadlineSeconds) * time.Second)
	return end.Sub(now), true
}

// stepTerminate stops the pod's containers within its grace period.
func (w *Workers) stepTerminate(wk *worker, pod *corev1.Pod, removed bool) time.Duration {
	logger := klog.FromContext(w.ctx)
	rp, err := w.cfg.Syncer.Inspect(w.ctx, string(pod.UID))
	if err != nil {
		logger.Error(err, "Error inspecting pod to stop it, will retry", "pod", klog.KObj(pod))
		return wk.retryDelay()
	}
	if !removed && pod.DeletionTimestamp != nil {
		// Report unready at once, before the grace period runs out. (An
		// evicted pod is Failed only once its containers have stopped, as
		// upstream's status manager holds a terminal phase back until then.)
		w.cfg.Status.SetPodStatus(pod, w.cfg.Build(pod, rp, nil, false, podsync.End{}))
	}
	grace := podsync.GracePeriod(pod)
	if removed && !isStatic(pod) {
		grace = 0 // force-deleted from the apiserver: no graceful phase
	}
	wk.mu.Lock()
	if g := wk.end.Grace; g != nil && *g < grace {
		grace = *g // evicted: the eviction's grace period
	}
	killCtx, cancel := context.WithCancel(w.ctx)
	wk.killCtx, wk.cancelKill, wk.killGrace = killCtx, cancel, grace
	wk.mu.Unlock()
	err = w.cfg.Syncer.Kill(killCtx, pod, rp, grace)
	wk.mu.Lock()
	wk.killCtx, wk.cancelKill = nil, nil
	wk.mu.Unlock()
	cancelled := killCtx.Err() != nil
	cancel()
	if err != nil {
		if cancelled && w.ctx.Err() == nil {
			logger.V(2).Info("Stopping the pod again with a shorter grace period", "pod", klog.KObj(pod))
			return 0
		}
		logger.Error(err, "Error stopping pod, will retry", "pod", klog.KObj(pod))
		return wk.retryDelay()
	}
	if err := w.cfg.Syncer.UnprepareClaims(w.ctx, pod); err != nil {
		logger.Error(err, "Error releasing the pod's dynamic resources, will retry", "pod", klog.KObj(pod))
		return wk.retryDelay()
	}
	if rp, err = w.cfg.Syncer.Inspect(w.ctx, string(pod.UID)); err != nil {
		return retryAfterError
	}
	if !removed && pod.DeletionTimestamp == nil {
		// A deleted pod's final status goes with its deletion, once its
		// volumes are released (stepTerminated).
		wk.mu.Lock()
		end := wk.end
		wk.mu.Unlock()
		w.cfg.Status.SetPodStatus(pod, w.cfg.Build(pod, rp, nil, true, end))
	}
	logger.V(2).Info("Pod terminated", "pod", klog.KObj(pod))
	wk.setState(terminated)
	if w.cfg.Terminated != nil {
		w.cfg.Terminated(pod)
	}
	return 0
}

// stepTerminated waits for the pod object to go, then removes what is left.
func (w *Workers) stepTerminated(wk *worker, pod *corev1.Pod, removed bool) (time.Duration, bool) {
	if !removed {
		wk.mu.Lock()
		reclaimed, end := wk.reclaimed, wk.end
		wk.mu.Unlock()
		if !reclaimed {
			// As upstream: a finished pod keeps no volume mounted and no
			// cgroup, though its object stays (a Job's pods).
			if err := w.cfg.Syncer.Reclaim(w.ctx, pod); err != nil {
				klog.FromContext(w.ctx).Error(err, "Error releasing the volumes of a terminated pod, will retry", "pod", klog.KObj(pod))
				return wk.retryDelay(), false
			}
			wk.succeeded()
			wk.mu.Lock()
			wk.reclaimed = true
			wk.mu.Unlock()
		}
		if pod.DeletionTimestamp != nil {
			// Deleted: send the final status and delete the object.
			rp, err := w.cfg.Syncer.Inspect(w.ctx, string(pod.UID))
			if err != nil {
				return retryAfterError, false
			}
			w.cfg.Status.Finalize(pod, w.cfg.Build(pod, rp, nil, true, end))
		}
		return time.Hour, false
	}
	if err := w.cfg.Syncer.Remove(w.ctx, pod); err != nil {
		klog.FromContext(w.ctx).Error(err, "Error removing pod's containers, will retry", "pod", klog.KObj(pod))
		return wk.retryDelay(), false
	}
	klog.FromContext(w.ctx).V(2).Info("Removed the pod's containers and sandboxes", "pod", klog.KObj(pod))
	return 0, true
}

// isStatic: a static pod removed from its file still gets its grace period.
func isStatic(pod *corev1.Pod) bool {
	src := pod.Annotations["kubernetes.io/config.source"]
	return src == "file" || src == "http"
}
