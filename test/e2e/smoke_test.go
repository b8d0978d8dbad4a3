//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

const busybox = "registry.k8s.io/e2e-test-images/busybox:1.37.0-1"

// TestSmoke is the foundation's check with either agent: the node is Ready, a
// busybox pod runs, kubectl logs shows its output, kubectl exec runs a
// command in it, and the pod deletes cleanly.
func TestSmoke(t *testing.T) {
	env := loadEnv(t)
	cs := env.client(t)
	ctx := context.Background()
	t.Logf("node agent under test: %s", env["KUBELET"])
	requirePods(t, env)

	node, err := cs.CoreV1().Nodes().Get(ctx, env["NODE_NAME"], metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get node: %v", err)
	}
	ready := false
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	if !ready {
		t.Fatalf("node %s is not Ready: %+v", node.Name, node.Status.Conditions)
	}

	ns := testNamespace(t, cs)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:    "main",
				Image:   busybox,
				Command: []string{"sh", "-c", "echo smoke-says-hello; while true; do sleep 1; done"},
			}},
			TerminationGracePeriodSeconds: ptr(int64(5)),
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running := waitPod(t, cs, ns, "smoke", 60*time.Second, "Running", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning
	})
	if running.Spec.NodeName != env["NODE_NAME"] || running.Status.PodIP == "" {
		t.Fatalf("pod ran on %q with IP %q", running.Spec.NodeName, running.Status.PodIP)
	}

	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var logs string
	err = wait.PollUntilContextTimeout(tctx, 250*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		logs, err = env.kubectl(ctx, "", "-n", ns, "logs", "smoke")
		return err == nil && strings.Contains(logs, "smoke-says-hello"), nil
	})
	if err != nil {
		t.Fatalf("kubectl logs never showed the pod's output: %s", logs)
	}

	out, err := env.kubectl(tctx, "", "-n", ns, "exec", "smoke", "--", "sh", "-c", "echo exec-$((6*7)); cat /etc/hostname")
	if err != nil || !strings.Contains(out, "exec-42") || !strings.Contains(out, "smoke") {
		t.Fatalf("kubectl exec: %v: %q", err, out)
	}

	if err := cs.CoreV1().Pods(ns).Delete(ctx, "smoke", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Pods(ns).Get(ctx, "smoke", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("pod was not deleted within 60s")
	}
}

func ptr[T any](v T) *T { return &v }
