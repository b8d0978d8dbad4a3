package podsync

import (
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"strconv"
)

// QOSClass is the pod's quality-of-service class, from its containers'
// cpu and memory requests and limits.
func QOSClass(pod *corev1.Pod) corev1.PodQOSClass {
	if pod.Status.QOSClass != "" {
		return pod.Status.QOSClass // the apiserver computed it at creation
	}
	any, guaranteed := false, true
	all := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range all {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[r]
			lim, hasLim := c.Resources.Limits[r]
			if (hasReq && !req.IsZero()) || (hasLim && !lim.IsZero()) {
				any = true
			}
			if !hasLim || lim.IsZero() || (hasReq && req.Cmp(lim) != 0) {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	default:
		return corev1.PodQOSBurstable
	}
}

// Upstream's OOM score adjustments by class.
const (
	guaranteedOOMScoreAdj = -997
	besteffortOOMScoreAdj = 1000
)

// containerResources maps requests and limits to CRI Linux resources: cpu
// shares from the request, a CFS quota from the limit, the memory limit, and
// the OOM score adjustment of the pod's class.
func containerResources(n NodeSettings, pod *corev1.Pod, c *corev1.Container, memCapacity int64) *runtimeapi.LinuxContainerResources {
	r := &runtimeapi.LinuxContainerResources{}
	cpuReq, cpuLim := c.Resources.Requests.Cpu().MilliValue(), c.Resources.Limits.Cpu().MilliValue()
	if cpuReq == 0 && cpuLim > 0 {
		cpuReq = cpuLim
	}
	r.CpuShares = max(cpuReq*1024/1000, 2)
	if cpuLim > 0 && n.CPUCFSQuota {
		period := n.CFSPeriodUS
		if period == 0 {
			period = 100000
		}
		r.CpuPeriod = period
		r.CpuQuota = max(cpuLim*period/1000, 1000)
	}
	if n.CPUs != nil {
		set, exclusive := n.CPUs(pod.UID, c.Name)
		r.CpusetCpus = set
		if exclusive && r.CpuPeriod > 0 {
			r.CpuQuota = -1
		}
	}
	if n.MemoryNodes != nil {
		r.CpusetMems = n.MemoryNodes(pod.UID, c.Name)
	}
	r.MemoryLimitInBytes = c.Resources.Limits.Memory().Value()
	switch QOSClass(pod) {
	case corev1.PodQOSGuaranteed:
		r.OomScoreAdj = guaranteedOOMScoreAdj
	case corev1.PodQOSBestEffort:
		r.OomScoreAdj = besteffortOOMScoreAdj
	default:
		adj := int64(1000)
		if memCapacity > 0 {
			adj = 1000 - (1000*c.Resources.Requests.Memory().Value())/memCapacity
		}
		r.OomScoreAdj = min(max(adj, 1000+guaranteedOOMScoreAdj), besteffortOOMScoreAdj-1)
	}
	if n.OOMGroup {
		r.Unified = map[string]string{"memory.oom.group": "1"}
	}
	configureSwap(n.Swap, pod, c, r, memCapacity)
	return r
}

// Swap is what the node's swap allows containers (memorySwap).
type Swap struct {
	// Controller: the kernel accounts swap per cgroup (memory.memsw.* on
	// cgroup v1, memory.swap.max on v2); without it nothing is set.
	Controller bool
	CgroupV2   bool
	Behavior   string // memorySwap.swapBehavior: "", NoSwap or LimitedSwap
	Bytes      int64  // the node's swap (SwapTotal)
}

// configureSwap limits the container's swap as upstream: none (NoSwap, the
// default) — on cgroup v1 by capping memory+swap at the memory limit — and
// with LimitedSwap on cgroup v2, a Burstable container that requests memory
// below its limit gets its request's share of the node's swap; critical
// pods never swap.
func configureSwap(sw Swap, pod *corev1.Pod, c *corev1.Container, r *runtimeapi.LinuxContainerResources, memCapacity int64) {
	if !sw.Controller {
		return
	}
	if !sw.CgroupV2 {
		r.MemorySwapLimitInBytes = r.MemoryLimitInBytes // 0 (no limit) leaves it unset
		return
	}
	limit := int64(0)
	req, lim := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
	if sw.Behavior == "LimitedSwap" && !CriticalPod(pod) && QOSClass(pod) == corev1.PodQOSBurstable &&
		(!req.IsZero() || !lim.IsZero()) && req.Cmp(*lim) != 0 && memCapacity > 0 && req.Value() <= memCapacity {
		limit = int64(float64(req.Value()) / float64(memCapacity) * float64(sw.Bytes))
	}
	if r.Unified == nil {
		r.Unified = map[string]string{}
	}
	r.Unified["memory.swap.max"] = strconv.FormatInt(limit, 10)
}

// CriticalPod is upstream's IsCriticalPod: static and mirror pods, and pods
// of system priority.
func CriticalPod(pod *corev1.Pod) bool {
	if src := pod.Annotations["kubernetes.io/config.source"]; src != "" && src != "api" {
		return true
	}
	if _, ok := pod.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return true
	}
	return pod.Spec.Priority != nil && *pod.Spec.Priority >= 2000000000
}
