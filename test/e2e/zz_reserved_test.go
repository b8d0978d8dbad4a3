//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// enforceNodeAllocatable with kube-reserved, as upstream: the agent sets
// the reserved cpu (as shares) and memory (as the limit) on the existing
// kubeReservedCgroup and records NodeAllocatableEnforced on the Node; a
// kubeReservedCgroup that does not exist stops the agent at start with
// upstream's message, never ignored.
func TestEnforceKubeReservedOnItsCgroup(t *testing.T) {
	env := loadEnv(t)
	requireAgent(t, env, "bosun")
	cs := env.client(t)
	node := env["NODE_NAME"]
	orig, err := os.ReadFile(env["CONFIG_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"kubeReserved:", "kubeReservedCgroup:", "enforceNodeAllocatable:"} {
		if strings.Contains(string(orig), "\n"+key) {
			t.Fatalf("%s sets %s already", env["CONFIG_FILE"], key)
		}
	}
	const name = "bosun-e2e-kube-reserved"
	v2 := false
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		v2 = true
	}
	var dirs []string
	if v2 {
		dirs = []string{filepath.Join("/sys/fs/cgroup", name)}
	} else {
		for _, c := range []string{"cpu", "cpuacct", "memory", "pids"} {
			dirs = append(dirs, filepath.Join("/sys/fs/cgroup", c, name))
		}
	}
	t.Cleanup(func() {
		reconfigureAgentReady(t, env, orig)
		if err := wait.PollUntilContextTimeout(context.Background(), time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
			n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			return err == nil && nodeCondition(n, corev1.NodeReady) == corev1.ConditionTrue, nil
		}); err != nil {
			t.Errorf("the node was not Ready again: %v", err)
		}
		for _, d := range dirs {
			_ = syscall.Rmdir(d)
		}
	})

	// Its cgroup missing: the agent stops at start and says why.
	config := func(cgroup string) []byte {
		return append(append([]byte{}, orig...), []byte("kubeReserved:\n  cpu: 100m\n  memory: 64Mi\nkubeReservedCgroup: /"+cgroup+
			"\nenforceNodeAllocatable: [pods, kube-reserved]\n")...)
	}
	reconfigureAgent(t, env, config(name))
	log := waitAgentRefused(t, env)
	want := `Failed to enforce Kube Reserved Cgroup Limits on "/` + name + `": cgroup "/` + name + `" has some missing paths: ` + dirs[0]
	quoted := strconv.Quote(want) // as the log's err="..." value has it
	if !strings.Contains(log, quoted[1:len(quoted)-1]) {
		t.Fatalf("the agent's log does not say %q:\n%s", want, log)
	}

	// Made: the agent starts and sets the limits.
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	restartAgent(t, env)
	podEvent(t, cs, "default", node, "NodeAllocatableEnforced", "Updated limits on kube reserved cgroup /"+name, 60*time.Second)
	files := map[string]string{"cpu/" + name + "/cpu.shares": "102", "memory/" + name + "/memory.limit_in_bytes": "67108864"}
	if v2 {
		files = map[string]string{name + "/cpu.weight": "4", name + "/memory.max": "67108864"}
	}
	for file, want := range files {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", file))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s = %s, want %s", file, got, want)
		}
	}
}
