package podsync

import (
	"errors"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"

	"github.com/bosun-dev/bosun/internal/cgroups"
)

// PodRequests is what the pod asks for as the scheduler counts it: the app
// containers' sum plus sidecars, or any one init container if larger, plus
// the overhead; pod-level requests (spec.resources) replace the sum for the
// resources they name.
func PodRequests(pod *corev1.Pod) corev1.ResourceList {
	return podAggregate(pod, func(r corev1.ResourceRequirements) corev1.ResourceList { return r.Requests }, true)
}

// PodLimits is the same aggregate of limits; the overhead counts only for a
// resource that has a limit.
func PodLimits(pod *corev1.Pod) corev1.ResourceList {
	return podAggregate(pod, func(r corev1.ResourceRequirements) corev1.ResourceList { return r.Limits }, false)
}

func podAggregate(pod *corev1.Pod, of func(corev1.ResourceRequirements) corev1.ResourceList, overheadAlways bool) corev1.ResourceList {
	sum := corev1.ResourceList{}
	add := func(into, more corev1.ResourceList) {
		for k, v := range more {
			cur := into[k]
			cur.Add(v)
			into[k] = cur
		}
	}
	for _, c := range pod.Spec.Containers {
		add(sum, of(c.Resources))
	}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			add(sum, of(c.Resources))
			continue
		}
		for k, v := range of(c.Resources) {
			if cur := sum[k]; v.Cmp(cur) > 0 {
				sum[k] = v.DeepCopy()
			}
		}
	}
	if pod.Spec.Resources != nil {
		for k, v := range of(*pod.Spec.Resources) {
			sum[k] = v.DeepCopy()
		}
	}
	for k, v := range pod.Spec.Overhead {
		if _, has := sum[k]; has || overheadAlways {
			cur := sum[k]
			cur.Add(v)
			sum[k] = cur
		}
	}
	return sum
}

// everyContainerLimits reports whether the pod bounds resource r: a
// pod-level limit, or a limit on every container.
func everyContainerLimits(pod *corev1.Pod, r corev1.ResourceName) bool {
	if pod.Spec.Resources != nil {
		if _, ok := pod.Spec.Resources.Limits[r]; ok {
			return true
		}
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if q, ok := c.Resources.Limits[r]; !ok || q.IsZero() {
				return false
			}
		}
	}
	return true
}

// PodCgroupLimits are the pod cgroup's settings, as upstream's cgroupfs
// driver sets them: cpu shares from the requests (2 for BestEffort), a CFS
// quota and a memory limit where every container (or the pod) has one, and
// podPidsLimit.
func PodCgroupLimits(n NodeSettings, pod *corev1.Pod) cgroups.Limits {
	l := cgroups.Limits{Pids: n.PodPidsLimit}
	if QOSClass(pod) == corev1.PodQOSBestEffort {
		l.CPUShares = 2
		return l
	}
	req, lim := PodRequests(pod), PodLimits(pod)
	l.CPUShares = uint64(max(req.Cpu().MilliValue()*1024/1000, 2))
	period := n.CFSPeriodUS
	if period == 0 {
		period = 100000
	}
	l.CPUPeriodUS = uint64(period)
	if n.CPUCFSQuota && everyContainerLimits(pod, corev1.ResourceCPU) && !hasExclusiveCPUs(n, pod) {
		l.CPUQuotaUS = max(lim.Cpu().MilliValue()*period/1000, 1000)
	}
	if everyContainerLimits(pod, corev1.ResourceMemory) {
		l.MemoryBytes = lim.Memory().Value()
	}
	return l
}

// hasExclusiveCPUs says whether a container of the pod has CPUs of its own
// (the CPU manager's static policy): its pod cgroup has no CFS quota then.
func hasExclusiveCPUs(n NodeSettings, pod *corev1.Pod) bool {
	if n.CPUs == nil {
		return false
	}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if _, exclusive := n.CPUs(pod.UID, c.Name); exclusive {
			return true
		}
	}
	return false
}

// qosCgroup is a class folder pod cgroups live in, with its settings.
type qosCgroup struct {
	name   string
	limits cgroups.Limits
}

// qosCgroups are the class folders under cgroupRoot.
func qosCgroups(n NodeSettings) []qosCgroup {
	root := n.cgroupRoot()
	return []qosCgroup{
		{path.Join(root, "kubepods"), n.PodsLimits},
		{path.Join(root, "kubepods", "burstable"), cgroups.Limits{}},
		{path.Join(root, "kubepods", "besteffort"), cgroups.Limits{CPUShares: 2}},
	}
}

// EnsureQOSCgroups makes the class cgroups with their limits (kubepods
// with the node allocatable's, when enforced). It says whether the agent
// manages them (cgroupsPerQOS with the cgroupfs driver).
func (s *Syncer) EnsureQOSCgroups() (bool, error) {
	if s.cfg.Cgroups == nil || !s.cfg.Node.CgroupsPerQOS || s.cfg.Node.CgroupDriver == "systemd" {
		return false, nil
	}
	for _, q := range qosCgroups(s.cfg.Node) {
		if err := s.cfg.Cgroups.Ensure(q.name, q.limits); err != nil {
			return true, err
		}
	}
	return true, nil
}

// ReservedLimits are the limits upstream sets on the system-reserved or
// kube-reserved cgroup (enforceNodeAllocatable): cpu shares from the
// reserved cpu and, unless only compressible resources are enforced, the
// reserved memory as its limit and the reserved pids as its pids limit.
func ReservedLimits(reserved map[string]string, compressibleOnly bool) (cgroups.Limits, error) {
	var l cgroups.Limits
	parse := func(name string) (resource.Quantity, bool, error) {
		v, ok := reserved[name]
		if !ok {
			return resource.Quantity{}, false, nil
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return q, false, fmt.Errorf("reserved %s %q: %w", name, v, err)
		}
		return q, true, nil
	}
	if q, ok, err := parse("cpu"); err != nil {
		return l, err
	} else if ok {
		l.CPUShares = uint64(max(q.MilliValue()*1024/1000, 2))
	}
	if compressibleOnly {
		return l, nil
	}
	if q, ok, err := parse("memory"); err != nil {
		return l, err
	} else if ok {
		l.MemoryBytes = q.Value()
	}
	if q, ok, err := parse("pid"); err != nil {
		return l, err
	} else if ok {
		l.Pids = q.Value()
	}
	return l, nil
}

// EnforceReserved sets the reserved limits on an existing cgroup (the
// system's or the node agent's, which the node's init system made).
func (s *Syncer) EnforceReserved(name string, reserved map[string]string, compressibleOnly bool) error {
	if s.cfg.Cgroups == nil {
		return errors.New("no cgroup manager")
	}
	l, err := ReservedLimits(reserved, compressibleOnly)
	if err != nil {
		return err
	}
	return s.cfg.Cgroups.Update(name, l)
}

// ensurePodCgroup makes the pod's cgroup with its limits before its sandbox.
func (s *Syncer) ensurePodCgroup(pod *corev1.Pod) error {
	if managed, err := s.EnsureQOSCgroups(); !managed || err != nil {
		return err
	}
	return s.cfg.Cgroups.Ensure(CgroupParent(s.cfg.Node, pod), PodCgroupLimits(s.cfg.Node, pod))
}

// removePodCgroup removes the pod's cgroup, whatever class it had.
func (s *Syncer) removePodCgroup(uid types.UID) error {
	if s.cfg.Cgroups == nil || uid == "" {
		return nil
	}
	for _, q := range qosCgroups(s.cfg.Node) {
		if err := s.cfg.Cgroups.Remove(q.name + "/pod" + string(uid)); err != nil {
			return err
		}
	}
	return nil
}

// orphanedCgroups removes pod cgroups of pods that are neither known nor
// have a sandbox: what pods removed while the agent was down left.
func (s *Syncer) orphanedCgroups(known func(uid string) bool, sandboxUIDs map[string]bool) []error {
	if s.cfg.Cgroups == nil {
		return nil
	}
	var errs []error
	for _, q := range qosCgroups(s.cfg.Node) {
		for _, child := range s.cfg.Cgroups.Children(q.name) {
			uid := strings.TrimPrefix(child, "pod")
			if known(uid) || sandboxUIDs[uid] {
				continue
			}
			if err := s.cfg.Cgroups.Remove(q.name + "/" + child); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}
