package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRoundOrderIsABBA(t *testing.T) {
	var got []string
	for r := 1; r <= 4; r++ {
		got = append(got, roundOrder(r)...)
	}
	want := []string{"bosun", "upstream", "upstream", "bosun", "bosun", "upstream", "upstream", "bosun"}
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

func TestParseSizes(t *testing.T) {
	sizes, err := parseSizes("250, 10,100,20,20", 100)
	if err != nil || !slices.Equal(sizes, []int{10, 20, 100, 250}) {
		t.Errorf("sizes %v, %v", sizes, err)
	}
	for _, bad := range []string{"10,x", "0,100", "10,20"} {
		if _, err := parseSizes(bad, 100); err == nil {
			t.Errorf("SIZES=%s accepted", bad)
		}
	}
}

func TestScrapeSumsMatchingSeries(t *testing.T) {
	page := `# HELP kubelet_runtime_operations_duration_seconds x
kubelet_runtime_operations_duration_seconds_sum{operation_type="create_container"} 2.5
kubelet_runtime_operations_duration_seconds_count{operation_type="create_container"} 10
kubelet_runtime_operations_duration_seconds_sum{operation_type="start_container"} 9
rest_client_requests_total{code="200",host="10.0.0.1:6443",method="GET"} 7
rest_client_requests_total{code="201",host="10.0.0.1:6443",method="POST"} 3
`
	s := parseScrape(strings.NewReader(page))
	if v, ok := s.sum("rest_client_requests_total", nil); !ok || v != 10 {
		t.Errorf("requests %v %v", v, ok)
	}
	if v, ok := s.sum("rest_client_requests_total", map[string]string{"method": "POST"}); !ok || v != 3 {
		t.Errorf("POST requests %v %v", v, ok)
	}
	after := parseScrape(strings.NewReader(strings.NewReplacer(" 2.5", " 4.5", " 10\n", " 20\n").Replace(page)))
	out := sample{}
	opMeans(s, after, out)
	if out["op.create_container.mean"] != 0.2 || out["op.create_container.count"] != 10 {
		t.Errorf("create_container: %v", out)
	}
	if _, ok := out["op.start_container.mean"]; ok {
		t.Error("a mean without counts")
	}
	more := parseScrape(strings.NewReader(strings.Replace(page, `method="GET"} 7`, `method="GET"} 9`, 1)))
	byMethod := sample{}
	requestsByMethod(s, more, "api.steady100", byMethod)
	if byMethod["api.steady100.GET"] != 2 || byMethod["api.steady100.POST"] != 0 || len(byMethod) != len(apiMethods) {
		t.Errorf("by method: %v", byMethod)
	}
}

func TestPhaseFigures(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	seen := map[string]timeline{"a": {created: at(0), bound: at(100), running: at(1000)}}
	rt := map[string]runtimeTimes{"a": {sandbox: at(300), created: at(600), started: at(700)}}
	s := sample{}
	if err := phaseFigures("k", seen, rt, s); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"schedule": 0.1, "agent": 0.2, "sandbox": 0.3, "start": 0.1, "status": 0.3}
	for ph, v := range want {
		if got := s["k.phase."+ph+".p50"]; got < v-1e-9 || got > v+1e-9 {
			t.Errorf("%s: %v, want %v", ph, got, v)
		}
	}
	delete(rt, "a")
	if err := phaseFigures("k", seen, rt, sample{}); err == nil {
		t.Error("a pod the runtime does not know gave no error")
	}
}

func TestMissingNamesEveryFigureNotMeasured(t *testing.T) {
	p := plan{sizes: []int{20, 100}, big: 100}
	s := sample{}
	all := p.missing(s)
	for _, k := range all {
		s[k] = 1
	}
	if len(p.missing(s)) != 0 {
		t.Errorf("still missing: %v", p.missing(s))
	}
	delete(s, "api.steady100")
	if got := p.missing(s); !slices.Equal(got, []string{"api.steady100"}) {
		t.Errorf("missing %v", got)
	}
	// Every figure of the report is one a round must measure, or an agent's own mean.
	for _, f := range p.figures() {
		if !slices.Contains(all, f.key) && !strings.HasPrefix(f.key, "op.") && !slices.Contains(bosunOnly, f.key) {
			t.Errorf("figure %s is reported but not required", f.key)
		}
	}
	if got := p.missingFor("bosun", s); !slices.Equal(got, []string{"api.steady100", "exit.relist.p50", "exit.relist.p99"}) {
		t.Errorf("bosun's round missing %v", got)
	}
}

func TestTargets(t *testing.T) {
	p := plan{sizes: []int{20, 100, 250}, big: 100}
	b := sample{"startup100.last": 12, "startup20.last": 1}
	u := sample{"startup100.last": 16, "startup20.last": 2}
	floor := sample{"startup100.last": 10}
	got := map[string]bool{}
	measured := 0
	for _, tg := range p.targets() {
		_, met, ok := tg.met(b, u, floor)
		if ok {
			measured++
			got[tg.what] = met
		}
	}
	if measured != 3 {
		t.Errorf("%d targets measurable, want 3: %v", measured, got)
	}
	if !got["100 pods at once, last Running ≤ 1.25× the floor's"] || !got["100 pods at once, last Running ≤ 0.75× upstream"] || !got["20 pods at once, last Running ≤ 0.5× upstream"] {
		t.Errorf("targets %v", got)
	}
	b["startup100.last"] = 13
	for _, tg := range p.targets()[:2] {
		if _, met, _ := tg.met(b, u, floor); met {
			t.Errorf("%s met with 13 s", tg.what)
		}
	}
}

func TestStartupSVG(t *testing.T) {
	svg := startupSVG([]int{10, 100}, map[string]sample{"bosun": {"startup10.last": 1, "startup100.last": 12},
		"upstream": {"startup10.last": 2, "startup100.last": 16}, "CRI floor": {"startup10.last": 1, "startup100.last": 10}})
	if !strings.HasPrefix(svg, "<svg") || strings.Count(svg, "<polyline") != 3 || !strings.Contains(svg, "upstream") {
		t.Errorf("svg:\n%s", svg)
	}
}

// The report is written from real-shaped rounds: every figure a round
// measured appears, the targets are read, and the chart is beside it.
func TestWriteReport(t *testing.T) {
	root := t.TempDir()
	p := plan{rounds: 1, window: time.Second, sizes: []int{20, 100}, big: 100}
	round := func(agent string, scale float64) sample {
		s := sample{}
		for _, k := range p.missingFor(agent, sample{}) {
			s[k] = scale
		}
		return s
	}
	floor := sample{"startup20.last": 1, "startup100.last": 2}
	err := writeReport(root, machine{Commit: "abc", Runtime: "containerd 2"}, p, floor,
		map[string][]sample{"bosun": {round("bosun", 1)}, "upstream": {round("upstream", 2)}}, "flat cum\n")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "_output", "bench", "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{"commit abc", "| 100 pods at once, last Running ≤ 0.75× upstream | 1 / 2 = 0.50 | yes |",
		"| pod startup, 100 at once: last pod Running | s | 1.000 | 2.000 | 0.50 | 2.000 |", "slowest phase", "flat cum"} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		// The agents' own means and Bosun's relisting are the only figures
		// a round may lack.
		if strings.Contains(line, "n/a") && !strings.Contains(line, "the agent's") && !strings.Contains(line, "Bosun relisting") {
			t.Errorf("a measured figure shows as n/a: %s", line)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "_output", "bench", "startup.svg")); err != nil {
		t.Error(err)
	}
}
