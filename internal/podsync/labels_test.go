package podsync

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The expected hashes were printed by the upstream kubelet v1.36.3's own
// HashContainer (k8s.io/kubernetes/pkg/kubelet/container) for the same
// containers: the formula is a wire format both agents read back.
func TestContainerHashIsUpstreams(t *testing.T) {
	for _, tc := range []struct {
		c    corev1.Container
		want string
	}{
		{corev1.Container{Name: "web", Image: "registry.k8s.io/e2e-test-images/busybox:1.37.0-1"}, "64c75c45"},
		{corev1.Container{Name: "app", Image: "nginx", Command: []string{"sleep"}}, "807ef53b"},
		{corev1.Container{Name: "sidecar", Image: "registry.k8s.io/e2e-test-images/agnhost:2.63.0"}, "322ed33d"},
	} {
		if got := ContainerHash(&tc.c); got != tc.want {
			t.Errorf("ContainerHash(%s, %s) = %s, want upstream's %s", tc.c.Name, tc.c.Image, got, tc.want)
		}
	}
	// Fields other than name and image do not change the hash, so a field
	// defaulted by a newer apiserver restarts nothing.
	a := corev1.Container{Name: "app", Image: "nginx"}
	b := a
	b.Env = []corev1.EnvVar{{Name: "X", Value: "1"}}
	b.Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}
	if ContainerHash(&a) != ContainerHash(&b) {
		t.Error("env and resources changed the hash")
	}
	b.Image = "nginx:2"
	if ContainerHash(&a) == ContainerHash(&b) {
		t.Error("a new image must change the hash")
	}
}

func TestLabelsAndAnnotationsAreUpstreams(t *testing.T) {
	grace, delGrace := int64(30), int64(5)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1", DeletionGracePeriodSeconds: &delGrace,
			Labels: map[string]string{"app": "x", labelPodName: "spoofed"}},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &grace},
	}
	c := &corev1.Container{Name: "web", Image: "nginx", TerminationMessagePath: "/dev/termination-log",
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		Ports:                    []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
		Lifecycle:                &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", "1"}}}}}
	wantSandbox := map[string]string{"app": "x", labelPodName: "p", labelPodNamespace: "ns", labelPodUID: "u1"}
	if got := podLabels(pod); !reflect.DeepEqual(got, wantSandbox) {
		t.Errorf("sandbox labels = %v, want %v", got, wantSandbox)
	}
	wantLabels := map[string]string{labelPodName: "p", labelPodNamespace: "ns", labelPodUID: "u1", labelContainerName: "web"}
	if got := containerLabels(pod, "web"); !reflect.DeepEqual(got, wantLabels) {
		t.Errorf("container labels = %v, want %v", got, wantLabels)
	}
	want := map[string]string{
		"io.kubernetes.container.hash":                     ContainerHash(c),
		"io.kubernetes.container.restartCount":             "3",
		"io.kubernetes.container.terminationMessagePath":   "/dev/termination-log",
		"io.kubernetes.container.terminationMessagePolicy": "File",
		"io.kubernetes.pod.deletionGracePeriod":            "5",
		"io.kubernetes.pod.terminationGracePeriod":         "30",
		"io.kubernetes.container.preStopHandler":           `{"exec":{"command":["sleep","1"]}}`,
		"io.kubernetes.container.ports":                    `[{"containerPort":80,"protocol":"TCP"}]`,
	}
	if got := containerAnnotations(pod, c, 3); !reflect.DeepEqual(got, want) {
		t.Errorf("container annotations:\n got %v\nwant %v", got, want)
	}
}
