package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The hardened profile in deploy/ loads in both forms, the same settings in
// each, and Bosun finds nothing insecure in it (installed 0600, with its CA).
func TestHardenedProfileLoadsAndIsSecure(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("ca"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(name string) *Config {
		data, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.NewReplacer("##NODE_IP##", "10.0.0.5", "/etc/kubernetes/cert/ca.pem", ca).Replace(string(data))
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load([]string{"--config=" + path})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(cfg.Warnings) != 0 {
			t.Errorf("%s: warnings %v", name, cfg.Warnings)
		}
		if w := Insecure(cfg); len(w) != 0 {
			t.Errorf("%s: insecure settings %v", name, w)
		}
		return cfg
	}
	y, j := load("kubelet-config.yaml"), load("kubelet-config.json")
	if !reflect.DeepEqual(y.Kubelet, j.Kubelet) {
		t.Error("the YAML and JSON profiles differ")
	}
	kc := y.Kubelet
	if !*kc.SeccompDefault || *kc.PodPidsLimit != 4096 || kc.TLSMinVersion != "VersionTLS12" || !kc.ServerTLSBootstrap || !kc.RotateCertificates {
		t.Errorf("hardening missing: seccompDefault %v, podPidsLimit %d, tlsMinVersion %s, serverTLSBootstrap %v, rotateCertificates %v",
			*kc.SeccompDefault, *kc.PodPidsLimit, kc.TLSMinVersion, kc.ServerTLSBootstrap, kc.RotateCertificates)
	}
}
