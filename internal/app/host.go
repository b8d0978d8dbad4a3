package app

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bosun-dev/bosun/internal/podsync"
	"github.com/bosun-dev/bosun/internal/server"
)

// host is the node API's read-only view of the agent.
type host struct {
	pods    *pods
	configz any
	spec    any
	podList server.PodListCache // /pods' encoding, pod by pod
}

var _ server.Host = (*host)(nil)

// withStatus returns the pod with the status the agent holds, when it has one.
// withStatus is the pod with the latest status the agent holds. The copy is
// shallow (the status is already a copy of its own): callers only read it.
func (h *host) withStatus(p *corev1.Pod) *corev1.Pod {
	if st, ok := h.pods.status.Status(p.UID); ok {
		cp := *p
		cp.Status = st
		return &cp
	}
	return p
}

func (h *host) Pod(namespace, name string) (*corev1.Pod, bool) {
	if sp, ok := h.pods.staticPod(namespace, name); ok {
		return h.withStatus(sp), true
	}
	p, err := h.pods.source.Lister().Pods(namespace).Get(name)
	if err != nil {
		return nil, false
	}
	return h.withStatus(p), true
}

func (h *host) Pods() []*corev1.Pod {
	all, _ := h.pods.source.Lister().List(labels.Everything())
	out := make([]*corev1.Pod, 0, len(all))
	for _, p := range all {
		if p.Annotations["kubernetes.io/config.mirror"] == "" {
			out = append(out, h.withStatus(p))
		}
	}
	if h.pods.static != nil {
		for _, sp := range h.pods.static.StaticPods() {
			out = append(out, h.withStatus(sp))
		}
	}
	return out
}

// PodListJSON is /pods: Pods, each pod's JSON reused from the last request
// while its object (resource version) and its status here (version) are
// unchanged, gzip-compressed when gzipped.
func (h *host) PodListJSON(gzipped bool) ([]byte, error) {
	all, _ := h.pods.source.Lister().List(labels.Everything())
	entries := make([]server.PodEntry, 0, len(all))
	for _, p := range all {
		if p.Annotations["kubernetes.io/config.mirror"] != "" {
			continue
		}
		v, ok := h.pods.status.Version(p.UID)
		entries = append(entries, server.PodEntry{UID: p.UID, Key: podJSONKey(p, v, ok), Pod: func() (*corev1.Pod, string) {
			st, v, ok := h.pods.status.StatusVersion(p.UID)
			if !ok {
				return p, podJSONKey(p, 0, false)
			}
			cp := *p
			cp.Status = st
			return &cp, podJSONKey(p, v, true)
		}})
	}
	if h.pods.static != nil {
		for _, sp := range h.pods.static.StaticPods() {
			// A static pod's object is the agent's own; it is encoded anew.
			entries = append(entries, server.PodEntry{UID: sp.UID, Pod: func() (*corev1.Pod, string) { return h.withStatus(sp), "" }})
		}
	}
	data, err := h.podList.Encode(entries)
	if err != nil || !gzipped {
		return data, err
	}
	return h.podList.Gzip(data)
}

// podJSONKey names what a pod's JSON for /pods is built from: its object's
// resource version and the version of its status here (ok: the agent holds
// one). A pod without a resource version gets "", never reused.
func podJSONKey(p *corev1.Pod, statusVersion uint64, ok bool) string {
	switch {
	case p.ResourceVersion == "":
		return ""
	case !ok:
		return p.ResourceVersion + "/-"
	}
	return p.ResourceVersion + "/" + strconv.FormatUint(statusVersion, 10)
}

// RunningPods groups the runtime's running containers by pod.
func (h *host) RunningPods(ctx context.Context) ([]*corev1.Pod, error) {
	rt := h.pods.deps.rt
	sandboxes, err := rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
	if err != nil {
		return nil, err
	}
	ctrs, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		return nil, err
	}
	byUID := map[string]*corev1.Pod{}
	var out []*corev1.Pod
	for _, sb := range sandboxes {
		p := &corev1.Pod{}
		p.Name, p.Namespace, p.UID = sb.Metadata.GetName(), sb.Metadata.GetNamespace(), types.UID(sb.Metadata.GetUid())
		byUID[sb.Metadata.GetUid()] = p
		out = append(out, p)
	}
	for _, c := range ctrs {
		if p, ok := byUID[podsync.PodUIDOf(c.Labels)]; ok {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c.Metadata.GetName(), Image: c.Image.GetImage()})
		}
	}
	return out, nil
}

// Container finds the latest (or, with previous, the one before) instance of
// a container, with upstream's messages when there is none.
func (h *host) Container(ctx context.Context, pod *corev1.Pod, name string, previous bool) (string, string, error) {
	rp, err := h.pods.syncer.Inspect(ctx, string(pod.UID))
	if err != nil {
		return "", "", err
	}
	runs := rp.ContainersNamed(name)
	idx := 0
	if previous {
		idx = 1
	}
	if len(runs) <= idx {
		if previous {
			return "", "", fmt.Errorf("previous terminated container %q in pod %q not found", name, pod.Name)
		}
		return "", "", fmt.Errorf("container %q in pod %q is waiting to start: %s", name, pod.Name, waitingReason(pod, name))
	}
	return runs[idx].Id, runs[idx].LogPath, nil
}

func waitingReason(pod *corev1.Pod, name string) string {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		for _, cs := range list {
			if cs.Name == name && cs.State.Waiting != nil {
				return cs.State.Waiting.Reason
			}
		}
	}
	return "ContainerCreating"
}

func (h *host) Runtime() internalapi.RuntimeService { return h.pods.deps.rt.RuntimeService }
func (h *host) Healthy() error                      { return h.pods.pleg.Healthy() }
func (h *host) Configz() any                        { return h.configz }
func (h *host) Spec() any                           { return h.spec }
