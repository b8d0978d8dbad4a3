//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

func busyboxPod(name string, policy corev1.RestartPolicy, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                 policy,
			TerminationGracePeriodSeconds: ptr(int64(2)),
			Containers:                    []corev1.Container{{Name: "main", Image: busybox, Command: []string{"sh", "-c", script}}},
		},
	}
}

func create(t *testing.T, cs kubernetes.Interface, ns string, pod *corev1.Pod) {
	t.Helper()
	if _, err := cs.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func running(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning }

func TestPodInitContainersAndSidecar(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	always := corev1.ContainerRestartPolicyAlways
	pod := busyboxPod("init", corev1.RestartPolicyAlways, "sleep 3600")
	pod.Spec.InitContainers = []corev1.Container{
		{Name: "first", Image: busybox, Command: []string{"sh", "-c", "sleep 1"}},
		{Name: "side", Image: busybox, Command: []string{"sh", "-c", "sleep 3600"}, RestartPolicy: &always},
		{Name: "second", Image: busybox, Command: []string{"true"}},
	}
	create(t, cs, ns, pod)
	p := waitPod(t, cs, ns, "init", 90*time.Second, "Running with its sidecar", func(p *corev1.Pod) bool {
		return running(p) && len(p.Status.InitContainerStatuses) == 3 && p.Status.InitContainerStatuses[1].State.Running != nil &&
			len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
	})
	first, second := p.Status.InitContainerStatuses[0].State.Terminated, p.Status.InitContainerStatuses[2].State.Terminated
	if first == nil || second == nil || first.Reason != "Completed" || second.Reason != "Completed" {
		t.Fatalf("init containers not completed: %s", describePod(p))
	}
	side := p.Status.InitContainerStatuses[1].State.Running
	if side.StartedAt.Before(&first.FinishedAt) || second.StartedAt.Before(&side.StartedAt) {
		t.Errorf("init order broken: first finished %v, sidecar started %v, second started %v", first.FinishedAt, side.StartedAt, second.StartedAt)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodInitialized && c.Status != corev1.ConditionTrue {
			t.Errorf("Initialized=%s", c.Status)
		}
	}
}

func TestPodCrashLoopBackOff(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	create(t, cs, ns, busyboxPod("crash", corev1.RestartPolicyAlways, "date +%s; exit 1"))
	sawBackOff := false
	watchBackOff := func(p *corev1.Pod) {
		if len(p.Status.ContainerStatuses) > 0 {
			if w := p.Status.ContainerStatuses[0].State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" && strings.Contains(w.Message, "back-off") {
				sawBackOff = true
			}
		}
	}
	p := waitPod(t, cs, ns, "crash", 90*time.Second, "restarted twice", func(p *corev1.Pod) bool {
		watchBackOff(p)
		return len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount >= 2
	})
	s := p.Status.ContainerStatuses[0]
	last := s.LastTerminationState.Terminated
	if last == nil {
		last = s.State.Terminated
	}
	if last == nil || last.ExitCode != 1 {
		t.Errorf("no record of the exit code 1: %s", describePod(p))
	}
	// Restarts come slower and slower: the third waits for the backoff of
	// the second (10 s, then 20 s after the previous exit).
	start := time.Now()
	waitPod(t, cs, ns, "crash", 60*time.Second, "restarted a third time", func(p *corev1.Pod) bool {
		watchBackOff(p)
		return p.Status.ContainerStatuses[0].RestartCount >= 3
	})
	if elapsed := time.Since(start); elapsed < 5*time.Second {
		t.Errorf("third restart came after %s: no growing backoff", elapsed)
	}
	// Bosun reports the wait as the container's state, as kubectl shows it;
	// the reference kubelet was seen here reporting the last termination
	// instead, so this is Bosun's own check.
	if env["KUBELET"] == "bosun" && !sawBackOff {
		t.Errorf("never saw state waiting/CrashLoopBackOff with a back-off message")
	}
}

func TestPodRestartPoliciesAndTerminationMessages(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	create(t, cs, ns, busyboxPod("ok", corev1.RestartPolicyNever, "echo done > /dev/termination-log; exit 0"))
	create(t, cs, ns, busyboxPod("bad", corev1.RestartPolicyNever, "echo broken > /dev/termination-log; exit 2"))
	onFail := busyboxPod("logs", corev1.RestartPolicyOnFailure, "echo from-the-log; exit 0")
	onFail.Spec.Containers[0].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	create(t, cs, ns, onFail)
	fallback := busyboxPod("fallback", corev1.RestartPolicyNever, "echo last-words; exit 4")
	fallback.Spec.Containers[0].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	create(t, cs, ns, fallback)
	for _, tc := range []struct {
		name  string
		phase corev1.PodPhase
		exit  int32
		msg   string
	}{{"ok", corev1.PodSucceeded, 0, "done\n"}, {"bad", corev1.PodFailed, 2, "broken\n"}, {"logs", corev1.PodSucceeded, 0, ""},
		{"fallback", corev1.PodFailed, 4, "last-words\n"}} {
		p := waitPod(t, cs, ns, tc.name, 60*time.Second, string(tc.phase), func(p *corev1.Pod) bool { return p.Status.Phase == tc.phase })
		term := p.Status.ContainerStatuses[0].State.Terminated
		if term == nil || term.ExitCode != tc.exit || term.Message != tc.msg || p.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("%s: %s (message %q)", tc.name, describePod(p), termMessage(term))
		}
	}
}

func termMessage(t *corev1.ContainerStateTerminated) string {
	if t == nil {
		return ""
	}
	return t.Message
}

func TestPodGracefulDeletion(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	// One container exits on SIGTERM at once; one ignores it and must be
	// killed when the grace period ends.
	polite := busyboxPod("polite", corev1.RestartPolicyAlways, "trap 'exit 0' TERM; while true; do sleep 0.2; done")
	stubborn := busyboxPod("stubborn", corev1.RestartPolicyAlways, "trap '' TERM; while true; do sleep 0.2; done")
	polite.Spec.TerminationGracePeriodSeconds, stubborn.Spec.TerminationGracePeriodSeconds = ptr(int64(30)), ptr(int64(6))
	create(t, cs, ns, polite)
	create(t, cs, ns, stubborn)
	for _, name := range []string{"polite", "stubborn"} {
		waitPod(t, cs, ns, name, 60*time.Second, "Running", running)
	}
	took := map[string]time.Duration{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range []string{"polite", "stubborn"} {
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			start := time.Now()
			_ = cs.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
			_ = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
				_, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
			mu.Lock()
			took[name] = time.Since(start)
			mu.Unlock()
		}(name)
	}
	wg.Wait()
	if took["polite"] > 10*time.Second {
		t.Errorf("a container that exits on SIGTERM took %s to go", took["polite"])
	}
	if took["stubborn"] < 5*time.Second || took["stubborn"] > 25*time.Second {
		t.Errorf("a container that ignores SIGTERM with a 6s grace period went after %s", took["stubborn"])
	}
	t.Logf("deletion took: polite %s, stubborn %s", took["polite"], took["stubborn"])
}

func TestPodRejectedByNodeAdmission(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	// Bound straight to the node, past the scheduler: the agent's own
	// admission must refuse it.
	pod := busyboxPod("huge", corev1.RestartPolicyNever, "true")
	pod.Spec.NodeName = env["NODE_NAME"]
	pod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1000")}
	create(t, cs, ns, pod)
	p := waitPod(t, cs, ns, "huge", 30*time.Second, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	if p.Status.Reason != "OutOfcpu" || !strings.HasPrefix(p.Status.Message, "Pod was rejected: Node didn't have enough resource: cpu") {
		t.Errorf("reason %q message %q", p.Status.Reason, p.Status.Message)
	}
	sel := busyboxPod("elsewhere", corev1.RestartPolicyNever, "true")
	sel.Spec.NodeName = env["NODE_NAME"]
	sel.Spec.NodeSelector = map[string]string{"no-such-label": "x"}
	create(t, cs, ns, sel)
	p = waitPod(t, cs, ns, "elsewhere", 30*time.Second, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	if p.Status.Reason != "NodeAffinity" {
		t.Errorf("reason %q message %q", p.Status.Reason, p.Status.Message)
	}
}

func TestPodImageThatDoesNotExist(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	pod := busyboxPod("noimage", corev1.RestartPolicyAlways, "true")
	pod.Spec.Containers[0].Image = "registry.k8s.io/e2e-test-images/does-not-exist:0.0.1"
	create(t, cs, ns, pod)
	p := waitPod(t, cs, ns, "noimage", 90*time.Second, "ErrImagePull or ImagePullBackOff", pullFailing)
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("phase %s", p.Status.Phase)
	}
}

func TestPodEnvironment(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"},
		Data: map[string]string{"color": "blue"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := busyboxPod("env", corev1.RestartPolicyNever, "echo \"$GREETING|$COLOR|$POD_NAME|$KUBERNETES_SERVICE_HOST\"")
	pod.Spec.Containers[0].Env = []corev1.EnvVar{
		{Name: "COLOR", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "color"}}},
		{Name: "GREETING", Value: "hello-$(COLOR)"},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
	}
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "env", 60*time.Second, "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	out, err := env.kubectl(ctx, "", "-n", ns, "logs", "env")
	if err != nil || strings.TrimSpace(out) != "hello-blue|blue|env|10.254.0.1" {
		t.Errorf("environment %q (%v)", out, err)
	}
	missing := busyboxPod("missing", corev1.RestartPolicyNever, "true")
	missing.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nope"}}}}
	create(t, cs, ns, missing)
	p := waitPod(t, cs, ns, "missing", 60*time.Second, "CreateContainerConfigError", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
			p.Status.ContainerStatuses[0].State.Waiting.Reason == "CreateContainerConfigError"
	})
	if msg := p.Status.ContainerStatuses[0].State.Waiting.Message; !strings.Contains(msg, "nope") {
		t.Errorf("message does not name the key: %q", msg)
	}
}

func TestThirtyPodsAtOnce(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	start := time.Now()
	for i := 0; i < 30; i++ {
		create(t, cs, ns, busyboxPod(fmt.Sprintf("many-%02d", i), corev1.RestartPolicyAlways, "sleep 3600"))
	}
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 180*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		n := 0
		for i := range list.Items {
			if running(&list.Items[i]) {
				n++
			}
		}
		return n == 30, nil
	})
	if err != nil {
		t.Fatalf("30 pods not all Running within 180s")
	}
	t.Logf("30 pods Running after %s", time.Since(start).Round(time.Millisecond))
}

// kill -9 of the agent and a restart restart no container: the same
// container IDs, the same restart counts.
func TestAgentKill9AdoptsRunningContainers(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	create(t, cs, ns, busyboxPod("survivor", corev1.RestartPolicyAlways, "sleep 3600"))
	before := waitPod(t, cs, ns, "survivor", 60*time.Second, "Running", running).Status.ContainerStatuses[0]
	data, err := os.ReadFile(env["AGENT_PID"])
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	restartAgent(t, env)
	restarted := time.Now()
	// Give the new agent time to sync the pod, then compare.
	time.Sleep(15 * time.Second)
	after := waitPod(t, cs, ns, "survivor", 30*time.Second, "Running", running).Status.ContainerStatuses[0]
	if after.ContainerID != before.ContainerID || after.RestartCount != before.RestartCount {
		t.Errorf("container changed across the agent restart: %s/%d -> %s/%d", before.ContainerID, before.RestartCount, after.ContainerID, after.RestartCount)
	}
	node, _ := cs.CoreV1().Nodes().Get(context.Background(), env["NODE_NAME"], metav1.GetOptions{})
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && (c.Status != corev1.ConditionTrue || c.LastHeartbeatTime.Time.Before(restarted.Add(-time.Second))) {
			t.Errorf("node not Ready after the restart: %+v", c)
		}
	}
}

// A static pod file runs a pod with a mirror pod in the apiserver; a deleted
// mirror comes back; removing the file stops the pod and its mirror.
func TestStaticPod(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ctx := context.Background()
	dir := env["STATIC_POD_PATH"]
	if dir == "" {
		t.Fatal("no STATIC_POD_PATH in the cluster env")
	}
	manifest := `apiVersion: v1
kind: Pod
metadata:
  name: static-web
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: registry.k8s.io/e2e-test-images/busybox:1.37.0-1
    command: ["sh", "-c", "echo static-hello; sleep 3600"]
`
	file := dir + "/static-web.yaml"
	bad := dir + "/broken.yaml"
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nspec: [oops\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(file); os.Remove(bad) })
	name := "static-web-" + env["NODE_NAME"]
	mirror := waitPod(t, cs, "default", name, 120*time.Second, "a Running mirror pod", running)
	if mirror.Annotations["kubernetes.io/config.mirror"] == "" || mirror.Annotations["kubernetes.io/config.source"] != "file" {
		t.Errorf("mirror annotations %v", mirror.Annotations)
	}
	out, err := env.kubectl(ctx, "", "-n", "default", "logs", name)
	if err != nil || !strings.Contains(out, "static-hello") {
		t.Errorf("logs of the static pod: %v %q", err, out)
	}
	if err := cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	again := waitPod(t, cs, "default", name, 120*time.Second, "recreated", func(p *corev1.Pod) bool { return p.UID != mirror.UID && running(p) })
	if again.Status.ContainerStatuses[0].ContainerID != mirror.Status.ContainerStatuses[0].ContainerID {
		t.Errorf("deleting the mirror restarted the static pod's container")
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, 120*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("mirror pod still there after the file was removed")
	}
}

// A container's restartPolicyRules come before the pod's restartPolicy: in
// a Never pod, the container that exits with the code a rule names is
// restarted, and one that exits otherwise is not.
func TestContainerRestartRules(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	never := corev1.ContainerRestartPolicyNever
	pod := busyboxPod("rules", corev1.RestartPolicyNever, "")
	pod.Spec.Volumes = []corev1.Volume{{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	rule := []corev1.ContainerRestartRule{{Action: corev1.ContainerRestartRuleActionRestart,
		ExitCodes: &corev1.ContainerRestartRuleOnExitCodes{Operator: corev1.ContainerRestartRuleOnExitCodesOpIn, Values: []int32{42}}}}
	retried := pod.Spec.Containers[0]
	retried.Name, retried.RestartPolicy, retried.RestartPolicyRules = "retried", &never, rule
	retried.Command = []string{"sh", "-c", "if [ -e /state/ran ]; then exec sleep 100000; fi; touch /state/ran; exit 42"}
	retried.VolumeMounts = []corev1.VolumeMount{{Name: "state", MountPath: "/state"}}
	done := retried
	done.Name = "done"
	done.Command = []string{"sh", "-c", "exit 3"}
	pod.Spec.Containers = []corev1.Container{retried, done}
	create(t, cs, ns, pod)
	p := waitPod(t, cs, ns, "rules", 90*time.Second, "retried restarted and running, done stopped", func(p *corev1.Pod) bool {
		if len(p.Status.ContainerStatuses) != 2 {
			return false
		}
		byName := map[string]corev1.ContainerStatus{}
		for _, s := range p.Status.ContainerStatuses {
			byName[s.Name] = s
		}
		r, d := byName["retried"], byName["done"]
		return r.RestartCount == 1 && r.State.Running != nil && d.State.Terminated != nil
	})
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == "done" && s.RestartCount != 0 {
			t.Errorf("the container whose exit code no rule names restarted %d times in a Never pod", s.RestartCount)
		}
	}
	if p.Status.Phase != corev1.PodRunning {
		t.Errorf("phase %s, want Running while the retried container runs", p.Status.Phase)
	}
}

// The node declares the features its agent has (node.status.declaredFeatures,
// which the scheduler and apiserver read); a pod bound to it past the
// scheduler that needs one it lacks is refused with upstream's reason.
func TestDeclaredFeatures(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	node, err := cs.CoreV1().Nodes().Get(context.Background(), env["NODE_NAME"], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, f := range node.Status.DeclaredFeatures {
		declared[f] = true
	}
	for _, f := range []string{"ExtendWebSocketsToKubelet", "InPlacePodVerticalScalingInitContainers"} {
		if !declared[f] {
			t.Errorf("the node does not declare %s: %v", f, node.Status.DeclaredFeatures)
		}
	}
	if declared["RestartAllContainersOnContainerExits"] {
		t.Skipf("KUBELET=%s declares RestartAllContainersOnContainerExits: nothing to refuse", env["KUBELET"])
	}
	never := corev1.ContainerRestartPolicyNever
	pod := busyboxPod("restart-all", corev1.RestartPolicyNever, "exit 7")
	pod.Spec.NodeName = env["NODE_NAME"]
	pod.Spec.Containers[0].RestartPolicy = &never
	pod.Spec.Containers[0].RestartPolicyRules = []corev1.ContainerRestartRule{{Action: corev1.ContainerRestartRuleActionRestartAllContainers,
		ExitCodes: &corev1.ContainerRestartRuleOnExitCodes{Operator: corev1.ContainerRestartRuleOnExitCodesOpIn, Values: []int32{7}}}}
	create(t, cs, ns, pod)
	p := waitPod(t, cs, ns, "restart-all", 30*time.Second, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	if p.Status.Reason != "PodFeatureUnsupported" || p.Status.Message != "Pod was rejected: Pod requires node features that are not available: RestartAllContainersOnContainerExits" {
		t.Errorf("reason %q message %q", p.Status.Reason, p.Status.Message)
	}
}

// While a node is NotReady the node lifecycle controller marks its pods not
// Ready (the Ready condition only) and leaves it to the node agent to set
// them back once it reports again: the agent notices that the apiserver's
// status drifted from its own and sends its own again, as upstream's status
// manager does within its 10-s sync. Both for a pod of the API and for a
// static pod, whose mirror pod's changes do not wake its worker.
func TestPodReadinessSetBackAfterAnotherWriter(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	create(t, cs, ns, busyboxPod("steady", corev1.RestartPolicyAlways, "sleep 3600"))
	manifest := filepath.Join(env["STATIC_POD_PATH"], "steady-"+ns+".yaml")
	t.Cleanup(func() { _ = os.Remove(manifest) })
	static := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: steady-static\n  namespace: %s\nspec:\n"+
		"  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: %s\n    command: [\"sleep\", \"3600\"]\n", ns, busybox)
	if err := os.WriteFile(manifest, []byte(static), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"steady", "steady-static-" + env["NODE_NAME"]} {
		pod := waitPod(t, cs, ns, name, 90*time.Second, "Ready", podReady)
		// Do what the controller does: Ready False, nothing else.
		for i := range pod.Status.Conditions {
			if pod.Status.Conditions[i].Type == corev1.PodReady {
				pod.Status.Conditions[i].Status = corev1.ConditionFalse
				pod.Status.Conditions[i].Reason = "NodeNotReady"
				pod.Status.Conditions[i].LastTransitionTime = metav1.Now()
			}
		}
		if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		waitPod(t, cs, ns, name, 45*time.Second, "Ready again", podReady)
		t.Logf("%s: Ready set back after %s", name, time.Since(start).Round(100*time.Millisecond))
	}
}
