package eviction

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	resourcehelper "k8s.io/component-helpers/resource"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/bosun-dev/bosun/internal/podsync"
)

// critical pods are never evicted nor refused for pressure: static and
// mirror pods, and pods of system priority (as upstream's IsCriticalPod).
func critical(pod *corev1.Pod) bool { return podsync.CriticalPod(pod) }

func qosOf(pod *corev1.Pod) corev1.PodQOSClass { return podsync.QOSClass(pod) }

// rank orders the pods that may be evicted for res, first to go first, as
// upstream: memory and disk by whether the pod uses more than it requests,
// then by priority (lowest first), then by usage above the request
// (largest first); process IDs by priority, then by processes. A pod
// without statistics goes before those with.
func rank(pods []*corev1.Pod, stats map[string]*statsapi.PodStats, emptyDirs func(*corev1.Pod) map[string]int64, res corev1.ResourceName) []*corev1.Pod {
	type cand struct {
		pod      *corev1.Pod
		hasStats bool
		over     bool  // usage above the request
		excess   int64 // usage less the request
		priority int32
	}
	var cands []cand
	for _, p := range pods {
		if critical(p) {
			continue
		}
		c := cand{pod: p}
		if p.Spec.Priority != nil {
			c.priority = *p.Spec.Priority
		}
		if st := stats[string(p.UID)]; st != nil {
			use, ok := usage(p, st, emptyDirs, res)
			c.hasStats = ok
			var req int64
			if res == corev1.ResourceMemory || res == corev1.ResourceEphemeralStorage {
				q := resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{})[res]
				req = q.Value()
			}
			c.over, c.excess = use > req, use-req
		}
		cands = append(cands, c)
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.hasStats != b.hasStats {
			return !a.hasStats
		}
		if res != resourcePIDs && a.over != b.over {
			return a.over
		}
		if a.priority != b.priority {
			return a.priority < b.priority
		}
		return a.excess > b.excess
	})
	out := make([]*corev1.Pod, len(cands))
	for i, c := range cands {
		out[i] = c.pod
	}
	return out
}

// usage is the pod's use of res from its statistics: the memory working
// set; the disk its containers' writable layers, logs and disk-backed
// emptyDirs take; their inodes; its processes.
func usage(pod *corev1.Pod, st *statsapi.PodStats, emptyDirs func(*corev1.Pod) map[string]int64, res corev1.ResourceName) (int64, bool) {
	switch res {
	case corev1.ResourceMemory:
		if st.Memory == nil || st.Memory.WorkingSetBytes == nil {
			return 0, false
		}
		return int64(*st.Memory.WorkingSetBytes), true
	case corev1.ResourceEphemeralStorage:
		var total int64
		for _, c := range st.Containers {
			total += diskUse(c)
		}
		if emptyDirs != nil {
			for _, used := range emptyDirs(pod) {
				total += used
			}
		}
		return total, true
	case resourceInodes:
		var total int64
		for _, c := range st.Containers {
			if c.Rootfs != nil && c.Rootfs.InodesUsed != nil {
				total += int64(*c.Rootfs.InodesUsed)
			}
		}
		return total, true
	case resourcePIDs:
		if st.ProcessStats == nil || st.ProcessStats.ProcessCount == nil {
			return 0, false
		}
		return int64(*st.ProcessStats.ProcessCount), true
	}
	return 0, false
}
