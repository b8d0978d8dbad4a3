package stats

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bosun-dev/bosun/internal/cgroupstats"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

func fakeRuntime(cpu uint64) *critest.FakeRuntimeService {
	rt := critest.NewFakeRuntimeService()
	labels := map[string]string{"io.kubernetes.pod.uid": "uid-1", "io.kubernetes.pod.name": "web", "io.kubernetes.pod.namespace": "ns"}
	rt.SetFakeSandboxes([]*critest.FakePodSandbox{{PodSandboxStatus: runtimeapi.PodSandboxStatus{
		Id: "sb1", State: runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: time.Unix(100, 0).UnixNano(), Labels: labels,
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "ns", Uid: "uid-1"}}}})
	ctrLabels := map[string]string{"io.kubernetes.container.name": "app"}
	for k, v := range labels {
		ctrLabels[k] = v
	}
	rt.SetFakeContainers([]*critest.FakeContainer{{SandboxID: "sb1", ContainerStatus: runtimeapi.ContainerStatus{
		Id: "c1", State: runtimeapi.ContainerState_CONTAINER_RUNNING, CreatedAt: time.Unix(200, 0).UnixNano(), Labels: ctrLabels,
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"}, Image: &runtimeapi.ImageSpec{Image: "busybox"}}}})
	rt.SetFakeContainerStats([]*runtimeapi.ContainerStats{{
		Attributes:    &runtimeapi.ContainerAttributes{Id: "c1", Metadata: &runtimeapi.ContainerMetadata{Name: "app"}},
		Cpu:           &runtimeapi.CpuUsage{UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cpu}},
		Memory:        &runtimeapi.MemoryUsage{WorkingSetBytes: &runtimeapi.UInt64Value{Value: 4 << 20}, UsageBytes: &runtimeapi.UInt64Value{Value: 6 << 20}},
		WritableLayer: &runtimeapi.FilesystemUsage{UsedBytes: &runtimeapi.UInt64Value{Value: 4096}},
		Swap:          &runtimeapi.SwapUsage{SwapUsageBytes: &runtimeapi.UInt64Value{Value: 1024}, SwapAvailableBytes: &runtimeapi.UInt64Value{Value: 2048}},
	}})
	return rt
}

func TestSummaryAndMetrics(t *testing.T) {
	rt := fakeRuntime(2e9)
	p := &Provider{Runtime: rt, NodeName: "node-1", RootDir: t.TempDir(), LogDir: t.TempDir()}
	ctx := context.Background()
	sum, err := p.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Node.NodeName != "node-1" || sum.Node.CPU == nil || *sum.Node.Memory.WorkingSetBytes == 0 || *sum.Node.Fs.CapacityBytes == 0 {
		t.Errorf("node stats %+v", sum.Node)
	}
	if len(sum.Pods) != 1 || sum.Pods[0].PodRef.Name != "web" || len(sum.Pods[0].Containers) != 1 {
		t.Fatalf("pods %+v", sum.Pods)
	}
	c := sum.Pods[0].Containers[0]
	if c.Name != "app" || *c.CPU.UsageCoreNanoSeconds != 2e9 || *c.Memory.WorkingSetBytes != 4<<20 || *c.Rootfs.UsedBytes != 4096 || c.CPU.UsageNanoCores != nil {
		t.Errorf("container stats %+v", c)
	}
	if sw := c.Swap; sw == nil || *sw.SwapUsageBytes != 1024 || *sw.SwapAvailableBytes != 2048 {
		t.Errorf("container swap %+v", sw)
	}
	if sw := sum.Pods[0].Swap; sw == nil || *sw.SwapUsageBytes != 1024 {
		t.Errorf("pod swap %+v", sw)
	}
	if sum.Node.Swap == nil || sum.Node.Swap.SwapUsageBytes == nil {
		t.Errorf("node swap %+v", sum.Node.Swap)
	}
	var first bytes.Buffer
	if err := p.WriteResourceMetrics(ctx, &first); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`container_swap_usage_bytes{container="app",namespace="ns",pod="web"} 1024 `,
		`container_swap_limit_bytes{container="app",namespace="ns",pod="web"} 3072 `, `pod_swap_usage_bytes{namespace="ns",pod="web"} 1024 `,
		"# TYPE node_swap_usage_bytes gauge\nnode_swap_usage_bytes "} {
		if !strings.Contains(first.String(), want) {
			t.Errorf("resource metrics lack %q:\n%s", want, first.String())
		}
	}
	// A second reading gives a rate.
	time.Sleep(100 * time.Millisecond)
	rt.SetFakeContainerStats([]*runtimeapi.ContainerStats{{Attributes: &runtimeapi.ContainerAttributes{Id: "c1"},
		Cpu: &runtimeapi.CpuUsage{UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: 2e9 + 5e7}}}})
	sum, _ = p.Summary(ctx)
	if nc := sum.Pods[0].Containers[0].CPU.UsageNanoCores; nc == nil || *nc == 0 || *nc > 1e9 {
		t.Errorf("nano cores %v", nc)
	}
	var res, cad bytes.Buffer
	if err := p.WriteResourceMetrics(ctx, &res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`container_cpu_usage_seconds_total{container="app",namespace="ns",pod="web"} 2.05 `,
		"# TYPE node_memory_working_set_bytes gauge", `pod_cpu_usage_seconds_total{namespace="ns",pod="web"} 2.05`, "resource_scrape_error 0"} {
		if !strings.Contains(res.String(), want) {
			t.Errorf("resource metrics lack %q:\n%s", want, res.String())
		}
	}
	if err := p.WriteCadvisorMetrics(ctx, &cad); err != nil {
		t.Fatal(err)
	}
	// Without a cgroup reader there are no container rows, only the machine.
	if strings.Contains(cad.String(), `container="app"`) || !strings.Contains(cad.String(), "machine_cpu_cores{") {
		t.Errorf("cadvisor metrics without cgroups:\n%s", cad.String())
	}
	// A response that takes gzip gets the same page compressed.
	gz := &gzipTaker{}
	if err := p.WriteCadvisorMetrics(ctx, gz); err != nil {
		t.Fatal(err)
	}
	if gz.plain.Len() != 0 || len(gz.bodies) != 1 {
		t.Fatalf("gzip response: %d plain bytes, %d compressed bodies", gz.plain.Len(), len(gz.bodies))
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz.bodies[0]))
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if string(unzipped) != cad.String() {
		t.Errorf("the compressed page differs from the plain one:\n%s\n---\n%s", unzipped, cad.String())
	}
}

// gzipTaker is a response that takes compressed bodies.
type gzipTaker struct {
	plain  bytes.Buffer
	bodies [][]byte
}

func (g *gzipTaker) Write(p []byte) (int, error) { return g.plain.Write(p) }
func (g *gzipTaker) WriteGzip(body []byte) error {
	g.bodies = append(g.bodies, body)
	return nil
}

// writeFiles makes a folder with files.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// cgroupFixture is a Provider on a v1 cgroup tree in a temporary folder:
// pod poduid-1 (burstable) with sandbox sb1 and container c1.
func cgroupFixture(t *testing.T) *Provider {
	t.Helper()
	root := t.TempDir()
	pod := "/kubepods/burstable/poduid-1"
	for cg, usage := range map[string]string{"/": "9000000000", pod: "3000000000", pod + "/sb1": "1000000000", pod + "/c1": "2000000000", "/kubepods": "3000000000", "/kubepods/burstable": "3000000000"} {
		writeFiles(t, filepath.Join(root, "cpuacct", cg), map[string]string{"cpuacct.usage": usage, "cpuacct.stat": "user 150\nsystem 50\n"})
		writeFiles(t, filepath.Join(root, "cpu", cg), map[string]string{"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
			"cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n"})
		writeFiles(t, filepath.Join(root, "memory", cg), map[string]string{"memory.usage_in_bytes": "8388608", "memory.limit_in_bytes": "9223372036854771712",
			"memory.stat": "total_cache 1048576\ntotal_rss 4194304\ntotal_inactive_file 524288\npgfault 10\ntotal_pgfault 20\n"})
	}
	// The container has a CPU limit and two processes: this test's own.
	writeFiles(t, filepath.Join(root, "cpu", pod, "c1"), map[string]string{"cpu.cfs_quota_us": "50000", "cpu.stat": "nr_periods 12\nnr_throttled 3\nthrottled_time 1500000000\n",
		"cgroup.procs": strconv.Itoa(os.Getpid()) + "\n"})
	writeFiles(t, filepath.Join(root, "memory", pod, "c1"), map[string]string{"memory.limit_in_bytes": "67108864",
		"memory.memsw.limit_in_bytes": "67108864", "memory.memsw.usage_in_bytes": "9437184"})
	writeFiles(t, filepath.Join(root, "pids", pod, "c1"), map[string]string{"pids.current": "5", "pids.max": "max"})

	rt := fakeRuntime(2e9)
	rt.SetFakeContainerStats([]*runtimeapi.ContainerStats{{Attributes: &runtimeapi.ContainerAttributes{Id: "c1"},
		Cpu: &runtimeapi.CpuUsage{UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: 2e9}}}}) // no swap from the runtime
	return &Provider{Runtime: rt, NodeName: "node-1", RootDir: t.TempDir(), LogDir: t.TempDir(), Cgroups: cgroupstats.New(root),
		cgroupOf: func(id string) string { return pod + "/" + id }, swapOn: func() bool { return true }}
}

func TestCadvisorMetricsFromCgroups(t *testing.T) {
	p := cgroupFixture(t)
	var out bytes.Buffer
	if err := p.WriteCadvisorMetrics(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if os.Getenv("DUMP") != "" {
		t.Log(text)
	}
	app := `container="app",id="/kubepods/burstable/poduid-1/c1",image="busybox",name="c1",namespace="ns",pod="web"`
	podRow := `container="",id="/kubepods/burstable/poduid-1",image="",name="",namespace="ns",pod="web"`
	for _, want := range []string{
		`container_cpu_usage_seconds_total{container="app",cpu="total",id="/kubepods/burstable/poduid-1/c1",image="busybox",name="c1",namespace="ns",pod="web"} 2 `,
		`container_cpu_usage_seconds_total{container="",cpu="total",id="/kubepods/burstable/poduid-1",image="",name="",namespace="ns",pod="web"} 3 `,
		`container_cpu_usage_seconds_total{container="",cpu="total",id="/kubepods/burstable",image="",name="",namespace="",pod=""} 3 `,
		`container_cpu_usage_seconds_total{container="",cpu="total",id="/",image="",name="",namespace="",pod=""} 9 `,
		`container_cpu_usage_seconds_total{container="",cpu="total",id="/kubepods/burstable/poduid-1/sb1",image="",name="sb1",namespace="ns",pod="web"} 1 `,
		`container_cpu_user_seconds_total{` + app + `} 1.5 `,
		`container_cpu_cfs_throttled_periods_total{` + app + `} 3 `,
		`container_cpu_cfs_throttled_seconds_total{` + app + `} 1.5 `,
		`container_spec_cpu_quota{` + app + `} 50000` + "\n",
		`container_spec_memory_limit_bytes{` + app + `} 6.7108864e+07` + "\n",
		`container_spec_memory_limit_bytes{` + podRow + `} 0` + "\n",
		`container_memory_working_set_bytes{` + app + `} 7.864320e+06`,
		`container_memory_cache{` + app + `} 1.048576e+06 `,
		`container_memory_failures_total{container="app",failure_type="pgfault",id="/kubepods/burstable/poduid-1/c1",image="busybox",name="c1",namespace="ns",pod="web",scope="hierarchy"} 20 `,
		`container_health_state{` + app + `} -1 `,
		`machine_nvm_capacity{boot_id=`,
		`container_threads{` + app + `} 5 `,
		`container_processes{` + app + `} 1 `,
		// The pod's row counts its own processes (none: they are its
		// containers'), as cAdvisor does.
		`container_processes{` + podRow + `} 0 `,
		`container_file_descriptors{` + podRow + `} 0 `,
		`container_start_time_seconds{` + app + `} 200` + "\n",
		"# TYPE container_cpu_usage_seconds_total counter\n",
		`container_scrape_error 0`,
	} {
		want = strings.Replace(want, "7.864320e+06", "7.86432e+06", 1)
		if !strings.Contains(text, want) {
			t.Errorf("cadvisor metrics lack %q", want)
		}
	}
	// Swap from the cgroup when the runtime does not say: memsw usage 9 MiB
	// minus usage 8 MiB, of a memsw limit of 64 MiB.
	var res bytes.Buffer
	if err := p.WriteResourceMetrics(context.Background(), &res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`container_swap_usage_bytes{container="app",namespace="ns",pod="web"} 1.048576e+06 `,
		`container_swap_limit_bytes{container="app",namespace="ns",pod="web"} 6.7108864e+07 `, `pod_swap_usage_bytes{namespace="ns",pod="web"} 1.048576e+06 `} {
		if !strings.Contains(res.String(), want) {
			t.Errorf("resource metrics lack %q:\n%s", want, res.String())
		}
	}
	// The pod without a CPU limit has no CFS figures; families are sorted.
	if strings.Contains(text, `container_cpu_cfs_periods_total{`+podRow) {
		t.Error("CFS figures for a cgroup without a quota")
	}
	if i, j := strings.Index(text, "# HELP container_cpu_usage_seconds_total"), strings.Index(text, "# HELP container_memory_cache"); i < 0 || j < 0 || i > j {
		t.Error("families are not sorted by name")
	}
	// Only the machine's row has ulimits (PID 1's), as cAdvisor.
	if strings.Contains(text, `container_ulimits_soft{`+app[:len(app)-len(`,namespace="ns",pod="web"`)]) {
		t.Error("a container's row has ulimits")
	}
	if m := regexp.MustCompile(`container_file_descriptors\{` + regexp.QuoteMeta(app) + `\} (\d+) `).FindStringSubmatch(text); m == nil || m[1] == "0" {
		t.Errorf("open files of the container's process (this test): %v", m)
	}
}

// firstPodCPU reads the first pod's CPU time from p's summary, after a
// first reading of 2e9 from rt, whose figure it then moves to 3e9.
func firstPodCPU(t *testing.T, p *Provider, rt *critest.FakeRuntimeService) func() uint64 {
	cpuOf := func() uint64 {
		t.Helper()
		sum, err := p.Summary(context.Background())
		if err != nil || len(sum.Pods) == 0 {
			t.Fatalf("summary: %v %+v", err, sum)
		}
		return *sum.Pods[0].CPU.UsageCoreNanoSeconds
	}
	if got := cpuOf(); got != 2e9 {
		t.Fatalf("first reading %d", got)
	}
	rt.SetFakeContainerStats([]*runtimeapi.ContainerStats{{Attributes: &runtimeapi.ContainerAttributes{Id: "c1"},
		Cpu: &runtimeapi.CpuUsage{UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: 3e9}}}})
	return cpuOf
}

// With the agent telling it of container changes, a request within MaxAge
// asks the runtime nothing, and one after a change collects anew.
func TestCollectionReusedUntilToldOfAChange(t *testing.T) {
	rt := fakeRuntime(2e9)
	p := &Provider{Runtime: rt, NodeName: "node-1", RootDir: t.TempDir(), LogDir: t.TempDir(), MaxAge: time.Minute, ChangesFollowed: true}
	cpuOf := firstPodCPU(t, p, rt)
	listed := func() int { return strings.Count(strings.Join(rt.GetCalls(), " "), "ListContainers") }
	n := listed()
	if got := cpuOf(); got != 2e9 || listed() != n {
		t.Errorf("no change within MaxAge: %d with %d more container lists, want the kept collection's 2e9 and none", got, listed()-n)
	}
	p.ContainersChanged()
	if got := cpuOf(); got != 3e9 {
		t.Errorf("after a change: %d, want a new collection's 3e9", got)
	}
}

func TestCollectionReusedWhileTheSameContainersRun(t *testing.T) {
	rt := fakeRuntime(2e9)
	p := &Provider{Runtime: rt, NodeName: "node-1", RootDir: t.TempDir(), LogDir: t.TempDir(), MaxAge: time.Minute}
	ctx := context.Background()
	cpuOf := firstPodCPU(t, p, rt)
	if got := cpuOf(); got != 2e9 {
		t.Errorf("same containers within MaxAge: %d, want the kept collection's 2e9", got)
	}
	// A container that starts makes the next request collect again.
	rt.SetFakeContainers([]*critest.FakeContainer{{SandboxID: "sb1", ContainerStatus: runtimeapi.ContainerStatus{
		Id: "c1", State: runtimeapi.ContainerState_CONTAINER_RUNNING, Labels: map[string]string{"io.kubernetes.pod.uid": "uid-1", "io.kubernetes.pod.name": "web", "io.kubernetes.pod.namespace": "ns"},
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}}, {SandboxID: "sb1", ContainerStatus: runtimeapi.ContainerStatus{
		Id: "c2", State: runtimeapi.ContainerState_CONTAINER_RUNNING, Labels: map[string]string{"io.kubernetes.pod.uid": "uid-1", "io.kubernetes.pod.name": "web", "io.kubernetes.pod.namespace": "ns"},
		Metadata: &runtimeapi.ContainerMetadata{Name: "sidecar"}}}})
	if got := cpuOf(); got != 3e9 {
		t.Errorf("after a container started: %d, want a new collection's 3e9", got)
	}
	// A request that waited while another collection began after it asked
	// takes that collection; one asked later collects.
	calls := func() int { return strings.Count(strings.Join(rt.GetCalls(), " "), "ListContainerStats") }
	n := calls()
	if s, err := p.refresh(ctx, time.Now().Add(-time.Hour)); err != nil || s != p.last || calls() != n {
		t.Errorf("a request older than the last collection collected again: %v, %d calls after %d", err, calls(), n)
	}
	if _, err := p.refresh(ctx, time.Now()); err != nil || calls() != n+1 {
		t.Errorf("a request newer than the last collection did not collect: %v, %d calls after %d", err, calls(), n)
	}
	// Run keeps the collection fresh.
	rt.SetFakeContainerStats([]*runtimeapi.ContainerStats{{Attributes: &runtimeapi.ContainerAttributes{Id: "c1"},
		Cpu: &runtimeapi.CpuUsage{UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: 4e9}}}})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go p.Run(rctx, 20*time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for cpuOf() != 4e9 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not refresh the collection")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A page is rendered once per collection, however many requests it answers.
func TestPageRenderedOncePerCollection(t *testing.T) {
	var pg page
	renders := 0
	render := func(s *snapshot, w io.Writer) error {
		renders++
		_, err := fmt.Fprintf(w, "at %d\n", s.at.UnixNano())
		return err
	}
	first, second := &snapshot{at: time.Unix(1, 0)}, &snapshot{at: time.Unix(2, 0)}
	var out strings.Builder
	for _, s := range []*snapshot{first, first, first, second, second} {
		out.Reset()
		if err := pg.write(&out, s, render); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("at %d\n", s.at.UnixNano()); out.String() != want {
			t.Errorf("page %q, want %q", out.String(), want)
		}
	}
	if renders != 2 {
		t.Errorf("%d renderings for two collections", renders)
	}
}
