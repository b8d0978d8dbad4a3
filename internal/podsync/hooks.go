package podsync

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bosun-dev/bosun/internal/probes"
)

// minStopGrace is the least time a container gets to stop after its preStop
// hook used up the grace period, as upstream gives it.
const minStopGrace = 2

// runHook runs a postStart or preStop handler (exec, httpGet, sleep) within
// timeout and returns a message when it failed.
func (s *Syncer) runHook(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id string, h *corev1.LifecycleHandler, timeout time.Duration) string {
	if h.Sleep != nil {
		select {
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		case <-time.After(timeout):
		case <-ctx.Done():
		}
		return ""
	}
	ph := corev1.ProbeHandler{Exec: h.Exec, HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket}
	ip := ""
	if len(pod.Status.PodIPs) > 0 {
		ip = pod.Status.PodIPs[0].IP
	}
	if sb, err := s.podIP(ctx, pod); err == nil && sb != "" {
		ip = sb
	}
	res, out, err := probes.Run(ctx, s.cfg.Runtime, ph, probes.Target{Pod: pod, Container: c, ContainerID: id, PodIP: ip}, timeout)
	switch {
	case err != nil:
		return err.Error()
	case res != probes.Success && res != probes.Warning:
		return out
	}
	return ""
}

// podIP asks the runtime for the pod's current IP.
func (s *Syncer) podIP(ctx context.Context, pod *corev1.Pod) (string, error) {
	list, err := s.cfg.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{labelPodUID: string(pod.UID)},
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
	if err != nil || len(list) == 0 {
		return "", err
	}
	st, err := s.cfg.Runtime.PodSandboxStatus(ctx, list[0].Id, false)
	if err != nil {
		return "", err
	}
	return st.GetStatus().GetNetwork().GetIp(), nil
}

// postStart runs the container's postStart hook; when it fails the
// container is stopped, as upstream does, and restarts per its policy.
func (s *Syncer) postStart(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id string) {
	if c.Lifecycle == nil || c.Lifecycle.PostStart == nil {
		return
	}
	if msg := s.runHook(ctx, pod, c, id, c.Lifecycle.PostStart, time.Duration(gracePeriod(pod))*time.Second); msg != "" {
		s.event(pod, corev1.EventTypeWarning, "FailedPostStartHook", fmt.Sprintf("PostStartHook failed: %s", msg))
		s.event(pod, corev1.EventTypeNormal, "Killing", fmt.Sprintf("FailedPostStartHook: container %s will be restarted", c.Name))
		_ = s.cfg.Runtime.StopContainer(ctx, id, minStopGrace)
	}
}

// stopWithPreStop runs the preStop hook within the grace period, then stops
// the container with what is left of it (at least minStopGrace seconds).
func (s *Syncer) stopWithPreStop(ctx context.Context, pod *corev1.Pod, name, id string, grace int64) error {
	c := findContainer(pod, name)
	if c != nil && c.Lifecycle != nil && c.Lifecycle.PreStop != nil && grace > 0 {
		start := time.Now()
		if msg := s.runHook(ctx, pod, c, id, c.Lifecycle.PreStop, time.Duration(grace)*time.Second); msg != "" {
			s.event(pod, corev1.EventTypeWarning, "FailedPreStopHook", fmt.Sprintf("PreStopHook failed: %s", msg))
		}
		grace = max(grace-int64(time.Since(start).Seconds()), minStopGrace)
	}
	return s.cfg.Runtime.StopContainer(ctx, id, grace)
}

// KillContainer stops one container (a failed liveness or startup probe),
// with its preStop hook, and says why.
func (s *Syncer) KillContainer(ctx context.Context, pod *corev1.Pod, id string, grace int64, reason string) {
	name := ""
	if st, err := s.cfg.Runtime.ContainerStatus(ctx, id, false); err == nil {
		name = st.GetStatus().GetMetadata().GetName()
	}
	s.event(pod, corev1.EventTypeNormal, "Killing", reason)
	_ = s.stopWithPreStop(ctx, pod, name, id, grace)
}
