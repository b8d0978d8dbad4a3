//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// The topology manager's restricted policy with a device plugin whose two
// devices name NUMA nodes 0 (which the node has) and 1 (which it does not):
// a pod asking for one device gets the one on node 0; a second pod, left
// with the device on the unknown node, cannot be placed on any node the
// machine has and is refused with upstream's TopologyAffinityError, even
// though the node has a device free. Either agent gives the same answers.
func TestTopologyManagerRestricted(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ctx := context.Background()
	node := env["NODE_NAME"]
	if nodes, _ := filepath.Glob("/sys/devices/system/node/node[0-9]*"); len(nodes) != 1 {
		t.Skipf("the machine has %d NUMA nodes; the test needs exactly one", len(nodes))
	}
	orig, err := os.ReadFile(env["CONFIG_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(orig), "\ntopologyManager") {
		t.Fatalf("%s sets the topology manager already", env["CONFIG_FILE"])
	}
	t.Cleanup(func() { reconfigureAgentReady(t, env, orig) })
	reconfigureAgentReady(t, env, append(append([]byte{}, orig...), []byte("topologyManagerPolicy: restricted\ntopologyManagerScope: container\n")...))

	const res = corev1.ResourceName("example.com/bosun-e2e-numa")
	bin := filepath.Join(t.TempDir(), "deviceplugin")
	if out, err := exec.Command("go", "build", "-o", bin, "../../hack/deviceplugin").CombinedOutput(); err != nil {
		t.Fatalf("build the device plugin: %v: %s", err, out)
	}
	plugin := exec.Command(bin, "-dir", "/var/lib/kubelet/device-plugins", "-resource", string(res), "-n", "2", "-numa", "0,1")
	logFile, _ := os.Create(filepath.Join(t.TempDir(), "plugin.log"))
	plugin.Stdout, plugin.Stderr = logFile, logFile
	if err := plugin.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plugin.Process.Signal(os.Interrupt); _ = plugin.Wait() })
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		a := n.Status.Allocatable[res]
		return a.Value() == 2, nil
	}); err != nil {
		log, _ := os.ReadFile(logFile.Name())
		t.Fatalf("node %s does not offer 2 %s: plugin log: %s", node, res, log)
	}

	ns := testNamespace(t, cs)
	devPod := func(name, script string) *corev1.Pod {
		p := busyboxPod(name, corev1.RestartPolicyNever, script)
		p.Spec.NodeName = node // past the scheduler: the agent's admission decides
		p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{res: *resource.NewQuantity(1, resource.DecimalSI)}}
		return p
	}
	create(t, cs, ns, devPod("aligned", "echo devices=$BOSUN_TEST_DEVICES; sleep 3600"))
	waitPod(t, cs, ns, "aligned", 90*time.Second, "Running", running)
	if out := execIn(t, env, ns, "aligned", "main", "echo devices=$BOSUN_TEST_DEVICES"); strings.TrimSpace(out) != "devices=bosun-e2e-numa-0" {
		t.Errorf("the first pod got %q, want the device on NUMA node 0 (bosun-e2e-numa-0)", strings.TrimSpace(out))
	}
	create(t, cs, ns, devPod("unaligned", "true"))
	p := waitPod(t, cs, ns, "unaligned", 60*time.Second, "rejected", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	if p.Status.Reason != "TopologyAffinityError" || p.Status.Message != "Pod was rejected: Resources cannot be allocated with Topology locality" {
		t.Errorf("the pod left with the device on an unknown node: %q %q, want TopologyAffinityError", p.Status.Reason, p.Status.Message)
	}
}
