package volumes

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/bosun-dev/bosun/internal/csi"
)

// Claims reads what a pod's persistentVolumeClaim and ephemeral volumes
// name: the claim, and the PersistentVolume bound to it.
type Claims interface {
	Claim(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error)
	PersistentVolume(ctx context.Context, name string) (*corev1.PersistentVolume, error)
}

// CSI publishes and unpublishes CSI volumes (internal/csi).
type CSI interface {
	// SetUp publishes the volume for the pod and returns its folder; it may
	// be called on every sync of the pod.
	SetUp(ctx context.Context, pod *corev1.Pod, v csi.Volume) (string, error)
	// SetUpBlock stages and publishes a raw block volume for the pod and
	// returns the device's path on the host.
	SetUpBlock(ctx context.Context, pod *corev1.Pod, v csi.Volume) (string, error)
	// TearDown unpublishes every CSI volume of the pod.
	TearDown(ctx context.Context, uid types.UID) error
	// VolumeStats is the driver's NodeGetVolumeStats for a published
	// volume (specVolID: the PV's name, or the inline volume's), or nil.
	VolumeStats(ctx context.Context, uid types.UID, specVolID string) *statsapi.FsStats
}

// claimVolume sets up the PersistentVolume bound to a pod's claim: CSI
// volumes through their driver; hostPath and local volumes as host folders.
func (m *Manager) claimVolume(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) (Volume, error) {
	if m.Claims == nil {
		return Volume{}, &UnsupportedError{Volume: v.Name, Type: volumeType(v)}
	}
	pv, readOnly, err := m.boundVolume(ctx, pod, v)
	if err != nil {
		return Volume{}, err
	}
	// Reserved before the set-up, so that two pods set up at once cannot
	// both pass the check; a failed set-up lets it go.
	had, ok := m.reserve(pv, pod.UID, v.Name)
	if !ok {
		return Volume{}, errReadWriteOncePod
	}
	vol, err := m.setUpClaim(ctx, pod, v, pv, readOnly)
	if err != nil && !had {
		m.release(pod.UID, v.Name)
	}
	return vol, err
}

// errReadWriteOncePod is upstream's refusal of a ReadWriteOncePod volume that
// another pod on the node has set up.
var errReadWriteOncePod = errors.New("volume uses the ReadWriteOncePod access mode and is already in use by another pod")

// reserve marks a pod's claim volume as set up for it, unless pv's only
// access mode is ReadWriteOncePod and another pod on this node has it, as
// upstream's volume manager checks before mounting (the scheduler checks it
// too, but a pod bound to the node by name skips the scheduler). had says
// the mark was there already.
func (m *Manager) reserve(pv *corev1.PersistentVolume, uid types.UID, volume string) (had, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := boundKey(uid, volume)
	if len(pv.Spec.AccessModes) == 1 && pv.Spec.AccessModes[0] == corev1.ReadWriteOncePod {
		for k, b := range m.bound {
			if b.setUp && b.pv.Name == pv.Name && !strings.HasPrefix(k, boundKey(uid, "")) {
				return false, false
			}
		}
	}
	b, found := m.bound[key]
	if !found {
		return false, true
	}
	had = b.setUp
	b.setUp = true
	m.bound[key] = b
	return had, true
}

// release drops a reservation whose set-up failed.
func (m *Manager) release(uid types.UID, volume string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.bound[boundKey(uid, volume)]; ok {
		b.setUp = false
		m.bound[boundKey(uid, volume)] = b
	}
}

// setUpClaim sets up a claim's PersistentVolume by its type.
func (m *Manager) setUpClaim(ctx context.Context, pod *corev1.Pod, v *corev1.Volume, pv *corev1.PersistentVolume, readOnly bool) (Volume, error) {
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		if pv.Spec.CSI == nil || m.CSI == nil {
			return Volume{}, fmt.Errorf("PersistentVolume %s has volumeMode Block, which this node supports for CSI volumes only", pv.Name)
		}
		dev, err := m.CSI.SetUpBlock(ctx, pod, csi.Volume{Name: v.Name, PV: pv, ReadOnly: readOnly})
		if err == nil {
			m.expandSetUp(ctx, pod, v, pv)
		}
		return Volume{Device: dev, ReadOnly: readOnly || pv.Spec.CSI.ReadOnly}, err
	}
	switch {
	case pv.Spec.CSI != nil && m.CSI != nil:
		path, err := m.CSI.SetUp(ctx, pod, csi.Volume{Name: v.Name, PV: pv, ReadOnly: readOnly})
		if err == nil {
			m.expandSetUp(ctx, pod, v, pv)
		}
		return Volume{Path: path, ReadOnly: readOnly || pv.Spec.CSI.ReadOnly}, err
	case pv.Spec.HostPath != nil:
		vol, err := hostPath(pv.Spec.HostPath)
		vol.ReadOnly = readOnly
		return vol, err
	case pv.Spec.Local != nil:
		return Volume{Path: pv.Spec.Local.Path, HostPath: true, ReadOnly: readOnly}, nil
	}
	return Volume{}, fmt.Errorf("PersistentVolume %s has a volume type this node does not support (only csi, hostPath and local)", pv.Name)
}

// expandSetUp finishes an expansion waiting for the node on a CSI volume
// just set up (filesystem or raw block). The pod runs on the volume as it is
// when that fails; the next look retries.
func (m *Manager) expandSetUp(ctx context.Context, pod *corev1.Pod, v *corev1.Volume, pv *corev1.PersistentVolume) {
	if ex, ok := m.CSI.(Expander); ok {
		if err := m.expandClaim(ctx, ex, pod, v, pv); err != nil {
			klog.FromContext(ctx).Error(err, "Node expansion of a claim failed", "pod", klog.KObj(pod), "volume", v.Name)
		}
	}
}

// boundVolume finds the PersistentVolume of a pod's claim with upstream's
// checks (and messages), once per pod and volume.
func (m *Manager) boundVolume(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) (*corev1.PersistentVolume, bool, error) {
	key := boundKey(pod.UID, v.Name)
	m.mu.Lock()
	b, ok := m.bound[key]
	m.mu.Unlock()
	if ok {
		return b.pv, b.readOnly, nil
	}
	name, readOnly := "", false
	if v.PersistentVolumeClaim != nil {
		name, readOnly = v.PersistentVolumeClaim.ClaimName, v.PersistentVolumeClaim.ReadOnly
	} else {
		name = pod.Name + "-" + v.Name
	}
	pvc, err := m.Claims.Claim(ctx, pod.Namespace, name)
	if err != nil {
		return nil, false, fmt.Errorf("error processing PVC %s/%s: failed to fetch PVC from API server: %w", pod.Namespace, name, err)
	}
	if v.Ephemeral != nil && !metav1.IsControlledBy(pvc, pod) {
		return nil, false, fmt.Errorf("PVC %s/%s was not created for pod %s/%s (pod is not owner)", pod.Namespace, name, pod.Namespace, pod.Name)
	}
	if pvc.DeletionTimestamp != nil {
		return nil, false, fmt.Errorf("can't start pod because PVC %s/%s is being deleted", pod.Namespace, name)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return nil, false, fmt.Errorf("PVC %s/%s has non-bound phase (%q) or empty pvc.Spec.VolumeName (%q)", pod.Namespace, name, pvc.Status.Phase, pvc.Spec.VolumeName)
	}
	pv, err := m.Claims.PersistentVolume(ctx, pvc.Spec.VolumeName)
	if err != nil {
		return nil, false, fmt.Errorf("failed to fetch PV %s from API server: %w", pvc.Spec.VolumeName, err)
	}
	if pv.Spec.ClaimRef == nil {
		return nil, false, fmt.Errorf("found PV object %s but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim", pv.Name)
	}
	if pv.Spec.ClaimRef.UID != pvc.UID {
		return nil, false, fmt.Errorf("found PV object %s but its pv.Spec.ClaimRef.UID %q does not point to claim.UID %q", pv.Name, pv.Spec.ClaimRef.UID, pvc.UID)
	}
	m.mu.Lock()
	if m.bound == nil {
		m.bound = map[string]boundClaim{}
	}
	m.bound[key] = boundClaim{pv: pv, readOnly: readOnly}
	m.mu.Unlock()
	return pv, readOnly, nil
}

// boundClaim is a claim resolved for one pod's volume.
type boundClaim struct {
	pv       *corev1.PersistentVolume
	readOnly bool
	setUp    bool // the volume is set up for the pod
}

// boundKey names a pod's volume in Manager.bound.
func boundKey(uid types.UID, volume string) string { return string(uid) + "/" + volume }

// forget drops what was resolved for a pod.
func (m *Manager) forget(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prefix := boundKey(uid, "")
	for k := range m.bound {
		if strings.HasPrefix(k, prefix) {
			delete(m.bound, k)
		}
	}
	for k := range m.expandChecked {
		if strings.HasPrefix(k, prefix) {
			delete(m.expandChecked, k)
		}
	}
}
