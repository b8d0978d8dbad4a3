//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// startNodePlugin builds a command under hack/ and runs it on node 1, as a
// driver's node plugin would run, until the test ends (then interrupts it).
// It returns a reader of what the plugin has printed so far.
func startNodePlugin(t *testing.T, pkg string, args ...string) func() string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, "../../"+pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v: %s", pkg, err, out)
	}
	logPath := filepath.Join(t.TempDir(), filepath.Base(pkg)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait(); _ = logFile.Close() })
	return func() string { b, _ := os.ReadFile(logPath); return string(b) }
}
