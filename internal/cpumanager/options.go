package cpumanager

import (
	"fmt"
	"sort"
	"strconv"
)

// The static policy's options (cpuManagerPolicyOptions), upstream's names.
const (
	OptionFullPCPUsOnly             = "full-pcpus-only"
	OptionDistributeCPUsAcrossNUMA  = "distribute-cpus-across-numa"
	OptionAlignBySocket             = "align-by-socket"
	OptionDistributeCPUsAcrossCores = "distribute-cpus-across-cores"
	OptionStrictCPUReservation      = "strict-cpu-reservation"
	OptionPreferAlignByUncoreCache  = "prefer-align-cpus-by-uncorecache"
)

// optionLevel is each option's maturity in v1.36: alpha options need the
// CPUManagerPolicyAlphaOptions gate, beta ones CPUManagerPolicyBetaOptions
// (on by default).
var optionLevel = map[string]string{
	OptionAlignBySocket:             "alpha",
	OptionDistributeCPUsAcrossCores: "alpha",
	OptionDistributeCPUsAcrossNUMA:  "beta",
	OptionFullPCPUsOnly:             "stable",
	OptionStrictCPUReservation:      "stable",
	OptionPreferAlignByUncoreCache:  "stable",
}

// Options are the parsed cpuManagerPolicyOptions, by name.
type Options map[string]bool

// ParseOptions reads cpuManagerPolicyOptions with upstream's rules and
// messages; alpha and beta say whether the CPUManagerPolicyAlphaOptions and
// CPUManagerPolicyBetaOptions gates are on.
func ParseOptions(opts map[string]string, alpha, beta bool) (Options, error) {
	out := Options{}
	names := make([]string, 0, len(opts))
	for name := range opts {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		switch optionLevel[name] {
		case "":
			return nil, fmt.Errorf("unknown CPU Manager Policy option: %q", name)
		case "alpha":
			if !alpha {
				return nil, fmt.Errorf("CPU Manager Policy Alpha-level Options not enabled, but option %q provided", name)
			}
		case "beta":
			if !beta {
				return nil, fmt.Errorf("CPU Manager Policy Beta-level Options not enabled, but option %q provided", name)
			}
		}
		on, err := strconv.ParseBool(opts[name])
		if err != nil {
			return nil, fmt.Errorf("bad value for option %q: %w", name, err)
		}
		out[name] = on
	}
	for _, pair := range [][2]string{
		{OptionFullPCPUsOnly, OptionDistributeCPUsAcrossCores},
		{OptionDistributeCPUsAcrossNUMA, OptionDistributeCPUsAcrossCores},
		{OptionPreferAlignByUncoreCache, OptionDistributeCPUsAcrossCores},
		{OptionPreferAlignByUncoreCache, OptionDistributeCPUsAcrossNUMA},
	} {
		if out[pair[0]] && out[pair[1]] {
			return nil, fmt.Errorf("static policy options %s and %s can not be used at the same time", pair[0], pair[1])
		}
	}
	return out, nil
}

// SMTAlignmentError is a container refused under full-pcpus-only: its CPUs
// would not fill whole cores. Reason and messages are upstream's.
type SMTAlignmentError struct {
	Requested, PerCore, Available int
	ByPhysicalCPUs                bool
}

func (e *SMTAlignmentError) Error() string {
	if e.ByPhysicalCPUs {
		return fmt.Sprintf("SMT Alignment Error: not enough free physical CPUs: available physical CPUs = %d, requested CPUs = %d, CPUs per core = %d", e.Available, e.Requested, e.PerCore)
	}
	return fmt.Sprintf("SMT Alignment Error: requested %d cpus not multiple cpus per core = %d", e.Requested, e.PerCore)
}

// Reason is the pod's status reason.
func (e *SMTAlignmentError) Reason() string { return "SMTAlignmentError" }
