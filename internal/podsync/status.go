package podsync

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	resourcehelper "k8s.io/component-helpers/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Waiting is why a container is not running, as the last sync saw it.
type Waiting struct {
	Reason  string // ContainerCreating, CrashLoopBackOff, ErrImagePull, ...
	Message string
}

// StatusInput is what a pod's status is computed from.
type StatusInput struct {
	Pod         *corev1.Pod        // the pod, with its previous status
	Runtime     *RuntimePod        // what the runtime reports
	Waiting     map[string]Waiting // container name -> reason it waits
	RuntimeName string             // container ID prefix: "containerd"
	HostIPs     []string           // the node's IPs
	Now         time.Time
	Terminal    bool   // the pod will run nothing more (deleted, deadline, or finished)
	Reason      string // pod-level reason (DeadlineExceeded, ...) and message
	Message     string
	// DisruptionTarget: the agent ended the pod for the node's sake (a
	// pressure eviction), which upstream's DisruptionTarget condition says.
	DisruptionTarget bool
	Probes           ProbeResults // startup and readiness results (nil: no probes run)
	// Previous is the last status this agent built for the pod, which the
	// apiserver's copy in Pod may not show yet (nil: none). As upstream's
	// cached status, it comes first for what the agent itself decided: the
	// start time, its own conditions' transition times, restart records.
	Previous *corev1.PodStatus
	// ResizeConditions are the pod's PodResizePending and
	// PodResizeInProgress conditions, which the allocation keeps.
	ResizeConditions []corev1.PodCondition
}

// ProbeResults answers for a running container's probes.
type ProbeResults interface {
	Ready(c *corev1.Container, containerID string) bool
	Started(c *corev1.Container, containerID string) bool
}

// mine is what this agent last said of the pod: its previous status, or
// the apiserver's copy.
func (in StatusInput) mine() *corev1.PodStatus {
	if in.Previous != nil {
		return in.Previous
	}
	return &in.Pod.Status
}

const maxTermMessage = 4096

// PodStatus derives the pod's status from the runtime's view of it.
func PodStatus(in StatusInput) corev1.PodStatus {
	old := in.Pod.Status
	mine := in.mine()
	st := corev1.PodStatus{
		QOSClass: QOSClass(in.Pod), StartTime: old.StartTime, Reason: in.Reason, Message: in.Message,
		NominatedNodeName: old.NominatedNodeName, Resize: old.Resize,
	}
	if mine.StartTime != nil {
		st.StartTime = mine.StartTime
	}
	if st.StartTime == nil {
		t := metav1.NewTime(in.Now)
		st.StartTime = &t
	}
	for _, ip := range in.HostIPs {
		st.HostIPs = append(st.HostIPs, corev1.HostIP{IP: ip})
	}
	st.HostIP = first(in.HostIPs)
	st.PodIPs = podIPs(in)
	if len(st.PodIPs) > 0 {
		st.PodIP = st.PodIPs[0].IP
	}
	sb := in.Runtime.LatestSandbox()
	waitReason := "PodInitializing" // until every init container is done
	if initDone(in) {
		waitReason = "ContainerCreating"
	}
	for _, c := range in.Pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, containerStatus(in, c, IsSidecar(c), "PodInitializing"))
	}
	for _, c := range in.Pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, containerStatus(in, c, true, waitReason))
	}
	for _, ec := range in.Pod.Spec.EphemeralContainers {
		st.EphemeralContainerStatuses = append(st.EphemeralContainerStatuses, containerStatus(in, corev1.Container(ec.EphemeralContainerCommon), false, "ContainerCreating"))
	}
	st.Phase = podPhase(in.Pod, &st, in.Terminal)
	if in.Terminal && in.Reason != "" {
		st.Phase = corev1.PodFailed // evicted, past its deadline: failed whatever the exit codes
	}
	for _, was := range []corev1.PodPhase{old.Phase, mine.Phase} {
		if was == corev1.PodSucceeded || was == corev1.PodFailed {
			st.Phase = was // terminal phases never change back
		}
	}
	st.Conditions = podConditions(in, &st, sb)
	st.ObservedGeneration = in.Pod.Generation
	st.Resources, st.AllocatedResources = podResources(in.Pod)
	return st
}

func podIPs(in StatusInput) []corev1.PodIP {
	if in.Pod.Spec.HostNetwork {
		var out []corev1.PodIP
		for _, ip := range in.HostIPs {
			out = append(out, corev1.PodIP{IP: ip})
		}
		return out
	}
	sb := in.Runtime.LatestSandbox()
	if sb == nil || sb.State != runtimeapi.PodSandboxState_SANDBOX_READY || sb.GetNetwork().GetIp() == "" {
		return in.Pod.Status.PodIPs // keep what was reported while the sandbox changes
	}
	out := []corev1.PodIP{{IP: sb.Network.Ip}}
	for _, extra := range sb.Network.AdditionalIps {
		out = append(out, corev1.PodIP{IP: extra.Ip})
	}
	return out
}

// initDone reports whether every regular init container has succeeded and
// every sidecar runs.
func initDone(in StatusInput) bool {
	for _, c := range in.Pod.Spec.InitContainers {
		st := in.Runtime.Latest(c.Name)
		switch {
		case st == nil:
			return false
		case IsSidecar(c) && st.State != runtimeapi.ContainerState_CONTAINER_RUNNING:
			return false
		case !IsSidecar(c) && (st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 0):
			return false
		}
	}
	return true
}

func containerStatus(in StatusInput, c corev1.Container, longRunning bool, waitReason string) corev1.ContainerStatus {
	runs := in.Runtime.ContainersNamed(c.Name)
	var applied []*runtimeapi.Mount
	if len(runs) > 0 {
		applied = runs[0].GetMounts()
	}
	cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, VolumeMounts: volumeMountStatuses(c, applied)}
	if prev := previousStatus(in.mine(), c.Name); prev != nil {
		cs.RestartCount = prev.RestartCount
		cs.LastTerminationState = prev.LastTerminationState
	}
	if len(runs) == 0 {
		w, ok := in.Waiting[c.Name]
		if !ok {
			w = Waiting{Reason: waitReason}
			if in.Terminal {
				w = Waiting{Reason: "PodInitializing"}
			}
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
		cs.Started = ptrTo(false)
		return cs
	}
	latest := runs[0]
	// As upstream (in-place resize is GA): a container the runtime has
	// reports its resources (for a running one, cpu and memory limit as the
	// runtime has them) and the requests allocated to it.
	cs.Resources = statusResources(c, latest, previousStatus(in.mine(), c.Name), in.RuntimeName+"://"+latest.Id)
	cs.AllocatedResources = c.Resources.Requests
	cs.ContainerID = in.RuntimeName + "://" + latest.Id
	cs.ImageID = latest.ImageRef
	if latest.GetImage().GetImage() != "" {
		cs.Image = c.Image
	}
	cs.RestartCount = restartCountOf(latest.Annotations)
	switch latest.State {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: nanoTime(latest.StartedAt)}
		started, ready := true, true
		if in.Probes != nil {
			started = in.Probes.Started(&c, latest.Id)
			ready = started && in.Probes.Ready(&c, latest.Id)
		}
		// A pod being deleted is no longer ready, whatever its probes said.
		cs.Ready = longRunning && ready && in.Pod.DeletionTimestamp == nil
		cs.Started = ptrTo(started)
		if len(runs) > 1 {
			cs.LastTerminationState = corev1.ContainerState{Terminated: terminated(in, c, runs[1])}
		}
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		cs.Started = ptrTo(false)
		term := terminated(in, c, latest)
		// A regular init container that completed counts as ready.
		cs.Ready = !longRunning && term.ExitCode == 0
		if w, ok := in.Waiting[c.Name]; ok && !in.Terminal {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
			cs.LastTerminationState = corev1.ContainerState{Terminated: term}
		} else {
			cs.State.Terminated = term
			if len(runs) > 1 {
				cs.LastTerminationState = corev1.ContainerState{Terminated: terminated(in, c, runs[1])}
			}
		}
	default:
		cs.Started = ptrTo(false)
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		if w, ok := in.Waiting[c.Name]; ok {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
		}
	}
	return cs
}

// Upstream's floors below which the runtime's values are not reported in
// place of the allocated ones (they cannot be told apart there).
const (
	minShares        = 2
	minMilliCPULimit = 10
)

// statusResources are a container's status resources, as upstream's: the
// allocated ones, with a running container's cpu request (from its
// shares), cpu limit (from its quota) and memory limit as the runtime
// reports them; where the runtime reports none, the previous status's for
// the same container. The memory request is the allocated one.
func statusResources(c corev1.Container, latest *Container, prev *corev1.ContainerStatus, id string) *corev1.ResourceRequirements {
	out := c.Resources.DeepCopy()
	if latest.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return out
	}
	var cpuLimit, cpuRequest, memLimit *resource.Quantity
	if r := latest.GetResources().GetLinux(); r != nil {
		if r.CpuPeriod > 0 && r.CpuQuota != -1 {
			if m := r.CpuQuota * 1000 / r.CpuPeriod; m > 0 {
				cpuLimit = resource.NewMilliQuantity(m, resource.DecimalSI)
			}
		}
		if r.CpuShares >= minShares {
			if m := int64(math.Ceil(float64(r.CpuShares*1000) / 1024)); m > 0 {
				cpuRequest = resource.NewMilliQuantity(m, resource.DecimalSI)
			}
		}
		if r.MemoryLimitInBytes > 0 {
			memLimit = resource.NewQuantity(r.MemoryLimitInBytes, resource.BinarySI)
		}
	}
	keep := func(name corev1.ResourceName, from func(*corev1.ResourceRequirements) corev1.ResourceList, into corev1.ResourceList) {
		if prev == nil || prev.State.Running == nil || prev.ContainerID != id || prev.Resources == nil {
			return
		}
		if q, ok := from(prev.Resources)[name]; ok {
			into[name] = q.DeepCopy()
		}
	}
	limits := func(r *corev1.ResourceRequirements) corev1.ResourceList { return r.Limits }
	requests := func(r *corev1.ResourceRequirements) corev1.ResourceList { return r.Requests }
	if out.Limits != nil {
		switch {
		case cpuLimit != nil:
			if cpuLimit.MilliValue() > minMilliCPULimit || out.Limits.Cpu().MilliValue() > minMilliCPULimit {
				out.Limits[corev1.ResourceCPU] = *cpuLimit
			}
		default:
			keep(corev1.ResourceCPU, limits, out.Limits)
		}
		if memLimit != nil {
			out.Limits[corev1.ResourceMemory] = *memLimit
		} else {
			keep(corev1.ResourceMemory, limits, out.Limits)
		}
	}
	if out.Requests != nil {
		switch {
		case cpuRequest != nil:
			if cpuRequest.MilliValue() > minShares || out.Requests.Cpu().MilliValue() > minShares {
				out.Requests[corev1.ResourceCPU] = *cpuRequest
			}
		default:
			keep(corev1.ResourceCPU, requests, out.Requests)
		}
	}
	return out
}

// podResources are the pod-level resources upstream reports (in-place
// resize of pod-level resources is beta and on in v1.36): the pod's
// allocated requests and limits, container requests and limits summed
// where the pod sets none. Upstream reads a running pod's limits back
// from its cgroup instead; here they are what was allocated.
func podResources(pod *corev1.Pod) (*corev1.ResourceRequirements, corev1.ResourceList) {
	out := pod.Spec.Resources.DeepCopy()
	if out == nil {
		out = &corev1.ResourceRequirements{}
	}
	requests := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	out.Requests = requests
	out.Limits = resourcehelper.PodLimits(pod, resourcehelper.PodResourcesOptions{})
	if len(out.Requests) == 0 {
		out.Requests = nil
	}
	if len(out.Limits) == 0 {
		out.Limits = nil
	}
	return out, out.Requests
}

// volumeMountStatuses lists a container's mounts as upstream reports them:
// read-only ones say whether the runtime mounted them recursively read-only
// (applied: the mounts of the container's latest instance).
func volumeMountStatuses(c corev1.Container, applied []*runtimeapi.Mount) []corev1.VolumeMountStatus {
	recursive := map[string]bool{}
	for _, m := range applied {
		recursive[m.GetContainerPath()] = m.GetRecursiveReadOnly()
	}
	var out []corev1.VolumeMountStatus
	for _, m := range c.VolumeMounts {
		vs := corev1.VolumeMountStatus{Name: m.Name, MountPath: m.MountPath, ReadOnly: m.ReadOnly}
		if m.ReadOnly {
			rro := corev1.RecursiveReadOnlyDisabled
			if recursive[m.MountPath] {
				rro = corev1.RecursiveReadOnlyEnabled
			}
			vs.RecursiveReadOnly = &rro
		}
		out = append(out, vs)
	}
	return out
}

func previousStatus(st *corev1.PodStatus, name string) *corev1.ContainerStatus {
	for _, list := range [][]corev1.ContainerStatus{st.ContainerStatuses, st.InitContainerStatuses} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

func terminated(in StatusInput, c corev1.Container, r *Container) *corev1.ContainerStateTerminated {
	t := &corev1.ContainerStateTerminated{
		ExitCode: r.ExitCode, Reason: r.Reason, StartedAt: nanoTime(r.StartedAt), FinishedAt: nanoTime(r.FinishedAt),
		ContainerID: in.RuntimeName + "://" + r.Id,
	}
	if t.Reason == "" || t.Reason == "Completed" || t.Reason == "Error" {
		t.Reason = "Completed"
		if r.ExitCode != 0 {
			t.Reason = "Error"
		}
	}
	t.Message = terminationMessage(c, r)
	return t
}

// terminationMessage reads the container's termination message file, or the
// tail of its log when the policy says FallbackToLogsOnError and it failed.
func terminationMessage(c corev1.Container, r *Container) string {
	path := r.Annotations[annotationTermMsgPath]
	for _, m := range r.Mounts {
		if m.ContainerPath == path && path != "" {
			if data, err := readHead(m.HostPath, maxTermMessage); err == nil && len(data) > 0 {
				return string(data)
			}
		}
	}
	if c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError && r.ExitCode != 0 && r.LogPath != "" {
		return tailLogMessage(r.LogPath, 80, 2048)
	}
	return ""
}

func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	k, _ := f.Read(buf)
	return buf[:k], nil
}

// tailLogMessage returns the last lines of a CRI log file's content.
func tailLogMessage(path string, maxLines, maxBytes int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var out []string
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		// <time> <stream> <P|F> <content>: F ends a line, P continues it.
		parts := strings.SplitN(line, " ", 4)
		if len(parts) < 3 {
			continue
		}
		content := ""
		if len(parts) == 4 {
			content = parts[3]
		}
		if parts[2] == "F" {
			content += "\n"
		}
		out = append(out, content)
	}
	msg := strings.Join(out, "")
	if lines := strings.SplitAfter(msg, "\n"); len(lines) > maxLines {
		msg = strings.Join(lines[len(lines)-maxLines:], "")
	}
	if len(msg) > maxBytes {
		msg = msg[len(msg)-maxBytes:]
	}
	return msg
}

// podPhase follows upstream: Pending until initialized and every container
// has run; Running while one runs or will restart; Succeeded or Failed once
// all have terminated for good.
func podPhase(pod *corev1.Pod, st *corev1.PodStatus, terminal bool) corev1.PodPhase {
	for i, c := range pod.Spec.InitContainers {
		s := st.InitContainerStatuses[i]
		if IsSidecar(c) {
			continue
		}
		if t := s.State.Terminated; t != nil && t.ExitCode != 0 && !exitRestarts(&c, &pod.Spec, t.ExitCode) {
			return corev1.PodFailed
		}
		if t := s.LastTerminationState.Terminated; s.State.Waiting != nil && t != nil && t.ExitCode != 0 && !exitRestarts(&c, &pod.Spec, t.ExitCode) {
			return corev1.PodFailed
		}
		if s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 {
			if terminal && s.LastTerminationState.Terminated != nil {
				return corev1.PodFailed
			}
			return corev1.PodPending
		}
	}
	// final counts the stopped containers that will not restart.
	running, waiting, stopped, succeeded, final := 0, 0, 0, 0, 0
	for i, s := range st.ContainerStatuses {
		t := s.State.Terminated
		if t == nil && s.State.Running == nil {
			t = s.LastTerminationState.Terminated
		}
		switch {
		case s.State.Running != nil:
			running++
		case t != nil:
			stopped++
			if t.ExitCode == 0 {
				succeeded++
			}
			if !exitRestarts(&pod.Spec.Containers[i], &pod.Spec, t.ExitCode) {
				final++
			}
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0 && !terminal:
		return corev1.PodPending
	case running > 0 && !terminal:
		return corev1.PodRunning
	case stopped > 0 && running == 0 && waiting == 0:
		if !terminal && final < stopped {
			return corev1.PodRunning // some will restart
		}
		if stopped == succeeded {
			return corev1.PodSucceeded
		}
		return corev1.PodFailed
	case terminal:
		return corev1.PodFailed
	}
	return corev1.PodPending
}

func podConditions(in StatusInput, st *corev1.PodStatus, sb *runtimeapi.PodSandboxStatus) []corev1.PodCondition {
	sandboxReady := sb != nil && sb.State == runtimeapi.PodSandboxState_SANDBOX_READY && (in.Pod.Spec.HostNetwork || sb.GetNetwork().GetIp() != "")
	var notInit, notReady []string
	for i, c := range in.Pod.Spec.InitContainers {
		s := st.InitContainerStatuses[i]
		switch {
		case IsSidecar(c):
			// A sidecar initializes once started; the pod is ready only
			// when it is ready too.
			if s.State.Running == nil || s.Started == nil || !*s.Started {
				notInit = append(notInit, c.Name)
			}
			if !s.Ready {
				notReady = append(notReady, c.Name)
			}
		case s.State.Terminated == nil || s.State.Terminated.ExitCode != 0:
			notInit = append(notInit, c.Name)
		}
	}
	for _, s := range st.ContainerStatuses {
		if !s.Ready {
			notReady = append(notReady, s.Name)
		}
	}
	sort.Strings(notInit)
	sort.Strings(notReady)
	completed := st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed
	conds := []corev1.PodCondition{
		boolCondition(corev1.PodReadyToStartContainers, sandboxReady && !completed, "", ""),
		boolCondition(corev1.PodInitialized, len(notInit) == 0, "ContainersNotInitialized", fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " "))),
	}
	readyReason, readyMsg := "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " "))
	if completed {
		readyReason, readyMsg = "PodCompleted", ""
	}
	conds = append(conds,
		boolCondition(corev1.ContainersReady, len(notReady) == 0 && !completed, readyReason, readyMsg),
		boolCondition(corev1.PodReady, len(notReady) == 0 && !completed && readinessGatesPass(in.Pod), readyReason, readyMsg))
	if completed && len(notInit) == 0 {
		conds[1].Reason = "PodCompleted"
	}
	// Upstream's order: conditions others own (readiness gates', the
	// disruption target) as they were, then the resize conditions, then the
	// kubelet's own, PodScheduled last. Each carries the pod generation it describes.
	var out []corev1.PodCondition
	for _, c := range in.Pod.Status.Conditions {
		if c.Type != corev1.PodScheduled && !ownCondition(c.Type) {
			out = append(out, c)
		}
	}
	if in.Terminal && in.DisruptionTarget {
		out = setCondition(out, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
			Reason: corev1.PodReasonTerminationByKubelet, Message: in.Message, ObservedGeneration: in.Pod.Generation}, in)
	}
	out = append(out, in.ResizeConditions...)
	conds[2], conds[3] = conds[3], conds[2] // Ready before ContainersReady
	conds = append(conds, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue})
	for _, c := range conds {
		c.ObservedGeneration = in.Pod.Generation
		out = append(out, keepTransition(in.mine().Conditions, c, in.Now))
	}
	return out
}

// setCondition puts c in place of the condition of its type, or last,
// keeping the transition time of one that had its status already.
func setCondition(conds []corev1.PodCondition, c corev1.PodCondition, in StatusInput) []corev1.PodCondition {
	c = keepTransition(append(in.Pod.Status.Conditions, in.mine().Conditions...), c, in.Now)
	for i := range conds {
		if conds[i].Type == c.Type {
			conds[i] = c
			return conds
		}
	}
	return append(conds, c)
}

func ownCondition(t corev1.PodConditionType) bool {
	switch t {
	case corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady,
		corev1.PodResizePending, corev1.PodResizeInProgress:
		return true
	}
	return false
}

func readinessGatesPass(pod *corev1.Pod) bool {
	for _, g := range pod.Spec.ReadinessGates {
		ok := false
		for _, c := range pod.Status.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func boolCondition(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
	if ok {
		return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue}
	}
	return corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg}
}

func keepTransition(old []corev1.PodCondition, c corev1.PodCondition, now time.Time) corev1.PodCondition {
	c.LastTransitionTime = metav1.NewTime(now)
	for _, o := range old {
		if o.Type == c.Type && o.Status == c.Status {
			c.LastTransitionTime = o.LastTransitionTime
		}
	}
	return c
}

func nanoTime(ns int64) metav1.Time {
	if ns == 0 {
		return metav1.Time{}
	}
	return metav1.NewTime(time.Unix(0, ns))
}

func ptrTo[T any](v T) *T { return &v }

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
