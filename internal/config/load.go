package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	logsapi "k8s.io/component-base/logs/api/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// Config is everything the command line and the config file say.
type Config struct {
	Options                                       // node-level flags
	Kubelet  *kubeletv1beta1.KubeletConfiguration // defaulted and validated
	Warnings []string                             // to log once logging is set up
}

// ErrHelp is returned by Load for --help; Usage holds the text to print.
var ErrHelp = pflag.ErrHelp

// removedFeatureGates are gates the seed's files set that upstream has since
// made permanent and removed; naming them is harmless and only warned about.
var removedFeatureGates = map[string]string{
	"RotateKubeletClientCertificate": "GA since v1.19 and removed; rotateCertificates controls it",
	"RotateKubeletServerCertificate": "GA since v1.27 and removed; serverTLSBootstrap controls it",
}

// Load parses args (without the program name) and the --config file they
// name. Flags override the file, as upstream's kubelet does.
func Load(args []string) (*Config, error) {
	// First pass: find --config and reject unknown or malformed flags.
	var probe Options
	var scratch kubeletv1beta1.KubeletConfiguration
	fs := newFlagSet(&probe, &scratch)
	var notices bytes.Buffer
	fs.SetOutput(&notices)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w (see --help)", err)
	}
	if probe.ShowHelp {
		return nil, ErrHelp
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q: bosun takes only flags (see --help)", fs.Args())
	}
	if f := fs.Lookup("allow-privileged"); f != nil && f.Changed && f.Value.String() == "false" {
		return nil, errors.New("--allow-privileged=false cannot be honoured: the flag was removed in v1.15 and Bosun runs the " +
			"privileged containers the apiserver admits; forbid them with the apiserver's --allow-privileged=false or Pod Security admission, " +
			"and drop the flag here")
	}
	cfg := &Config{Kubelet: &kubeletv1beta1.KubeletConfiguration{}}
	for _, line := range strings.Split(strings.TrimSpace(notices.String()), "\n") {
		if line != "" {
			cfg.Warnings = append(cfg.Warnings, line)
		}
	}
	if probe.ConfigFile != "" {
		data, err := os.ReadFile(probe.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("failed to load kubelet config file %s: %w", probe.ConfigFile, err)
		}
		kc, warnings, err := Decode(probe.ConfigFile, data)
		if err != nil {
			return nil, err
		}
		cfg.Kubelet = kc
		cfg.Warnings = append(cfg.Warnings, warnings...)
	}
	// Second pass: the flags that were given win over the file.
	fs = newFlagSet(&cfg.Options, cfg.Kubelet)
	fs.SetOutput(&bytes.Buffer{})
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	// --v wins over logging.verbosity, as upstream; without it the file's
	// verbosity is the agent's.
	if f := fs.Lookup("v"); f != nil && f.Changed {
		cfg.Kubelet.Logging.Verbosity = logsapi.VerbosityLevel(cfg.Verbosity)
	} else {
		cfg.Verbosity = int(cfg.Kubelet.Logging.Verbosity)
	}
	SetDefaults(cfg.Kubelet)
	cfg.Warnings = append(cfg.Warnings, featureGateWarnings(cfg.Kubelet.FeatureGates)...)
	if err := Validate(cfg.Kubelet); err != nil {
		return nil, err
	}
	ApplyReservedCPUs(cfg.Kubelet)
	return cfg, nil
}

// EnsureSecretPulledImages is KEP-2535's gate (beta, on by default in v1.36).
const EnsureSecretPulledImages = "KubeletEnsureSecretPulledImages"

// CrashLoopBackOffMax is the gate of crashLoopBackOff.maxContainerRestartPeriod
// (beta, on by default in v1.36).
const CrashLoopBackOffMax = "KubeletCrashLoopBackOffMax"

// honouredFeatureGates are the gates Bosun acts on, with their v1.36 defaults.
var honouredFeatureGates = map[string]bool{
	EnsureSecretPulledImages: true,
	CrashLoopBackOffMax:      true,
	// node.status.declaredFeatures and the features Bosun declares
	// (internal/nodefeatures)
	"NodeDeclaredFeatures":                    true,
	"ExtendWebSocketsToKubelet":               true,
	"InPlacePodVerticalScalingInitContainers": true,
	// The pod lifecycle event generator follows the runtime's container
	// events (internal/pleg). Upstream's gate is alpha and off in v1.36;
	// Bosun's is on, and falls back to relisting where the runtime has no
	// event stream. EventedPLEG=false relists every second, as upstream.
	EventedPLEG: true,
	// Devices' health in the containers' allocatedResourcesStatus
	// (internal/devices, internal/dra), with the DRA drivers' messages.
	ResourceHealthStatus:          true,
	"ResourceHealthStatusMessage": true,
	// Extended resources served by a DRA claim the scheduler made
	// (internal/dra/extended.go).
	DRAExtendedResource: true,
	// Which cpuManagerPolicyOptions may be given (internal/cpumanager).
	"CPUManagerPolicyAlphaOptions": false,
	"CPUManagerPolicyBetaOptions":  true,
}

// DRAExtendedResource is the gate of extended resources backed by DRA
// (beta, on by default in v1.36).
const DRAExtendedResource = "DRAExtendedResource"

// EventedPLEG is the gate of the event-driven pod lifecycle event
// generator.
const EventedPLEG = "EventedPLEG"

// ResourceHealthStatus is the gate of the devices' health in container
// statuses (beta, on by default in v1.36).
const ResourceHealthStatus = "ResourceHealthStatus"

// FeatureEnabled says whether a gate Bosun honours is on.
func FeatureEnabled(kc *kubeletv1beta1.KubeletConfiguration, gate string) bool {
	if on, set := kc.FeatureGates[gate]; set {
		return on
	}
	return honouredFeatureGates[gate]
}

func featureGateWarnings(gates map[string]bool) []string {
	names := make([]string, 0, len(gates))
	for n := range gates {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		if _, ok := honouredFeatureGates[n]; ok {
			continue
		}
		if why, ok := removedFeatureGates[n]; ok {
			out = append(out, fmt.Sprintf("feature gate %s=%t is ignored: %s", n, gates[n], why))
		} else {
			out = append(out, fmt.Sprintf("feature gate %s=%t has no effect in Bosun", n, gates[n]))
		}
	}
	return out
}

// Usage returns the --help text: the flags in one list sorted by name, as
// the upstream kubelet prints them.
func Usage() string {
	var o Options
	var kc kubeletv1beta1.KubeletConfiguration
	fs := newFlagSet(&o, &kc)
	fs.SortFlags = true
	return "bosun: a Kubernetes node agent, a drop-in for the kubelet.\n\nUsage:\n  bosun [flags]\n" +
		"  bosun join --server <url> --token <id.secret> --discovery-token-ca-cert-hash sha256:<hash>   join this node (bosun join --help)\n" +
		"  bosun preflight [flags]   check this node for the agent, writing nothing\n\nFlags:\n" + fs.FlagUsages()
}
