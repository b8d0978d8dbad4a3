package status

import (
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/bosun-dev/bosun/internal/atomicfile"
)

// A static pod's status lives in its mirror pod, which a restarted agent
// cannot read before the apiserver answers (or at all, during an outage).
// So the manager also keeps the last status of each static pod in the root
// dir; the new status builds on it (start time, transition times) as an API
// pod's builds on the status the apiserver holds.

const staticCheckpointVersion = 1

type staticCheckpoint struct {
	Version int                             `json:"version"`
	Pods    map[types.UID]*corev1.PodStatus `json:"pods"`
}

func isStatic(pod *corev1.Pod) bool {
	src := pod.Annotations["kubernetes.io/config.source"]
	return src == "file" || src == "http"
}

// LoadStaticCheckpoint reads the static pods' last statuses from path and
// keeps path for writing. A missing file is nothing; a corrupt one or one
// of another version is ignored with a warning.
func (m *Manager) LoadStaticCheckpoint(logger klog.Logger, path string) {
	m.mu.Lock()
	m.checkpoint = path
	m.mu.Unlock()
	var cp staticCheckpoint
	found, err := atomicfile.ReadJSON(path, &cp)
	if !found {
		return
	}
	if err == nil && cp.Version != staticCheckpointVersion {
		err = errors.New("unknown version")
	}
	if err != nil {
		logger.Info("Warning: ignoring the static pod status checkpoint", "path", path, "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for uid, st := range cp.Pods {
		if st != nil {
			m.static[uid] = st
		}
	}
}

// LastStaticStatus is the last status recorded for a static pod.
func (m *Manager) LastStaticStatus(uid types.UID) (corev1.PodStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.static[uid]
	if !ok {
		return corev1.PodStatus{}, false
	}
	return *st.DeepCopy(), true
}

// runCheckpoint writes the checkpoint after changes, at most once a second.
func (m *Manager) runCheckpoint(done <-chan struct{}, logger klog.Logger) {
	for {
		select {
		case <-done:
			return
		case <-m.staticDirty:
		}
		if err := m.writeStaticCheckpoint(); err != nil {
			logger.Error(err, "Failed to write the static pod status checkpoint")
		}
		select {
		case <-done:
			return
		case <-time.After(time.Second):
		}
	}
}

func (m *Manager) writeStaticCheckpoint() error {
	m.mu.Lock()
	path := m.checkpoint
	cp := staticCheckpoint{Version: staticCheckpointVersion, Pods: map[types.UID]*corev1.PodStatus{}}
	for uid, st := range m.static {
		cp.Pods[uid] = st.DeepCopy()
	}
	m.mu.Unlock()
	if path == "" {
		return nil
	}
	return atomicfile.WriteJSON(path, cp)
}
