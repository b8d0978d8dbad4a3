package podsync

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// resizeRunning applies changed requests and limits to the pod's running
// containers in place (in-place pod resize): a container whose resizePolicy
// says RestartContainer for a changed resource is restarted with them; the
// others get their cgroups updated through the runtime, inside a pod cgroup
// loosened first and set to the new pod limits last, so that neither a
// growing container nor a shrinking pod is ever squeezed by the other. It
// says whether it set or stopped anything.
func (s *Syncer) resizeRunning(ctx context.Context, pod *corev1.Pod, rp *RuntimePod, sandboxID string) (bool, error) {
	var updates []resizeUpdate
	var restarts []resizeUpdate
	var oldMemory int64
	memoryKnown := true
	for _, c := range resizableSpecs(pod) {
		st := rp.Latest(c.Name)
		if st == nil || st.SandboxID != sandboxID || st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			memoryKnown = false
			continue
		}
		cur := st.GetResources().GetLinux()
		if cur == nil || cur.GetCpuShares() == 0 { // a runtime that does not report them (shares are 2 at least)
			memoryKnown = false
			continue
		}
		oldMemory += cur.GetMemoryLimitInBytes()
		if cur.GetMemoryLimitInBytes() == 0 {
			memoryKnown = false
		}
		want := containerResources(s.cfg.Node, pod, c, s.cfg.MemCapacity)
		cpuChanged, memChanged := resourcesDiffer(cur, want)
		if !cpuChanged && !memChanged {
			continue
		}
		u := resizeUpdate{id: st.Id, name: c.Name, want: want, cur: cur}
		if (cpuChanged && restartOnResize(c, corev1.ResourceCPU)) || (memChanged && restartOnResize(c, corev1.ResourceMemory)) {
			restarts = append(restarts, u)
		} else {
			updates = append(updates, u)
		}
	}
	if len(updates)+len(restarts) == 0 {
		return false, nil
	}
	logger := klog.FromContext(ctx)
	podCgroup := s.cfg.Cgroups != nil && s.cfg.Node.CgroupsPerQOS && s.cfg.Node.CgroupDriver != "systemd"
	final := PodCgroupLimits(s.cfg.Node, pod)
	podLimitDecreasing := podCgroup && final.MemoryBytes > 0 && (!memoryKnown || final.MemoryBytes < oldMemory)
	if err := s.checkMemoryDecrease(ctx, pod, rp, updates, podLimitDecreasing, final.MemoryBytes); err != nil {
		// As upstream: nothing of the resize is applied, and it stays in
		// progress with the error until the usage allows it.
		if s.cfg.ResizeFailed != nil {
			s.cfg.ResizeFailed(pod, err.Error())
		}
		return false, err
	}
	if podCgroup {
		loose := final
		if loose.CPUPeriodUS > 0 {
			loose.CPUQuotaUS = -1 // no quota while the containers move
		}
		if loose.MemoryBytes > 0 && memoryKnown {
			loose.MemoryBytes = max(loose.MemoryBytes, oldMemory)
		} else if loose.MemoryBytes > 0 {
			loose.MemoryBytes = 0 // left as it is until the end
		}
		if err := s.cfg.Cgroups.Ensure(CgroupParent(s.cfg.Node, pod), loose); err != nil {
			return true, fmt.Errorf("resize: loosening the pod cgroup: %w", err)
		}
	}
	var firstErr error
	for _, u := range updates {
		if err := s.cfg.Runtime.UpdateContainerResources(ctx, u.id, &runtimeapi.ContainerResources{Linux: u.want}); err != nil {
			if s.cfg.ResizeFailed != nil {
				s.cfg.ResizeFailed(pod, fmt.Sprintf("failed to resize container %q: %v", u.name, err))
			}
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		logger.V(2).Info("Resized container in place", "pod", klog.KObj(pod), "container", u.name,
			"cpuShares", u.want.CpuShares, "cpuQuota", u.want.CpuQuota, "memoryLimit", u.want.MemoryLimitInBytes)
	}
	for _, u := range restarts {
		logger.V(2).Info("Restarting container to resize it, as its resizePolicy asks", "pod", klog.KObj(pod), "container", u.name)
		if err := s.stopWithPreStop(ctx, pod, u.name, u.id, gracePeriod(pod)); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if podCgroup {
		if err := s.cfg.Cgroups.Ensure(CgroupParent(s.cfg.Node, pod), final); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("resize: setting the pod cgroup: %w", err)
		}
	}
	return true, firstErr
}

// resizeUpdate is a running container's new resources.
type resizeUpdate struct {
	id, name  string
	want, cur *runtimeapi.LinuxContainerResources
}

// checkMemoryDecrease refuses to set a memory limit at or below what the
// container (or the pod, podLimit) uses now, as upstream does before a
// resize: the kernel would have to reclaim or kill to honour it.
func (s *Syncer) checkMemoryDecrease(ctx context.Context, pod *corev1.Pod, rp *RuntimePod, updates []resizeUpdate, podDecreasing bool, podLimit int64) error {
	var errs []error
	if podDecreasing {
		usage, err := s.cfg.Cgroups.MemoryUsage(CgroupParent(s.cfg.Node, pod))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("missing pod memory usage"))
		case usage >= podLimit:
			errs = append(errs, fmt.Errorf("attempting to set pod memory limit (%d) below current usage (%d)", podLimit, usage))
		}
	}
	for _, u := range updates {
		want, cur := u.want.GetMemoryLimitInBytes(), u.cur.GetMemoryLimitInBytes()
		if want == 0 || (cur != 0 && want >= cur) {
			continue // no limit, or not decreasing
		}
		st, err := s.cfg.Runtime.ContainerStats(ctx, u.id)
		if err != nil || st.GetMemory().GetUsageBytes() == nil {
			errs = append(errs, fmt.Errorf("missing container %q memory usage", u.name))
			continue
		}
		if usage := int64(st.GetMemory().GetUsageBytes().GetValue()); usage >= want {
			errs = append(errs, fmt.Errorf("attempting to set container %q memory limit (%d) below current usage (%d)", u.name, want, usage))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cannot decrease memory limits: %w", utilerrors.NewAggregate(errs))
	}
	return nil
}

// resourcesDiffer compares the resources the runtime reports for a running
// container with the ones it should have.
func resourcesDiffer(cur, want *runtimeapi.LinuxContainerResources) (cpu, memory bool) {
	cpu = cur.GetCpuShares() != want.CpuShares || cur.GetCpuQuota() != want.CpuQuota && (cur.GetCpuQuota() > 0 || want.CpuQuota > 0)
	return cpu, cur.GetMemoryLimitInBytes() != want.MemoryLimitInBytes
}

// ResizeInProgress reports whether a running container of the pod (in its
// current sandbox) still runs with other cpu or memory settings than the
// pod's spec gives it, as the runtime reports them. Containers that do not
// run, or whose runtime reports no resources, do not count: they get the
// spec's when they start.
func (s *Syncer) ResizeInProgress(pod *corev1.Pod, rp *RuntimePod) bool {
	sb := rp.LatestSandbox()
	if sb == nil {
		return false
	}
	for _, c := range resizableSpecs(pod) {
		st := rp.Latest(c.Name)
		if st == nil || st.SandboxID != sb.Id || st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		cur := st.GetResources().GetLinux()
		if cur == nil || cur.GetCpuShares() == 0 {
			continue
		}
		if cpu, mem := resourcesDiffer(cur, containerResources(s.cfg.Node, pod, c, s.cfg.MemCapacity)); cpu || mem {
			return true
		}
	}
	return false
}

// resizableSpecs are the containers an in-place resize reaches while they
// run: init containers (sidecars, and regular ones while they run, as
// upstream's InPlacePodVerticalScalingInitContainers), then app containers.
func resizableSpecs(pod *corev1.Pod) []*corev1.Container {
	var out []*corev1.Container
	for i := range pod.Spec.InitContainers {
		out = append(out, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

// restartOnResize tells whether the container's resizePolicy asks for a
// restart when resource changes.
func restartOnResize(c *corev1.Container, resource corev1.ResourceName) bool {
	for _, p := range c.ResizePolicy {
		if p.ResourceName == resource {
			return p.RestartPolicy == corev1.RestartContainer
		}
	}
	return false
}
