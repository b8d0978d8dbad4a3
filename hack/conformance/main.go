// Command conformance summarizes a ginkgo JUnit report of the upstream
// NodeConformance specs: `conformance summary DIR` writes DIR/summary.txt
// (and prints it); `conformance doc OUT DIR...` writes the table of
// docs/conformance.md from the summaries of each agent's run.
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
	Agent    string            `json:"agent"`
	Passed   int               `json:"passed"`
	Failed   int               `json:"failed"`
	Skipped  int               `json:"skipped"`
	Seconds  float64           `json:"wallSeconds"`
	Commit   string            `json:"commit,omitempty"`
	Failures map[string]string `json:"failures"` // spec -> first failure line
}

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

func summarize(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "junit.xml"))
	if err != nil {
		return err
	}
	var j junit
	if err := xml.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("junit.xml: %w", err)
	}
	r := result{Agent: filepath.Base(dir), Failures: map[string]string{}}
	if b, err := os.ReadFile(filepath.Join(dir, "commit")); err == nil {
		r.Commit = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "wall-seconds")); err == nil {
		_, _ = fmt.Sscanf(string(b), "%g", &r.Seconds)
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
			}
		}
	}
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

func doc(out string, dirs []string) error {
	var results []result
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, "result.json"))
		if err != nil {
			continue // that agent was not run
		}
		var r result
		if err := json.Unmarshal(data, &r); err != nil {
			return err
		}
		results = append(results, r)
	}
	if len(results) == 0 {
		return fmt.Errorf("no result.json in %v", dirs)
	}
	var b strings.Builder
	b.WriteString("# NodeConformance against the node agents\n\n")
	b.WriteString("Generated by `make conformance KUBELET=bosun` and `make conformance KUBELET=upstream` (then `make conformance-doc`):\n")
	b.WriteString("the upstream v1.36.3 `e2e.test` specs labelled `NodeConformance && !Serial && !Disruptive && !Flaky && !Slow`,\n")
	b.WriteString("run with the ginkgo CLI against the local cluster of `make up`. Nothing here is typed by hand.\n\n")
	b.WriteString("| agent | passed | failed | skipped | wall time | Bosun commit |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %.0f s | %s |\n", r.Agent, r.Passed, r.Failed, r.Skipped, r.Seconds, r.Commit)
	}
	for _, r := range results {
		if r.Failed == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## Failing specs with %s, by the feature they need\n", r.Agent)
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
			fmt.Fprintf(&b, "\n### %s (%d)\n%s\n", g, len(byGroup[g]), strings.Join(byGroup[g], "\n"))
		}
	}
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
