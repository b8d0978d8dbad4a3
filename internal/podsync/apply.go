package podsync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/bosun-dev/bosun/internal/cgroups"
	"github.com/bosun-dev/bosun/internal/devices"
	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
	"github.com/bosun-dev/bosun/internal/volumes"
)

// SyncerConfig wires a Syncer.
type SyncerConfig struct {
	Runtime     internalapi.RuntimeService // CRI runtime
	Images      *ImagePuller               // image policy and pulls
	Node        NodeSettings               // node-wide settings
	Objects     Objects                    // ConfigMaps, Secrets, Services for env
	Recorder    record.EventRecorder       // pod events
	HostIPs     []string                   // the node's IPs
	MemCapacity int64                      // node memory, for OOM scores
	Allocatable func() corev1.ResourceList // node allocatable, for resourceFieldRef defaults
	// ResizeFailed is told when the runtime refuses a container's new
	// resources (an in-place resize).
	ResizeFailed func(pod *corev1.Pod, message string)
	Volumes      VolumeManager // sets up and tears down pod volumes
	// MaxRestartBackOff is crashLoopBackOff.maxContainerRestartPeriod: the
	// crash-loop back-off's ceiling (0: upstream's 5 minutes).
	MaxRestartBackOff time.Duration
	Started           func(c *corev1.Container, id string) bool // startup probe results (nil: none run)
	// Cgroups makes and removes pod cgroups with their limits (nil: the
	// runtime makes them, without pod-level limits: the systemd driver, or
	// cgroupsPerQOS off).
	Cgroups *cgroups.Manager
	// RuntimeHandler resolves a RuntimeClass name to its CRI handler (nil:
	// the name is the handler).
	RuntimeHandler func(ctx context.Context, runtimeClass string) (string, error)
	// RecursiveReadOnly tells whether a runtime handler ("" the default) can
	// mount read-only recursively (nil: none can).
	RecursiveReadOnly func(ctx context.Context, handler string) bool
	// Devices gives containers the devices their device plugins allocated
	// (nil: no device plugins).
	Devices *devices.Manager
	// Claims prepares the pod's ResourceClaims (DRA) before its containers
	// start and names their CDI devices (nil: pods with claims do not start).
	Claims Claims
}

// Claims is the DRA side of a pod's sync (internal/dra).
type Claims interface {
	// Prepare has the drivers prepare the pod's claims; it may be called on
	// every sync of the pod.
	Prepare(ctx context.Context, pod *corev1.Pod) error
	// CDIDevices names the CDI devices a container gets from its claims.
	CDIDevices(pod *corev1.Pod, c *corev1.Container) ([]string, error)
	// Unprepare releases the claims of a pod that has gone.
	Unprepare(ctx context.Context, uid types.UID) error
}

// VolumeManager sets up a pod's volumes (again on every sync, to refresh
// content) and tears them down once its containers are gone.
type VolumeManager interface {
	Setup(ctx context.Context, pod *corev1.Pod) (map[string]volumes.Volume, error)
	Teardown(pod *corev1.Pod) error
}

// Syncer carries out plans against the CRI runtime. It keeps no pod state of
// its own beyond restart backoff: the runtime is the record of what runs.
type Syncer struct {
	cfg     SyncerConfig
	backoff *Backoff
}

// NewSyncer checks cfg.
func NewSyncer(cfg SyncerConfig) (*Syncer, error) {
	if cfg.Runtime == nil || cfg.Images == nil || cfg.Volumes == nil {
		return nil, errors.New("podsync: Runtime, Images and Volumes are required")
	}
	backoff := NewBackoff()
	if m := cfg.MaxRestartBackOff; m > 0 {
		// As upstream: a ceiling below the first delay is the first delay too.
		backoff.Max, backoff.Initial = m, min(backoff.Initial, m)
	}
	return &Syncer{cfg: cfg, backoff: backoff}, nil
}

// Inspect reads one pod's sandboxes and containers from the runtime.
func (s *Syncer) Inspect(ctx context.Context, uid string) (*RuntimePod, error) {
	sel := map[string]string{labelPodUID: uid}
	sandboxes, err := s.cfg.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("failed to list sandboxes: %w", err)
	}
	rp := &RuntimePod{}
	for _, sb := range sandboxes {
		st, err := s.cfg.Runtime.PodSandboxStatus(ctx, sb.Id, false)
		if err != nil || st.GetStatus() == nil {
			continue // removed meanwhile
		}
		rp.Sandboxes = append(rp.Sandboxes, st.Status)
	}
	sort.Slice(rp.Sandboxes, func(i, j int) bool { return rp.Sandboxes[i].CreatedAt > rp.Sandboxes[j].CreatedAt })
	ctrs, err := s.cfg.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("failed to list containers: %w", err)
	}
	for _, c := range ctrs {
		st, err := s.cfg.Runtime.ContainerStatus(ctx, c.Id, false)
		if err != nil || st.GetStatus() == nil {
			continue
		}
		rp.Containers = append(rp.Containers, &Container{ContainerStatus: st.Status, SandboxID: c.PodSandboxId})
	}
	sort.Slice(rp.Containers, func(i, j int) bool { return rp.Containers[i].CreatedAt > rp.Containers[j].CreatedAt })
	return rp, nil
}

// SyncResult is what a sync leaves behind for the status.
type SyncResult struct {
	Runtime    *RuntimePod        // the runtime's view after the sync
	Waiting    map[string]Waiting // why containers are not running
	InitFailed bool               // an init container failed for good
	Requeue    time.Duration      // when to look again (backoff), 0: on the next event
}

// Sync makes the pod's containers match its spec, one step at a time: it
// applies one plan and reports what it saw. Errors that the pod's author must
// fix come back in Waiting, not as an error.
func (s *Syncer) Sync(ctx context.Context, pod *corev1.Pod) (*SyncResult, error) {
	if err := ensureDirs(s.cfg.Node, pod); err != nil {
		return nil, err
	}
	rp, err := s.Inspect(ctx, string(pod.UID))
	if err != nil {
		return nil, err
	}
	plan := ComputePlan(PlanInput{Pod: pod, Runtime: rp, Hashes: containerHashes(pod), Started: s.cfg.Started, InBackOff: func(name string, finished time.Time) bool {
		return s.backoff.InBackOffSince(backoffKey(pod, name), finished)
	}})
	res := &SyncResult{Waiting: map[string]Waiting{}, InitFailed: plan.InitFailed != ""}
	for name, reason := range plan.Waiting {
		delay := s.backoff.Delay(backoffKey(pod, name))
		res.Waiting[name] = Waiting{Reason: reason, Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", delay, name, pod.Name, pod.Namespace, pod.UID)}
		res.Requeue = time.Second
	}
	if err := s.prepareClaims(ctx, pod, plan); err != nil {
		s.event(pod, corev1.EventTypeWarning, "FailedPrepareDynamicResources", "Failed to prepare dynamic resources: "+err.Error())
		res.Requeue = 2 * time.Second
		plan.Start = nil // nothing starts without its devices
	}
	vols, err := s.cfg.Volumes.Setup(ctx, pod)
	if err != nil {
		s.event(pod, corev1.EventTypeWarning, "FailedMount", err.Error())
		res.Requeue = 2 * time.Second
		plan.Start = nil // nothing starts without its volumes
	}
	changed, err := s.apply(ctx, pod, rp, plan, vols, res)
	if err != nil {
		return nil, err
	}
	// A sync that changed nothing in the runtime reports what it read at
	// its start, as upstream reports the status its sync began with: a
	// container that changes meanwhile is the next sync's, which the pod
	// lifecycle events bring.
	res.Runtime = rp
	if changed {
		if res.Runtime, err = s.Inspect(ctx, string(pod.UID)); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// backoffKey names a container's crash-loop back-off. It includes the
// container's hash, as upstream's key does, so that a new image starts
// the back-off afresh.
func backoffKey(pod *corev1.Pod, container string) string {
	key := string(pod.UID) + "/" + container
	if c := findContainer(pod, container); c != nil {
		key += "/" + ContainerHash(c)
	}
	return key
}

// apply carries out plan. changed says whether it asked the runtime to
// change anything (the runtime's view of the pod is then read again).
func (s *Syncer) apply(ctx context.Context, pod *corev1.Pod, rp *RuntimePod, plan Plan, vols map[string]volumes.Volume, res *SyncResult) (changed bool, err error) {
	changed = plan.KillPod || plan.CreateSandbox || len(plan.Kill) > 0 || len(plan.Start) > 0
	logger := klog.FromContext(ctx)
	failed := false // a container could not start (a Waiting reason)
	if plan.CreateSandbox {
		// Upstream's counters: pods whose sandbox is created, and those in
		// their own user namespace, with the syncs of these that fail.
		bmetrics.StartedPods.Inc()
		if pod.Spec.HostUsers != nil && !*pod.Spec.HostUsers {
			bmetrics.StartedUserNamespacedPods.Inc()
			defer func() {
				if err != nil || failed {
					bmetrics.StartedUserNamespacedPodsErrors.Inc()
				}
			}()
		}
	}
	if plan.KillPod {
		logger.V(2).Info("Sandbox is not ready; restarting the pod's sandbox", "pod", klog.KObj(pod))
		if err := s.Kill(ctx, pod, rp, 2); err != nil {
			return changed, err
		}
	}
	sb := rp.LatestSandbox()
	var sbConfig *runtimeapi.PodSandboxConfig
	if plan.CreateSandbox {
		if sb, sbConfig, err = s.runSandbox(ctx, pod, plan.SandboxAttempt); err != nil {
			bmetrics.StartedPodsErrors.Inc()
			s.event(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", fmt.Sprintf("Failed to create pod sandbox: %v", err))
			return changed, err
		}
	} else if sb != nil && len(plan.Start) > 0 {
		if sbConfig, err = SandboxConfig(s.cfg.Node, pod, sb.Metadata.GetAttempt()); err != nil {
			return changed, err
		}
	}
	for _, id := range plan.Kill {
		if err := s.stopWithPreStop(ctx, pod, containerName(rp, id), id, gracePeriod(pod)); err != nil {
			return changed, fmt.Errorf("failed to stop container %s: %w", id, err)
		}
	}
	if sb == nil {
		return changed, nil
	}
	if !plan.CreateSandbox && !plan.KillPod && pod.DeletionTimestamp == nil {
		resized, err := s.resizeRunning(ctx, pod, rp, sb.Id)
		if err != nil {
			klog.FromContext(ctx).Error(err, "Resizing the pod's containers", "pod", klog.KObj(pod))
		}
		changed = changed || resized
	}
	ips := sandboxIPs(pod, sb, s.cfg.HostIPs)
	for _, name := range plan.Start {
		// kubelet_started_containers_total counts each try; its errors by
		// the reason the container waits with, as upstream's error codes.
		ctype := containerType(pod, name)
		bmetrics.StartedContainers.WithLabelValues(ctype).Inc()
		if w, err := s.startContainer(ctx, pod, rp, name, sb.Id, sbConfig, ips, vols); err != nil {
			bmetrics.StartedContainersErrors.WithLabelValues(ctype, "RunContainerError").Inc()
			return changed, err
		} else if w != nil {
			bmetrics.StartedContainersErrors.WithLabelValues(ctype, w.Reason).Inc()
			failed = true
			res.Waiting[name] = *w
			res.Requeue = time.Second
			if isInit(pod, name) {
				break // later init containers wait for this one
			}
		}
	}
	return changed, nil
}

func containerName(rp *RuntimePod, id string) string {
	for _, c := range rp.Containers {
		if c.Id == id {
			return c.Metadata.GetName()
		}
	}
	return ""
}

// containerType is upstream's metric label of a container of the pod.
func containerType(pod *corev1.Pod, name string) string {
	if isInit(pod, name) {
		return "init_container"
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == name {
			return "ephemeral_container"
		}
	}
	return "container"
}

func isInit(pod *corev1.Pod, name string) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}

func (s *Syncer) runSandbox(ctx context.Context, pod *corev1.Pod, attempt uint32) (*runtimeapi.PodSandboxStatus, *runtimeapi.PodSandboxConfig, error) {
	cfg, err := SandboxConfig(s.cfg.Node, pod, attempt)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
		return nil, nil, err
	}
	if err := s.ensurePodCgroup(pod); err != nil {
		return nil, nil, err
	}
	handler, err := s.handler(ctx, pod)
	if err != nil {
		return nil, nil, err
	}
	id, err := s.cfg.Runtime.RunPodSandbox(ctx, cfg, handler)
	if err != nil {
		return nil, nil, err
	}
	st, err := s.cfg.Runtime.PodSandboxStatus(ctx, id, false)
	if err != nil {
		return nil, nil, err
	}
	return st.Status, cfg, nil
}

func sandboxIPs(pod *corev1.Pod, sb *runtimeapi.PodSandboxStatus, hostIPs []string) []string {
	if pod.Spec.HostNetwork {
		return hostIPs
	}
	var ips []string
	if ip := sb.GetNetwork().GetIp(); ip != "" {
		ips = append(ips, ip)
	}
	for _, extra := range sb.GetNetwork().GetAdditionalIps() {
		ips = append(ips, extra.Ip)
	}
	return ips
}

// startContainer pulls, creates and starts one container. A problem the
// pod's author must fix is returned as a Waiting reason.
func (s *Syncer) startContainer(ctx context.Context, pod *corev1.Pod, rp *RuntimePod, name, sandboxID string,
	sbConfig *runtimeapi.PodSandboxConfig, podIPs []string, vols map[string]volumes.Volume) (*Waiting, error) {
	c := findContainer(pod, name)
	if c == nil {
		return nil, fmt.Errorf("container %q is not in the pod spec", name)
	}
	restarts := int32(0)
	if prev := rp.Latest(name); prev != nil {
		restarts = restartCountOf(prev.Annotations) + 1
		if prev.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			s.backoff.Next(backoffKey(pod, name))
		}
	}
	imageRef, image, err := s.cfg.Images.Ensure(ctx, pod, c, func() []PullCredential { return s.pullAuth(ctx, pod, c.Image) })
	if err != nil {
		var ie *ImageError
		if errors.As(err, &ie) {
			return &Waiting{Reason: ie.Reason, Message: ie.Msg}, nil
		}
		return nil, err
	}
	if vols, err = s.pullImageVolumes(ctx, pod, c, vols); err != nil {
		var ie *ImageError
		if errors.As(err, &ie) {
			return &Waiting{Reason: ie.Reason, Message: ie.Msg}, nil
		}
		return nil, err
	}
	config, err := s.containerConfig(ctx, pod, c, restarts, imageRef, image, podIPs, vols)
	if err == nil {
		err = targetNamespace(pod, rp, name, config)
	}
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			s.event(pod, corev1.EventTypeWarning, "Failed", "Error: "+ce.Msg)
			return &Waiting{Reason: "CreateContainerConfigError", Message: ce.Msg}, nil
		}
		return nil, err
	}
	// The pod's context ends when the pod is killed, but a container
	// start is not cut short: containerd (2.x, containerd#11037) left a
	// start cancelled after its task was made with the task's process
	// waiting and the container EXITED, a container no CRI call can stop
	// or remove. The kill waits for the start (bounded by the runtime
	// request timeout) and then stops the running container.
	rctx := context.WithoutCancel(ctx)
	id, err := s.cfg.Runtime.CreateContainer(rctx, sandboxID, config, sbConfig)
	if err != nil {
		s.event(pod, corev1.EventTypeWarning, "Failed", "Error: "+err.Error())
		return &Waiting{Reason: "CreateContainerError", Message: err.Error()}, nil
	}
	s.event(pod, corev1.EventTypeNormal, "Created", "Created container: "+name)
	if s.cfg.Node.ContainerCreated != nil {
		s.cfg.Node.ContainerCreated(pod, name)
	}
	if err := s.cfg.Runtime.StartContainer(rctx, id); err != nil {
		s.event(pod, corev1.EventTypeWarning, "Failed", "Error: "+err.Error())
		return &Waiting{Reason: "RunContainerError", Message: err.Error()}, nil
	}
	s.event(pod, corev1.EventTypeNormal, "Started", "Started container "+name)
	s.linkContainerLog(pod.Name, pod.Namespace, name, id, filepath.Join(sbConfig.GetLogDirectory(), config.GetLogPath()))
	s.postStart(ctx, pod, c, id)
	return nil, nil
}

// pullImageVolumes makes the images of the image volumes c mounts present,
// per each volume's pull policy, and returns the volumes with the pulled
// images' references.
func (s *Syncer) pullImageVolumes(ctx context.Context, pod *corev1.Pod, c *corev1.Container, vols map[string]volumes.Volume) (map[string]volumes.Volume, error) {
	var out map[string]volumes.Volume
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok || v.Image == "" {
			continue
		}
		image := v.Image
		ref, _, err := s.cfg.Images.EnsureImage(ctx, pod, image, v.ImagePullPolicy, func() []PullCredential { return s.pullAuth(ctx, pod, image) })
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = make(map[string]volumes.Volume, len(vols))
			for k, x := range vols {
				out[k] = x
			}
		}
		v.Image = ref
		out[vm.Name] = v
	}
	if out == nil {
		return vols, nil
	}
	return out, nil
}

// handler is the CRI runtime handler of the pod's RuntimeClass ("" for none).
func (s *Syncer) handler(ctx context.Context, pod *corev1.Pod) (string, error) {
	rc := pod.Spec.RuntimeClassName
	if rc == nil || *rc == "" {
		return "", nil
	}
	if s.cfg.RuntimeHandler == nil {
		return *rc, nil
	}
	return s.cfg.RuntimeHandler(ctx, *rc)
}

func (s *Syncer) containerConfig(ctx context.Context, pod *corev1.Pod, c *corev1.Container, restarts int32, imageRef string,
	image *runtimeapi.Image, podIPs []string, vols map[string]volumes.Volume) (*runtimeapi.ContainerConfig, error) {
	var uid *int64
	user := ""
	if image != nil {
		if image.Uid != nil {
			uid = &image.Uid.Value
		}
		user = image.Username
	}
	if err := checkRunAsNonRoot(pod, c, uid, user); err != nil {
		return nil, err
	}
	var alloc corev1.ResourceList
	if s.cfg.Allocatable != nil {
		alloc = s.cfg.Allocatable()
	}
	env, err := containerEnv(ctx, s.cfg.Objects, envInputs{pod: pod, podIPs: podIPs, hostIPs: s.cfg.HostIPs, allocatable: alloc}, c)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for _, kv := range env {
		vars[kv.Key] = kv.Value
	}
	rro := false
	if s.cfg.RecursiveReadOnly != nil {
		handler, err := s.handler(ctx, pod)
		if err != nil {
			return nil, err
		}
		rro = s.cfg.RecursiveReadOnly(ctx, handler)
	}
	mounts, err := volumes.Mounts(c, vols, func(in string) string { return Expand(in, vars) }, rro,
		filepath.Join(s.cfg.Node.PodDir(pod), "volume-subpaths"))
	if err != nil {
		return nil, &ConfigError{Msg: err.Error()}
	}
	if m, err := terminationLogMount(s.cfg.Node, pod, c); err != nil {
		return nil, err
	} else {
		mounts = append(mounts, m)
	}
	if m, err := etcHostsMount(s.cfg.Node, pod, c, podIPs); err != nil {
		return nil, err
	} else if m != nil {
		mounts = append(mounts, m)
	}
	config, err := buildContainerConfig(s.cfg.Node, containerParams{
		pod: pod, container: c, restartCount: restarts, imageRef: imageRef, env: env, mounts: mounts, memCapacity: s.cfg.MemCapacity,
	})
	if err != nil {
		return nil, err
	}
	dev, err := s.cfg.Devices.ForContainer(ctx, pod, c)
	if err != nil {
		return nil, &ConfigError{Msg: err.Error()}
	}
	withDevices(config, dev)
	blocks, err := volumes.Devices(c, vols)
	if err != nil {
		return nil, &ConfigError{Msg: err.Error()}
	}
	config.Devices = append(config.Devices, blocks...)
	if (len(c.Resources.Claims) > 0 || pod.Status.ExtendedResourceClaimStatus != nil) && s.cfg.Claims != nil {
		ids, err := s.cfg.Claims.CDIDevices(pod, c)
		if err != nil {
			return nil, &ConfigError{Msg: err.Error()}
		}
		for _, id := range ids {
			config.CDIDevices = append(config.CDIDevices, &runtimeapi.CDIDevice{Name: id})
		}
	}
	return config, nil
}

// prepareClaims prepares the pod's ResourceClaims when it will start
// containers.
func (s *Syncer) prepareClaims(ctx context.Context, pod *corev1.Pod, plan Plan) error {
	// The claim the scheduler made for extended resources backed by DRA
	// is the pod's too (internal/dra/extended.go).
	if (len(pod.Spec.ResourceClaims) == 0 && pod.Status.ExtendedResourceClaimStatus == nil) || len(plan.Start) == 0 {
		return nil
	}
	if s.cfg.Claims == nil {
		return errors.New("this node does not serve resource claims")
	}
	return s.cfg.Claims.Prepare(ctx, pod)
}

// withDevices adds what the container's device plugins allocated: their
// environment first (the container's own variables win), their mounts,
// device nodes, annotations and CDI devices.
func withDevices(config *runtimeapi.ContainerConfig, dev *devices.ContainerOptions) {
	if dev == nil {
		return
	}
	names := make([]string, 0, len(dev.Envs))
	for k := range dev.Envs {
		names = append(names, k)
	}
	sort.Strings(names)
	envs := make([]*runtimeapi.KeyValue, 0, len(names)+len(config.Envs))
	for _, k := range names {
		envs = append(envs, &runtimeapi.KeyValue{Key: k, Value: []byte(dev.Envs[k])})
	}
	config.Envs = append(envs, config.Envs...)
	for _, m := range dev.Mounts {
		config.Mounts = append(config.Mounts, &runtimeapi.Mount{ContainerPath: m.ContainerPath, HostPath: m.HostPath, Readonly: m.ReadOnly})
	}
	for _, d := range dev.Devices {
		config.Devices = append(config.Devices, &runtimeapi.Device{ContainerPath: d.ContainerPath, HostPath: d.HostPath, Permissions: d.Permissions})
	}
	if len(dev.Annotations) > 0 && config.Annotations == nil {
		config.Annotations = map[string]string{}
	}
	for k, v := range dev.Annotations {
		config.Annotations[k] = v
	}
	for _, name := range dev.CDIDevices {
		config.CDIDevices = append(config.CDIDevices, &runtimeapi.CDIDevice{Name: name})
	}
}

// targetNamespace puts an ephemeral container with a targetContainerName
// (kubectl debug --target) in the PID namespace of that container's running
// instance, as upstream does when the pod does not share one namespace; the
// target not running is the pod's author's problem, with upstream's message.
func targetNamespace(pod *corev1.Pod, rp *RuntimePod, name string, config *runtimeapi.ContainerConfig) error {
	target := ""
	for _, ec := range pod.Spec.EphemeralContainers {
		if ec.Name == name {
			target = ec.TargetContainerName
		}
	}
	if target == "" {
		return nil
	}
	running := rp.Latest(target)
	if running == nil || running.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return &ConfigError{Msg: "unable to find target container " + target}
	}
	ns := config.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if ns != nil && ns.Pid == runtimeapi.NamespaceMode_CONTAINER {
		ns.Pid = runtimeapi.NamespaceMode_TARGET
		ns.TargetId = running.Id
	}
	return nil
}

func findContainer(pod *corev1.Pod, name string) *corev1.Container {
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	for _, ec := range pod.Spec.EphemeralContainers {
		if ec.Name == name {
			c := corev1.Container(ec.EphemeralContainerCommon)
			return &c
		}
	}
	return nil
}

// gracePeriod is the pod's deletion grace period, or its spec's.
func gracePeriod(pod *corev1.Pod) int64 {
	if pod.DeletionGracePeriodSeconds != nil {
		return *pod.DeletionGracePeriodSeconds
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return *pod.Spec.TerminationGracePeriodSeconds
	}
	return corev1.DefaultTerminationGracePeriodSeconds
}

// GracePeriod is exported for the pod workers.
func GracePeriod(pod *corev1.Pod) int64 { return gracePeriod(pod) }

// End is why the agent ends a pod before its containers do: an eviction,
// its active deadline.
type End struct {
	Reason, Message string
	// DisruptionTarget: for the node's sake (a pressure eviction).
	DisruptionTarget bool
	// Grace, when set, is the stop's grace period in place of the pod's
	// when shorter (upstream's eviction grace period override).
	Grace *int64
}

// Kill stops every running container of the pod (in parallel, each with
// grace seconds: SIGTERM, then SIGKILL) and then its sandboxes.
func (s *Syncer) Kill(ctx context.Context, pod *corev1.Pod, rp *RuntimePod, grace int64) error {
	// App containers first (their preStop hooks may still need the
	// sidecars), then sidecars in reverse order, as upstream does.
	var apps []*Container
	sidecars := map[string]*Container{}
	for _, c := range rp.Containers {
		if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		if sc := findContainer(pod, c.Metadata.GetName()); sc != nil && IsSidecar(*sc) && isInit(pod, sc.Name) {
			sidecars[sc.Name] = c
		} else {
			apps = append(apps, c)
		}
	}
	start := time.Now()
	if err := s.stopAll(ctx, pod, apps, grace); err != nil {
		return err
	}
	left := max(grace-int64(time.Since(start).Seconds()), minStopGrace)
	for i := len(pod.Spec.InitContainers) - 1; i >= 0; i-- {
		if c, ok := sidecars[pod.Spec.InitContainers[i].Name]; ok {
			if err := s.stopAll(ctx, pod, []*Container{c}, left); err != nil {
				return err
			}
		}
	}
	for _, sb := range rp.Sandboxes {
		if sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			if err := s.cfg.Runtime.StopPodSandbox(ctx, sb.Id); err != nil {
				return fmt.Errorf("failed to stop sandbox %s: %w", sb.Id, err)
			}
		}
	}
	return nil
}

// stopAll stops containers in parallel, each with its preStop hook.
func (s *Syncer) stopAll(ctx context.Context, pod *corev1.Pod, ctrs []*Container, grace int64) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(ctrs))
	for _, c := range ctrs {
		wg.Add(1)
		go func(c *Container) {
			defer wg.Done()
			s.event(pod, corev1.EventTypeNormal, "Killing", "Stopping container "+c.Metadata.GetName())
			if err := s.stopWithPreStop(ctx, pod, c.Metadata.GetName(), c.Id, grace); err != nil {
				errs <- fmt.Errorf("failed to stop container %s: %w", c.Metadata.GetName(), err)
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// UnprepareClaims releases the pod's dynamic resources; its containers
// have stopped.
func (s *Syncer) UnprepareClaims(ctx context.Context, pod *corev1.Pod) error {
	if s.cfg.Claims == nil {
		return nil
	}
	if err := s.cfg.Claims.Unprepare(ctx, pod.UID); err != nil {
		return fmt.Errorf("failed to unprepare dynamic resources: %w", err)
	}
	return nil
}

// Reclaim unmounts the volumes of a pod that has stopped for good and
// removes its cgroup. Its containers (and their logs) stay until the pod
// object goes; Remove does both again, which costs nothing when done.
func (s *Syncer) Reclaim(ctx context.Context, pod *corev1.Pod) error {
	if err := s.cfg.Volumes.Teardown(pod); err != nil {
		return fmt.Errorf("failed to tear down volumes: %w", err)
	}
	if err := s.removePodCgroup(pod.UID); err != nil {
		klog.FromContext(ctx).Error(err, "Failed to remove the pod's cgroup", "podUID", pod.UID)
	}
	return nil
}

// Remove deletes the pod's containers, sandboxes and state folder.
func (s *Syncer) Remove(ctx context.Context, pod *corev1.Pod) error {
	rp, err := s.Inspect(ctx, string(pod.UID))
	if err != nil {
		return err
	}
	for _, c := range rp.Containers {
		// A start still in flight in the runtime when the pod was killed
		// can leave a container running after the kill (the kill stops
		// only what was running then), and the runtime refuses to remove
		// a running container: stop it first, at once.
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING || c.State == runtimeapi.ContainerState_CONTAINER_UNKNOWN {
			if err := s.cfg.Runtime.StopContainer(ctx, c.Id, 0); err != nil {
				return fmt.Errorf("failed to stop container %s before removing it: %w", c.Id, err)
			}
		}
		if err := s.removeContainer(ctx, c.Id, c.ContainerStatus); err != nil {
			return fmt.Errorf("failed to remove container %s: %w", c.Id, err)
		}
	}
	for _, sb := range rp.Sandboxes {
		if err := s.cfg.Runtime.StopPodSandbox(ctx, sb.Id); err != nil {
			return err
		}
		if err := s.cfg.Runtime.RemovePodSandbox(ctx, sb.Id); err != nil {
			return fmt.Errorf("failed to remove sandbox %s: %w", sb.Id, err)
		}
	}
	if err := s.removePodCgroup(pod.UID); err != nil {
		// The garbage collector retries it; the pod's removal goes on.
		klog.FromContext(ctx).Error(err, "Failed to remove the pod's cgroup", "podUID", pod.UID)
	}
	if err := s.UnprepareClaims(ctx, pod); err != nil {
		return err
	}
	if err := s.cfg.Volumes.Teardown(pod); err != nil {
		return fmt.Errorf("failed to tear down volumes: %w", err)
	}
	s.backoff.Forget(string(pod.UID) + "/")
	if s.cfg.Images != nil {
		s.cfg.Images.backoff.Forget(string(pod.UID) + "/") // its image pulls' back-off
	}
	if s.cfg.Node.PodLogsDir != "" {
		logDirs := []string{s.cfg.Node.PodLogDir(pod)}
		if pod.Name == "" { // an orphan known by UID only
			logDirs, _ = filepath.Glob(filepath.Join(s.cfg.Node.PodLogsDir, "*_"+string(pod.UID)))
		}
		for _, d := range logDirs {
			if err := os.RemoveAll(d); err != nil {
				return fmt.Errorf("failed to remove the pod's log folder: %w", err)
			}
		}
	}
	return os.RemoveAll(s.cfg.Node.PodDir(pod))
}

func (s *Syncer) event(pod *corev1.Pod, kind, reason, msg string) {
	if s.cfg.Recorder != nil {
		s.cfg.Recorder.Event(pod, kind, reason, msg)
	}
}
