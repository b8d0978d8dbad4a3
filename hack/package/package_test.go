package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The packages built from the real bosun: the .deb's files, installed with
// dpkg into a throw-away root and run there, and its unit verified by
// systemd; the .rpm built beside it.
func TestPackages(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bosun")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/bosun")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "packages")
	deb, err := build1(root, bin, "1.2.3", out, "deb")
	if err != nil {
		t.Fatal(err)
	}
	rpm, err := build1(root, bin, "1.2.3", out, "rpm")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(deb) != "bosun_1.2.3_amd64.deb" || filepath.Base(rpm) != "bosun-1.2.3-1.x86_64.rpm" {
		t.Errorf("package names: %s, %s", deb, rpm)
	}
	if st, err := os.Stat(rpm); err != nil || st.Size() < 1<<20 {
		t.Errorf("the rpm is missing or too small to hold bosun: %v", err)
	}

	listing, err := exec.Command("dpkg-deb", "-c", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb -c: %v\n%s", err, listing)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(listing)), "\n") {
		f := strings.Fields(line)
		got = append(got, f[0]+" "+f[len(f)-1])
	}
	sort.Strings(got)
	want := []string{
		"-rw-r--r-- ./lib/systemd/system/bosun.service",
		"-rw-r--r-- ./usr/share/bosun/examples/kubelet-config.json",
		"-rw-r--r-- ./usr/share/bosun/examples/kubelet-config.yaml",
		"-rwxr-xr-x ./usr/bin/bosun",
		"drwx------ ./etc/kubernetes/cert/",
		"drwx------ ./var/lib/kubelet/",
	}
	for _, w := range want {
		if i := sort.SearchStrings(got, w); i == len(got) || got[i] != w {
			t.Errorf("the .deb lacks %q; it holds:\n%s", w, strings.Join(got, "\n"))
		}
	}

	// Installed with dpkg into a throw-away root, the binary runs.
	r := filepath.Join(dir, "root")
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(r, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("dpkg", "--root="+r, "--log=/dev/null", "--force-not-root", "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	version, err := exec.Command(filepath.Join(r, "usr/bin/bosun"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(version), "Kubernetes v1.") {
		t.Errorf("the installed bosun --version: %v: %s", err, version)
	}
	help, _ := exec.Command(filepath.Join(r, "usr/bin/bosun"), "join", "--help").CombinedOutput()
	if !strings.Contains(string(help), "--discovery-token-ca-cert-hash") {
		t.Errorf("the installed bosun join --help:\n%s", help)
	}

	// The unit, pointed at the installed binary, passes systemd's checks
	// without a warning.
	unit, err := os.ReadFile(filepath.Join(r, "lib/systemd/system/bosun.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/bosun \\\n") || !strings.Contains(string(unit), "--bootstrap-kubeconfig=/etc/kubernetes/kubelet-bootstrap.kubeconfig") {
		t.Errorf("the unit does not start /usr/bin/bosun with the seed's flags:\n%s", unit)
	}
	check := filepath.Join(dir, "units", "bosun.service")
	if err := os.MkdirAll(filepath.Dir(check), 0o755); err != nil {
		t.Fatal(err)
	}
	local := strings.ReplaceAll(string(unit), "/usr/bin/bosun", filepath.Join(r, "usr/bin/bosun"))
	if err := os.WriteFile(check, []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	verify, err := exec.Command("systemd-analyze", "verify", check).CombinedOutput()
	if err != nil || strings.TrimSpace(string(verify)) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, verify)
	}
}
