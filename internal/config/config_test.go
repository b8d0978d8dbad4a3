package config

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

func seedArgs(configFile string, extra ...string) []string {
	return append([]string{
		"--root-dir=/var/lib/kubelet", "--bootstrap-kubeconfig=/etc/kubernetes/kubelet-bootstrap.kubeconfig",
		"--cert-dir=/etc/kubernetes/cert", "--kubeconfig=/etc/kubernetes/kubelet.kubeconfig",
		"--config=" + configFile, "--hostname-override=node-1",
		"--pod-infra-container-image=registry.k8s.io/pause:3.10.2",
	}, extra...)
}

// The seed's newer unit file, flags and all, with its YAML config.
func TestLoadSeedYAMLWithSeedUnitFlags(t *testing.T) {
	cfg, err := Load(seedArgs("testdata/seed-v1-kubelet-config.yaml",
		"--allow-privileged=true", "--event-qps=0", "--kube-api-qps=1000", "--kube-api-burst=2000",
		"--registry-qps=0", "--image-pull-progress-deadline=30m", "--logtostderr=true", "--v=2"))
	if err != nil {
		t.Fatal(err)
	}
	kc := cfg.Kubelet
	if *kc.Authentication.Anonymous.Enabled || !*kc.Authentication.Webhook.Enabled || kc.Authorization.Mode != "Webhook" {
		t.Errorf("auth from the file lost: %+v %+v", kc.Authentication, kc.Authorization)
	}
	if kc.Authentication.X509.ClientCAFile != "/etc/kubernetes/cert/ca.pem" || kc.MaxPods != 220 || kc.Address != "172.27.128.150" {
		t.Errorf("file values lost: ca=%q maxPods=%d address=%q", kc.Authentication.X509.ClientCAFile, kc.MaxPods, kc.Address)
	}
	if kc.RuntimeRequestTimeout.Duration != 15*time.Minute || !kc.ServerTLSBootstrap || !kc.RotateCertificates {
		t.Errorf("runtimeRequestTimeout=%v serverTLSBootstrap=%v rotate=%v", kc.RuntimeRequestTimeout, kc.ServerTLSBootstrap, kc.RotateCertificates)
	}
	// Flags win over the file and the defaults.
	if *kc.KubeAPIQPS != 1000 || kc.KubeAPIBurst != 2000 || *kc.EventRecordQPS != 0 || *kc.RegistryPullQPS != 0 {
		t.Errorf("flag overrides: kubeAPIQPS=%d burst=%d eventQPS=%d registryQPS=%d", *kc.KubeAPIQPS, kc.KubeAPIBurst, *kc.EventRecordQPS, *kc.RegistryPullQPS)
	}
	// Defaults for what neither set.
	if *kc.HealthzPort != 10248 || kc.HealthzBindAddress != "127.0.0.1" || kc.NodeLeaseDurationSeconds != 40 || kc.ReadOnlyPort != 0 {
		t.Errorf("defaults: healthz=%s:%d lease=%d readOnly=%d", kc.HealthzBindAddress, *kc.HealthzPort, kc.NodeLeaseDurationSeconds, kc.ReadOnlyPort)
	}
	if cfg.HostnameOverride != "node-1" || cfg.CertDir != "/etc/kubernetes/cert" || cfg.Verbosity != 2 {
		t.Errorf("options: %+v", cfg.Options)
	}
	joined := strings.Join(cfg.Warnings, "\n")
	for _, want := range []string{"--allow-privileged has been deprecated", "--image-pull-progress-deadline has been deprecated",
		"--logtostderr has been deprecated", "--pod-infra-container-image has been deprecated", "--kube-api-qps has been deprecated, This parameter should be set via the config file"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings lack %q:\n%s", want, joined)
		}
	}
}

// The older seed's JSON has a trailing comma: loaded, with a warning naming it.
func TestLoadSeedJSONWithTrailingComma(t *testing.T) {
	cfg, err := Load(seedArgs("testdata/seed-v0-kubelet.config.json"))
	if err != nil {
		t.Fatal(err)
	}
	kc := cfg.Kubelet
	if kc.Authorization.Mode != "AlwaysAllow" || !*kc.Authentication.Anonymous.Enabled || kc.ReadOnlyPort != 10255 {
		t.Errorf("file values lost: mode=%s anonymous=%v readOnly=%d", kc.Authorization.Mode, *kc.Authentication.Anonymous.Enabled, kc.ReadOnlyPort)
	}
	joined := strings.Join(cfg.Warnings, "\n")
	if !strings.Contains(joined, "is not valid JSON") || !strings.Contains(joined, "line 11") || !strings.Contains(joined, "trailing comma") {
		t.Errorf("no warning naming the trailing comma:\n%s", joined)
	}
	if !strings.Contains(joined, "RotateKubeletClientCertificate=true is ignored") {
		t.Errorf("no warning for the removed feature gate:\n%s", joined)
	}
}

// The configz dump the seed shows loads as a config file.
func TestLoadSeedConfigzDump(t *testing.T) {
	cfg, err := Load([]string{"--config=testdata/seed-configz.json"})
	if err != nil {
		t.Fatal(err)
	}
	kc := cfg.Kubelet
	if kc.MaxPods != 2000 || kc.EvictionHard["memory.available"] != "100Mi" || kc.StreamingConnectionIdleTimeout.Duration != 4*time.Hour {
		t.Errorf("maxPods=%d evictionHard=%v idle=%v", kc.MaxPods, kc.EvictionHard, kc.StreamingConnectionIdleTimeout)
	}
	if *kc.OOMScoreAdj != -999 || kc.ContentType != "application/vnd.kubernetes.protobuf" {
		t.Errorf("oomScoreAdj=%d contentType=%s", *kc.OOMScoreAdj, kc.ContentType)
	}
}

// Without a config file the defaults are the secure ones.
func TestDefaultsAreSecureWithoutConfigFile(t *testing.T) {
	cfg, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	kc := cfg.Kubelet
	if *kc.Authentication.Anonymous.Enabled || kc.Authorization.Mode != "Webhook" || kc.ReadOnlyPort != 0 || !*kc.Authentication.Webhook.Enabled {
		t.Errorf("insecure defaults: anonymous=%v mode=%s readOnly=%d", *kc.Authentication.Anonymous.Enabled, kc.Authorization.Mode, kc.ReadOnlyPort)
	}
	if kc.EvictionHard["memory.available"] != "100Mi" || kc.EvictionHard["nodefs.available"] != "10%" || len(kc.EvictionHard) != 5 {
		t.Errorf("evictionHard defaults %v", kc.EvictionHard)
	}
	if kc.MaxPods != 110 || !*kc.FailSwapOn || kc.ContainerRuntimeEndpoint != "unix:///run/containerd/containerd.sock" {
		t.Errorf("maxPods=%d failSwapOn=%v endpoint=%s", kc.MaxPods, *kc.FailSwapOn, kc.ContainerRuntimeEndpoint)
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

const header = "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\n"

func TestBadInputsNameTheProblem(t *testing.T) {
	cases := []struct {
		name string
		args func(t *testing.T) []string
		want string
	}{
		{"unknown flag", func(*testing.T) []string { return []string{"--no-such-flag"} }, "unknown flag: --no-such-flag"},
		{"bad flag value", func(*testing.T) []string { return []string{"--max-pods=lots"} }, "max-pods"},
		{"missing file", func(*testing.T) []string { return []string{"--config=/nonexistent/kubelet.yaml"} }, "/nonexistent/kubelet.yaml"},
		{"empty file", func(t *testing.T) []string { return []string{"--config=" + writeConfig(t, "  \n")} }, "is empty"},
		{"broken yaml", func(t *testing.T) []string { return []string{"--config=" + writeConfig(t, header+"maxPods: [\n")} }, "line"},
		{"no kind", func(t *testing.T) []string { return []string{"--config=" + writeConfig(t, "maxPods: 3\n")} }, "'kind' is missing"},
		{"wrong kind", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, "kind: Pod\napiVersion: v1\n")}
		}, `kind "Pod" apiVersion "v1" is not supported`},
		{"wrong type", func(t *testing.T) []string { return []string{"--config=" + writeConfig(t, header+"maxPods: many\n")} }, `field "maxPods"`},
		{"port out of range", func(t *testing.T) []string { return []string{"--config=" + writeConfig(t, header+"port: 70000\n")} }, "port (--port) 70000 must be between 1 and 65535"},
		{"bad auth mode", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"authorization:\n  mode: Sometimes\n")}
		}, `authorization.mode (--authorization-mode) "Sometimes"`},
		{"systemd driver with a cgroupRoot", func(*testing.T) []string { return []string{"--cgroup-driver=systemd", "--cgroup-root=/custom"} },
			`cgroupRoot (--cgroup-root) "/custom" with cgroupDriver systemd is not supported by Bosun`},
		{"bad eviction signal", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"evictionHard:\n  disk.free: 10%\n")}
		}, `unknown signal "disk.free"`},
		{"bad eviction value", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"evictionHard:\n  memory.available: 150%\n")}
		}, "memory.available"},
		{"bad gc thresholds", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"imageGCHighThresholdPercent: 50\nimageGCLowThresholdPercent: 60\n")}
		}, "imageGCLowThresholdPercent (--image-gc-low-threshold) 60 must be less than"},
		{"bad address", func(*testing.T) []string { return []string{"--address=not-an-ip"} }, `address (--address) "not-an-ip"`},
		{"bad taint", func(*testing.T) []string { return []string{"--register-with-taints=a=b"} }, "lacks an effect"},
		{"bad eviction flag", func(*testing.T) []string { return []string{"--eviction-hard=memory.available=1Gi"} }, "signal<threshold"},
		{"relative cgroup root", func(*testing.T) []string { return []string{"--cgroup-root=bosun"} }, `cgroupRoot (--cgroup-root) "bosun" must be an absolute`},
		{"cgroup root with systemd", func(*testing.T) []string { return []string{"--cgroup-root=/bosun", "--cgroup-driver=systemd"} }, "is not supported by Bosun"},
		{"stray argument", func(*testing.T) []string { return []string{"run"} }, "unexpected arguments"},
		{"unsafe sysctl not namespaced", func(*testing.T) []string { return []string{"--allowed-unsafe-sysctls=vm.swappiness"} }, `the sysctl "vm.swappiness" are not known to be namespaced`},
		{"unsafe sysctl pattern not namespaced", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"allowedUnsafeSysctls: [\"kernel.*\"]\n")}
		}, `the sysctls "kernel.*" are not known to be namespaced`},
		{"allow-privileged off", func(*testing.T) []string { return []string{"--allow-privileged=false"} }, "--allow-privileged=false cannot be honoured"},
		{"bad pull verification policy", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"imagePullCredentialsVerificationPolicy: Sometimes\n")}
		}, `option "Sometimes" specified for imagePullCredentialsVerificationPolicy`},
		{"allowlist without its policy", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"preloadedImagesVerificationAllowlist: [\"registry.example/app\"]\n")}
		}, "preloadedImagesVerificationAllowlist can only be set with imagePullCredentialsVerificationPolicy"},
		{"bad allowlist pattern", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages\npreloadedImagesVerificationAllowlist: [\"registry.example/*/app\"]\n")}
		}, "only patterns ending with '/*'"},
		{"image maximum age below the minimum", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"imageMinimumGCAge: 10m\nimageMaximumGCAge: 5m\n")}
		}, "imageMaximumGCAge 5m0s must be greater than imageMinimumGCAge 10m0s"},
		{"static cpu manager options", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"cpuManagerPolicy: static\ncpuManagerPolicyOptions:\n  distribute-cpus-across-numa: \"true\"\n")}
		},
			`not supported by Bosun yet: cpuManagerPolicyOptions (--cpu-manager-policy-options) distribute-cpus-across-numa`},
		{"alpha cpu manager option without its gate", func(*testing.T) []string {
			return []string{"--cpu-manager-policy=static", "--cpu-manager-policy-options=align-by-socket=true"}
		},
			`CPU Manager Policy Alpha-level Options not enabled, but option "align-by-socket" provided`},
		{"conflicting cpu manager options", func(*testing.T) []string {
			return []string{"--cpu-manager-policy=static", "--feature-gates=CPUManagerPolicyAlphaOptions=true",
				"--cpu-manager-policy-options=full-pcpus-only=true,distribute-cpus-across-cores=true"}
		},
			`static policy options full-pcpus-only and distribute-cpus-across-cores can not be used at the same time`},
		{"cpu manager options under none", func(*testing.T) []string {
			return []string{"--cpu-manager-policy-options=full-pcpus-only=true"}
		},
			`the None policy takes no options`},
		{"unknown cpu manager policy", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"cpuManagerPolicy: dynamic\n")}
		},
			`cpuManagerPolicy (--cpu-manager-policy) "dynamic" must be one of`},
		{"bad reserved cpus", func(*testing.T) []string { return []string{"--reserved-cpus=0-x"} },
			`unable to parse reservedSystemCPUs (--reserved-cpus) 0-x`},
		{"reserved cpus with a reserved cgroup", func(t *testing.T) []string {
			return []string{"--reserved-cpus=0", "--config=" + writeConfig(t, header+"kubeReservedCgroup: /kube.slice\n")}
		}, `can't use reservedSystemCPUs (--reserved-cpus) with systemReservedCgroup (--system-reserved-cgroup) or kubeReservedCgroup`},
		{"memory manager BestEffort", func(*testing.T) []string { return []string{"--memory-manager-policy=BestEffort"} },
			`memoryManagerPolicy (--memory-manager-policy) "BestEffort" is not available for platform "linux"`},
		{"reserved memory of zero", func(*testing.T) []string { return []string{"--reserved-memory=0:memory=0"} },
			`reserved memory may not be zero for NUMA node 0 and resource "memory"`},
		{"reserved memory of cpu", func(*testing.T) []string { return []string{"--reserved-memory=1:cpu=1"} },
			`the limit type "cpu" for NUMA node 1 is not supported`},
		{"reserved memory without a node", func(*testing.T) []string { return []string{"--reserved-memory=memory=1Gi"} },
			`is not of the form numaNode:type=quantity`},
		{"topology manager option too small", func(t *testing.T) []string {
			return []string{"--topology-manager-policy=restricted", "--topology-manager-policy-options=max-allowable-numa-nodes=4"}
		},
			`topologyManagerPolicyOptions (--topology-manager-policy-options): the minimum value of "max-allowable-numa-nodes" should not be less than 8`},
		{"unknown topology manager option", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"topologyManagerPolicy: best-effort\ntopologyManagerPolicyOptions:\n  align-by-socket: \"true\"\n")}
		},
			`unknown Topology Manager Policy option: "align-by-socket"`},
		{"soft eviction without a grace period", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"evictionSoft:\n  memory.available: 1Gi\n")}
		}, "evictionSoft (--eviction-soft)[memory.available] has no grace period in evictionSoftGracePeriod"},
		{"bad soft grace period", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"evictionSoft:\n  memory.available: 1Gi\nevictionSoftGracePeriod:\n  memory.available: soon\n")}
		}, `evictionSoftGracePeriod (--eviction-soft-grace-period)[memory.available] "soon" is not a duration`},
		{"user namespace length", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"userNamespaces:\n  idsPerPod: 70000\n")}
		}, "userNamespaces.idsPerPod 70000 must be a multiple of 65536"},
		{"allocatable memory signal", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"evictionHard:\n  allocatableMemory.available: 100Mi\n")}
		}, "not supported by Bosun yet: evictionHard (--eviction-hard) signal allocatableMemory.available"},
		{"unknown swap behavior", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"memorySwap:\n  swapBehavior: UnlimitedSwap\n")}
		}, `memorySwap.swapBehavior`},
		{"enforcing system-reserved without its cgroup", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"enforceNodeAllocatable: [pods, system-reserved]\n")}
		},
			`systemReservedCgroup (--system-reserved-cgroup) must be specified when "system-reserved" or "system-reserved-compressible" included`},
		{"enforcing kube-reserved twice over", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"kubeReservedCgroup: /kube\nenforceNodeAllocatable: [pods, kube-reserved, kube-reserved-compressible]\n")}
		},
			`both "kube-reserved" and "kube-reserved-compressible" cannot be specified together`},
		{"unknown enforcement", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"enforceNodeAllocatable: [pods, everything]\n")}
		},
			`option "everything" specified for enforceNodeAllocatable (--enforce-node-allocatable)`},
		{"graceful node shutdown", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"shutdownGracePeriod: 30s\nshutdownGracePeriodCriticalPods: 10s\n")}
		}, "not supported by Bosun yet: shutdownGracePeriod"},
		{"no node registration", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"registerNode: false\n")}
		},
			"registerNode (--register-node) false"},
		{"run once", func(t *testing.T) []string { return []string{"--config=" + writeConfig(t, header+"runOnce: true\n")} }, "runOnce"},
		{"attach by the agent", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"enableControllerAttachDetach: false\n")}
		}, "enableControllerAttachDetach (--enable-controller-attach-detach) false"},
		{"negative image maximum age", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"imageMaximumGCAge: -72h\n")}
		},
			"imageMaximumGCAge -72h0m0s must not be negative"},
		{"agent cgroup", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"kubeletCgroups: /kubelet\n")}
		},
			`kubeletCgroups (--kubelet-cgroups) "/kubelet"`},
		{"system cgroup", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"systemCgroups: /system\n")}
		},
			`systemCgroups (--system-cgroups) "/system"`},
		{"memcg notification", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"kernelMemcgNotification: true\n")}
		}, "kernelMemcgNotification"},
		{"journal queries", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"enableSystemLogQuery: true\n")}
		},
			"enableSystemLogQuery"},
		{"hidden metrics", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"showHiddenMetricsForVersion: \"1.35\"\n")}
		}, `showHiddenMetricsForVersion (--show-hidden-metrics-for-version) "1.35"`},
		{"tracing", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"tracing:\n  endpoint: localhost:4317\n")}
		}, "tracing (OpenTelemetry spans)"},
		{"crash-loop ceiling too long", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"crashLoopBackOff:\n  maxContainerRestartPeriod: 10m\n")}
		}, "crashLoopBackOff.maxContainerRestartPeriod 10m0s must be between 1s and 300s"},
		{"crash-loop ceiling with its gate off", func(t *testing.T) []string {
			return []string{"--feature-gates=KubeletCrashLoopBackOffMax=false", "--config=" + writeConfig(t, header+"crashLoopBackOff:\n  maxContainerRestartPeriod: 1m\n")}
		}, "KubeletCrashLoopBackOffMax feature gate is off"},
		{"memory throttling factor", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"memoryThrottlingFactor: 1.5\n")}
		}, "memoryThrottlingFactor 1.5 must be greater than 0"},
		{"tiered memory reservation", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"memoryReservationPolicy: TieredReservation\n")}
		}, `memoryReservationPolicy "TieredReservation" requires MemoryQoS`},
		{"qos reserved cpu", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"qosReserved:\n  cpu: 50%\n")}
		},
			`cannot reserve "cpu" resource`},
		{"qos reserved not a percentage", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"qosReserved:\n  memory: half\n")}
		}, `failed to parse percentage "half"`},
		{"log rotation too often", func(t *testing.T) []string {
			return []string{"--config=" + writeConfig(t, header+"containerLogMonitorInterval: 1s\n")}
		}, "containerLogMonitorInterval must be a positive time duration greater than or equal to 3s"},
		{"pull verification policy with the gate off", func(t *testing.T) []string {
			return []string{"--feature-gates=KubeletEnsureSecretPulledImages=false", "--config=" + writeConfig(t, header+"imagePullCredentialsVerificationPolicy: AlwaysVerify\n")}
		}, "imagePullCredentialsVerificationPolicy must not be set if the KubeletEnsureSecretPulledImages feature gate is not enabled"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args(t))
			if err == nil {
				t.Fatalf("no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestPullVerificationPolicyDefaultsWithTheGate(t *testing.T) {
	cfg, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Kubelet.ImagePullCredentialsVerificationPolicy; got != kubeletv1beta1.NeverVerifyPreloadedImages {
		t.Errorf("default policy %q, want NeverVerifyPreloadedImages (upstream's with the gate on)", got)
	}
	cfg, err = Load([]string{"--feature-gates=KubeletEnsureSecretPulledImages=false"})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Kubelet.ImagePullCredentialsVerificationPolicy; got != "" {
		t.Errorf("policy %q with the gate off, want none", got)
	}
	for _, w := range cfg.Warnings {
		if strings.Contains(w, "KubeletEnsureSecretPulledImages") {
			t.Errorf("a gate Bosun honours is warned about: %s", w)
		}
	}
}

// reservedSystemCPUs becomes the whole CPU reservation, as upstream: the
// node's allocatable loses exactly those CPUs.
func TestReservedCPUsReplaceTheReservedCPU(t *testing.T) {
	f := writeConfig(t, header+"cpuManagerPolicy: static\nkubeReserved:\n  cpu: 500m\n  memory: 100Mi\nsystemReserved:\n  cpu: 200m\n")
	cfg, err := Load([]string{"--config=" + f, "--reserved-cpus=0,2"})
	if err != nil {
		t.Fatal(err)
	}
	kc := cfg.Kubelet
	if _, ok := kc.KubeReserved["cpu"]; ok || kc.KubeReserved["memory"] != "100Mi" {
		t.Errorf("kubeReserved %v, want its memory only", kc.KubeReserved)
	}
	if kc.SystemReserved["cpu"] != "2" {
		t.Errorf("systemReserved %v, want cpu 2", kc.SystemReserved)
	}
	cfg, err = Load([]string{"--config=" + f})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kubelet.KubeReserved["cpu"] != "500m" || cfg.Kubelet.SystemReserved["cpu"] != "200m" {
		t.Errorf("without reservedSystemCPUs: %v %v", cfg.Kubelet.KubeReserved, cfg.Kubelet.SystemReserved)
	}
}

func TestUnknownAndDuplicateFieldsWarn(t *testing.T) {
	f := writeConfig(t, header+"maxPods: 5\nmaxPods: 7\nnoSuchField: 1\n")
	cfg, err := Load([]string{"--config=" + f})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kubelet.MaxPods != 7 {
		t.Errorf("maxPods = %d, want the last value 7", cfg.Kubelet.MaxPods)
	}
	joined := strings.Join(cfg.Warnings, "\n")
	if !strings.Contains(joined, `unknown field "noSuchField"`) || !strings.Contains(joined, "maxPods") {
		t.Errorf("warnings lack the unknown and duplicate fields:\n%s", joined)
	}
}

func TestHelpAndFlagValues(t *testing.T) {
	if _, err := Load([]string{"--help"}); !errors.Is(err, ErrHelp) {
		t.Fatalf("--help gave %v", err)
	}
	if u := Usage(); !strings.Contains(u, "--bootstrap-kubeconfig") || !strings.Contains(u, "--kube-api-qps") {
		t.Errorf("usage lacks flags:\n%s", u)
	}
	// One list sorted by name, as upstream's --help.
	var names []string
	for _, line := range strings.Split(Usage(), "\n") {
		if i := strings.Index(line, "--"); i >= 0 && strings.HasPrefix(strings.TrimSpace(line), "-") {
			names = append(names, strings.Fields(line[i+2:])[0])
		}
	}
	if len(names) < 40 || !sort.StringsAreSorted(names) {
		t.Errorf("flags not one sorted list: %v", names)
	}
	cfg, err := Load([]string{"--node-labels=a=b,c=d", "--register-with-taints=k=v:NoSchedule,x:NoExecute",
		"--eviction-hard=memory.available<1Gi,nodefs.available<5%", "--feature-gates=Foo=true"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeLabels["a"] != "b" || cfg.NodeLabels["c"] != "d" {
		t.Errorf("node labels %v", cfg.NodeLabels)
	}
	taints := cfg.Kubelet.RegisterWithTaints
	if len(taints) != 2 || taints[0].Key != "k" || taints[0].Value != "v" || taints[0].Effect != "NoSchedule" || taints[1].Key != "x" {
		t.Errorf("taints %+v", taints)
	}
	if cfg.Kubelet.EvictionHard["memory.available"] != "1Gi" || cfg.Kubelet.EvictionHard["nodefs.available"] != "5%" {
		t.Errorf("evictionHard %v", cfg.Kubelet.EvictionHard)
	}
}

func TestEvictionHardSetReplacesOrMergesDefaults(t *testing.T) {
	cfg, err := Load([]string{"--config=" + writeConfig(t, header+"evictionHard:\n  memory.available: 1Gi\n")})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Kubelet.EvictionHard) != 1 || cfg.Kubelet.EvictionHard["memory.available"] != "1Gi" {
		t.Errorf("a set evictionHard must replace the defaults: %v", cfg.Kubelet.EvictionHard)
	}
	cfg, err = Load([]string{"--config=" + writeConfig(t, header+"mergeDefaultEvictionSettings: true\nevictionHard:\n  memory.available: 1Gi\n")})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Kubelet.EvictionHard) != 5 || cfg.Kubelet.EvictionHard["memory.available"] != "1Gi" || cfg.Kubelet.EvictionHard["nodefs.available"] != "10%" {
		t.Errorf("merged evictionHard %v", cfg.Kubelet.EvictionHard)
	}
}

// logging (format, verbosity, vmodule) is honoured or refused, never ignored:
// the file's values apply, --v and --logging-format win over them.
func TestLoggingSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "kubelet-config.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(file, []byte("kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("logging:\n  format: json\n  verbosity: 3\n")
	cfg, err := Load([]string{"--config=" + file})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kubelet.Logging.Format != "json" || cfg.Verbosity != 3 || cfg.Kubelet.Logging.Verbosity != 3 {
		t.Errorf("from the file: format %q, verbosity %d (logging %d)", cfg.Kubelet.Logging.Format, cfg.Verbosity, cfg.Kubelet.Logging.Verbosity)
	}
	cfg, err = Load([]string{"--config=" + file, "--v=5", "--logging-format=text", "--vmodule=app*=4,podsync=6"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kubelet.Logging.Format != "text" || cfg.Verbosity != 5 || cfg.Kubelet.Logging.Verbosity != 5 ||
		(*vmoduleValue)(&cfg.Kubelet.Logging.VModule).String() != "app*=4,podsync=6" {
		t.Errorf("flags over the file: format %q, verbosity %d (logging %d), vmodule %v",
			cfg.Kubelet.Logging.Format, cfg.Verbosity, cfg.Kubelet.Logging.Verbosity, cfg.Kubelet.Logging.VModule)
	}
	for args, want := range map[string]string{
		"--logging-format=xml":                `logging.format: Invalid value: "xml": Unsupported log format`,
		"--vmodule=podsync":                   `"podsync" is not pattern=N`,
		"--logging-format=json --vmodule=a=1": "logging.vmodule",
	} {
		_, err := Load(append([]string{"--config=" + file}, strings.Fields(args)...))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", args, err, want)
		}
	}
}

// As upstream's OS validation: cgroup v1 is refused unless failCgroupV1 is
// false, and singleProcessOOMKill cannot be false there; cgroup v2 passes.
func TestValidateHostCgroupVersion(t *testing.T) {
	cfg, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	kc := cfg.Kubelet
	if err := ValidateHost(kc, false); err == nil || !strings.Contains(err.Error(), "failCgroupV1") {
		t.Errorf("cgroup v1 with the default failCgroupV1: %v, want a refusal naming failCgroupV1", err)
	}
	if err := ValidateHost(kc, true); err != nil {
		t.Errorf("cgroup v2: %v", err)
	}
	cfg, err = Load([]string{"--fail-cgroupv1=false"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateHost(cfg.Kubelet, false); err != nil {
		t.Errorf("cgroup v1 with --fail-cgroupv1=false: %v", err)
	}
	off := false
	cfg.Kubelet.SingleProcessOOMKill = &off
	if err := ValidateHost(cfg.Kubelet, false); err == nil || !strings.Contains(err.Error(), "singleProcessOOMKill") {
		t.Errorf("singleProcessOOMKill false on cgroup v1: %v", err)
	}
	if err := ValidateHost(cfg.Kubelet, true); err != nil {
		t.Errorf("singleProcessOOMKill false on cgroup v2: %v", err)
	}
}

// --reserved-memory replaces the file's reservedMemory, and repeated uses
// add up, as upstream's flag.
func TestReservedMemoryFlag(t *testing.T) {
	f := writeConfig(t, header+"memoryManagerPolicy: Static\nreservedMemory:\n- numaNode: 1\n  limits:\n    memory: 1Gi\n")
	cfg, err := Load([]string{"--config=" + f})
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Kubelet.ReservedMemory; len(r) != 1 || r[0].NumaNode != 1 || cfg.Kubelet.MemoryManagerPolicy != "Static" {
		t.Fatalf("from the file: %+v", r)
	}
	cfg, err = Load([]string{"--config=" + f, "--reserved-memory=0:memory=512Mi,hugepages-2Mi=4Mi", "--reserved-memory=2:memory=1Gi"})
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Kubelet.ReservedMemory
	if len(r) != 2 || r[0].NumaNode != 0 || r[1].NumaNode != 2 {
		t.Fatalf("from the flags: %+v", r)
	}
	if q := r[0].Limits["hugepages-2Mi"]; q.String() != "4Mi" {
		t.Errorf("hugepages-2Mi %s", q.String())
	}
}
