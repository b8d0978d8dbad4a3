package dra

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"

	"github.com/bosun-dev/bosun/internal/devices"
)

// Extended resources backed by DRA (the DRAExtendedResource gate, beta and
// on in v1.36): a container may ask for an extended resource, such as
// example.com/gpu or deviceclass.resource.kubernetes.io/<class>, that no
// device plugin serves; the scheduler then allocates a ResourceClaim for the
// pod and names it, with which of its requests serves which container's
// resource, in status.extendedResourceClaimStatus. The node prepares that
// claim as one of the pod's own, gives each container the devices of its
// requests, and leaves those resources out of its own fit and out of the
// device plugins' allocation.

// ExtendedClaimName is the name of the pod's claim for extended resources,
// "" when it has none.
func ExtendedClaimName(pod *corev1.Pod) string {
	if s := pod.Status.ExtendedResourceClaimStatus; s != nil {
		return s.ResourceClaimName
	}
	return ""
}

// ClaimBacked says whether the pod's extended resource claim serves the
// container's request for the resource.
func ClaimBacked(pod *corev1.Pod, container string, res corev1.ResourceName) bool {
	s := pod.Status.ExtendedResourceClaimStatus
	if s == nil {
		return false
	}
	for _, m := range s.RequestMappings {
		if m.ContainerName == container && corev1.ResourceName(m.ResourceName) == res {
			return true
		}
	}
	return false
}

// WithoutClaimBacked returns the pod without the requests and limits its
// extended resource claim serves (a copy; the pod itself when there are
// none): what the node's fit and the device plugins see of it, as
// upstream's admission drops them before its fit.
func WithoutClaimBacked(pod *corev1.Pod) *corev1.Pod {
	s := pod.Status.ExtendedResourceClaimStatus
	if s == nil || len(s.RequestMappings) == 0 {
		return pod
	}
	out := pod.DeepCopy()
	strip := func(cs []corev1.Container) {
		for i := range cs {
			for _, list := range []corev1.ResourceList{cs[i].Resources.Requests, cs[i].Resources.Limits} {
				for name := range list {
					if isDRAExtendedResourceName(name) && ClaimBacked(pod, cs[i].Name, name) {
						delete(list, name)
					}
				}
			}
		}
	}
	strip(out.Spec.InitContainers)
	strip(out.Spec.Containers)
	return out
}

// isDRAExtendedResourceName is upstream's test (scheduler util): an
// extended resource name, or a device class's implicit one.
func isDRAExtendedResourceName(name corev1.ResourceName) bool {
	return strings.HasPrefix(string(name), resourceapi.ResourceDeviceClassPrefix) || devices.IsExtendedResourceName(string(name))
}

// extendedRequests are the requests of the pod's extended resource claim
// that serve the container: those mapped to a resource the container asks
// for (a non-zero request).
func extendedRequests(pod *corev1.Pod, c *corev1.Container) []string {
	s := pod.Status.ExtendedResourceClaimStatus
	if s == nil {
		return nil
	}
	var out []string
	for _, m := range s.RequestMappings {
		if m.ContainerName != c.Name {
			continue
		}
		name := corev1.ResourceName(m.ResourceName)
		if q, ok := c.Resources.Requests[name]; ok && !q.IsZero() && isDRAExtendedResourceName(name) {
			out = append(out, m.RequestName)
		}
	}
	return out
}
