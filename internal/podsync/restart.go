package podsync

import (
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Container restart rules (ContainerRestartRules, beta and on in v1.35):
// a container's own restartPolicy and restartPolicyRules come before the
// pod's restartPolicy. The rules are tried in order on the exit code; the
// first that matches with action Restart restarts the container. A rule
// with action RestartAllContainers needs a feature the node does not
// declare (internal/nodefeatures refuses such pods), and falls back to the
// container's policy, as upstream's does with that feature off.

// exitRestarts says whether a container that exited with code restarts.
func exitRestarts(c *corev1.Container, spec *corev1.PodSpec, code int32) bool {
	if c.RestartPolicy != nil {
		if rule, ok := matchingRule(c, code); ok && rule.Action == corev1.ContainerRestartRuleActionRestart {
			return true
		}
		switch *c.RestartPolicy {
		case corev1.ContainerRestartPolicyAlways:
			return true
		case corev1.ContainerRestartPolicyOnFailure:
			return code != 0
		case corev1.ContainerRestartPolicyNever:
			return false
		}
	}
	switch spec.RestartPolicy {
	case corev1.RestartPolicyOnFailure:
		return code != 0
	case corev1.RestartPolicyNever:
		return false
	}
	return true // Always, the default
}

// matchingRule is the first rule whose exit codes match code.
func matchingRule(c *corev1.Container, code int32) (corev1.ContainerRestartRule, bool) {
	for _, rule := range c.RestartPolicyRules {
		if rule.ExitCodes == nil {
			continue
		}
		in := false
		for _, v := range rule.ExitCodes.Values {
			in = in || v == code
		}
		switch rule.ExitCodes.Operator {
		case corev1.ContainerRestartRuleOnExitCodesOpIn:
			if in {
				return rule, true
			}
		case corev1.ContainerRestartRuleOnExitCodesOpNotIn:
			if !in {
				return rule, true
			}
		}
	}
	return corev1.ContainerRestartRule{}, false
}

// mayRestart says whether a container can ever be restarted: by a rule,
// its own policy, or the pod's.
func mayRestart(c *corev1.Container, spec *corev1.PodSpec) bool {
	if c.RestartPolicy != nil {
		for _, rule := range c.RestartPolicyRules {
			if rule.Action == corev1.ContainerRestartRuleActionRestart {
				return true
			}
		}
		return *c.RestartPolicy != corev1.ContainerRestartPolicyNever
	}
	return spec.RestartPolicy != corev1.RestartPolicyNever
}

// anyMayRestart: some container of the pod can be restarted, so a pod
// whose sandbox is gone gets a new one.
func anyMayRestart(spec *corev1.PodSpec) bool {
	for i := range spec.InitContainers {
		if mayRestart(&spec.InitContainers[i], spec) {
			return true
		}
	}
	for i := range spec.Containers {
		if mayRestart(&spec.Containers[i], spec) {
			return true
		}
	}
	return false
}

// restarts applies the restart rules to a container that is not running.
func restarts(c *corev1.Container, spec *corev1.PodSpec, st *Container) bool {
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		return true // created but never started, or unknown: start it
	}
	return exitRestarts(c, spec, st.ExitCode)
}
