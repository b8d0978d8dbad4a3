package config

import (
	"errors"
	"fmt"
	utilsysctl "k8s.io/component-helpers/node/util/sysctl"
	"math"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // logging.format: json
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/cpuset"

	"github.com/bosun-dev/bosun/internal/cpumanager"
	"github.com/bosun-dev/bosun/internal/pullrecords"
	"github.com/bosun-dev/bosun/internal/topology"
)

// CgroupRootSupported says whether Bosun can put pods under root with the
// cgroup driver: its systemd driver uses kubepods.slice only, so a cgroupRoot
// other than "/" goes with cgroupfs alone. The configuration's driver is
// checked at load; the runtime's, which wins at start, by the agent and the
// preflight.
func CgroupRootSupported(driver, root string) bool {
	return driver != "systemd" || root == "" || root == "/"
}

// Validate checks a defaulted configuration. Each error names the field (and
// the flag that sets it) and the bad value.
func Validate(kc *kubeletv1beta1.KubeletConfiguration) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("invalid configuration: "+format, args...))
	}
	between := func(field string, v, lo, hi int64) {
		if v < lo || v > hi {
			bad("%s %d must be between %d and %d, inclusive", field, v, lo, hi)
		}
	}
	nonNegative := func(field string, v int64) {
		if v < 0 {
			bad("%s %d must not be a negative number", field, v)
		}
	}
	between("port (--port)", int64(kc.Port), 1, 65535)
	between("readOnlyPort (--read-only-port)", int64(kc.ReadOnlyPort), 0, 65535)
	if *kc.HealthzPort != 0 {
		between("healthzPort (--healthz-port)", int64(*kc.HealthzPort), 1, 65535)
	}
	between("oomScoreAdj (--oom-score-adj)", int64(*kc.OOMScoreAdj), -1000, 1000)
	between("imageGCHighThresholdPercent (--image-gc-high-threshold)", int64(*kc.ImageGCHighThresholdPercent), 0, 100)
	between("imageGCLowThresholdPercent (--image-gc-low-threshold)", int64(*kc.ImageGCLowThresholdPercent), 0, 100)
	if *kc.ImageGCLowThresholdPercent >= *kc.ImageGCHighThresholdPercent {
		bad("imageGCLowThresholdPercent (--image-gc-low-threshold) %d must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) %d",
			*kc.ImageGCLowThresholdPercent, *kc.ImageGCHighThresholdPercent)
	}
	if kc.ImageMinimumGCAge.Duration < 0 {
		bad("imageMinimumGCAge %v must not be negative", kc.ImageMinimumGCAge.Duration)
	}
	if kc.ImageMaximumGCAge.Duration < 0 {
		bad("imageMaximumGCAge %v must not be negative", kc.ImageMaximumGCAge.Duration)
	}
	if kc.ImageMaximumGCAge.Duration > 0 && kc.ImageMaximumGCAge.Duration <= kc.ImageMinimumGCAge.Duration {
		bad("imageMaximumGCAge %v must be greater than imageMinimumGCAge %v", kc.ImageMaximumGCAge.Duration, kc.ImageMinimumGCAge.Duration)
	}
	between("iptablesMasqueradeBit (--iptables-masquerade-bit)", int64(*kc.IPTablesMasqueradeBit), 0, 31)
	between("iptablesDropBit (--iptables-drop-bit)", int64(*kc.IPTablesDropBit), 0, 31)
	nonNegative("maxPods (--max-pods)", int64(kc.MaxPods))
	if un := kc.UserNamespaces; un != nil && un.IDsPerPod != nil && *un.IDsPerPod != 0 {
		switch ids := *un.IDsPerPod; {
		case ids < 65536:
			bad("userNamespaces.idsPerPod %d must not be less than 65536", ids)
		case ids%65536 != 0:
			bad("userNamespaces.idsPerPod %d must be a multiple of 65536", ids)
		case ids > math.MaxUint32:
			bad("userNamespaces.idsPerPod %d must not be more than %d", ids, int64(math.MaxUint32))
		}
	}
	nonNegative("podsPerCore (--pods-per-core)", int64(kc.PodsPerCore))
	if f := kc.MemoryThrottlingFactor; f != nil && (*f <= 0 || *f > 1.0) {
		bad("memoryThrottlingFactor %v must be greater than 0 and less than or equal to 1.0", *f)
	}
	switch kc.MemoryReservationPolicy {
	case kubeletv1beta1.NoneMemoryReservationPolicy:
	case kubeletv1beta1.TieredReservationMemoryReservationPolicy:
		bad("memoryReservationPolicy %q requires MemoryQoS feature gate to be enabled", kc.MemoryReservationPolicy)
	default:
		bad("option %q specified for memoryReservationPolicy. Valid options are %q or %q", kc.MemoryReservationPolicy,
			kubeletv1beta1.NoneMemoryReservationPolicy, kubeletv1beta1.TieredReservationMemoryReservationPolicy)
	}
	for k, v := range kc.QOSReserved {
		if k != "memory" {
			bad("qosReserved (--qos-reserved): cannot reserve %q resource", k)
		} else if pct, err := strconv.Atoi(strings.TrimSuffix(v, "%")); err != nil || !strings.HasSuffix(v, "%") || pct < 0 || pct > 100 {
			bad("qosReserved (--qos-reserved): failed to parse percentage %q for %q resource: a percentage between 0%% and 100%%", v, k)
		}
	}
	if kc.ContainerLogMaxWorkers != nil && *kc.ContainerLogMaxWorkers < 1 {
		bad("containerLogMaxWorkers must be greater than or equal to 1")
	}
	if kc.ContainerLogMonitorInterval != nil && kc.ContainerLogMonitorInterval.Duration < 3*time.Second {
		bad("containerLogMonitorInterval must be a positive time duration greater than or equal to 3s")
	}
	if m := kc.CrashLoopBackOff.MaxContainerRestartPeriod; m != nil {
		if !FeatureEnabled(kc, CrashLoopBackOffMax) {
			bad("the %s feature gate is off, so crashLoopBackOff.maxContainerRestartPeriod must not be set", CrashLoopBackOffMax)
		} else if m.Duration < time.Second || m.Duration > 5*time.Minute {
			bad("crashLoopBackOff.maxContainerRestartPeriod %s must be between 1s and 300s", m.Duration)
		}
	}
	nonNegative("kubeAPIQPS (--kube-api-qps)", int64(*kc.KubeAPIQPS))
	nonNegative("kubeAPIBurst (--kube-api-burst)", int64(kc.KubeAPIBurst))
	nonNegative("eventRecordQPS (--event-qps)", int64(*kc.EventRecordQPS))
	nonNegative("eventBurst (--event-burst)", int64(kc.EventBurst))
	nonNegative("registryPullQPS (--registry-qps)", int64(*kc.RegistryPullQPS))
	nonNegative("registryBurst (--registry-burst)", int64(kc.RegistryBurst))
	nonNegative("maxOpenFiles (--max-open-files)", kc.MaxOpenFiles)
	if kc.NodeLeaseDurationSeconds <= 0 {
		bad("nodeLeaseDurationSeconds %d must be greater than 0", kc.NodeLeaseDurationSeconds)
	}
	if kc.MaxParallelImagePulls != nil {
		if *kc.MaxParallelImagePulls < 1 {
			bad("maxParallelImagePulls %d must be a positive number", *kc.MaxParallelImagePulls)
		} else if *kc.MaxParallelImagePulls > 1 && *kc.SerializeImagePulls {
			bad("maxParallelImagePulls cannot be larger than 1 unless serializeImagePulls (--serialize-image-pulls) is set to false")
		}
	}
	if *kc.ContainerLogMaxFiles < 2 {
		bad("containerLogMaxFiles %d must be greater than 1", *kc.ContainerLogMaxFiles)
	}
	if q, err := resource.ParseQuantity(kc.ContainerLogMaxSize); err != nil || q.Sign() <= 0 {
		bad("containerLogMaxSize %q must be a positive quantity such as 10Mi", kc.ContainerLogMaxSize)
	}
	if kc.ContainerRuntimeEndpoint == "" {
		bad("the containerRuntimeEndpoint (--container-runtime-endpoint) was not specified or empty")
	}
	if kc.CgroupRoot != "" && !strings.HasPrefix(kc.CgroupRoot, "/") {
		bad("cgroupRoot (--cgroup-root) %q must be an absolute cgroup path", kc.CgroupRoot)
	}
	if !CgroupRootSupported(kc.CgroupDriver, kc.CgroupRoot) {
		bad("cgroupRoot (--cgroup-root) %q with cgroupDriver systemd is not supported by Bosun (its systemd driver puts pods under kubepods.slice only); use cgroupDriver cgroupfs or leave cgroupRoot unset", kc.CgroupRoot)
	}
	if FeatureEnabled(kc, EnsureSecretPulledImages) {
		if _, err := pullrecords.NewPolicy(string(kc.ImagePullCredentialsVerificationPolicy), kc.PreloadedImagesVerificationAllowlist); err != nil {
			errs = append(errs, err)
		}
	} else {
		if kc.ImagePullCredentialsVerificationPolicy != "" {
			bad("imagePullCredentialsVerificationPolicy must not be set if the %s feature gate is not enabled", EnsureSecretPulledImages)
		}
		if len(kc.PreloadedImagesVerificationAllowlist) > 0 {
			bad("preloadedImagesVerificationAllowlist must not be set if the %s feature gate is not enabled", EnsureSecretPulledImages)
		}
	}
	errs = append(errs, validateEnums(kc)...)
	errs = append(errs, validateReservedCPUs(kc)...)
	errs = append(errs, validateEnforceNodeAllocatable(kc)...)
	errs = append(errs, unsupported(kc)...)
	errs = append(errs, validateAddresses(kc)...)
	errs = append(errs, validateEviction(kc)...)
	errs = append(errs, validateTaints(kc)...)
	for _, e := range logsapi.Validate(&kc.Logging, nil, field.NewPath("logging")) {
		bad("%s (--logging-format, --v, --vmodule)", e.Error())
	}
	for _, pattern := range kc.AllowedUnsafeSysctls {
		if ns, _, prefixed := utilsysctl.GetNamespace(pattern); ns == utilsysctl.UnknownNamespace {
			what := "sysctl"
			if prefixed {
				what = "sysctls"
			}
			bad("allowedUnsafeSysctls (--allowed-unsafe-sysctls): the %s %q are not known to be namespaced: a pod may set only sysctls of its own IPC or network namespace", what, pattern)
		}
	}
	return errors.Join(errs...)
}

func validateEnums(kc *kubeletv1beta1.KubeletConfiguration) []error {
	var errs []error
	oneOf := func(field, v string, allowed ...string) {
		if !slices.Contains(allowed, v) {
			errs = append(errs, fmt.Errorf("invalid configuration: %s %q must be one of %q", field, v, allowed))
		}
	}
	oneOf("authorization.mode (--authorization-mode)", string(kc.Authorization.Mode), "AlwaysAllow", "Webhook")
	oneOf("cgroupDriver (--cgroup-driver)", kc.CgroupDriver, "cgroupfs", "systemd")
	oneOf("hairpinMode (--hairpin-mode)", kc.HairpinMode, "promiscuous-bridge", "hairpin-veth", "none")
	oneOf("cpuManagerPolicy (--cpu-manager-policy)", kc.CPUManagerPolicy, "none", "static")
	oneOf("topologyManagerPolicy (--topology-manager-policy)", kc.TopologyManagerPolicy, "none", "best-effort", "restricted", "single-numa-node")
	oneOf("topologyManagerScope (--topology-manager-scope)", kc.TopologyManagerScope, "container", "pod")
	switch kc.MemoryManagerPolicy {
	case "None", "Static":
	case "BestEffort":
		errs = append(errs, fmt.Errorf("invalid configuration: memoryManagerPolicy (--memory-manager-policy) %q is not available for platform \"linux\"", kc.MemoryManagerPolicy))
	default:
		errs = append(errs, fmt.Errorf("invalid configuration: memoryManagerPolicy (--memory-manager-policy) %q must be one of [\"None\" \"Static\"]", kc.MemoryManagerPolicy))
	}
	seen := map[string]bool{}
	for _, r := range kc.ReservedMemory {
		names := make([]string, 0, len(r.Limits))
		for name := range r.Limits {
			names = append(names, string(name))
		}
		sort.Strings(names)
		for _, name := range names {
			q := r.Limits[corev1.ResourceName(name)]
			if name != "memory" && !strings.HasPrefix(name, corev1.ResourceHugePagesPrefix) {
				errs = append(errs, fmt.Errorf("invalid configuration: reservedMemory (--reserved-memory): the limit type %q for NUMA node %d is not supported, only [memory hugepages-<HugePageSize>] is accepted", name, r.NumaNode))
			}
			if q.IsZero() {
				errs = append(errs, fmt.Errorf("invalid configuration: reservedMemory (--reserved-memory): reserved memory may not be zero for NUMA node %d and resource %q", r.NumaNode, name))
			}
			key := fmt.Sprintf("%d/%s", r.NumaNode, name)
			if seen[key] {
				errs = append(errs, fmt.Errorf("invalid configuration: reservedMemory (--reserved-memory): the reserved memory has a duplicate value for NUMA node %d and resource %q", r.NumaNode, name))
			}
			seen[key] = true
		}
	}
	if kc.CPUManagerPolicy == "static" {
		if _, err := cpumanager.ParseOptions(kc.CPUManagerPolicyOptions, FeatureEnabled(kc, "CPUManagerPolicyAlphaOptions"), FeatureEnabled(kc, "CPUManagerPolicyBetaOptions")); err != nil {
			errs = append(errs, fmt.Errorf("invalid configuration: cpuManagerPolicyOptions (--cpu-manager-policy-options): %w", err))
		}
	} else if len(kc.CPUManagerPolicyOptions) > 0 {
		errs = append(errs, fmt.Errorf("invalid configuration: cpuManagerPolicyOptions (--cpu-manager-policy-options) need cpuManagerPolicy (--cpu-manager-policy) static; the None policy takes no options"))
	}
	if kc.TopologyManagerPolicy != "none" {
		if _, err := topology.ParseOptions(kc.TopologyManagerPolicyOptions); err != nil {
			errs = append(errs, fmt.Errorf("invalid configuration: topologyManagerPolicyOptions (--topology-manager-policy-options): %w", err))
		}
	}
	oneOf("configMapAndSecretChangeDetectionStrategy", string(kc.ConfigMapAndSecretChangeDetectionStrategy), "Get", "Cache", "Watch")
	oneOf("memorySwap.swapBehavior", kc.MemorySwap.SwapBehavior, "", "NoSwap", "LimitedSwap")
	if kc.TLSMinVersion != "" {
		oneOf("tlsMinVersion (--tls-min-version)", kc.TLSMinVersion, "VersionTLS10", "VersionTLS11", "VersionTLS12", "VersionTLS13")
	}
	return errs
}

// validateEnforceNodeAllocatable checks enforceNodeAllocatable as
// upstream: known entries, once each, a reserved cgroup named for each
// reserved entry, never a reserved entry with its compressible twin, "none"
// alone, and cgroupsPerQOS on.
func validateEnforceNodeAllocatable(kc *kubeletv1beta1.KubeletConfiguration) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("invalid configuration: "+format, args...))
	}
	has := func(v string) bool { return slices.Contains(kc.EnforceNodeAllocatable, v) }
	for _, pair := range [][2]string{{"system-reserved", "system-reserved-compressible"}, {"kube-reserved", "kube-reserved-compressible"}} {
		if has(pair[0]) && has(pair[1]) {
			bad("both %q and %q cannot be specified together in enforceNodeAllocatable (--enforce-node-allocatable)", pair[0], pair[1])
		}
	}
	seen := map[string]bool{}
	for _, v := range kc.EnforceNodeAllocatable {
		if seen[v] {
			bad("duplicated enforcements %q in enforceNodeAllocatable (--enforce-node-allocatable)", v)
			continue
		}
		seen[v] = true
		switch v {
		case "pods":
		case "system-reserved", "system-reserved-compressible":
			if kc.SystemReservedCgroup == "" {
				bad("systemReservedCgroup (--system-reserved-cgroup) must be specified when %q or %q included in enforceNodeAllocatable (--enforce-node-allocatable)", "system-reserved", "system-reserved-compressible")
			}
		case "kube-reserved", "kube-reserved-compressible":
			if kc.KubeReservedCgroup == "" {
				bad("kubeReservedCgroup (--kube-reserved-cgroup) must be specified when %q or %q included in enforceNodeAllocatable (--enforce-node-allocatable)", "kube-reserved", "kube-reserved-compressible")
			}
		case "none":
			if len(kc.EnforceNodeAllocatable) > 1 {
				bad("enforceNodeAllocatable (--enforce-node-allocatable) may not contain additional enforcements when %q is specified", "none")
			}
			continue
		default:
			bad("option %q specified for enforceNodeAllocatable (--enforce-node-allocatable). Valid options are %q, %q, %q, %q, %q or %q",
				v, "pods", "system-reserved", "system-reserved-compressible", "kube-reserved", "kube-reserved-compressible", "none")
			continue
		}
		if kc.CgroupsPerQOS != nil && !*kc.CgroupsPerQOS {
			bad("cgroupsPerQOS (--cgroups-per-qos) must be set to true when %q contained in enforceNodeAllocatable (--enforce-node-allocatable)", v)
		}
	}
	return errs
}

// validateReservedCPUs checks reservedSystemCPUs as upstream: a CPU list,
// and not beside the reserved cgroups.
func validateReservedCPUs(kc *kubeletv1beta1.KubeletConfiguration) []error {
	if kc.ReservedSystemCPUs == "" {
		return nil
	}
	var errs []error
	if kc.SystemReservedCgroup != "" || kc.KubeReservedCgroup != "" {
		errs = append(errs, errors.New("invalid configuration: can't use reservedSystemCPUs (--reserved-cpus) with systemReservedCgroup (--system-reserved-cgroup) or kubeReservedCgroup (--kube-reserved-cgroup)"))
	}
	if _, err := cpuset.Parse(kc.ReservedSystemCPUs); err != nil {
		errs = append(errs, fmt.Errorf("invalid configuration: unable to parse reservedSystemCPUs (--reserved-cpus) %v, error: %w", kc.ReservedSystemCPUs, err))
	}
	return errs
}

// ApplyReservedCPUs makes reservedSystemCPUs the node's whole CPU
// reservation, as upstream: system-reserved cpu becomes their count and
// kube-reserved cpu is dropped. Validated configurations only.
func ApplyReservedCPUs(kc *kubeletv1beta1.KubeletConfiguration) {
	set, err := cpuset.Parse(kc.ReservedSystemCPUs)
	if err != nil || set.Size() == 0 {
		return
	}
	delete(kc.KubeReserved, "cpu")
	if kc.SystemReserved == nil {
		kc.SystemReserved = map[string]string{}
	}
	kc.SystemReserved["cpu"] = strconv.Itoa(set.Size())
}

func validateAddresses(kc *kubeletv1beta1.KubeletConfiguration) []error {
	var errs []error
	for field, v := range map[string]string{"address (--address)": kc.Address, "healthzBindAddress (--healthz-bind-address)": kc.HealthzBindAddress} {
		if net.ParseIP(v) == nil {
			errs = append(errs, fmt.Errorf("invalid configuration: %s %q is not an IP address", field, v))
		}
	}
	for _, ip := range kc.ClusterDNS {
		if net.ParseIP(ip) == nil {
			errs = append(errs, fmt.Errorf("invalid configuration: clusterDNS (--cluster-dns) entry %q is not an IP address", ip))
		}
	}
	if (kc.TLSCertFile == "") != (kc.TLSPrivateKeyFile == "") {
		errs = append(errs, fmt.Errorf("invalid configuration: tlsCertFile (--tls-cert-file) and tlsPrivateKeyFile (--tls-private-key-file) must be set together"))
	}
	return errs
}

// evictionSignals are the signals evictionHard/Soft may name.
var evictionSignals = []string{"memory.available", "nodefs.available", "nodefs.inodesFree", "imagefs.available",
	"imagefs.inodesFree", "containerfs.available", "containerfs.inodesFree", "pid.available", "allocatableMemory.available"}

func validateEviction(kc *kubeletv1beta1.KubeletConfiguration) []error {
	var errs []error
	for field, m := range map[string]map[string]string{"evictionHard (--eviction-hard)": kc.EvictionHard, "evictionSoft (--eviction-soft)": kc.EvictionSoft} {
		for signal, v := range m {
			if !slices.Contains(evictionSignals, signal) {
				errs = append(errs, fmt.Errorf("invalid configuration: %s: unknown signal %q (one of %q)", field, signal, evictionSignals))
				continue
			}
			if _, err := ParseThreshold(v); err != nil {
				errs = append(errs, fmt.Errorf("invalid configuration: %s[%s] %q: %w", field, signal, v, err))
			}
		}
	}
	for signal := range kc.EvictionSoft {
		if _, ok := kc.EvictionSoftGracePeriod[signal]; !ok {
			errs = append(errs, fmt.Errorf("invalid configuration: evictionSoft (--eviction-soft)[%s] has no grace period in evictionSoftGracePeriod (--eviction-soft-grace-period)", signal))
		}
	}
	for signal, v := range kc.EvictionSoftGracePeriod {
		if !slices.Contains(evictionSignals, signal) {
			errs = append(errs, fmt.Errorf("invalid configuration: evictionSoftGracePeriod (--eviction-soft-grace-period): unknown signal %q (one of %q)", signal, evictionSignals))
		} else if d, err := time.ParseDuration(v); err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("invalid configuration: evictionSoftGracePeriod (--eviction-soft-grace-period)[%s] %q is not a duration of 0 or more (\"1m30s\")", signal, v))
		}
	}
	for signal, v := range kc.EvictionMinimumReclaim {
		if !slices.Contains(evictionSignals, signal) {
			errs = append(errs, fmt.Errorf("invalid configuration: evictionMinimumReclaim (--eviction-minimum-reclaim): unknown signal %q (one of %q)", signal, evictionSignals))
		} else if _, err := ParseThreshold(v); err != nil {
			errs = append(errs, fmt.Errorf("invalid configuration: evictionMinimumReclaim (--eviction-minimum-reclaim)[%s] %q: %w", signal, v, err))
		}
	}
	if kc.EvictionMaxPodGracePeriod < 0 {
		errs = append(errs, fmt.Errorf("invalid configuration: evictionMaxPodGracePeriod (--eviction-max-pod-grace-period) %d must not be negative", kc.EvictionMaxPodGracePeriod))
	}
	return errs
}

// ParseThreshold reads an eviction threshold: a percentage ("10%") or a
// quantity ("100Mi"). It returns the percentage (0..100) or the quantity.
func ParseThreshold(v string) (any, error) {
	if p, ok := strings.CutSuffix(v, "%"); ok {
		var f float64
		if _, err := fmt.Sscanf(p, "%g", &f); err != nil || f < 0 || f > 100 {
			return nil, fmt.Errorf("percentage must be between 0%% and 100%%")
		}
		return f, nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return nil, fmt.Errorf("not a percentage or a quantity: %w", err)
	}
	if q.Sign() < 0 {
		return nil, fmt.Errorf("must not be negative")
	}
	return q, nil
}

func validateTaints(kc *kubeletv1beta1.KubeletConfiguration) []error {
	var errs []error
	for _, t := range kc.RegisterWithTaints {
		switch t.Effect {
		case "NoSchedule", "PreferNoSchedule", "NoExecute":
		default:
			errs = append(errs, fmt.Errorf("invalid configuration: registerWithTaints (--register-with-taints): taint %s has effect %q (want NoSchedule, PreferNoSchedule or NoExecute)", t.Key, t.Effect))
		}
		if t.Key == "" {
			errs = append(errs, fmt.Errorf("invalid configuration: registerWithTaints (--register-with-taints): a taint has an empty key"))
		}
	}
	return errs
}

// ValidateHost checks the settings that depend on the host's cgroup version,
// as upstream's OS validation does at start: failCgroupV1 (true by default
// since v1.35) refuses a cgroup v1 host, and singleProcessOOMKill cannot be
// false there.
func ValidateHost(kc *kubeletv1beta1.KubeletConfiguration, cgroupV2 bool) error {
	if cgroupV2 {
		return nil
	}
	if kc.FailCgroupV1 == nil || *kc.FailCgroupV1 {
		return errors.New("the agent is configured to not run on a host using cgroup v1 (failCgroupV1, --fail-cgroupv1, is true, " +
			"the default since v1.35): move the node to cgroup v2, or set failCgroupV1: false in the KubeletConfiguration " +
			"(cgroup v1 support is unsupported and will be removed in a future release)")
	}
	if kc.SingleProcessOOMKill != nil && !*kc.SingleProcessOOMKill {
		return errors.New("invalid configuration: singleProcessOOMKill must not be explicitly set to false when using cgroup v1")
	}
	return nil
}
