package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criremote "k8s.io/cri-client/pkg"
)

const busybox = "registry.k8s.io/e2e-test-images/busybox:1.37.0-1"

// cluster is what a round needs of the running cluster.
type cluster struct {
	env    map[string]string
	client kubernetes.Interface
	node   *http.Client // the node API with the admin certificate
	rs     internalapi.RuntimeService
}

func loadCluster(ctx context.Context, root string) (*cluster, error) {
	f, err := os.Open(filepath.Join(root, "_output", "local", "env"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "export "); ok {
			k, v, _ := strings.Cut(line, "=")
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			}
			env[k] = v
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", env["KUBECONFIG"])
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(env["ADMIN_CERT"], env["ADMIN_KEY"])
	if err != nil {
		return nil, err
	}
	ca, _ := os.ReadFile(env["CA_CERT"])
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	node := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 20,
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	rs, err := criremote.NewRemoteRuntimeService(ctx, env["CRI_ENDPOINT"], 2*time.Minute, nil, false)
	if err != nil {
		return nil, err
	}
	return &cluster{env: env, client: cs, node: node, rs: rs}, nil
}

func (c *cluster) agentPid() int {
	data, _ := os.ReadFile(c.env["AGENT_PID"])
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// measureAgent is one round of one agent: a clean node, a warm-up batch
// (not kept), the sweep, ten pods one at a time, and the streams.
func measureAgent(ctx context.Context, root, agent string, p plan) (sample, error) {
	if err := up(root, agent, p.maxPods()); err != nil {
		return nil, err
	}
	c, err := loadCluster(ctx, root)
	if err != nil {
		return nil, err
	}
	s := sample{}
	time.Sleep(5 * time.Second) // let the fresh agent settle
	if err := c.footprint(p.window, s, "0"); err != nil {
		return nil, err
	}
	if err := c.startupBatch(ctx, 5, "warmup", sample{}); err != nil {
		return nil, err
	}
	if err := c.clean(ctx); err != nil {
		return nil, err
	}
	for _, n := range p.sizes {
		before, err := c.scrape()
		if err != nil {
			return nil, err
		}
		key := fmt.Sprintf("startup%d", n)
		if err := c.startupBatch(ctx, n, key, s); err != nil {
			return nil, err
		}
		after, err := c.scrape()
		if err != nil {
			return nil, err
		}
		if n == p.big {
			if s["api.batch"], err = requestsBetween(before, after); err != nil {
				return nil, err
			}
			opMeans(before, after, s)
		}
		if p.footprintAt(n) {
			if err := c.footprint(p.window, s, strconv.Itoa(n)); err != nil {
				return nil, err
			}
		}
		if n == p.big {
			if err := c.nodeAPI(s); err != nil {
				return nil, err
			}
		}
		if err := c.clean(ctx); err != nil {
			return nil, err
		}
	}
	if err := c.sequential(ctx, 10, s); err != nil {
		return nil, err
	}
	if err := c.exits(ctx, 10, s); err != nil {
		return nil, err
	}
	if agent == "bosun" {
		if err := c.relistExits(ctx, root, 10, s); err != nil {
			return nil, err
		}
	}
	if err := c.streaming(ctx, s); err != nil {
		return nil, err
	}
	return s, c.clean(ctx)
}

// runShort is make test's slice: the running cluster's agent, one batch of
// 10 pods with its phases, the node API with them running; every figure
// must be measured.
func runShort(ctx context.Context, root string) error {
	c, err := loadCluster(ctx, root)
	if err != nil {
		return err
	}
	_ = c.clean(ctx) // an earlier run's namespace
	s := sample{}
	before, err := c.scrape()
	if err != nil {
		return err
	}
	if err := c.startupBatch(ctx, 10, "startup10", s); err != nil {
		return err
	}
	after, err := c.scrape()
	if err != nil {
		return err
	}
	opMeans(before, after, s)
	if err := c.nodeAPI(s); err != nil {
		return err
	}
	if err := c.clean(ctx); err != nil {
		return err
	}
	if err := c.exits(ctx, 10, s); err != nil {
		return err
	}
	want := []string{"startup10.p50", "startup10.last", "exit.p50", "exit.p99"}
	for _, ph := range phases {
		want = append(want, "startup10.phase."+ph.key+".p50")
	}
	for _, path := range nodePaths {
		want = append(want, "node."+path+".p50")
	}
	missing := absent(s, want)
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("%-40s %.4f\n", k, s[k])
	}
	if len(missing) > 0 {
		return fmt.Errorf("agent %s: not measured: %s", c.env["KUBELET"], strings.Join(missing, ", "))
	}
	dir := filepath.Join(root, "_output", "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(s, "", "  ")
	return os.WriteFile(filepath.Join(dir, "short-"+c.env["KUBELET"]+".json"), js, 0o644)
}

// runExits measures the running cluster's agent's exit figures alone.
func runExits(ctx context.Context, root string) error {
	c, err := loadCluster(ctx, root)
	if err != nil {
		return err
	}
	_ = c.clean(ctx)
	s := sample{}
	if err := c.exits(ctx, 10, s); err != nil {
		return err
	}
	if c.env["KUBELET"] == "bosun" {
		if err := c.relistExits(ctx, root, 10, s); err != nil {
			return err
		}
	}
	for _, k := range []string{"exit.p50", "exit.p99", "exit.relist.p50", "exit.relist.p99"} {
		if v, ok := s[k]; ok {
			fmt.Printf("%-20s %.3f s\n", k, v)
		}
	}
	return nil
}

func podSpec(name string) *corev1.Pod {
	zero := int64(0)
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bench"}, Spec: corev1.PodSpec{
		TerminationGracePeriodSeconds: &zero,
		Containers:                    []corev1.Container{{Name: "c", Image: busybox, Command: []string{"sleep", "3600"}}},
	}}
}

// benchNamespace makes the bench's namespace, waits for its service
// account, and watches its pods.
func (c *cluster) benchNamespace(ctx context.Context) (watch.Interface, error) {
	if _, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts("bench").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	return c.client.CoreV1().Pods("bench").Watch(ctx, metav1.ListOptions{})
}

// startupBatch creates n pods at once and records, per pod, the time from
// its Create call to Running seen through a watch, and the phases of its
// start in between.
func (c *cluster) startupBatch(ctx context.Context, n int, key string, s sample) error {
	w, err := c.benchNamespace(ctx)
	if err != nil {
		return err
	}
	defer func() { w.Stop() }()
	created := map[string]time.Time{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	begin := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("p-%03d", i)
			t := time.Now()
			if _, err := c.client.CoreV1().Pods("bench").Create(ctx, podSpec(name), metav1.CreateOptions{}); err == nil {
				mu.Lock()
				created[name] = t
				mu.Unlock()
			}
		}(i)
	}
	seen := map[string]timeline{}
	running := 0
	record := func(p *corev1.Pod) {
		now := time.Now()
		t := seen[p.Name]
		if p.Spec.NodeName != "" && t.bound.IsZero() {
			t.bound = now
		}
		if p.Status.Phase == corev1.PodRunning && t.running.IsZero() {
			t.running = now
			running++
		}
		seen[p.Name] = t
	}
	timeout := time.After(10 * time.Minute)
	for running < n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				// The apiserver ended the watch: catch up by a list, then watch again.
				list, err := c.client.CoreV1().Pods("bench").List(ctx, metav1.ListOptions{})
				if err != nil {
					return err
				}
				for i := range list.Items {
					record(&list.Items[i])
				}
				if w, err = c.client.CoreV1().Pods("bench").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion}); err != nil {
					return err
				}
				continue
			}
			if p, ok := ev.Object.(*corev1.Pod); ok {
				record(p)
			}
		case <-timeout:
			return fmt.Errorf("%d of %d pods Running after 10 minutes", running, n)
		}
	}
	last := time.Since(begin).Seconds()
	wg.Wait()
	var lat []float64
	for name, t := range seen {
		t.created = created[name]
		if t.created.IsZero() {
			return fmt.Errorf("pod %s is Running but its Create call failed", name)
		}
		seen[name] = t
		lat = append(lat, t.running.Sub(t.created).Seconds())
	}
	sort.Float64s(lat)
	s[key+".p50"], s[key+".p90"], s[key+".p99"] = pct(lat, 50), pct(lat, 90), pct(lat, 99)
	s[key+".last"] = last
	rt, err := c.runtimeTimeline(ctx, "bench")
	if err != nil {
		return fmt.Errorf("the runtime's view of the batch: %w", err)
	}
	return phaseFigures(key, seen, rt, s)
}

func pct(sorted []float64, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

// clean deletes the bench's namespace and waits until it is gone and the
// node has stopped every sandbox and container of it, so that the next
// measurement does not run beside the agent tearing the last batch down.
func (c *cluster) clean(ctx context.Context) error {
	_ = c.client.CoreV1().Namespaces().Delete(ctx, "bench", metav1.DeleteOptions{})
	sel := map[string]string{"io.kubernetes.pod.namespace": "bench"}
	return wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		if _, err := c.client.CoreV1().Namespaces().Get(ctx, "bench", metav1.GetOptions{}); err == nil {
			return false, nil
		}
		sbs, err := c.rs.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: sel,
			State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
		if err != nil || len(sbs) > 0 {
			return false, nil
		}
		cs, err := c.rs.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: sel,
			State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
		return err == nil && len(cs) == 0, nil
	})
}

func (c *cluster) sequential(ctx context.Context, n int, s sample) error {
	var lat []float64
	for i := 0; i < n; i++ {
		one := sample{}
		if err := c.startupBatch(ctx, 1, "one", one); err != nil {
			return err
		}
		lat = append(lat, one["one.p50"])
		if err := c.clean(ctx); err != nil {
			return err
		}
	}
	sort.Float64s(lat)
	s["sequential.p50"] = pct(lat, 50)
	return nil
}

// exits measures how long a container's exit takes to reach its pod's
// status: n pods whose containers exit at one instant known to the bench
// (each polls the clock every 0.1 s), each latency from that instant to the
// watch seeing the pod Succeeded. The agent learns of the exit from the
// runtime's event or its next relist.
func (c *cluster) exits(ctx context.Context, n int, s sample) error {
	w, err := c.benchNamespace(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	at := time.Now().Add(30 * time.Second).Truncate(time.Second)
	for i := 0; i < n; i++ {
		p := podSpec(fmt.Sprintf("exit-%03d", i))
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		p.Spec.Containers[0].Command = []string{"sh", "-c", fmt.Sprintf("while [ $(date +%%s) -lt %d ]; do sleep 0.1; done", at.Unix())}
		if _, err := c.client.CoreV1().Pods("bench").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	running, done := map[string]bool{}, map[string]time.Time{}
	timeout := time.After(2 * time.Minute)
	for len(done) < n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("the watch ended with %d of %d exits seen", len(done), n)
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			now := time.Now()
			switch p.Status.Phase {
			case corev1.PodRunning:
				running[p.Name] = true
			case corev1.PodSucceeded:
				if _, seen := done[p.Name]; !seen {
					if !running[p.Name] && now.Before(at) {
						return fmt.Errorf("pod %s ended before the exit instant", p.Name)
					}
					done[p.Name] = now
				}
			case corev1.PodFailed:
				return fmt.Errorf("pod %s failed: %s", p.Name, p.Status.Message)
			}
		case <-timeout:
			return fmt.Errorf("%d of %d exits seen after 2 minutes", len(done), n)
		}
	}
	if len(running) < n {
		return fmt.Errorf("only %d of %d pods were seen Running before they exited", len(running), n)
	}
	var lat []float64
	for _, t := range done {
		lat = append(lat, t.Sub(at).Seconds())
	}
	sort.Float64s(lat)
	s["exit.p50"], s["exit.p99"] = pct(lat, 50), pct(lat, 99)
	return c.clean(ctx)
}

// relistExits measures the exits again with Bosun relisting every second
// (EventedPLEG=false) instead of following the runtime's events, then
// restores the agent's configuration.
func (c *cluster) relistExits(ctx context.Context, root string, n int, s sample) error {
	path := c.env["CONFIG_FILE"]
	orig, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if strings.Contains(string(orig), "\nfeatureGates:") {
		return fmt.Errorf("%s sets featureGates already: cannot add EventedPLEG=false", path)
	}
	restart := func(config []byte) error {
		if err := os.WriteFile(path, config, 0o644); err != nil {
			return err
		}
		for _, cmd := range []string{"kill-agent", "start-agent"} {
			h := exec.CommandContext(ctx, filepath.Join(root, "_output", "bin", "cluster"), cmd)
			h.Dir = root
			if out, err := h.CombinedOutput(); err != nil {
				return fmt.Errorf("cluster %s: %v: %s", cmd, err, out)
			}
		}
		return nil
	}
	if err := restart(append(append([]byte{}, orig...), "featureGates:\n  EventedPLEG: false\n"...)); err != nil {
		return err
	}
	relist := sample{}
	err = c.exits(ctx, n, relist)
	if rerr := restart(orig); err == nil {
		err = rerr
	}
	s["exit.relist.p50"], s["exit.relist.p99"] = relist["exit.p50"], relist["exit.p99"]
	return err
}

// footprint samples the agent's RSS every second over window, and its CPU
// time and API requests over the same window.
func (c *cluster) footprint(window time.Duration, s sample, key string) error {
	pid := c.agentPid()
	before, err := c.scrape()
	if err != nil {
		return err
	}
	cpu0 := cpuTicks(pid)
	start := time.Now()
	var maxRSS, last float64
	for time.Since(start) < window {
		if last = rssMiB(pid); last == 0 {
			return fmt.Errorf("no RSS for the agent's pid %d: it exited", pid)
		}
		maxRSS = max(maxRSS, last)
		time.Sleep(time.Second)
	}
	s["rss"+key+".max"], s["rss"+key+".steady"] = maxRSS, last
	s["cpu"+key] = float64(cpuTicks(pid)-cpu0) / 100 / time.Since(start).Seconds() * 100
	after, err := c.scrape()
	if err != nil {
		return err
	}
	s["api.steady"+key], err = requestsBetween(before, after)
	requestsByMethod(before, after, "api.steady"+key, s)
	return err
}

func rssMiB(pid int) float64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
			return kb / 1024
		}
	}
	return 0
}

// cpuTicks is utime+stime of a process, in clock ticks (1/100 s).
func cpuTicks(pid int) int64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(string(data)[strings.LastIndexByte(string(data), ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

func (c *cluster) nodeURL(path string) string {
	return "https://" + net.JoinHostPort(c.env["NODE_IP"], "10250") + path
}

// scrape reads the agent's /metrics.
func (c *cluster) scrape() (scrape, error) {
	resp, err := c.node.Get(c.nodeURL("/metrics"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseScrape(resp.Body), nil
}

// runNodeAPI times the running cluster's node API paths three times, as a
// round times them, and prints each path's p50 and p99.
func runNodeAPI(ctx context.Context, root string) error {
	c, err := loadCluster(ctx, root)
	if err != nil {
		return err
	}
	for range 3 {
		s := sample{}
		if err := c.nodeAPI(s); err != nil {
			return err
		}
		for _, path := range nodePaths {
			fmt.Printf("%-18s p50 %7.2f ms  p99 %7.2f ms  %8.0f bytes\n", path, s["node."+path+".p50"], s["node."+path+".p99"], s["node."+path+".bytes"])
		}
	}
	return nil
}

// nodePaths are the node API endpoints the bench times.
var nodePaths = []string{"/pods", "/metrics", "/stats/summary", "/metrics/cadvisor", "/metrics/resource"}

// nodeAPI times each node API endpoint with 10 concurrent clients, 10
// requests each; any failed request fails the round.
func (c *cluster) nodeAPI(s sample) error {
	for _, path := range nodePaths {
		var mu sync.Mutex
		var lat []float64
		var bytes int64
		var failure error
		var wg sync.WaitGroup
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 10; j++ {
					t := time.Now()
					resp, err := c.node.Get(c.nodeURL(path))
					if err == nil {
						var n int64
						n, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err == nil && resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("%s", resp.Status)
						}
						bytes = n
					}
					mu.Lock()
					if err != nil {
						failure = fmt.Errorf("GET %s: %w", path, err)
					}
					lat = append(lat, time.Since(t).Seconds()*1000)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if failure != nil {
			return failure
		}
		sort.Float64s(lat)
		key := "node." + path
		s[key+".p50"], s[key+".p99"], s[key+".bytes"] = pct(lat, 50), pct(lat, 99), float64(bytes)
	}
	return nil
}

// streaming measures kubectl exec -- cat of 256 MiB and kubectl logs of a
// 256 MiB log.
func (c *cluster) streaming(ctx context.Context, s sample) error {
	const size = 256 << 20
	if err := c.startupBatch(ctx, 1, "stream", sample{}); err != nil {
		return err
	}
	kubectl := func(stdin io.Reader, args ...string) (int64, time.Duration, error) {
		cmd := exec.CommandContext(ctx, c.env["KUBECTL"], append([]string{"--kubeconfig", c.env["KUBECONFIG"], "-n", "bench"}, args...)...)
		cmd.Stdin = stdin
		out, err := cmd.StdoutPipe()
		if err != nil {
			return 0, 0, err
		}
		t := time.Now()
		if err := cmd.Start(); err != nil {
			return 0, 0, err
		}
		n, _ := io.Copy(io.Discard, out)
		err = cmd.Wait()
		return n, time.Since(t), err
	}
	if n, d, err := kubectl(io.LimitReader(zeros{}, size), "exec", "-i", "p-000", "--", "cat"); err == nil && n == size {
		s["stream.exec"] = float64(n) / (1 << 20) / d.Seconds()
	}
	writer := podSpec("logger")
	writer.Spec.Containers[0].Command = []string{"sh", "-c", "head -c 268435456 /dev/zero | tr '\\0' 'a' | fold -w 1023; touch /tmp/done; sleep 3600"}
	if _, err := c.client.CoreV1().Pods("bench").Create(ctx, writer, metav1.CreateOptions{}); err != nil {
		return err
	}
	written := wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, _, err := kubectl(nil, "exec", "logger", "--", "test", "-f", "/tmp/done")
		return err == nil, nil
	})
	if written != nil {
		return fmt.Errorf("the 256 MiB log was not written within 5 minutes: %w", written)
	}
	n, d, err := kubectl(nil, "logs", "logger")
	if err != nil || n < size {
		return fmt.Errorf("kubectl logs of the 256 MiB log: %d bytes, %v (a rotated log is read in part: the bench's nodes set containerLogMaxSize)", n, err)
	}
	s["stream.logs"] = float64(n) / (1 << 20) / d.Seconds()
	s["stream.logs.bytes"] = float64(n)
	return nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// profileBatch starts the big batch once more on a clean node running
// agent while the agent's own CPU profiler (/debug/pprof/profile, behind
// the node API's authentication and authorization) records, and returns
// the profile's heaviest functions as go tool pprof prints them.
func profileBatch(ctx context.Context, root, agent string, p plan) (string, error) {
	if err := up(root, agent, p.maxPods()); err != nil {
		return "", err
	}
	c, err := loadCluster(ctx, root)
	if err != nil {
		return "", err
	}
	file := filepath.Join(root, "_output", "bench", agent+"-cpu.pprof")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return "", err
	}
	done := c.profile(30*time.Second, file)
	time.Sleep(time.Second)
	if err := c.startupBatch(ctx, p.big, "profiled", sample{}); err != nil {
		return "", err
	}
	if err := <-done; err != nil {
		return "", err
	}
	if err := c.clean(ctx); err != nil {
		return "", err
	}
	return topOf(ctx, file)
}

// topOf is profile file's heaviest functions by cumulative time, as go tool
// pprof prints them.
func topOf(ctx context.Context, file string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-cum", "-nodecount=25", file).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %v\n%s", err, out)
	}
	return string(out), nil
}

// profile records the agent's CPU profile for d into file, through the node
// API's /debug/pprof/profile; the channel says when it is written.
func (c *cluster) profile(d time.Duration, file string) <-chan error {
	done := make(chan error, 1)
	go func() {
		client := *c.node
		client.Timeout = d + time.Minute
		resp, err := client.Get(c.nodeURL(fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds()))))
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("GET /debug/pprof/profile: %s", resp.Status)
			return
		}
		data, err := io.ReadAll(resp.Body)
		if err == nil {
			err = os.WriteFile(file, data, 0o644)
		}
		done <- err
	}()
	return done
}

// runWindow measures the running cluster's agent over the footprint window
// that follows the big batch, as a round measures it, with the agent's CPU
// profile over the same window (_output/bench/window.pprof): the figure the
// CPU target is read from, for one agent, without a whole run.
func runWindow(ctx context.Context, root string, p plan) error {
	c, err := loadCluster(ctx, root)
	if err != nil {
		return err
	}
	_ = c.clean(ctx) // an earlier run's namespace
	if err := c.startupBatch(ctx, p.big, "window", sample{}); err != nil {
		return err
	}
	file := filepath.Join(root, "_output", "bench", "window.pprof")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	done := c.profile(p.window, file)
	s := sample{}
	if err := c.footprint(p.window, s, "window"); err != nil {
		return err
	}
	if err := <-done; err != nil {
		return err
	}
	top, err := topOf(ctx, file)
	if err != nil {
		return err
	}
	fmt.Print(top)
	fmt.Printf("agent CPU over the %s after %d pods were Running: %.2f %% of a core; RSS %.1f MiB at most; %v API requests\n",
		p.window, p.big, s["cpuwindow"], s["rsswindow.max"], s["api.steadywindow"])
	return c.clean(ctx)
}
