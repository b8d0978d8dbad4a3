package probes

import (
	"os"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/bosun-dev/bosun/internal/atomicfile"
)

// A restarted agent (or one swapped in for the upstream kubelet) finds
// containers that were Ready a moment ago. Reporting them unready until
// their probes run again would pull every pod out of its Services for a
// probe period (upstream issue 100277). So the manager starts from prior
// results, used only until the first fresh result of the same container:
//   - the checkpoint it keeps in the root dir (settled startup and readiness
//     results per container ID), and
//   - failing that, what the pod's status in the apiserver last said about
//     the same container ID (ready, started), which covers a swap from the
//     upstream kubelet.
//
// A prior result is keyed by container ID, so a container that died or was
// replaced while no agent ran has no prior and goes unready at once.

// checkpointVersion is the version of the checkpoint file's format. A file
// of another version is ignored with a warning.
const checkpointVersion = 1

// priorTTL bounds how long prior results are kept: long enough for every
// pod to come back after a restart (or an apiserver outage), short enough
// that results of containers that never came back do not linger.
const priorTTL = 15 * time.Minute

type checkpointFile struct {
	Version int               `json:"version"`
	Results []checkpointEntry `json:"results"`
}

type checkpointEntry struct {
	ContainerID string `json:"containerID"`
	Kind        Kind   `json:"kind"`
	Result      string `json:"result"` // "Success" or "Failure"
}

// LoadCheckpoint reads prior results from path. A missing file is no prior;
// a corrupt or foreign one is ignored with a warning, never an error.
func (m *Manager) LoadCheckpoint(path string) {
	m.mu.Lock()
	m.checkpoint = path
	m.mu.Unlock()
	logger := klog.FromContext(m.ctx)
	var f checkpointFile
	found, err := atomicfile.ReadJSON(path, &f)
	if !found {
		return
	}
	if err != nil {
		logger.Info("Warning: ignoring a corrupt or unreadable probe checkpoint", "path", path, "err", err)
		return
	}
	if f.Version != checkpointVersion {
		logger.Info("Warning: ignoring a probe checkpoint of another version", "path", path, "version", f.Version, "want", checkpointVersion)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if st, err := os.Stat(path); err == nil {
		m.checkpointAt = st.ModTime()
	}
	for _, e := range f.Results {
		if e.ContainerID == "" || (e.Kind != Startup && e.Kind != Readiness) {
			continue
		}
		r := Failure
		if e.Result == "Success" {
			r = Success
		}
		m.prior[resultKey{e.ContainerID, e.Kind}] = r
	}
	logger.V(2).Info("Loaded prior probe results", "path", path, "count", len(f.Results))
}

// SeedFromStatus takes prior results from the pod's status as the
// apiserver last had it, the first time the manager sees the pod. A fresh
// result wins; so does the checkpoint, unless the apiserver's status is
// newer: the pod became Ready after the checkpoint was last written, so
// another agent ran it since (a swap from the upstream kubelet and back)
// and saw its containers ready. A status that is not
// the apiserver's (final false: a static pod's status from this agent's own
// checkpoint, before its mirror pod can be read) seeds too, but leaves the
// pod open to the mirror's status: another agent may have run the pod since
// and seen its containers become ready.
func (m *Manager) SeedFromStatus(pod *corev1.Pod, final bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seeded[pod.UID] {
		return
	}
	all := append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	if len(all) == 0 {
		// No status to seed from yet (a static pod whose mirror pod cannot
		// be read yet): seed from the first one that has containers.
		return
	}
	m.seeded[pod.UID] = final
	newer := final && readySince(pod, m.checkpointAt)
	for _, cs := range all {
		id := bareID(cs.ContainerID)
		if id == "" || cs.State.Running == nil {
			continue
		}
		if cs.Started != nil && *cs.Started {
			m.seedLocked(resultKey{id, Startup}, Success, newer)
		}
		if cs.Ready {
			m.seedLocked(resultKey{id, Readiness}, Success, newer)
		}
	}
}

// readySince: the pod's Ready condition turned true after t (t set).
func readySince(pod *corev1.Pod, t time.Time) bool {
	if t.IsZero() {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && c.LastTransitionTime.After(t)
		}
	}
	return false
}

// seedLocked sets a prior result unless a fresh one is known or a worker
// already probes; a prior result already there (the checkpoint's) is kept
// unless override.
func (m *Manager) seedLocked(key resultKey, r Result, override bool) {
	if _, ok := m.results[key]; ok {
		return
	}
	if _, ok := m.workers[key]; ok && !override {
		return
	}
	if _, ok := m.prior[key]; !ok || override {
		m.prior[key] = r
	}
}

// bareID strips the runtime's scheme: "containerd://abc" -> "abc".
func bareID(id string) string {
	if i := strings.Index(id, "://"); i >= 0 {
		return id[i+3:]
	}
	return id
}

// resultLocked is the settled result of key, else its prior result.
func (m *Manager) resultLocked(key resultKey) (Result, bool) {
	if r, ok := m.results[key]; ok {
		return r, true
	}
	r, ok := m.prior[key]
	return r, ok
}

// markDirty asks for the checkpoint to be written.
func (m *Manager) markDirty() {
	select {
	case m.dirty <- struct{}{}:
	default:
	}
}

// RunCheckpoint writes the checkpoint after changes, at most once per
// interval, until the manager's context ends.
func (m *Manager) RunCheckpoint(interval time.Duration) {
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.dirty:
		}
		if err := m.WriteCheckpoint(); err != nil {
			klog.FromContext(m.ctx).Error(err, "Failed to write the probe checkpoint")
		}
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// WriteCheckpoint writes the settled startup and readiness results (and the
// prior ones not yet replaced) atomically: a temporary file, synced, then
// renamed over the old one, so a crash leaves the old file or the new one.
func (m *Manager) WriteCheckpoint() error {
	m.mu.Lock()
	if time.Since(m.born) > priorTTL {
		m.prior = map[resultKey]Result{}
	}
	path := m.checkpoint
	f := checkpointFile{Version: checkpointVersion}
	add := func(key resultKey, r Result) {
		if key.kind == Liveness {
			return
		}
		res := "Failure"
		if r == Success {
			res = "Success"
		}
		f.Results = append(f.Results, checkpointEntry{ContainerID: key.containerID, Kind: key.kind, Result: res})
	}
	for key, r := range m.results {
		add(key, r)
	}
	for key, r := range m.prior {
		if _, ok := m.results[key]; !ok {
			add(key, r)
		}
	}
	m.mu.Unlock()
	if path == "" {
		return nil
	}
	sort.Slice(f.Results, func(i, j int) bool {
		a, b := f.Results[i], f.Results[j]
		return a.ContainerID < b.ContainerID || (a.ContainerID == b.ContainerID && a.Kind < b.Kind)
	})
	return atomicfile.WriteJSON(path, f)
}
