//go:build e2e

package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// relistInterval is kubelet_pleg_relist_interval_seconds' sum and count.
func relistInterval(t *testing.T, env clusterEnv) (sum, count float64) {
	t.Helper()
	code, body := nodeAPI(t, env, "/metrics", "", env["ADMIN_CERT"], env["ADMIN_KEY"])
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		for name, into := range map[string]*float64{"kubelet_pleg_relist_interval_seconds_sum ": &sum, "kubelet_pleg_relist_interval_seconds_count ": &count} {
			if v, ok := strings.CutPrefix(line, name); ok {
				*into, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			}
		}
	}
	return sum, count
}

// With containerd 2 the agent follows the runtime's container events: the
// relist slows to its 10-s safety period (upstream's relist interval
// metric says so), yet a container's exit reaches the pod's status within
// a few seconds, which only the event stream can do at that period.
func TestEventedPLEG(t *testing.T) {
	env := loadEnv(t)
	requireAgent(t, env, "bosun")
	requirePods(t, env)
	if env["RUNTIME"] == "containerd1" {
		t.Skip("containerd 1.6 serves no container events: the agent relists every second")
	}
	if log := tailLog(env["AGENT_LOG"], 1_000_000); !strings.Contains(log, "Following the runtime's container events") {
		t.Fatal("the agent's log does not say it follows the runtime's container events")
	}
	s0, c0 := relistInterval(t, env)
	time.Sleep(25 * time.Second)
	s1, c1 := relistInterval(t, env)
	if c1 <= c0 {
		t.Fatalf("no relist in 25 s (count %v -> %v)", c0, c1)
	}
	if mean := (s1 - s0) / (c1 - c0); mean < 5 {
		t.Errorf("relists every %.1f s on average, want the 10-s safety period", mean)
	}

	// Three containers exit 3, 5 and 7 s after they start: a relist every
	// 10 s cannot bring all three to the status within 4 s of their exit.
	cs := env.client(t)
	ns := testNamespace(t, cs)
	for i, secs := range []int{3, 5, 7} {
		pod := busyboxPod(fmt.Sprintf("exits-%d", i), corev1.RestartPolicyNever, fmt.Sprintf("sleep %d; exit 3", secs))
		pod.Spec.NodeName = env["NODE_NAME"]
		create(t, cs, ns, pod)
	}
	for i := range 3 {
		name := fmt.Sprintf("exits-%d", i)
		p := waitPod(t, cs, ns, name, 60*time.Second, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
		seen := time.Now()
		st := p.Status.ContainerStatuses[0].State.Terminated
		if st == nil || st.ExitCode != 3 {
			t.Fatalf("%s: container status %+v", name, p.Status.ContainerStatuses[0])
		}
		// finishedAt has whole seconds, and the wait polls.
		if lag := seen.Sub(st.FinishedAt.Time); lag > 4*time.Second {
			t.Errorf("%s: the exit reached the pod's status %v after it happened, want the event's second or two", name, lag.Round(time.Millisecond))
		}
	}
}
