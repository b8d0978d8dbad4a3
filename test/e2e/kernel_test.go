//go:build e2e

package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// protectKernelDefaults is false in the seed's config: at start the agent
// sets the kernel tunables it needs, as the kubelet does.
func TestKernelTunablesSetAtStart(t *testing.T) {
	env := loadEnv(t)
	const file = "/proc/sys/kernel/keys/root_maxkeys"
	read := func() string {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(data))
	}
	if got := read(); got != "1000000" {
		t.Fatalf("%s is %s with the agent running, want 1000000", file, got)
	}
	if err := os.WriteFile(file, []byte("999999"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(file, []byte("1000000"), 0o644) })
	harness(t, env["KUBELET"], "kill-agent")
	t.Setenv("WAIT", "healthz")
	if config, err := os.ReadFile(env["CONFIG_FILE"]); err == nil && strings.Contains(string(config), "\nprotectKernelDefaults: true") {
		// The hardened profile: the agent must not change the kernel; it
		// refuses to start, naming the tunable, and starts once it is set.
		t.Setenv("WAIT", "none")
		harness(t, env["KUBELET"], "start-agent")
		if log := waitAgentRefused(t, env); !strings.Contains(log, "kernel/keys/root_maxkeys") || !strings.Contains(log, "protectKernelDefaults is true") {
			t.Errorf("the agent's log does not name kernel/keys/root_maxkeys and protectKernelDefaults:\n%s", log)
		}
		if got := read(); got != "999999" {
			t.Errorf("%s is %s with protectKernelDefaults true, want it left at 999999", file, got)
		}
		if err := os.WriteFile(file, []byte("1000000"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv("WAIT", "healthz")
		harness(t, env["KUBELET"], "start-agent")
		return
	}
	harness(t, env["KUBELET"], "start-agent")
	// The kubelet sets them when its container manager starts, a few
	// seconds after its healthz answers.
	var got string
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		got = read()
		return got == "1000000", nil
	})
	if err != nil {
		t.Errorf("%s is %s a minute after the agent started, want 1000000 (upstream's value)", file, got)
	}
}
