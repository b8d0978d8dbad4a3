// Package podsync makes one pod's containers in the CRI runtime match its
// spec. plan.go decides (pure, no I/O); apply.go carries the decision out;
// status.go derives the pod's status from what the runtime reports.
package podsync

import (
	"encoding/json"
	"hash/fnv"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/dump"
)

// Labels and annotations on sandboxes and containers. They are the upstream
// kubelet's wire format, key for key and byte for byte: whichever agent runs
// next on the node (Bosun after the kubelet, or the kubelet after Bosun)
// reads them back to adopt what the other started, so nothing of Bosun's
// own may be added and nothing left out.
const (
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"

	annotationRestartCount        = "io.kubernetes.container.restartCount"
	annotationHash                = "io.kubernetes.container.hash"
	annotationTermMsgPath         = "io.kubernetes.container.terminationMessagePath"
	annotationTermMsgPolicy       = "io.kubernetes.container.terminationMessagePolicy"
	annotationPreStop             = "io.kubernetes.container.preStopHandler"
	annotationPorts               = "io.kubernetes.container.ports"
	annotationDeletionGracePeriod = "io.kubernetes.pod.deletionGracePeriod"
	annotationTerminationGracePrd = "io.kubernetes.pod.terminationGracePeriod"
)

// podLabels are the sandbox's labels: the pod's own, overridden by the three
// that identify it.
func podLabels(pod *corev1.Pod) map[string]string {
	labels := make(map[string]string, len(pod.Labels)+3)
	for k, v := range pod.Labels {
		labels[k] = v
	}
	labels[labelPodName], labels[labelPodNamespace], labels[labelPodUID] = pod.Name, pod.Namespace, string(pod.UID)
	return labels
}

func containerLabels(pod *corev1.Pod, name string) map[string]string {
	return map[string]string{
		labelPodName: pod.Name, labelPodNamespace: pod.Namespace, labelPodUID: string(pod.UID), labelContainerName: name,
	}
}

// ContainerHash is the value of io.kubernetes.container.hash, computed as
// the upstream kubelet v1.36 computes it: only the fields whose change means
// a new container (name and image; resources are resized in place), as
// JSON, printed the way k8s.io/utils/dump prints for hashing, into FNV-32a,
// in hex. An equal hash is what lets either agent adopt the other's
// containers; a different formula would restart every container on a swap.
func ContainerHash(c *corev1.Container) string {
	data, _ := json.Marshal(map[string]string{"name": c.Name, "image": c.Image})
	h := fnv.New32a()
	_, _ = h.Write([]byte(dump.ForHash(data)))
	return strconv.FormatUint(uint64(h.Sum32()), 16)
}

// containerHashes maps each container of the pod (init containers, sidecars
// among them, and app containers) to its ContainerHash.
func containerHashes(pod *corev1.Pod) map[string]string {
	hashes := make(map[string]string, len(pod.Spec.InitContainers)+len(pod.Spec.Containers))
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			hashes[list[i].Name] = ContainerHash(&list[i])
		}
	}
	return hashes
}

// containerAnnotations are a container's annotations, as upstream writes
// them (the restart count, hash and termination message settings are read
// back by both agents; the grace periods and preStop hook let an agent stop
// a container whose pod it no longer knows as that pod asked).
func containerAnnotations(pod *corev1.Pod, c *corev1.Container, restartCount int32) map[string]string {
	a := map[string]string{
		annotationHash:          ContainerHash(c),
		annotationRestartCount:  strconv.Itoa(int(restartCount)),
		annotationTermMsgPath:   c.TerminationMessagePath,
		annotationTermMsgPolicy: string(c.TerminationMessagePolicy),
	}
	if pod.DeletionGracePeriodSeconds != nil {
		a[annotationDeletionGracePeriod] = strconv.FormatInt(*pod.DeletionGracePeriodSeconds, 10)
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		a[annotationTerminationGracePrd] = strconv.FormatInt(*pod.Spec.TerminationGracePeriodSeconds, 10)
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		if raw, err := json.Marshal(c.Lifecycle.PreStop); err == nil {
			a[annotationPreStop] = string(raw)
		}
	}
	if len(c.Ports) > 0 {
		if raw, err := json.Marshal(c.Ports); err == nil {
			a[annotationPorts] = string(raw)
		}
	}
	return a
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
