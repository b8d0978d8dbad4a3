package config

import (
	"fmt"
	"strconv"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// unsupported refuses the settings Bosun cannot honour yet, each with the
// field, the flag and what to set instead: a node agent that accepted them
// and went on without them would break what the operator asked for
// silently (exclusive CPUs, NUMA alignment).
// Their defaults are accepted, so both seed configurations load.
func unsupported(kc *kubeletv1beta1.KubeletConfiguration) []error {
	var errs []error
	refuse := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("not supported by Bosun yet: "+format, args...))
	}
	for _, name := range []string{"distribute-cpus-across-numa", "align-by-socket", "distribute-cpus-across-cores", "prefer-align-cpus-by-uncorecache"} {
		if on, _ := strconv.ParseBool(kc.CPUManagerPolicyOptions[name]); on {
			refuse("cpuManagerPolicyOptions (--cpu-manager-policy-options) %s; remove it (full-pcpus-only and strict-cpu-reservation are honoured)", name)
		}
	}
	for field, m := range map[string]map[string]string{"evictionHard (--eviction-hard)": kc.EvictionHard, "evictionSoft (--eviction-soft)": kc.EvictionSoft} {
		if _, ok := m["allocatableMemory.available"]; ok {
			refuse("%s signal allocatableMemory.available (eviction on the pods' allocatable memory); use memory.available", field)
		}
	}
	// Graceful node shutdown needs systemd-logind's inhibitor lock, which
	// Bosun does not take: pods would be killed without their grace period.
	if kc.ShutdownGracePeriod.Duration != 0 || kc.ShutdownGracePeriodCriticalPods.Duration != 0 || len(kc.ShutdownGracePeriodByPodPriority) > 0 {
		refuse("shutdownGracePeriod, shutdownGracePeriodCriticalPods and shutdownGracePeriodByPodPriority (graceful node shutdown); leave them unset (0)")
	}
	if kc.RegisterNode != nil && !*kc.RegisterNode {
		refuse("registerNode (--register-node) false (Bosun always registers its Node); leave it true")
	}
	if kc.RunOnce {
		refuse("runOnce (--runonce) (run the static pods once and exit); leave it false")
	}
	if kc.EnableControllerAttachDetach != nil && !*kc.EnableControllerAttachDetach {
		refuse("enableControllerAttachDetach (--enable-controller-attach-detach) false (Bosun does not attach volumes itself: the attach/detach controller does); leave it true")
	}
	if kc.KubeletCgroups != "" {
		refuse("kubeletCgroups (--kubelet-cgroups) %q (moving the agent into a cgroup); leave it empty and let the unit's slice hold the agent", kc.KubeletCgroups)
	}
	if kc.SystemCgroups != "" {
		refuse("systemCgroups (--system-cgroups) %q (moving the node's other processes into a cgroup); leave it empty", kc.SystemCgroups)
	}
	if kc.KernelMemcgNotification {
		refuse("kernelMemcgNotification (--kernel-memcg-notification) (memcg threshold notifications); leave it false: memory eviction is checked every housekeeping period")
	}
	if kc.EnableSystemLogQuery != nil && *kc.EnableSystemLogQuery {
		refuse("enableSystemLogQuery (/logs/?query=, the node's journal); leave it false: /logs/ serves the node's log files")
	}
	if kc.ShowHiddenMetricsForVersion != "" {
		refuse("showHiddenMetricsForVersion (--show-hidden-metrics-for-version) %q; leave it empty", kc.ShowHiddenMetricsForVersion)
	}
	if kc.Tracing != nil && (kc.Tracing.Endpoint != nil || kc.Tracing.SamplingRatePerMillion != nil) {
		refuse("tracing (OpenTelemetry spans); remove it")
	}
	return errs
}
