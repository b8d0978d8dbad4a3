//go:build e2e

package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// A soft memory threshold that the node is always under (memory.available
// below 1Pi), with a 10 s grace period, a 5 s cap on the pods' grace period
// and a short pressure transition period. The node reports MemoryPressure;
// once the grace period has passed, the pod using more memory than it
// requests goes first, then the one within its request, each Failed with
// reason Evicted, upstream's message naming the container over its request,
// the DisruptionTarget condition and an Evicted event, and stopped within
// the capped grace period though it ignores SIGTERM and asks for 60 s. A
// BestEffort pod bound to the node meanwhile is refused for the pressure,
// with upstream's "Pod was rejected: " status and its event.
// The node records upstream's events: Starting, NodeHasInsufficientMemory,
// EvictionThresholdMet. With the threshold gone the node is without
// pressure again.
func TestSoftEviction(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	node := env["NODE_NAME"]
	start := time.Now().Add(-2 * time.Second)

	pod := func(name, request, script string) *corev1.Pod {
		p := busyboxPod(name, corev1.RestartPolicyNever, script)
		p.Spec.NodeName = node
		p.Spec.TerminationGracePeriodSeconds = ptr(int64(60))
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(request), corev1.ResourceCPU: resource.MustParse("10m")}
		return p
	}
	// Both ignore SIGTERM: only the grace period's end stops them.
	create(t, cs, ns, pod("hog", "1Mi", "trap '' TERM; dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 2>/dev/null; while true; do sleep 1; done"))
	create(t, cs, ns, pod("calm", "200Mi", "trap '' TERM; while true; do sleep 1; done"))
	waitPod(t, cs, ns, "hog", 60*time.Second, "Running", running)
	waitPod(t, cs, ns, "calm", 60*time.Second, "Running", running)
	time.Sleep(3 * time.Second) // the hog's 40Mi in place

	orig, err := os.ReadFile(env["CONFIG_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"evictionSoft:", "evictionSoftGracePeriod:", "evictionMaxPodGracePeriod:", "evictionPressureTransitionPeriod:"} {
		if strings.Contains(string(orig), "\n"+key) {
			t.Fatalf("%s sets %s already", env["CONFIG_FILE"], key)
		}
	}
	t.Cleanup(func() {
		reconfigureAgentReady(t, env, orig)
		if err := wait.PollUntilContextTimeout(context.Background(), time.Second, 120*time.Second, true, func(ctx context.Context) (bool, error) {
			n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, taint := range n.Spec.Taints {
				if taint.Key == corev1.TaintNodeMemoryPressure {
					return false, nil
				}
			}
			return nodeCondition(n, corev1.NodeMemoryPressure) == corev1.ConditionFalse && nodeCondition(n, corev1.NodeReady) == corev1.ConditionTrue, nil
		}); err != nil {
			t.Errorf("the node did not recover from the test's memory pressure: %v", err)
		}
	})
	reconfigureAgentReady(t, env, append(append([]byte{}, orig...), []byte(`
evictionSoft:
  memory.available: "1Pi"
evictionSoftGracePeriod:
  memory.available: "10s"
evictionMaxPodGracePeriod: 5
evictionPressureTransitionPeriod: "5s"
`)...))

	if err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		return err == nil && nodeCondition(n, corev1.NodeMemoryPressure) == corev1.ConditionTrue, nil
	}); err != nil {
		t.Fatalf("the node does not report MemoryPressure under the soft threshold: %v", err)
	}
	refused := busyboxPod("besteffort", corev1.RestartPolicyNever, "true")
	refused.Spec.NodeName = node
	create(t, cs, ns, refused)
	if p := waitPod(t, cs, ns, "besteffort", 60*time.Second, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed }); p.Status.Reason != "Evicted" ||
		p.Status.Message != "Pod was rejected: The node had condition: [MemoryPressure]. " {
		t.Errorf("a BestEffort pod under memory pressure: reason %q, message %q", p.Status.Reason, p.Status.Message)
	}
	if e := firstEvent(t, cs, ns, "besteffort", "Evicted"); e == nil || e.Type != corev1.EventTypeWarning || e.Message != "The node had condition: [MemoryPressure]. " {
		t.Errorf("the refused pod's event: %+v", e)
	}

	evicted := map[string]*corev1.Pod{}
	for _, name := range []string{"hog", "calm"} {
		evicted[name] = waitPod(t, cs, ns, name, 120*time.Second, "evicted and stopped", func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodFailed && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Terminated != nil
		})
	}
	at := map[string]time.Time{}
	for name, p := range evicted {
		if p.Status.Reason != "Evicted" || !strings.HasPrefix(p.Status.Message, "The node was low on resource: memory. Threshold quantity: 1Pi, available: ") {
			t.Errorf("%s: reason %q, message %q", name, p.Status.Reason, p.Status.Message)
		}
		var cond *corev1.PodCondition
		for i := range p.Status.Conditions {
			if p.Status.Conditions[i].Type == corev1.DisruptionTarget {
				cond = &p.Status.Conditions[i]
			}
		}
		if cond == nil || cond.Status != corev1.ConditionTrue || cond.Reason != corev1.PodReasonTerminationByKubelet || cond.Message != p.Status.Message {
			t.Errorf("%s: DisruptionTarget condition %+v", name, cond)
			continue
		}
		// The Evicted event comes as the stop begins; the condition and the
		// Failed phase once the containers have stopped, which took the
		// capped 5 s, not the pod's 60 s (and not none).
		e := firstEvent(t, cs, ns, name, "Evicted")
		if e == nil || e.Type != corev1.EventTypeWarning || e.Message != p.Status.Message {
			t.Errorf("%s: Evicted event %+v", name, e)
			continue
		}
		at[name] = e.FirstTimestamp.Time
		stopped := p.Status.ContainerStatuses[0].State.Terminated.FinishedAt.Time
		if d := stopped.Sub(at[name]); d < 3*time.Second || d > 20*time.Second {
			t.Errorf("%s stopped %s after its eviction, want about the 5 s evictionMaxPodGracePeriod: %s", name, d, describePod(p))
		}
		if d := cond.LastTransitionTime.Sub(stopped); d < -time.Second || d > 20*time.Second {
			t.Errorf("%s: DisruptionTarget at %s, its container stopped at %s", name, cond.LastTransitionTime, stopped)
		}
	}
	if msg := evicted["hog"].Status.Message; !strings.Contains(msg, "Container main was using ") || !strings.Contains(msg, "request is 1Mi, has larger consumption of memory. ") {
		t.Errorf("the hog's message does not name its container over its request: %q", msg)
	}
	if strings.Contains(evicted["calm"].Status.Message, "Container main was using") {
		t.Errorf("the calm pod's message blames its container, which is within its request: %q", evicted["calm"].Status.Message)
	}
	if !at["hog"].IsZero() && !at["calm"].IsZero() && !at["hog"].Before(at["calm"]) {
		t.Errorf("evicted the hog at %s and the calm pod at %s: the pod over its request goes first", at["hog"], at["calm"])
	}
	// The node's events since the test began, as upstream records them.
	for _, want := range []struct{ kind, reason, message string }{
		{corev1.EventTypeWarning, "EvictionThresholdMet", "Attempting to reclaim memory"},
		{corev1.EventTypeNormal, "NodeHasInsufficientMemory", "Node " + node + " status is now: NodeHasInsufficientMemory"},
		{corev1.EventTypeNormal, "Starting", "Starting kubelet."},
	} {
		nodeEvents, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + node + ",reason=" + want.reason})
		found := false
		if err == nil {
			for _, e := range nodeEvents.Items {
				found = found || e.Type == want.kind && e.Message == want.message && e.LastTimestamp.After(start)
			}
		}
		if !found {
			t.Errorf("no %s event %q on the node since the test began (%v)", want.reason, want.message, err)
		}
	}
}

// firstEvent is the pod's first event with reason (nil: none).
func firstEvent(t *testing.T, cs kubernetes.Interface, ns, pod, reason string) *corev1.Event {
	t.Helper()
	var out *corev1.Event
	_ = wait.PollUntilContextTimeout(context.Background(), time.Second, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		events, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod + ",reason=" + reason})
		if err != nil || len(events.Items) == 0 {
			return false, nil
		}
		out = &events.Items[0]
		return true, nil
	})
	return out
}

func nodeCondition(n *corev1.Node, t corev1.NodeConditionType) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}
