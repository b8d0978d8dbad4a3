package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/utils/cpuset"

	"github.com/bosun-dev/bosun/internal/allocation"
	"github.com/bosun-dev/bosun/internal/cgroups"
	"github.com/bosun-dev/bosun/internal/cgroupstats"
	"github.com/bosun-dev/bosun/internal/config"
	"github.com/bosun-dev/bosun/internal/cpumanager"
	"github.com/bosun-dev/bosun/internal/csi"
	"github.com/bosun-dev/bosun/internal/devices"
	"github.com/bosun-dev/bosun/internal/dra"
	"github.com/bosun-dev/bosun/internal/eviction"
	"github.com/bosun-dev/bosun/internal/logrotate"
	"github.com/bosun-dev/bosun/internal/memorymanager"
	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
	"github.com/bosun-dev/bosun/internal/nodefeatures"
	"github.com/bosun-dev/bosun/internal/nodestatus"
	"github.com/bosun-dev/bosun/internal/objectcache"
	"github.com/bosun-dev/bosun/internal/pleg"
	"github.com/bosun-dev/bosun/internal/podsource"
	"github.com/bosun-dev/bosun/internal/podsync"
	"github.com/bosun-dev/bosun/internal/podworkers"
	"github.com/bosun-dev/bosun/internal/probes"
	"github.com/bosun-dev/bosun/internal/pullrecords"
	"github.com/bosun-dev/bosun/internal/runtime"
	"github.com/bosun-dev/bosun/internal/stats"
	"github.com/bosun-dev/bosun/internal/status"
	"github.com/bosun-dev/bosun/internal/topology"
	"github.com/bosun-dev/bosun/internal/userns"
	"github.com/bosun-dev/bosun/internal/volumes"
)

// housekeepingPeriod is how often the container statistics are collected:
// cAdvisor's housekeeping interval in the upstream kubelet.
const housekeepingPeriod = 10 * time.Second

// plegSafetyRelist is how often the runtime is relisted while its event
// stream is up: what an event lost would take at most to be seen.
const plegSafetyRelist = 10 * time.Second

// maxStatsAge is how old a collection may be when a request is answered
// from it: cAdvisor's longest housekeeping interval in the upstream kubelet
// (15 s), so that requests between two collections never collect themselves.
const maxStatsAge = 15 * time.Second

// podsDeps are what the pod machinery is built from.
type podsDeps struct {
	cfg      *config.Config
	client   kubernetes.Interface
	events   kubernetes.Interface // rate-limited by eventRecordQPS/eventBurst alone
	rt       *runtime.Runtime
	nodeName string
	nodeIPs  []net.IP
	machine  *nodestatus.Machine
	features *nodefeatures.Declared // what the node declares; admission refuses pods needing more
}

// pods is the pod machinery: source -> workers -> syncer -> status.
type pods struct {
	deps     podsDeps
	source   *podsource.API
	static   *podsource.Static // nil without staticPodPath/staticPodURL
	services informers.SharedInformerFactory
	status   *status.Manager
	syncer   *podsync.Syncer
	workers  *podworkers.Workers
	objs     *apiObjects
	pleg     *pleg.Relister
	probes   *probes.Manager
	eviction *eviction.Manager
	userns   *userns.Manager
	imageGC  *eviction.ImageGC
	devices  *devices.Manager
	cpus     *cpumanager.Manager
	memory   *memorymanager.Manager
	topology *topology.Manager
	csi      *csi.Manager
	dra      *dra.Manager
	// extendedClaims: DRA claims serve extended resources (the
	// DRAExtendedResource gate).
	extendedClaims bool
	// volumeStats measures running pods' volumes for the Summary API and
	// kubelet_volume_stats_* on /metrics.
	volumeStats *volumes.StatsCache
	stats       *stats.Provider // the Summary API, resource metrics and cAdvisor metrics
	alloc       *allocation.Manager
	// devicesChanged is called when device plugins change what the node
	// offers (set once node status runs).
	devicesChanged atomic.Pointer[func()]
	recorder       record.EventRecorder
	nodes          atomic.Pointer[corelisters.NodeLister] // set once the Node exists
	// apiSynced is set once the first list of the node's pods from the
	// apiserver has been delivered.
	apiSynced atomic.Bool
}

// podsLimits are the kubepods cgroup's limits when enforceNodeAllocatable
// names "pods" (as upstream: cpu shares and memory limit from capacity
// minus kube-reserved and system-reserved).
func podsLimits(d podsDeps) cgroups.Limits {
	kc := d.cfg.Kubelet
	if !*kc.CgroupsPerQOS || !slices.Contains(kc.EnforceNodeAllocatable, "pods") {
		return cgroups.Limits{}
	}
	limit := nodestatus.PodsLimit(nodestatus.Params{Machine: d.machine, MaxPods: kc.MaxPods, PodsPerCore: kc.PodsPerCore,
		SystemReserved: kc.SystemReserved, KubeReserved: kc.KubeReserved})
	return cgroups.Limits{CPUShares: uint64(max(limit.Cpu().MilliValue()*1024/1000, 2)), MemoryBytes: limit.Memory().Value()}
}

// node is this node's Node object, once it exists, for admission: its
// allocatable cpu, memory, pods and storage are the ones this agent
// computes, not the apiserver's copy, which still shows the agent before
// this one (another maxPods) until the first status update lands.
func (p *pods) node() *corev1.Node {
	l := p.nodes.Load()
	if l == nil {
		return nil
	}
	n, err := (*l).Get(p.deps.nodeName)
	if err != nil {
		return nil
	}
	kc := p.deps.cfg.Kubelet
	params := nodestatus.Params{Machine: p.deps.machine, MaxPods: kc.MaxPods, PodsPerCore: kc.PodsPerCore,
		SystemReserved: kc.SystemReserved, KubeReserved: kc.KubeReserved, EvictionHard: kc.EvictionHard}
	own := nodestatus.Allocatable(params, nodestatus.Capacity(params))
	same := true
	for name, q := range own {
		if cur, ok := n.Status.Allocatable[name]; !ok || cur.Cmp(q) != 0 {
			same = false
		}
	}
	if same {
		return n
	}
	n = n.DeepCopy()
	if n.Status.Allocatable == nil {
		n.Status.Allocatable = corev1.ResourceList{}
	}
	for name, q := range own {
		n.Status.Allocatable[name] = q
	}
	return n
}

// allocatable is the node's allocatable, for resourceFieldRef defaults.
func (p *pods) allocatable() corev1.ResourceList {
	if l := p.nodes.Load(); l != nil {
		if n, err := (*l).Get(p.deps.nodeName); err == nil {
			return n.Status.Allocatable
		}
	}
	return nil
}

func newPods(ctx context.Context, d podsDeps) (*pods, error) {
	kc := d.cfg.Kubelet
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: d.events.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: d.nodeName})
	p := &pods{deps: d, recorder: recorder, source: podsource.NewAPI(d.client, d.nodeName)}
	p.services = informers.NewSharedInformerFactory(d.client, 0)
	svcLister := p.services.Core().V1().Services().Lister()
	p.status = status.New(d.client, p.source.Lister())
	p.status.Ready = p.apiSynced.Load
	p.status.LoadStaticCheckpoint(klog.FromContext(ctx), filepath.Join(d.cfg.RootDir, "bosun", "static-pod-status.json"))
	var hostIPs []string
	for _, ip := range d.nodeIPs {
		hostIPs = append(hostIPs, ip.String())
	}
	objs := &apiObjects{client: d.client, services: svcLister, tokens: map[string]cachedToken{},
		objects: objectcache.New(objectcache.Config{Client: d.client, Strategy: string(kc.ConfigMapAndSecretChangeDetectionStrategy),
			TTL: func() (time.Duration, bool) { return objectcache.NodeTTL(p.node()) }})}
	go objs.objects.Run(ctx)
	p.objs = objs
	maxParallel := int32(0)
	if kc.MaxParallelImagePulls != nil {
		maxParallel = *kc.MaxParallelImagePulls
	}
	p.alloc = allocation.New(klog.FromContext(ctx), allocation.Config{RootDir: d.cfg.RootDir, Recorder: recorder,
		Fit: func(pod *corev1.Pod, others []*corev1.Pod) (bool, string, string) {
			if p.cpus.Policy() == cpumanager.PolicyStatic && podsync.QOSClass(pod) == corev1.PodQOSGuaranteed &&
				cpuRequestsDiffer(pod, p.alloc.Allocated(pod)) {
				return false, allocation.ReasonInfeasible, `Resize is infeasible for Guaranteed Pods alongside CPU Manager policy "static"`
			}
			return podworkers.Admit(p.fitView(pod), p.fitViews(others), p.node())
		},
		Active: func() []*corev1.Pod { return p.workers.Active() },
		Resync: func(uid types.UID) { p.workers.Resolve(uid) },
		Known:  func(uid types.UID) bool { return p.workers.Known(uid) },
		Ready:  p.apiSynced.Load,
	})
	var err error
	if p.csi, err = csi.New(csi.Config{Client: d.client, NodeName: d.nodeName, RootDir: d.cfg.RootDir}); err != nil {
		return nil, err
	}
	p.extendedClaims = config.FeatureEnabled(kc, config.DRAExtendedResource)
	if p.dra, err = dra.New(dra.Config{Client: d.client, NodeName: d.nodeName, RootDir: d.cfg.RootDir,
		ExtendedResources: p.extendedClaims}); err != nil {
		return nil, err
	}
	vm := &volumes.Manager{RootDir: d.cfg.RootDir, Objects: objs, Allocatable: p.allocatable, Claims: objs, CSI: p.csi, // pod volumes, and their usage for eviction
		Recorder: recorder, NodeName: d.nodeName}
	p.devices = devices.New(devices.Dir, func() {
		if f := p.devicesChanged.Load(); f != nil {
			(*f)()
		}
	})
	if p.extendedClaims {
		p.devices.SetClaimBacked(dra.ClaimBacked)
	}
	puller := podsync.NewImagePuller(d.rt.Images, recorder, *kc.SerializeImagePulls, maxParallel)
	puller.LimitPulls(float32(*kc.RegistryPullQPS), int(kc.RegistryBurst))
	if config.FeatureEnabled(kc, config.EnsureSecretPulledImages) {
		policy, err := pullrecords.NewPolicy(string(kc.ImagePullCredentialsVerificationPolicy), kc.PreloadedImagesVerificationAllowlist)
		if err != nil {
			return nil, err
		}
		if puller.Records, err = pullrecords.New(ctx, d.cfg.RootDir, policy, d.rt.Images); err != nil {
			return nil, err
		}
	}
	var idsPerPod uint32
	if un := kc.UserNamespaces; un != nil && un.IDsPerPod != nil {
		idsPerPod = uint32(*un.IDsPerPod) // validated: at most 2^32-1
	}
	usernsMgr, err := userns.New(userns.Config{RootDir: d.cfg.RootDir, IDsPerPod: idsPerPod, MaxPods: int(kc.MaxPods),
		Supports: func(pod *corev1.Pod) (bool, string, error) {
			handler := ""
			if rc := pod.Spec.RuntimeClassName; rc != nil && *rc != "" {
				h, err := objs.RuntimeHandler(ctx, *rc)
				if err != nil {
					return false, "", err
				}
				handler = h
			}
			ok, err := d.rt.UserNamespaces(ctx, handler)
			return ok, handler, err
		}})
	if err != nil {
		return nil, err
	}
	p.userns = usernsMgr
	if p.cpus, err = newCPUManager(klog.FromContext(ctx), d.cfg); err != nil {
		return nil, err
	}
	if p.memory, err = newMemoryManager(klog.FromContext(ctx), d.cfg, d.machine); err != nil {
		return nil, err
	}
	numa, err := topology.DiscoverNUMA("/sys")
	if err != nil {
		return nil, err
	}
	if p.topology, err = topology.New(kc.TopologyManagerPolicy, kc.TopologyManagerScope, kc.TopologyManagerPolicyOptions, numa); err != nil {
		return nil, fmt.Errorf("topology manager: %w", err)
	}
	p.devices.SetNUMANodes(numa.Nodes)
	cg := cgroups.New("/sys/fs/cgroup")
	var maxRestartBackOff time.Duration
	if m := kc.CrashLoopBackOff.MaxContainerRestartPeriod; m != nil && config.FeatureEnabled(kc, config.CrashLoopBackOffMax) {
		maxRestartBackOff = m.Duration
	}
	syncer, err := podsync.NewSyncer(podsync.SyncerConfig{
		Runtime:           d.rt.RuntimeService,
		MaxRestartBackOff: maxRestartBackOff,
		Images:            puller,
		Node: podsync.NodeSettings{
			ClusterDNS: kc.ClusterDNS, ClusterDomain: kc.ClusterDomain, ResolvConf: *kc.ResolverConfig, PodLogsDir: kc.PodLogsDir,
			ContainerLogsDir: podsync.ContainerLogsDir,
			RootDir:          d.cfg.RootDir, CgroupsPerQOS: *kc.CgroupsPerQOS, CgroupDriver: kc.CgroupDriver, CgroupRoot: kc.CgroupRoot,
			CPUCFSQuota: *kc.CPUCFSQuota,
			CFSPeriodUS: kc.CPUCFSQuotaPeriod.Microseconds(), NodeName: d.nodeName, SeccompDefault: *kc.SeccompDefault,
			PodPidsLimit: *kc.PodPidsLimit, PodsLimits: podsLimits(d), UserNamespace: usernsMgr.Namespace,
			CPUs:             p.cpus.ForContainer,
			MemoryNodes:      p.memory.ForContainer,
			ContainerCreated: p.memory.ContainerCreated,
			Swap:             podsync.Swap{Controller: cg.SwapController(), CgroupV2: cg.V2(), Behavior: kc.MemorySwap.SwapBehavior, Bytes: d.machine.SwapBytes},
			OOMGroup:         cg.V2() && (kc.SingleProcessOOMKill == nil || !*kc.SingleProcessOOMKill),
		},
		Objects:           objs,
		Volumes:           vm,
		Allocatable:       p.allocatable,
		Started:           func(c *corev1.Container, id string) bool { return p.probes.Started(c, id) },
		Recorder:          recorder,
		HostIPs:           hostIPs,
		MemCapacity:       d.machine.MemoryBytes,
		RuntimeHandler:    objs.RuntimeHandler,
		RecursiveReadOnly: d.rt.RecursiveReadOnly,
		Cgroups:           cg,
		Devices:           p.devices,
		Claims:            p.dra,
		ResizeFailed:      p.alloc.Failed,
	})
	if err != nil {
		return nil, err
	}
	p.syncer = syncer
	// Devices' health in the containers' statuses (upstream's
	// ResourceHealthStatus and ResourceHealthStatusMessage gates).
	healthStatus := config.FeatureEnabled(kc, config.ResourceHealthStatus)
	healthMessages := config.FeatureEnabled(kc, "ResourceHealthStatusMessage")
	p.workers = podworkers.New(ctx, podworkers.Config{
		Syncer: syncer, Status: p.status, Resync: kc.SyncFrequency.Duration, Allocation: p.alloc, Recorder: recorder,
		Terminated: func(pod *corev1.Pod) {
			uid := pod.UID
			p.probes.RemovePod(pod) // a pod removed at once was never built as terminating
			p.devices.Release(uid)
			p.userns.Release(uid)
			p.volumeStats.Drop(uid)
			p.alloc.Retry() // its cpu and memory are free for deferred resizes
		},
		Build: func(pod *corev1.Pod, rp *podsync.RuntimePod, waiting map[string]podsync.Waiting, terminal bool, end podsync.End) corev1.PodStatus {
			pod, final := p.withMirrorStatus(pod)
			p.probes.SeedFromStatus(pod, final) // the first time: keep what the last status said until probes run again
			if !terminal {
				p.alloc.Observe(pod, syncer.ResizeInProgress(pod, rp))
			}
			var previous *corev1.PodStatus
			if st, ok := p.status.Status(pod.UID); ok && !podsource.IsStatic(pod) {
				// Newer than the apiserver's copy until the watch catches
				// up. Not for a static pod: what it had before its mirror
				// could be read is a placeholder; the mirror's status is
				// what it builds on.
				previous = &st
			}
			st := podsync.PodStatus(podsync.StatusInput{Pod: pod, Runtime: rp, Waiting: waiting, RuntimeName: "containerd",
				HostIPs: hostIPs, Now: time.Now(), Terminal: terminal, Reason: end.Reason, Message: end.Message, DisruptionTarget: end.DisruptionTarget, Probes: p.probes,
				Previous: previous, ResizeConditions: p.alloc.Conditions(pod.UID, terminal)})
			if healthStatus {
				p.devices.UpdateAllocatedResourcesStatus(pod, &st)
				p.dra.UpdateAllocatedResourcesStatus(pod, &st)
				if !healthMessages {
					dropHealthMessages(&st)
				}
			}
			if st.Phase == corev1.PodRunning && pod.Status.Phase != corev1.PodRunning && !terminal {
				bmetrics.PodStartDuration.Observe(time.Since(pod.CreationTimestamp.Time).Seconds())
				bmetrics.PodStartTotalDuration.Observe(time.Since(pod.CreationTimestamp.Time).Seconds())
			}
			if terminal || pod.DeletionTimestamp != nil {
				p.probes.RemovePod(pod) // no liveness kills while the pod terminates
			} else {
				p.probes.Sync(pod, st.PodIP, runningContainers(pod, rp))
			}
			return st
		},
	})
	if healthStatus {
		wake := func(uids []types.UID) {
			for _, uid := range uids {
				p.workers.Wake(uid)
			}
		}
		p.devices.OnHealthChange(wake)
		p.dra.OnHealthChange(wake)
	}
	p.probes = probes.New(ctx, probes.Config{Exec: d.rt.RuntimeService, Recorder: recorder, Wake: p.workers.Wake, Kill: p.workers.KillContainer})
	p.probes.LoadCheckpoint(filepath.Join(d.cfg.RootDir, "bosun", "probe-results.json"))
	go p.probes.RunCheckpoint(time.Second)
	// Each change PLEG sees also tells the statistics that the running
	// containers changed (p.stats is made below, before PLEG runs).
	p.pleg = pleg.New(d.rt.RuntimeService, time.Second, func(uid types.UID) {
		p.stats.ContainersChanged()
		p.workers.Wake(uid)
	})
	if config.FeatureEnabled(kc, config.EventedPLEG) {
		p.pleg.WithEvents(plegSafetyRelist)
	}
	thresholds, err := eviction.ParseConfig(kc.EvictionHard, kc.EvictionSoft, kc.EvictionSoftGracePeriod, kc.EvictionMinimumReclaim)
	if err != nil {
		return nil, err
	}
	p.imageGC = &eviction.ImageGC{Runtime: d.rt.RuntimeService, Images: d.rt.Images,
		High: int(*kc.ImageGCHighThresholdPercent), Low: int(*kc.ImageGCLowThresholdPercent), MinAge: kc.ImageMinimumGCAge.Duration, MaxAge: kc.ImageMaximumGCAge.Duration,
		Keep: []string{d.cfg.PodInfraContainerImage}, Mounted: func() []string { return imageVolumeRefs(p.workers.Running()) },
		Records: puller.Records}
	p.volumeStats = &volumes.StatsCache{Volumes: vm, Period: kc.VolumeStatsAggPeriod.Duration}
	// The stats are collected every housekeeping period (upstream's cAdvisor
	// default, 10 s) and requests are answered from that collection while
	// the same containers run.
	p.stats = &stats.Provider{Runtime: d.rt.RuntimeService, Images: d.rt.Images, NodeName: d.nodeName, RootDir: d.cfg.RootDir, LogDir: kc.PodLogsDir,
		Cgroups: cgroupstats.New("/sys/fs/cgroup"), MaxAge: maxStatsAge, ChangesFollowed: true,
		PodVolumes: func() map[string][]statsapi.VolumeStats {
			out := map[string][]statsapi.VolumeStats{}
			for _, pod := range p.workers.Running() {
				out[string(pod.UID)] = p.volumeStats.Get(pod)
			}
			return out
		}}
	go p.stats.Run(ctx, housekeepingPeriod)
	p.eviction = eviction.New(eviction.Config{Thresholds: thresholds, MaxPodGracePeriod: int64(kc.EvictionMaxPodGracePeriod),
		RootDir: d.cfg.RootDir, Pods: p.workers.Running, TransitionPeriod: kc.EvictionPressureTransitionPeriod.Duration,
		Evict: func(uid types.UID, e eviction.Eviction) {
			p.workers.Evict(uid, podsync.End{Reason: "Evicted", Message: e.Message, DisruptionTarget: e.DisruptionTarget, Grace: &e.Grace})
		},
		ReclaimImages: p.imageGC.Collect,
		PodStats: func(ctx context.Context) ([]statsapi.PodStats, error) {
			sum, err := p.stats.Summary(ctx)
			if err != nil {
				return nil, err
			}
			return sum.Pods, nil
		},
		EmptyDirUsage: vm.EmptyDirUsage, LocalStorageLimits: *kc.LocalStorageCapacityIsolation,
		Recorder: recorder, Node: nodestatus.NodeRef(d.nodeName),
	})
	return p, nil
}

// dropHealthMessages removes the devices' health messages from a status
// (the ResourceHealthStatusMessage gate off).
func dropHealthMessages(st *corev1.PodStatus) {
	for i := range st.ContainerStatuses {
		for j := range st.ContainerStatuses[i].AllocatedResourcesStatus {
			for k := range st.ContainerStatuses[i].AllocatedResourcesStatus[j].Resources {
				st.ContainerStatuses[i].AllocatedResourcesStatus[j].Resources[k].Message = nil
			}
		}
	}
}

// runningContainers lists the pod's running containers that may have
// probes: app containers and sidecars.
func runningContainers(pod *corev1.Pod, rp *podsync.RuntimePod) map[string]probes.RunningContainer {
	out := map[string]probes.RunningContainer{}
	add := func(c *corev1.Container) {
		if latest := rp.Latest(c.Name); latest != nil && latest.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			out[c.Name] = probes.RunningContainer{Spec: c, ID: latest.Id, StartedAt: time.Unix(0, latest.StartedAt)}
		}
	}
	for i := range pod.Spec.InitContainers {
		if rp := pod.Spec.InitContainers[i].RestartPolicy; rp != nil && *rp == corev1.ContainerRestartPolicyAlways {
			add(&pod.Spec.InitContainers[i])
		}
	}
	for i := range pod.Spec.Containers {
		add(&pod.Spec.Containers[i])
	}
	return out
}

// startLocal runs what needs no apiserver: static pods, the status sender
// (which retries until the apiserver answers), housekeeping, eviction,
// image GC and log rotation. A node agent restarted while the apiserver is
// down keeps its pods and starts its static pods.
func (p *pods) startLocal(ctx context.Context) {
	go p.status.Run(ctx, 2)
	go p.alloc.Run(ctx)
	if kc := p.deps.cfg.Kubelet; kc.StaticPodPath != "" || kc.StaticPodURL != "" {
		p.static = &podsource.Static{
			Dir: kc.StaticPodPath, URL: kc.StaticPodURL, Every: kc.FileCheckFrequency.Duration, NodeName: p.deps.nodeName,
			URLEvery: kc.HTTPCheckFrequency.Duration, Header: http.Header(kc.StaticPodURLHeader),
			Client: p.deps.client, Pods: p.source.Lister(),
			Adopt:    p.syncer.RunningStaticPod,
			APIReady: p.apiSynced.Load,
			NodeUID: func() types.UID {
				if l := p.nodes.Load(); l != nil {
					if n, err := (*l).Get(p.deps.nodeName); err == nil {
						return n.UID
					}
				}
				// The Node informer may still be backing off after an outage.
				if n, err := p.deps.client.CoreV1().Nodes().Get(ctx, p.deps.nodeName, metav1.GetOptions{}); err == nil {
					return n.UID
				}
				return ""
			},
		}
		go p.static.Run(ctx, p.workers)
	}
	go p.housekeeping(ctx)
	go p.eviction.Run(ctx)
	go p.imageGC.Run(ctx, 5*time.Minute)
	kc := p.deps.cfg.Kubelet
	go p.cpus.Run(ctx, p.deps.rt.RuntimeService, kc.CPUManagerReconcilePeriod.Duration, p.workers.HoldsDevices)
	maxSize := resource.MustParse(kc.ContainerLogMaxSize) // validated by config
	go (&logrotate.Rotator{Runtime: p.deps.rt.RuntimeService, MaxSize: maxSize.Value(), MaxFiles: int(*kc.ContainerLogMaxFiles),
		Every: kc.ContainerLogMonitorInterval.Duration}).Run(ctx)
}

// startAPI runs the pods from the apiserver once the Node exists: admission
// against the Node, the pod watch, Services for environment variables. It
// returns once the first list of pods has been delivered; from then on
// housekeeping may treat a sandbox no source knows as an orphan.
func (p *pods) startAPI(ctx context.Context, nodes corelisters.NodeLister) error {
	p.nodes.Store(&nodes)
	podworkers.AllowedUnsafeSysctls = p.deps.cfg.Kubelet.AllowedUnsafeSysctls
	p.workers.SetAdmit(func(pod *corev1.Pod, active []*corev1.Pod) (bool, string, string) {
		return p.alloc.Admit(pod, active, func(pod *corev1.Pod, others []*corev1.Pod) (bool, string, string) {
			return p.admit(ctx, pod, others)
		})
	})
	p.services.Start(ctx.Done())
	if err := p.source.Run(ctx, p.workers); err != nil {
		return err
	}
	p.apiSynced.Store(true)
	p.alloc.Retry() // resizes deferred until every pod was known
	if p.static != nil {
		for _, sp := range p.static.StaticPods() {
			p.workers.Wake(sp.UID) // rebuild their status on the mirror's, now readable
		}
	}
	return nil
}

// fitView is the pod as the node's resource fit sees it: without the
// extended resources a DRA claim serves (DRAExtendedResource), which the
// scheduler allocated from ResourceSlices, not from the node's allocatable.
func (p *pods) fitView(pod *corev1.Pod) *corev1.Pod {
	if !p.extendedClaims {
		return pod
	}
	return dra.WithoutClaimBacked(pod)
}

func (p *pods) fitViews(pods []*corev1.Pod) []*corev1.Pod {
	if !p.extendedClaims {
		return pods
	}
	out := make([]*corev1.Pod, len(pods))
	for i, pod := range pods {
		out[i] = dra.WithoutClaimBacked(pod)
	}
	return out
}

// admit runs admission for a new pod (as allocated) beside the active pods
// (as allocated), then gives it the devices it asks for.
func (p *pods) admit(ctx context.Context, pod *corev1.Pod, active []*corev1.Pod) (bool, string, string) {
	if ok, reason, msg := p.deps.features.Admit(pod); !ok {
		return ok, reason, msg
	}
	if ok, reason, msg := p.eviction.Admit(pod); !ok {
		return ok, reason, msg
	}
	node := p.node()
	if node == nil {
		return true, "", ""
	}
	if ok, reason, msg := podworkers.Admit(p.fitView(pod), p.fitViews(active), node); !ok {
		return ok, reason, msg
	}
	bmetrics.ContainersPerPod.Observe(float64(len(pod.Spec.Containers)))
	activeUIDs := map[types.UID]bool{pod.UID: true}
	for _, a := range active {
		activeUIDs[a.UID] = true
	}
	if p.sourcesReady() { // until every pod is known, no CPUs or memory are given back
		p.cpus.Release(klog.FromContext(ctx), func(uid types.UID) bool { return activeUIDs[uid] })
		p.memory.Release(klog.FromContext(ctx), func(uid types.UID) bool { return activeUIDs[uid] })
	}
	// As upstream's topology manager: the devices' allocation, then the
	// CPUs', then the memory's, container by container, aligned on NUMA
	// nodes as its policy asks.
	if err := p.topology.Admit(ctx, pod, p.devices, p.cpus, p.memory); err != nil {
		var reason interface{ Reason() string }
		if errors.As(err, &reason) {
			return false, reason.Reason(), err.Error()
		}
		return false, "UnexpectedAdmissionError", err.Error()
	}
	return true, "", ""
}

// withMirrorStatus gives a static pod the status its mirror pod holds: the
// status last reported for it, by this agent or the one before, which the
// new status builds on (start time, conditions' transition times, restart
// counts) as an API pod's does on its own.
func (p *pods) withMirrorStatus(pod *corev1.Pod) (*corev1.Pod, bool) {
	if !podsource.IsStatic(pod) || pod.Status.Phase != "" {
		return pod, true
	}
	out := *pod
	if mirror, err := p.source.Lister().Pods(pod.Namespace).Get(pod.Name); err == nil &&
		mirror.Annotations[podsource.AnnotationConfigMirror] == string(pod.UID) && mirror.Status.Phase != "" {
		out.Status = *mirror.Status.DeepCopy()
		return &out, true
	}
	if last, ok := p.status.LastStaticStatus(pod.UID); ok {
		out.Status = last // before the mirror can be read: what this agent last said
		return &out, false
	}
	return pod, false
}

// staticPod finds a static pod by namespace and name.
func (p *pods) staticPod(namespace, name string) (*corev1.Pod, bool) {
	if p.static == nil {
		return nil, false
	}
	for _, sp := range p.static.StaticPods() {
		if sp.Namespace == namespace && sp.Name == name {
			return sp, true
		}
	}
	return nil, false
}

// housekeeping removes sandboxes of pods this agent no longer knows: pods
// deleted while it was down, or left by an earlier installation.
// Every minute it also collects dead containers beyond the per-container
// limit and superseded sandboxes of the pods it runs.
func (p *pods) housekeeping(ctx context.Context) {
	policy := podsync.GCPolicy{MinAge: p.deps.cfg.MinContainerTTL, MaxPerPodContainer: p.deps.cfg.MaxDeadPerContainer}
	// The first sweep runs as soon as the apiserver's pods are known (pods
	// deleted while the agent was down are cleaned up at once after a
	// restart), then every 10 s.
	wait := time.Second
	for tick := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if !p.sourcesReady() {
			// Until the apiserver's pods and the static pods are known,
			// every sandbox of theirs would look orphaned: remove nothing
			// (an apiserver outage must never cost a running pod).
			continue
		}
		wait = 10 * time.Second
		tick++
		if tick%6 == 0 {
			if err := p.syncer.CollectGarbage(ctx, policy, func(uid string) bool { return p.workers.Known(types.UID(uid)) }); err != nil {
				klog.FromContext(ctx).Error(err, "Container garbage collection failed")
			}
		}
		p.devices.ReleaseUnless(p.workers.HoldsDevices)
		p.cpus.Release(klog.FromContext(ctx), p.workers.HoldsDevices)
		p.memory.Release(klog.FromContext(ctx), p.workers.HoldsDevices)
		p.topology.ForgetUnless(p.workers.HoldsDevices)
		p.objs.forgetTokens(p.workers.Known, time.Now())
		p.removeOrphans(ctx)
	}
}

// cpuRequestsDiffer says whether a container's cpu request differs between
// two versions of a pod.
func cpuRequestsDiffer(a, b *corev1.Pod) bool {
	requests := func(p *corev1.Pod) map[string]resource.Quantity {
		out := map[string]resource.Quantity{}
		for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
			for _, c := range cs {
				out[c.Name] = c.Resources.Requests[corev1.ResourceCPU]
			}
		}
		return out
	}
	ra, rb := requests(a), requests(b)
	for name, q := range ra {
		if other := rb[name]; q.Cmp(other) != 0 {
			return true
		}
	}
	return false
}

// sourcesReady says whether the apiserver's pods and the static pods are
// known: until then, a pod's absence says nothing.
func (p *pods) sourcesReady() bool {
	return p.apiSynced.Load() && (p.static == nil || p.static.Polled())
}

// newCPUManager builds the CPU manager from cpuManagerPolicy, the node's
// CPUs and the CPU reservation, and reads (or writes) its state file.
func newCPUManager(logger klog.Logger, cfg *config.Config) (*cpumanager.Manager, error) {
	kc := cfg.Kubelet
	topo, err := cpumanager.Discover("/sys")
	if err != nil {
		return nil, err
	}
	reserved := resource.Quantity{}
	for _, m := range []map[string]string{kc.KubeReserved, kc.SystemReserved} {
		if v, ok := m["cpu"]; ok {
			q, err := resource.ParseQuantity(v)
			if err != nil {
				return nil, fmt.Errorf("cpu reservation %q: %w", v, err)
			}
			reserved.Add(q)
		}
	}
	set, err := cpuset.Parse(kc.ReservedSystemCPUs) // validated
	if err != nil {
		return nil, err
	}
	m, err := cpumanager.New(cpumanager.Config{Policy: kc.CPUManagerPolicy, RootDir: cfg.RootDir, Topology: topo,
		Reserved: set, ReservedCPU: reserved, Options: kc.CPUManagerPolicyOptions,
		Alpha: config.FeatureEnabled(kc, "CPUManagerPolicyAlphaOptions"), Beta: config.FeatureEnabled(kc, "CPUManagerPolicyBetaOptions")})
	if err != nil {
		return nil, err
	}
	return m, m.Start(logger)
}

// newMemoryManager builds the memory manager from memoryManagerPolicy, the
// NUMA nodes' memory and reservedMemory, checked against the node's memory
// reservation (kube- and system-reserved and the hard eviction threshold),
// and reads (or writes) its state file.
func newMemoryManager(logger klog.Logger, cfg *config.Config, machine *nodestatus.Machine) (*memorymanager.Manager, error) {
	kc := cfg.Kubelet
	nodes, err := memorymanager.Discover("/sys", "/proc/meminfo")
	if err != nil {
		return nil, fmt.Errorf("memory manager: %w", err)
	}
	params := nodestatus.Params{Machine: machine, MaxPods: kc.MaxPods, SystemReserved: kc.SystemReserved, KubeReserved: kc.KubeReserved, EvictionHard: kc.EvictionHard}
	capacity := nodestatus.Capacity(params)
	allocatable := nodestatus.Allocatable(params, capacity)
	reservation := corev1.ResourceList{}
	for name, c := range capacity {
		if name == corev1.ResourceMemory || strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix) {
			c.Sub(allocatable[name])
			if !c.IsZero() {
				reservation[name] = c
			}
		}
	}
	m, err := memorymanager.New(memorymanager.Config{Policy: kc.MemoryManagerPolicy, RootDir: cfg.RootDir, Nodes: nodes,
		Reservation: reservation, Reserved: kc.ReservedMemory})
	if err != nil {
		return nil, fmt.Errorf("memory manager: %w", err)
	}
	return m, m.Start(logger)
}

// orphanRemovals is how many orphaned pods are removed at once: each waits
// on the runtime (stop, network teardown, removal) for a second or more on
// a busy node.
const orphanRemovals = 4

// removeOrphans removes the sandboxes and containers of pods this agent no
// longer knows.
func (p *pods) removeOrphans(ctx context.Context) {
	sandboxes, err := p.deps.rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{})
	if err != nil {
		return
	}
	orphans := map[types.UID]*corev1.Pod{}
	for _, sb := range sandboxes {
		uid := types.UID(podsync.PodUIDOf(sb.Labels))
		if uid == "" || orphans[uid] != nil || p.workers.Known(uid) || p.podExists(uid) {
			continue
		}
		orphan := &corev1.Pod{}
		orphan.UID, orphan.Name, orphan.Namespace = uid, sb.Metadata.GetName(), sb.Metadata.GetNamespace()
		orphans[uid] = orphan
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, orphanRemovals)
	for uid, orphan := range orphans {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			start := time.Now()
			if err := p.syncer.Remove(ctx, orphan); err != nil {
				klog.FromContext(ctx).Error(err, "Failed to remove an orphaned pod sandbox", "podUID", uid)
				return
			}
			klog.FromContext(ctx).V(2).Info("Removed the sandbox and containers of a pod the agent no longer knows",
				"pod", klog.KObj(orphan), "podUID", uid, "took", time.Since(start))
		}()
	}
	wg.Wait()
}

func (p *pods) podExists(uid types.UID) bool {
	if p.static != nil {
		for _, sp := range p.static.StaticPods() {
			if sp.UID == uid {
				return true
			}
		}
	}
	all, _ := p.source.Lister().List(labels.Everything())
	for _, pod := range all {
		if pod.UID == uid {
			return true
		}
	}
	return false
}

// apiObjects reads ConfigMaps and Secrets the node's pods use (the node
// authorizer lets a node read and watch those), from a watch per object by
// default (internal/objectcache), Services from a watch, and requests
// service account tokens bound to pods.
type apiObjects struct {
	client   kubernetes.Interface
	objects  *objectcache.Store // ConfigMaps and Secrets, by configMapAndSecretChangeDetectionStrategy
	services corelisters.ServiceLister
	mu       sync.Mutex
	tokens   map[string]cachedToken // pod UID|account|audience|expiry -> token
}

type cachedToken struct {
	pod             types.UID
	token           string
	issued, expires time.Time
}

// forgetTokens drops the tokens of pods that no worker holds any more, and
// the expired ones, as upstream's token manager does when a pod is gone
// and once a minute: without it, every pod the node ever ran would keep
// its tokens in memory.
func (o *apiObjects) forgetTokens(known func(types.UID) bool, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for key, c := range o.tokens {
		if !known(c.pod) || !now.Before(c.expires) {
			delete(o.tokens, key)
		}
	}
}

// A token requested right after the pod was bound can be refused because
// the apiserver's own copy of the pod (which NodeRestriction and the node
// authorizer check) does not show the binding yet: the agent saw it first.
// Such a refusal is retried after tokenLagRetry, doubling, while the wait
// is at most tokenLagRetryMax (about 1.5 s in all), before the pod's sync
// fails and waits out its own retry.
const (
	tokenLagRetry    = 50 * time.Millisecond
	tokenLagRetryMax = 800 * time.Millisecond
)

// apiserverBehind says whether err is the apiserver refusing a pod's token
// because its copy of the pod is not yet bound to this node.
func apiserverBehind(err error) bool {
	if !apierrors.IsForbidden(err) {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "scheduled on a different node") || strings.Contains(msg, "no relationship found between node")
}

// Token returns a cached token until 80% of its life (at most 24 h) has
// passed, then requests a new one, as upstream's token manager does.
func (o *apiObjects) Token(ctx context.Context, pod *corev1.Pod, sa, audience string, exp int64) (string, error) {
	key := fmt.Sprintf("%s|%s|%s|%d", pod.UID, sa, audience, exp)
	now := time.Now()
	o.mu.Lock()
	c, ok := o.tokens[key]
	o.mu.Unlock()
	if ok && now.Before(c.issued.Add(min(c.expires.Sub(c.issued)*8/10, 24*time.Hour))) {
		return c.token, nil
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	var resp *authenticationv1.TokenRequest
	var err error
	for wait := tokenLagRetry; ; wait *= 2 {
		resp, err = o.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
		if err == nil || !apiserverBehind(err) || wait > tokenLagRetryMax {
			break
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(wait):
		}
	}
	if err != nil {
		return "", err
	}
	o.mu.Lock()
	o.tokens[key] = cachedToken{pod: pod.UID, token: resp.Status.Token, issued: now, expires: resp.Status.ExpirationTimestamp.Time}
	o.mu.Unlock()
	return resp.Status.Token, nil
}

// RuntimeHandler reads a RuntimeClass for the CRI handler it names.
func (o *apiObjects) RuntimeHandler(ctx context.Context, name string) (string, error) {
	rc, err := o.client.NodeV1().RuntimeClasses().Get(ctx, name, getOpts)
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("RuntimeClass %q not found", name)
	}
	if err != nil {
		return "", fmt.Errorf("failed to get RuntimeClass %q: %w", name, err)
	}
	return rc.Handler, nil
}

func (o *apiObjects) ConfigMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	return o.objects.ConfigMap(ctx, ns, name)
}

func (o *apiObjects) Secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	return o.objects.Secret(ctx, ns, name)
}

func (o *apiObjects) Claim(ctx context.Context, ns, name string) (*corev1.PersistentVolumeClaim, error) {
	return o.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, getOpts)
}

var _ volumes.Expander = (*csi.Manager)(nil) // CSI volumes grow online

func (o *apiObjects) UpdateClaimStatus(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, error) {
	return o.client.CoreV1().PersistentVolumeClaims(pvc.Namespace).UpdateStatus(ctx, pvc, metav1.UpdateOptions{})
}

func (o *apiObjects) PersistentVolume(ctx context.Context, name string) (*corev1.PersistentVolume, error) {
	return o.client.CoreV1().PersistentVolumes().Get(ctx, name, getOpts)
}

func (o *apiObjects) Services(_ context.Context, ns string) ([]*corev1.Service, error) {
	list, err := o.services.Services(ns).List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list services in %s: %w", ns, err)
	}
	return list, nil
}

var (
	_       podsync.Objects = (*apiObjects)(nil)
	_       volumes.Objects = (*apiObjects)(nil)
	_       volumes.Claims  = (*apiObjects)(nil)
	getOpts                 = metav1.GetOptions{}
)

// imageVolumeRefs are the images the pods mount as image volumes.
func imageVolumeRefs(pods []*corev1.Pod) []string {
	var out []string
	for _, pod := range pods {
		for _, v := range pod.Spec.Volumes {
			if v.Image != nil && v.Image.Reference != "" {
				out = append(out, v.Image.Reference)
			}
		}
	}
	return out
}
