package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInsecureSettingsAreNamedWithTheirFix(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(loose, []byte(header+"authentication:\n  anonymous: {enabled: true}\nauthorization: {mode: AlwaysAllow}\nreadOnlyPort: 10255\n"+
		"tlsCipherSuites: [TLS_RSA_WITH_RC4_128_SHA]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config=" + loose})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(Insecure(cfg), "\n")
	for _, want := range []string{"anonymous.enabled (--anonymous-auth) is true", "AlwaysAllow", "readOnlyPort (--read-only-port) 10255",
		"clientCAFile (--client-ca-file) is empty", "TLS_RSA_WITH_RC4_128_SHA", "has mode 0644", "chmod 600 " + loose} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings do not say %q:\n%s", want, got)
		}
	}
	tight := filepath.Join(dir, "tight.yaml")
	ca := filepath.Join(dir, "ca.pem")
	_ = os.WriteFile(ca, []byte("x"), 0o600)
	if err := os.WriteFile(tight, []byte(header+"authentication:\n  anonymous: {enabled: false}\n  webhook: {enabled: true}\n  x509: {clientCAFile: "+ca+"}\nauthorization: {mode: Webhook}\nreadOnlyPort: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = Load([]string{"--config=" + tight})
	if err != nil {
		t.Fatal(err)
	}
	if w := Insecure(cfg); len(w) != 0 {
		t.Errorf("a hardened config got warnings: %v", w)
	}
}
