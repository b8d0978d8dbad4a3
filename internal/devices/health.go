package devices

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// The health of the devices a pod holds goes into its containers' statuses
// (allocatedResourcesStatus, upstream's ResourceHealthStatus, on by default
// in v1.36), and a pod is synced again when the health of one of its
// devices changes.

// OnHealthChange sets what is called with the pods whose devices changed
// health (or came back after their plugin reported them gone).
func (m *Manager) OnHealthChange(f func([]types.UID)) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.healthChanged = f
	m.mu.Unlock()
}

// podsWithChangedHealth lists the pods holding a device of res whose health
// differs between before and after, or that after has and before lacked.
// Callers hold m.mu.
func (m *Manager) podsWithChangedHealth(res string, before, after map[string]*pluginapi.Device) []types.UID {
	changed := map[string]bool{}
	for id, d := range after {
		if old, ok := before[id]; !ok || old.Health != d.Health {
			changed[id] = true
		}
	}
	var out []types.UID
	for uid, byContainer := range m.alloc {
		hit := false
		for _, byRes := range byContainer {
			if a := byRes[res]; a != nil {
				for _, id := range flatten(a.ids) {
					hit = hit || changed[id]
				}
			}
		}
		if hit {
			out = append(out, uid)
		}
	}
	return out
}

// notifyHealth calls the health callback, if any, without m.mu held.
func (m *Manager) notifyHealth(uids []types.UID) {
	if len(uids) == 0 {
		return
	}
	m.mu.Lock()
	f := m.healthChanged
	m.mu.Unlock()
	if f != nil {
		f(uids)
	}
}

// UpdateAllocatedResourcesStatus sets, in each app container's status, one
// entry per device plugin resource the container holds: each device's ID
// and health, as upstream's device manager reports them: Unhealthy when the
// plugin says so (or went away, which marks its devices unhealthy), Healthy
// otherwise, also for a device whose resource was since removed. Entries of
// other names (DRA claims) are kept.
func (m *Manager) UpdateAllocatedResourcesStatus(pod *corev1.Pod, st *corev1.PodStatus) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range st.ContainerStatuses {
		cs := &st.ContainerStatuses[i]
		byRes := m.alloc[pod.UID][cs.Name]
		names := make([]string, 0, len(byRes))
		for name := range byRes {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			rs := corev1.ResourceStatus{Name: corev1.ResourceName(name), Resources: []corev1.ResourceHealth{}}
			for _, id := range flatten(byRes[name].ids) {
				health := corev1.ResourceHealthStatusHealthy
				if r := m.resources[name]; r != nil {
					if d := r.devices[id]; d != nil && d.Health != pluginapi.Healthy {
						health = corev1.ResourceHealthStatusUnhealthy
					}
				}
				rs.Resources = append(rs.Resources, corev1.ResourceHealth{ResourceID: corev1.ResourceID(id), Health: health})
			}
			setResourceStatus(cs, rs)
		}
	}
}

// setResourceStatus replaces the container's entry of rs's name, or adds it.
func setResourceStatus(cs *corev1.ContainerStatus, rs corev1.ResourceStatus) {
	for j := range cs.AllocatedResourcesStatus {
		if cs.AllocatedResourcesStatus[j].Name == rs.Name {
			cs.AllocatedResourcesStatus[j] = rs
			return
		}
	}
	cs.AllocatedResourcesStatus = append(cs.AllocatedResourcesStatus, rs)
}
