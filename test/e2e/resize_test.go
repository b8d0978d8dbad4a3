//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func podCondition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// allocatedCPU is the cpu the node allocated to the pod's first container.
func allocatedCPU(p *corev1.Pod) string {
	if len(p.Status.ContainerStatuses) == 0 {
		return ""
	}
	q := p.Status.ContainerStatuses[0].AllocatedResources[corev1.ResourceCPU]
	return q.String()
}

// An in-place resize beyond what the node has left is deferred, with
// upstream's condition, message and event, and the pod keeps running as
// allocated; once another pod goes, the resize is allocated, reaches the
// container and completes.
// resizeCPU asks, through the resize subresource, for a new cpu request
// and limit of a pod's first container.
func resizeCPU(t *testing.T, cs kubernetes.Interface, ns, name, request, limit string) {
	t.Helper()
	ctx := context.Background()
	cur, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse(request)
	cur.Spec.Containers[0].Resources.Limits[corev1.ResourceCPU] = resource.MustParse(limit)
	if _, err := cs.CoreV1().Pods(ns).UpdateResize(ctx, name, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("resize %s to cpu %s: %v", name, request, err)
	}
}

// waitResizePending waits for a pod's PodResizePending condition with this
// reason.
func waitResizePending(t *testing.T, cs kubernetes.Interface, ns, name, reason string) *corev1.Pod {
	t.Helper()
	return waitPod(t, cs, ns, name, 60*time.Second, "PodResizePending "+reason, func(p *corev1.Pod) bool {
		c := podCondition(p, corev1.PodResizePending)
		return c != nil && c.Reason == reason
	})
}

func TestResizeDeferredThenAllocated(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	pod := busyboxPod("resize", corev1.RestartPolicyAlways, "trap 'exit 0' TERM; sleep 100000 & wait")
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m")},
	}
	create(t, cs, ns, pod)
	p := waitPod(t, cs, ns, "resize", 60*time.Second, "Running", running)

	// A filler pod takes all but 100m of what the node has left.
	node, err := cs.CoreV1().Nodes().Get(ctx, p.Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + p.Spec.NodeName})
	if err != nil {
		t.Fatal(err)
	}
	allocatable := node.Status.Allocatable[corev1.ResourceCPU]
	free := allocatable.MilliValue()
	for _, q := range pods.Items {
		if q.Status.Phase == corev1.PodSucceeded || q.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, c := range q.Spec.Containers {
			free -= c.Resources.Requests.Cpu().MilliValue()
		}
	}
	if free < 300 {
		t.Skipf("the node has %dm cpu left, too little for this test", free)
	}
	filler := busyboxPod("filler", corev1.RestartPolicyAlways, "trap 'exit 0' TERM; sleep 100000 & wait")
	filler.Spec.NodeName = p.Spec.NodeName
	filler.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: *resource.NewMilliQuantity(free-100, resource.DecimalSI)}
	create(t, cs, ns, filler)
	waitPod(t, cs, ns, "filler", 60*time.Second, "Running", running)

	resizeCPU(t, cs, ns, "resize", "300m", "400m")
	p = waitResizePending(t, cs, ns, "resize", "Deferred")
	c := podCondition(p, corev1.PodResizePending)
	want := "Node didn't have enough resource: cpu, requested: 300"
	if !strings.HasPrefix(c.Message, want) || c.ObservedGeneration != p.Generation {
		t.Errorf("pending condition %+v; want a message starting %q and generation %d", c, want, p.Generation)
	}
	if got := allocatedCPU(p); got != "100m" {
		t.Errorf("a deferred resize allocated cpu %s, want the earlier 100m", got)
	}
	// The event names admission's reason, not the condition's.
	podEvent(t, cs, ns, "resize", "ResizeDeferred", "Pod resize OutOfcpu: ", 30*time.Second)

	// The filler goes: the deferred resize is allocated and completes.
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "filler", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p = waitPod(t, cs, ns, "resize", 90*time.Second, "resized to 300m, no resize condition left", func(p *corev1.Pod) bool {
		return allocatedCPU(p) == "300m" && podCondition(p, corev1.PodResizePending) == nil && podCondition(p, corev1.PodResizeInProgress) == nil
	})
	r := p.Status.ContainerStatuses[0].Resources
	if r == nil || r.Limits.Cpu().String() != "400m" {
		t.Errorf("container status resources %+v, want the new cpu limit 400m", r)
	}
	if p.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("an in-place resize restarted the container")
	}
	podEvent(t, cs, ns, "resize", "ResizeStarted", fmt.Sprintf(`"generation":%d`, p.Generation), 30*time.Second)
	podEvent(t, cs, ns, "resize", "ResizeCompleted", "Pod resize completed: ", 30*time.Second)
}
