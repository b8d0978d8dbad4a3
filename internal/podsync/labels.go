// Package podsync makes one pod's containers in the CRI runtime match its
// spec. plan.go decides (pure, no I/O); apply.go carries the decision out;
// status.go derives the pod's status from what the runtime reports.
package podsync

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Labels and annotations on sandboxes and containers: the same keys the
// upstream kubelet uses, so tools (crictl, containerd) show familiar names and
// a restarted agent can find what it started.
const (
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"
	labelManagedBy     = "io.kubernetes.managed-by" // "bosun"

	annotationRestartCount  = "io.kubernetes.container.restartCount"
	annotationHash          = "io.kubernetes.container.hash"
	annotationTermMsgPath   = "io.kubernetes.container.terminationMessagePath"
	annotationTermMsgPolicy = "io.kubernetes.container.terminationMessagePolicy"
)

func podLabels(pod *corev1.Pod) map[string]string {
	labels := map[string]string{
		labelPodName: pod.Name, labelPodNamespace: pod.Namespace, labelPodUID: string(pod.UID), labelManagedBy: "bosun",
	}
	for k, v := range pod.Labels {
		if _, ours := labels[k]; !ours {
			labels[k] = v
		}
	}
	return labels
}

func containerLabels(pod *corev1.Pod, name string) map[string]string {
	return map[string]string{
		labelPodName: pod.Name, labelPodNamespace: pod.Namespace, labelPodUID: string(pod.UID),
		labelContainerName: name, labelManagedBy: "bosun",
	}
}

// PodUIDOf reads the pod UID label of a sandbox or container.
func PodUIDOf(labels map[string]string) string { return labels[labelPodUID] }

// ContainerNameOf reads the container name label.
func ContainerNameOf(labels map[string]string) string { return labels[labelContainerName] }

func restartCountOf(annotations map[string]string) int32 {
	n, _ := strconv.Atoi(annotations[annotationRestartCount])
	return int32(n)
}

// RuntimePod is what the runtime has for one pod: its sandboxes (newest
// first) and every container of them with full status.
type RuntimePod struct {
	Sandboxes  []*runtimeapi.PodSandboxStatus // newest first
	Containers []*Container                   // of all sandboxes, newest first
}

// Container is a container's CRI status and the sandbox it belongs to.
type Container struct {
	*runtimeapi.ContainerStatus        // state, exit code, times, labels
	SandboxID                   string // the sandbox it runs in
}

// LatestSandbox is the newest sandbox, or nil.
func (r *RuntimePod) LatestSandbox() *runtimeapi.PodSandboxStatus {
	if r == nil || len(r.Sandboxes) == 0 {
		return nil
	}
	return r.Sandboxes[0]
}

// ContainersNamed returns the statuses of one container name, newest first.
func (r *RuntimePod) ContainersNamed(name string) []*Container {
	var out []*Container
	if r == nil {
		return nil
	}
	for _, c := range r.Containers {
		if c.Metadata.GetName() == name {
			out = append(out, c)
		}
	}
	return out
}

// Latest returns the newest status of a container name, or nil.
func (r *RuntimePod) Latest(name string) *Container {
	if cs := r.ContainersNamed(name); len(cs) > 0 {
		return cs[0]
	}
	return nil
}
