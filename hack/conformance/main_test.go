package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const junitTemplate = `<?xml version="1.0"?>
<testsuites><testsuite>%s</testsuite></testsuites>`

func writeRun(t *testing.T, dir, agent string, passes map[string]string) {
	t.Helper()
	env := "suite=certified\nagent=" + agent + "\ncommit=abc1234\nnodes=2\nruntime=containerd2\nmachine=2 cores\n"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "run.env"), []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for pass, cases := range passes {
		if err := os.MkdirAll(filepath.Join(dir, pass), 0o755); err != nil {
			t.Fatal(err)
		}
		xml := strings.Replace(junitTemplate, "%s", cases, 1)
		if err := os.WriteFile(filepath.Join(dir, pass, "junit.xml"), []byte(xml), 0o644); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, pass+" procs=1 seconds=10 exit=0")
	}
	if err := os.WriteFile(filepath.Join(dir, "passes"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSummaryMergesPassesAndDocListsBosunDefects(t *testing.T) {
	root := t.TempDir()
	up, bosun := filepath.Join(root, "upstream"), filepath.Join(root, "bosun")
	writeRun(t, up, "upstream", map[string]string{
		"parallel": `<testcase name="[It] [sig-node] Pods works [Conformance]"/><testcase name="[It] [sig-network] DNS resolves [Conformance]"><failure message="no dig"/></testcase>`,
		"serial":   `<testcase name="[It] [sig-apps] Daemon set updates [Serial] [Conformance]"/><testcase name="[SynchronizedBeforeSuite]"/>`,
	})
	writeRun(t, bosun, "bosun", map[string]string{
		"parallel": `<testcase name="[It] [sig-node] Pods works [Conformance]"><failure message="[FAILED] pod never ran"/></testcase><testcase name="[It] [sig-network] DNS resolves [Conformance]"><failure message="no dig"/></testcase>`,
		"serial":   `<testcase name="[It] [sig-apps] Daemon set updates [Serial] [Conformance]"/>`,
	})
	for _, d := range []string{up, bosun} {
		if err := summarize(d); err != nil {
			t.Fatal(err)
		}
	}
	var r result
	data, err := os.ReadFile(filepath.Join(bosun, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if r.Passed != 1 || r.Failed != 2 || r.Seconds != 20 || r.Suite != "certified" || r.Commit != "abc1234" || len(r.Passes) != 2 {
		t.Errorf("bosun result %+v: want 1 passed, 2 failed over 2 passes of 10 s, suite certified, commit abc1234", r)
	}
	out := filepath.Join(root, "conformance.md")
	if err := doc(out, []string{up, bosun}); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(out)
	text := string(md)
	defects := text[strings.Index(text, "Bosun's defects"):]
	defects = defects[:strings.Index(defects, "### Failing specs")]
	if !strings.Contains(text, "the upstream kubelet passes (1): Bosun's defects") || !strings.Contains(defects, "Pods works") || strings.Contains(defects, "DNS resolves") {
		t.Errorf("the defects list should name the one spec only Bosun fails:\n%s", defects)
	}
	if !strings.Contains(text, "| upstream | 2 | 1 |") || !strings.Contains(text, "| bosun | 1 | 2 |") {
		t.Errorf("the table lacks either agent's counts:\n%s", text)
	}
}

// A suite whose records are gone keeps the section an earlier run wrote;
// a suite with records is written afresh.
func TestDocKeepsSectionsOfSuitesWithoutRecords(t *testing.T) {
	root := t.TempDir()
	certified := filepath.Join(root, "certified")
	writeRun(t, certified, "bosun", map[string]string{"parallel": `<testcase name="[It] [sig-node] Pods works [Conformance]"/>`})
	if err := summarize(certified); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "conformance.md")
	if err := doc(out, []string{certified}); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(out)

	node := filepath.Join(root, "node")
	writeRun(t, node, "upstream", map[string]string{"parallel": `<testcase name="[It] [sig-node] Pods lists [NodeConformance]"><failure message="gone"/></testcase>`})
	env, _ := os.ReadFile(filepath.Join(node, "run.env"))
	if err := os.WriteFile(filepath.Join(node, "run.env"), []byte(strings.Replace(string(env), "suite=certified", "suite=node", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := summarize(node); err != nil {
		t.Fatal(err)
	}
	if err := doc(out, []string{filepath.Join(root, "absent"), node}); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(out)
	text := string(second)
	certifiedSection := string(first)[strings.Index(string(first), "\n## "):]
	if !strings.Contains(text, certifiedSection) {
		t.Errorf("the certified section of the first doc was not kept:\n%s", text)
	}
	if !strings.Contains(text, "\n## "+suiteTitles["node"]) || !strings.Contains(text, "| upstream | 0 | 1 |") {
		t.Errorf("the node suite's new record is missing:\n%s", text)
	}
	if strings.Index(text, suiteTitles["certified"]) > strings.Index(text, suiteTitles["node"]) {
		t.Errorf("sections out of order:\n%s", text)
	}
}
