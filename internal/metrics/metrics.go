// Package metrics holds Bosun's own Prometheus metrics on /metrics, with the
// upstream kubelet's names where the meaning is the same.
package metrics

import (
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/bosun-dev/bosun/internal/version"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	// PLEGRelistDuration is kubelet_pleg_relist_duration_seconds.
	PLEGRelistDuration = metrics.NewHistogram(&metrics.HistogramOpts{
		Subsystem: "kubelet", Name: "pleg_relist_duration_seconds", StabilityLevel: metrics.ALPHA,
		Help:    "Duration in seconds for relisting pods in PLEG.",
		Buckets: metrics.DefBuckets,
	})
	// PodStartDuration is kubelet_pod_start_duration_seconds: from the
	// pod's creation to its first Running status on this node.
	PodStartDuration = metrics.NewHistogram(&metrics.HistogramOpts{
		Subsystem: "kubelet", Name: "pod_start_duration_seconds", StabilityLevel: metrics.ALPHA,
		Help:    "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
		Buckets: []float64{0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600},
	})
	// StartedPods is kubelet_started_pods_total: sandboxes created.
	StartedPods = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "started_pods_total",
		Help: "Cumulative number of pods started", StabilityLevel: metrics.ALPHA})
	// StartedPodsErrors is kubelet_started_pods_errors_total.
	StartedPodsErrors = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "started_pods_errors_total",
		Help: "Cumulative number of errors when starting pods", StabilityLevel: metrics.ALPHA})
	// StartedUserNamespacedPods is kubelet_started_user_namespaced_pods_total.
	StartedUserNamespacedPods = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "started_user_namespaced_pods_total",
		Help: "Cumulative number of pods with user namespaces started. This metric will only be collected on Linux.", StabilityLevel: metrics.ALPHA})
	// StartedUserNamespacedPodsErrors is kubelet_started_user_namespaced_pods_errors_total.
	StartedUserNamespacedPodsErrors = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "started_user_namespaced_pods_errors_total",
		Help: "Cumulative number of errors when starting pods with user namespaces. This metric will only be collected on Linux.", StabilityLevel: metrics.ALPHA})
	// RuntimeOperations is kubelet_runtime_operations_total.
	RuntimeOperations = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: "kubelet", Name: "runtime_operations_total", StabilityLevel: metrics.ALPHA,
		Help: "Cumulative number of runtime operations by operation type.",
	}, []string{"operation_type"})
	// RuntimeOperationsDuration is kubelet_runtime_operations_duration_seconds.
	RuntimeOperationsDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Subsystem: "kubelet", Name: "runtime_operations_duration_seconds", StabilityLevel: metrics.ALPHA,
		Help:    "Duration in seconds of runtime operations. Broken down by operation type.",
		Buckets: metrics.ExponentialBuckets(.005, 2.5, 14),
	}, []string{"operation_type"})
	// RuntimeOperationsErrors is kubelet_runtime_operations_errors_total.
	RuntimeOperationsErrors = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: "kubelet", Name: "runtime_operations_errors_total", StabilityLevel: metrics.ALPHA,
		Help: "Cumulative number of runtime operation errors by operation type.",
	}, []string{"operation_type"})
	// PodWorkerDuration is kubelet_pod_worker_duration_seconds: one sync of
	// a pod by operation type (create, update, sync).
	PodWorkerDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Subsystem: "kubelet", Name: "pod_worker_duration_seconds", StabilityLevel: metrics.ALPHA,
		Help:    "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
		Buckets: metrics.DefBuckets,
	}, []string{"operation_type"})
	// PLEGRelistInterval is kubelet_pleg_relist_interval_seconds.
	PLEGRelistInterval = metrics.NewHistogram(&metrics.HistogramOpts{
		Subsystem: "kubelet", Name: "pleg_relist_interval_seconds", StabilityLevel: metrics.ALPHA,
		Help:    "Interval in seconds between relisting in PLEG.",
		Buckets: metrics.DefBuckets,
	})
	// PLEGLastSeen is kubelet_pleg_last_seen_seconds.
	PLEGLastSeen = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem: "kubelet", Name: "pleg_last_seen_seconds", StabilityLevel: metrics.ALPHA,
		Help: "Timestamp in seconds when PLEG was last seen active.",
	})
	// buildInfo is kubernetes_build_info: the Kubernetes release Bosun
	// stands in for, as the upstream kubelet reports its own.
	buildInfo = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name: "kubernetes_build_info", StabilityLevel: metrics.ALPHA,
		Help: "A metric with a constant '1' value labeled by major, minor, git version, git commit, git tree state, build date, Go version, and compiler from which Kubernetes was built, and platform on which it is running.",
	}, []string{"major", "minor", "git_version", "git_commit", "git_tree_state", "build_date", "go_version", "compiler", "platform"})
)

var (
	// RunningPods is kubelet_running_pods: pods with a ready sandbox.
	RunningPods = metrics.NewGauge(&metrics.GaugeOpts{Subsystem: "kubelet", Name: "running_pods",
		Help: "Number of pods that have a running pod sandbox", StabilityLevel: metrics.ALPHA})
	// RunningContainers is kubelet_running_containers.
	RunningContainers = metrics.NewGaugeVec(&metrics.GaugeOpts{Subsystem: "kubelet", Name: "running_containers",
		Help: "Number of containers currently running", StabilityLevel: metrics.ALPHA}, []string{"container_state"})
	// ClientCertTTL is kubelet_certificate_manager_client_ttl_seconds.
	ClientCertTTL = metrics.NewGauge(&metrics.GaugeOpts{Subsystem: "kubelet", Name: "certificate_manager_client_ttl_seconds",
		Help: "Gauge of the TTL (time-to-live) of the Kubelet's client certificate.", StabilityLevel: metrics.ALPHA})
	nodeName = metrics.NewGaugeVec(&metrics.GaugeOpts{Subsystem: "kubelet", Name: "node_name",
		Help: "The node's name. The count is always 1.", StabilityLevel: metrics.ALPHA}, []string{"node"})
)

var once sync.Once

// Register adds the metrics to the registry /metrics serves.
func Register(node string) {
	once.Do(func() {
		legacyregistry.MustRegister(PLEGRelistDuration, PodStartDuration, RuntimeOperations, RuntimeOperationsDuration, RuntimeOperationsErrors,
			PodWorkerDuration, PLEGRelistInterval, PLEGLastSeen,
			RunningPods, RunningContainers, ClientCertTTL, nodeName, buildInfo,
			StartedPods, StartedPodsErrors, StartedUserNamespacedPods, StartedUserNamespacedPodsErrors)
		legacyregistry.MustRegister(nodeMetrics()...)
		nodeName.WithLabelValues(node).Set(1)
		major, minor := kubeVersionParts(version.Kubernetes)
		buildInfo.WithLabelValues(major, minor, version.Kubernetes, "", "", "", runtime.Version(), runtime.Compiler, runtime.GOOS+"/"+runtime.GOARCH).Set(1)
	})
}

// kubeVersionParts is "1", "36" of "v1.36.3".
func kubeVersionParts(v string) (string, string) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return "", ""
	}
	return parts[0], parts[1]
}

// TrackCertTTL sets gauge (ClientCertTTL, ServerCertTTL) from expiry every
// minute until stop closes.
func TrackCertTTL(gauge *metrics.Gauge, expiry func() time.Time, stop <-chan struct{}) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if e := expiry(); !e.IsZero() {
			gauge.Set(time.Until(e).Seconds())
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
