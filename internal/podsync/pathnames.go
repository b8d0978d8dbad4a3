package podsync

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// UnsafePathName names the first of a pod's names that cannot become one
// component of a host path (the pod's folders, log folder and links, volume
// and container folders): empty, ".", "..", or holding a "/" or a NUL. The
// apiserver's validation already refuses them; this guard holds for pods
// from any source.
func UnsafePathName(pod *corev1.Pod) string {
	check := func(field, v string) string {
		if v == "" || v == "." || v == ".." || strings.ContainsAny(v, "/\x00") {
			return fmt.Sprintf("%s %q", field, v)
		}
		return ""
	}
	bad := check("namespace", pod.Namespace)
	if bad == "" {
		bad = check("name", pod.Name)
	}
	if bad == "" {
		bad = check("uid", string(pod.UID))
	}
	for i := 0; bad == "" && i < len(pod.Spec.Volumes); i++ {
		bad = check("volume name", pod.Spec.Volumes[i].Name)
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := 0; bad == "" && i < len(list); i++ {
			bad = check("container name", list[i].Name)
		}
	}
	for i := 0; bad == "" && i < len(pod.Spec.EphemeralContainers); i++ {
		bad = check("container name", pod.Spec.EphemeralContainers[i].Name)
	}
	return bad
}
