//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// A device plugin (hack/deviceplugin, run on node 1 as a plugin would be)
// registers on /var/lib/kubelet/device-plugins/kubelet.sock (upstream's fixed
// path, whatever --root-dir says); its devices become the node's extended resource; a pod asking
// for one gets it through Allocate (the plugin's environment variable and
// mount); a pod asking for more than is free is refused at admission; when
// the plugin stops, nothing is allocatable.
func TestDevicePlugin(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	const res = corev1.ResourceName("example.com/bosun-e2e")
	bin := filepath.Join(t.TempDir(), "deviceplugin")
	if out, err := exec.Command("go", "build", "-o", bin, "../../hack/deviceplugin").CombinedOutput(); err != nil {
		t.Fatalf("build the device plugin: %v: %s", err, out)
	}
	info := t.TempDir()
	if err := os.WriteFile(filepath.Join(info, "info"), []byte("from the plugin\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	healthFile := filepath.Join(info, "health")
	plugin := exec.Command(bin, "-dir", "/var/lib/kubelet/device-plugins", "-resource", string(res), "-n", "2", "-host-mount", info, "-health-file", healthFile)
	logFile, _ := os.Create(filepath.Join(t.TempDir(), "plugin.log"))
	plugin.Stdout, plugin.Stderr = logFile, logFile
	if err := plugin.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = plugin.Process.Signal(os.Interrupt)
			_ = plugin.Wait()
		}
	}
	t.Cleanup(stop)
	// A second plugin registers through the plugin watcher (plugins_registry).
	const viaRegistry = corev1.ResourceName("example.com/bosun-e2e-reg")
	second := exec.Command(bin, "-dir", "/var/lib/kubelet/device-plugins", "-resource", string(viaRegistry), "-n", "1",
		"-registry", filepath.Join(env["ROOT_DIR"], "plugins_registry"))
	secondLog, _ := os.Create(filepath.Join(t.TempDir(), "plugin2.log"))
	second.Stdout, second.Stderr = secondLog, secondLog
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Process.Signal(os.Interrupt); _ = second.Wait() })
	node := env["NODE_NAME"]
	offeredOf := func(name corev1.ResourceName, capacity, allocatable int64) func(ctx context.Context) (bool, error) {
		return nodeOffers(cs, node, name, capacity, allocatable)
	}
	offered := func(capacity, allocatable int64) func(ctx context.Context) (bool, error) {
		return offeredOf(res, capacity, allocatable)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, offered(2, 2)); err != nil {
		log, _ := os.ReadFile(logFile.Name())
		t.Fatalf("node %s does not offer 2 %s: plugin log: %s", node, res, log)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, offeredOf(viaRegistry, 1, 1)); err != nil {
		log, _ := os.ReadFile(secondLog.Name())
		t.Errorf("the plugin registered through plugins_registry is not offered (%s): plugin log: %s", nodeResource(ctx, cs, node, viaRegistry), log)
	}

	devPod := func(name string, n int64, script string) *corev1.Pod {
		p := busyboxPod(name, corev1.RestartPolicyNever, script)
		p.Spec.NodeName = node // past the scheduler: the agent's admission decides
		p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{res: *resource.NewQuantity(n, resource.DecimalSI)}}
		return p
	}
	create(t, cs, ns, devPod("one", 1, "echo devices=$BOSUN_TEST_DEVICES; cat /dev-info/info; sleep 3600"))
	waitPod(t, cs, ns, "one", 90*time.Second, "Running", running)
	out := execIn(t, env, ns, "one", "main", "echo devices=$BOSUN_TEST_DEVICES; cat /dev-info/info")
	if !regexp.MustCompile(`devices=bosun-e2e-[01]\b`).MatchString(out) || !strings.Contains(out, "from the plugin") {
		t.Errorf("the container did not get its device's environment and mount: %q", out)
	}
	// The device and its health are in the container's status
	// (ResourceHealthStatus, on by default in v1.36), and follow the plugin.
	device := regexp.MustCompile(`bosun-e2e-[01]`).FindString(out)
	healthIs := func(want corev1.ResourceHealthStatus) func(*corev1.Pod) bool {
		return func(p *corev1.Pod) bool {
			if len(p.Status.ContainerStatuses) != 1 {
				return false
			}
			got := p.Status.ContainerStatuses[0].AllocatedResourcesStatus
			return len(got) == 1 && got[0].Name == res && len(got[0].Resources) == 1 &&
				got[0].Resources[0].ResourceID == corev1.ResourceID(device) && got[0].Resources[0].Health == want
		}
	}
	waitPod(t, cs, ns, "one", 60*time.Second, "its device Healthy in allocatedResourcesStatus", healthIs(corev1.ResourceHealthStatusHealthy))
	if err := os.WriteFile(healthFile, []byte(device+" Unhealthy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitPod(t, cs, ns, "one", 60*time.Second, "its device Unhealthy in allocatedResourcesStatus", healthIs(corev1.ResourceHealthStatusUnhealthy))
	if err := os.WriteFile(healthFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitPod(t, cs, ns, "one", 60*time.Second, "its device Healthy again", healthIs(corev1.ResourceHealthStatusHealthy))
	// Two more do not fit beside it. The upstream kubelet asks its device
	// allocation before the resource fit (UnexpectedAdmissionError); Bosun
	// checks the fit first (OutOf<resource>): either refuses the pod.
	create(t, cs, ns, devPod("two", 2, "true"))
	p := waitPod(t, cs, ns, "two", 60*time.Second, "rejected", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	if p.Status.Reason != "OutOf"+string(res) && p.Status.Reason != "UnexpectedAdmissionError" {
		t.Errorf("rejection %q: %q, want OutOf%s or UnexpectedAdmissionError", p.Status.Reason, p.Status.Message, res)
	}
	// The plugin stops: the devices are not allocatable any more.
	stop()
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, offered(2, 0)); err != nil {
		t.Errorf("after the plugin stopped, node %s still offers %s: %v", node, res, nodeResource(ctx, cs, node, res))
	}
}

// nodeOffers is a poll condition: the node's capacity and allocatable of
// the resource are as given.
func nodeOffers(cs kubernetes.Interface, node string, name corev1.ResourceName, capacity, allocatable int64) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		c, a := n.Status.Capacity[name], n.Status.Allocatable[name]
		return c.Value() == capacity && a.Value() == allocatable, nil
	}
}

func nodeResource(ctx context.Context, cs kubernetes.Interface, node string, res corev1.ResourceName) string {
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	c, a := n.Status.Capacity[res], n.Status.Allocatable[res]
	return "capacity " + c.String() + ", allocatable " + a.String()
}

// Upstream's sample device plugin (test/images/sample-device-plugin of the
// pinned k8s.io/kubernetes, built offline into the image its manifest names)
// runs as upstream's own DaemonSet manifest deploys it: in a privileged pod,
// registering from inside its container. Its two devices become
// example.com/resource; a pod asking for one gets the device's mount from
// Allocate; when the DaemonSet goes, nothing is allocatable.
func TestSampleDevicePlugin(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	const res = corev1.ResourceName("example.com/resource")
	list := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes")
	list.Dir = "../../tools"
	dir, err := list.Output()
	if err != nil {
		t.Fatalf("find the pinned k8s.io/kubernetes: %v", err)
	}
	manifest, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "test/e2e/testing-manifests/sample-device-plugin/sample-device-plugin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(manifest, &ds); err != nil {
		t.Fatalf("upstream's sample device plugin manifest: %v", err)
	}
	// In the test's namespace and on the test's node, as upstream's DRA
	// spec places it.
	ds.Namespace = ns
	ds.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": env["NODE_NAME"]}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, &ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	node := env["NODE_NAME"]
	offered := func(capacity, allocatable int64) func(ctx context.Context) (bool, error) {
		return nodeOffers(cs, node, res, capacity, allocatable)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, offered(2, 2)); err != nil {
		pods, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		var seen []string
		for i := range pods.Items {
			seen = append(seen, describePod(&pods.Items[i]))
		}
		t.Fatalf("node %s does not offer 2 %s (%s); the plugin's pods: %v", node, res, nodeResource(ctx, cs, node, res), seen)
	}
	p := busyboxPod("user", corev1.RestartPolicyNever, "ls -d /tmp/Dev-*; sleep 3600")
	p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{res: *resource.NewQuantity(1, resource.DecimalSI)}}
	p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	create(t, cs, ns, p)
	waitPod(t, cs, ns, "user", 90*time.Second, "Running", running)
	// Allocate answers with a mount of /tmp/<device> for the device given.
	out := execIn(t, env, ns, "user", "main", "ls -d /tmp/Dev-*")
	if got := strings.Fields(out); len(got) != 1 || (got[0] != "/tmp/Dev-1" && got[0] != "/tmp/Dev-2") {
		t.Errorf("the container has %q in /tmp, want the one device mount Allocate gave (/tmp/Dev-1 or /tmp/Dev-2)", out)
	}
	if err := cs.AppsV1().DaemonSets(ns).Delete(ctx, ds.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, offered(2, 0)); err != nil {
		t.Errorf("after the plugin's DaemonSet went, node %s still offers %s: %v", node, res, nodeResource(ctx, cs, node, res))
	}
}
