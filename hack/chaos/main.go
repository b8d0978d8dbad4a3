// Command chaos kills the local cluster's node agent with SIGKILL at random
// moments, again and again, while pods are created and deleted, and (one
// kill in five each) while the agent bootstraps its client certificate
// from scratch or requests a serving certificate, and checks after each
// restart what a crash must never cost:
//   - the node Ready again, with a valid client certificate;
//   - a cert dir with no partial, temporary or dangling files;
//   - no pod with two running containers for one spec container, or two
//     ready sandboxes;
//   - no sandbox or container of a deleted pod left behind (20 s after
//     each restart, and 2 minutes after the last).
//
// Usage: chaos -kills N -out FILE (run from the repo with the cluster up;
// make chaos does). It prints what it checked after each kill and exits 1
// when any check failed.
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bosun-dev/bosun/hack/clusterenv"
	"github.com/bosun-dev/bosun/internal/runtime"
)

// Kill is what one kill did and what was found after it.
type Kill struct {
	N            int      `json:"n"`
	Mode         string   `json:"mode"` // running | bootstrap
	AfterSeconds float64  `json:"killedAfterSeconds"`
	ReadySeconds float64  `json:"readyAfterSeconds"`
	Problems     []string `json:"problems,omitempty"`
}

// Report is the run's record, read by hack/reliability.
type Report struct {
	Agent      string    `json:"agent"`
	Commit     string    `json:"commit"`
	Started    time.Time `json:"started"`
	Kills      []Kill    `json:"kills"`
	PodsMade   int       `json:"podsCreated"`
	PodsGone   int       `json:"podsDeleted"`
	Failed     int       `json:"killsWithProblems"`
	Bootstraps int       `json:"bootstrapKills"`
	Servings   int       `json:"servingCertKills"`
	LeftAtEnd  []string  `json:"leftAtEnd,omitempty"` // leaks still there finalWait after the last kill
}

const ns = "chaos"

func main() {
	kills := flag.Int("kills", 50, "how many times to kill the agent")
	out := flag.String("out", "", "write the report (JSON) here")
	flag.Parse()
	env, err := clusterenv.Load("_output/local/env")
	if err != nil {
		fail(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", env["KUBECONFIG"])
	if err != nil {
		fail(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt, err := runtime.Connect(ctx, env["CRI_ENDPOINT"], env["CRI_ENDPOINT"], 30*time.Second)
	if err != nil {
		fail(err)
	}
	rep := &Report{Agent: env["KUBELET"], Commit: gitCommit(), Started: time.Now().UTC()}
	if err := ensureNamespace(ctx, cs); err != nil {
		fail(err)
	}
	w := &workload{cs: cs}
	wctx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.run(wctx) }()
	for i := 1; i <= *kills; i++ {
		k := Kill{N: i, Mode: "running"}
		switch i % 5 {
		case 0:
			k.Mode = "bootstrap"
			rep.Bootstraps++
		case 3:
			k.Mode = "serving"
			rep.Servings++
		}
		k.AfterSeconds, k.ReadySeconds, k.Problems = killOnce(ctx, env, k.Mode)
		if len(k.Problems) == 0 {
			k.Problems = check(ctx, env, cs, rt)
		}
		status := "ok"
		if len(k.Problems) > 0 {
			status = fmt.Sprintf("%d PROBLEMS: %s", len(k.Problems), strings.Join(k.Problems[:min(3, len(k.Problems))], "; "))
			rep.Failed++
		}
		fmt.Printf("%s kill %d/%d (%s, %.1fs after start): Ready after %.1fs; cert dir, duplicates, leaks: %s\n",
			time.Now().UTC().Format("15:04:05"), i, *kills, k.Mode, k.AfterSeconds, k.ReadySeconds, status)
		rep.Kills = append(rep.Kills, k)
	}
	stopWork()
	wg.Wait()
	rep.PodsMade, rep.PodsGone = w.made, w.gone
	// Whatever a kill left must be gone once the agent has run a while.
	rep.LeftAtEnd = waitLeaks(ctx, cs, rt, finalWait)
	fmt.Printf("after the last kill and %s: %d sandboxes or containers of deleted pods left\n", finalWait, len(rep.LeftAtEnd))
	_ = cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	fmt.Printf("chaos: %d kills (%d during client bootstrap, %d during a serving certificate request), %d with problems; %d pods created and %d deleted meanwhile\n",
		len(rep.Kills), rep.Bootstraps, rep.Servings, rep.Failed, rep.PodsMade, rep.PodsGone)
	if *out != "" {
		data, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			fail(err)
		}
		if err := os.WriteFile(*out, data, 0o644); err != nil {
			fail(err)
		}
	}
	if rep.Failed > 0 || len(rep.LeftAtEnd) > 0 {
		os.Exit(1)
	}
	// Without pods coming and going, the kills tested only the restart.
	if rep.PodsMade < *kills || rep.PodsGone == 0 {
		fmt.Printf("chaos: PROBLEMS: the workload made %d pods and deleted %d during %d kills; the crash loop needs pods coming and going\n", rep.PodsMade, rep.PodsGone, *kills)
		os.Exit(1)
	}
}

// killOnce starts the agent (in bootstrap mode from no client certificate
// and no kubeconfig), kills it after a random moment, starts it again and
// waits for the node to be Ready.
func killOnce(ctx context.Context, env map[string]string, mode string) (after, ready float64, problems []string) {
	// bootstrap: from no client certificate and no kubeconfig, so the
	// agent sends a CSR and writes both; serving: from no serving
	// certificate, so it sends a kubelet-serving CSR (the harness approves
	// it when it next waits for the node).
	remove := map[string][]string{
		"bootstrap": {"kubelet-client-*.pem", "kubelet-client.key.tmp", env["NODE_KUBECONFIG"]},
		"serving":   {"kubelet-server-*.pem"},
	}[mode]
	if len(remove) > 0 {
		if err := harness("kill-agent"); err != nil {
			return 0, 0, []string{err.Error()}
		}
		for _, pattern := range remove {
			if !filepath.IsAbs(pattern) {
				pattern = filepath.Join(env["CERT_DIR"], pattern)
			}
			files, _ := filepath.Glob(pattern)
			for _, f := range files {
				_ = os.Remove(f)
			}
		}
		if err := harnessEnv([]string{"WAIT=none"}, "start-agent"); err != nil {
			return 0, 0, []string{err.Error()}
		}
	}
	// A certificate request takes about a second; a running agent's work
	// comes in bursts of a few seconds (pod starts, deletions, probes).
	limit := 4 * time.Second
	if len(remove) > 0 {
		limit = 1500 * time.Millisecond
	}
	d := time.Duration(rand.Int64N(int64(limit)))
	time.Sleep(d)
	if err := harness("kill-agent"); err != nil {
		return d.Seconds(), 0, []string{err.Error()}
	}
	start := time.Now()
	if err := harness("start-agent"); err != nil {
		return d.Seconds(), time.Since(start).Seconds(), []string{"not Ready after the restart: " + firstLine(err.Error())}
	}
	return d.Seconds(), time.Since(start).Seconds(), nil
}

// check looks at the cert dir and the runtime after a restart.
func check(ctx context.Context, env map[string]string, cs kubernetes.Interface, rt *runtime.Runtime) []string {
	problems := checkCertDir(env["CERT_DIR"])
	problems = append(problems, checkDuplicates(ctx, rt)...)
	// Pods deleted while the agent was down are cleaned up by its
	// housekeeping: give it a few rounds.
	return append(problems, waitLeaks(ctx, cs, rt, leakWait)...)
}

// leakWait is how long after a restart the agent has to remove what is left
// of pods deleted meanwhile; finalWait the same at the end of the run.
const (
	leakWait  = 20 * time.Second
	finalWait = 2 * time.Minute
)

// waitLeaks waits until no sandbox or container of a deleted pod that was
// there when it began is left. The workload keeps deleting pods meanwhile,
// so one deleted during the wait may be in its teardown at any moment: it
// is not the kill's, and the final wait (no workload then) judges it.
func waitLeaks(ctx context.Context, cs kubernetes.Interface, rt *runtime.Runtime, wait time.Duration) []string {
	first := checkLeaks(ctx, cs, rt)
	left := first
	for deadline := time.Now().Add(wait); len(left) > 0 && time.Now().Before(deadline); {
		time.Sleep(2 * time.Second)
		now := checkLeaks(ctx, cs, rt)
		left = map[string]string{}
		for k := range first {
			if msg, ok := now[k]; ok {
				left[k] = msg
			}
		}
	}
	var out []string
	for _, msg := range left {
		out = append(out, msg)
	}
	sort.Strings(out)
	return out
}

// checkCertDir: no temporary or partial file, every certificate file a
// valid pair, every -current.pem link pointing at one.
func checkCertDir(dir string) []string {
	var problems []string
	entries, err := os.ReadDir(dir)
	if err != nil {
		return []string{err.Error()}
	}
	var temporaries []string
	for _, e := range entries {
		name, path := e.Name(), filepath.Join(dir, e.Name())
		switch {
		case strings.HasPrefix(name, "."):
			temporaries = append(temporaries, name)
		case name == "kubelet-client.key.tmp":
			problems = append(problems, "bootstrap key left after the bootstrap completed: "+name)
		case strings.HasSuffix(name, "-current.pem"):
			target, err := filepath.EvalSymlinks(path)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s dangles: %v", name, err))
			} else if err := validPair(target); err != nil {
				problems = append(problems, fmt.Sprintf("%s -> %s: %v", name, filepath.Base(target), err))
			}
		case strings.HasPrefix(name, "kubelet-client-") || strings.HasPrefix(name, "kubelet-server-"):
			if err := validPair(path); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", name, err))
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "kubelet-client-current.pem")); err != nil {
		problems = append(problems, "no kubelet-client-current.pem")
	}
	// A temporary file may be a write in flight (the serving certificate
	// arrives while the node is already Ready): only one still there a
	// moment later was left behind.
	if len(temporaries) > 0 {
		time.Sleep(2 * time.Second)
		for _, name := range temporaries {
			if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
				problems = append(problems, "temporary file left in the cert dir: "+name)
			}
		}
	}
	return problems
}

func validPair(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cert, key bool
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case b.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return err
			}
			if time.Now().After(c.NotAfter) {
				return fmt.Errorf("expired at %s", c.NotAfter)
			}
			cert = true
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			key = true
		}
	}
	if !cert || !key {
		return fmt.Errorf("not a whole certificate and key (certificate %v, key %v)", cert, key)
	}
	return nil
}

// checkDuplicates: one running container per spec container and one ready
// sandbox per pod.
func checkDuplicates(ctx context.Context, rt *runtime.Runtime) []string {
	var problems []string
	sandboxes, err := rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
	if err != nil {
		return []string{err.Error()}
	}
	ready := map[string]int{}
	for _, sb := range sandboxes {
		ready[sb.Labels["io.kubernetes.pod.uid"]]++
	}
	for uid, n := range ready {
		if n > 1 {
			problems = append(problems, fmt.Sprintf("pod %s has %d ready sandboxes", uid, n))
		}
	}
	ctrs, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		return append(problems, err.Error())
	}
	running := map[string]int{}
	for _, c := range ctrs {
		running[c.Labels["io.kubernetes.pod.uid"]+"/"+c.Labels["io.kubernetes.container.name"]]++
	}
	for key, n := range running {
		if n > 1 {
			problems = append(problems, fmt.Sprintf("container %s runs %d times", key, n))
		}
	}
	return problems
}

// checkLeaks: every sandbox and container belongs to a pod the apiserver
// has (or to a static pod, whose mirror it has).
func checkLeaks(ctx context.Context, cs kubernetes.Interface, rt *runtime.Runtime) map[string]string {
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	known := map[string]bool{}
	for _, p := range pods.Items {
		known[string(p.UID)] = true
		if h := p.Annotations["kubernetes.io/config.mirror"]; h != "" {
			known[h] = true
		}
	}
	problems := map[string]string{}
	sandboxes, err := rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{})
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	for _, sb := range sandboxes {
		if uid := sb.Labels["io.kubernetes.pod.uid"]; !known[uid] {
			problems["sandbox "+sb.Id] = fmt.Sprintf("sandbox %.12s (%s, made %s) of deleted pod %s/%s (%s) left", sb.Id, sb.State,
				time.Unix(0, sb.CreatedAt).UTC().Format("15:04:05.000"), sb.Metadata.GetNamespace(), sb.Metadata.GetName(), uid)
		}
	}
	ctrs, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{})
	if err != nil {
		problems["error"] = err.Error()
		return problems
	}
	for _, c := range ctrs {
		if uid := c.Labels["io.kubernetes.pod.uid"]; !known[uid] {
			problems["container "+c.Id] = fmt.Sprintf("container %s %.12s (%s) of deleted pod %s left", c.Labels["io.kubernetes.container.name"], c.Id, c.State, uid)
		}
	}
	return problems
}

// workload keeps pods coming and going in the chaos namespace.
type workload struct {
	cs         kubernetes.Interface
	made, gone int
}

func (w *workload) run(ctx context.Context) {
	var live []string
	for i := 0; ctx.Err() == nil; i++ {
		name := fmt.Sprintf("p%04d", i)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(1)),
			Containers: []corev1.Container{{Name: "main", Image: "registry.k8s.io/e2e-test-images/busybox:1.37.0-1",
				Command:        []string{"sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 2, ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}}},
		}}
		if _, err := w.cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err == nil {
			live = append(live, name)
			w.made++
		}
		if len(live) > 4 {
			if err := w.cs.CoreV1().Pods(ns).Delete(ctx, live[0], metav1.DeleteOptions{}); err == nil || apierrors.IsNotFound(err) {
				w.gone++
			}
			live = live[1:]
		}
		select {
		case <-ctx.Done():
		case <-time.After(700 * time.Millisecond):
		}
	}
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface) error {
	// An earlier run deletes the namespace as it ends: wait until it is
	// gone, or no pod could be made in it.
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && n.DeletionTimestamp == nil) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s is still terminating after 3 minutes (err %v)", ns, err)
		}
	}
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for i := 0; i < 60; i++ {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("namespace %s has no default service account", ns)
}

func harness(args ...string) error { return harnessEnv(nil, args...) }

func harnessEnv(extra []string, args ...string) error {
	cmd := exec.Command("_output/bin/cluster", args...)
	cmd.Env = append(os.Environ(), extra...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("cluster %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "chaos:", err)
	os.Exit(2)
}
