package podsync

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func ready(id string, attempt uint32) *runtimeapi.PodSandboxStatus {
	return &runtimeapi.PodSandboxStatus{Id: id, State: runtimeapi.PodSandboxState_SANDBOX_READY, Metadata: &runtimeapi.PodSandboxMetadata{Attempt: attempt}}
}

func notReady(id string, attempt uint32) *runtimeapi.PodSandboxStatus {
	s := ready(id, attempt)
	s.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	return s
}

func ctr(name, sandbox string, state runtimeapi.ContainerState, exit int32) *Container {
	return &Container{SandboxID: sandbox, ContainerStatus: &runtimeapi.ContainerStatus{
		Id: name + "-" + sandbox, Metadata: &runtimeapi.ContainerMetadata{Name: name}, State: state, ExitCode: exit, FinishedAt: 1,
	}}
}

const (
	running = runtimeapi.ContainerState_CONTAINER_RUNNING
	exited  = runtimeapi.ContainerState_CONTAINER_EXITED
	created = runtimeapi.ContainerState_CONTAINER_CREATED
)

func testPod(policy corev1.RestartPolicy, inits []corev1.Container, names ...string) *corev1.Pod {
	p := &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: policy, InitContainers: inits}}
	for _, n := range names {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n})
	}
	return p
}

func sidecar(name string) corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	return corev1.Container{Name: name, RestartPolicy: &always}
}

func TestComputePlan(t *testing.T) {
	never, always, onFailure := corev1.RestartPolicyNever, corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure
	inits := []corev1.Container{{Name: "init1"}, {Name: "init2"}}
	cases := []struct {
		name    string
		pod     *corev1.Pod
		rt      *RuntimePod
		backoff bool
		want    Plan
	}{
		{"new pod: sandbox, then the first init container", testPod(always, inits, "app"), &RuntimePod{},
			false, Plan{CreateSandbox: true, Start: []string{"init1"}}},
		{"new pod without init: all app containers", testPod(always, nil, "a", "b"), &RuntimePod{},
			false, Plan{CreateSandbox: true, Start: []string{"a", "b"}}},
		{"init1 running: wait", testPod(always, inits, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("init1", "s1", running, 0)}},
			false, Plan{}},
		{"init1 done: init2", testPod(always, inits, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("init1", "s1", exited, 0)}},
			false, Plan{Start: []string{"init2"}}},
		{"init failed under Never: pod fails", testPod(never, inits, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("init1", "s1", exited, 1)}},
			false, Plan{InitFailed: "init1"}},
		{"init failed under Always: restart it", testPod(always, inits, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("init1", "s1", exited, 1)}},
			false, Plan{Start: []string{"init1"}}},
		{"inits done: apps", testPod(always, inits, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("init2", "s1", exited, 0), ctr("init1", "s1", exited, 0)}},
			false, Plan{Start: []string{"app"}}},
		{"sidecar starts before the next init", testPod(always, []corev1.Container{sidecar("side"), {Name: "init"}}, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}},
			false, Plan{Start: []string{"side"}}},
		{"sidecar running: next init", testPod(always, []corev1.Container{sidecar("side"), {Name: "init"}}, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("side", "s1", running, 0)}},
			false, Plan{Start: []string{"init"}}},
		{"sidecar exited in a Never pod: restarted anyway", testPod(never, []corev1.Container{sidecar("side")}, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("side", "s1", exited, 0), ctr("app", "s1", running, 0)}},
			false, Plan{Start: []string{"side"}}},
		{"crashed under Always, not in backoff: restart", testPod(always, nil, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("app", "s1", exited, 2)}},
			false, Plan{Start: []string{"app"}}},
		{"crashed under Always, in backoff: wait", testPod(always, nil, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("app", "s1", exited, 2)}},
			true, Plan{Waiting: map[string]string{"app": "CrashLoopBackOff"}}},
		{"succeeded under OnFailure: stays down", testPod(onFailure, nil, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("app", "s1", exited, 0)}},
			false, Plan{}},
		{"failed under OnFailure: restart", testPod(onFailure, nil, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("app", "s1", exited, 1)}},
			false, Plan{Start: []string{"app"}}},
		{"failed under Never: stays down", testPod(never, nil, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("app", "s1", exited, 1)}},
			false, Plan{}},
		{"created but never started: start", testPod(never, nil, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("app", "s1", created, 0)}},
			false, Plan{Start: []string{"app"}}},
		{"sandbox died: kill, new sandbox with the next attempt, containers again", testPod(always, nil, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{notReady("s1", 2)}, Containers: []*Container{ctr("app", "s1", running, 0)}},
			false, Plan{KillPod: true, CreateSandbox: true, SandboxAttempt: 3, Start: []string{"app"}}},
		{"finished Never pod with a dead sandbox: nothing", testPod(never, nil, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{notReady("s1", 0)}, Containers: []*Container{ctr("app", "s1", exited, 0)}},
			false, Plan{}},
		{"running: nothing", testPod(always, nil, "app"),
			&RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("app", "s1", running, 0)}},
			false, Plan{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ComputePlan(PlanInput{Pod: tc.pod, Runtime: tc.rt, InBackOff: func(string, time.Time) bool { return tc.backoff }})
			if tc.want.Waiting == nil {
				tc.want.Waiting = map[string]string{}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestComputePlanRestartsOnSpecChange(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways, nil, "app")
	c := ctr("app", "s1", running, 0)
	c.Annotations = map[string]string{annotationHash: "old"}
	got := ComputePlan(PlanInput{Pod: pod, Runtime: &RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{c}},
		Hashes: map[string]string{"app": "new"}})
	if !reflect.DeepEqual(got.Kill, []string{c.Id}) || !reflect.DeepEqual(got.Start, []string{"app"}) {
		t.Fatalf("plan %+v", got)
	}
}

func TestBackoffDoublesToMaxAndForgets(t *testing.T) {
	now := time.Unix(1000, 0)
	b := NewBackoff()
	b.Now = func() time.Time { return now }
	if b.InBackOffSince("k", now) {
		t.Fatal("first retry must be immediate")
	}
	var delays []time.Duration
	for i := 0; i < 7; i++ {
		b.Next("k")
		delays = append(delays, b.Delay("k"))
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	if !reflect.DeepEqual(delays, want) {
		t.Fatalf("delays %v, want %v", delays, want)
	}
	if !b.InBackOffSince("k", now.Add(-299*time.Second)) || b.InBackOffSince("k", now.Add(-301*time.Second)) {
		t.Error("backoff window wrong")
	}
	now = now.Add(11 * time.Minute) // untouched for over twice the max
	if b.Delay("k") != 0 {
		t.Error("a stale entry should be forgotten")
	}
	b.Next("x/a")
	b.Next("x/b")
	b.Forget("x/")
	if b.Delay("x/a") != 0 || b.Delay("x/b") != 0 {
		t.Error("Forget by prefix")
	}
	b.Next("gone/a") // never asked about again
	now = now.Add(11 * time.Minute)
	b.Next("new/a")
	if _, kept := b.entries["gone/a"]; kept || len(b.entries) != 1 {
		t.Errorf("entries %v: a stale key never asked about again was kept", b.entries)
	}
}

func TestSidecarStartupProbeGatesTheNextInit(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways, []corev1.Container{sidecar("side"), {Name: "init"}}, "app")
	rt := &RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("side", "s1", running, 0)}}
	started := false
	in := PlanInput{Pod: pod, Runtime: rt, Started: func(*corev1.Container, string) bool { return started }}
	if got := ComputePlan(in); len(got.Start) != 0 {
		t.Fatalf("started %v before the sidecar's startup probe passed", got.Start)
	}
	started = true
	if got := ComputePlan(in); !reflect.DeepEqual(got.Start, []string{"init"}) {
		t.Fatalf("plan %+v", got)
	}
}

// A new image starts a crash-looping container's back-off afresh, as
// upstream's key (which holds the container's hash) does.
func TestBackoffKeyChangesWithTheImage(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "u"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1.36"}}}}
	before := backoffKey(pod, "c")
	pod.Spec.Containers[0].Image = "busybox:1.37"
	if after := backoffKey(pod, "c"); after == before {
		t.Errorf("the back-off key %q did not change with the image", after)
	}
}

// A container's own restartPolicy and restartPolicyRules come before the
// pod's restartPolicy, in the plan and in the phase.
func TestContainerRestartRules(t *testing.T) {
	neverC, alwaysC := corev1.ContainerRestartPolicyNever, corev1.ContainerRestartPolicyAlways
	retry42 := []corev1.ContainerRestartRule{{Action: corev1.ContainerRestartRuleActionRestart,
		ExitCodes: &corev1.ContainerRestartRuleOnExitCodes{Operator: corev1.ContainerRestartRuleOnExitCodesOpIn, Values: []int32{42}}}}
	cases := []struct {
		name      string
		pod       corev1.RestartPolicy
		policy    *corev1.ContainerRestartPolicy
		rules     []corev1.ContainerRestartRule
		exit      int32
		restarted bool
		phase     corev1.PodPhase
	}{
		{"Never pod, rule matches the exit code", corev1.RestartPolicyNever, &neverC, retry42, 42, true, corev1.PodRunning},
		{"Never pod, rule does not match", corev1.RestartPolicyNever, &neverC, retry42, 1, false, corev1.PodFailed},
		{"Always pod, container says Never, success", corev1.RestartPolicyAlways, &neverC, nil, 0, false, corev1.PodSucceeded},
		{"Always pod, container says Never, failure", corev1.RestartPolicyAlways, &neverC, nil, 3, false, corev1.PodFailed},
		{"OnFailure pod, container says Always, success", corev1.RestartPolicyOnFailure, &alwaysC, nil, 0, true, corev1.PodRunning},
		{"no container policy: the pod's (Never)", corev1.RestartPolicyNever, nil, nil, 42, false, corev1.PodFailed},
		{"no container policy: the pod's (OnFailure)", corev1.RestartPolicyOnFailure, nil, nil, 1, true, corev1.PodRunning},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod(tc.pod, nil, "app")
			pod.Spec.Containers[0].RestartPolicy, pod.Spec.Containers[0].RestartPolicyRules = tc.policy, tc.rules
			rt := &RuntimePod{Sandboxes: []*runtimeapi.PodSandboxStatus{ready("s1", 0)}, Containers: []*Container{ctr("app", "s1", exited, tc.exit)}}
			p := ComputePlan(PlanInput{Pod: pod, Runtime: rt})
			if got := len(p.Start) == 1; got != tc.restarted {
				t.Errorf("restarted %v (plan %+v), want %v", got, p, tc.restarted)
			}
			if got := podPhaseOf(pod, rt); got != tc.phase {
				t.Errorf("phase %s, want %s", got, tc.phase)
			}
			// With the sandbox gone, the pod gets a new one only when a
			// container may restart.
			rt.Sandboxes = []*runtimeapi.PodSandboxStatus{notReady("s1", 0)}
			p = ComputePlan(PlanInput{Pod: pod, Runtime: rt})
			if want := mayRestart(&pod.Spec.Containers[0], &pod.Spec); p.CreateSandbox != want {
				t.Errorf("a new sandbox: %v, want %v", p.CreateSandbox, want)
			}
		})
	}
}

func podPhaseOf(pod *corev1.Pod, rt *RuntimePod) corev1.PodPhase {
	return statusOf(pod, rt, nil, false).Phase
}

// The most a pod holds at once: a regular init container with the sidecars
// started before it, the app containers with every sidecar; a resource no
// app container names is left out, as upstream's managers count.
func TestMostAtOnce(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "a"}, {Name: "s", RestartPolicy: &always}, {Name: "b"}},
		Containers:     []corev1.Container{{Name: "x"}, {Name: "y"}},
	}}
	counts := map[string]map[corev1.ResourceName]int{
		"a": {"cpu": 4, "only-init": 9}, "s": {"cpu": 1}, "b": {"cpu": 4},
		"x": {"cpu": 1}, "y": {"cpu": 1},
	}
	got := MostAtOnce(pod, func(c *corev1.Container) map[corev1.ResourceName]int { return counts[c.Name] })
	if len(got) != 1 || got["cpu"] != 5 {
		t.Fatalf("%v, want cpu 5 (init b with the sidecar)", got)
	}
	counts["x"]["cpu"], counts["y"]["cpu"] = 3, 3
	if got := MostAtOnce(pod, func(c *corev1.Container) map[corev1.ResourceName]int { return counts[c.Name] }); got["cpu"] != 7 {
		t.Fatalf("%v, want cpu 7 (the apps with the sidecar)", got)
	}
}
