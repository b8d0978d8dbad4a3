package metrics

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// PodCounts are the pod workers' numbers at one moment.
type PodCounts struct {
	// Desired and Active pods by static ("" for API pods, "true").
	Desired, Active map[string]int
	// Working pods by config ("desired" or "orphan": gone from the
	// apiserver or the static pod source), lifecycle ("sync",
	// "terminating", "terminated") and static.
	Working map[WorkingKey]int
	// Mirror is the static pods admitted (one mirror pod each).
	Mirror int
	// Ephemeral is the ephemeral containers of the active pods.
	Ephemeral int
}

// WorkingKey is one series of kubelet_working_pods.
type WorkingKey struct{ Config, Lifecycle, Static string }

var (
	activePods = metrics.NewDesc("kubelet_active_pods", "The number of pods the kubelet considers active and which are being considered "+
		"when admitting new pods. static is true if the pod is not from the apiserver.", []string{"static"}, nil, metrics.ALPHA, "")
	desiredPods = metrics.NewDesc("kubelet_desired_pods", "The number of pods the kubelet is being instructed to run. static is true if "+
		"the pod is not from the apiserver.", []string{"static"}, nil, metrics.ALPHA, "")
	mirrorPods = metrics.NewDesc("kubelet_mirror_pods", "The number of mirror pods the kubelet will try to create (one per admitted static pod)",
		nil, nil, metrics.ALPHA, "")
	workingPods = metrics.NewDesc("kubelet_working_pods", "Number of pods the kubelet is actually running, broken down by lifecycle phase, "+
		"whether the pod is desired, orphaned, or runtime only (also orphaned), and whether the pod is static. An orphaned pod has been removed "+
		"from local configuration or force deleted in the API and consumes resources that are not otherwise visible.",
		[]string{"config", "lifecycle", "static"}, nil, metrics.ALPHA, "")
	ephemeralContainers = metrics.NewDesc("kubelet_managed_ephemeral_containers", "Current number of ephemeral containers in pods managed "+
		"by this kubelet.", nil, nil, metrics.ALPHA, "")
)

type podCollector struct {
	metrics.BaseStableCollector
	counts func() PodCounts
}

var podsOnce sync.Once

// RegisterPodCounts serves the pod workers' gauges on /metrics, read from
// counts at each scrape. As upstream, every static value and the desired
// pods' lifecycles are served, at 0 when no pod is there.
func RegisterPodCounts(counts func() PodCounts) {
	podsOnce.Do(func() { legacyregistry.CustomMustRegister(&podCollector{counts: counts}) })
}

func (c *podCollector) DescribeWithStability(ch chan<- *metrics.Desc) {
	for _, d := range []*metrics.Desc{activePods, desiredPods, mirrorPods, workingPods, ephemeralContainers} {
		ch <- d
	}
}

func (c *podCollector) CollectWithStability(ch chan<- metrics.Metric) {
	n := c.counts()
	for _, static := range []string{"", "true"} {
		ch <- metrics.NewLazyConstMetric(activePods, metrics.GaugeValue, float64(n.Active[static]), static)
		ch <- metrics.NewLazyConstMetric(desiredPods, metrics.GaugeValue, float64(n.Desired[static]), static)
	}
	working := map[WorkingKey]int{}
	for _, lifecycle := range []string{"sync", "terminating", "terminated"} {
		for _, static := range []string{"", "true"} {
			working[WorkingKey{"desired", lifecycle, static}] = 0
		}
	}
	for k, v := range n.Working {
		working[k] = v
	}
	for k, v := range working {
		ch <- metrics.NewLazyConstMetric(workingPods, metrics.GaugeValue, float64(v), k.Config, k.Lifecycle, k.Static)
	}
	ch <- metrics.NewLazyConstMetric(mirrorPods, metrics.GaugeValue, float64(n.Mirror))
	ch <- metrics.NewLazyConstMetric(ephemeralContainers, metrics.GaugeValue, float64(n.Ephemeral))
}
