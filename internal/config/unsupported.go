package config

import (
	"fmt"
	"slices"

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
	if kc.CPUManagerPolicy != "" && kc.CPUManagerPolicy != "none" {
		refuse("cpuManagerPolicy (--cpu-manager-policy) %q (exclusive CPUs); set it to \"none\"", kc.CPUManagerPolicy)
	}
	if len(kc.CPUManagerPolicyOptions) > 0 {
		refuse("cpuManagerPolicyOptions (--cpu-manager-policy-options); remove them")
	}
	if kc.MemoryManagerPolicy != "" && kc.MemoryManagerPolicy != kubeletv1beta1.NoneMemoryManagerPolicy {
		refuse("memoryManagerPolicy (--memory-manager-policy) %q; set it to \"None\"", kc.MemoryManagerPolicy)
	}
	if len(kc.ReservedMemory) > 0 {
		refuse("reservedMemory (--reserved-memory) (per-NUMA memory reservations); remove it")
	}
	if kc.TopologyManagerPolicy != "" && kc.TopologyManagerPolicy != "none" {
		refuse("topologyManagerPolicy (--topology-manager-policy) %q (NUMA alignment); set it to \"none\"", kc.TopologyManagerPolicy)
	}
	if len(kc.TopologyManagerPolicyOptions) > 0 {
		refuse("topologyManagerPolicyOptions (--topology-manager-policy-options); remove them")
	}
	if kc.ReservedSystemCPUs != "" {
		refuse("reservedSystemCPUs (--reserved-cpus) %q; reserve CPU with systemReserved or kubeReserved instead", kc.ReservedSystemCPUs)
	}
	for field, m := range map[string]map[string]string{"evictionHard (--eviction-hard)": kc.EvictionHard, "evictionSoft (--eviction-soft)": kc.EvictionSoft} {
		if _, ok := m["allocatableMemory.available"]; ok {
			refuse("%s signal allocatableMemory.available (eviction on the pods' allocatable memory); use memory.available", field)
		}
	}
	for _, e := range kc.EnforceNodeAllocatable {
		if !slices.Contains([]string{"pods", "none"}, e) {
			refuse("enforceNodeAllocatable (--enforce-node-allocatable) %q (cgroups for reserved resources); Bosun enforces \"pods\" only", e)
		}
	}
	return errs
}
