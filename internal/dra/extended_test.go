package dra

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// extendedPod asks for example.com/gpu in container c, which the
// scheduler's claim "ext" serves through its request "gpu".
func extendedPod(uid string) *corev1.Pod {
	p := claimPod(uid)
	one := resource.MustParse("1")
	p.Spec.Containers = []corev1.Container{
		{Name: "c", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{"example.com/gpu": one, corev1.ResourceCPU: one},
			Limits:   corev1.ResourceList{"example.com/gpu": one}}},
		{Name: "plugin-user", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{"example.com/gpu": one}, Limits: corev1.ResourceList{"example.com/gpu": one}}},
	}
	p.Status.ExtendedResourceClaimStatus = &corev1.PodExtendedResourceClaimStatus{
		ResourceClaimName: "ext",
		RequestMappings:   []corev1.ContainerExtendedResourceRequest{{ContainerName: "c", ResourceName: "example.com/gpu", RequestName: "gpu"}},
	}
	return p
}

func TestExtendedResourceClaim(t *testing.T) {
	pod := extendedPod("a")
	f := &fakeDriver{}
	m := start(t, f, t.TempDir(), allocatedClaim("ext", pod))
	ctx := context.Background()
	c, other := &pod.Spec.Containers[0], &pod.Spec.Containers[1]

	// With the gate off the claim is not the node's business.
	if err := m.Prepare(ctx, pod); err != nil || len(f.prepared) != 0 {
		t.Fatalf("gate off: prepare %v, driver prepared %v", err, f.prepared)
	}
	if ids, err := m.CDIDevices(pod, c); err != nil || len(ids) != 0 {
		t.Errorf("gate off: CDI devices %v %v", ids, err)
	}

	m.cfg.ExtendedResources = true
	if err := m.Prepare(ctx, pod); err != nil || len(f.prepared) != 1 || f.prepared[0] != "ext" {
		t.Fatalf("prepare: %v, driver prepared %v", err, f.prepared)
	}
	if ids, err := m.CDIDevices(pod, c); err != nil || len(ids) != 1 || ids[0] != "vendor/class=ext" {
		t.Errorf("CDI devices of the container the claim serves: %v %v", ids, err)
	}
	if ids, err := m.CDIDevices(pod, other); err != nil || len(ids) != 0 {
		t.Errorf("CDI devices of a container with no request mapped: %v %v", ids, err)
	}
	if got := m.ContainerClaims(pod, c); len(got) != 1 || got[0].ClaimName != "ext" {
		t.Errorf("pod resources: %v", got)
	}
	if got := m.ContainerClaims(pod, other); len(got) != 0 {
		t.Errorf("pod resources of a container with no request mapped: %v", got)
	}
	zero := c.DeepCopy()
	zero.Resources.Requests["example.com/gpu"] = resource.MustParse("0")
	if ids, _ := m.CDIDevices(pod, zero); len(ids) != 0 {
		t.Errorf("CDI devices for a zero request: %v", ids)
	}
	if err := m.Unprepare(ctx, pod.UID); err != nil || len(f.released) != 1 || f.released[0] != "ext" {
		t.Errorf("unprepare: %v, driver released %v", err, f.released)
	}

	// A claim not reserved for the pod is refused.
	stranger := extendedPod("b")
	if err := m.Prepare(ctx, stranger); err == nil {
		t.Error("a pod prepared an extended resource claim not reserved for it")
	}
}

func TestWithoutClaimBacked(t *testing.T) {
	pod := extendedPod("a")
	out := WithoutClaimBacked(pod)
	c, other := out.Spec.Containers[0], out.Spec.Containers[1]
	if _, ok := c.Resources.Requests["example.com/gpu"]; ok {
		t.Errorf("the claim's resource is still requested: %v", c.Resources.Requests)
	}
	if _, ok := c.Resources.Limits["example.com/gpu"]; ok {
		t.Errorf("the claim's resource is still a limit: %v", c.Resources.Limits)
	}
	if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
		t.Error("cpu was dropped")
	}
	if _, ok := other.Resources.Limits["example.com/gpu"]; !ok {
		t.Error("a container whose resource no claim serves lost it")
	}
	if _, ok := pod.Spec.Containers[0].Resources.Requests["example.com/gpu"]; !ok {
		t.Error("the pod itself was changed")
	}
	if got := WithoutClaimBacked(claimPod("plain")); got.UID != "plain" {
		t.Error("a pod without an extended resource claim changed")
	}
	if !ClaimBacked(pod, "c", "example.com/gpu") || ClaimBacked(pod, "plugin-user", "example.com/gpu") {
		t.Error("ClaimBacked")
	}
}
