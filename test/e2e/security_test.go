//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A container over its memory limit is killed and reported as OOMKilled.
func TestOOMKilled(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	pod := busyboxPod("hog", corev1.RestartPolicyNever, `x=$(head -c 200000000 /dev/zero | tr '\0' a); echo survived`)
	pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}
	create(t, cs, ns, pod)
	p := waitPod(t, cs, ns, "hog", 90*time.Second, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	term := p.Status.ContainerStatuses[0].State.Terminated
	if term == nil || term.Reason != "OOMKilled" || term.ExitCode != 137 {
		t.Fatalf("want OOMKilled with exit code 137: %s", describePod(p))
	}
}

// A Localhost seccomp profile is read from <root-dir>/seccomp and applied:
// the profile refuses mkdir.
func TestSeccompLocalhostProfile(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	dir := filepath.Join(env["ROOT_DIR"], "seccomp", "bosun-e2e")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	profile := `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}`
	if err := os.WriteFile(filepath.Join(dir, "no-mkdir.json"), []byte(profile), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	pod := busyboxPod("nomkdir", corev1.RestartPolicyNever, "mkdir /tmp/d 2>/dev/null && echo made || echo refused")
	name := "bosun-e2e/no-mkdir.json"
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: &name}}
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "nomkdir", 60*time.Second, "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	out, err := env.kubectl(t.Context(), "", "-n", ns, "logs", "nomkdir")
	if err != nil || strings.TrimSpace(out) != "refused" {
		t.Fatalf("mkdir under the profile: %v %q", err, out)
	}
	// A container's profile that is not there fails the container, never
	// runs it unconfined.
	missing := busyboxPod("missing-profile", corev1.RestartPolicyNever, "echo ran")
	gone := "bosun-e2e/not-there.json"
	missing.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: &gone}}
	create(t, cs, ns, missing)
	p := waitPod(t, cs, ns, "missing-profile", 60*time.Second, "a creation error", func(p *corev1.Pod) bool {
		r := waitingReason(p)
		return r == "CreateContainerError" || r == "CreateContainerConfigError" || r == "RunContainerError"
	})
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("pod with a missing profile: %s", describePod(p))
	}
}

// supplementalGroupsPolicy: Strict on a runtime that cannot apply it is
// refused at admission rather than silently merged.
func TestSupplementalGroupsPolicyStrictRefused(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	node, err := cs.CoreV1().Nodes().Get(t.Context(), env["NODE_NAME"], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f := node.Status.Features; f != nil && f.SupplementalGroupsPolicy != nil && *f.SupplementalGroupsPolicy {
		t.Skip("the runtime supports supplementalGroupsPolicy")
	}
	strict := corev1.SupplementalGroupsPolicyStrict
	pod := busyboxPod("strict", corev1.RestartPolicyNever, "id")
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{SupplementalGroupsPolicy: &strict}
	create(t, cs, ns, pod)
	p := waitPod(t, cs, ns, "strict", 60*time.Second, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	if p.Status.Reason != "SupplementalGroupsPolicyNotSupported" {
		t.Errorf("reason %q message %q", p.Status.Reason, p.Status.Message)
	}
}

// No container swaps by default (memorySwap NoSwap, as upstream): on cgroup
// v1 memory+swap is capped at the memory limit, on v2 memory.swap.max is 0.
func TestContainersDoNotSwap(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	v1 := "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"
	if _, err := os.Stat(v1); err != nil {
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
			t.Skip("the kernel accounts no swap per cgroup")
		}
	}
	pod := busyboxPod("capped", corev1.RestartPolicyNever, "cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.swap.max")
	pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "capped", 60*time.Second, "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	out, err := env.kubectl(context.Background(), "", "-n", ns, "logs", "capped")
	want := "67108864" // v1: memory+swap = the 64Mi limit
	if _, statErr := os.Stat(v1); statErr != nil {
		want = "0"
	}
	if err != nil || strings.TrimSpace(out) != want {
		t.Errorf("the container's swap limit is %q (%v), want %s", out, err, want)
	}
}
