//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criremote "k8s.io/cri-client/pkg"
)

// A RuntimeClass is resolved to its handler: one naming containerd's runc
// handler runs the pod; one naming a handler containerd lacks leaves the pod
// without a sandbox and says why in an event.
func TestRuntimeClassHandler(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	good, bad := ns+"-runc", ns+"-missing"
	for name, handler := range map[string]string{good: "runc", bad: "no-such-handler"} {
		if _, err := cs.NodeV1().RuntimeClasses().Create(ctx, &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Handler: handler}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.NodeV1().RuntimeClasses().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	ok := busyboxPod("with-runc", corev1.RestartPolicyAlways, "sleep 3600")
	ok.Spec.RuntimeClassName = &good
	create(t, cs, ns, ok)
	waitPod(t, cs, ns, "with-runc", 60*time.Second, "Running", running)
	missing := busyboxPod("with-missing", corev1.RestartPolicyAlways, "sleep 3600")
	missing.Spec.RuntimeClassName = &bad
	create(t, cs, ns, missing)
	podEvent(t, cs, ns, "with-missing", "FailedCreatePodSandBox", "no-such-handler", 60*time.Second)
	p, _ := cs.CoreV1().Pods(ns).Get(ctx, "with-missing", metav1.GetOptions{})
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("pod with an unknown handler is %s, want Pending", p.Status.Phase)
	}
}

// Dead instances of a crash-looping container are collected: at most one
// stays beside the live one (--maximum-dead-containers-per-container=1).
func TestDeadContainersCollected(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	create(t, cs, ns, busyboxPod("crasher", corev1.RestartPolicyAlways, "exit 1"))
	pod := waitPod(t, cs, ns, "crasher", 90*time.Second, "restarted twice", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount >= 2
	})
	rt, err := criremote.NewRemoteRuntimeService(ctx, env["CRI_ENDPOINT"], 10*time.Second, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	sel := map[string]string{"io.kubernetes.pod.uid": string(pod.UID)}
	var n int
	err = wait.PollUntilContextTimeout(ctx, 2*time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		ctrs, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: sel})
		if err != nil {
			return false, nil
		}
		n = 0
		for _, c := range ctrs {
			if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				n++
			}
		}
		return n <= 1, nil
	})
	if err != nil {
		t.Fatalf("%d dead containers of the crashing pod still there after 90s; want at most 1", n)
	}
	p, _ := cs.CoreV1().Pods(ns).Get(ctx, "crasher", metav1.GetOptions{})
	if cs := p.Status.ContainerStatuses; len(cs) == 0 || cs[0].RestartCount < 2 || cs[0].LastTerminationState.Terminated == nil {
		t.Errorf("status lost with the collected containers: %s", describePod(p))
	}
}

// With maxPods reached, a pod bound to the node is refused with OutOfpods.
func TestPodRejectedForMaxPods(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	// Pods of earlier tests still stopping would make the count below wrong
	// by the time the new pods arrive: wait for them to go.
	var list *corev1.PodList
	err := wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		if list, err = cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + env["NODE_NAME"]}); err != nil {
			return false, nil
		}
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("pods on the node still stopping after 90s: %v", err)
	}
	active := 0
	for _, p := range list.Items {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			active++
		}
	}
	limit := active + 1
	node, err := cs.CoreV1().Nodes().Get(ctx, env["NODE_NAME"], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := node.Status.Allocatable[corev1.ResourcePods]
	orig, err := os.ReadFile(env["CONFIG_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^maxPods: \d+$`)
	if !re.Match(orig) {
		t.Fatalf("%s has no maxPods line", env["CONFIG_FILE"])
	}
	t.Cleanup(func() {
		reconfigureAgentReady(t, env, orig)
		waitNodePods(t, env, before.String(), 90*time.Second)
	})
	reconfigureAgentReady(t, env, re.ReplaceAll(orig, []byte(fmt.Sprintf("maxPods: %d", limit))))
	waitNodePods(t, env, fmt.Sprint(limit), 90*time.Second)
	for _, name := range []string{"first", "second"} {
		p := busyboxPod(name, corev1.RestartPolicyAlways, "sleep 3600")
		p.Spec.NodeName = env["NODE_NAME"]
		create(t, cs, ns, p)
		if name == "first" {
			waitPod(t, cs, ns, name, 60*time.Second, "Running", running)
		}
	}
	p := waitPod(t, cs, ns, "second", 60*time.Second, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	if p.Status.Reason != "OutOfpods" || !strings.Contains(p.Status.Message, "pods") {
		t.Errorf("reason %q message %q", p.Status.Reason, p.Status.Message)
	}
}

// waitNodePods waits for the node to be Ready with want allocatable pods.
func waitNodePods(t *testing.T, env clusterEnv, want string, timeout time.Duration) {
	t.Helper()
	cs := env.client(t)
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, env["NODE_NAME"], metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
				return false, nil
			}
		}
		pods := n.Status.Allocatable[corev1.ResourcePods]
		return pods.String() == want, nil
	})
	if err != nil {
		t.Fatalf("node not Ready with %q allocatable pods within %s", want, timeout)
	}
}
