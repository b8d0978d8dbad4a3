//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// metricGaps are the families the upstream kubelet serves on this machine
// and Bosun does not, each with why. Any other family upstream serves and
// Bosun lacks fails the test.
var metricGaps = map[string]string{
	// cAdvisor fills these from its load reader (netlink taskstats), which
	// the kubelet leaves off: upstream serves them as constant zeros.
	"container_cpu_load_average_10s":   "upstream's load reader is off: constant 0",
	"container_cpu_load_d_average_10s": "upstream's load reader is off: constant 0",
	"container_tasks_state":            "upstream's load reader is off: constant 0",
}

// families lists the metric families (from # TYPE lines) of a scrape.
func familyNames(text string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, _, ok := strings.Cut(rest, " "); ok {
				out[name] = true
			}
		}
	}
	return out
}

// A drop-in serves what dashboards, alerts and the metrics server read:
// with the same workload on a Bosun node and an upstream kubelet node of one
// cluster, every family upstream serves on /metrics/cadvisor,
// /metrics/resource and /metrics/probes, Bosun serves too (but for
// metricGaps). /metrics, the agents' own instrumentation, is compared and
// logged.
func TestClusterMetricFamiliesMatchUpstream(t *testing.T) {
	env := loadEnv(t)
	names := clusterNodes(t, env)
	if agents := strings.Fields(env["NODE_AGENTS"]); len(agents) < 2 || agents[0] != "bosun" || agents[1] != "upstream" {
		t.Skipf("node agents %v: the comparison needs node 1 Bosun and node 2 the upstream kubelet (make up KUBELET=mixed NODES=2)", agents)
	}
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	// The same pod on each node: a CPU limit (CFS figures), a liveness and
	// a readiness probe (probe figures), some files and sockets.
	for i, node := range names[:2] {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("metrics-%d", i+1)},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
				Name: "netexec", Image: agnhost, Args: []string{"netexec", "--http-port=8080"},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
				LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}, PeriodSeconds: 2},
			}}},
		}
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range names[:2] {
		waitPod(t, cs, ns, fmt.Sprintf("metrics-%d", i+1), 90*time.Second, "ready", podReady)
	}
	// Both agents have collected the pods (cAdvisor's housekeeping is 10 s)
	// and run each probe a few times.
	time.Sleep(15 * time.Second)

	bodies := map[string]string{}
	scrape := func(node, path string) map[string]bool {
		t.Helper()
		body, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", node, "proxy", path).DoRaw(ctx)
		if err != nil {
			t.Fatalf("node %s %s: %v", node, path, err)
		}
		bodies[node+" "+path] = string(body)
		return familyNames(string(body))
	}
	bosun, upstream := names[0], names[1]
	defer func() {
		if err := writeFamilyTable(env, bodies, bosun, upstream); err != nil {
			t.Errorf("writing the families table: %v", err)
		}
	}()
	for _, path := range []string{"metrics/cadvisor", "metrics/resource", "metrics/probes", "metrics"} {
		b, u := scrape(bosun, path), scrape(upstream, path)
		var missing, known, extra []string
		for name := range u {
			switch {
			case b[name]:
			case metricGaps[name] != "":
				known = append(known, name)
			default:
				missing = append(missing, name)
			}
		}
		for name := range b {
			if !u[name] {
				extra = append(extra, name)
			}
		}
		sort.Strings(missing)
		sort.Strings(extra)
		t.Logf("/%s: upstream %d families, Bosun %d; known gaps %v; Bosun only %v", path, len(u), len(b), known, extra)
		if len(missing) == 0 {
			continue
		}
		if path == "metrics" {
			t.Logf("/metrics: upstream's own instrumentation that Bosun does not serve (%d): %s", len(missing), strings.Join(missing, " "))
			continue
		}
		t.Errorf("/%s: Bosun lacks %d families upstream serves: %s", path, len(missing), strings.Join(missing, " "))
	}
}

var labelName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)

// familyLabels maps each family of a scrape to its type and the label names
// its samples carry (le and quantile left out).
func familyLabels(text string) map[string][2]string {
	types := map[string]string{}
	labels := map[string]map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, typ, ok := strings.Cut(rest, " "); ok {
				types[name], labels[name] = typ, map[string]bool{}
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		name = strings.Fields(name)[0]
		family := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base := strings.TrimSuffix(name, suffix); base != name && types[base] != "" {
				family = base
			}
		}
		if labels[family] == nil {
			continue
		}
		for _, m := range labelName.FindAllStringSubmatch(rest, -1) {
			if m[1] != "le" && m[1] != "quantile" {
				labels[family][m[1]] = true
			}
		}
	}
	out := map[string][2]string{}
	for name, typ := range types {
		var ls []string
		for l := range labels[name] {
			ls = append(ls, l)
		}
		sort.Strings(ls)
		out[name] = [2]string{typ, strings.Join(ls, ", ")}
	}
	return out
}

// writeFamilyTable writes _output/metrics/families.md: each family of
// /metrics/cadvisor, /metrics/resource and /metrics/probes, with its type
// and labels, and which agent served it on the same pod (make metrics-doc
// copies it to docs/metrics-families.md).
func writeFamilyTable(env clusterEnv, bodies map[string]string, bosun, upstream string) error {
	if len(bodies) < 8 {
		return nil // a scrape failed: the test says so, no table
	}
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	var b strings.Builder
	b.WriteString("# The node metrics families, Bosun and the upstream kubelet side by side\n\n")
	fmt.Fprintf(&b, "Generated by e2e `TestClusterMetricFamiliesMatchUpstream` (`make metrics-doc`) on a mixed two-node cluster: the same pod on node %s (Bosun) "+
		"and node %s (the upstream kubelet v1.36.3), each node's endpoints scraped through the apiserver. Bosun commit %s, runtime %s, %s. "+
		"Labels are those the samples carried. Nothing here is typed by hand.\n",
		bosun, upstream, strings.TrimSpace(string(commit)), env["RUNTIME"], time.Now().UTC().Format("2006-01-02"))
	for _, path := range []string{"metrics/cadvisor", "metrics/resource", "metrics/probes"} {
		bf, uf := familyLabels(bodies[bosun+" "+path]), familyLabels(bodies[upstream+" "+path])
		names := map[string]bool{}
		for n := range bf {
			names[n] = true
		}
		for n := range uf {
			names[n] = true
		}
		var sorted []string
		for n := range names {
			sorted = append(sorted, n)
		}
		sort.Strings(sorted)
		fmt.Fprintf(&b, "\n## /%s\n\n| family | type | labels (Bosun) | labels (upstream) | Bosun | upstream |\n|---|---|---|---|---|---|\n", path)
		yes := func(ok bool) string {
			if ok {
				return "yes"
			}
			return "no"
		}
		for _, n := range sorted {
			bl, bok := bf[n]
			ul, uok := uf[n]
			typ := bl[0]
			if typ == "" {
				typ = ul[0]
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s |\n", n, typ, bl[1], ul[1], yes(bok), yes(uok))
		}
	}
	dir := filepath.Join("..", "..", "_output", "metrics")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "families.md"), []byte(b.String()), 0o644)
}
