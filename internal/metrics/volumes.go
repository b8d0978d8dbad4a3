package metrics

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// The kubelet_volume_stats_* gauges, one series per claim, as upstream's
// volume stats collector reports them.
var (
	volumeLabels = []string{"namespace", "persistentvolumeclaim"}
	volCapacity  = metrics.NewDesc("kubelet_volume_stats_capacity_bytes", "Capacity in bytes of the volume", volumeLabels, nil, metrics.ALPHA, "")
	volAvailable = metrics.NewDesc("kubelet_volume_stats_available_bytes", "Number of available bytes in the volume", volumeLabels, nil, metrics.ALPHA, "")
	volUsed      = metrics.NewDesc("kubelet_volume_stats_used_bytes", "Number of used bytes in the volume", volumeLabels, nil, metrics.ALPHA, "")
	volInodes    = metrics.NewDesc("kubelet_volume_stats_inodes", "Maximum number of inodes in the volume", volumeLabels, nil, metrics.ALPHA, "")
	volFree      = metrics.NewDesc("kubelet_volume_stats_inodes_free", "Number of free inodes in the volume", volumeLabels, nil, metrics.ALPHA, "")
	volInodeUsed = metrics.NewDesc("kubelet_volume_stats_inodes_used", "Number of used inodes in the volume", volumeLabels, nil, metrics.ALPHA, "")
	volAbnormal  = metrics.NewDesc("kubelet_volume_stats_health_status_abnormal",
		"Abnormal volume health status. The count is either 1 or 0. 1 indicates the volume is unhealthy, 0 indicates volume is healthy", volumeLabels, nil, metrics.ALPHA, "")
)

type volumeCollector struct {
	metrics.BaseStableCollector
	claims func() []statsapi.VolumeStats
}

// RegisterVolumeStats serves kubelet_volume_stats_* on /metrics from
// claims: the measured volumes that come from claims, one per claim.
func RegisterVolumeStats(claims func() []statsapi.VolumeStats) {
	volumeOnce.Do(func() { legacyregistry.CustomMustRegister(&volumeCollector{claims: claims}) })
}

var volumeOnce sync.Once

func (c *volumeCollector) DescribeWithStability(ch chan<- *metrics.Desc) {
	for _, d := range []*metrics.Desc{volCapacity, volAvailable, volUsed, volInodes, volFree, volInodeUsed, volAbnormal} {
		ch <- d
	}
}

func (c *volumeCollector) CollectWithStability(ch chan<- metrics.Metric) {
	for _, s := range c.claims() {
		if s.PVCRef == nil {
			continue
		}
		gauge := func(d *metrics.Desc, v *uint64) {
			if v != nil {
				ch <- metrics.NewLazyConstMetric(d, metrics.GaugeValue, float64(*v), s.PVCRef.Namespace, s.PVCRef.Name)
			}
		}
		gauge(volCapacity, s.CapacityBytes)
		gauge(volAvailable, s.AvailableBytes)
		gauge(volUsed, s.UsedBytes)
		gauge(volInodes, s.Inodes)
		gauge(volFree, s.InodesFree)
		gauge(volInodeUsed, s.InodesUsed)
		if h := s.VolumeHealthStats; h != nil {
			v := uint64(0)
			if h.Abnormal {
				v = 1
			}
			gauge(volAbnormal, &v)
		}
	}
}
