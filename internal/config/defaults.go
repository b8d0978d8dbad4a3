package config

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// Upstream v1.36's defaults for kubelet.config.k8s.io/v1beta1, applied to every
// field the file and the flags left unset. They are the secure ones: anonymous
// auth off, Webhook authentication and authorization, no read-only port.

func setDur(d *metav1.Duration, v time.Duration) {
	if d.Duration == 0 {
		d.Duration = v
	}
}

func setPtr[T any](p **T, v T) {
	if *p == nil {
		*p = &v
	}
}

func setZero[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// SetDefaults fills every unset field of kc with upstream's default.
func SetDefaults(kc *kubeletv1beta1.KubeletConfiguration) {
	defaultServing(kc)
	defaultAuth(kc)
	defaultRates(kc)
	defaultNodeStatus(kc)
	defaultResources(kc)
	defaultRuntime(kc)
	defaultLogging(kc)
}

func defaultServing(kc *kubeletv1beta1.KubeletConfiguration) {
	setPtr(&kc.EnableServer, true)
	setZero(&kc.Address, "0.0.0.0")
	setZero(&kc.Port, 10250)
	setPtr(&kc.HealthzPort, 10248)
	setZero(&kc.HealthzBindAddress, "127.0.0.1")
	setPtr(&kc.EnableDebuggingHandlers, true)
	setPtr(&kc.EnableSystemLogHandler, true)
	setPtr(&kc.EnableProfilingHandler, true)
	setPtr(&kc.EnableDebugFlagsHandler, true)
	setDur(&kc.StreamingConnectionIdleTimeout, 4*time.Hour)
	setZero(&kc.ContentType, "application/vnd.kubernetes.protobuf")
}

func defaultAuth(kc *kubeletv1beta1.KubeletConfiguration) {
	setPtr(&kc.Authentication.Anonymous.Enabled, false)
	setPtr(&kc.Authentication.Webhook.Enabled, true)
	setDur(&kc.Authentication.Webhook.CacheTTL, 2*time.Minute)
	setZero(&kc.Authorization.Mode, kubeletv1beta1.KubeletAuthorizationModeWebhook)
	setDur(&kc.Authorization.Webhook.CacheAuthorizedTTL, 5*time.Minute)
	setDur(&kc.Authorization.Webhook.CacheUnauthorizedTTL, 30*time.Second)
}

func defaultRates(kc *kubeletv1beta1.KubeletConfiguration) {
	setPtr(&kc.RegistryPullQPS, int32(5))
	setZero(&kc.RegistryBurst, 10)
	setPtr(&kc.EventRecordQPS, int32(50))
	setZero(&kc.EventBurst, 100)
	setPtr(&kc.KubeAPIQPS, int32(50))
	setZero(&kc.KubeAPIBurst, 100)
	if kc.SerializeImagePulls == nil {
		serialize := kc.MaxParallelImagePulls == nil || *kc.MaxParallelImagePulls < 2
		kc.SerializeImagePulls = &serialize
	}
}

func defaultNodeStatus(kc *kubeletv1beta1.KubeletConfiguration) {
	setDur(&kc.SyncFrequency, time.Minute)
	setDur(&kc.FileCheckFrequency, 20*time.Second)
	setDur(&kc.HTTPCheckFrequency, 20*time.Second)
	if kc.NodeStatusReportFrequency.Duration == 0 {
		kc.NodeStatusReportFrequency = kc.NodeStatusUpdateFrequency
		setDur(&kc.NodeStatusReportFrequency, 5*time.Minute)
	}
	setDur(&kc.NodeStatusUpdateFrequency, 10*time.Second)
	setZero(&kc.NodeLeaseDurationSeconds, 40)
	setPtr(&kc.NodeStatusMaxImages, int32(50))
	setPtr(&kc.RegisterNode, true)
}

func defaultResources(kc *kubeletv1beta1.KubeletConfiguration) {
	setPtr(&kc.OOMScoreAdj, int32(-999))
	setDur(&kc.ImageMinimumGCAge, 2*time.Minute)
	setPtr(&kc.ImageGCHighThresholdPercent, int32(85))
	setPtr(&kc.ImageGCLowThresholdPercent, int32(80))
	setDur(&kc.VolumeStatsAggPeriod, time.Minute)
	setPtr(&kc.CgroupsPerQOS, true)
	setZero(&kc.CgroupDriver, "cgroupfs")
	setZero(&kc.CPUManagerPolicy, "none")
	setDur(&kc.CPUManagerReconcilePeriod, 10*time.Second)
	setZero(&kc.MemoryManagerPolicy, kubeletv1beta1.NoneMemoryManagerPolicy)
	setZero(&kc.TopologyManagerPolicy, kubeletv1beta1.NoneTopologyManagerPolicy)
	setZero(&kc.TopologyManagerScope, kubeletv1beta1.ContainerTopologyManagerScope)
	setZero(&kc.MaxPods, 110)
	if kc.PodPidsLimit == nil || *kc.PodPidsLimit < 0 {
		kc.PodPidsLimit = nil
		setPtr(&kc.PodPidsLimit, int64(-1))
	}
	setPtr(&kc.CPUCFSQuota, true)
	setPtr(&kc.CPUCFSQuotaPeriod, metav1.Duration{Duration: 100 * time.Millisecond})
	setZero(&kc.MaxOpenFiles, 1000000)
	setDur(&kc.EvictionPressureTransitionPeriod, 5*time.Minute)
	setPtr(&kc.MergeDefaultEvictionSettings, false)
	defaultEvictionHard(kc)
	if kc.EnforceNodeAllocatable == nil {
		kc.EnforceNodeAllocatable = []string{"pods"}
	}
	setPtr(&kc.FailSwapOn, true)
	setPtr(&kc.FailCgroupV1, true)
	if FeatureEnabled(kc, CrashLoopBackOffMax) {
		setPtr(&kc.CrashLoopBackOff.MaxContainerRestartPeriod, metav1.Duration{Duration: 5 * time.Minute})
	}
	setPtr(&kc.MemoryThrottlingFactor, 0.9)
	setZero(&kc.MemoryReservationPolicy, kubeletv1beta1.NoneMemoryReservationPolicy)
	setPtr(&kc.LocalStorageCapacityIsolation, true)
	setPtr(&kc.SeccompDefault, false)
}

func defaultRuntime(kc *kubeletv1beta1.KubeletConfiguration) {
	setDur(&kc.RuntimeRequestTimeout, 2*time.Minute)
	setZero(&kc.HairpinMode, kubeletv1beta1.PromiscuousBridge)
	setPtr(&kc.ResolverConfig, "/etc/resolv.conf")
	setPtr(&kc.EnableControllerAttachDetach, true)
	setPtr(&kc.MakeIPTablesUtilChains, true)
	setPtr(&kc.IPTablesMasqueradeBit, int32(14))
	setPtr(&kc.IPTablesDropBit, int32(15))
	setZero(&kc.ConfigMapAndSecretChangeDetectionStrategy, kubeletv1beta1.WatchChangeDetectionStrategy)
	setZero(&kc.VolumePluginDir, "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/")
	setZero(&kc.ContainerRuntimeEndpoint, "unix:///run/containerd/containerd.sock")
	setZero(&kc.PodLogsDir, "/var/log/pods")
	if FeatureEnabled(kc, EnsureSecretPulledImages) {
		setZero(&kc.ImagePullCredentialsVerificationPolicy, kubeletv1beta1.NeverVerifyPreloadedImages)
	}
}

func defaultLogging(kc *kubeletv1beta1.KubeletConfiguration) {
	setZero(&kc.ContainerLogMaxSize, "10Mi")
	setPtr(&kc.ContainerLogMaxFiles, int32(5))
	setPtr(&kc.ContainerLogMaxWorkers, int32(1))
	setPtr(&kc.ContainerLogMonitorInterval, metav1.Duration{Duration: 10 * time.Second})
	setZero(&kc.Logging.Format, "text")
	setDur(&kc.Logging.FlushFrequency.Duration, 5*time.Second)
	kc.Logging.FlushFrequency.SerializeAsString = true
}

// DefaultEvictionHard are upstream's hard eviction thresholds on Linux, used
// when evictionHard is unset (and merged into it with
// mergeDefaultEvictionSettings).
var DefaultEvictionHard = map[string]string{
	"memory.available":   "100Mi",
	"nodefs.available":   "10%",
	"nodefs.inodesFree":  "5%",
	"imagefs.available":  "15%",
	"imagefs.inodesFree": "5%",
}

func defaultEvictionHard(kc *kubeletv1beta1.KubeletConfiguration) {
	if kc.EvictionHard == nil {
		kc.EvictionHard = make(map[string]string, len(DefaultEvictionHard))
		for k, v := range DefaultEvictionHard {
			kc.EvictionHard[k] = v
		}
		return
	}
	if *kc.MergeDefaultEvictionSettings {
		for k, v := range DefaultEvictionHard {
			if _, set := kc.EvictionHard[k]; !set {
				kc.EvictionHard[k] = v
			}
		}
	}
}
