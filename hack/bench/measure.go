package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const busybox = "registry.k8s.io/e2e-test-images/busybox:1.37.0-1"

// cluster is what a round needs of the running cluster.
type cluster struct {
	env    map[string]string
	client kubernetes.Interface
	node   *http.Client // the node API with the admin certificate
}

func loadCluster(root string) (*cluster, error) {
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
	node := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 20,
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	return &cluster{env: env, client: cs, node: node}, nil
}

func (c *cluster) agentPid() int {
	data, _ := os.ReadFile(c.env["AGENT_PID"])
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

func measureAgent(ctx context.Context, root, agent string, window time.Duration, big int) (sample, error) {
	if err := up(root, agent); err != nil {
		return nil, err
	}
	c, err := loadCluster(root)
	if err != nil {
		return nil, err
	}
	s := sample{}
	time.Sleep(5 * time.Second) // let the fresh agent settle
	api0 := c.apiRequests()
	c.footprint(window, s, "0")
	s["api.steady"] = c.apiRequests() - api0
	if err := c.startupBatch(ctx, 20, "startup20", s); err != nil {
		return nil, err
	}
	c.footprint(window, s, "20")
	c.nodeAPI(s, "20")
	if err := c.clean(ctx); err != nil {
		return nil, err
	}
	api1 := c.apiRequests()
	if err := c.startupBatch(ctx, big, "startupBig", s); err != nil {
		return nil, err
	}
	s["api.batch"] = c.apiRequests() - api1
	c.footprint(window, s, "Big")
	c.nodeAPI(s, "")
	if err := c.clean(ctx); err != nil {
		return nil, err
	}
	if err := c.sequential(ctx, 10, s); err != nil {
		return nil, err
	}
	if err := c.streaming(ctx, s); err != nil {
		return nil, err
	}
	return s, c.clean(ctx)
}

func podSpec(name string) *corev1.Pod {
	zero := int64(0)
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bench"}, Spec: corev1.PodSpec{
		TerminationGracePeriodSeconds: &zero,
		Containers:                    []corev1.Container{{Name: "c", Image: busybox, Command: []string{"sleep", "3600"}}},
	}}
}

// startupBatch creates n pods at once and records, per pod, the time from
// its Create call to Running seen through a watch.
func (c *cluster) startupBatch(ctx context.Context, n int, key string, s sample) error {
	if _, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts("bench").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	w, err := c.client.CoreV1().Pods("bench").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	defer func() { w.Stop() }()
	started := map[string]time.Time{}
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
				started[name] = t
				mu.Unlock()
			}
		}(i)
	}
	var lat []float64
	seen := map[string]bool{}
	record := func(p *corev1.Pod) {
		if p.Status.Phase != corev1.PodRunning || seen[p.Name] {
			return
		}
		now := time.Now()
		mu.Lock()
		t0, ok := started[p.Name]
		mu.Unlock()
		if !ok {
			t0 = begin
		}
		seen[p.Name] = true
		lat = append(lat, now.Sub(t0).Seconds())
	}
	timeout := time.After(10 * time.Minute)
	for len(lat) < n {
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
			return fmt.Errorf("%d of %d pods Running after 10 minutes", len(lat), n)
		}
	}
	wg.Wait()
	sort.Float64s(lat)
	s[key+".p50"], s[key+".p90"], s[key+".p99"] = pct(lat, 50), pct(lat, 90), pct(lat, 99)
	s[key+".last"] = time.Since(begin).Seconds()
	return nil
}

func pct(sorted []float64, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func (c *cluster) clean(ctx context.Context) error {
	_ = c.client.CoreV1().Namespaces().Delete(ctx, "bench", metav1.DeleteOptions{})
	return wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.client.CoreV1().Namespaces().Get(ctx, "bench", metav1.GetOptions{})
		return err != nil, nil
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

// footprint samples the agent's RSS every second over window and its CPU
// time over the same window.
func (c *cluster) footprint(window time.Duration, s sample, key string) {
	pid := c.agentPid()
	cpu0 := cpuTicks(pid)
	start := time.Now()
	var maxRSS, last float64
	for time.Since(start) < window {
		last = rssMiB(pid)
		maxRSS = max(maxRSS, last)
		time.Sleep(time.Second)
	}
	s["rss"+key+".max"], s["rss"+key+".steady"] = maxRSS, last
	s["cpu"+key] = float64(cpuTicks(pid)-cpu0) / 100 / time.Since(start).Seconds() * 100
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

// apiRequests sums the agent's rest_client_requests_total.
func (c *cluster) apiRequests() float64 {
	resp, err := c.node.Get(c.nodeURL("/metrics"))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "rest_client_requests_total{") {
			if f := strings.Fields(line); len(f) >= 2 {
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				sum += v
			}
		}
	}
	return sum
}

// nodeAPI measures node API endpoints with 10 concurrent clients.
func (c *cluster) nodeAPI(s sample, suffix string) {
	for _, path := range []string{"/pods", "/metrics", "/stats/summary", "/metrics/cadvisor", "/metrics/resource"} {
		var mu sync.Mutex
		var lat []float64
		var bytes int64
		ok := true
		var wg sync.WaitGroup
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 10; j++ {
					t := time.Now()
					resp, err := c.node.Get(c.nodeURL(path))
					if err != nil {
						continue
					}
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					mu.Lock()
					if resp.StatusCode != 200 {
						ok = false
					}
					lat = append(lat, time.Since(t).Seconds()*1000)
					bytes = n
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if !ok || len(lat) == 0 {
			continue // the agent lacks the endpoint: n/a
		}
		sort.Float64s(lat)
		key := "node." + path
		if suffix != "" {
			key += "@" + suffix
		}
		s[key+".p50"], s[key+".p99"], s[key+".bytes"] = pct(lat, 50), pct(lat, 99), float64(bytes)
	}
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
	_ = wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, _, err := kubectl(nil, "exec", "logger", "--", "test", "-f", "/tmp/done")
		return err == nil, nil
	})
	if n, d, err := kubectl(nil, "logs", "logger"); err == nil && n > 0 {
		s["stream.logs"] = float64(n) / (1 << 20) / d.Seconds()
		s["stream.logs.bytes"] = float64(n)
	}
	return nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
