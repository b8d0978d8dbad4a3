package csi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/bosun-dev/bosun/internal/atomicfile"
	"github.com/bosun-dev/bosun/internal/mounts"
)

// Raw block volumes (volumeMode: Block), in upstream's layout under
// <root-dir>/plugins/kubernetes.io/csi/volumeDevices:
//
//	staging/<pv>                  NodeStageVolume's staging path
//	publish/<pv>/<pod uid>        NodePublishVolume's target: the device node
//	<pv>/data/vol_data.json       what the volume is
//	<pv>/dev/<pod uid>            the device bind-mounted again, one per pod
//
// and <root-dir>/pods/<uid>/volumeDevices/kubernetes.io~csi/<pv>, a link to
// the published device, which the pod's containers get as a device.

func (m *Manager) devicesDir() string {
	return filepath.Join(m.cfg.RootDir, "plugins", "kubernetes.io", "csi", "volumeDevices")
}

func (m *Manager) podDevicesDir(uid types.UID) string {
	return filepath.Join(m.cfg.RootDir, "pods", string(uid), "volumeDevices", "kubernetes.io~csi")
}

func (m *Manager) blockStaging(pv string) string {
	return filepath.Join(m.devicesDir(), "staging", pv)
}
func (m *Manager) blockPublish(pv string, uid types.UID) string {
	return filepath.Join(m.devicesDir(), "publish", pv, string(uid))
}
func (m *Manager) blockData(pv string) string {
	return filepath.Join(m.devicesDir(), pv, "data", volDataFile)
}
func (m *Manager) blockMap(pv string, uid types.UID) string {
	return filepath.Join(m.devicesDir(), pv, "dev", string(uid))
}

func blockCapability(s spec) *csipb.VolumeCapability {
	c := capability(s)
	c.AccessType = &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}}
	return c
}

// SetUpBlock stages and publishes a raw block PersistentVolume for the pod
// and returns the host path its containers get as a device. A volume set up
// already, by this agent or the one before, is left as it is.
func (m *Manager) SetUpBlock(ctx context.Context, pod *corev1.Pod, v Volume) (string, error) {
	if v.PV == nil || v.PV.Spec.CSI == nil {
		return "", fmt.Errorf("volume %q: only CSI PersistentVolumes can be raw block volumes here", v.Name)
	}
	s, err := specOf(pod, v)
	if err != nil {
		return "", err
	}
	link := filepath.Join(m.podDevicesDir(pod.UID), s.specVolID)
	publish := m.blockPublish(s.specVolID, pod.UID)
	if target, err := os.Readlink(link); err == nil && target == publish && isDevice(publish) {
		return link, nil
	}
	d, obj, err := m.driverFor(ctx, s)
	if err != nil {
		return "", err
	}
	defer m.lockVolume(s.driver, s.handle)()
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	publishContext, err := m.attached(ctx, obj, s)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(m.blockData(s.specVolID)), 0o750); err != nil {
		return "", err
	}
	if err := atomicfile.WriteJSON(m.blockData(s.specVolID), volData{
		SpecVolID: s.specVolID, VolumeHandle: s.handle, DriverName: s.driver, NodeName: m.cfg.NodeName,
		AttachmentID: attachmentName(s.handle, s.driver, m.cfg.NodeName), LifecycleMode: string(s.mode),
	}); err != nil {
		return "", err
	}
	staging := ""
	if d.stage {
		staging = m.blockStaging(s.specVolID)
		if err := os.MkdirAll(staging, 0o750); err != nil {
			return "", err
		}
		secrets, err := m.secrets(ctx, s.stageSecret)
		if err != nil {
			return "", err
		}
		if _, err := d.node.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: s.handle, PublishContext: publishContext,
			StagingTargetPath: staging, VolumeCapability: blockCapability(s), Secrets: secrets, VolumeContext: s.attrs}); err != nil {
			return "", fmt.Errorf("rpc error: NodeStageVolume of volume %s: %w", s.specVolID, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(publish), 0o750); err != nil {
		return "", err
	}
	secrets, err := m.secrets(ctx, s.publishSecret)
	if err != nil {
		return "", err
	}
	if _, err := d.node.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: s.handle, PublishContext: publishContext,
		StagingTargetPath: staging, TargetPath: publish, VolumeCapability: blockCapability(s), Readonly: s.readOnly,
		Secrets: secrets, VolumeContext: s.attrs}); err != nil {
		return "", fmt.Errorf("rpc error: NodePublishVolume of volume %s: %w", s.specVolID, err)
	}
	if !isDevice(publish) {
		return "", fmt.Errorf("volume %s: NodePublishVolume left no device at %s", s.specVolID, publish)
	}
	// The device again under the volume's own folder, one per pod, as
	// upstream keeps it (a pod's hold on the device).
	global := m.blockMap(s.specVolID, pod.UID)
	if err := os.MkdirAll(filepath.Dir(global), 0o750); err != nil {
		return "", err
	}
	if !mounts.IsMountPoint(global) {
		if f, err := os.OpenFile(global, os.O_CREATE|os.O_RDONLY, 0o600); err == nil {
			f.Close()
		}
		if err := unix.Mount(publish, global, "", unix.MS_BIND, ""); err != nil {
			return "", fmt.Errorf("failed to map the device of volume %s to %s: %w", s.specVolID, global, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o750); err != nil {
		return "", err
	}
	_ = os.Remove(link)
	if err := os.Symlink(publish, link); err != nil {
		return "", fmt.Errorf("failed to map the device of volume %s for the pod: %w", s.specVolID, err)
	}
	klog.FromContext(ctx).V(2).Info("Mapped CSI block volume", "pod", klog.KObj(pod), "volume", s.specVolID, "device", publish)
	return link, nil
}

func isDevice(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeDevice != 0
}

// tearDownBlock unmaps and unpublishes every raw block volume of a pod,
// and unstages those no other pod on the node maps.
func (m *Manager) tearDownBlock(ctx context.Context, uid types.UID) error {
	found, err := eachEntry(m.podDevicesDir(uid), func(pv string) error { return m.tearDownBlockOne(ctx, uid, pv) })
	if !found || err != nil {
		return err
	}
	_ = os.Remove(m.podDevicesDir(uid))
	return os.Remove(filepath.Dir(m.podDevicesDir(uid)))
}

func (m *Manager) tearDownBlockOne(ctx context.Context, uid types.UID, pv string) error {
	var data volData
	found, err := atomicfile.ReadJSON(m.blockData(pv), &data)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", m.blockData(pv), err)
	}
	link := filepath.Join(m.podDevicesDir(uid), pv)
	if !found { // linked before its record: nothing was published
		return os.Remove(link)
	}
	d, err := m.driver(data.DriverName)
	if err != nil {
		return fmt.Errorf("UnmapDevice failed to get CSI client: %w", err)
	}
	defer m.lockVolume(data.DriverName, data.VolumeHandle)()
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	global := m.blockMap(pv, uid)
	for mounts.IsMountPoint(global) {
		if err := unix.Unmount(global, 0); err != nil {
			return fmt.Errorf("failed to unmap %s: %w", global, err)
		}
	}
	if err := os.Remove(global); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	publish := m.blockPublish(pv, uid)
	if _, err := d.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: data.VolumeHandle, TargetPath: publish}); err != nil {
		return fmt.Errorf("rpc error: NodeUnpublishVolume of volume %s: %w", data.VolumeHandle, err)
	}
	if mounts.IsMountPoint(publish) {
		return fmt.Errorf("%s is still mounted after NodeUnpublishVolume", publish)
	}
	_ = os.Remove(publish)
	_ = os.Remove(filepath.Dir(publish))
	klog.FromContext(ctx).V(2).Info("Unmapped CSI block volume", "podUID", uid, "driver", data.DriverName, "volume", data.VolumeHandle)
	if others, _ := os.ReadDir(filepath.Dir(global)); len(others) > 0 {
		return nil // still mapped for another pod
	}
	if d.stage {
		staging := m.blockStaging(pv)
		if _, err := d.node.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: data.VolumeHandle, StagingTargetPath: staging}); err != nil {
			return fmt.Errorf("rpc error: NodeUnstageVolume of volume %s: %w", data.VolumeHandle, err)
		}
		_ = os.Remove(staging)
	}
	return os.RemoveAll(filepath.Join(m.devicesDir(), pv))
}

// blockRecords reads the vol_data.json of every raw block volume mapped on
// this node, by either agent.
func (m *Manager) blockRecords() []volData {
	return readRecords(filepath.Join(m.devicesDir(), "*", "data", volDataFile))
}
