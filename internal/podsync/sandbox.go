package podsync

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bosun-dev/bosun/internal/cgroups"
)

// NodeSettings are the node-wide inputs of sandbox and container configs.
type NodeSettings struct {
	ClusterDNS    []string // clusterDNS
	ClusterDomain string   // clusterDomain
	ResolvConf    string   // resolvConf: the host's resolver file ("" disables)
	PodLogsDir    string   // podLogsDir: /var/log/pods
	// ContainerLogsDir gets a symlink per container log, named as log
	// shippers expect ("" for none; the agent uses /var/log/containers).
	ContainerLogsDir string
	RootDir          string // --root-dir
	CgroupsPerQOS    bool   // cgroupsPerQOS
	CgroupDriver     string // cgroupDriver
	CgroupRoot       string // cgroupRoot: the parent of kubepods ("" or "/": the top)
	CPUCFSQuota      bool   // cpuCFSQuota
	CFSPeriodUS      int64  // cpuCFSQuotaPeriod in microseconds
	NodeName         string // the node's name
	// SeccompDefault makes RuntimeDefault the profile of containers that
	// name none (seccompDefault).
	SeccompDefault bool
	PodPidsLimit   int64 // podPidsLimit (0 or -1: none)
	// PodsLimits are the kubepods cgroup's limits (enforceNodeAllocatable
	// "pods"; zero: none).
	PodsLimits cgroups.Limits
	// Swap is what the node's swap allows containers.
	Swap Swap
	// OOMGroup: the kernel's OOM killer ends every process of a container
	// together (memory.oom.group, cgroup v2 with singleProcessOOMKill false,
	// its default there).
	OOMGroup bool
	// UserNamespace is the pod's user namespace for CRI (internal/userns;
	// nil: the node's, and hostUsers: false is refused).
	UserNamespace func(pod *corev1.Pod) (*runtimeapi.UserNamespace, error)
	// CPUs is the CPU manager's answer for a container (nil: nothing is
	// pinned): the CPU set it runs on, and whether those CPUs are its own,
	// which lifts its CFS quota and its pod's, as upstream.
	CPUs func(uid types.UID, container string) (set string, exclusive bool)
	// MemoryNodes is the memory manager's answer for a container (nil:
	// none): the NUMA nodes its memory comes from, as cpuset.mems ("" for
	// all).
	MemoryNodes func(uid types.UID, container string) string
	// ContainerCreated is told of each container created, before it
	// starts (nil: no one is), as upstream's resource managers are.
	ContainerCreated func(pod *corev1.Pod, container string)
}

// SeccompRoot holds the Localhost seccomp profiles: <root-dir>/seccomp.
func (n NodeSettings) SeccompRoot() string { return filepath.Join(n.RootDir, "seccomp") }

// PodLogDir is /var/log/pods/<namespace>_<name>_<uid>.
func (n NodeSettings) PodLogDir(pod *corev1.Pod) string {
	return filepath.Join(n.PodLogsDir, fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID))
}

// PodDir is <root-dir>/pods/<uid>.
func (n NodeSettings) PodDir(pod *corev1.Pod) string {
	return filepath.Join(n.RootDir, "pods", string(pod.UID))
}

// SandboxConfig builds the CRI sandbox config of a pod.
func SandboxConfig(n NodeSettings, pod *corev1.Pod, attempt uint32) (*runtimeapi.PodSandboxConfig, error) {
	hostname, err := podHostname(pod)
	if err != nil {
		return nil, err
	}
	dns, err := DNSConfig(n, pod)
	if err != nil {
		return nil, err
	}
	linux, err := sandboxLinux(n, pod)
	if err != nil {
		return nil, err
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: pod.Name, Namespace: pod.Namespace, Uid: string(pod.UID), Attempt: attempt},
		Hostname:     hostname,
		LogDirectory: n.PodLogDir(pod),
		DnsConfig:    dns,
		Labels:       podLabels(pod),
		Annotations:  copyMap(pod.Annotations),
		Linux:        linux,
	}
	if pod.Spec.HostNetwork {
		cfg.Hostname = "" // the host's own hostname
	}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, port := range c.Ports {
			if port.HostPort <= 0 {
				continue
			}
			cfg.PortMappings = append(cfg.PortMappings, &runtimeapi.PortMapping{
				Protocol: protocol(port.Protocol), ContainerPort: port.ContainerPort, HostPort: port.HostPort, HostIp: port.HostIP,
			})
		}
	}
	return cfg, nil
}

func sandboxLinux(n NodeSettings, pod *corev1.Pod) (*runtimeapi.LinuxPodSandboxConfig, error) {
	ns := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD}
	if pod.Spec.HostNetwork {
		ns.Network = runtimeapi.NamespaceMode_NODE
	}
	if pod.Spec.HostPID {
		ns.Pid = runtimeapi.NamespaceMode_NODE
	} else if pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace {
		ns.Pid = runtimeapi.NamespaceMode_POD
	}
	if pod.Spec.HostIPC {
		ns.Ipc = runtimeapi.NamespaceMode_NODE
	}
	if n.UserNamespace != nil {
		userns, err := n.UserNamespace(pod)
		if err != nil {
			return nil, err
		}
		ns.UsernsOptions = userns
	} else if pod.Spec.HostUsers != nil && !*pod.Spec.HostUsers {
		// Without ID ranges from the agent, running the pod in the host's
		// user namespace would be a lie.
		return nil, errors.New("can't set `spec.hostUsers: false`, runtime does not support user namespaces")
	}
	lx := &runtimeapi.LinuxPodSandboxConfig{
		CgroupParent:    CgroupParent(n, pod),
		SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns},
		Sysctls:         map[string]string{},
	}
	// containerd admits a privileged container only in a privileged sandbox.
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
				lx.SecurityContext.Privileged = true
			}
		}
	}
	if sc := pod.Spec.SecurityContext; sc != nil {
		for _, s := range sc.Sysctls {
			lx.Sysctls[s.Name] = s.Value
		}
		if sc.RunAsUser != nil {
			lx.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: *sc.RunAsUser}
		}
		if sc.RunAsGroup != nil {
			lx.SecurityContext.RunAsGroup = &runtimeapi.Int64Value{Value: *sc.RunAsGroup}
		}
		lx.SecurityContext.SupplementalGroups = append(lx.SecurityContext.SupplementalGroups, sc.SupplementalGroups...)
		if sc.FSGroup != nil {
			lx.SecurityContext.SupplementalGroups = append(lx.SecurityContext.SupplementalGroups, *sc.FSGroup)
		}
		lx.SecurityContext.SupplementalGroupsPolicy = supplementalGroupsPolicy(sc)
		lx.SecurityContext.SelinuxOptions = seLinuxOptions(sc.SELinuxOptions)
	}
	var psp *corev1.SeccompProfile
	if pod.Spec.SecurityContext != nil {
		psp = pod.Spec.SecurityContext.SeccompProfile
	}
	sp, err := seccompProfile(n, psp)
	if err != nil {
		return nil, err
	}
	lx.SecurityContext.Seccomp = sp
	return lx, nil
}

func supplementalGroupsPolicy(sc *corev1.PodSecurityContext) runtimeapi.SupplementalGroupsPolicy {
	if sc != nil && sc.SupplementalGroupsPolicy != nil && *sc.SupplementalGroupsPolicy == corev1.SupplementalGroupsPolicyStrict {
		return runtimeapi.SupplementalGroupsPolicy_Strict
	}
	return runtimeapi.SupplementalGroupsPolicy_Merge
}

// CgroupParent is the pod's cgroup under the QoS cgroup of its class:
// <cgroupRoot>/kubepods/pod<uid> (Guaranteed), .../kubepods/burstable/pod<uid>,
// .../kubepods/besteffort/pod<uid>; "" when cgroupsPerQOS is off.
func CgroupParent(n NodeSettings, pod *corev1.Pod) string {
	if !n.CgroupsPerQOS {
		return ""
	}
	parts := []string{"kubepods"}
	switch QOSClass(pod) {
	case corev1.PodQOSBurstable:
		parts = append(parts, "burstable")
	case corev1.PodQOSBestEffort:
		parts = append(parts, "besteffort")
	}
	if n.CgroupDriver == "systemd" {
		// kubepods-burstable-pod<uid>.slice, with the UID's dashes escaped.
		return strings.Join(parts, "-") + "-pod" + strings.ReplaceAll(string(pod.UID), "-", "_") + ".slice"
	}
	return path.Join(append([]string{n.cgroupRoot()}, append(parts, "pod"+string(pod.UID))...)...)
}

// cgroupRoot is cgroupRoot as an absolute cgroup path ("/" when unset).
func (n NodeSettings) cgroupRoot() string { return path.Join("/", n.CgroupRoot) }

// podHostname is spec.hostnameOverride, else spec.hostname or the pod name,
// within 63 characters.
func podHostname(pod *corev1.Pod) (string, error) {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if hasHostnameOverride(pod) {
		h = *pod.Spec.HostnameOverride
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	if h == "" {
		return "", fmt.Errorf("pod %s/%s has no usable hostname", pod.Namespace, pod.Name)
	}
	return h, nil
}

// hasHostnameOverride: the pod's hostname is spec.hostnameOverride, and it
// has no domain of its own (no subdomain entry in /etc/hosts), as upstream.
func hasHostnameOverride(pod *corev1.Pod) bool {
	return pod.Spec.HostnameOverride != nil && *pod.Spec.HostnameOverride != ""
}

func protocol(p corev1.Protocol) runtimeapi.Protocol {
	switch p {
	case corev1.ProtocolUDP:
		return runtimeapi.Protocol_UDP
	case corev1.ProtocolSCTP:
		return runtimeapi.Protocol_SCTP
	default:
		return runtimeapi.Protocol_TCP
	}
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// ensureDirs makes the pod's log and state folders.
func ensureDirs(n NodeSettings, pod *corev1.Pod) error {
	for _, d := range []string{n.PodLogDir(pod), n.PodDir(pod), filepath.Join(n.PodDir(pod), "containers")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	return nil
}
