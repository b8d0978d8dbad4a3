package podsync

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RunningStaticPod finds a ready sandbox of a static pod with pod's name
// and namespace, started (by this agent or another) after the manifest was
// last modified, whose running containers all match the manifest (same
// names, same hash), and returns its pod UID; "" when there is none or it
// does not match. A manifest changed since the pod started never matches,
// so an edit still replaces the pod.
func (s *Syncer) RunningStaticPod(ctx context.Context, pod *corev1.Pod, modTime time.Time) types.UID {
	sandboxes, err := s.cfg.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{labelPodName: pod.Name, labelPodNamespace: pod.Namespace},
	})
	if err != nil {
		return ""
	}
	hashes := containerHashes(pod)
	for _, sb := range sandboxes {
		uid := sb.Labels[labelPodUID]
		if uid == "" || uid == string(pod.UID) || sb.Annotations["kubernetes.io/config.source"] != "file" ||
			time.Unix(0, sb.CreatedAt).Before(modTime) {
			continue
		}
		ctrs, err := s.cfg.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: sb.Id})
		if err != nil {
			continue
		}
		matched, mismatched := 0, false
		for _, c := range ctrs {
			if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				continue
			}
			want, ok := hashes[c.Labels[labelContainerName]]
			if !ok || c.Annotations[annotationHash] != want {
				mismatched = true
				break
			}
			matched++
		}
		if matched > 0 && !mismatched {
			return types.UID(uid)
		}
	}
	return ""
}
