package main

import (
	"strings"
	"testing"

	"github.com/bosun-dev/bosun/internal/config"
)

// Both profiles give each node a config that loads, with its own address,
// runtime and log folder; the hardened one carries deploy/'s settings.
func TestKubeletConfigProfiles(t *testing.T) {
	for _, profile := range []string{"seed", "hardened"} {
		t.Run(profile, func(t *testing.T) {
			t.Setenv("PROFILE", profile)
			t.Setenv("NODES", "2")
			l, err := newLayout(repoRoot(), "bosun")
			if err != nil {
				t.Fatal(err)
			}
			n := l.on(2)
			text, err := n.kubeletConfig()
			if err != nil {
				t.Fatal(err)
			}
			kc, warnings, err := config.Decode("kubelet-config.yaml", []byte(text))
			if err != nil || len(warnings) > 0 {
				t.Fatalf("decode: %v %v\n%s", err, warnings, text)
			}
			if kc.Address != n.node.ip || kc.ContainerRuntimeEndpoint != "unix://"+n.containerdSock() || kc.PodLogsDir != n.podLogsDir() || kc.CgroupRoot != n.cgroupRoot() {
				t.Errorf("node values: address %q, runtime %q, pod logs %q, cgroup root %q", kc.Address, kc.ContainerRuntimeEndpoint, kc.PodLogsDir, kc.CgroupRoot)
			}
			if got := strings.Contains(text, "tlsCipherSuites"); got != (profile == "hardened") {
				t.Errorf("tlsCipherSuites present = %v for profile %s", got, profile)
			}
			if strings.Contains(text, "##") || strings.Contains(text, "{{") {
				t.Errorf("a placeholder is left:\n%s", text)
			}
		})
	}
	t.Setenv("PROFILE", "lax")
	if _, err := newLayout(repoRoot(), "bosun"); err == nil {
		t.Error("PROFILE=lax was accepted")
	}
}
