// Command conformance summarizes the ginkgo JUnit reports of a conformance
// run (hack/conformance.sh): `conformance summary DIR` reads the junit.xml of
// each pass below DIR and writes DIR/summary.txt (and prints it) and
// DIR/result.json; `conformance doc OUT DIR...` writes docs/conformance.md
// from the result.json of each suite and agent run.
package main

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

type junit struct {
	Suites []suite `xml:"testsuite"`
}

type suite struct {
	Cases []testCase `xml:"testcase"`
}

type testCase struct {
	Name    string   `xml:"name,attr"`
	Time    float64  `xml:"time,attr"`
	Status  string   `xml:"status,attr"`
	Failure *message `xml:"failure"`
	Error   *message `xml:"error"`
	Skipped *message `xml:"skipped"`
}

type message struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// result is one run's outcome, saved as result.json beside the summary.
type result struct {
	Suite    string            `json:"suite,omitempty"`
	Agent    string            `json:"agent"`
	Passed   int               `json:"passed"`
	Failed   int               `json:"failed"`
	Skipped  int               `json:"skipped"`
	Seconds  float64           `json:"wallSeconds"`
	Commit   string            `json:"commit,omitempty"`
	Nodes    string            `json:"nodes,omitempty"`
	Runtime  string            `json:"runtime,omitempty"`
	Machine  string            `json:"machine,omitempty"`
	Passes   []string          `json:"passes,omitempty"` // "parallel procs=8 seconds=1136 exit=1"
	Failures map[string]string `json:"failures"`         // spec -> first failure line
	Passing  []string          `json:"passingSpecs,omitempty"`
}

// runEnv reads the key=value lines hack/conformance.sh writes first.
func runEnv(dir string) map[string]string {
	env := map[string]string{}
	data, _ := os.ReadFile(filepath.Join(dir, "run.env"))
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

// reports are the JUnit files of a run: one per pass below dir, or dir's own.
func reports(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "*", "junit.xml"))
	if own := filepath.Join(dir, "junit.xml"); fileExists(own) {
		files = append(files, own)
	}
	sort.Strings(files)
	return files
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: conformance summary DIR | conformance doc OUT DIR...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "summary":
		err = summarize(os.Args[2])
	case "doc":
		err = doc(os.Args[2], os.Args[3:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

// ginkgo's JUnit names a spec "[It] <container texts> <spec text> [labels]".
var labels = regexp.MustCompile(`\s*\[[A-Za-z][^\]]*\]`)

func specName(n string) string {
	return strings.TrimSpace(strings.TrimPrefix(n, "[It] "))
}

func firstLine(m *message) string {
	for _, s := range []string{m.Message, m.Text} {
		for _, line := range strings.Split(s, "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "[FAILED]") {
				return line
			}
			if strings.HasPrefix(line, "[FAILED]") && len(line) > len("[FAILED] ") {
				return strings.TrimSpace(strings.TrimPrefix(line, "[FAILED]"))
			}
		}
	}
	return "(no message)"
}

// add counts the specs of one JUnit report.
func (r *result) add(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var j junit
	if err := xml.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	for _, s := range j.Suites {
		for _, c := range s.Cases {
			if !strings.HasPrefix(c.Name, "[It]") {
				continue // suite setup and teardown nodes
			}
			switch {
			case c.Failure != nil:
				r.Failed++
				r.Failures[specName(c.Name)] = firstLine(c.Failure)
			case c.Error != nil:
				r.Failed++
				r.Failures[specName(c.Name)] = firstLine(c.Error)
			case c.Skipped != nil || c.Status == "skipped" || c.Status == "pending":
				r.Skipped++
			default:
				r.Passed++
				r.Passing = append(r.Passing, specName(c.Name))
			}
		}
	}
	return nil
}

func summarize(dir string) error {
	files := reports(dir)
	if len(files) == 0 {
		return fmt.Errorf("no junit.xml in %s or its passes", dir)
	}
	env := runEnv(dir)
	r := result{Suite: env["suite"], Agent: env["agent"], Commit: env["commit"], Nodes: env["nodes"], Runtime: env["runtime"],
		Machine: env["machine"], Failures: map[string]string{}}
	if r.Agent == "" {
		r.Agent = filepath.Base(dir)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "commit")); err == nil && r.Commit == "" {
		r.Commit = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "passes")); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			r.Passes = append(r.Passes, line)
			var secs float64
			if i := strings.Index(line, "seconds="); i >= 0 {
				_, _ = fmt.Sscanf(line[i:], "seconds=%g", &secs)
			}
			r.Seconds += secs
		}
	}
	for _, f := range files {
		if err := r.add(f); err != nil {
			return err
		}
	}
	sort.Strings(r.Passing)
	var b strings.Builder
	fmt.Fprintf(&b, "conformance: %d passed, %d failed, %d skipped\n", r.Passed, r.Failed, r.Skipped)
	names := make([]string, 0, len(r.Failures))
	for n := range r.Failures {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "FAIL %s\n    %s\n", n, r.Failures[n])
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "result.json"), js, 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	return nil
}

// group names the feature a failing spec needs, from its text.
func group(spec string) string {
	s := labels.ReplaceAllString(spec, "")
	if i := strings.Index(s, " "); i > 0 && strings.HasPrefix(s, "[sig-") {
		s = s[i+1:]
	}
	for _, w := range []string{"Probing container", "EmptyDir", "Projected", "Downward API", "Secrets", "ConfigMap",
		"Security Context", "Container Lifecycle Hook", "Variable Expansion", "Pods", "Kubelet", "Container Runtime",
		"InitContainer", "PreStop", "Sysctls", "HostPath", "Ephemeral Containers", "Lease", "Containers", "Docker Containers", "RuntimeClass"} {
		if strings.Contains(s, w) {
			return w
		}
	}
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return "other"
}

// suiteTitles say what each suite is, for the doc.
var suiteTitles = map[string]string{
	"node":      "NodeConformance (`make conformance SUITE=node`): the parallel specs, then the Serial and Disruptive ones alone",
	"certified": "The certified conformance suite (`make conformance SUITE=certified`): every `[Conformance]` spec, the parallel ones with ginkgo processes, then the `[Serial]` ones alone",
	"fast":      "The fast NodeConformance subset of `make test` (`hack/conformance/fast.txt`)",
	"resize":    "The in-place pod resize specs (`make conformance SUITE=resize`: label `FeatureGate:InPlacePodVerticalScaling`), the parallel ones, then the `[Serial]` ones alone",
	"storage":   "Upstream's storage test suites against the test CSI driver (`make conformance SUITE=storage`: `External Storage [Driver: bosun.csi.example]`, driver defined in `hack/conformance/csi-hostpath.yaml`, without `[Feature:...]` and `[Disruptive]`), the parallel ones, then the `[Serial]` ones alone",
	"dra":       "Upstream's DRA specs (`make conformance SUITE=dra`: label `DRA`, the GA ones and the Beta ones on by default in v1.36: no `Alpha` or `Feature:OffByDefault`; the test driver runs inside `e2e.test`), the parallel ones, then the `[Serial]` ones alone",
	"userns":    "The user namespace specs (`make conformance SUITE=userns`: label `Feature:UserNamespacesSupport`), the parallel ones, then the `[Serial]` ones alone",
}

func doc(out string, dirs []string) error {
	bySuite := map[string][]result{}
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, "result.json"))
		if err != nil {
			continue // that agent or suite was not run
		}
		var r result
		if err := json.Unmarshal(data, &r); err != nil {
			return err
		}
		if r.Suite == "" {
			r.Suite = "node"
		}
		bySuite[r.Suite] = append(bySuite[r.Suite], r)
	}
	if len(bySuite) == 0 {
		return fmt.Errorf("no result.json in %v", dirs)
	}
	// A suite with no record here (its runs were made on another day, their
	// records since cleaned away) keeps the section an earlier run generated.
	kept := previousSections(out)
	var b strings.Builder
	b.WriteString("# Conformance of the node agents\n\n")
	b.WriteString("Generated by `make conformance-doc` from the records of `make conformance SUITE=... KUBELET=...`: the upstream\n")
	b.WriteString("v1.36.3 `e2e.test` specs, run with the ginkgo CLI against the local cluster of `make up`. Nothing here is typed by hand.\n")
	for _, suite := range []string{"certified", "node", "resize", "userns", "storage", "dra", "fast"} {
		results := bySuite[suite]
		if len(results) == 0 {
			b.WriteString(kept[suite])
			continue
		}
		sort.Slice(results, func(i, j int) bool { return results[i].Agent > results[j].Agent }) // upstream first
		fmt.Fprintf(&b, "\n## %s\n\n", suiteTitles[suite])
		b.WriteString("| agent | passed | failed | skipped | wall time | passes run | Bosun commit | nodes | runtime | machine |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range results {
			fmt.Fprintf(&b, "| %s | %d | %d | %d | %.0f s | %s | %s | %s | %s | %s |\n", r.Agent, r.Passed, r.Failed, r.Skipped, r.Seconds,
				strings.Join(r.Passes, "; "), r.Commit, r.Nodes, r.Runtime, r.Machine)
		}
		writeDefects(&b, results)
		for _, r := range results {
			writeFailures(&b, r)
		}
	}
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

// previousSections reads the doc an earlier run generated and returns each
// suite's section ("\n## <title>..." up to the next suite's), by its title.
func previousSections(path string) map[string]string {
	sections := map[string]string{}
	data, err := os.ReadFile(path)
	if err != nil {
		return sections
	}
	parts := strings.Split(string(data), "\n## ")
	for _, part := range parts[1:] {
		title, _, _ := strings.Cut(part, "\n")
		for suite, t := range suiteTitles {
			if title == t {
				sections[suite] = "\n## " + part
			}
		}
	}
	return sections
}

// writeDefects lists the specs Bosun fails that the upstream kubelet passed
// in its run of the same suite: Bosun's defects.
func writeDefects(b *strings.Builder, results []result) {
	var up, bosun *result
	for i := range results {
		switch results[i].Agent {
		case "upstream":
			up = &results[i]
		case "bosun":
			bosun = &results[i]
		}
	}
	if up == nil || bosun == nil {
		return
	}
	passed := map[string]bool{}
	for _, s := range up.Passing {
		passed[s] = true
	}
	var defects []string
	for spec, msg := range bosun.Failures {
		if passed[spec] {
			defects = append(defects, fmt.Sprintf("- %s  \n  `%s`", spec, strings.ReplaceAll(truncate(msg, 200), "`", "'")))
		}
	}
	sort.Strings(defects)
	fmt.Fprintf(b, "\n### Bosun fails, the upstream kubelet passes (%d): Bosun's defects\n", len(defects))
	if len(defects) > 0 {
		b.WriteString(strings.Join(defects, "\n") + "\n")
	}
}

func writeFailures(b *strings.Builder, r result) {
	if r.Failed == 0 {
		return
	}
	fmt.Fprintf(b, "\n### Failing specs with %s, by the feature they need\n", r.Agent)
	byGroup := map[string][]string{}
	for spec, msg := range r.Failures {
		g := group(spec)
		byGroup[g] = append(byGroup[g], fmt.Sprintf("- %s  \n  `%s`", spec, strings.ReplaceAll(truncate(msg, 200), "`", "'")))
	}
	groups := make([]string, 0, len(byGroup))
	for g := range byGroup {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	for _, g := range groups {
		sort.Strings(byGroup[g])
		fmt.Fprintf(b, "\n#### %s (%d)\n%s\n", g, len(byGroup[g]), strings.Join(byGroup[g], "\n"))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
