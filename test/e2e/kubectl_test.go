//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// The kubectl an operator types against a node, through the real kubectl:
// cp both ways, debug with an ephemeral container and on the node, logs with
// several containers, the node proxy, cordon and drain.
func TestKubectlWorkflows(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kubectl := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := env.kubectl(ctx, "", args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	pod := busyboxPod("work", corev1.RestartPolicyAlways, "echo started; sleep 3600")
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
		Name: "side", Image: busybox, Command: []string{"sh", "-c", "echo from-side; sleep 3600"},
	})
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "work", 90*time.Second, "Running", running)

	t.Run("cp both ways", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "in.txt")
		body := strings.Repeat("bosun copies this line\n", 2000)
		if err := os.WriteFile(src, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		kubectl(t, "-n", ns, "cp", src, "work:/tmp/in.txt", "-c", "main")
		if got := kubectl(t, "-n", ns, "exec", "work", "-c", "main", "--", "wc", "-c", "/tmp/in.txt"); !strings.HasPrefix(strings.TrimSpace(got), "46000") {
			t.Errorf("the file in the container has %q bytes, want 46000", got)
		}
		dst := filepath.Join(dir, "out.txt")
		kubectl(t, "-n", ns, "cp", "work:/tmp/in.txt", dst, "-c", "main")
		if got, err := os.ReadFile(dst); err != nil || string(got) != body {
			t.Errorf("copied back %d bytes (%v), want the %d sent", len(got), err, len(body))
		}
	})

	t.Run("logs of every container", func(t *testing.T) {
		out := kubectl(t, "-n", ns, "logs", "work", "--all-containers", "--prefix")
		for _, want := range []string{"[pod/work/main] started", "[pod/work/side] from-side"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl logs --all-containers --prefix lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("debug with an ephemeral container", func(t *testing.T) {
		kubectl(t, "-n", ns, "debug", "work", "--image="+busybox, "--container=dbg", "--target=main", "--",
			"sh", "-c", "echo debug-sees $(cat /proc/1/cmdline | tr '\\0' ' '); sleep 600")
		waitPod(t, cs, ns, "work", 60*time.Second, "the ephemeral container running", func(p *corev1.Pod) bool {
			for _, s := range p.Status.EphemeralContainerStatuses {
				if s.Name == "dbg" && s.State.Running != nil {
					return true
				}
			}
			return false
		})
		var out string
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
			out, _ = env.kubectl(ctx, "", "-n", ns, "logs", "work", "-c", "dbg")
			return strings.Contains(out, "debug-sees"), nil
		})
		if err != nil {
			t.Fatalf("the ephemeral container's log: %q", out)
		}
		// --target shares the main container's process namespace: its PID 1 is
		// the main container's shell.
		if !strings.Contains(out, "sleep 3600") && !strings.Contains(out, "echo started") {
			t.Errorf("the ephemeral container does not see the target's processes: %q", out)
		}
	})

	t.Run("debug the node", func(t *testing.T) {
		out := kubectl(t, "-n", ns, "debug", "node/"+env["NODE_NAME"], "--image="+busybox, "--profile=general", "--",
			"sh", "-c", "test -d /host/proc && echo node-root-mounted; sleep 600")
		name := ""
		for _, f := range strings.Fields(out) {
			if strings.HasPrefix(f, "node-debugger-") {
				name = f
			}
		}
		if name == "" {
			t.Fatalf("kubectl debug node printed no pod name:\n%s", out)
		}
		p := waitPod(t, cs, ns, name, 60*time.Second, "Running", running)
		if !p.Spec.HostNetwork || !p.Spec.HostPID || p.Spec.NodeName != env["NODE_NAME"] {
			t.Errorf("the node debugger pod is not on the node's namespaces: %s", describePod(p))
		}
		var logs string
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
			logs, _ = env.kubectl(ctx, "", "-n", ns, "logs", name)
			return strings.Contains(logs, "node-root-mounted"), nil
		})
		if err != nil {
			t.Errorf("the node's root is not at /host in the debugger: %q", logs)
		}
	})

	// kubectl's other forms of debugging: an ephemeral container with no
	// target and a profile (netadmin adds NET_ADMIN), and a copy of the pod
	// with a debug container sharing its process namespace.
	logsOf := func(t *testing.T, pod, container, want string) string {
		t.Helper()
		var out string
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
			out, _ = env.kubectl(ctx, "", "-n", ns, "logs", pod, "-c", container)
			return strings.Contains(out, want), nil
		})
		if err != nil {
			t.Fatalf("%s/%s never logged %q: %q", pod, container, want, out)
		}
		return out
	}
	t.Run("debug with a profile and no target", func(t *testing.T) {
		kubectl(t, "-n", ns, "debug", "work", "--image="+busybox, "--container=netdbg", "--profile=netadmin", "--",
			"sh", "-c", "echo caps $(grep CapEff /proc/self/status); sleep 600")
		out := logsOf(t, "work", "netdbg", "caps")
		var eff uint64
		if _, err := fmt.Sscanf(strings.TrimSpace(out[strings.Index(out, "CapEff:")+len("CapEff:"):]), "%x", &eff); err != nil {
			t.Fatalf("no CapEff in %q: %v", out, err)
		}
		const netAdmin = 12
		if eff&(1<<netAdmin) == 0 {
			t.Errorf("the netadmin debug container lacks CAP_NET_ADMIN: CapEff %x", eff)
		}
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "work", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Status.ContainerStatuses) != 2 || p.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("the debugged pod's own containers were disturbed: %s", describePod(p))
		}
	})
	t.Run("debug a copy of the pod", func(t *testing.T) {
		kubectl(t, "-n", ns, "debug", "work", "--copy-to=work-copy", "--share-processes", "--image="+busybox, "--container=copydbg", "--",
			"sh", "-c", "echo copy-sees $(ps -o args | grep -c '[s]leep 3600'); sleep 600")
		p := waitPod(t, cs, ns, "work-copy", 90*time.Second, "Running", running)
		if p.Spec.ShareProcessNamespace == nil || !*p.Spec.ShareProcessNamespace || len(p.Spec.Containers) != 3 {
			t.Errorf("the copy does not share its processes among its 3 containers: %s", describePod(p))
		}
		// main and side each run a "sleep 3600"; the bracket keeps the
		// debug container's own command line from matching.
		out := logsOf(t, "work-copy", "copydbg", "copy-sees")
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(out), "copy-sees %d", &n); err != nil || n < 2 {
			t.Errorf("the debug container in the copy does not see the other containers' processes: %q", out)
		}
	})

	t.Run("get --raw through the node proxy", func(t *testing.T) {
		base := "/api/v1/nodes/" + env["NODE_NAME"] + "/proxy"
		var summary statsv1alpha1.Summary
		if err := json.Unmarshal([]byte(kubectl(t, "get", "--raw", base+"/stats/summary")), &summary); err != nil {
			t.Fatalf("/stats/summary: %v", err)
		}
		found := false
		for _, p := range summary.Pods {
			if p.PodRef.Namespace == ns && p.PodRef.Name == "work" {
				found = len(p.Containers) >= 2
			}
		}
		if summary.Node.NodeName != env["NODE_NAME"] || !found {
			t.Errorf("/stats/summary: node %q, pod work with its containers found: %v", summary.Node.NodeName, found)
		}
		var pods corev1.PodList
		if err := json.Unmarshal([]byte(kubectl(t, "get", "--raw", base+"/pods")), &pods); err != nil || len(pods.Items) == 0 {
			t.Errorf("/pods: %d pods, %v", len(pods.Items), err)
		}
		if out := kubectl(t, "get", "--raw", base+"/healthz"); strings.TrimSpace(out) != "ok" {
			t.Errorf("/healthz: %q", out)
		}
		if out := kubectl(t, "get", "--raw", base+"/configz"); !strings.Contains(out, `"kubeletconfig"`) {
			t.Errorf("/configz: %.200s", out)
		}
	})

	t.Run("cordon and drain", func(t *testing.T) {
		node := env["NODE_NAME"]
		t.Cleanup(func() { _, _ = env.kubectl(context.Background(), "", "uncordon", node) })
		kubectl(t, "cordon", node)
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil || !n.Spec.Unschedulable {
			t.Fatalf("cordon: unschedulable %v (%v)", n != nil && n.Spec.Unschedulable, err)
		}
		drained := busyboxPod("drained", corev1.RestartPolicyAlways, "trap 'echo stopping; exit 0' TERM; while true; do sleep 1; done")
		drained.Labels = map[string]string{"drain-me": "yes"}
		// Made before the cordon would be refused by the scheduler; bound by
		// name, as a DaemonSet's pod is.
		drained.Spec.NodeName = node
		create(t, cs, ns, drained)
		waitPod(t, cs, ns, "drained", 60*time.Second, "Running", running)
		// Drain only this test's pod (the node's system pods stay): kubectl
		// evicts it and waits until the agent has stopped it and it is gone.
		out := kubectl(t, "drain", node, "--pod-selector=drain-me=yes", "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=90s")
		if !strings.Contains(out, "evicting pod "+ns+"/drained") || !strings.Contains(out, "pod/drained evicted") {
			t.Errorf("kubectl drain did not evict the pod:\n%s", out)
		}
		if _, err := cs.CoreV1().Pods(ns).Get(ctx, "drained", metav1.GetOptions{}); err == nil {
			t.Errorf("the drained pod is still there")
		}
		if _, err := cs.CoreV1().Pods(ns).Get(ctx, "work", metav1.GetOptions{}); err != nil {
			t.Errorf("a pod the drain did not select is gone: %v", err)
		}
		kubectl(t, "uncordon", node)
	})
}

// kubectl top: metrics-server (deployed by make up) reads every node's
// /metrics/resource and answers for the node and its pods.
func TestKubectlTop(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var node, pods string
	err := wait.PollUntilContextCancel(ctx, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		out, err := env.kubectl(ctx, "", "top", "node", "--no-headers")
		if err != nil {
			node = out
			return false, nil
		}
		node = out
		out, err = env.kubectl(ctx, "", "top", "pod", "-n", "kube-system", "--no-headers")
		pods = out
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("kubectl top did not answer within 4 minutes: node %q, pods %q", node, pods)
	}
	// NAME CPU(cores) CPU% MEMORY(bytes) MEMORY%, with figures above zero.
	found := false
	for _, line := range strings.Split(strings.TrimSpace(node), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[0] == env["NODE_NAME"] {
			found = true
			if f[1] == "0m" || strings.HasPrefix(f[3], "0") {
				t.Errorf("kubectl top node: %q, want CPU and memory above zero", line)
			}
		}
	}
	if !found {
		t.Errorf("kubectl top node does not list %s:\n%s", env["NODE_NAME"], node)
	}
	if !strings.Contains(pods, "coredns") || !strings.Contains(pods, "metrics-server") {
		t.Errorf("kubectl top pod -n kube-system lacks coredns or metrics-server:\n%s", pods)
	}
}
