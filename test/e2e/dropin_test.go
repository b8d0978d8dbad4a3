//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// The drop-in promise: the node agent can be swapped (upstream kubelet <->
// Bosun), restarted or killed on a node with running pods, and no container
// is recreated, no restart count moves and no pod is seen unready.

// measuring says whether this run measures the upstream kubelet's behaviour
// for docs/reliability.md (make reliability sets RELIABILITY_MEASURE=1):
// then Bosun's promises are checked against it and logged, not failed.
func measuring(env clusterEnv) bool {
	return env["KUBELET"] != "bosun" && os.Getenv("RELIABILITY_MEASURE") != ""
}

// requirePromise runs a test of a promise Bosun makes against Bosun, and
// against the upstream kubelet only when measuring.
func requirePromise(t *testing.T, env clusterEnv) {
	t.Helper()
	if env["KUBELET"] != "bosun" && !measuring(env) {
		t.Skipf("checks a promise of Bosun's; KUBELET=%s is measured by make reliability", env["KUBELET"])
	}
}

// broken reports a broken promise: a failure, or a logged finding when
// measuring the upstream kubelet.
func broken(t *testing.T, env clusterEnv, format string, args ...any) {
	t.Helper()
	if measuring(env) {
		t.Logf("finding: "+format, args...)
		return
	}
	t.Errorf(format, args...)
}

// recordScenario writes what a scenario measured to
// _output/reliability/<agent>/<scenario>.json, for hack/reliability.
func recordScenario(t *testing.T, env clusterEnv, scenario string, metrics map[string]any) {
	t.Helper()
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	data, _ := json.MarshalIndent(map[string]any{"agent": env["KUBELET"], "scenario": scenario, "commit": strings.TrimSpace(string(commit)),
		"time": time.Now().UTC().Format(time.RFC3339), "metrics": metrics}, "", "  ")
	dir := filepath.Join("..", "..", "_output", "reliability", env["KUBELET"])
	if err := os.MkdirAll(dir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(dir, scenario+".json"), data, 0o644)
	}
}

// harness runs the local cluster's harness (hack/cluster) with KUBELET set.
func harness(t *testing.T, agent string, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join("..", "..", "_output", "bin", "cluster"), args...)
	cmd.Env = append(os.Environ(), "KUBELET="+agent)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cluster %s (KUBELET=%s): %v\n%s", strings.Join(args, " "), agent, err, out)
	}
	t.Logf("cluster %s (KUBELET=%s): %s", strings.Join(args, " "), agent, strings.TrimSpace(string(out)))
}

// dropInPods is a node's mix: long-running pods with readiness (and some
// liveness) probes, finished init containers, a sidecar, a crash-looping
// container and a completed restartPolicy: Never pod.
func dropInPods(n int) []*corev1.Pod {
	probe := func(period int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}},
			PeriodSeconds: period, FailureThreshold: 3}
	}
	sleeper := func(name string) corev1.Container {
		return corev1.Container{Name: name, Image: busybox, Command: []string{"sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"}}
	}
	var pods []*corev1.Pod
	for i := 0; i < n; i++ {
		c := sleeper("main")
		c.ReadinessProbe = probe(10)
		if i%2 == 0 {
			c.LivenessProbe = probe(10)
		}
		if i%3 == 0 {
			c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
		}
		pods = append(pods, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ready-%02d", i)},
			Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr(int64(2)), Containers: []corev1.Container{c}}})
	}
	always := corev1.ContainerRestartPolicyAlways
	side := sleeper("side")
	side.RestartPolicy = &always
	side.ReadinessProbe = probe(10)
	initDone := corev1.Container{Name: "init", Image: busybox, Command: []string{"true"}}
	pods = append(pods,
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "init-done"}, Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr(int64(2)),
			InitContainers: []corev1.Container{initDone}, Containers: []corev1.Container{sleeper("main")}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sidecar"}, Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr(int64(2)),
			InitContainers: []corev1.Container{initDone, side}, Containers: []corev1.Container{sleeper("main")}}},
		busyboxPod("crashloop", corev1.RestartPolicyAlways, "exit 3"),
		busyboxPod("never-done", corev1.RestartPolicyNever, "echo done"),
	)
	return pods
}

const staticDropIn = `apiVersion: v1
kind: Pod
metadata:
  name: dropin-static
  namespace: %s
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: ` + busybox + `
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 10
`

// podSettled is true once a pod of the mix is where it stays.
func podSettled(p *corev1.Pod) bool {
	switch p.Name {
	case "never-done":
		return p.Status.Phase == corev1.PodSucceeded
	case "crashloop":
		// Crashed and restarted at least once. During a backoff the upstream
		// kubelet may go on reporting the last termination rather than
		// waiting CrashLoopBackOff (seen in make test: terminated, 4 restarts,
		// while its log said "back-off 1m20s").
		for _, c := range p.Status.ContainerStatuses {
			backingOff := c.State.Waiting != nil && c.State.Waiting.Reason == "CrashLoopBackOff"
			if c.RestartCount >= 1 && (backingOff || c.State.Terminated != nil) {
				return true
			}
		}
		return false
	}
	return podReady(p)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// containerRecord is what must not change for one container.
type containerRecord struct {
	id       string
	restarts int32
	started  string // state.running.startedAt
}

type podRecord struct {
	uid        string
	containers map[string]containerRecord
	conditions map[corev1.PodConditionType]string // status@lastTransitionTime
	startTime  string
	phase      corev1.PodPhase
}

func recordOf(p *corev1.Pod) podRecord {
	r := podRecord{uid: string(p.UID), containers: map[string]containerRecord{}, conditions: map[corev1.PodConditionType]string{}, phase: p.Status.Phase}
	if p.Status.StartTime != nil {
		r.startTime = p.Status.StartTime.UTC().Format(time.RFC3339)
	}
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, c := range list {
			cr := containerRecord{id: c.ContainerID, restarts: c.RestartCount}
			if c.State.Running != nil {
				cr.started = c.State.Running.StartedAt.UTC().Format(time.RFC3339)
			}
			r.containers[c.Name] = cr
		}
	}
	for _, c := range p.Status.Conditions {
		r.conditions[c.Type] = fmt.Sprintf("%s@%s", c.Status, c.LastTransitionTime.UTC().Format(time.RFC3339))
	}
	return r
}

// nodeSnapshot records every pod of ns, and the static pod's mirror.
func nodeSnapshot(t *testing.T, cs kubernetes.Interface, namespaces ...string) map[string]podRecord {
	t.Helper()
	out := map[string]podRecord{}
	for _, ns := range namespaces {
		list, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			out[ns+"/"+list.Items[i].Name] = recordOf(&list.Items[i])
		}
	}
	return out
}

// flipWatch records every update of the watched pods that shows a pod that
// was Ready as not Ready, or a container ID or restart count that changed.
type flipWatch struct {
	mu     sync.Mutex
	flips  []string // pod: Ready true -> false
	others []string // container recreated or restarted
	stop   chan struct{}
}

func watchFlips(t *testing.T, cs kubernetes.Interface, skip map[string]bool, namespaces ...string) *flipWatch {
	t.Helper()
	fw := &flipWatch{stop: make(chan struct{})}
	for _, ns := range namespaces {
		f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
		inf := f.Core().V1().Pods().Informer()
		_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(oldObj, newObj any) {
			o, n := oldObj.(*corev1.Pod), newObj.(*corev1.Pod)
			key := n.Namespace + "/" + n.Name
			fw.mu.Lock()
			defer fw.mu.Unlock()
			if skip[n.Name] {
				return // the crash-looping pod flips and restarts on its own
			}
			if podReady(o) && !podReady(n) && n.DeletionTimestamp == nil {
				fw.flips = append(fw.flips, fmt.Sprintf("%s went Ready=false at %s", key, time.Now().Format("15:04:05.000")))
			}
			before, after := recordOf(o), recordOf(n)
			for name, b := range before.containers {
				a, ok := after.containers[name]
				if ok && b.id != "" && (a.id != b.id || a.restarts != b.restarts) {
					fw.others = append(fw.others, fmt.Sprintf("%s container %s: %s (restarts %d) -> %s (restarts %d)", key, name, b.id, b.restarts, a.id, a.restarts))
				}
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		f.Start(fw.stop)
		if !cache.WaitForCacheSync(fw.stop, inf.HasSynced) {
			t.Fatal("pod watch did not sync")
		}
	}
	return fw
}

// waitFlip returns once a flip is recorded or after d.
func (fw *flipWatch) waitFlip(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		fw.mu.Lock()
		n := len(fw.flips)
		fw.mu.Unlock()
		if n > 0 {
			return
		}
	}
}

func (fw *flipWatch) finish() (flips, others []string) {
	close(fw.stop)
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return append([]string(nil), fw.flips...), append([]string(nil), fw.others...)
}

// compareRecords lists what changed between two snapshots of the same pods.
// The crash-looping pod restarts on its own: only its restart count going
// backwards counts.
func compareRecords(before, after map[string]podRecord) []string {
	var diffs []string
	keys := make([]string, 0, len(before))
	for k := range before {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b := before[k]
		a, ok := after[k]
		if !ok {
			diffs = append(diffs, k+": gone")
			continue
		}
		if a.uid != b.uid {
			diffs = append(diffs, fmt.Sprintf("%s: pod UID %s -> %s", k, b.uid, a.uid))
		}
		if a.phase != b.phase || a.startTime != b.startTime {
			diffs = append(diffs, fmt.Sprintf("%s: phase/startTime %s/%s -> %s/%s", k, b.phase, b.startTime, a.phase, a.startTime))
		}
		crash := strings.HasSuffix(k, "/crashloop")
		for name, bc := range b.containers {
			ac := after[k].containers[name]
			switch {
			case crash:
				if ac.restarts < bc.restarts {
					diffs = append(diffs, fmt.Sprintf("%s/%s: restart count went back %d -> %d", k, name, bc.restarts, ac.restarts))
				}
			case ac != bc:
				diffs = append(diffs, fmt.Sprintf("%s/%s: %+v -> %+v", k, name, bc, ac))
			}
		}
		if crash {
			continue
		}
		for ct, bv := range b.conditions {
			if av := a.conditions[ct]; av != bv {
				diffs = append(diffs, fmt.Sprintf("%s: condition %s %s -> %s", k, ct, bv, av))
			}
		}
	}
	return diffs
}

// setUpDropInNode creates the pod mix and the static pod under the running
// agent and waits until every pod has settled.
func setUpDropInNode(t *testing.T, env clusterEnv, cs kubernetes.Interface, ns string, n int) {
	t.Helper()
	for _, p := range dropInPods(n) {
		create(t, cs, ns, p)
	}
	manifest := filepath.Join(env["STATIC_POD_PATH"], "dropin-static-"+ns+".yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(staticDropIn, ns)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(manifest) })
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) < n+5 {
			return false, nil
		}
		for i := range list.Items {
			if p := &list.Items[i]; !podSettled(p) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		list, _ := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		var states []string
		for i := range list.Items {
			states = append(states, list.Items[i].Name+": "+describePod(&list.Items[i]))
		}
		t.Fatalf("the pods did not settle: %v\n%s", err, strings.Join(states, "\n"))
	}
	// Let one more status round settle (the crash loop's backoff grows).
	time.Sleep(5 * time.Second)
}

// checkHandover swaps or restarts the agent with act, watches for observe,
// and fails on any recreated container, moved restart count, Ready flip or
// status change, except for the pods in tolerate (pod name -> why), whose
// findings are logged.
func checkHandover(t *testing.T, env clusterEnv, cs kubernetes.Interface, ns, scenario, what string, observe time.Duration, tolerate map[string]string, act func()) {
	t.Helper()
	before := nodeSnapshot(t, cs, ns)
	fw := watchFlips(t, cs, map[string]bool{"crashloop": true}, ns)
	start := time.Now()
	act()
	t.Logf("%s: agent ready again after %s", what, time.Since(start).Round(time.Millisecond))
	time.Sleep(observe)
	flips, others := fw.finish()
	after := nodeSnapshot(t, cs, ns)
	diffs := compareRecords(before, after)
	t.Logf("%s: %d pods, %d Ready flips, %d containers recreated or restarted, %d status differences",
		what, len(before), len(flips), len(others), len(diffs))
	var failed, known []string
	for _, finding := range append(append(flips, others...), diffs...) {
		if why, ok := tolerated(finding, ns, tolerate); ok {
			t.Logf("%s: %s (%s)", what, finding, why)
			known = append(known, finding+" ("+why+")")
			continue
		}
		failed = append(failed, finding)
		broken(t, env, "%s: %s", what, finding)
	}
	recordScenario(t, env, scenario, map[string]any{"what": what, "pods": len(before), "readyFlips": len(flips),
		"containersRecreatedOrRestarted": len(others), "statusDifferences": len(diffs), "agentReadySeconds": time.Since(start).Seconds() - observe.Seconds(),
		"findings": failed, "knownUpstreamBehaviour": known})
}

func tolerated(finding, ns string, tolerate map[string]string) (string, bool) {
	for name, why := range tolerate {
		if strings.HasPrefix(finding, ns+"/"+name+":") || strings.HasPrefix(finding, ns+"/"+name+" ") ||
			strings.HasPrefix(finding, ns+"/"+name+"/") {
			return why, true
		}
	}
	return "", false
}

// Swap both ways: pods started by the upstream kubelet are adopted by Bosun
// as they are, and Bosun's by the upstream kubelet.
func TestDropInSwapBothWays(t *testing.T) {
	env := loadEnv(t)
	requireAgent(t, env, "bosun") // it swaps to upstream and back; once per make test is enough
	cs := env.client(t)
	ns := testNamespace(t, cs)
	t.Cleanup(func() { harness(t, "bosun", "swap") })
	harness(t, "upstream", "swap")
	setUpDropInNode(t, env, cs, ns, 15)
	checkHandover(t, env, cs, ns, "swap-from-upstream", "upstream -> bosun", 25*time.Second, nil, func() { harness(t, "bosun", "swap") })
	// The upstream kubelet keeps the static pod's containers too, but builds
	// its status afresh (it does not read the mirror's back): a new start
	// time and transition times, and Ready=false until its probe runs.
	checkHandover(t, env, cs, ns, "swap-to-upstream", "bosun -> upstream", 25*time.Second,
		map[string]string{"dropin-static-" + env["NODE_NAME"]: "the upstream kubelet's own behaviour for static pods"},
		func() { harness(t, "upstream", "swap") })
}

// kill -9 and the same command line again: nothing restarts, nothing flips.
func TestDropInKillRestartNoFlips(t *testing.T) {
	env := loadEnv(t)
	requirePromise(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	setUpDropInNode(t, env, cs, ns, 15)
	var tolerate map[string]string
	if env["KUBELET"] == "upstream" {
		tolerate = map[string]string{"dropin-static-" + env["NODE_NAME"]: "the upstream kubelet's own behaviour for static pods"}
	}
	checkHandover(t, env, cs, ns, "kill-restart", env["KUBELET"]+" kill -9, restart", 25*time.Second, tolerate, func() {
		harness(t, env["KUBELET"], "kill-agent")
		harness(t, env["KUBELET"], "start-agent")
	})
}

// A container that dies while no agent runs goes unready as soon as the
// agent is back, and is restarted: prior readiness is per container.
func TestDropInDeadWhileDownGoesUnready(t *testing.T) {
	env := loadEnv(t)
	requireAgent(t, env, "bosun")
	cs := env.client(t)
	ns := testNamespace(t, cs)
	pod := busyboxPod("dies", corev1.RestartPolicyAlways, "trap 'exit 0' TERM; sleep 100000 & wait")
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{PeriodSeconds: 30,
		ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	create(t, cs, ns, pod)
	p := waitPod(t, cs, ns, "dies", 60*time.Second, "Ready", podReady)
	id := p.Status.ContainerStatuses[0].ContainerID
	harness(t, "bosun", "kill-agent")
	// The container dies while the agent is down.
	out, err := exec.Command(env["CTR"], "--address", strings.TrimPrefix(env["CRI_ENDPOINT"], "unix://"), "-n", "k8s.io",
		"task", "kill", "-s", "SIGKILL", strings.TrimPrefix(id, "containerd://")).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr task kill: %v: %s", err, out)
	}
	fw := watchFlips(t, cs, nil, ns)
	harness(t, "bosun", "start-agent")
	waitPod(t, cs, ns, "dies", 30*time.Second, "restarted", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	// The flip watch is a watch of its own: it may see the update that
	// waitPod saw a moment later.
	fw.waitFlip(10 * time.Second)
	flips, _ := fw.finish()
	if len(flips) == 0 {
		t.Errorf("the pod whose container died while the agent was down was never reported unready")
	}
}

// runningTasks lists the IDs of the containers containerd has running.
func runningTasks(t *testing.T, env clusterEnv) map[string]bool {
	t.Helper()
	out, err := exec.Command(env["CTR"], "--address", strings.TrimPrefix(env["CRI_ENDPOINT"], "unix://"), "-n", "k8s.io", "tasks", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr tasks ls: %v: %s", err, out)
	}
	running := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[2] == "RUNNING" {
			running[f[0]] = true
		}
	}
	return running
}

// containersOfPod lists the container IDs containerd has for a pod name.
func containersOfPod(t *testing.T, env clusterEnv, podName string) []string {
	t.Helper()
	out, err := exec.Command(env["CTR"], "--address", strings.TrimPrefix(env["CRI_ENDPOINT"], "unix://"), "-n", "k8s.io",
		"containers", "ls", "-q", fmt.Sprintf(`labels."io.kubernetes.pod.name"==%s`, podName)).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr containers ls: %v: %s", err, out)
	}
	return strings.Fields(string(out))
}

// Lose the apiserver for two minutes (one in make test: still past the
// node controller's 40 s grace, so the node goes NotReady and its pods
// unready) and restart the agent in the middle: no pod is killed, a new
// static pod starts, and once the apiserver is back the node is Ready within
// 40 s with no container restarted.
func TestDropInAPIServerOutage(t *testing.T) {
	env := loadEnv(t)
	requirePromise(t, env)
	agent := env["KUBELET"]
	cs := env.client(t)
	ns := testNamespace(t, cs)
	setUpDropInNode(t, env, cs, ns, 5)
	before := nodeSnapshot(t, cs, ns)
	var ids []string
	for key, p := range before {
		if strings.HasSuffix(key, "/crashloop") || strings.HasSuffix(key, "/never-done") {
			continue
		}
		for _, c := range p.containers {
			if c.started != "" {
				ids = append(ids, strings.TrimPrefix(c.id, "containerd://"))
			}
		}
	}
	restored := false
	t.Cleanup(func() {
		if !restored {
			harness(t, agent, "start-apiserver")
		}
	})
	outageStart := time.Now()
	harness(t, agent, "stop-apiserver")
	logBefore := countLines(env["AGENT_LOG"])
	time.Sleep(20 * time.Second)
	harness(t, agent, "kill-agent")
	t.Setenv("WAIT", "healthz")
	harness(t, agent, "start-agent")
	manifest := filepath.Join(env["STATIC_POD_PATH"], "outage-static-"+ns+".yaml")
	if err := os.WriteFile(manifest, []byte(strings.Replace(fmt.Sprintf(staticDropIn, ns), "dropin-static", "outage-static", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(manifest) })
	staticName := "outage-static-" + env["NODE_NAME"]
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 60*time.Second, true, func(context.Context) (bool, error) {
		running := runningTasks(t, env)
		for _, id := range containersOfPod(t, env, staticName) {
			if running[id] {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		broken(t, env, "a static pod added during the outage did not start: %v\n%s", err, tailLog(env["AGENT_LOG"], 20))
	}
	outage := time.Minute
	if measuring(env) {
		outage = 2 * time.Minute
	}
	time.Sleep(time.Until(outageStart.Add(outage)))
	staticStarted := err == nil
	running := runningTasks(t, env)
	stopped := 0
	for _, id := range ids {
		if !running[id] {
			stopped++
			broken(t, env, "container %s stopped during the apiserver outage", id)
		}
	}
	lines := countLines(env["AGENT_LOG"]) - logBefore
	t.Logf("the agent wrote %d log lines during the %s outage (restart included)", lines, time.Since(outageStart).Round(time.Second))
	if lines > 400 {
		broken(t, env, "%d log lines during a %s outage: too noisy\n%s", lines, outage, tailLog(env["AGENT_LOG"], 30))
	}
	t.Setenv("WAIT", "")
	back := time.Now()
	harness(t, agent, "start-apiserver")
	restored = true
	err = wait.PollUntilContextTimeout(context.Background(), time.Second, 40*time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, env["NODE_NAME"], metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(back.Truncate(time.Second)) {
				return true, nil
			}
		}
		return false, nil
	})
	readyAfter := time.Since(back)
	if err != nil {
		broken(t, env, "node not Ready within 40 s of the apiserver's return\n%s", tailLog(env["AGENT_LOG"], 30))
	}
	t.Logf("node Ready %s after the apiserver came back", readyAfter.Round(time.Second))
	// The node lifecycle controller marks the pods unready while the node's
	// Lease is stale; the agent must make them Ready again, unrestarted.
	err = wait.PollUntilContextTimeout(context.Background(), time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for i := range list.Items {
			if p := &list.Items[i]; p.Name != "crashloop" && p.Name != "never-done" && !podReady(p) {
				return false, nil
			}
		}
		return true, nil
	})
	podsReady := err == nil
	t.Logf("pods Ready again %s after the apiserver came back", time.Since(back).Round(time.Second))
	if err != nil {
		broken(t, env, "pods not Ready again after the outage: %v", err)
	}
	after := nodeSnapshot(t, cs, ns)
	restarted := 0
	for key, b := range before {
		if strings.HasSuffix(key, "/crashloop") {
			continue
		}
		for name, bc := range b.containers {
			if ac := after[key].containers[name]; ac.id != bc.id || ac.restarts != bc.restarts {
				restarted++
				broken(t, env, "%s/%s: %s (restarts %d) -> %s (restarts %d)", key, name, bc.id, bc.restarts, ac.id, ac.restarts)
			}
		}
	}
	recordScenario(t, env, "apiserver-outage", map[string]any{"outageSeconds": outage.Seconds(), "pods": len(before),
		"containersStoppedDuringOutage": stopped, "staticPodStartedDuringOutage": staticStarted, "logLinesDuringOutage": lines,
		"nodeReadySecondsAfterReturn": readyAfter.Seconds(), "podsReadyAgain": podsReady, "containersRestarted": restarted})
	if !measuring(env) {
		waitPod(t, cs, ns, staticName, 60*time.Second, "mirrored and Ready", podReady)
	}
	// Leave the node schedulable for the next tests: the node lifecycle
	// controller lifts the taints it set during the outage a while after
	// the node is Ready again.
	err = wait.PollUntilContextTimeout(context.Background(), time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, env["NODE_NAME"], metav1.GetOptions{})
		return err == nil && len(n.Spec.Taints) == 0, nil
	})
	if err != nil {
		t.Errorf("the node kept the outage's taints: %v", err)
	}
	t.Logf("the outage's taints lifted %s after the apiserver came back", time.Since(back).Round(time.Second))
	// ... and the controller-manager, whose watches back off for a while
	// after the outage too: a new namespace gets its service account.
	probe, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "after-outage-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), probe.Name, metav1.DeleteOptions{}) }()
	err = wait.PollUntilContextTimeout(context.Background(), time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(probe.Name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Errorf("the controller-manager did not come back after the outage: %v", err)
	}
	t.Logf("the controller-manager served a new namespace %s after the apiserver came back", time.Since(back).Round(time.Second))
}

func countLines(file string) int {
	data, _ := os.ReadFile(file)
	return strings.Count(string(data), "\n")
}

// taskPids maps running container IDs to their main process.
func taskPids(t *testing.T, env clusterEnv) map[string]int {
	t.Helper()
	out, err := exec.Command(env["CTR"], "--address", strings.TrimPrefix(env["CRI_ENDPOINT"], "unix://"), "-n", "k8s.io", "tasks", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr tasks ls: %v: %s", err, out)
	}
	pids := map[string]int{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[2] == "RUNNING" {
			if pid, err := strconv.Atoi(f[1]); err == nil {
				pids[f[0]] = pid
			}
		}
	}
	return pids
}

// Restart containerd under running pods: the agent survives, keeps the
// containers that survived, restarts the one that died meanwhile and
// counts that restart.
func TestDropInContainerdRestart(t *testing.T) {
	env := loadEnv(t)
	requirePromise(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	for _, name := range []string{"keeps", "dies"} {
		p := busyboxPod(name, corev1.RestartPolicyAlways, "trap 'exit 0' TERM; sleep 100000 & wait")
		p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{PeriodSeconds: 5,
			ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
		create(t, cs, ns, p)
	}
	keeps := waitPod(t, cs, ns, "keeps", 60*time.Second, "Ready", podReady)
	dies := waitPod(t, cs, ns, "dies", 60*time.Second, "Ready", podReady)
	agentPid := agentPidOf(t, env["AGENT_PID"])
	pids := taskPids(t, env)
	diesPid := pids[strings.TrimPrefix(dies.Status.ContainerStatuses[0].ContainerID, "containerd://")]
	if diesPid == 0 {
		t.Fatalf("no task for %s", dies.Status.ContainerStatuses[0].ContainerID)
	}
	harness(t, env["KUBELET"], "restart-containerd")
	// The container dies while containerd was away (its shim reports it).
	if err := syscallKill(diesPid); err != nil {
		t.Fatal(err)
	}
	waitPod(t, cs, ns, "dies", 60*time.Second, "restarted and Ready", func(p *corev1.Pod) bool {
		return podReady(p) && p.Status.ContainerStatuses[0].RestartCount == 1
	})
	after := waitPod(t, cs, ns, "keeps", 10*time.Second, "Ready", podReady)
	if a, b := after.Status.ContainerStatuses[0], keeps.Status.ContainerStatuses[0]; a.ContainerID != b.ContainerID || a.RestartCount != b.RestartCount {
		broken(t, env, "a container that survived the containerd restart was replaced: %s (%d) -> %s (%d)", b.ContainerID, b.RestartCount, a.ContainerID, a.RestartCount)
	}
	if now := agentPidOf(t, env["AGENT_PID"]); now != agentPid || !processRunning(now) {
		broken(t, env, "the node agent did not survive the containerd restart (pid %d -> %d)\n%s", agentPid, now, tailLog(env["AGENT_LOG"], 30))
	}
}

func agentPidOf(t *testing.T, file string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return pid
}

func processRunning(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil && !isZombie(pid) }

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

const staticPortPod = `apiVersion: v1
kind: Pod
metadata:
  name: edited-static
  namespace: %s
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 3
  containers:
  - name: web
    image: ` + busybox + `
    command: ["sh", "-c", "echo version %s; exec httpd -f -p 18089"]
    readinessProbe:
      tcpSocket: {port: 18089}
      periodSeconds: 1
`

// Static pods you can trust: a FIFO in the manifest folder does not hang
// the source, and a manifest edited in place stops the old pod (which holds
// a host port) before the new one starts, so the new one starts once and
// stays up.
func TestDropInStaticPodEditedInPlace(t *testing.T) {
	env := loadEnv(t)
	requirePromise(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	fifo := filepath.Join(env["STATIC_POD_PATH"], "trap-"+ns+".yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(fifo) })
	manifest := filepath.Join(env["STATIC_POD_PATH"], "edited-"+ns+".yaml")
	t.Cleanup(func() { _ = os.Remove(manifest) })
	name := "edited-static-" + env["NODE_NAME"]
	for _, version := range []string{"1", "2"} {
		if err := os.WriteFile(manifest, []byte(fmt.Sprintf(staticPortPod, ns, version)), 0o644); err != nil {
			t.Fatal(err)
		}
		waitPod(t, cs, ns, name, 90*time.Second, "running version "+version, func(p *corev1.Pod) bool {
			return podReady(p) && strings.Contains(strings.Join(p.Spec.Containers[0].Command, " "), "version "+version)
		})
		// Stay up: the port was free when it started.
		time.Sleep(5 * time.Second)
		p := waitPod(t, cs, ns, name, 5*time.Second, "still up", podReady)
		if c := p.Status.ContainerStatuses[0]; c.RestartCount != 0 || p.Annotations["kubernetes.io/config.mirror"] == "" {
			broken(t, env, "version %s of the static pod restarted %d times (its host port was still held?): %s", version, c.RestartCount, describePod(p))
		}
	}
}
