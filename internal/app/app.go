// Package app is Bosun's composition root: it builds every part from the
// configuration, starts them in order and stops them in reverse. It is the
// only package that imports all the others.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	cliflag "k8s.io/component-base/cli/flag"
	"net"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/certificate"
	"k8s.io/component-base/metrics"
	_ "k8s.io/component-base/metrics/prometheus/restclient" // rest_client_* metrics on /metrics
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/bosun-dev/bosun/internal/certs"
	"github.com/bosun-dev/bosun/internal/cgroups"
	"github.com/bosun-dev/bosun/internal/config"
	"github.com/bosun-dev/bosun/internal/csi"
	"github.com/bosun-dev/bosun/internal/eviction"
	"github.com/bosun-dev/bosun/internal/iptables"
	"github.com/bosun-dev/bosun/internal/kernel"
	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
	"github.com/bosun-dev/bosun/internal/nodefeatures"
	"github.com/bosun-dev/bosun/internal/nodestatus"
	"github.com/bosun-dev/bosun/internal/plugins"
	"github.com/bosun-dev/bosun/internal/podresources"
	"github.com/bosun-dev/bosun/internal/probes"
	"github.com/bosun-dev/bosun/internal/runtime"
	"github.com/bosun-dev/bosun/internal/selfmem"
	"github.com/bosun-dev/bosun/internal/server"
	"github.com/bosun-dev/bosun/internal/stats"
	"github.com/bosun-dev/bosun/internal/version"
)

// agentStart is when Run began (the node start-up metrics).
var agentStart time.Time

// Run runs the node agent until ctx ends. Start-up errors are returned and
// logged; once running, parts retry on their own and Run returns nil when ctx
// ends.
func Run(ctx context.Context, cfg *config.Config) error {
	agentStart = time.Now()
	logger := klog.FromContext(ctx)
	err := run(ctx, cfg)
	if err != nil && !errors.Is(err, context.Canceled) {
		logger.Error(err, "Bosun failed to run")
		return err
	}
	logger.Info("Bosun stopped")
	return nil
}

func run(ctx context.Context, cfg *config.Config) error {
	logger := klog.FromContext(ctx)
	kc := cfg.Kubelet
	nodeName, err := nodeNameOf(cfg)
	if err != nil {
		return err
	}
	logger.Info("Starting Bosun", "version", version.Bosun, "kubernetesVersion", version.Kubernetes, "node", nodeName)
	// The metrics first: the certificate managers and their TTL gauges
	// start before the pods.
	bmetrics.Register(nodeName)
	hostCgroups := cgroups.New("/sys/fs/cgroup")
	bmetrics.SetNode(hostCgroups.V2())
	machine, err := nodestatus.ReadMachine(cfg.RootDir)
	if err != nil {
		return err
	}
	if *kc.FailSwapOn && machine.SwapOn {
		return fmt.Errorf("running with swap on is not supported, please disable swap (swapoff -a) or set failSwapOn: false "+
			"(--fail-swap-on=false); /proc/swaps contains: %s", machine.SwapDescription)
	}
	if err := config.ValidateHost(kc, hostCgroups.V2()); err != nil {
		return err
	}
	kernel.ProcessSettings(logger, "/proc/self", *kc.OOMScoreAdj, kc.MaxOpenFiles)
	// As upstream's container manager: with protectKernelDefaults the
	// kernel tunables must already be right, otherwise they are set.
	if err := kernel.Setup(logger, nil, kc.ProtectKernelDefaults); err != nil {
		return fmt.Errorf("failed to set up the kernel tunables: %w", err)
	}
	if root := kc.CgroupRoot; root != "" && root != "/" && *kc.CgroupsPerQOS {
		// As upstream: the cgroup root is the operator's to make.
		if missing := hostCgroups.Missing(root); len(missing) > 0 {
			return fmt.Errorf("invalid configuration: cgroupRoot (--cgroup-root) %q does not exist in %s", root, strings.Join(missing, ", "))
		}
	}
	nodeIPs, err := nodeIPsOf(cfg.NodeIP)
	if err != nil {
		return err
	}
	if err := certs.Bootstrap(ctx, certs.BootstrapConfig{
		Kubeconfig: cfg.Kubeconfig, BootstrapKubeconfig: cfg.BootstrapKubeconfig, CertDir: cfg.CertDir,
		NodeName: nodeName, NoticeEvery: 10 * time.Second, RetryAfter: 5 * time.Second,
	}); err != nil {
		return err
	}
	restCfg, err := restConfig(cfg)
	if err != nil {
		return err
	}
	// The certificate managers call the API through client; it must exist
	// before either starts, since a certificate already due at start is
	// renewed at once.
	var client kubernetes.Interface
	clientFn := func(*tls.Certificate) (kubernetes.Interface, error) {
		if client == nil {
			return nil, errors.New("the API client is not ready yet")
		}
		return client, nil
	}
	var clientCerts interface{ Start() }
	if kc.RotateCertificates {
		m, err := certs.NewClientManager(ctx, cfg.CertDir, nodeName, clientFn)
		if err != nil {
			return fmt.Errorf("failed to set up client certificate rotation: %w", err)
		}
		if err := certs.UseRotatingClientCert(ctx, restCfg, m); err != nil {
			return err
		}
		clientCerts = m
		defer m.Stop()
	}
	if client, err = kubernetes.NewForConfig(restCfg); err != nil {
		return err
	}
	if clientCerts != nil {
		clientCerts.Start()
	}
	// As upstream: events have their own rate limit (eventRecordQPS,
	// eventBurst), and node status and Lease updates none, so that a burst
	// of pod work can neither starve nor be starved by them.
	eventsCfg, heartbeatCfg := rest.CopyConfig(restCfg), rest.CopyConfig(restCfg)
	eventsCfg.QPS, eventsCfg.Burst = float32(*kc.EventRecordQPS), int(kc.EventBurst)
	heartbeatCfg.QPS = -1
	events, err := kubernetes.NewForConfig(eventsCfg)
	if err != nil {
		return err
	}
	heartbeat, err := kubernetes.NewForConfig(heartbeatCfg)
	if err != nil {
		return err
	}
	rt, err := connectRuntime(ctx, cfg)
	if err != nil {
		return err
	}
	if err := cgroupDriverFromRuntime(ctx, rt, kc); err != nil {
		return err
	}
	if kc.PodCIDR != "" { // podCIDR (--pod-cidr), until the Node's own is known
		if err := updateRuntimePodCIDR(ctx, rt, kc.PodCIDR); err != nil {
			logger.Error(err, "Pod CIDR update failed")
		}
	}
	getCert, stopServing, err := servingCertificate(ctx, cfg, nodeName, nodeIPs, clientFn)
	if err != nil {
		return err
	}
	defer stopServing()
	features, err := nodefeatures.New(version.Kubernetes, func(gate string) bool { return config.FeatureEnabled(kc, gate) })
	if err != nil {
		return err
	}
	pods, err := newPods(ctx, podsDeps{cfg: cfg, client: client, events: events, rt: rt, nodeName: nodeName, nodeIPs: nodeIPs, machine: machine,
		features: features})
	if err != nil {
		return err
	}
	go pods.pleg.Run(ctx)
	bmetrics.RegisterVolumeStats(pods.volumeStats.Claims)
	bmetrics.RegisterPodCounts(pods.workers.Counts)
	go bmetrics.TrackCertTTL(bmetrics.ClientCertTTL, func() time.Time {
		if c, err := certs.LoadPairFile(filepath.Join(cfg.CertDir, "kubelet-client-current.pem")); err == nil {
			return c.Leaf.NotAfter
		}
		return time.Time{}
	}, ctx.Done())
	params := nodestatus.Params{
		NodeName: nodeName, Hostname: nodeName, NodeIPs: nodeIPs, Labels: cfg.NodeLabels,
		Taints: kc.RegisterWithTaints, MaxPods: kc.MaxPods, PodsPerCore: kc.PodsPerCore, ProviderID: kc.ProviderID, Port: kc.Port,
		SystemReserved: kc.SystemReserved, KubeReserved: kc.KubeReserved, EvictionHard: kc.EvictionHard,
		AttachDetach: *kc.EnableControllerAttachDetach, Machine: machine, DeclaredFeatures: features.Names(),
	}
	statusCtl, err := nodestatus.New(nodestatus.Config{
		Client: heartbeat, Params: params, Observe: observer(rt, int(*kc.NodeStatusMaxImages), pods.pleg.Healthy, pods.eviction.Pressure, pods.devices.Resources, pods.csi.InUse),
		UpdateFrequency: kc.NodeStatusUpdateFrequency.Duration, ReportFrequency: kc.NodeStatusReportFrequency.Duration,
		LeaseDuration: kc.NodeLeaseDurationSeconds, Recorder: pods.recorder,
		PodCIDR: func(ctx context.Context, cidrs string) error { return updateRuntimePodCIDR(ctx, rt, cidrs) },
		Started: func(registrationStart, registered, ready time.Time) {
			bmetrics.Startup{Boot: machine.BootTime, AgentStart: agentStart, RegistrationStart: registrationStart,
				Registered: registered, Ready: ready}.Record()
		},
	})
	if err != nil {
		return err
	}
	// Upstream's start events on the Node.
	pods.recorder.Event(nodestatus.NodeRef(nodeName), corev1.EventTypeNormal, "Starting", "Starting kubelet.")
	if managed, err := pods.syncer.EnsureQOSCgroups(); err != nil {
		return fmt.Errorf("failed to set up the pod class cgroups: %w", err)
	} else if managed && slices.Contains(kc.EnforceNodeAllocatable, "pods") {
		pods.recorder.Event(nodestatus.NodeRef(nodeName), corev1.EventTypeNormal, "NodeAllocatableEnforced", "Updated Node Allocatable limit across pods")
	}
	if err := enforceReserved(pods, kc, nodestatus.NodeRef(nodeName)); err != nil {
		return err
	}
	wake := statusCtl.Wake
	pods.devicesChanged.Store(&wake)
	if err := pods.devices.Start(ctx); err != nil {
		return err
	}
	registry := &plugins.Watcher{Dir: filepath.Join(cfg.RootDir, "plugins_registry"),
		Handlers: map[string]plugins.Handler{registerapi.DevicePlugin: pods.devices, registerapi.CSIPlugin: pods.csi, registerapi.DRAPlugin: pods.dra}}
	if err := registry.Run(ctx); err != nil {
		return err
	}
	if err := (&podresources.Server{Pods: pods.workers.Running, Devices: pods.devices, CPUs: pods.cpus, Memory: pods.memory, Claims: pods.dra}).Serve(ctx, cfg.RootDir); err != nil {
		return err
	}
	go statusCtl.Run(ctx)
	if *kc.MakeIPTablesUtilChains {
		go iptables.Run(ctx, iptables.Exec, time.Minute)
	}
	pods.startLocal(ctx)
	// What only the start used of the program can go 10 s after the node
	// has registered.
	go selfmem.ReleaseWhenSettled(ctx, statusCtl.Registered(), 10*time.Second)
	go func() {
		select {
		case <-statusCtl.Registered():
		case <-ctx.Done():
			return
		}
		go initCSINode(ctx, pods.csi)
		// Admission reads the Node from the watch: until it has listed, every
		// pod would be admitted unchecked (maxPods, resources).
		syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if !cache.WaitForCacheSync(syncCtx.Done(), statusCtl.NodeSynced) {
			logger.Info("The Node watch has not listed after 30s; admitting pods with what it has")
		}
		cancel()
		if err := pods.startAPI(ctx, statusCtl.NodeLister()); err != nil && ctx.Err() == nil {
			logger.Error(err, "Failed to start the pods from the apiserver")
		}
	}()
	srv, err := newServer(ctx, cfg, client, getCert, &host{pods: pods, configz: kc, spec: machineSpec(machine)}, pods.stats, nodeName)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

// initCSINode makes the node's CSINode object, retrying with back-off as
// upstream does until it succeeds or the agent stops.
func initCSINode(ctx context.Context, m *csi.Manager) {
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Steps: 10, Cap: time.Minute}
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		if err := m.Init(ctx); err != nil {
			klog.FromContext(ctx).V(2).Info("Failed to publish CSINode", "err", err)
			return false, nil
		}
		return true, nil
	})
	if err != nil && ctx.Err() == nil {
		klog.FromContext(ctx).Error(err, "Failed to make the node's CSINode object")
	}
}

// newServer builds the node API from the configuration.
func newServer(ctx context.Context, cfg *config.Config, client kubernetes.Interface, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error),
	h server.Host, st *stats.Provider, nodeName string) (*server.Server, error) {
	kc := cfg.Kubelet
	auth, err := server.NewAuth(ctx, server.AuthConfig{
		Anonymous: *kc.Authentication.Anonymous.Enabled, Webhook: *kc.Authentication.Webhook.Enabled,
		CacheTTL: kc.Authentication.Webhook.CacheTTL.Duration, ClientCAFile: kc.Authentication.X509.ClientCAFile,
		Mode: string(kc.Authorization.Mode), CacheAuthorizedTTL: kc.Authorization.Webhook.CacheAuthorizedTTL.Duration,
		CacheUnauthorizedTTL: kc.Authorization.Webhook.CacheUnauthorizedTTL.Duration,
		TokenReviews:         client.AuthenticationV1(), SubjectAccessReviews: client.AuthorizationV1(),
	}, nodeName)
	if err != nil {
		return nil, err
	}
	minTLS, ciphers, err := tlsSettings(kc.TLSMinVersion, kc.TLSCipherSuites)
	if err != nil {
		return nil, err
	}
	curves, err := cliflag.TLSCurvePreferences(kc.TLSCurvePreferences)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration: tlsCurvePreferences: %w", err)
	}
	sc := server.Config{
		Address: net.JoinHostPort(kc.Address, fmt.Sprint(kc.Port)), GetCertificate: getCert, MinTLSVersion: minTLS, CipherSuites: ciphers, CurvePreferences: curves,
		IdleTimeout: kc.StreamingConnectionIdleTimeout.Duration, LogDir: "/var/log", Debugging: *kc.EnableDebuggingHandlers,
		SystemLogs: *kc.EnableSystemLogHandler, PodLogsDir: kc.PodLogsDir, Profiling: *kc.EnableProfilingHandler, DebugFlags: *kc.EnableDebugFlagsHandler,
		ProbeMetrics: probeMetricsHandler(),
		Stats:        st, // the one the eviction manager reads too
	}
	if kc.EnableContentionProfiling && *kc.EnableProfilingHandler {
		goruntime.SetBlockProfileRate(1) // /debug/pprof/block, as upstream
	}
	if !*kc.EnableServer {
		sc.Address = "" // no node API on the port; healthz stays
	}
	if *kc.HealthzPort > 0 {
		sc.HealthzAddress = net.JoinHostPort(kc.HealthzBindAddress, fmt.Sprint(*kc.HealthzPort))
	}
	if kc.ReadOnlyPort > 0 {
		sc.ReadOnlyAddr = net.JoinHostPort(kc.Address, fmt.Sprint(kc.ReadOnlyPort))
	}
	return server.New(sc, h, auth)
}

// probeMetricsHandler serves /metrics/probes from the probes' registry.
func probeMetricsHandler() http.Handler {
	return metrics.HandlerFor(probes.Registry, metrics.HandlerOpts{})
}

// tlsSettings reads tlsMinVersion and tlsCipherSuites.
func tlsSettings(minVersion string, suites []string) (uint16, []uint16, error) {
	versions := map[string]uint16{"": tls.VersionTLS12, "VersionTLS10": tls.VersionTLS10, "VersionTLS11": tls.VersionTLS11,
		"VersionTLS12": tls.VersionTLS12, "VersionTLS13": tls.VersionTLS13}
	v, ok := versions[minVersion]
	if !ok {
		return 0, nil, fmt.Errorf("tlsMinVersion %q is not one of VersionTLS10..VersionTLS13", minVersion)
	}
	byName := map[string]uint16{}
	for _, c := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		byName[c.Name] = c.ID
	}
	var ids []uint16
	for _, name := range suites {
		id, ok := byName[name]
		if !ok {
			return 0, nil, fmt.Errorf("tlsCipherSuites: unknown cipher suite %q", name)
		}
		ids = append(ids, id)
	}
	return v, ids, nil
}

// updateRuntimePodCIDR hands the runtime the node's pod CIDRs
// (UpdateRuntimeConfig), as upstream does for runtimes that build their pod
// network from them.
func updateRuntimePodCIDR(ctx context.Context, rt *runtime.Runtime, cidrs string) error {
	return rt.RuntimeService.UpdateRuntimeConfig(ctx, &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: cidrs}})
}

// machineSpec is /spec/: the machine in cAdvisor's MachineInfo field names.
func machineSpec(m *nodestatus.Machine) map[string]any {
	return map[string]any{
		"num_cores": m.Cores, "memory_capacity": m.MemoryBytes, "machine_id": m.MachineID, "system_uuid": m.SystemUUID,
		"boot_id": m.BootID, "filesystems": []map[string]any{{"device": "rootfs", "capacity": m.RootFSBytes, "inodes": m.RootFSInodes}},
	}
}

// nodeNameOf is --hostname-override, else the machine's hostname, lower-cased.
func nodeNameOf(cfg *config.Config) (string, error) {
	name := cfg.HostnameOverride
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("could not determine the node name: %w", err)
		}
		name = h
	}
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" {
		return "", fmt.Errorf("the node name is empty: set --hostname-override")
	}
	return name, nil
}

// nodeIPsOf parses --node-ip, or picks the first global address of an
// interface that is up.
func nodeIPsOf(flag string) ([]net.IP, error) {
	var ips []net.IP
	if flag != "" {
		for _, s := range strings.Split(flag, ",") {
			ip := net.ParseIP(strings.TrimSpace(s))
			if ip == nil {
				return nil, fmt.Errorf("--node-ip: %q is not an IP address", s)
			}
			ips = append(ips, ip)
		}
		return ips, nil
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return []net.IP{n.IP}, nil
			}
		}
	}
	return nil, fmt.Errorf("could not pick the node's IP address: set --node-ip")
}

// restConfig is the node's client configuration from --kubeconfig. The
// client certificate is a file that client-go reloads, closing connections,
// when rotation replaces it.
func restConfig(cfg *config.Config) (*rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("invalid kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	kc := cfg.Kubelet
	rc.QPS = float32(*kc.KubeAPIQPS)
	rc.Burst = int(kc.KubeAPIBurst)
	rc.ContentType = kc.ContentType
	rc.AcceptContentTypes = kc.ContentType + ",application/json"
	rc.UserAgent = "bosun/" + version.Bosun + " (kubelet " + version.Kubernetes + ")"
	return rc, nil
}

// cgroupDriverFromRuntime makes the runtime's cgroup driver the agent's, as
// the kubelet does since v1.34 (KubeletCgroupDriverFromCRI, GA): the
// configuration's cgroupDriver counts only with a runtime that does not say.
func cgroupDriverFromRuntime(ctx context.Context, rt *runtime.Runtime, kc *kubeletv1beta1.KubeletConfiguration) error {
	driver, err := rt.CgroupDriver(ctx)
	if err != nil {
		return err
	}
	logger := klog.FromContext(ctx)
	if driver == "" {
		logger.Info("The container runtime does not report its cgroup driver; using cgroupDriver from the configuration", "cgroupDriver", kc.CgroupDriver)
		return nil
	}
	if driver != kc.CgroupDriver {
		logger.Info("Using cgroup driver setting received from the CRI runtime", "cgroupDriver", driver, "configured", kc.CgroupDriver)
	}
	kc.CgroupDriver = driver
	if !config.CgroupRootSupported(driver, kc.CgroupRoot) {
		return fmt.Errorf("invalid configuration: the runtime uses the systemd cgroup driver, and cgroupRoot (--cgroup-root) %q with it is not supported by Bosun "+
			"(its systemd driver puts pods under kubepods.slice only); leave cgroupRoot unset or set the runtime to cgroupfs", kc.CgroupRoot)
	}
	return nil
}

// connectRuntime dials the CRI runtime, waiting for it to answer.
func connectRuntime(ctx context.Context, cfg *config.Config) (*runtime.Runtime, error) {
	kc := cfg.Kubelet
	rt, err := runtime.Connect(ctx, kc.ContainerRuntimeEndpoint, kc.ImageServiceEndpoint, kc.RuntimeRequestTimeout.Duration)
	if err != nil {
		return nil, err
	}
	for {
		v, err := rt.VersionString(ctx)
		if err == nil {
			klog.FromContext(ctx).Info("Connected to the container runtime", "endpoint", rt.Endpoint, "runtime", v)
			return rt, nil
		}
		klog.FromContext(ctx).Error(err, "Container runtime is not answering yet; retrying", "endpoint", rt.Endpoint)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// servingCertificate returns the GetCertificate function of the node API:
// tlsCertFile/tlsPrivateKeyFile when set; with serverTLSBootstrap the
// cluster-signed certificate, once issued, else the self-signed one.
func servingCertificate(ctx context.Context, cfg *config.Config, nodeName string, ips []net.IP,
	clientFn certificate.ClientsetFunc) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), func(), error) {
	kc := cfg.Kubelet
	if kc.TLSCertFile != "" {
		pair, err := certs.LoadFilePair(kc.TLSCertFile, kc.TLSPrivateKeyFile, time.Minute)
		if err != nil {
			return nil, nil, err
		}
		return pair.GetCertificate, func() {}, nil
	}
	self, err := certs.SelfSignedServing(cfg.CertDir, nodeName, ips)
	if err != nil {
		return nil, nil, err
	}
	if !kc.ServerTLSBootstrap {
		return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return self, nil }, func() {}, nil
	}
	m, err := certs.NewServingManager(ctx, cfg.CertDir, nodeName, func() ([]string, []net.IP) {
		return []string{nodeName}, ips
	}, clientFn)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to set up the serving certificate: %w", err)
	}
	m.Start()
	go bmetrics.TrackCertTTL(bmetrics.ServerCertTTL, func() time.Time {
		if c := m.Current(); c != nil && c.Leaf != nil {
			return c.Leaf.NotAfter
		}
		return time.Time{}
	}, ctx.Done())
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c := m.Current(); c != nil {
			return c, nil
		}
		return self, nil
	}, m.Stop, nil
}

// observer reads what node status reports from the runtime and PLEG.
func observer(rt *runtime.Runtime, maxImages int, plegHealthy func() error, pressure func() eviction.Pressure,
	devices func() (corev1.ResourceList, corev1.ResourceList, []string), volumesInUse func() []corev1.UniqueVolumeName) func(ctx context.Context) nodestatus.Observed {
	return func(ctx context.Context) nodestatus.Observed {
		o := nodestatus.Observed{VolumesInUse: volumesInUse()}
		o.DeviceCapacity, o.DeviceAllocatable, o.RemovedDevices = devices()
		o.RuntimeVersion, _ = rt.VersionString(ctx)
		h := rt.CheckHealth(ctx)
		o.RuntimeReady, o.NotReadyReason = h.RuntimeReady && h.NetworkReady, h.Message
		if h.Features != nil {
			o.SupplementalGroupsPolicy = &h.Features.SupplementalGroupsPolicy
		}
		for _, rh := range h.Handlers {
			rro, userns := rh.GetFeatures().GetRecursiveReadOnlyMounts(), rh.GetFeatures().GetUserNamespaces()
			o.RuntimeHandlers = append(o.RuntimeHandlers, corev1.NodeRuntimeHandler{Name: rh.Name,
				Features: &corev1.NodeRuntimeHandlerFeatures{RecursiveReadOnlyMounts: &rro, UserNamespaces: &userns}})
		}
		if err := plegHealthy(); o.RuntimeReady && err != nil {
			o.RuntimeReady, o.NotReadyReason = false, err.Error()
		}
		pr := pressure()
		o.MemoryPressure, o.DiskPressure, o.PIDPressure = pr.Memory, pr.Disk, pr.PID
		if imgs, err := rt.Images.ListImages(ctx, &runtimeapi.ImageFilter{}); err == nil {
			o.Images = nodeImages(imgs, maxImages)
		}
		return o
	}
}

// nodeImages lists images largest first, at most max (-1: all).
func nodeImages(imgs []*runtimeapi.Image, max int) []corev1.ContainerImage {
	sort.SliceStable(imgs, func(i, j int) bool { return imgs[i].Size > imgs[j].Size })
	var out []corev1.ContainerImage
	for _, img := range imgs {
		if max >= 0 && len(out) >= max {
			break
		}
		names := append(append([]string{}, img.RepoDigests...), img.RepoTags...)
		if len(names) == 0 {
			continue
		}
		out = append(out, corev1.ContainerImage{Names: names, SizeBytes: int64(img.Size)})
	}
	return out
}

// enforceReserved sets the system-reserved and kube-reserved limits on
// their cgroups when enforceNodeAllocatable names them, as upstream: the
// cgroups must exist, and a failure stops the agent with a Warning event.
func enforceReserved(pods *pods, kc *kubeletv1beta1.KubeletConfiguration, nodeRef *corev1.ObjectReference) error {
	for _, e := range []struct {
		key, title, cgroup, kind string
		reserved                 map[string]string
		compressible             bool
	}{
		{"system-reserved", "System Reserved", kc.SystemReservedCgroup, "system reserved", kc.SystemReserved, false},
		{"kube-reserved", "Kube Reserved", kc.KubeReservedCgroup, "kube reserved", kc.KubeReserved, false},
		{"system-reserved-compressible", "System Reserved Compressible", kc.SystemReservedCgroup, "system reserved", kc.SystemReserved, true},
		{"kube-reserved-compressible", "Kube Reserved Compressible", kc.KubeReservedCgroup, "kube reserved", kc.KubeReserved, true},
	} {
		if !slices.Contains(kc.EnforceNodeAllocatable, e.key) {
			continue
		}
		if err := pods.syncer.EnforceReserved(e.cgroup, e.reserved, e.compressible); err != nil {
			msg := fmt.Sprintf("Failed to enforce %s Cgroup Limits on %q: %v", e.title, e.cgroup, err)
			pods.recorder.Event(nodeRef, corev1.EventTypeWarning, "FailedNodeAllocatableEnforcement", msg)
			return errors.New(msg)
		}
		pods.recorder.Eventf(nodeRef, corev1.EventTypeNormal, "NodeAllocatableEnforced", "Updated limits on %s cgroup %v", e.kind, e.cgroup)
	}
	return nil
}
