package volumes

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// Expander grows the file system of published CSI volumes (internal/csi).
// The Manager's CSI may offer it.
type Expander interface {
	CanExpand(driver string) bool
	Expand(ctx context.Context, uid types.UID, pv *corev1.PersistentVolume, size resource.Quantity) error
}

// ClaimStatusWriter writes a claim's status (the Manager's Claims may offer
// it: node expansion reports through it).
type ClaimStatusWriter interface {
	UpdateClaimStatus(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, error)
}

// expandEvery is how often a published claim whose driver can expand is
// looked at again for a resize (upstream re-reads it on every pod sync).
const expandEvery = 30 * time.Second

// resizeConditions are the claim conditions of a resize, which a finished
// node expansion clears.
var resizeConditions = map[corev1.PersistentVolumeClaimConditionType]bool{
	corev1.PersistentVolumeClaimFileSystemResizePending: true,
	corev1.PersistentVolumeClaimResizing:                true,
	corev1.PersistentVolumeClaimControllerResizeError:   true,
	corev1.PersistentVolumeClaimNodeResizeError:         true,
}

// expandClaim finishes an online expansion of a pod's published claim as
// upstream's node expander does: when the PersistentVolume has grown past
// the claim's status and the resize waits for the node (allocated resource
// status NodeResizePending or NodeResizeInProgress), it marks the resize in
// progress, has the driver grow the file system, records
// FileSystemResizeSuccessful on the pod and the claim, and sets the claim's
// capacity, clearing the resize status and conditions.
func (m *Manager) expandClaim(ctx context.Context, ex Expander, pod *corev1.Pod, v *corev1.Volume, pv *corev1.PersistentVolume) error {
	writer, ok := m.Claims.(ClaimStatusWriter)
	if !ok || pv.Spec.CSI == nil || !ex.CanExpand(pv.Spec.CSI.Driver) {
		return nil
	}
	key := boundKey(pod.UID, v.Name)
	now := time.Now()
	m.mu.Lock()
	if at, ok := m.expandChecked[key]; ok && now.Sub(at) < expandEvery {
		m.mu.Unlock()
		return nil
	}
	if m.expandChecked == nil {
		m.expandChecked = map[string]time.Time{}
	}
	m.expandChecked[key] = now
	m.mu.Unlock()

	pvc, err := m.Claims.Claim(ctx, pod.Namespace, claimName(pod, v))
	if err != nil {
		return err
	}
	fresh, err := m.Claims.PersistentVolume(ctx, pv.Name)
	if err != nil {
		return err
	}
	newSize, statusSize := fresh.Spec.Capacity[corev1.ResourceStorage], pvc.Status.Capacity[corev1.ResourceStorage]
	if newSize.Cmp(statusSize) <= 0 {
		return nil
	}
	switch pvc.Status.AllocatedResourceStatuses[corev1.ResourceStorage] {
	case corev1.PersistentVolumeClaimNodeResizePending:
		st := pvc.DeepCopy()
		st.Status.AllocatedResourceStatuses[corev1.ResourceStorage] = corev1.PersistentVolumeClaimNodeResizeInProgress
		if pvc, err = writer.UpdateClaimStatus(ctx, st); err != nil {
			return fmt.Errorf("MountVolume.NodeExpandVolume failed to mark node expansion in progress: %w", err)
		}
	case corev1.PersistentVolumeClaimNodeResizeInProgress:
	default:
		return nil // the controller's part is not done yet
	}
	msg := fmt.Sprintf("MountVolume.NodeExpandVolume succeeded for volume %q %s", pv.Name, m.NodeName)
	if err := ex.Expand(ctx, pod.UID, fresh, newSize); err != nil {
		st := pvc.DeepCopy()
		setClaimCondition(st, corev1.PersistentVolumeClaimCondition{Type: corev1.PersistentVolumeClaimNodeResizeError, Status: corev1.ConditionTrue,
			LastTransitionTime: metav1.NewTime(now), Message: fmt.Sprintf("failed to expand pvc with %v", err)})
		if _, werr := writer.UpdateClaimStatus(ctx, st); werr != nil {
			klog.FromContext(ctx).Error(werr, "Failed to record the node expansion's failure", "pvc", klog.KObj(pvc))
		}
		m.event(pod, corev1.EventTypeWarning, "VolumeResizeFailed", "MountVolume.NodeExpandVolume failed for volume "+fmt.Sprintf("%q", pv.Name)+": "+err.Error())
		return err
	}
	m.event(pod, corev1.EventTypeNormal, "FileSystemResizeSuccessful", msg)
	m.event(pvc, corev1.EventTypeNormal, "FileSystemResizeSuccessful", msg)
	st := pvc.DeepCopy()
	if st.Status.Capacity == nil {
		st.Status.Capacity = corev1.ResourceList{}
	}
	st.Status.Capacity[corev1.ResourceStorage] = newSize
	delete(st.Status.AllocatedResourceStatuses, corev1.ResourceStorage)
	if len(st.Status.AllocatedResourceStatuses) == 0 {
		st.Status.AllocatedResourceStatuses = nil
	}
	var conds []corev1.PersistentVolumeClaimCondition
	for _, c := range st.Status.Conditions {
		if !resizeConditions[c.Type] {
			conds = append(conds, c)
		}
	}
	st.Status.Conditions = conds
	if _, err := writer.UpdateClaimStatus(ctx, st); err != nil {
		return fmt.Errorf("mountVolume.NodeExpandVolume update pvc status failed: %w", err)
	}
	m.mu.Lock()
	if b, ok := m.bound[key]; ok {
		b.pv = fresh
		m.bound[key] = b
	}
	m.mu.Unlock()
	return nil
}

func (m *Manager) event(obj runtime.Object, kind, reason, msg string) {
	if m.Recorder != nil {
		m.Recorder.Event(obj, kind, reason, msg)
	}
}

func claimName(pod *corev1.Pod, v *corev1.Volume) string {
	if v.PersistentVolumeClaim != nil {
		return v.PersistentVolumeClaim.ClaimName
	}
	return pod.Name + "-" + v.Name
}

func setClaimCondition(pvc *corev1.PersistentVolumeClaim, c corev1.PersistentVolumeClaimCondition) {
	for i := range pvc.Status.Conditions {
		if pvc.Status.Conditions[i].Type == c.Type {
			pvc.Status.Conditions[i] = c
			return
		}
	}
	pvc.Status.Conditions = append(pvc.Status.Conditions, c)
}
