package podsync

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func statusOf(pod *corev1.Pod, rt *RuntimePod, waiting map[string]Waiting, terminal bool) corev1.PodStatus {
	return PodStatus(StatusInput{Pod: pod, Runtime: rt, Waiting: waiting, RuntimeName: "containerd", HostIPs: []string{"10.0.0.1"},
		Now: time.Unix(100, 0), Terminal: terminal})
}

func readySandbox() []*runtimeapi.PodSandboxStatus {
	s := ready("s1", 0)
	s.Network = &runtimeapi.PodSandboxNetworkStatus{Ip: "10.88.0.7"}
	return []*runtimeapi.PodSandboxStatus{s}
}

func condition(st corev1.PodStatus, t corev1.PodConditionType) corev1.PodCondition {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c
		}
	}
	return corev1.PodCondition{}
}

func TestPodPhases(t *testing.T) {
	always, never, onFailure := corev1.RestartPolicyAlways, corev1.RestartPolicyNever, corev1.RestartPolicyOnFailure
	cases := []struct {
		name     string
		pod      *corev1.Pod
		ctrs     []*Container
		waiting  map[string]Waiting
		terminal bool
		want     corev1.PodPhase
	}{
		{"nothing yet", testPod(always, nil, "a"), nil, nil, false, corev1.PodPending},
		{"running", testPod(always, nil, "a"), []*Container{ctr("a", "s1", running, 0)}, nil, false, corev1.PodRunning},
		{"one running one creating", testPod(always, nil, "a", "b"), []*Container{ctr("a", "s1", running, 0)}, nil, false, corev1.PodPending},
		{"Never, exit 0", testPod(never, nil, "a"), []*Container{ctr("a", "s1", exited, 0)}, nil, false, corev1.PodSucceeded},
		{"Never, exit 1", testPod(never, nil, "a"), []*Container{ctr("a", "s1", exited, 1)}, nil, false, corev1.PodFailed},
		{"OnFailure, exit 0", testPod(onFailure, nil, "a"), []*Container{ctr("a", "s1", exited, 0)}, nil, false, corev1.PodSucceeded},
		{"OnFailure, exit 1 restarting", testPod(onFailure, nil, "a"), []*Container{ctr("a", "s1", exited, 1)},
			map[string]Waiting{"a": {Reason: "CrashLoopBackOff"}}, false, corev1.PodRunning},
		{"Always, exited", testPod(always, nil, "a"), []*Container{ctr("a", "s1", exited, 0)}, nil, false, corev1.PodRunning},
		{"init running", testPod(always, []corev1.Container{{Name: "i"}}, "a"), []*Container{ctr("i", "s1", running, 0)}, nil, false, corev1.PodPending},
		{"init failed, Never", testPod(never, []corev1.Container{{Name: "i"}}, "a"), []*Container{ctr("i", "s1", exited, 1)}, nil, false, corev1.PodFailed},
		{"deleted while running", testPod(always, nil, "a"), []*Container{ctr("a", "s1", exited, 137)}, nil, true, corev1.PodFailed},
		{"deleted after success", testPod(always, nil, "a"), []*Container{ctr("a", "s1", exited, 0)}, nil, true, corev1.PodSucceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := statusOf(tc.pod, &RuntimePod{Sandboxes: readySandbox(), Containers: tc.ctrs}, tc.waiting, tc.terminal)
			if st.Phase != tc.want {
				t.Fatalf("phase %s, want %s", st.Phase, tc.want)
			}
		})
	}
}

func TestPodStatusFields(t *testing.T) {
	dir := t.TempDir()
	msgFile := filepath.Join(dir, "msg")
	if err := os.WriteFile(msgFile, []byte("goodbye"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := testPod(corev1.RestartPolicyAlways, nil, "a", "b")
	a := ctr("a", "s1", running, 0)
	a.StartedAt = time.Unix(50, 0).UnixNano()
	a.Annotations = map[string]string{annotationRestartCount: "2"}
	b := ctr("b", "s1", exited, 3)
	b.Annotations = map[string]string{annotationTermMsgPath: "/dev/termination-log"}
	b.Mounts = []*runtimeapi.Mount{{ContainerPath: "/dev/termination-log", HostPath: msgFile}}
	st := statusOf(pod, &RuntimePod{Sandboxes: readySandbox(), Containers: []*Container{a, b}},
		map[string]Waiting{"b": {Reason: "CrashLoopBackOff", Message: "back-off"}}, false)
	if st.PodIP != "10.88.0.7" || st.HostIP != "10.0.0.1" || st.StartTime == nil || st.QOSClass != corev1.PodQOSBestEffort {
		t.Errorf("pod fields %+v", st)
	}
	as, bs := st.ContainerStatuses[0], st.ContainerStatuses[1]
	if as.State.Running == nil || !as.Ready || as.RestartCount != 2 || as.ContainerID != "containerd://a-s1" || *as.Started != true {
		t.Errorf("a: %+v", as)
	}
	if bs.State.Waiting == nil || bs.State.Waiting.Reason != "CrashLoopBackOff" || bs.LastTerminationState.Terminated == nil ||
		bs.LastTerminationState.Terminated.ExitCode != 3 || bs.LastTerminationState.Terminated.Reason != "Error" ||
		bs.LastTerminationState.Terminated.Message != "goodbye" {
		t.Errorf("b: %+v", bs)
	}
	if c := condition(st, corev1.PodReady); c.Status != corev1.ConditionFalse || c.Message != "containers with unready status: [b]" {
		t.Errorf("Ready %+v", c)
	}
	if c := condition(st, corev1.PodReadyToStartContainers); c.Status != corev1.ConditionTrue {
		t.Errorf("PodReadyToStartContainers %+v", c)
	}
	if c := condition(st, corev1.PodInitialized); c.Status != corev1.ConditionTrue {
		t.Errorf("Initialized %+v", c)
	}
}

func TestFallbackToLogsOnError(t *testing.T) {
	log := filepath.Join(t.TempDir(), "0.log")
	content := "2024-01-01T00:00:00.000000000Z stdout F first\n2024-01-01T00:00:01.000000000Z stderr P bo\n2024-01-01T00:00:01.000000000Z stderr P om\n"
	if err := os.WriteFile(log, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	c := corev1.Container{Name: "a", TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError}
	r := ctr("a", "s1", exited, 1)
	r.LogPath = log
	if got := terminationMessage(c, r); got != "first\nboom" {
		t.Errorf("message %q", got)
	}
	r.ExitCode = 0
	if got := terminationMessage(c, r); got != "" {
		t.Errorf("success should not fall back to logs: %q", got)
	}
}

// Conditions come in upstream's order and keep their transition times, and
// containers report their mounts and resources as upstream does, so that an
// agent taking over from the other writes the same status.
func TestStatusMatchesUpstreamShape(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways, nil, "a")
	pod.Generation = 3
	then := metav1.NewTime(time.Unix(10, 0))
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: then},
		{Type: "example.com/gate", Status: corev1.ConditionTrue, LastTransitionTime: then},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: then},
	}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v", ReadOnly: true}, {Name: "w", MountPath: "/w"}}
	pod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}
	st := statusOf(pod, &RuntimePod{Sandboxes: readySandbox(), Containers: []*Container{ctr("a", "s1", running, 0)}}, nil, false)
	var order []corev1.PodConditionType
	for _, c := range st.Conditions {
		order = append(order, c.Type)
		if c.ObservedGeneration != 3 && c.Type != "example.com/gate" {
			t.Errorf("condition %s observedGeneration %d, want 3", c.Type, c.ObservedGeneration)
		}
	}
	want := []corev1.PodConditionType{"example.com/gate", corev1.PodReadyToStartContainers, corev1.PodInitialized,
		corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("conditions in order %v, want upstream's %v", order, want)
	}
	if c := condition(st, corev1.PodReady); !c.LastTransitionTime.Equal(&then) {
		t.Errorf("Ready kept True but its transition time moved to %v", c.LastTransitionTime)
	}
	if c := condition(st, corev1.PodScheduled); !c.LastTransitionTime.Equal(&then) {
		t.Errorf("PodScheduled transition time moved to %v", c.LastTransitionTime)
	}
	if st.ObservedGeneration != 3 {
		t.Errorf("status.observedGeneration %d, want 3", st.ObservedGeneration)
	}
	cs := st.ContainerStatuses[0]
	disabled := corev1.RecursiveReadOnlyDisabled
	wantMounts := []corev1.VolumeMountStatus{{Name: "v", MountPath: "/v", ReadOnly: true, RecursiveReadOnly: &disabled}, {Name: "w", MountPath: "/w"}}
	if !reflect.DeepEqual(cs.VolumeMounts, wantMounts) {
		t.Errorf("volumeMounts %+v, want %+v", cs.VolumeMounts, wantMounts)
	}
	if cs.Resources == nil || !cs.Resources.Requests.Cpu().Equal(resource.MustParse("100m")) || !cs.AllocatedResources.Cpu().Equal(resource.MustParse("100m")) {
		t.Errorf("resources %+v allocated %+v, want the container's requests", cs.Resources, cs.AllocatedResources)
	}
}

// A read-only mount reports Enabled only when the runtime mounted it
// recursively read-only, whatever the spec asked.
func TestVolumeMountStatusReportsWhatWasApplied(t *testing.T) {
	ifPossible := corev1.RecursiveReadOnlyIfPossible
	c := corev1.Container{VolumeMounts: []corev1.VolumeMount{
		{Name: "a", MountPath: "/a", ReadOnly: true, RecursiveReadOnly: &ifPossible},
		{Name: "b", MountPath: "/b", ReadOnly: true, RecursiveReadOnly: &ifPossible},
		{Name: "c", MountPath: "/c"},
	}}
	got := volumeMountStatuses(c, []*runtimeapi.Mount{{ContainerPath: "/a", RecursiveReadOnly: true}, {ContainerPath: "/b"}, {ContainerPath: "/c"}})
	if *got[0].RecursiveReadOnly != corev1.RecursiveReadOnlyEnabled || *got[1].RecursiveReadOnly != corev1.RecursiveReadOnlyDisabled || got[2].RecursiveReadOnly != nil {
		t.Fatalf("statuses %+v", got)
	}
}

// Resize conditions come from the allocation, after the conditions others
// own and before the kubelet's own; the old status's are replaced.
func TestResizeConditionsPlacedAsUpstream(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways, nil, "a")
	pod.Generation = 4
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: "example.com/gate", Status: corev1.ConditionTrue},
		{Type: corev1.PodResizeInProgress, Status: corev1.ConditionTrue, ObservedGeneration: 2},
	}
	pending := corev1.PodCondition{Type: corev1.PodResizePending, Status: corev1.ConditionTrue, Reason: "Deferred", ObservedGeneration: 3}
	st := PodStatus(StatusInput{Pod: pod, Runtime: &RuntimePod{Sandboxes: readySandbox(), Containers: []*Container{ctr("a", "s1", running, 0)}},
		RuntimeName: "containerd", Now: time.Unix(100, 0), ResizeConditions: []corev1.PodCondition{pending}})
	var order []corev1.PodConditionType
	for _, c := range st.Conditions {
		order = append(order, c.Type)
	}
	want := []corev1.PodConditionType{"example.com/gate", corev1.PodResizePending, corev1.PodReadyToStartContainers, corev1.PodInitialized,
		corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("conditions in order %v, want %v", order, want)
	}
	if c := condition(st, corev1.PodResizePending); c.ObservedGeneration != 3 {
		t.Errorf("pending condition's generation %d, want the allocation's 3", c.ObservedGeneration)
	}
}

// The agent's previous status comes first for what the agent decided: a
// status built from an apiserver copy that does not show the last one yet
// keeps its start time and transition times.
func TestPreviousStatusComesFirst(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways, nil, "a") // the apiserver's copy: no status yet
	then := metav1.NewTime(time.Unix(50, 0))
	prev := &corev1.PodStatus{StartTime: &then, Conditions: []corev1.PodCondition{
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: then},
	}}
	in := StatusInput{Pod: pod, Runtime: &RuntimePod{Sandboxes: readySandbox(), Containers: []*Container{ctr("a", "s1", running, 0)}},
		RuntimeName: "containerd", Now: time.Unix(100, 0), Previous: prev}
	st := PodStatus(in)
	if st.StartTime == nil || !st.StartTime.Equal(&then) {
		t.Errorf("start time %v, want the previous status's %v", st.StartTime, then)
	}
	if c := condition(st, corev1.PodReady); c.Status != corev1.ConditionTrue || !c.LastTransitionTime.Equal(&then) {
		t.Errorf("Ready %+v, want True since %v", c, then)
	}
	in.Previous = nil
	if st := PodStatus(in); st.StartTime == nil || !st.StartTime.Equal(&metav1.Time{Time: time.Unix(100, 0)}) {
		t.Errorf("without a previous status the start time is %v, want now", st.StartTime)
	}
}

// A running container's status resources are the runtime's cpu and memory
// limit (a resize not applied yet shows the old ones), with upstream's
// floors; a stopped container's are the allocated ones.
func TestStatusResourcesFromTheRuntime(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways, nil, "a")
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("300m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("400m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	c := ctr("a", "s1", running, 0)
	c.Resources = &runtimeapi.ContainerResources{Linux: &runtimeapi.LinuxContainerResources{
		CpuShares: 102, CpuQuota: 20000, CpuPeriod: 100000, MemoryLimitInBytes: 256 << 20}} // 100m, 200m, 256Mi
	st := statusOf(pod, &RuntimePod{Sandboxes: readySandbox(), Containers: []*Container{c}}, nil, false)
	r := st.ContainerStatuses[0].Resources
	if r.Requests.Cpu().String() != "100m" || r.Limits.Cpu().String() != "200m" || r.Limits.Memory().String() != "256Mi" || r.Requests.Memory().String() != "64Mi" {
		t.Errorf("running container's resources %v / %v, want the runtime's 100m, 200m, 256Mi and the allocated 64Mi", r.Requests, r.Limits)
	}
	if a := st.ContainerStatuses[0].AllocatedResources; a.Cpu().String() != "300m" {
		t.Errorf("allocated %v, want 300m", a)
	}
	// Below the floors the allocated values stay.
	small := pod.DeepCopy()
	small.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("1m")
	small.Spec.Containers[0].Resources.Limits[corev1.ResourceCPU] = resource.MustParse("5m")
	c.Resources.Linux.CpuShares, c.Resources.Linux.CpuQuota = 2, 1000
	st = statusOf(small, &RuntimePod{Sandboxes: readySandbox(), Containers: []*Container{c}}, nil, false)
	if r := st.ContainerStatuses[0].Resources; r.Requests.Cpu().String() != "1m" || r.Limits.Cpu().String() != "5m" {
		t.Errorf("below the floors: %v / %v, want the allocated 1m and 5m", r.Requests, r.Limits)
	}
	stopped := ctr("a", "s1", exited, 0)
	stopped.Resources = c.Resources
	st = statusOf(pod, &RuntimePod{Sandboxes: readySandbox(), Containers: []*Container{stopped}}, nil, false)
	if r := st.ContainerStatuses[0].Resources; r.Limits.Memory().String() != "128Mi" {
		t.Errorf("a stopped container's memory limit %v, want the allocated 128Mi", r.Limits.Memory())
	}
}

// A pressure eviction fails the pod with the eviction's reason and message
// and upstream's DisruptionTarget condition; a local storage eviction, no
// condition; the condition keeps its first transition time.
func TestEvictedPodStatus(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways, nil, "a")
	rt := &RuntimePod{Sandboxes: readySandbox(), Containers: []*Container{ctr("a", "s1", running, 0)}}
	in := StatusInput{Pod: pod, Runtime: rt, RuntimeName: "containerd", Now: time.Unix(100, 0), Terminal: true,
		Reason: "Evicted", Message: "The node was low on resource: memory. ", DisruptionTarget: true}
	st := PodStatus(in)
	c := condition(st, corev1.DisruptionTarget)
	if st.Phase != corev1.PodFailed || st.Reason != "Evicted" || c.Status != corev1.ConditionTrue ||
		c.Reason != corev1.PodReasonTerminationByKubelet || c.Message != in.Message || !c.LastTransitionTime.Equal(&metav1.Time{Time: time.Unix(100, 0)}) {
		t.Fatalf("evicted pod: phase %s reason %q, DisruptionTarget %+v", st.Phase, st.Reason, c)
	}
	in.Previous, in.Now = &st, time.Unix(200, 0)
	if again := condition(PodStatus(in), corev1.DisruptionTarget); !again.LastTransitionTime.Equal(&c.LastTransitionTime) {
		t.Errorf("the condition's transition time moved to %v", again.LastTransitionTime)
	}
	in.DisruptionTarget = false
	in.Previous = nil
	if c := condition(PodStatus(in), corev1.DisruptionTarget); c.Type != "" {
		t.Errorf("a local storage eviction has the condition %+v", c)
	}
}
