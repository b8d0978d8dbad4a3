package eviction

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/klog/v2"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Local ephemeral storage limits are enforced as upstream's eviction
// manager does, whatever the node's pressure: an emptyDir over its
// sizeLimit, a pod over the sum of its containers' ephemeral-storage limits
// (writable layers, logs and disk-backed emptyDirs), a container over its
// own (writable layer and logs). Each such pod is evicted once, with
// upstream's message.

// Violation says why pod must go, or "" when it stays within its limits.
func Violation(pod *corev1.Pod, stats *statsapi.PodStats, emptyDirs map[string]int64) string {
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir == nil || v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.Sign() <= 0 {
			continue
		}
		if used, ok := emptyDirs[v.Name]; ok && used > v.EmptyDir.SizeLimit.Value() {
			return fmt.Sprintf("Usage of EmptyDir volume %q exceeds the limit %q. ", v.Name, v.EmptyDir.SizeLimit.String())
		}
	}
	containerUse := map[string]int64{}
	var total int64
	if stats != nil {
		for _, c := range stats.Containers {
			use := diskUse(c)
			containerUse[c.Name] += use
			total += use
		}
	}
	for _, used := range emptyDirs {
		total += used
	}
	if limit, ok := resourcehelper.PodLimits(pod, resourcehelper.PodResourcesOptions{})[corev1.ResourceEphemeralStorage]; ok {
		if resource.NewQuantity(total, resource.BinarySI).Cmp(limit) > 0 {
			return fmt.Sprintf("Pod ephemeral local storage usage exceeds the total limit of containers %s. ", limit.String())
		}
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			limit, ok := c.Resources.Limits[corev1.ResourceEphemeralStorage]
			if !ok {
				continue
			}
			if resource.NewQuantity(containerUse[c.Name], resource.BinarySI).Cmp(limit) > 0 {
				return fmt.Sprintf("Container %s exceeded its local ephemeral storage limit %q. ", c.Name, limit.String())
			}
		}
	}
	return ""
}

// checkLocalStorage evicts the running pods over their local storage limits
// and says how many it evicted.
func (m *Manager) checkLocalStorage(ctx context.Context, podStats func() map[string]*statsapi.PodStats) int {
	var limited []*corev1.Pod
	for _, p := range m.cfg.Pods() {
		if limitsLocalStorage(p) && !critical(p) {
			limited = append(limited, p)
		}
	}
	if len(limited) == 0 {
		return 0
	}
	stats := podStats()
	evicted := 0
	for _, p := range limited {
		var emptyDirs map[string]int64
		if m.cfg.EmptyDirUsage != nil {
			emptyDirs = m.cfg.EmptyDirUsage(p)
		}
		if msg := Violation(p, stats[string(p.UID)], emptyDirs); msg != "" {
			klog.FromContext(ctx).Info("Evicting pod over its local storage limit", "pod", klog.KObj(p), "message", msg)
			m.podEvent(p, nil, msg)
			m.cfg.Evict(p.UID, Eviction{Message: msg, Grace: 1})
			evicted++
		}
	}
	return evicted
}

// limitsLocalStorage tells whether a pod has any local storage limit.
func limitsLocalStorage(pod *corev1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil && v.EmptyDir.SizeLimit != nil && v.EmptyDir.SizeLimit.Sign() > 0 {
			return true
		}
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if _, ok := c.Resources.Limits[corev1.ResourceEphemeralStorage]; ok {
				return true
			}
		}
	}
	return false
}

// diskUse is the disk a container takes on the node: its writable layer
// and its logs.
func diskUse(c statsapi.ContainerStats) int64 {
	var use int64
	if c.Rootfs != nil && c.Rootfs.UsedBytes != nil {
		use += int64(*c.Rootfs.UsedBytes)
	}
	if c.Logs != nil && c.Logs.UsedBytes != nil {
		use += int64(*c.Logs.UsedBytes)
	}
	return use
}
