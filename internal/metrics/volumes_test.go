package metrics

import (
	"strings"
	"testing"

	"k8s.io/component-base/metrics/testutil"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

func TestVolumeStatsPerClaim(t *testing.T) {
	n := func(v uint64) *uint64 { return &v }
	fs := statsapi.FsStats{CapacityBytes: n(100), AvailableBytes: n(60), UsedBytes: n(40), Inodes: n(10), InodesFree: n(7), InodesUsed: n(3)}
	c := &volumeCollector{claims: func() []statsapi.VolumeStats {
		return []statsapi.VolumeStats{
			{Name: "data", FsStats: fs, PVCRef: &statsapi.PVCReference{Name: "claim", Namespace: "ns"}},
			{Name: "scratch", FsStats: fs}, // not from a claim: not reported
		}
	}}
	want := `
# HELP kubelet_volume_stats_capacity_bytes [ALPHA] Capacity in bytes of the volume
# TYPE kubelet_volume_stats_capacity_bytes gauge
kubelet_volume_stats_capacity_bytes{namespace="ns",persistentvolumeclaim="claim"} 100
# HELP kubelet_volume_stats_inodes_used [ALPHA] Number of used inodes in the volume
# TYPE kubelet_volume_stats_inodes_used gauge
kubelet_volume_stats_inodes_used{namespace="ns",persistentvolumeclaim="claim"} 3
`
	if err := testutil.CustomCollectAndCompare(c, strings.NewReader(want), "kubelet_volume_stats_capacity_bytes", "kubelet_volume_stats_inodes_used"); err != nil {
		t.Error(err)
	}
}
