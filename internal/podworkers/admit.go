package podworkers

import (
	"fmt"
	"strings"

	"github.com/bosun-dev/bosun/internal/podsync"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	utilsysctl "k8s.io/component-helpers/node/util/sysctl"
	"k8s.io/klog/v2"
)

// safeSysctls are the sysctls upstream lets any pod set.
var safeSysctls = map[string]bool{
	"kernel.shm_rmid_forced": true, "net.ipv4.ip_local_port_range": true, "net.ipv4.tcp_syncookies": true,
	"net.ipv4.ping_group_range": true, "net.ipv4.ip_unprivileged_port_start": true, "net.ipv4.ip_local_reserved_ports": true,
	"net.ipv4.tcp_keepalive_time": true, "net.ipv4.tcp_fin_timeout": true, "net.ipv4.tcp_keepalive_intvl": true,
	"net.ipv4.tcp_keepalive_probes": true, "net.ipv4.tcp_rmem": true, "net.ipv4.tcp_wmem": true,
}

// AppArmorEnabled tells whether the host enforces AppArmor profiles.
var AppArmorEnabled = podsync.HostAppArmorEnabled()

// needsAppArmor tells whether a pod asks for an AppArmor profile other than
// unconfined, in the fields or the older annotations.
func needsAppArmor(pod *corev1.Pod) bool {
	confined := func(p *corev1.AppArmorProfile) bool {
		return p != nil && p.Type != corev1.AppArmorProfileTypeUnconfined
	}
	if pod.Spec.SecurityContext != nil && confined(pod.Spec.SecurityContext.AppArmorProfile) {
		return true
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if c.SecurityContext != nil && confined(c.SecurityContext.AppArmorProfile) {
				return true
			}
		}
	}
	for k, v := range pod.Annotations {
		if strings.HasPrefix(k, corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix) && v != corev1.DeprecatedAppArmorBetaProfileNameUnconfined {
			return true
		}
	}
	return false
}

// AllowedUnsafeSysctls is allowedUnsafeSysctls (names, or prefixes ending in *).
var AllowedUnsafeSysctls []string

// sysctlRefusal says why a pod may not set sysctl name, or "" when it may:
// it must be safe or allowlisted, and not of a namespace the pod shares with
// the host (net.* with hostNetwork, IPC sysctls with hostIPC).
func sysctlRefusal(name string, hostNet, hostIPC bool) string {
	name = utilsysctl.NormalizeName(name)
	allowed := safeSysctls[name]
	for _, a := range AllowedUnsafeSysctls {
		a = utilsysctl.NormalizeName(a)
		if a == name || (strings.HasSuffix(a, "*") && strings.HasPrefix(name, strings.TrimSuffix(a, "*"))) {
			allowed = true
		}
	}
	if !allowed {
		return fmt.Sprintf("%q not allowlisted", name)
	}
	switch ns, _, _ := utilsysctl.GetNamespace(name); {
	case ns == utilsysctl.NetNamespace && hostNet, ns == utilsysctl.IPCNamespace && hostIPC:
		return fmt.Sprintf("%q not allowed with host %s enabled", name, ns)
	}
	return ""
}

// Admit decides whether a new pod may run beside the active ones on node,
// with upstream's reasons: UnsafeName (Bosun's own: a name that cannot become a
// path component), PodOSNotSupported, OutOfpods, OutOf<resource> (requests beyond
// allocatable), NodeAffinity (selector or required affinity mismatch), Taint
// (a NoExecute taint not tolerated).
func Admit(pod *corev1.Pod, active []*corev1.Pod, node *corev1.Node) (bool, string, string) {
	if bad := podsync.UnsafePathName(pod); bad != "" {
		return false, "UnsafeName", fmt.Sprintf("its %s cannot be used in a path on the node", bad)
	}
	if needsAppArmor(pod) && !AppArmorEnabled {
		return false, "AppArmor", "Cannot enforce AppArmor: AppArmor is not enabled on the host"
	}
	if node == nil {
		return true, "", ""
	}
	if pod.Spec.OS != nil && string(pod.Spec.OS.Name) != node.Labels[corev1.LabelOSStable] {
		return false, "PodOSNotSupported", fmt.Sprintf("Failed to admit pod as the OS field doesn't match node OS (pod OS %s, node OS %s)",
			pod.Spec.OS.Name, node.Labels[corev1.LabelOSStable])
	}
	if sc := pod.Spec.SecurityContext; sc != nil {
		for _, s := range sc.Sysctls {
			if why := sysctlRefusal(s.Name, pod.Spec.HostNetwork, pod.Spec.HostIPC); why != "" {
				return false, "SysctlForbidden", "Pod forbidden sysctl: " + why
			}
		}
	}
	if sc := pod.Spec.SecurityContext; sc != nil && sc.SupplementalGroupsPolicy != nil && *sc.SupplementalGroupsPolicy == corev1.SupplementalGroupsPolicyStrict &&
		(node.Status.Features == nil || node.Status.Features.SupplementalGroupsPolicy == nil || !*node.Status.Features.SupplementalGroupsPolicy) {
		// A runtime that does not know the policy would merge the image's
		// groups in silently: refuse instead.
		return false, "SupplementalGroupsPolicyNotSupported", "SupplementalGroupsPolicy=Strict is not supported in this node"
	}
	alloc := node.Status.Allocatable
	if pods, ok := alloc[corev1.ResourcePods]; ok && int64(len(active)+1) > pods.Value() {
		return false, "OutOfpods", fmt.Sprintf("Node didn't have enough resource: pods, requested: 1, used: %d, capacity: %d", len(active), pods.Value())
	}
	used := corev1.ResourceList{}
	for _, p := range active {
		addRequests(used, podsync.PodRequests(p))
	}
	for name, req := range podsync.PodRequests(pod) {
		capacity, ok := alloc[name]
		if !ok || req.IsZero() {
			continue
		}
		total := used[name].DeepCopy()
		total.Add(req)
		if total.Cmp(capacity) > 0 {
			u := used[name]
			return false, "OutOf" + string(name), fmt.Sprintf("Node didn't have enough resource: %s, requested: %d, used: %d, capacity: %d",
				name, quantityValue(name, req), quantityValue(name, u), quantityValue(name, capacity))
		}
	}
	if !matchesNode(pod, node) {
		return false, "NodeAffinity", "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
	}
	if hostPortsTaken(pod, active) {
		return false, "NodePorts", "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
	}
	for _, t := range node.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoExecute && !tolerates(pod.Spec.Tolerations, t) {
			return false, "Taint", fmt.Sprintf("Predicate TaintToleration failed: node(s) had untolerated taint {%s: %s}", t.Key, t.Value)
		}
	}
	return true, "", ""
}

func quantityValue(name corev1.ResourceName, q resource.Quantity) int64 {
	if name == corev1.ResourceCPU {
		return q.MilliValue()
	}
	return q.Value()
}

func addRequests(into, add corev1.ResourceList) {
	for k, v := range add {
		cur := into[k]
		cur.Add(v)
		into[k] = cur
	}
}

// matchesNode checks nodeSelector and required node affinity.
func matchesNode(pod *corev1.Pod, node *corev1.Node) bool {
	if len(pod.Spec.NodeSelector) > 0 && !labels.SelectorFromSet(pod.Spec.NodeSelector).Matches(labels.Set(node.Labels)) {
		return false
	}
	aff := pod.Spec.Affinity
	if aff == nil || aff.NodeAffinity == nil || aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return true
	}
	for _, term := range aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		if termMatches(term, node) {
			return true
		}
	}
	return false
}

var nodeSelectorOps = map[corev1.NodeSelectorOperator]selection.Operator{
	corev1.NodeSelectorOpIn: selection.In, corev1.NodeSelectorOpNotIn: selection.NotIn,
	corev1.NodeSelectorOpExists: selection.Exists, corev1.NodeSelectorOpDoesNotExist: selection.DoesNotExist,
	corev1.NodeSelectorOpGt: selection.GreaterThan, corev1.NodeSelectorOpLt: selection.LessThan,
}

func termMatches(term corev1.NodeSelectorTerm, node *corev1.Node) bool {
	if len(term.MatchExpressions) == 0 && len(term.MatchFields) == 0 {
		return false
	}
	for _, e := range term.MatchExpressions {
		op, ok := nodeSelectorOps[e.Operator]
		if !ok {
			return false
		}
		vals := e.Values
		if op == selection.Exists || op == selection.DoesNotExist {
			vals = nil
		}
		r, err := labels.NewRequirement(e.Key, op, vals)
		if err != nil || !r.Matches(labels.Set(node.Labels)) {
			return false
		}
	}
	for _, f := range term.MatchFields {
		if f.Key != "metadata.name" {
			return false
		}
		in := false
		for _, v := range f.Values {
			in = in || v == node.Name
		}
		if (f.Operator == corev1.NodeSelectorOpIn) != in {
			return false
		}
	}
	return true
}

func tolerates(tolerations []corev1.Toleration, t corev1.Taint) bool {
	for _, tol := range tolerations {
		if tol.ToleratesTaint(klog.Background(), &t, false) {
			return true
		}
	}
	return false
}

// hostPort is a (host IP, protocol, port) a pod binds on the node.
type hostPort struct {
	ip, protocol string
	port         int32
}

// hostPorts are the host ports of a pod's containers and sidecars (the
// containers that run as long as the pod), defaults filled in.
func hostPorts(pod *corev1.Pod) []hostPort {
	var out []hostPort
	add := func(c corev1.Container) {
		for _, p := range c.Ports {
			if p.HostPort <= 0 {
				continue
			}
			hp := hostPort{ip: p.HostIP, protocol: string(p.Protocol), port: p.HostPort}
			if hp.ip == "" {
				hp.ip = "0.0.0.0"
			}
			if hp.protocol == "" {
				hp.protocol = string(corev1.ProtocolTCP)
			}
			out = append(out, hp)
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			add(c)
		}
	}
	for _, c := range pod.Spec.Containers {
		add(c)
	}
	return out
}

// hostPortsTaken tells whether a host port of pod is bound by an active pod
// already: the same protocol and port on the same IP, or on any IP when
// either side binds 0.0.0.0.
func hostPortsTaken(pod *corev1.Pod, active []*corev1.Pod) bool {
	want := hostPorts(pod)
	if len(want) == 0 {
		return false
	}
	for _, other := range active {
		if other.UID == pod.UID {
			continue
		}
		for _, used := range hostPorts(other) {
			for _, w := range want {
				if w.port == used.port && w.protocol == used.protocol && (w.ip == used.ip || w.ip == "0.0.0.0" || used.ip == "0.0.0.0") {
					return true
				}
			}
		}
	}
	return false
}
