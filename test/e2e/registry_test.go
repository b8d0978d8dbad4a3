//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

func waitingReason(p *corev1.Pod) string {
	if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
		return ""
	}
	return p.Status.ContainerStatuses[0].State.Waiting.Reason
}

// pullFailing: the pod's first container waits on a failed pull.
func pullFailing(p *corev1.Pod) bool {
	r := waitingReason(p)
	return r == "ErrImagePull" || r == "ImagePullBackOff"
}

// podEvent waits for an event of the pod with reason whose message has want.
func podEvent(t *testing.T, cs kubernetes.Interface, ns, pod, reason, want string, timeout time.Duration) {
	t.Helper()
	var seen []string
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("involvedObject.name", pod).String()})
		if err != nil {
			return false, nil
		}
		seen = seen[:0]
		for _, e := range evs.Items {
			seen = append(seen, e.Reason+": "+e.Message)
			if e.Reason == reason && strings.Contains(e.Message, want) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s event containing %q for pod %s within %s; events: %q", reason, want, pod, timeout, seen)
	}
}

// Pulls go through the local registry mirror: pull policy Always fetches the
// image again and reports it.
func TestPullAlwaysThroughMirror(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	pod := busyboxPod("always", corev1.RestartPolicyAlways, "sleep 3600")
	pod.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "always", 60*time.Second, "Running", running)
	podEvent(t, cs, ns, "always", "Pulled", "Successfully pulled image", 10*time.Second)
}

// An image in a registry that wants credentials: refused without them,
// pulled with an imagePullSecrets entry holding them.
func TestPullSecret(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	if env["PRIVATE_IMAGE"] == "" {
		t.Skip("this cluster has no private registry (make up again)")
	}
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	pwData, err := os.ReadFile(env["PRIVATE_REGISTRY_PASSWORD_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	user, pw := env["PRIVATE_REGISTRY_USER"], strings.TrimSpace(string(pwData))
	private := func(name string) *corev1.Pod {
		p := busyboxPod(name, corev1.RestartPolicyAlways, "sleep 3600")
		p.Spec.Containers[0].Image = env["PRIVATE_IMAGE"]
		p.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
		return p
	}
	create(t, cs, ns, private("without-secret"))
	p := waitPod(t, cs, ns, "without-secret", 60*time.Second, "ErrImagePull or ImagePullBackOff", pullFailing)
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("pod without credentials is %s", p.Status.Phase)
	}
	cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{env["PRIVATE_REGISTRY"]: map[string]string{"username": user, "password": pw}}})
	wrong, _ := json.Marshal(map[string]any{"auths": map[string]any{env["PRIVATE_REGISTRY"]: map[string]string{"username": user, "password": "not-" + pw}}})
	for name, data := range map[string][]byte{"regcred": cfg, "wrongcred": wrong} {
		if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: data}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	bad := private("wrong-secret")
	bad.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "wrongcred"}}
	create(t, cs, ns, bad)
	waitPod(t, cs, ns, "wrong-secret", 60*time.Second, "ErrImagePull or ImagePullBackOff", pullFailing)
	good := private("with-secret")
	good.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "missing"}, {Name: "regcred"}}
	create(t, cs, ns, good)
	waitPod(t, cs, ns, "with-secret", 60*time.Second, "Running", running)

	// KEP-2535 (KubeletEnsureSecretPulledImages, on by default in v1.36): the
	// image is on the node now, pulled with regcred. A pod of another
	// namespace without credentials may not use it, even with IfNotPresent;
	// one whose own secret holds the same credentials may, without a pull.
	other := testNamespace(t, cs)
	thief := private("thief")
	thief.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	create(t, cs, other, thief)
	waitPod(t, cs, other, "thief", 60*time.Second, "ErrImagePull or ImagePullBackOff", pullFailing)
	if _, err := cs.CoreV1().Secrets(other).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "samecred"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: cfg}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	friend := private("friend")
	friend.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	friend.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "samecred"}}
	create(t, cs, other, friend)
	waitPod(t, cs, other, "friend", 60*time.Second, "Running", running)
	podEvent(t, cs, other, "friend", "Pulled", "already present on machine and can be accessed by the pod", 10*time.Second)
}
