// Package kernel owns the kernel tunables the kubelet owns: with
// protectKernelDefaults the agent refuses to start when one differs from
// what it needs, otherwise it sets them, as upstream's container manager does.
package kernel

import (
	"errors"
	"fmt"
	"os"
	"strings"

	utilsysctl "k8s.io/component-helpers/node/util/sysctl"
	"k8s.io/klog/v2"
)

// Sysctl reads and writes /proc/sys.
type Sysctl interface {
	GetSysctl(name string) (int, error)
	SetSysctl(name string, value int) error
}

// Tunable is one kernel setting and the value the agent needs.
type Tunable struct {
	Name  string
	Value int
}

// Tunables are upstream's: overcommit always, the OOM killer rather than a
// panic, a reboot 10 s after a panic, a panic on oops, and room for a key
// per container.
var Tunables = []Tunable{
	{utilsysctl.VMOvercommitMemory, utilsysctl.VMOvercommitMemoryAlways},
	{utilsysctl.VMPanicOnOOM, utilsysctl.VMPanicOnOOMInvokeOOMKiller},
	{utilsysctl.KernelPanic, utilsysctl.KernelPanicRebootTimeout},
	{utilsysctl.KernelPanicOnOops, utilsysctl.KernelPanicOnOopsAlways},
	{utilsysctl.RootMaxKeys, utilsysctl.RootMaxKeysSetting},
	{utilsysctl.RootMaxBytes, utilsysctl.RootMaxBytesSetting},
}

// Setup checks (protect) or sets the tunables, returning every problem.
// Inside a user namespace a tunable that cannot be set is only logged, as
// upstream does.
func Setup(logger klog.Logger, s Sysctl, protect bool) error {
	return setup(logger, s, protect, inUserNamespace())
}

func setup(logger klog.Logger, s Sysctl, protect, userns bool) error {
	if s == nil {
		s = utilsysctl.New()
	}
	var errs []error
	for _, t := range Tunables {
		got, err := s.GetSysctl(t.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if got == t.Value {
			continue
		}
		if protect {
			errs = append(errs, fmt.Errorf("invalid kernel flag: %s, expected value: %d, actual value: %d", t.Name, t.Value, got))
			continue
		}
		logger.V(2).Info("Updating kernel flag", "flag", t.Name, "expectedValue", t.Value, "actualValue", got)
		if err := s.SetSysctl(t.Name, t.Value); err != nil {
			if userns {
				logger.Info("Cannot set a kernel flag inside a user namespace; leaving it", "flag", t.Name, "expectedValue", t.Value, "actualValue", got, "err", err)
				continue
			}
			errs = append(errs, fmt.Errorf("setting kernel flag %s to %d: %w", t.Name, t.Value, err))
		}
	}
	if len(errs) > 0 && protect {
		errs = append(errs, errors.New("protectKernelDefaults is true: set these sysctls (e.g. in /etc/sysctl.d/90-kubelet.conf), or set protectKernelDefaults: false to let the agent set them"))
	}
	return errors.Join(errs...)
}

// inUserNamespace reports whether this process runs in a user namespace
// other than the host's (its uid_map is not the whole range).
func inUserNamespace() bool {
	data, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(data))
	return !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
}
