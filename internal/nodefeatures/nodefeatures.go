// Package nodefeatures declares the node features of Kubernetes v1.36
// (node.status.declaredFeatures) that Bosun really has, through the
// registry upstream shares with the apiserver and the scheduler
// (k8s.io/component-helpers/nodedeclaredfeatures): the scheduler then
// keeps pods that need another feature off the node, and the apiserver
// refuses pod updates that need one. Admission refuses, with upstream's
// reason and message, a pod bound to the node anyway that needs a feature
// the node lacks.
package nodefeatures

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	versionutil "k8s.io/apimachinery/pkg/util/version"
	ndf "k8s.io/component-helpers/nodedeclaredfeatures"
)

// Gate is the feature gate that turns declaring features on.
const Gate = "NodeDeclaredFeatures"

// Has are the features of the registry Bosun has, each also a feature gate
// (on by default in v1.36): WebSocket streams handled by the node (exec and
// attach translated to the runtime's SPDY, port-forward tunnels), and
// resizes of running regular init containers. Not yet: pod-level resource
// resizes, restarting all containers on an exit rule, user namespaces with
// the host network.
var Has = []string{"ExtendWebSocketsToKubelet", "InPlacePodVerticalScalingInitContainers"}

// UnsupportedReason is upstream's admission reason for a pod that needs a
// feature the node does not declare.
const UnsupportedReason = "PodFeatureUnsupported"

// Declared is the node's declared features.
type Declared struct {
	fw      *ndf.Framework
	names   []string
	set     ndf.FeatureSet
	version *versionutil.Version
}

type gates func(string) bool

func (g gates) Enabled(name string) bool { return g(name) }

// New discovers the features to declare; enabled says whether a feature
// gate is on. With the NodeDeclaredFeatures gate off, nothing is declared
// and nothing is refused, as upstream.
func New(kubeletVersion string, enabled func(gate string) bool) (*Declared, error) {
	v, err := versionutil.Parse(kubeletVersion)
	if err != nil {
		return nil, fmt.Errorf("kubelet version %q: %w", kubeletVersion, err)
	}
	if !enabled(Gate) {
		return &Declared{version: v}, nil
	}
	has := map[string]bool{}
	for _, n := range Has {
		has[n] = true
	}
	fw := ndf.DefaultFramework
	names := fw.DiscoverNodeFeatures(&ndf.NodeConfiguration{
		FeatureGates: gates(func(n string) bool { return has[n] && enabled(n) }),
		Version:      v,
	})
	set, err := fw.MapSorted(names)
	if err != nil {
		return nil, err
	}
	return &Declared{fw: fw, names: names, set: set, version: v}, nil
}

// Names are the features for node.status.declaredFeatures, sorted (nil:
// none).
func (d *Declared) Names() []string { return append([]string(nil), d.names...) }

// Admit refuses a pod that needs a feature the node does not declare.
func (d *Declared) Admit(pod *corev1.Pod) (bool, string, string) {
	if d.fw == nil {
		return true, "", ""
	}
	reqs, err := d.fw.InferForPodScheduling(&ndf.PodInfo{Spec: &pod.Spec, Status: &pod.Status}, d.version)
	if err != nil {
		return false, UnsupportedReason, fmt.Sprintf("Failed to infer pod's feature requirements: %v", err)
	}
	if missing := d.missing(reqs); missing != "" {
		return false, UnsupportedReason, "Pod requires node features that are not available: " + missing
	}
	return true, "", ""
}

// MissingForUpdate names the features an update of a pod needs that the
// node does not declare ("" when none).
func (d *Declared) MissingForUpdate(old, updated *corev1.Pod) string {
	if d.fw == nil || old == nil {
		return ""
	}
	reqs, err := d.fw.InferForPodUpdate(&ndf.PodInfo{Spec: &old.Spec, Status: &old.Status},
		&ndf.PodInfo{Spec: &updated.Spec, Status: &updated.Status}, d.version)
	if err != nil {
		return ""
	}
	return d.missing(reqs)
}

func (d *Declared) missing(reqs ndf.FeatureSet) string {
	if reqs.IsEmpty() {
		return ""
	}
	m, err := d.fw.MatchNodeFeatureSet(reqs, d.set)
	if err != nil || m.IsMatch {
		return ""
	}
	return strings.Join(m.UnsatisfiedRequirements, ", ")
}
