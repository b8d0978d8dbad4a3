package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machine is what the report says it measured on.
type machine struct {
	Commit  string // Bosun's commit (with -dirty when the tree had changes)
	Date    string
	Cores   int
	Memory  string
	Kernel  string
	Cgroups string
	Runtime string // filled by the floor step, from the runtime's Version
}

func readMachine(ctx context.Context, root string) (machine, error) {
	m := machine{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Cores: runtime.NumCPU()}
	out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short=10", "HEAD").Output()
	if err != nil {
		return m, fmt.Errorf("git rev-parse: %v", err)
	}
	m.Commit = strings.TrimSpace(string(out))
	if st, _ := exec.CommandContext(ctx, "git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); len(st) > 0 {
		m.Commit += "-dirty"
	}
	kernel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return m, err
	}
	m.Kernel = strings.TrimSpace(string(kernel))
	meminfo, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(meminfo), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
			m.Memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
		}
	}
	m.Cgroups = "v1"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		m.Cgroups = "v2"
	}
	return m, nil
}

// figure is one row of the report.
type figure struct{ key, unit, what string }

// figures lists the report's rows for a plan.
func (p plan) figures() []figure {
	var out []figure
	for _, n := range p.sizes {
		for _, q := range []string{"p50", "p99", "last"} {
			what := q
			if q == "last" {
				what = "last pod Running"
			}
			out = append(out, figure{fmt.Sprintf("startup%d.%s", n, q), "s", fmt.Sprintf("pod startup, %d at once: %s", n, what)})
		}
	}
	out = append(out, figure{"sequential.p50", "s", "pod startup, 10 one at a time: p50"})
	out = append(out, figure{"exit.p50", "s", "a container's exit in its pod's status, 10 at one instant: p50"},
		figure{"exit.p99", "s", "a container's exit in its pod's status: p99"},
		figure{"exit.relist.p50", "s", "the same, Bosun relisting (EventedPLEG=false): p50"},
		figure{"exit.relist.p99", "s", "the same, Bosun relisting: p99"})
	for _, ph := range phases {
		out = append(out, figure{fmt.Sprintf("startup%d.phase.%s.p50", p.big, ph.key), "s", fmt.Sprintf("%d at once, phase %s: p50", p.big, ph.key)})
	}
	for _, op := range agentOps {
		out = append(out, figure{"op." + op.key + ".mean", "s", fmt.Sprintf("%d at once, the agent's %s: mean", p.big, op.what)})
	}
	out = append(out, figure{"rss0.max", "MiB", "agent RSS at 0 pods (max)"}, figure{"cpu0", "%", "agent CPU at 0 pods (of one core)"})
	for _, n := range p.sizes {
		if p.footprintAt(n) {
			out = append(out, figure{fmt.Sprintf("rss%d.max", n), "MiB", fmt.Sprintf("agent RSS with %d pods (max)", n)},
				figure{fmt.Sprintf("rss%d.steady", n), "MiB", fmt.Sprintf("agent RSS with %d pods (steady)", n)},
				figure{fmt.Sprintf("cpu%d", n), "%", fmt.Sprintf("agent CPU with %d pods running", n)})
		}
	}
	out = append(out, figure{"api.steady0", "req", "API requests in the steady window, 0 pods"})
	for _, n := range p.sizes {
		if p.footprintAt(n) {
			out = append(out, figure{fmt.Sprintf("api.steady%d", n), "req", fmt.Sprintf("API requests in the steady window, %d pods running", n)})
		}
	}
	for _, m := range apiMethods {
		out = append(out, figure{fmt.Sprintf("api.steady%d.%s", p.big, m), "req", fmt.Sprintf("of those with %d pods: %s", p.big, m)})
	}
	out = append(out, figure{"api.batch", "req", fmt.Sprintf("API requests during the %d-pod batch", p.big)})
	for _, path := range nodePaths {
		out = append(out, figure{"node." + path + ".p50", "ms", fmt.Sprintf("node API %s with %d pods: p50 (10 clients)", path, p.big)},
			figure{"node." + path + ".p99", "ms", fmt.Sprintf("node API %s: p99", path)})
	}
	return append(out, figure{"stream.exec", "MiB/s", "kubectl exec -- cat, 256 MiB"}, figure{"stream.logs", "MiB/s", "kubectl logs of a 256 MiB log"})
}

// target is one of the performance issue's goals, read off the medians.
type target struct {
	what string
	met  func(b, u, floor sample) (string, bool, bool) // the figures as text, met, measurable
}

func ratioTarget(what, key string, limit float64) target {
	return target{what, func(b, u, _ sample) (string, bool, bool) {
		bv, ok1 := b[key]
		uv, ok2 := u[key]
		if !ok1 || !ok2 || uv == 0 {
			return "", false, false
		}
		return fmt.Sprintf("%.3g / %.3g = %.2f", bv, uv, bv/uv), bv/uv <= limit, true
	}}
}

func floorTarget(what, key string, limit float64) target {
	return target{what, func(b, _, floor sample) (string, bool, bool) {
		bv, ok1 := b[key]
		fv, ok2 := floor[key]
		if !ok1 || !ok2 || fv == 0 {
			return "", false, false
		}
		return fmt.Sprintf("%.3g / %.3g = %.2f", bv, fv, bv/fv), bv/fv <= limit, true
	}}
}

func absTarget(what, key string, limit float64) target {
	return target{what, func(b, _, _ sample) (string, bool, bool) {
		bv, ok := b[key]
		if !ok {
			return "", false, false
		}
		return fmt.Sprintf("%.3g", bv), bv <= limit, true
	}}
}

func (p plan) targets() []target {
	largest := p.sizes[len(p.sizes)-1]
	big := fmt.Sprintf("startup%d.last", p.big)
	ts := []target{
		floorTarget(fmt.Sprintf("%d pods at once, last Running ≤ 1.25× the floor's", p.big), big, 1.25),
		ratioTarget(fmt.Sprintf("%d pods at once, last Running ≤ 0.75× upstream", p.big), big, 0.75),
		ratioTarget("20 pods at once, last Running ≤ 0.5× upstream", "startup20.last", 0.5),
		floorTarget(fmt.Sprintf("%d pods at once, last Running ≤ 1.3× the floor's", largest), fmt.Sprintf("startup%d.last", largest), 1.3),
		ratioTarget(fmt.Sprintf("node API /pods p50 with %d pods ≤ 0.5× upstream", p.big), "node./pods.p50", 0.5),
	}
	for _, path := range []string{"/stats/summary", "/metrics/resource", "/metrics/cadvisor"} {
		ts = append(ts, absTarget("node API "+path+" p50 ≤ 50 ms", "node."+path+".p50", 50), absTarget("node API "+path+" p99 ≤ 200 ms", "node."+path+".p99", 200))
	}
	ts = append(ts, ratioTarget("RSS at 0 pods ≤ 0.5× upstream", "rss0.max", 0.5))
	for _, n := range p.sizes {
		if p.footprintAt(n) {
			ts = append(ts, ratioTarget(fmt.Sprintf("RSS with %d pods ≤ 0.5× upstream", n), fmt.Sprintf("rss%d.max", n), 0.5))
		}
	}
	return append(ts, ratioTarget(fmt.Sprintf("CPU with %d pods running ≤ 0.3× upstream", p.big), fmt.Sprintf("cpu%d", p.big), 0.3),
		ratioTarget(fmt.Sprintf("API requests, steady window with %d pods ≤ 0.5× upstream", p.big), fmt.Sprintf("api.steady%d", p.big), 0.5),
		ratioTarget(fmt.Sprintf("API requests during the %d-pod batch ≤ 0.8× upstream", p.big), "api.batch", 0.8))
}

func writeReport(root string, m machine, p plan, floor sample, results map[string][]sample, profile string) error {
	b, u := median(results["bosun"]), median(results["upstream"])
	dir := filepath.Join(root, "_output", "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(map[string]any{"machine": m, "floor": floor, "bosun": results["bosun"], "upstream": results["upstream"],
		"median": map[string]sample{"bosun": b, "upstream": u}, "rounds": p.rounds, "window": p.window.String(), "sizes": p.sizes, "big": p.big}, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "report.json"), js, 0o644); err != nil {
		return err
	}
	svg := startupSVG(p.sizes, map[string]sample{"bosun": b, "upstream": u, "CRI floor": floor})
	if err := os.WriteFile(filepath.Join(dir, "startup.svg"), []byte(svg), 0o644); err != nil {
		return err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Bosun vs the upstream kubelet\n\nMeasured by `make bench` at commit %s on %s: %d cores, %s memory, kernel %s, cgroup %s, %s. "+
		"%d rounds per agent in ABBA order (each from a clean node, a 5-pod warm-up batch first, not counted), medians shown; "+
		"CPU/API window %s. Lower is better except MiB/s.\n\n",
		m.Commit, m.Date, m.Cores, m.Memory, m.Kernel, m.Cgroups, m.Runtime, p.rounds, p.window)
	sb.WriteString("![last pod Running against batch size](performance-startup.svg)\n\n")
	sb.WriteString("## The issue's targets\n\n| target | Bosun's figures | met |\n|---|---|---|\n")
	for _, t := range p.targets() {
		text, met, ok := t.met(b, u, floor)
		switch {
		case !ok:
			fmt.Fprintf(&sb, "| %s | not measured | no |\n", t.what)
		case met:
			fmt.Fprintf(&sb, "| %s | %s | yes |\n", t.what, text)
		default:
			fmt.Fprintf(&sb, "| %s | %s | no |\n", t.what, text)
		}
	}
	sb.WriteString("\n## Every figure\n\n| figure | unit | bosun | upstream | bosun/upstream | CRI floor |\n|---|---|---|---|---|---|\n")
	cell := func(v float64, ok bool) string {
		if !ok {
			return "n/a"
		}
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	for _, f := range p.figures() {
		bv, bok := b[f.key]
		uv, uok := u[f.key]
		fv, fok := floor[f.key]
		ratio := "n/a"
		if bok && uok && uv != 0 {
			ratio = strconv.FormatFloat(bv/uv, 'f', 2, 64)
		}
		fcell := ""
		if fok {
			fcell = cell(fv, true)
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s |\n", f.what, f.unit, cell(bv, bok), cell(uv, uok), ratio, fcell)
	}
	sb.WriteString("\n## The phases of a pod's start\n\n")
	for _, ph := range phases {
		fmt.Fprintf(&sb, "- %s: %s\n", ph.key, ph.what)
	}
	for _, agent := range []string{"bosun", "upstream"} {
		s := median(results[agent])
		slowest, worst := "", -1.0
		for _, ph := range phases {
			if v := s[fmt.Sprintf("startup%d.phase.%s.p50", p.big, ph.key)]; v > worst {
				slowest, worst = ph.key, v
			}
		}
		fmt.Fprintf(&sb, "\nWith %d pods at once, %s's slowest phase is %s (p50 %.3f s).", p.big, agent, slowest, worst)
	}
	sb.WriteString("\nThe agents' own means come from their `kubelet_runtime_operations_duration_seconds` and " +
		"`kubelet_pod_status_sync_duration_seconds` over the batch.\n")
	fmt.Fprintf(&sb, "\n## Where Bosun's CPU went in a %d-pod batch\n\nA CPU profile of one more batch, taken through the node API's `/debug/pprof/profile` "+
		"(`enableProfilingHandler`, authenticated and authorized as every node API path), heaviest by cumulative time:\n\n```\n%s```\n", p.big, profile)
	if notes, err := os.ReadFile(filepath.Join(root, "hack", "bench", "CHANGES.md")); err == nil {
		sb.WriteString("\n")
		sb.Write(notes)
	}
	report := sb.String()
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(report), 0o644); err != nil {
		return err
	}
	fmt.Print(report)
	return nil
}

// startupSVG draws the last pod's Running time against batch size, one line
// per series.
func startupSVG(sizes []int, series map[string]sample) string {
	const w, h, left, bottom, top, right = 640.0, 400.0, 60.0, 50.0, 30.0, 150.0
	maxX := float64(sizes[len(sizes)-1])
	maxY := 1.0
	for _, s := range series {
		for _, n := range sizes {
			maxY = max(maxY, s[fmt.Sprintf("startup%d.last", n)])
		}
	}
	maxY = float64(int(maxY/5)+1) * 5
	x := func(n float64) float64 { return left + n/maxX*(w-left-right) }
	y := func(v float64) float64 { return h - bottom - v/maxY*(h-bottom-top) }
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&sb, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&sb, `<text x="%.0f" y="18" font-size="14">Pods started at once: seconds until the last is Running</text>`+"\n", left)
	fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, y(0), x(maxX), y(0))
	fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, y(0), left, y(maxY))
	for _, n := range sizes {
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x(float64(n)), y(0)+16, n)
	}
	for v := 0.0; v <= maxY; v += maxY / 5 {
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="end">%.0f s</text>`+"\n", left-6, y(v)+4, v)
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), x(maxX), y(v))
	}
	fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle">pods in the batch</text>`+"\n", x(maxX/2), h-12)
	colors := map[string]string{"bosun": "#1f77b4", "upstream": "#d62728", "CRI floor": "#7f7f7f"}
	for i, name := range []string{"bosun", "upstream", "CRI floor"} {
		var pts []string
		for _, n := range sizes {
			if v, ok := series[name][fmt.Sprintf("startup%d.last", n)]; ok {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(n)), y(v)))
			}
		}
		fmt.Fprintf(&sb, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colors[name], strings.Join(pts, " "))
		ly := top + 20 + float64(i)*20
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", w-right+15, ly, w-right+40, ly, colors[name])
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f">%s</text>`+"\n", w-right+46, ly+4, name)
	}
	sb.WriteString("</svg>\n")
	return sb.String()
}
