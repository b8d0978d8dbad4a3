package nodestatus

import (
	"fmt"
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bosun-dev/bosun/internal/version"
)

// Params are the node's fixed facts, from the configuration and the machine.
type Params struct {
	NodeName       string            // the Node's name
	Hostname       string            // the Hostname address
	NodeIPs        []net.IP          // InternalIP addresses
	Labels         map[string]string // --node-labels
	Taints         []corev1.Taint    // registerWithTaints
	MaxPods        int32             // maxPods
	PodsPerCore    int32             // podsPerCore (0: none): pods ≤ podsPerCore × cores
	ProviderID     string            // providerID: spec.providerID of a Node this agent creates
	Port           int32             // the kubelet API port
	SystemReserved map[string]string // systemReserved
	KubeReserved   map[string]string // kubeReserved
	EvictionHard   map[string]string // evictionHard thresholds
	AttachDetach   bool              // enableControllerAttachDetach
	Machine        *Machine          // hardware and OS
	// DeclaredFeatures are node.status.declaredFeatures (internal/nodefeatures).
	DeclaredFeatures []string
}

// Observed is what changes between status updates.
type Observed struct {
	RuntimeVersion string                  // "containerd://1.6.20"
	RuntimeReady   bool                    // the runtime and its network are ready
	NotReadyReason string                  // why not, when not
	Images         []corev1.ContainerImage // images on the node, largest first
	MemoryPressure bool                    // eviction signals
	DiskPressure   bool
	PIDPressure    bool
	// SupplementalGroupsPolicy says whether the runtime applies
	// supplementalGroupsPolicy (nil: the runtime does not say).
	SupplementalGroupsPolicy *bool
	RuntimeHandlers          []corev1.NodeRuntimeHandler // handlers the runtime reports
	// Device plugin resources: every device in capacity, the healthy ones in
	// allocatable; resources whose plugin is gone for good drop to zero.
	DeviceCapacity, DeviceAllocatable corev1.ResourceList
	RemovedDevices                    []string
	// VolumesInUse are the attachable volumes mounted or being mounted on
	// the node, which the attach/detach controller must not detach.
	VolumesInUse []corev1.UniqueVolumeName
}

// NewNode is the Node object the agent registers.
func NewNode(p Params) *corev1.Node {
	labels := map[string]string{
		corev1.LabelHostname:      p.NodeName,
		corev1.LabelOSStable:      p.Machine.OperatingSystem,
		corev1.LabelArchStable:    p.Machine.Architecture,
		"beta.kubernetes.io/os":   p.Machine.OperatingSystem,
		"beta.kubernetes.io/arch": p.Machine.Architecture,
	}
	for k, v := range p.Labels {
		labels[k] = v
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: p.NodeName, Labels: labels, Annotations: map[string]string{}},
		Spec:       corev1.NodeSpec{Taints: append([]corev1.Taint(nil), p.Taints...), ProviderID: p.ProviderID},
	}
	if p.AttachDetach {
		node.Annotations["volumes.kubernetes.io/controller-managed-attach-detach"] = "true"
	}
	return node
}

// Capacity is the node's total resources.
func Capacity(p Params) corev1.ResourceList {
	m := p.Machine
	c := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(m.Cores), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(m.MemoryBytes, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(maxPods(p), resource.DecimalSI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(m.RootFSBytes, resource.BinarySI),
	}
	for name, q := range m.HugePages {
		c[corev1.ResourceName(name)] = q
	}
	return c
}

// maxPods is maxPods, or podsPerCore × cores when that is fewer, as upstream.
func maxPods(p Params) int64 {
	n := int64(p.MaxPods)
	if p.PodsPerCore > 0 && p.Machine != nil {
		n = min(n, int64(p.PodsPerCore)*int64(p.Machine.Cores))
	}
	return n
}

// PodsLimit is what the pods together may use when enforceNodeAllocatable
// names "pods", as upstream enforces it on the kubepods cgroup: capacity
// minus kube-reserved and system-reserved (the eviction thresholds are not
// taken off).
func PodsLimit(p Params) corev1.ResourceList {
	return Allocatable(Params{SystemReserved: p.SystemReserved, KubeReserved: p.KubeReserved}, Capacity(p))
}

// Allocatable is capacity minus kube-reserved, system-reserved and the hard
// eviction thresholds (memory.available from memory, nodefs.available from
// ephemeral storage), never below zero.
func Allocatable(p Params, capacity corev1.ResourceList) corev1.ResourceList {
	alloc := capacity.DeepCopy()
	subtract := func(name corev1.ResourceName, q resource.Quantity) {
		v, ok := alloc[name]
		if !ok {
			return
		}
		v.Sub(q)
		if v.Sign() < 0 {
			v = *resource.NewQuantity(0, v.Format)
		}
		alloc[name] = v
	}
	for _, reserved := range []map[string]string{p.KubeReserved, p.SystemReserved} {
		for name, v := range reserved {
			if q, err := resource.ParseQuantity(v); err == nil {
				subtract(corev1.ResourceName(name), q)
			}
		}
	}
	for signal, res := range map[string]corev1.ResourceName{"memory.available": corev1.ResourceMemory, "nodefs.available": corev1.ResourceEphemeralStorage} {
		if v, ok := p.EvictionHard[signal]; ok {
			subtract(res, thresholdQuantity(v, capacity[res]))
		}
	}
	return alloc
}

// thresholdQuantity turns "10%" of total or "100Mi" into a quantity.
func thresholdQuantity(v string, total resource.Quantity) resource.Quantity {
	if pct, ok := strings.CutSuffix(v, "%"); ok {
		var f float64
		if _, err := fmt.Sscanf(pct, "%g", &f); err == nil {
			return *resource.NewQuantity(int64(float64(total.Value())*f/100), resource.BinarySI)
		}
		return resource.Quantity{}
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return resource.Quantity{}
	}
	return q
}

// SetStatus fills node.Status from the fixed facts and the latest
// observation. Conditions keep their transition time unless they change;
// their heartbeat is now.
// It returns the node events upstream's status setters record for the
// change: a pressure condition made or turned (NodeHasSufficientMemory,
// NodeHasDiskPressure, ...), Ready turned (NodeReady, NodeNotReady).
func SetStatus(node *corev1.Node, p Params, o Observed, now metav1.Time) []string {
	st := &node.Status
	capacity := Capacity(p)
	for name, q := range o.DeviceCapacity {
		capacity[name] = q
	}
	for _, name := range o.RemovedDevices {
		capacity[corev1.ResourceName(name)] = *resource.NewQuantity(0, resource.DecimalSI)
	}
	// Resources others put on the node (extended resources an operator or a
	// test patched into the status) are kept, as upstream keeps them.
	for name, q := range st.Capacity {
		if _, ours := capacity[name]; !ours {
			capacity[name] = q
		}
	}
	st.Capacity = capacity
	st.Allocatable = Allocatable(p, capacity)
	for name, q := range o.DeviceAllocatable {
		st.Allocatable[name] = q
	}
	st.Addresses = nil
	for _, ip := range p.NodeIPs {
		st.Addresses = append(st.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
	}
	st.Addresses = append(st.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: p.Hostname})
	st.DaemonEndpoints.KubeletEndpoint.Port = p.Port
	st.NodeInfo = corev1.NodeSystemInfo{
		MachineID: p.Machine.MachineID, SystemUUID: p.Machine.SystemUUID, BootID: p.Machine.BootID,
		KernelVersion: p.Machine.KernelVersion, OSImage: p.Machine.OSImage,
		ContainerRuntimeVersion: o.RuntimeVersion, KubeletVersion: version.Kubernetes,
		OperatingSystem: p.Machine.OperatingSystem, Architecture: p.Machine.Architecture,
	}
	if p.Machine.SwapBytes != 0 {
		swap := p.Machine.SwapBytes
		st.NodeInfo.Swap = &corev1.NodeSwapStatus{Capacity: &swap}
	}
	st.Images = o.Images
	st.Features = nil
	if o.SupplementalGroupsPolicy != nil {
		st.Features = &corev1.NodeFeatures{SupplementalGroupsPolicy: o.SupplementalGroupsPolicy}
	}
	st.RuntimeHandlers = o.RuntimeHandlers
	st.DeclaredFeatures = p.DeclaredFeatures
	st.VolumesInUse = o.VolumesInUse
	var events []string
	for _, c := range conditions(o) {
		if turned, made := setCondition(st, c, now); turned && (!made || c.Type != corev1.NodeReady) {
			events = append(events, conditionEvents[c.Type][c.Status])
		}
	}
	return events
}

// conditionEvents are upstream's node events for a condition's new status.
var conditionEvents = map[corev1.NodeConditionType]map[corev1.ConditionStatus]string{
	corev1.NodeMemoryPressure: {corev1.ConditionTrue: "NodeHasInsufficientMemory", corev1.ConditionFalse: "NodeHasSufficientMemory"},
	corev1.NodeDiskPressure:   {corev1.ConditionTrue: "NodeHasDiskPressure", corev1.ConditionFalse: "NodeHasNoDiskPressure"},
	corev1.NodePIDPressure:    {corev1.ConditionTrue: "NodeHasInsufficientPID", corev1.ConditionFalse: "NodeHasSufficientPID"},
	corev1.NodeReady:          {corev1.ConditionTrue: "NodeReady", corev1.ConditionFalse: "NodeNotReady"},
}

func conditions(o Observed) []corev1.NodeCondition {
	cond := func(t corev1.NodeConditionType, on bool, yesReason, yesMsg, noReason, noMsg string) corev1.NodeCondition {
		if on {
			return corev1.NodeCondition{Type: t, Status: corev1.ConditionTrue, Reason: yesReason, Message: yesMsg}
		}
		return corev1.NodeCondition{Type: t, Status: corev1.ConditionFalse, Reason: noReason, Message: noMsg}
	}
	return []corev1.NodeCondition{
		cond(corev1.NodeMemoryPressure, o.MemoryPressure, "KubeletHasInsufficientMemory", "kubelet has insufficient memory available",
			"KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
		cond(corev1.NodeDiskPressure, o.DiskPressure, "KubeletHasDiskPressure", "kubelet has disk pressure",
			"KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
		cond(corev1.NodePIDPressure, o.PIDPressure, "KubeletHasInsufficientPID", "kubelet has insufficient PID available",
			"KubeletHasSufficientPID", "kubelet has sufficient PID available"),
		cond(corev1.NodeReady, o.RuntimeReady, "KubeletReady", "kubelet is posting ready status",
			"KubeletNotReady", o.NotReadyReason),
	}
}

// setCondition updates or adds c, keeping the transition time when only the
// heartbeat changes. It says whether the status turned (or the condition
// was made) and whether it was made.
func setCondition(st *corev1.NodeStatus, c corev1.NodeCondition, now metav1.Time) (turned, made bool) {
	c.LastHeartbeatTime = now
	for i := range st.Conditions {
		old := &st.Conditions[i]
		if old.Type != c.Type {
			continue
		}
		turned = old.Status != c.Status
		c.LastTransitionTime = old.LastTransitionTime
		if turned || c.LastTransitionTime.IsZero() {
			c.LastTransitionTime = now
		}
		*old = c
		return turned, false
	}
	c.LastTransitionTime = now
	st.Conditions = append(st.Conditions, c)
	return true, true
}
