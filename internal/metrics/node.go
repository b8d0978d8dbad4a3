package metrics

import (
	"math"
	"strconv"
	"strings"
	"time"

	"k8s.io/component-base/metrics"
)

// The node API's requests, certificates, start-up and resource managers,
// with upstream's names, labels and buckets.
var (
	// HTTPRequests is kubelet_http_requests_total.
	HTTPRequests = metrics.NewCounterVec(&metrics.CounterOpts{Subsystem: "kubelet", Name: "http_requests_total",
		Help: "Number of the http requests received since the server started", StabilityLevel: metrics.ALPHA}, httpLabels)
	// HTTPRequestsDuration is kubelet_http_requests_duration_seconds.
	HTTPRequestsDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{Subsystem: "kubelet", Name: "http_requests_duration_seconds",
		Help: "Duration in seconds to serve http requests", Buckets: metrics.DefBuckets, StabilityLevel: metrics.ALPHA}, httpLabels)
	// HTTPInflightRequests is kubelet_http_inflight_requests.
	HTTPInflightRequests = metrics.NewGaugeVec(&metrics.GaugeOpts{Subsystem: "kubelet", Name: "http_inflight_requests",
		Help: "Number of the inflight http requests", StabilityLevel: metrics.ALPHA}, httpLabels)

	cgroupVersion = metrics.NewGauge(&metrics.GaugeOpts{Subsystem: "kubelet", Name: "cgroup_version",
		Help: "cgroup version on the hosts.", StabilityLevel: metrics.ALPHA})
	metricsProvider = metrics.NewGaugeVec(&metrics.GaugeOpts{Subsystem: "kubelet", Name: "metrics_provider",
		Help: "Metrics provider used by kubelet to collect container stats. Values can be 'cadvisor' and 'cri'", StabilityLevel: metrics.ALPHA},
		[]string{"provider"})

	// ServerCertTTL is kubelet_certificate_manager_server_ttl_seconds.
	ServerCertTTL = metrics.NewGauge(&metrics.GaugeOpts{Subsystem: "kubelet", Name: "certificate_manager_server_ttl_seconds",
		Help: "Gauge of the shortest TTL (time-to-live) of the Kubelet's serving certificate. The value is in seconds until certificate expiry " +
			"(negative if already expired). If serving certificate is invalid or unused, the value will be +INF.", StabilityLevel: metrics.ALPHA})
	// ServerCertRotation is kubelet_certificate_manager_server_rotation_seconds.
	ServerCertRotation = metrics.NewHistogram(&metrics.HistogramOpts{Subsystem: "kubelet", Name: "certificate_manager_server_rotation_seconds",
		Help: "Histogram of the number of seconds the previous certificate lived before being rotated.", StabilityLevel: metrics.ALPHA,
		Buckets: []float64{60, 3600, 14400, 86400, 604800, 2592000, 7776000, 15552000, 31104000, 124416000}})
	// ClientRenewErrors is kubelet_certificate_manager_client_expiration_renew_errors.
	ClientRenewErrors = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "certificate_manager_client_expiration_renew_errors",
		Help: "Counter of certificate renewal errors.", StabilityLevel: metrics.ALPHA})
	// ServerRenewErrors is kubelet_server_expiration_renew_errors.
	ServerRenewErrors = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "server_expiration_renew_errors",
		Help: "Counter of certificate renewal errors.", StabilityLevel: metrics.ALPHA})

	nodeStartup                 = startupGauge("node_startup_duration_seconds", "Duration in seconds of node startup in total.")
	nodeStartupPreAgent         = startupGauge("node_startup_pre_kubelet_duration_seconds", "Duration in seconds of node startup before kubelet starts.")
	nodeStartupPreRegistration  = startupGauge("node_startup_pre_registration_duration_seconds", "Duration in seconds of node startup before registration.")
	nodeStartupRegistration     = startupGauge("node_startup_registration_duration_seconds", "Duration in seconds of node startup during registration.")
	nodeStartupPostRegistration = startupGauge("node_startup_post_registration_duration_seconds", "Duration in seconds of node startup after registration.")

	// CPUPinningRequests, CPUPinningErrors, CPUSharedPool and CPUExclusive
	// are the CPU manager's (internal/cpumanager): zero under its "none"
	// policy. The memory manager runs its "None" policy (others are
	// refused): its counters stay at zero.
	CPUPinningRequests = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "cpu_manager_pinning_requests_total",
		Help: "The number of cpu core allocations which required pinning.", StabilityLevel: metrics.ALPHA})
	CPUPinningErrors = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "cpu_manager_pinning_errors_total",
		Help: "The number of cpu core allocations which required pinning failed.", StabilityLevel: metrics.ALPHA})
	CPUSharedPool = metrics.NewGauge(&metrics.GaugeOpts{Subsystem: "kubelet", Name: "cpu_manager_shared_pool_size_millicores",
		Help: "The size of the shared CPU pool for non-guaranteed QoS pods, in millicores.", StabilityLevel: metrics.ALPHA})
	CPUExclusive = metrics.NewGauge(&metrics.GaugeOpts{Subsystem: "kubelet", Name: "cpu_manager_exclusive_cpu_allocation_count",
		Help: "The total number of CPUs exclusively allocated to containers running on this node", StabilityLevel: metrics.ALPHA})
	MemoryPinningRequests = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "memory_manager_pinning_requests_total",
		Help: "The number of memory pages allocations which required pinning.", StabilityLevel: metrics.ALPHA})
	MemoryPinningErrors = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "memory_manager_pinning_errors_total",
		Help: "The number of memory pages allocations which required pinning that failed.", StabilityLevel: metrics.ALPHA})
	// TopologyAdmissions is kubelet_topology_manager_admission_requests_total:
	// the topology manager ("none" policy) admits every pod.
	TopologyAdmissions = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "topology_manager_admission_requests_total",
		Help: "The number of admission requests where resources have to be aligned.", StabilityLevel: metrics.ALPHA})
	// TopologyAdmissionErrors is kubelet_topology_manager_admission_errors_total.
	TopologyAdmissionErrors = metrics.NewCounter(&metrics.CounterOpts{Subsystem: "kubelet", Name: "topology_manager_admission_errors_total",
		Help: "The number of admission request failures where resources could not be aligned.", StabilityLevel: metrics.ALPHA})
	// TopologyAdmissionDuration is kubelet_topology_manager_admission_duration_ms.
	TopologyAdmissionDuration = metrics.NewHistogram(&metrics.HistogramOpts{Subsystem: "kubelet", Name: "topology_manager_admission_duration_ms",
		Help: "Duration in milliseconds to serve a pod admission request.", StabilityLevel: metrics.ALPHA,
		Buckets: metrics.ExponentialBuckets(.05, 2, 15)})
	// AlignedResources and AlignedResourcesFailures count the containers
	// (container scope) or pods (pod scope) the single-numa-node policy
	// aligned, or refused, by scope and boundary; shown once a topology
	// policy other than none runs, as upstream's.
	AlignedResources = metrics.NewCounterVec(&metrics.CounterOpts{Subsystem: "kubelet", Name: "container_aligned_compute_resources_count",
		Help: "Cumulative number of aligned compute resources allocated to containers by alignment type.", StabilityLevel: metrics.ALPHA},
		[]string{"scope", "boundary"})
	AlignedResourcesFailures = metrics.NewCounterVec(&metrics.CounterOpts{Subsystem: "kubelet", Name: "container_aligned_compute_resources_failure_count",
		Help: "Cumulative number of failures to allocate aligned compute resources to containers by alignment type.", StabilityLevel: metrics.ALPHA},
		[]string{"scope", "boundary"})
)

// Pods and containers, as upstream counts them.
var (
	// StartedContainers is kubelet_started_containers_total.
	StartedContainers = metrics.NewCounterVec(&metrics.CounterOpts{Subsystem: "kubelet", Name: "started_containers_total",
		Help: "Cumulative number of containers started", StabilityLevel: metrics.ALPHA}, []string{"container_type"})
	// StartedContainersErrors is kubelet_started_containers_errors_total.
	StartedContainersErrors = metrics.NewCounterVec(&metrics.CounterOpts{Subsystem: "kubelet", Name: "started_containers_errors_total",
		Help: "Cumulative number of errors when starting containers", StabilityLevel: metrics.ALPHA}, []string{"container_type", "code"})
	// ContainersPerPod is kubelet_containers_per_pod_count, observed as a
	// pod is admitted.
	ContainersPerPod = metrics.NewHistogram(&metrics.HistogramOpts{Subsystem: "kubelet", Name: "containers_per_pod_count",
		Help: "The number of containers per pod.", Buckets: metrics.ExponentialBuckets(1, 2, 5), StabilityLevel: metrics.ALPHA})
	// RunPodSandboxDuration is kubelet_run_podsandbox_duration_seconds.
	RunPodSandboxDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{Subsystem: "kubelet", Name: "run_podsandbox_duration_seconds",
		Help: "Duration in seconds of the run_podsandbox operations. Broken down by RuntimeClass.Handler.", StabilityLevel: metrics.ALPHA},
		[]string{"runtime_handler"})
	// PodStatusSyncDuration is kubelet_pod_status_sync_duration_seconds.
	PodStatusSyncDuration = metrics.NewHistogram(&metrics.HistogramOpts{Subsystem: "kubelet", Name: "pod_status_sync_duration_seconds",
		Help: "Duration in seconds to sync a pod status update. Measures time from detection of a change to pod status until the API is " +
			"successfully updated for that pod, even if multiple intevening changes to pod status occur.",
		Buckets: []float64{0.010, 0.050, 0.100, 0.500, 1, 5, 10, 20, 30, 45, 60}, StabilityLevel: metrics.ALPHA})
	// PodStartTotalDuration is kubelet_pod_start_total_duration_seconds.
	PodStartTotalDuration = metrics.NewHistogram(&metrics.HistogramOpts{Subsystem: "kubelet", Name: "pod_start_total_duration_seconds",
		Help: "Duration in seconds to start a pod since creation, including time to pull images and run init containers, measured from pod " +
			"creation timestamp to when all its containers are reported as started and observed via watch",
		Buckets: podStartBuckets, StabilityLevel: metrics.ALPHA})
)

var podStartBuckets = []float64{0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600}

var httpLabels = []string{"method", "path", "server_type", "long_running"}

func startupGauge(name, help string) *metrics.Gauge {
	return metrics.NewGauge(&metrics.GaugeOpts{Subsystem: "kubelet", Name: name, Help: help, StabilityLevel: metrics.ALPHA})
}

func nodeMetrics() []metrics.Registerable {
	return []metrics.Registerable{HTTPRequests, HTTPRequestsDuration, HTTPInflightRequests, cgroupVersion, metricsProvider,
		ServerCertTTL, ServerCertRotation, ClientRenewErrors, ServerRenewErrors,
		nodeStartup, nodeStartupPreAgent, nodeStartupPreRegistration, nodeStartupRegistration, nodeStartupPostRegistration,
		CPUPinningRequests, CPUPinningErrors, CPUSharedPool, CPUExclusive, MemoryPinningRequests, MemoryPinningErrors,
		TopologyAdmissions, TopologyAdmissionErrors, TopologyAdmissionDuration, AlignedResources, AlignedResourcesFailures,
		StartedContainers, StartedContainersErrors, ContainersPerPod, RunPodSandboxDuration, PodStartTotalDuration, PodStatusSyncDuration}
}

// SetNode records the node's facts: its cgroup version, where container
// stats come from ("cri": the runtime and the cgroups, not cAdvisor).
func SetNode(cgroupV2 bool) {
	cgroupVersion.Set(map[bool]float64{false: 1, true: 2}[cgroupV2])
	metricsProvider.WithLabelValues("cri").Set(1)
	ServerCertTTL.Set(math.Inf(1)) // until a serving certificate is known
}

// Startup is the node's start-up, as upstream's node startup latency
// tracker splits it: boot to the agent's start, the agent's start to its
// first registration attempt, the registration, and registration to the
// first Ready status.
type Startup struct {
	Boot, AgentStart, RegistrationStart, Registered, Ready time.Time
}

// Record sets the start-up gauges; called once a new node is first Ready.
// Without the boot time, the spans that start at boot are left out.
func (s Startup) Record() {
	nodeStartupPreRegistration.Set(s.RegistrationStart.Sub(s.AgentStart).Seconds())
	nodeStartupRegistration.Set(s.Registered.Sub(s.RegistrationStart).Seconds())
	nodeStartupPostRegistration.Set(s.Ready.Sub(s.Registered).Seconds())
	if !s.Boot.IsZero() {
		nodeStartupPreAgent.Set(s.AgentStart.Sub(s.Boot).Seconds())
		nodeStartup.Set(s.Ready.Sub(s.Boot).Seconds())
	}
}

// The node API's paths, bucketed as upstream buckets them for the HTTP
// metrics: the first path segment (two under /metrics), "other" when it is
// not one of the server's.
var httpBuckets = map[string]bool{"attach": true, "configz": true, "containerLogs": true, "debug": true, "exec": true, "healthz": true,
	"logs": true, "metrics": true, "metrics/cadvisor": true, "metrics/probes": true, "metrics/resource": true, "pods": true,
	"portForward": true, "run": true, "runningpods": true, "spec": true, "stats": true}

var httpMethods = map[string]bool{"OPTIONS": true, "GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true, "TRACE": true, "CONNECT": true}

// HTTPLabels are a request's label values: method, path bucket, server
// type ("readwrite", or "readonly" for the read-only port) and whether it is
// long-running (upstream's map, whose "portforward" never matches the
// "portForward" bucket).
func HTTPLabels(method, path string, readOnly bool) []string {
	if !httpMethods[method] {
		method = "other"
	}
	parts := strings.SplitN(strings.TrimPrefix(path, "/"), "/", 3)
	root := parts[0]
	if root == "metrics" && len(parts) > 1 {
		root += "/" + parts[1]
	}
	if !httpBuckets[root] {
		root = "other"
	}
	long := root == "exec" || root == "attach" || root == "debug"
	serverType := "readwrite"
	if readOnly {
		serverType = "readonly"
	}
	return []string{method, root, serverType, strconv.FormatBool(long)}
}
