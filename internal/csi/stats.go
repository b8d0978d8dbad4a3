package csi

import (
	"context"
	"path/filepath"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/bosun-dev/bosun/internal/atomicfile"
)

// VolumeStats asks the driver of a pod's published volume for its usage
// (NodeGetVolumeStats, when the driver offers GET_VOLUME_STATS). It returns
// nil when the volume is not published or the driver cannot tell.
func (m *Manager) VolumeStats(ctx context.Context, uid types.UID, specVolID string) *statsapi.FsStats {
	target := m.TargetPath(uid, specVolID)
	var data volData
	if found, err := atomicfile.ReadJSON(filepath.Join(filepath.Dir(target), volDataFile), &data); err != nil || !found {
		return nil
	}
	d, err := m.driver(data.DriverName)
	if err != nil || !d.stats {
		return nil
	}
	req := &csipb.NodeGetVolumeStatsRequest{VolumeId: data.VolumeHandle, VolumePath: target}
	if d.stage && data.LifecycleMode != "Ephemeral" {
		req.StagingTargetPath = m.stagingPath(data.DriverName, data.VolumeHandle)
	}
	resp, err := d.node.NodeGetVolumeStats(ctx, req)
	if err != nil {
		klog.FromContext(ctx).V(4).Info("NodeGetVolumeStats failed", "driver", data.DriverName, "volume", data.VolumeHandle, "err", err)
		return nil
	}
	fs := &statsapi.FsStats{Time: metav1.Now()}
	for _, u := range resp.GetUsage() {
		total, avail, used := uint64(max(u.GetTotal(), 0)), uint64(max(u.GetAvailable(), 0)), uint64(max(u.GetUsed(), 0))
		switch u.GetUnit() {
		case csipb.VolumeUsage_BYTES:
			fs.CapacityBytes, fs.AvailableBytes, fs.UsedBytes = &total, &avail, &used
		case csipb.VolumeUsage_INODES:
			fs.Inodes, fs.InodesFree, fs.InodesUsed = &total, &avail, &used
		}
	}
	return fs
}
