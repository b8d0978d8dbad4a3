package podsync

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PlanInput is everything a pod's plan depends on.
type PlanInput struct {
	Pod       *corev1.Pod                                     // desired
	Runtime   *RuntimePod                                     // actual
	Hashes    map[string]string                               // container name -> hash of its spec
	InBackOff func(container string, finished time.Time) bool // whether a restart must wait
	Started   func(c *corev1.Container, id string) bool       // a running sidecar's startup probe passed (nil: running is enough)
}

// Plan is what to do to bring a pod's containers to its spec.
type Plan struct {
	KillPod        bool              // stop every container and the sandbox first
	CreateSandbox  bool              // run a new sandbox
	SandboxAttempt uint32            // the new sandbox's attempt number
	Kill           []string          // container IDs to stop (spec changed)
	Start          []string          // container names to start, in order (init containers first)
	Waiting        map[string]string // container name -> why it is not started now (CrashLoopBackOff)
	InitFailed     string            // an init container failed and the pod will not restart it
}

// allRan: a Never pod whose containers all ran gets no new sandbox.
func allRan(in PlanInput) bool {
	for _, c := range in.Pod.Spec.Containers {
		if in.Runtime.Latest(c.Name) == nil {
			return false
		}
	}
	return true
}

// ComputePlan decides the actions for one pod. It does no I/O.
func ComputePlan(in PlanInput) Plan {
	p := Plan{Waiting: map[string]string{}}
	sb := in.Runtime.LatestSandbox()
	var current *RuntimePod
	if sb == nil || sb.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		if sb != nil && !anyMayRestart(&in.Pod.Spec) && allRan(in) {
			return p // a finished pod none of whose containers restarts stays as it is
		}
		p.KillPod = sb != nil || len(in.Runtime.Containers) > 0
		p.CreateSandbox = true
		if sb != nil {
			p.SandboxAttempt = sb.Metadata.GetAttempt() + 1
		}
		current = &RuntimePod{} // every container starts over in the new sandbox
	} else {
		current = containersOf(in.Runtime, sb.Id)
	}
	if !planInit(in, current, &p) {
		return p
	}
	for _, c := range in.Pod.Spec.Containers {
		planContainer(in, current, c, &p)
	}
	// Ephemeral containers run once, when added, and are never restarted.
	for _, ec := range in.Pod.Spec.EphemeralContainers {
		if in.Runtime.Latest(ec.Name) == nil {
			p.Start = append(p.Start, ec.Name)
		}
	}
	return p
}

// containersOf keeps the containers of one sandbox.
func containersOf(r *RuntimePod, sandboxID string) *RuntimePod {
	out := &RuntimePod{Sandboxes: r.Sandboxes}
	for _, c := range r.Containers {
		if c.SandboxID == sandboxID {
			out.Containers = append(out.Containers, c)
		}
	}
	return out
}

// planInit walks the init containers in order. It returns true when every
// regular init container has succeeded and every sidecar is running, so that
// app containers may start.
func planInit(in PlanInput, current *RuntimePod, p *Plan) bool {
	for _, c := range in.Pod.Spec.InitContainers {
		st := current.Latest(c.Name)
		if IsSidecar(c) {
			planContainer(in, current, c, p)
			if st == nil || st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				return false // the next init container waits for this sidecar to run
			}
			if in.Started != nil && !in.Started(&c, st.Id) {
				return false // ... and for its startup probe to pass
			}
			continue
		}
		switch {
		case st == nil:
			p.Start = append(p.Start, c.Name)
			return false
		case st.State == runtimeapi.ContainerState_CONTAINER_RUNNING:
			return false
		case st.State == runtimeapi.ContainerState_CONTAINER_EXITED && st.ExitCode == 0:
			continue
		case st.State == runtimeapi.ContainerState_CONTAINER_EXITED && !exitRestarts(&c, &in.Pod.Spec, st.ExitCode):
			p.InitFailed = c.Name
			return false
		default:
			planRestart(in, c.Name, st, p)
			return false
		}
	}
	return true
}

// planContainer decides for one long-running container (an app container
// or a sidecar) by its restart rules.
func planContainer(in PlanInput, current *RuntimePod, c corev1.Container, p *Plan) {
	st := current.Latest(c.Name)
	switch {
	case st == nil:
		// A container that ran in an earlier sandbox and must not restart
		// stays down in the new one.
		if prev := in.Runtime.Latest(c.Name); prev != nil && !restarts(&c, &in.Pod.Spec, prev) {
			return
		}
		p.Start = append(p.Start, c.Name)
	case st.State == runtimeapi.ContainerState_CONTAINER_RUNNING:
		if h, ok := in.Hashes[c.Name]; ok && st.GetAnnotations()[annotationHash] != "" && st.GetAnnotations()[annotationHash] != h {
			p.Kill = append(p.Kill, st.Id)
			p.Start = append(p.Start, c.Name)
		}
	case restarts(&c, &in.Pod.Spec, st):
		planRestart(in, c.Name, st, p)
	}
}

func planRestart(in PlanInput, name string, st *Container, p *Plan) {
	finished := time.Unix(0, st.FinishedAt)
	if st.State == runtimeapi.ContainerState_CONTAINER_EXITED && in.InBackOff != nil && in.InBackOff(name, finished) {
		p.Waiting[name] = "CrashLoopBackOff"
		return
	}
	p.Start = append(p.Start, name)
}

// HasPodLevelResources says whether the pod sets pod-level resources
// (spec.resources). Upstream's CPU and memory managers give such a pod
// nothing of its own while their PodLevelResourceManagers gate is off (the
// default).
func HasPodLevelResources(pod *corev1.Pod) bool {
	return pod.Spec.Resources != nil && (len(pod.Spec.Resources.Requests) > 0 || len(pod.Spec.Resources.Limits) > 0)
}

// MostAtOnce is the most of each resource a pod's containers hold at once,
// as upstream's CPU and memory managers count it: each regular init
// container with the sidecars started before it, and the app containers
// with every sidecar. Only resources count names for an app container are
// in the result.
func MostAtOnce[V int | uint64](pod *corev1.Pod, count func(*corev1.Container) map[corev1.ResourceName]V) map[corev1.ResourceName]V {
	byInit, bySidecars, byApps := map[corev1.ResourceName]V{}, map[corev1.ResourceName]V{}, map[corev1.ResourceName]V{}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		for name, v := range count(c) {
			if IsSidecar(*c) {
				bySidecars[name] += v
			} else {
				byInit[name] = max(byInit[name], bySidecars[name]+v)
			}
		}
	}
	for i := range pod.Spec.Containers {
		for name, v := range count(&pod.Spec.Containers[i]) {
			byApps[name] += v
		}
	}
	out := map[corev1.ResourceName]V{}
	for name, v := range byApps {
		out[name] = max(v+bySidecars[name], byInit[name])
	}
	return out
}

// IsSidecar says whether a container is a sidecar: an init container that
// restarts always.
func IsSidecar(c corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}
