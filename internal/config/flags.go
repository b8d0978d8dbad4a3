package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
	logsapi "k8s.io/component-base/logs/api/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// Options are the command-line settings that have no KubeletConfiguration
// field: where the node's files are and who the node is.
type Options struct {
	RootDir                string            // --root-dir: pods, volumes, plugins
	BootstrapKubeconfig    string            // --bootstrap-kubeconfig: the bootstrap-token kubeconfig
	CertDir                string            // --cert-dir: kubelet-client-*.pem, kubelet-server-*.pem
	Kubeconfig             string            // --kubeconfig: written after TLS bootstrap
	ConfigFile             string            // --config: the KubeletConfiguration file
	HostnameOverride       string            // --hostname-override: the node's name
	NodeIP                 string            // --node-ip: the node's InternalIP(s), comma-separated
	PodInfraContainerImage string            // --pod-infra-container-image: kept out of image GC
	NodeLabels             map[string]string // --node-labels: labels to register with
	MinContainerTTL        time.Duration     // --minimum-container-ttl-duration: dead containers younger stay
	MaxDeadPerContainer    int               // --maximum-dead-containers-per-container: dead instances kept
	Verbosity              int               // --v: log verbosity
	ShowVersion            bool              // --version
	ShowHelp               bool              // --help
}

// deprecatedConfigFlag is upstream's word for a flag with a config-file field.
const deprecatedConfigFlag = "This parameter should be set via the config file specified by the Kubelet's --config flag. " +
	"See https://kubernetes.io/docs/tasks/administer-cluster/kubelet-config-file/ for more information."

// removedFlags are flags the seed's unit files use that upstream has removed.
// Bosun accepts them, warns once, and says what replaces them.
var removedFlags = map[string]string{
	"allow-privileged": "it was removed in v1.15: the apiserver's --allow-privileged and Pod Security admission decide; Bosun runs privileged containers that reach it",
	"image-pull-progress-deadline": "it was removed with dockershim in v1.24: the CRI runtime bounds image pulls " +
		"(containerd: image_pull_progress_timeout)",
	"logtostderr": "it was removed in v1.26: Bosun always logs to stderr",
	"pod-infra-container-image": "it was removed in v1.35: the CRI runtime's sandbox image is used (containerd: sandbox_image); " +
		"Bosun still keeps the named image out of image garbage collection",
}

// newFlagSet binds the kubelet's flags to o and kc. Flags that name a
// KubeletConfiguration field write into kc only when given.
func newFlagSet(o *Options, kc *kubeletv1beta1.KubeletConfiguration) *pflag.FlagSet {
	fs := pflag.NewFlagSet("bosun", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.RootDir, "root-dir", "/var/lib/kubelet", "Directory path for managing kubelet files (volume mounts, etc).")
	fs.StringVar(&o.BootstrapKubeconfig, "bootstrap-kubeconfig", "", "Path to a kubeconfig file used to get a client certificate for the kubelet (TLS bootstrap).")
	fs.StringVar(&o.CertDir, "cert-dir", "/var/lib/kubelet/pki", "The directory where the TLS certs are located.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "Path to a kubeconfig file specifying how to connect to the API server; written after TLS bootstrap.")
	fs.StringVar(&o.ConfigFile, "config", "", "The Kubelet will load its initial configuration from this file (kubelet.config.k8s.io/v1beta1, YAML or JSON).")
	fs.StringVar(&o.HostnameOverride, "hostname-override", "", "If non-empty, will use this string as identification instead of the actual hostname.")
	fs.StringVar(&o.NodeIP, "node-ip", "", "IP address (or comma-separated dual-stack IP addresses) of the node.")
	fs.StringToStringVar(&o.NodeLabels, "node-labels", nil, "Labels to add when registering the node in the cluster (key=value pairs separated by ',').")
	fs.DurationVar(&o.MinContainerTTL, "minimum-container-ttl-duration", 0, "Minimum age for a finished container before it is garbage collected.")
	fs.IntVar(&o.MaxDeadPerContainer, "maximum-dead-containers-per-container", 1, "Maximum number of old instances to retain per container.")
	_ = fs.MarkDeprecated("minimum-container-ttl-duration", "Use --eviction-hard or --eviction-soft instead. Will be removed in a future version.")
	_ = fs.MarkDeprecated("maximum-dead-containers-per-container", "Use --eviction-hard or --eviction-soft instead. Will be removed in a future version.")
	fs.IntVarP(&o.Verbosity, "v", "v", 0, "number for the log level verbosity (logging.verbosity)")
	fs.StringVar(&kc.Logging.Format, "logging-format", kc.Logging.Format, "Sets the log format: text or json (logging.format).")
	fs.Var((*vmoduleValue)(&kc.Logging.VModule), "vmodule", "Comma-separated list of pattern=N settings for file-filtered logging, text format only (logging.vmodule).")
	fs.BoolVar(&o.ShowVersion, "version", false, "Print version information and quit.")
	fs.BoolVarP(&o.ShowHelp, "help", "h", false, "Print this help and quit.")
	fs.StringVar(&o.PodInfraContainerImage, "pod-infra-container-image", "", "Deprecated.")
	fs.Bool("allow-privileged", true, "Deprecated.")
	fs.String("image-pull-progress-deadline", "", "Deprecated.")
	fs.Bool("logtostderr", true, "Deprecated.")
	for name, why := range removedFlags {
		_ = fs.MarkDeprecated(name, why)
	}
	bindConfigFlags(fs, kc)
	return fs
}

// bindConfigFlags registers the flags that set KubeletConfiguration fields,
// each marked as upstream marks it: to be set in the config file instead.
func bindConfigFlags(fs *pflag.FlagSet, kc *kubeletv1beta1.KubeletConfiguration) {
	cfs := pflag.NewFlagSet("config", pflag.ContinueOnError)
	registerConfigFlags(cfs, kc)
	cfs.VisitAll(func(f *pflag.Flag) {
		_ = cfs.MarkDeprecated(f.Name, deprecatedConfigFlag)
		f.Hidden = false // MarkDeprecated hides a flag; upstream's --help lists these
	})
	fs.AddFlagSet(cfs)
}

func registerConfigFlags(fs *pflag.FlagSet, kc *kubeletv1beta1.KubeletConfiguration) {
	fs.StringVar(&kc.Address, "address", kc.Address, "The IP address for the Kubelet to serve on.")
	fs.Int32Var(&kc.Port, "port", kc.Port, "The port for the Kubelet to serve on.")
	fs.Int32Var(&kc.ReadOnlyPort, "read-only-port", kc.ReadOnlyPort, "The read-only port for the Kubelet to serve on with no authentication/authorization (0 to disable).")
	fs.Var(int32PtrValue{&kc.HealthzPort}, "healthz-port", "The port of the localhost healthz endpoint (0 to disable).")
	fs.StringVar(&kc.HealthzBindAddress, "healthz-bind-address", kc.HealthzBindAddress, "The IP address for the healthz server to serve on.")
	fs.StringVar(&kc.TLSCertFile, "tls-cert-file", kc.TLSCertFile, "File containing x509 Certificate used for serving HTTPS.")
	fs.StringVar(&kc.TLSPrivateKeyFile, "tls-private-key-file", kc.TLSPrivateKeyFile, "File containing x509 private key matching --tls-cert-file.")
	fs.BoolVar(&kc.RotateCertificates, "rotate-certificates", kc.RotateCertificates, "Auto rotate the kubelet client certificates.")
	fs.Var(boolPtrValue{&kc.Authentication.Anonymous.Enabled}, "anonymous-auth", "Enables anonymous requests to the Kubelet server.")
	fs.Var(boolPtrValue{&kc.Authentication.Webhook.Enabled}, "authentication-token-webhook", "Use the TokenReview API to determine authentication for bearer tokens.")
	fs.StringVar(&kc.Authentication.X509.ClientCAFile, "client-ca-file", kc.Authentication.X509.ClientCAFile, "A certificate bundle that signs client certificates.")
	fs.Var((*authzModeValue)(&kc.Authorization.Mode), "authorization-mode", "Authorization mode for Kubelet server: AlwaysAllow or Webhook.")
	fs.StringSliceVar(&kc.ClusterDNS, "cluster-dns", kc.ClusterDNS, "Comma-separated list of DNS server IP addresses.")
	fs.StringSliceVar(&kc.AllowedUnsafeSysctls, "allowed-unsafe-sysctls", kc.AllowedUnsafeSysctls, "Comma-separated list of unsafe sysctls or sysctl patterns (ending in *) pods may set.")
	fs.StringVar(&kc.ClusterDomain, "cluster-domain", kc.ClusterDomain, "Domain for this cluster.")
	fs.Int32Var(&kc.MaxPods, "max-pods", kc.MaxPods, "Number of Pods that can run on this Kubelet.")
	fs.StringVar(&kc.StaticPodPath, "pod-manifest-path", kc.StaticPodPath, "Path to the directory containing static pod files to run.")
	fs.StringVar(&kc.CgroupDriver, "cgroup-driver", kc.CgroupDriver, "Driver that the kubelet uses to manipulate cgroups on the host (cgroupfs or systemd).")
	fs.StringVar(&kc.CgroupRoot, "cgroup-root", kc.CgroupRoot, "Optional root cgroup to use for pods (the cgroupfs driver's parent of kubepods).")
	fs.Var(boolPtrValue{&kc.FailSwapOn}, "fail-swap-on", "Makes the Kubelet fail to start if swap is enabled on the node.")
	fs.Var(boolPtrValue{&kc.FailCgroupV1}, "fail-cgroupv1", "Prevent the kubelet from starting on the host using cgroup v1.")
	fs.Var(int32PtrValue{&kc.KubeAPIQPS}, "kube-api-qps", "QPS to use while talking with kubernetes apiserver.")
	fs.Int32Var(&kc.KubeAPIBurst, "kube-api-burst", kc.KubeAPIBurst, "Burst to use while talking with kubernetes apiserver.")
	fs.Var(int32PtrValue{&kc.EventRecordQPS}, "event-qps", "QPS to limit event creations. The number must be >= 0. If 0 will use DefaultQPS: 5.")
	fs.Int32Var(&kc.EventBurst, "event-burst", kc.EventBurst, "Maximum size of a bursty event records.")
	fs.Var(int32PtrValue{&kc.RegistryPullQPS}, "registry-qps", "If > 0, limit registry pull QPS to this value. If 0, unlimited.")
	fs.Int32Var(&kc.RegistryBurst, "registry-burst", kc.RegistryBurst, "Maximum size of bursty pulls.")
	fs.Var(boolPtrValue{&kc.SerializeImagePulls}, "serialize-image-pulls", "Pull images one at a time.")
	fs.StringVar(&kc.ContainerRuntimeEndpoint, "container-runtime-endpoint", kc.ContainerRuntimeEndpoint, "The endpoint of the CRI runtime service.")
	fs.DurationVar(&kc.RuntimeRequestTimeout.Duration, "runtime-request-timeout", kc.RuntimeRequestTimeout.Duration, "Timeout of all runtime requests except long running ones.")
	fs.DurationVar(&kc.NodeStatusUpdateFrequency.Duration, "node-status-update-frequency", kc.NodeStatusUpdateFrequency.Duration, "How often the kubelet computes node status.")
	fs.DurationVar(&kc.SyncFrequency.Duration, "sync-frequency", kc.SyncFrequency.Duration, "Max period between synchronizing running containers and config.")
	fs.Var(evictionValue{&kc.EvictionHard}, "eviction-hard", "A set of eviction thresholds (e.g. memory.available<1Gi).")
	fs.Var(boolPtrValue{&kc.RegisterNode}, "register-node", "Register the node with the apiserver.")
	fs.Var(taintsValue{&kc.RegisterWithTaints}, "register-with-taints", "Register the node with the given taints (key=value:Effect, comma-separated).")
	fs.Var(featureGatesValue{&kc.FeatureGates}, "feature-gates", "A set of key=value pairs that describe feature gates.")
	fs.Var(stringPtrValue{&kc.ResolverConfig}, "resolv-conf", "Resolver configuration file used as the basis for the container DNS resolution configuration.")
	fs.StringVar(&kc.HairpinMode, "hairpin-mode", kc.HairpinMode, "How the kubelet sets up hairpin NAT.")
	fs.StringVar(&kc.PodCIDR, "pod-cidr", kc.PodCIDR, "The CIDR to use for pod IP addresses (standalone mode only).")
	fs.Var(int32PtrValue{&kc.ImageGCHighThresholdPercent}, "image-gc-high-threshold", "The percent of disk usage after which image garbage collection is always run.")
	fs.Var(int32PtrValue{&kc.ImageGCLowThresholdPercent}, "image-gc-low-threshold", "The percent of disk usage before which image garbage collection is never run.")
	fs.StringVar(&kc.ContainerLogMaxSize, "container-log-max-size", kc.ContainerLogMaxSize, "Maximum size of a container log file before it is rotated.")
	fs.Var(int32PtrValue{&kc.ContainerLogMaxFiles}, "container-log-max-files", "Maximum number of container log files that can be present for a container.")
	fs.StringVar(&kc.CPUManagerPolicy, "cpu-manager-policy", kc.CPUManagerPolicy, "CPU Manager policy to use: none or static.")
	fs.DurationVar(&kc.CPUManagerReconcilePeriod.Duration, "cpu-manager-reconcile-period", kc.CPUManagerReconcilePeriod.Duration, "CPU Manager reconciliation period.")
	fs.Var(cliflag.NewMapStringString(&kc.CPUManagerPolicyOptions), "cpu-manager-policy-options", "A set of key=value CPU Manager policy options (full-pcpus-only, strict-cpu-reservation).")
	fs.StringVar(&kc.MemoryManagerPolicy, "memory-manager-policy", kc.MemoryManagerPolicy, "Memory Manager policy to use: None or Static.")
	fs.Var(&reservedMemoryValue{r: &kc.ReservedMemory}, "reserved-memory", "A memory reservation per NUMA node, e.g. --reserved-memory 0:memory=1Gi,hugepages-1Gi=2Gi --reserved-memory 1:memory=2Gi; each kind must add up to kube-reserved, system-reserved and the hard eviction threshold.")
	fs.StringVar(&kc.TopologyManagerPolicy, "topology-manager-policy", kc.TopologyManagerPolicy, "Topology Manager policy to use: none, best-effort, restricted or single-numa-node.")
	fs.StringVar(&kc.TopologyManagerScope, "topology-manager-scope", kc.TopologyManagerScope, "Scope to which topology hints apply: container or pod.")
	fs.Var(cliflag.NewMapStringString(&kc.TopologyManagerPolicyOptions), "topology-manager-policy-options", "A set of key=value Topology Manager policy options (prefer-closest-numa-nodes, max-allowable-numa-nodes).")
	fs.StringVar(&kc.ReservedSystemCPUs, "reserved-cpus", kc.ReservedSystemCPUs, "A comma-separated list of CPUs or CPU ranges reserved for system and kubernetes usage; overrides the cpu of --system-reserved and --kube-reserved.")
}

type authzModeValue kubeletv1beta1.KubeletAuthorizationMode

func (v *authzModeValue) Set(s string) error { *v = authzModeValue(s); return nil }
func (v *authzModeValue) Type() string       { return "string" }
func (v *authzModeValue) String() string     { return string(*v) }

// stringPtrValue sets a *string field only when the flag is given.
type stringPtrValue struct{ p **string }

func (v stringPtrValue) Set(s string) error { *v.p = &s; return nil }
func (v stringPtrValue) Type() string       { return "string" }
func (v stringPtrValue) String() string {
	if *v.p == nil {
		return ""
	}
	return **v.p
}

// vmoduleValue is logging.vmodule as upstream's --vmodule flag sets it.
type vmoduleValue logsapi.VModuleConfiguration

func (v *vmoduleValue) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		pattern, level, ok := strings.Cut(part, "=")
		n, err := strconv.ParseUint(level, 10, 32)
		if !ok || pattern == "" || err != nil {
			return fmt.Errorf("%q is not pattern=N", part)
		}
		*v = append(*v, logsapi.VModuleItem{FilePattern: pattern, Verbosity: logsapi.VerbosityLevel(n)})
	}
	return nil
}
func (v *vmoduleValue) Type() string { return "pattern=N,..." }
func (v *vmoduleValue) String() string {
	var parts []string
	for _, item := range *v {
		parts = append(parts, fmt.Sprintf("%s=%d", item.FilePattern, item.Verbosity))
	}
	return strings.Join(parts, ",")
}
