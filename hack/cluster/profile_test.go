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
			// MAX_PODS replaces the profile's maxPods (a key twice would not load)
			// and widens the node's pod CIDR past the add-ons' share of a /24.
			if n.nodeCIDRMask() != 24 {
				t.Errorf("node CIDR mask %d without MAX_PODS", n.nodeCIDRMask())
			}
			n.maxPods = 260
			if text, err = n.kubeletConfig(); err != nil {
				t.Fatal(err)
			}
			if kc, _, err = config.Decode("kubelet-config.yaml", []byte(text)); err != nil || kc.MaxPods != 260 {
				t.Fatalf("with MAX_PODS=260: maxPods %d, %v\n%s", kc.MaxPods, err, text)
			}
			if n.nodeCIDRMask() != 23 || n.settings() != profile+" maxPods=260" {
				t.Errorf("with MAX_PODS=260: mask /%d, settings %q", n.nodeCIDRMask(), n.settings())
			}
			n.logMax = "1Gi"
			if text, err = n.kubeletConfig(); err != nil {
				t.Fatal(err)
			}
			if kc, _, err = config.Decode("kubelet-config.yaml", []byte(text)); err != nil || kc.ContainerLogMaxSize != "1Gi" {
				t.Fatalf("with LOG_MAX_SIZE=1Gi: containerLogMaxSize %q, %v\n%s", kc.ContainerLogMaxSize, err, text)
			}
			if n.settings() != profile+" maxPods=260 containerLogMaxSize=1Gi" {
				t.Errorf("with LOG_MAX_SIZE=1Gi: settings %q", n.settings())
			}
		})
	}
	t.Setenv("PROFILE", "seed")
	t.Setenv("MAX_PODS", "100000")
	if _, err := newLayout(repoRoot(), "bosun"); err == nil {
		t.Error("MAX_PODS=100000 was accepted")
	}
	t.Setenv("MAX_PODS", "")
	t.Setenv("LOG_MAX_SIZE", "lots")
	if _, err := newLayout(repoRoot(), "bosun"); err == nil {
		t.Error("LOG_MAX_SIZE=lots was accepted")
	}
	t.Setenv("LOG_MAX_SIZE", "")
	t.Setenv("PROFILE", "lax")
	if _, err := newLayout(repoRoot(), "bosun"); err == nil {
		t.Error("PROFILE=lax was accepted")
	}
}
