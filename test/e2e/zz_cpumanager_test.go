//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/cpuset"
)

// cpusAllowed is the last Cpus_allowed_list a pod's container printed.
func cpusAllowed(cs kubernetes.Interface, ns, name string) string {
	tail := int64(1)
	out, err := cs.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(context.Background())
	if err != nil {
		return ""
	}
	_, v, _ := strings.Cut(strings.TrimSpace(string(out)), ":")
	return strings.TrimSpace(v)
}

// cpuTestNode is the node of the CPU manager tests (skipped below 2 CPUs),
// its CPU capacity, and the agent's configuration file as it was.
func cpuTestNode(t *testing.T, env clusterEnv, cs kubernetes.Interface) (*corev1.Node, resource.Quantity, []byte) {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(context.Background(), env["NODE_NAME"], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	capacity := n.Status.Capacity[corev1.ResourceCPU]
	if capacity.Value() < 2 {
		t.Skipf("the node has %s CPUs; the test needs 2", capacity.String())
	}
	orig, err := os.ReadFile(env["CONFIG_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	return n, capacity, orig
}

// The CPU manager's static policy on the local node, CPU 0 reserved
// (reservedSystemCPUs): the node's allocatable loses that CPU; a
// Guaranteed pod asking for one whole CPU runs alone on CPU 1; a
// BestEffort pod started before it is moved off CPU 1 by the reconcile
// loop, and back once the pinned pod is gone; upstream's state file
// records the allocation and its release; a resize of the pinned pod's
// CPU is Infeasible with upstream's message.
func TestCPUManagerStaticPolicy(t *testing.T) {
	env := loadEnv(t)
	requireAgent(t, env, "bosun")
	requirePods(t, env)
	cs := env.client(t)
	ctx := context.Background()
	node := env["NODE_NAME"]
	n, capacity, orig := cpuTestNode(t, env, cs)
	for _, key := range []string{"cpuManagerPolicy:", "reservedSystemCPUs:", "cpuManagerReconcilePeriod:"} {
		if strings.Contains(string(orig), "\n"+key) {
			t.Fatalf("%s sets %s already", env["CONFIG_FILE"], key)
		}
	}
	stateFile := filepath.Join(env["ROOT_DIR"], "cpu_manager_state")
	waitAllocatable := func(want int64) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
			n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			a := n.Status.Allocatable[corev1.ResourceCPU]
			return nodeCondition(n, corev1.NodeReady) == corev1.ConditionTrue && a.MilliValue() == want, nil
		}); err != nil {
			t.Fatalf("the node was not Ready with %dm allocatable cpu: %v", want, err)
		}
	}
	fullAllocatable := n.Status.Allocatable[corev1.ResourceCPU]
	// A change of policy needs the old state file gone, as upstream.
	t.Cleanup(func() {
		os.Remove(stateFile)
		reconfigureAgentReady(t, env, orig)
		waitAllocatable(fullAllocatable.MilliValue())
	})
	os.Remove(stateFile)
	reconfigureAgentReady(t, env, append(append([]byte{}, orig...), []byte("cpuManagerPolicy: static\nreservedSystemCPUs: \"0\"\ncpuManagerReconcilePeriod: 2s\n")...))
	waitAllocatable(capacity.MilliValue() - 1000)

	ns := testNamespace(t, cs)
	const report = "trap 'exit 0' TERM; while true; do grep Cpus_allowed_list /proc/self/status; sleep 1; done"
	shared := busyboxPod("shared", corev1.RestartPolicyAlways, report)
	shared.Spec.NodeName = node
	create(t, cs, ns, shared)
	waitPod(t, cs, ns, "shared", 60*time.Second, "Running", running)
	var ids []int
	for i := 0; i < int(capacity.Value()); i++ {
		ids = append(ids, i)
	}
	all := cpuset.New(ids...).String()
	eventually(t, 30*time.Second, "the BestEffort pod on every CPU", func() error {
		if got := cpusAllowed(cs, ns, "shared"); got != all {
			return fmt.Errorf("Cpus_allowed_list %q, want %q", got, all)
		}
		return nil
	})

	// The pinned pod needs the node's whole allocatable cpu: wait for pods
	// of earlier tests that request cpu to finish going.
	eventually(t, 120*time.Second, "no other pod on the node requesting cpu", func() error {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return err
		}
		for _, q := range pods.Items {
			for _, c := range q.Spec.Containers {
				if c.Resources.Requests.Cpu().MilliValue() > 0 && q.Status.Phase != corev1.PodSucceeded && q.Status.Phase != corev1.PodFailed {
					return fmt.Errorf("%s/%s requests cpu %s", q.Namespace, q.Name, c.Resources.Requests.Cpu())
				}
			}
		}
		return nil
	})
	pinned := busyboxPod("pinned", corev1.RestartPolicyAlways, report)
	pinned.Spec.NodeName = node
	r := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("32Mi")}
	pinned.Spec.Containers[0].Resources = corev1.ResourceRequirements{Requests: r, Limits: r}
	create(t, cs, ns, pinned)
	p := waitPod(t, cs, ns, "pinned", 60*time.Second, "Running", running)
	eventually(t, 30*time.Second, "the Guaranteed pod alone on CPU 1", func() error {
		if got := cpusAllowed(cs, ns, "pinned"); got != "1" {
			return fmt.Errorf("Cpus_allowed_list %q, want 1", got)
		}
		return nil
	})
	data, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"entries":{"` + string(p.UID) + `":{"main":"1"}}`; !strings.Contains(string(data), want) || !strings.Contains(string(data), `"policyName":"static"`) {
		t.Errorf("state file %s, want %s", data, want)
	}
	wantShared := cpuset.New(ids...).Difference(cpuset.New(1)).String()
	eventually(t, 30*time.Second, "the BestEffort pod moved off CPU 1", func() error {
		if got := cpusAllowed(cs, ns, "shared"); got != wantShared {
			return fmt.Errorf("Cpus_allowed_list %q, want %q", got, wantShared)
		}
		return nil
	})

	// Resizing the pinned pod's CPU is refused, as upstream.
	resizeCPU(t, cs, ns, "pinned", "500m", "500m")
	p = waitResizePending(t, cs, ns, "pinned", "Infeasible")
	if c := podCondition(p, corev1.PodResizePending); c.Message != `Resize is infeasible for Guaranteed Pods alongside CPU Manager policy "static"` {
		t.Errorf("resize condition message %q", c.Message)
	}

	// The pinned pod goes: its CPU returns to the pool.
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "pinned", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the CPU released", func() error {
		data, err := os.ReadFile(stateFile)
		if err != nil {
			return err
		}
		if strings.Contains(string(data), string(p.UID)) {
			return fmt.Errorf("state file still holds the pod: %s", data)
		}
		if got := cpusAllowed(cs, ns, "shared"); got != all {
			return fmt.Errorf("the BestEffort pod runs on %q, want %q", got, all)
		}
		return nil
	})
}

// cpuManagerPolicyOptions strict-cpu-reservation (and full-pcpus-only,
// which a node of one CPU per core always meets): with CPU 0 reserved, a
// BestEffort pod runs on the other CPUs only, and the state file's shared
// pool leaves CPU 0 out.
func TestCPUManagerStrictReservation(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	node := env["NODE_NAME"]
	_, capacity, orig := cpuTestNode(t, env, cs)
	stateFile := filepath.Join(env["ROOT_DIR"], "cpu_manager_state")
	t.Cleanup(func() {
		os.Remove(stateFile)
		reconfigureAgentReady(t, env, orig)
	})
	os.Remove(stateFile)
	reconfigureAgentReady(t, env, append(append([]byte{}, orig...), []byte("cpuManagerPolicy: static\nreservedSystemCPUs: \"0\"\n"+
		"cpuManagerPolicyOptions:\n  strict-cpu-reservation: \"true\"\n  full-pcpus-only: \"true\"\n")...))
	ns := testNamespace(t, cs)
	pod := busyboxPod("shared", corev1.RestartPolicyAlways, "trap 'exit 0' TERM; while true; do grep Cpus_allowed_list /proc/self/status; sleep 1; done")
	pod.Spec.NodeName = node
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "shared", 90*time.Second, "Running", running)
	var ids []int
	for i := 1; i < int(capacity.Value()); i++ {
		ids = append(ids, i)
	}
	want := cpuset.New(ids...).String()
	eventually(t, 30*time.Second, "the BestEffort pod off the reserved CPU", func() error {
		if got := cpusAllowed(cs, ns, "shared"); got != want {
			return fmt.Errorf("Cpus_allowed_list %q, want %q", got, want)
		}
		return nil
	})
	data, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"defaultCpuSet":"`+want+`"`) {
		t.Errorf("state file %s, want the shared pool %s", data, want)
	}
}
