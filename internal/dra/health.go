package dra

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/resourceclaim"
	"k8s.io/klog/v2"
	drahealth "k8s.io/kubelet/pkg/apis/dra-health/v1alpha1"

	"github.com/bosun-dev/bosun/internal/atomicfile"
)

// Device health (upstream's ResourceHealthStatus, on by default in v1.36):
// the agent keeps a NodeWatchResources stream open to each registered
// driver (retried every 5 s; a driver without the DRAResourceHealth service
// just never answers it), keeps what the drivers report in
// <root-dir>/dra_health_state (upstream's file and format), syncs the pods
// whose prepared devices changed health, and reports each container's
// claims with their devices' health in allocatedResourcesStatus. A report
// older than its timeout (30 s unless the driver says) reads Unknown.

// DefaultHealthTimeout is how long a device's reported health holds when
// the driver gives no timeout, as upstream.
const DefaultHealthTimeout = 30 * time.Second

// healthRetry is the pause before a health stream is opened again.
const healthRetry = 5 * time.Second

// Health values, as upstream's state package writes them.
const (
	healthy   = "Healthy"
	unhealthy = "Unhealthy"
	unknown   = "Unknown"
)

// deviceHealth is one device's last report (field names as upstream's
// dra_health_state has them).
type deviceHealth struct {
	PoolName           string
	DeviceName         string
	Health             string
	LastUpdated        time.Time
	HealthCheckTimeout time.Duration
	Message            string
}

type driverHealth struct {
	Devices map[string]deviceHealth // by "<pool>/<device>"
}

func (m *Manager) healthPath() string { return filepath.Join(m.cfg.RootDir, "dra_health_state") }

// loadHealth reads the health a previous agent kept; a file that does not
// parse is logged and ignored (health is reported again by the drivers).
func (m *Manager) loadHealth() {
	m.health = map[string]driverHealth{}
	raw, err := os.ReadFile(m.healthPath())
	if err != nil {
		return
	}
	if err := json.Unmarshal(raw, &m.health); err != nil {
		klog.Background().Error(err, "Ignoring an unreadable DRA health checkpoint", "path", m.healthPath())
		m.health = map[string]driverHealth{}
	}
}

// saveHealth writes the health checkpoint; callers hold healthMu.
func (m *Manager) saveHealth() {
	data, err := json.Marshal(m.health)
	if err == nil {
		err = atomicfile.Write(m.healthPath(), data, 0o600)
	}
	if err != nil {
		klog.Background().Error(err, "Failed to write the DRA health checkpoint", "path", m.healthPath())
	}
}

// OnHealthChange sets what is called with the pods whose prepared devices
// changed health.
func (m *Manager) OnHealthChange(f func([]types.UID)) {
	m.healthMu.Lock()
	m.wake = f
	m.healthMu.Unlock()
}

// watchHealth keeps a health stream open to one instance of a driver until
// ctx ends (the instance deregistered or registered anew).
func (m *Manager) watchHealth(ctx context.Context, self *driver, client drahealth.DRAResourceHealthClient) {
	name := self.name
	log := klog.FromContext(ctx).WithValues("driver", name)
	for {
		stream, err := client.NodeWatchResources(ctx, &drahealth.NodeWatchResourcesRequest{})
		if err == nil {
			err = m.followHealth(ctx, name, stream)
		}
		if m.onlyInstance(self) {
			m.clearHealth(name)
		}
		log.V(4).Info("DRA health stream ended", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(healthRetry):
		}
	}
}

// followHealth applies each report of a stream until it ends.
func (m *Manager) followHealth(ctx context.Context, name string, stream drahealth.DRAResourceHealth_NodeWatchResourcesClient) error {
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		changed := m.applyHealth(name, resp.GetDevices(), time.Now())
		if uids := m.podsUsing(name, changed); len(uids) > 0 {
			m.healthMu.Lock()
			wake := m.wake
			m.healthMu.Unlock()
			klog.FromContext(ctx).V(2).Info("DRA device health changed", "driver", name, "pods", uids)
			if wake != nil {
				wake(uids)
			}
		}
	}
}

// applyHealth records a driver's report as upstream's cache does: reported
// devices are updated (a change of health, message or timeout counts), and
// devices the report leaves out turn Unknown once their timeout has passed.
// It returns the keys ("<pool>/<device>") that changed.
func (m *Manager) applyHealth(name string, reported []*drahealth.DeviceHealth, now time.Time) []string {
	m.healthMu.Lock()
	defer m.healthMu.Unlock()
	dh, ok := m.health[name]
	if !ok || dh.Devices == nil {
		dh = driverHealth{Devices: map[string]deviceHealth{}}
		m.health[name] = dh
	}
	var changed []string
	seen := map[string]bool{}
	for _, r := range reported {
		d := deviceHealth{PoolName: r.GetDevice().GetPoolName(), DeviceName: r.GetDevice().GetDeviceName(),
			Health: unknown, LastUpdated: now, HealthCheckTimeout: DefaultHealthTimeout, Message: truncateHealthMessage(r.GetMessage())}
		switch r.GetHealth() {
		case drahealth.HealthStatus_HEALTHY:
			d.Health = healthy
		case drahealth.HealthStatus_UNHEALTHY:
			d.Health = unhealthy
		}
		if s := r.GetHealthCheckTimeoutSeconds(); s > 0 {
			d.HealthCheckTimeout = time.Duration(s) * time.Second
		}
		key := d.PoolName + "/" + d.DeviceName
		seen[key] = true
		if old, ok := dh.Devices[key]; !ok || old.Health != d.Health || old.Message != d.Message || old.HealthCheckTimeout != d.HealthCheckTimeout {
			changed = append(changed, key)
		}
		dh.Devices[key] = d
	}
	for key, d := range dh.Devices {
		if !seen[key] && d.Health != unknown && now.Sub(d.LastUpdated) > timeoutOf(d) {
			d.Health, d.Message, d.LastUpdated = unknown, "", now
			dh.Devices[key] = d
			changed = append(changed, key)
		}
	}
	if len(changed) > 0 {
		m.saveHealth()
	}
	return changed
}

func timeoutOf(d deviceHealth) time.Duration {
	if d.HealthCheckTimeout > 0 {
		return d.HealthCheckTimeout
	}
	return DefaultHealthTimeout
}

// onlyInstance says whether the driver has no registered instance besides
// self: another one (a rolling update's, or self's socket registered anew)
// keeps reporting the driver's health.
func (m *Manager) onlyInstance(self *driver) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range m.drivers[self.name] {
		if d != self {
			return false
		}
	}
	return true
}

// clearHealth forgets a driver's reports once its stream ended, as upstream.
func (m *Manager) clearHealth(name string) {
	m.healthMu.Lock()
	defer m.healthMu.Unlock()
	if _, ok := m.health[name]; ok {
		delete(m.health, name)
		m.saveHealth()
	}
}

// healthOf is a device's health now: its last report, or Unknown when there
// is none or it is older than its timeout.
func (m *Manager) healthOf(driver, pool, dev string, now time.Time) deviceHealth {
	m.healthMu.Lock()
	defer m.healthMu.Unlock()
	d, ok := m.health[driver].Devices[pool+"/"+dev]
	if !ok || now.Sub(d.LastUpdated) > timeoutOf(d) {
		return deviceHealth{PoolName: pool, DeviceName: dev, Health: unknown}
	}
	return d
}

// podsUsing lists the pods using a prepared device of the driver among keys.
func (m *Manager) podsUsing(name string, keys []string) []types.UID {
	if len(keys) == 0 {
		return nil
	}
	m.claimsMu.Lock()
	defer m.claimsMu.Unlock()
	set := map[types.UID]bool{}
	for _, st := range m.claims {
		for _, dv := range st.DriverState[name].Devices {
			if slices.Contains(keys, dv.PoolName+"/"+dv.DeviceName) {
				for uid := range st.PodUIDs {
					set[types.UID(uid)] = true
				}
			}
		}
	}
	out := make([]types.UID, 0, len(set))
	for uid := range set {
		out = append(out, uid)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// truncateHealthMessage keeps a message within the API's limit, as upstream.
func truncateHealthMessage(msg string) string {
	if len(msg) <= corev1.ResourceHealthMessageMaxLength {
		return msg
	}
	return msg[:corev1.ResourceHealthMessageMaxLength-3] + "..."
}

// UpdateAllocatedResourcesStatus sets, in each app container's status, an
// entry per claim the container names ("claim:<name>", or
// "claim:<name>/<request>"): each prepared device's health, its first CDI
// device ID as its ID (or driver/pool/device), as upstream's DRA manager
// reports them. Entries of device plugin resources are kept; a claim with
// no device to report has no entry.
func (m *Manager) UpdateAllocatedResourcesStatus(pod *corev1.Pod, st *corev1.PodStatus) {
	if m == nil {
		return
	}
	now := time.Now()
	for i := range st.ContainerStatuses {
		cs := &st.ContainerStatuses[i]
		var spec *corev1.Container
		for j := range pod.Spec.Containers {
			if pod.Spec.Containers[j].Name == cs.Name {
				spec = &pod.Spec.Containers[j]
			}
		}
		if spec == nil || len(spec.Resources.Claims) == 0 {
			continue
		}
		kept := cs.AllocatedResourcesStatus[:0:0]
		for _, rs := range cs.AllocatedResourcesStatus {
			if !slices.ContainsFunc(spec.Resources.Claims, func(c corev1.ResourceClaim) bool { return rs.Name == claimResourceName(c) }) {
				kept = append(kept, rs)
			}
		}
		for _, c := range spec.Resources.Claims {
			if rs := m.claimHealth(pod, c, now); len(rs.Resources) > 0 {
				kept = append(kept, rs)
			}
		}
		cs.AllocatedResourcesStatus = kept
		if len(kept) == 0 {
			cs.AllocatedResourcesStatus = nil
		}
	}
}

func claimResourceName(c corev1.ResourceClaim) corev1.ResourceName {
	if c.Request != "" {
		return corev1.ResourceName("claim:" + c.Name + "/" + c.Request)
	}
	return corev1.ResourceName("claim:" + c.Name)
}

// claimHealth is the status entry of one claim a container names.
func (m *Manager) claimHealth(pod *corev1.Pod, c corev1.ResourceClaim, now time.Time) corev1.ResourceStatus {
	rs := corev1.ResourceStatus{Name: claimResourceName(c), Resources: []corev1.ResourceHealth{}}
	actual := ""
	for _, s := range pod.Status.ResourceClaimStatuses {
		if s.Name == c.Name && s.ResourceClaimName != nil {
			actual = *s.ResourceClaimName
		}
	}
	if actual == "" {
		for i := range pod.Spec.ResourceClaims {
			if pod.Spec.ResourceClaims[i].Name == c.Name {
				if name, _, err := resourceclaim.Name(pod, &pod.Spec.ResourceClaims[i]); err == nil && name != nil {
					actual = *name
				}
			}
		}
	}
	if actual == "" {
		return rs
	}
	m.claimsMu.Lock()
	st := m.claims[pod.Namespace+"/"+actual]
	type dev struct {
		driver string
		device
	}
	var devs []dev
	if st != nil {
		for name, ds := range st.DriverState {
			for _, dv := range ds.Devices {
				devs = append(devs, dev{name, dv})
			}
		}
	}
	m.claimsMu.Unlock()
	sort.Slice(devs, func(i, j int) bool {
		return devs[i].driver+"/"+devs[i].PoolName+"/"+devs[i].DeviceName < devs[j].driver+"/"+devs[j].PoolName+"/"+devs[j].DeviceName
	})
	seen := map[corev1.ResourceID]bool{}
	for _, d := range devs {
		// A device of a subrequest names "<request>/<subrequest>".
		if c.Request != "" && len(d.RequestNames) > 0 && !slices.ContainsFunc(d.RequestNames, func(r string) bool {
			return resourceclaim.BaseRequestRef(r) == c.Request
		}) {
			continue
		}
		h := m.healthOf(d.driver, d.PoolName, d.DeviceName, now)
		rh := corev1.ResourceHealth{ResourceID: corev1.ResourceID(d.driver + "/" + d.PoolName + "/" + d.DeviceName), Health: corev1.ResourceHealthStatus(h.Health)}
		if len(d.CDIDeviceIDs) > 0 {
			rh.ResourceID = corev1.ResourceID(d.CDIDeviceIDs[0])
		}
		if h.Message != "" {
			msg := h.Message
			rh.Message = &msg
		}
		if !seen[rh.ResourceID] {
			seen[rh.ResourceID] = true
			rs.Resources = append(rs.Resources, rh)
		}
	}
	return rs
}
