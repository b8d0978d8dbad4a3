//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

const draDriverName = "dra.bosun.example"

// A DRA driver (hack/dra-driver, on k8s.io/dynamic-resource-allocation's
// kubelet plugin helper) registers through plugins_registry and publishes
// its devices; the scheduler allocates one to a pod's claim; the agent has
// the driver prepare the claim before the container starts, passes the CDI
// device the driver names to the runtime (the container sees the device's
// environment), and keeps the claim in dra_manager_state. When the pod goes,
// the claim is unprepared and leaves the checkpoint; a pod that finishes
// releases it at once, before its object goes.
func TestDRAClaim(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	node := env["NODE_NAME"]
	root := env["ROOT_DIR"]

	driverLog := startNodePlugin(t, "hack/dra-driver", "-name", draDriverName, "-node", node, "-kubeconfig", env["KUBECONFIG"], "-root-dir", root)

	class := &resourceapi.DeviceClass{ObjectMeta: metav1.ObjectMeta{Name: "bosun-e2e-" + ns}, Spec: resourceapi.DeviceClassSpec{
		Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: `device.driver == "` + draDriverName + `"`}}},
	}}
	if _, err := cs.ResourceV1().DeviceClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.ResourceV1().DeviceClasses().Delete(context.Background(), class.Name, metav1.DeleteOptions{})
	})
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		slices, err := cs.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{FieldSelector: "spec.driver=" + draDriverName + ",spec.nodeName=" + node})
		return err == nil && len(slices.Items) == 1 && len(slices.Items[0].Spec.Devices) == 2, nil
	}); err != nil {
		t.Fatalf("the driver's devices are not published: %s", driverLog())
	}
	claim := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: "device"}, Spec: resourceapi.ResourceClaimSpec{
		Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{Name: "one", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: class.Name}}}},
	}}
	claim, err := cs.ResourceV1().ResourceClaims(ns).Create(ctx, claim, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := busyboxPod("user", corev1.RestartPolicyNever, "echo device=$BOSUN_DRA; sleep 3600")
	pod.Spec.NodeSelector = map[string]string{corev1.LabelHostname: node} // the scheduler allocates the claim
	pod.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "dev", ResourceClaimName: ptr("device")}}
	pod.Spec.Containers[0].Resources.Claims = []corev1.ResourceClaim{{Name: "dev"}}
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "user", 120*time.Second, "Running", running)
	if out := execIn(t, env, ns, "user", "main", "echo device=$BOSUN_DRA"); !regexp.MustCompile(`^device=dev-[01]\n$`).MatchString(out) {
		t.Errorf("the container did not get the CDI device's environment: %q; driver log: %s", out, driverLog())
	}
	if !strings.Contains(driverLog(), `"call":"prepare"`) {
		t.Errorf("the driver was not asked to prepare: %s", driverLog())
	}
	driverRE := regexp.QuoteMeta(draDriverName)
	if got := podResourcesClaims(t, root, ns, "user", "main"); !regexp.MustCompile(`^device: ` + driverRE + `/dev-[01] \[` + driverRE + `/device=\S+\]$`).MatchString(got) {
		t.Errorf("the pod resources API reports the container's claims as %q", got)
	}
	state, err := os.ReadFile(filepath.Join(root, "dra_manager_state"))
	if err != nil || !strings.Contains(string(state), string(claim.UID)) {
		t.Errorf("dra_manager_state does not hold the claim %s: %v %s", claim.UID, err, state)
	}
	// The driver's device health (its NodeWatchResources stream) is in the
	// container's status under the pod's claim name, with the CDI device as
	// the resource ID (ResourceHealthStatus, on by default in v1.36).
	device := regexp.MustCompile(`dev-[01]`).FindString(execIn(t, env, ns, "user", "main", "echo $BOSUN_DRA"))
	healthIs := func(want corev1.ResourceHealthStatus, message string) func(*corev1.Pod) bool {
		return func(p *corev1.Pod) bool {
			if len(p.Status.ContainerStatuses) != 1 {
				return false
			}
			got := p.Status.ContainerStatuses[0].AllocatedResourcesStatus
			if len(got) != 1 || got[0].Name != "claim:dev" || len(got[0].Resources) != 1 {
				return false
			}
			r := got[0].Resources[0]
			msg := ""
			if r.Message != nil {
				msg = *r.Message
			}
			return strings.HasPrefix(string(r.ResourceID), draDriverName+"/device=") && strings.HasSuffix(string(r.ResourceID), "-"+device) &&
				r.Health == want && msg == message
		}
	}
	waitPod(t, cs, ns, "user", 60*time.Second, "its device Healthy in allocatedResourcesStatus", healthIs(corev1.ResourceHealthStatusHealthy, ""))
	healthFile := filepath.Join(root, "plugins", draDriverName, "health")
	if err := os.WriteFile(healthFile, []byte(device+" Unhealthy fan stopped\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(healthFile) })
	waitPod(t, cs, ns, "user", 60*time.Second, "its device Unhealthy with the driver's message", healthIs(corev1.ResourceHealthStatusUnhealthy, "fan stopped"))
	if err := os.Remove(healthFile); err != nil {
		t.Fatal(err)
	}

	if err := cs.CoreV1().Pods(ns).Delete(ctx, "user", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		state, _ := os.ReadFile(filepath.Join(root, "dra_manager_state"))
		return strings.Contains(driverLog(), `"call":"unprepare"`) && !strings.Contains(string(state), string(claim.UID)), nil
	}); err != nil {
		state, _ := os.ReadFile(filepath.Join(root, "dra_manager_state"))
		t.Errorf("the claim was not unprepared and dropped from the checkpoint: driver log %s; checkpoint %s", driverLog(), state)
	}

	// A pod that finishes releases the claim once its container has
	// stopped, while its object stays, as upstream does before writing a
	// finished pod's final status.
	job := busyboxPod("job", corev1.RestartPolicyNever, "echo device=$BOSUN_DRA")
	job.Spec.NodeSelector = pod.Spec.NodeSelector
	job.Spec.ResourceClaims = pod.Spec.ResourceClaims
	job.Spec.Containers[0].Resources.Claims = pod.Spec.Containers[0].Resources.Claims
	create(t, cs, ns, job)
	waitPod(t, cs, ns, "job", 120*time.Second, "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	if out, err := env.kubectl(ctx, "", "-n", ns, "logs", "job"); err != nil || !regexp.MustCompile(`^device=dev-[01]\n$`).MatchString(out) {
		t.Errorf("the finished pod's container saw %q (%v)", out, err)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		state, _ := os.ReadFile(filepath.Join(root, "dra_manager_state"))
		return strings.Count(driverLog(), `"call":"unprepare"`) == 2 && !strings.Contains(string(state), string(claim.UID)), nil
	}); err != nil {
		t.Errorf("the finished pod's claim was not unprepared: driver log %s", driverLog())
	}
	if _, err := cs.CoreV1().Pods(ns).Get(ctx, "job", metav1.GetOptions{}); err != nil {
		t.Errorf("the finished pod's object: %v", err)
	}
}

// podResourcesClaims asks the node's pod resources API (v1 List) for a
// container's DRA claims: "claim: driver/device [cdi ids]" per device.
func podResourcesClaims(t *testing.T, root, ns, pod, container string) string {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+filepath.Join(root, "pod-resources", "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := podresourcesv1.NewPodResourcesListerClient(conn).List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		t.Fatalf("pod resources List: %v", err)
	}
	var out []string
	for _, p := range resp.GetPodResources() {
		if p.GetNamespace() != ns || p.GetName() != pod {
			continue
		}
		for _, c := range p.GetContainers() {
			if c.GetName() != container {
				continue
			}
			for _, d := range c.GetDynamicResources() {
				for _, r := range d.GetClaimResources() {
					var ids []string
					for _, id := range r.GetCdiDevices() {
						ids = append(ids, id.GetName())
					}
					out = append(out, fmt.Sprintf("%s: %s/%s %v", d.GetClaimName(), r.GetDriverName(), r.GetDeviceName(), ids))
				}
			}
		}
	}
	return strings.Join(out, "; ")
}
