package csi

import (
	"context"
	"errors"
	"fmt"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

// ErrExpandUnsupported: the driver does not offer EXPAND_VOLUME.
var ErrExpandUnsupported = errors.New("NodeExpand is not supported by the CSI driver")

// CanExpand tells whether a registered driver offers NodeExpandVolume.
func (m *Manager) CanExpand(name string) bool {
	d, err := m.driver(name)
	return err == nil && d.expand
}

// Expand grows a published persistent volume to size (NodeExpandVolume with
// the pod's publish path, and the staging path when the driver stages; for a
// raw block volume, its block publish and staging paths), as upstream's
// in-use expansion does.
func (m *Manager) Expand(ctx context.Context, uid types.UID, pv *corev1.PersistentVolume, size resource.Quantity) error {
	if pv.Spec.CSI == nil {
		return fmt.Errorf("PersistentVolume %s is not a CSI volume", pv.Name)
	}
	d, err := m.driver(pv.Spec.CSI.Driver)
	if err != nil {
		return err
	}
	if !d.expand {
		return fmt.Errorf("%w %s", ErrExpandUnsupported, d.name)
	}
	s, err := specOf(&corev1.Pod{}, Volume{PV: pv})
	if err != nil {
		return err
	}
	// A raw block volume is grown at its per-pod publish path and its block
	// staging path, with a block capability, as upstream's block mapper does.
	block := pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock
	target, staging, capa := m.TargetPath(uid, s.specVolID), m.stagingPath(s.driver, s.handle), capability(s)
	if block {
		target, staging, capa = m.blockPublish(s.specVolID, uid), m.blockStaging(s.specVolID), blockCapability(s)
	}
	if !block && !published(target) || block && !isDevice(target) {
		return fmt.Errorf("volume %s is not published for pod %s", s.specVolID, uid)
	}
	secrets, err := m.secrets(ctx, pv.Spec.CSI.NodeExpandSecretRef)
	if err != nil {
		return err
	}
	req := &csipb.NodeExpandVolumeRequest{VolumeId: s.handle, VolumePath: target,
		CapacityRange: &csipb.CapacityRange{RequiredBytes: size.Value()}, VolumeCapability: capa, Secrets: secrets}
	if d.stage {
		req.StagingTargetPath = staging
	}
	defer m.lockVolume(s.driver, s.handle)()
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	if _, err := d.node.NodeExpandVolume(ctx, req); err != nil {
		return fmt.Errorf("rpc error: NodeExpandVolume of volume %s: %w", s.specVolID, err)
	}
	return nil
}
