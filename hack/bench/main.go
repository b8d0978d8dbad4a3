// Command bench measures the node agents side by side on the local cluster:
// Bosun and the upstream kubelet, each round from a clean node, in ABBA
// order (Bosun first in even rounds, upstream first in odd ones), plus the
// floor of starting the same pods straight through CRI. Every batch size of
// the sweep is started by both agents and the floor; the big batch also
// gives the footprint, the node API latencies and the phases of a pod's
// start. It writes _output/bench/report.md, report.json and startup.svg,
// and fails, naming the figure, when a figure could not be measured.
//
// With -window it measures the running cluster's agent over the footprint
// window after one BIG-pod batch, with the agent's CPU profile of it.
//
// With -nodeapi it times the running cluster's node API paths under the
// bench's load (10 clients, 10 requests each), three times.
//
// With -short it measures the agent of the running cluster only, one small
// batch (make test's slice), and checks that every figure was measured.
//
// Environment: ROUNDS (rounds per agent, default 3), WINDOW (the CPU/API
// window, default 20s), SIZES (the sweep, default 10,20,50,100,250), BIG
// (the batch the footprint and phases are read at, default 100).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sample is one agent's figures in one round, by metric name.
type sample map[string]float64

// plan is what one bench run measures.
type plan struct {
	rounds int
	window time.Duration
	sizes  []int // batch sizes of the sweep, ascending
	big    int   // the batch the footprint, node API and phases are read at
}

func main() {
	short := flag.Bool("short", false, "measure the running cluster's agent with one small batch (make test's slice)")
	exits := flag.Bool("exits", false, "measure only how fast the running cluster's agent sees containers exit (with Bosun: following events, then relisting)")
	window := flag.Bool("window", false, "measure only the running cluster's agent over the window after a BIG-pod batch, with its CPU profile")
	nodeapi := flag.Bool("nodeapi", false, "time only the running cluster's node API paths, three times")
	flag.Parse()
	ctx := context.Background()
	root, _ := os.Getwd()
	if *nodeapi {
		if err := runNodeAPI(ctx, root); err != nil {
			fail(err)
		}
		return
	}
	if *exits {
		if err := runExits(ctx, root); err != nil {
			fail(err)
		}
		return
	}
	if *short {
		if err := runShort(ctx, root); err != nil {
			fail(err)
		}
		return
	}
	p := plan{rounds: envInt("ROUNDS", 3), window: envDuration("WINDOW", 20*time.Second), big: envInt("BIG", 100)}
	if *window {
		if err := runWindow(ctx, root, p); err != nil {
			fail(err)
		}
		return
	}
	var err error
	if p.sizes, err = parseSizes(envOr("SIZES", "10,20,50,100,250"), p.big); err != nil {
		fail(err)
	}
	m, err := readMachine(ctx, root)
	if err != nil {
		fail(err)
	}
	floor, err := measureFloor(ctx, root, p, &m)
	if err != nil {
		fail(err)
	}
	results := map[string][]sample{}
	for r := 1; r <= p.rounds; r++ {
		for _, agent := range roundOrder(r) {
			fmt.Printf(">>> round %d/%d, agent %s\n", r, p.rounds, agent)
			s, err := measureAgent(ctx, root, agent, p)
			if err != nil {
				fail(fmt.Errorf("round %d, %s: %w", r, agent, err))
			}
			if err := saveRound(root, r, agent, s); err != nil {
				fail(err)
			}
			if missing := p.missingFor(agent, s); len(missing) > 0 {
				fail(fmt.Errorf("round %d, %s: not measured: %s", r, agent, strings.Join(missing, ", ")))
			}
			results[agent] = append(results[agent], s)
		}
	}
	// Each round's make up builds Bosun from the tree as it is then: a
	// commit or an edit during the run is said in the report.
	if end, err := readMachine(ctx, root); err == nil && end.Commit != m.Commit {
		m.Commit = fmt.Sprintf("%s (the tree was at %s by the last round: rounds after the change measured that)", m.Commit, end.Commit)
	}
	fmt.Println(">>> bosun's CPU profile over one more big batch")
	prof, err := profileBatch(ctx, root, "bosun", p)
	if err != nil {
		// The profile explains the figures; it is not one of them.
		prof = fmt.Sprintf("no profile: %v\n", err)
	}
	if err := writeReport(root, m, p, floor, results, prof); err != nil {
		fail(err)
	}
}

// roundOrder is ABBA: Bosun first in odd rounds, upstream first in even
// ones, so neither agent always runs on the machine the other just warmed.
func roundOrder(r int) []string {
	if r%2 == 1 {
		return []string{"bosun", "upstream"}
	}
	return []string{"upstream", "bosun"}
}

func parseSizes(v string, big int) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 500 {
			return nil, fmt.Errorf("SIZES=%q: %q is not a batch size from 1 to 500", v, f)
		}
		sizes = append(sizes, n)
	}
	sort.Ints(sizes)
	sizes = slices.Compact(sizes)
	if !slices.Contains(sizes, big) {
		return nil, fmt.Errorf("SIZES=%q lacks BIG=%d, the batch the footprint is read at", v, big)
	}
	return sizes, nil
}

// maxPods is the nodes' maxPods for the sweep: the seed's 220 unless the
// largest batch needs more (the add-ons' pods run on the node too).
func (p plan) maxPods() int {
	return max(220, p.sizes[len(p.sizes)-1]+10)
}

// footprintAt are the batch sizes a footprint window follows: 20 (the
// small batch), the big batch and the largest.
func (p plan) footprintAt(n int) bool {
	return n == 20 || n == p.big || n == p.sizes[len(p.sizes)-1]
}

// missing names the figures a round should have measured and did not.
func (p plan) missing(s sample) []string {
	want := []string{"rss0.max", "cpu0", "api.steady0", "sequential.p50", "exit.p50", "exit.p99", "stream.exec", "stream.logs", "api.batch"}
	for _, n := range p.sizes {
		for _, q := range []string{"p50", "p90", "p99", "last"} {
			want = append(want, fmt.Sprintf("startup%d.%s", n, q))
		}
		if p.footprintAt(n) {
			want = append(want, fmt.Sprintf("rss%d.max", n), fmt.Sprintf("rss%d.steady", n), fmt.Sprintf("cpu%d", n), fmt.Sprintf("api.steady%d", n))
		}
	}
	for _, path := range nodePaths {
		want = append(want, "node."+path+".p50", "node."+path+".p99")
	}
	for _, ph := range phases {
		want = append(want, fmt.Sprintf("startup%d.phase.%s.p50", p.big, ph.key))
	}
	for _, m := range apiMethods {
		want = append(want, fmt.Sprintf("api.steady%d.%s", p.big, m))
	}
	return absent(s, want)
}

// bosunOnly are the figures only Bosun's rounds measure.
var bosunOnly = []string{"exit.relist.p50", "exit.relist.p99"}

// missingFor is missing plus the figures only this agent's rounds measure.
func (p plan) missingFor(agent string, s sample) []string {
	out := p.missing(s)
	if agent == "bosun" {
		out = append(out, absent(s, bosunOnly)...)
	}
	return out
}

// absent names the figures of want that s lacks.
func absent(s sample, want []string) []string {
	var out []string
	for _, k := range want {
		if _, ok := s[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
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
func up(root, agent string, maxPods int) error {
	down := exec.Command("make", "--no-print-directory", "down")
	down.Dir = root
	_ = down.Run()
	// The 256 MiB log is read whole: with the default 10Mi it was rotated
	// while written, and each agent's read got what its rotation had left.
	cmd := exec.Command("make", "--no-print-directory", "up", "KUBELET="+agent, "NODES=1", fmt.Sprintf("MAX_PODS=%d", maxPods), "LOG_MAX_SIZE=1Gi")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("make up KUBELET=%s: %v\n%s", agent, err, out)
	}
	return nil
}

// saveRound keeps each round's figures as it ends, so that a later round's
// failure does not lose them.
func saveRound(root string, r int, agent string, s sample) error {
	dir := filepath.Join(root, "_output", "bench", "rounds")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(s, "", "  ")
	return os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d-%s.json", r, agent)), js, 0o644)
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
