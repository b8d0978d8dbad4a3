// Command bench measures the node agents side by side on the local cluster:
// Bosun and the upstream kubelet, swapped between rounds (A/B/A/B, the first
// round of each discarded as warm-up), each from a clean node, plus the
// floor of starting the same pods straight through CRI. It writes
// _output/bench/report.md and report.json with each figure for both agents
// and the ratio Bosun/upstream.
//
// Environment: ROUNDS (measured rounds per agent, default 3), WINDOW (the
// CPU/API measuring window, default 60s), BIG (the big batch, default 100).
package main

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
	"time"
)

// sample is one agent's figures in one round, by metric name.
type sample map[string]float64

func main() {
	ctx := context.Background()
	rounds := envInt("ROUNDS", 3)
	window := envDuration("WINDOW", 60*time.Second)
	big := envInt("BIG", 100)
	root, _ := os.Getwd()
	results := map[string][]sample{}
	floor, err := measureFloor(ctx, root, big)
	if err != nil {
		fail(err)
	}
	for r := 0; r <= rounds; r++ {
		for _, agent := range []string{"bosun", "upstream"} {
			fmt.Printf(">>> round %d/%d, agent %s%s\n", r, rounds, agent, map[bool]string{true: " (warm-up, discarded)", false: ""}[r == 0])
			s, err := measureAgent(ctx, root, agent, window, big)
			if err != nil {
				fail(fmt.Errorf("round %d, %s: %w", r, agent, err))
			}
			if r > 0 {
				results[agent] = append(results[agent], s)
			}
		}
	}
	if err := writeReport(root, floor, results, rounds, window, big); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// up brings the cluster up with a clean node running agent.
func up(root, agent string) error {
	down := exec.Command("make", "--no-print-directory", "down")
	down.Dir = root
	_ = down.Run()
	cmd := exec.Command("make", "--no-print-directory", "up", "KUBELET="+agent)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("make up KUBELET=%s: %v\n%s", agent, err, out)
	}
	return nil
}

// median of the rounds, per metric.
func median(samples []sample) sample {
	out := sample{}
	keys := map[string]bool{}
	for _, s := range samples {
		for k := range s {
			keys[k] = true
		}
	}
	for k := range keys {
		var vals []float64
		for _, s := range samples {
			if v, ok := s[k]; ok {
				vals = append(vals, v)
			}
		}
		if len(vals) == 0 {
			continue
		}
		sort.Float64s(vals)
		out[k] = vals[len(vals)/2]
	}
	return out
}

// metricOrder and units say how the report lists each figure.
var metricOrder = []struct{ key, unit, what string }{
	{"startup20.p50", "s", "pod startup, 20 at once: p50"},
	{"startup20.p90", "s", "pod startup, 20 at once: p90"},
	{"startup20.p99", "s", "pod startup, 20 at once: p99"},
	{"startup20.last", "s", "pod startup, 20 at once: last pod Running"},
	{"startupBig.p50", "s", "pod startup, big batch: p50"},
	{"startupBig.p90", "s", "pod startup, big batch: p90"},
	{"startupBig.p99", "s", "pod startup, big batch: p99"},
	{"startupBig.last", "s", "pod startup, big batch: last pod Running"},
	{"sequential.p50", "s", "pod startup, 10 one at a time: p50"},
	{"rss0.max", "MiB", "agent RSS at 0 pods (max)"},
	{"rss20.max", "MiB", "agent RSS at 20 pods (max)"},
	{"rssBig.max", "MiB", "agent RSS at the big batch (max)"},
	{"rssBig.steady", "MiB", "agent RSS at the big batch (steady)"},
	{"cpu0", "%", "agent CPU at 0 pods (of one core)"},
	{"cpu20", "%", "agent CPU at 20 pods"},
	{"cpuBig", "%", "agent CPU at the big batch"},
	{"api.steady", "req", "API requests by the agent during the steady window"},
	{"api.batch", "req", "API requests by the agent during the big batch"},
	{"node./pods.p50", "ms", "node API /pods: p50 (10 clients)"},
	{"node./pods.p99", "ms", "node API /pods: p99"},
	{"node./metrics.p50", "ms", "node API /metrics: p50"},
	{"node./metrics.p99", "ms", "node API /metrics: p99"},
	{"node./stats/summary.p50", "ms", "node API /stats/summary: p50"},
	{"node./metrics/cadvisor.p50", "ms", "node API /metrics/cadvisor: p50"},
	{"node./metrics/resource.p50", "ms", "node API /metrics/resource: p50"},
	{"stream.exec", "MiB/s", "kubectl exec -- cat, 256 MiB"},
	{"stream.logs", "MiB/s", "kubectl logs of a 256 MiB log"},
}

func writeReport(root string, floor sample, results map[string][]sample, rounds int, window time.Duration, big int) error {
	b, u := median(results["bosun"]), median(results["upstream"])
	dir := filepath.Join(root, "_output", "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(map[string]any{"floor": floor, "bosun": results["bosun"], "upstream": results["upstream"],
		"median": map[string]sample{"bosun": b, "upstream": u}, "rounds": rounds, "window": window.String(), "big": big}, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "report.json"), js, 0o644); err != nil {
		return err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Bosun vs the upstream kubelet\n\nMeasured by `make bench` on %s: %d measured rounds per agent (A/B alternating, a warm-up round each discarded), "+
		"medians shown; CPU/API window %s; big batch %d pods. Lower is better except MiB/s.\n\n", time.Now().UTC().Format("2006-01-02"), rounds, window, big)
	fmt.Fprintf(&sb, "Floor (the same pods started straight through CRI, no agent, no apiserver): %d pods, p50 %.3f s, p99 %.3f s, %.1f pods/s.\n\n",
		big, floor["p50"], floor["p99"], floor["podsPerSec"])
	sb.WriteString("| figure | unit | bosun | upstream | bosun/upstream |\n|---|---|---|---|---|\n")
	for _, m := range metricOrder {
		bv, bok := b[m.key]
		uv, uok := u[m.key]
		cell := func(v float64, ok bool) string {
			if !ok {
				return "n/a"
			}
			return strconv.FormatFloat(v, 'f', 3, 64)
		}
		ratio := "n/a"
		if bok && uok && uv != 0 {
			ratio = strconv.FormatFloat(bv/uv, 'f', 2, 64)
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s |\n", m.what, m.unit, cell(bv, bok), cell(uv, uok), ratio)
	}
	for _, agent := range []string{"bosun", "upstream"} {
		if v, ok := median(results[agent])["startupBig.p99"]; ok && floor["p99"] > 0 {
			fmt.Fprintf(&sb, "\n%s big-batch p99 is %.1fx the CRI floor's p99.", agent, v/floor["p99"])
		}
	}
	sb.WriteString("\n")
	report := sb.String()
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(report), 0o644); err != nil {
		return err
	}
	fmt.Print(report)
	return nil
}
