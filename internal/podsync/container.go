package podsync

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerParams are the per-start inputs of a container config.
type containerParams struct {
	pod          *corev1.Pod
	container    *corev1.Container
	restartCount int32
	imageRef     string       // the pulled image's reference
	env          []*runtimeKV // resolved environment
	mounts       []*runtimeapi.Mount
	memCapacity  int64
}

// buildContainerConfig makes the CRI config for one container start.
func buildContainerConfig(n NodeSettings, p containerParams) (*runtimeapi.ContainerConfig, error) {
	c := p.container
	security, err := containerSecurity(n, p.pod, c)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	envs := make([]*runtimeapi.KeyValue, 0, len(p.env))
	for _, kv := range p.env {
		vars[kv.Key] = kv.Value
		envs = append(envs, &runtimeapi.KeyValue{Key: kv.Key, Value: []byte(kv.Value)})
	}
	expand := func(in []string) []string {
		out := make([]string, len(in))
		for i, s := range in {
			out[i] = Expand(s, vars)
		}
		return out
	}
	cfg := &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: uint32(p.restartCount)},
		Image:       &runtimeapi.ImageSpec{Image: p.imageRef, UserSpecifiedImage: c.Image},
		Command:     expand(c.Command),
		Args:        expand(c.Args),
		WorkingDir:  c.WorkingDir,
		Envs:        envs,
		Mounts:      p.mounts,
		Labels:      containerLabels(p.pod, c.Name),
		Annotations: containerAnnotations(p.pod, c, p.restartCount),
		LogPath:     filepath.Join(c.Name, strconv.Itoa(int(p.restartCount))+".log"),
		Stdin:       c.Stdin,
		StdinOnce:   c.StdinOnce,
		Tty:         c.TTY,
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources:       containerResources(n, p.pod, c, p.memCapacity),
			SecurityContext: security,
		},
	}
	if userns := security.NamespaceOptions.GetUsernsOptions(); userns != nil {
		// As upstream: every mount mapped as the pod's user namespace, so
		// that its root owns what the host's root does.
		for _, m := range cfg.Mounts {
			m.UidMappings, m.GidMappings = userns.Uids, userns.Gids
		}
	}
	return cfg, nil
}

// containerSecurity maps the pod's and container's security contexts (the
// container's fields win) to CRI.
func containerSecurity(n NodeSettings, pod *corev1.Pod, c *corev1.Container) (*runtimeapi.LinuxContainerSecurityContext, error) {
	lx, err := sandboxLinux(n, pod)
	if err != nil {
		return nil, err
	}
	out := &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: lx.SecurityContext.NamespaceOptions}
	if pod.Spec.ShareProcessNamespace == nil || !*pod.Spec.ShareProcessNamespace {
		if !pod.Spec.HostPID {
			out.NamespaceOptions.Pid = runtimeapi.NamespaceMode_CONTAINER
		}
	}
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	csc := c.SecurityContext
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	if u := pick(csc.RunAsUser, psc.RunAsUser); u != nil {
		out.RunAsUser = &runtimeapi.Int64Value{Value: *u}
	}
	if g := pick(csc.RunAsGroup, psc.RunAsGroup); g != nil {
		out.RunAsGroup = &runtimeapi.Int64Value{Value: *g}
	}
	out.SupplementalGroups = append(out.SupplementalGroups, psc.SupplementalGroups...)
	if psc.FSGroup != nil {
		out.SupplementalGroups = append(out.SupplementalGroups, *psc.FSGroup)
	}
	out.Privileged = csc.Privileged != nil && *csc.Privileged
	out.ReadonlyRootfs = csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem
	out.NoNewPrivs = csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation
	if caps := csc.Capabilities; caps != nil {
		out.Capabilities = &runtimeapi.Capability{}
		for _, c := range caps.Add {
			out.Capabilities.AddCapabilities = append(out.Capabilities.AddCapabilities, string(c))
		}
		for _, c := range caps.Drop {
			out.Capabilities.DropCapabilities = append(out.Capabilities.DropCapabilities, string(c))
		}
	}
	out.SupplementalGroupsPolicy = supplementalGroupsPolicy(psc)
	if out.Seccomp, err = seccompProfile(n, pick(csc.SeccompProfile, psc.SeccompProfile)); err != nil {
		return nil, err
	}
	// The string form too, for runtimes that read only that (as upstream sends both).
	out.Apparmor, out.ApparmorProfile = appArmorProfile(pod, c) //nolint:staticcheck // deprecated in CRI, still read by older runtimes
	out.SelinuxOptions = seLinuxOptions(pick(csc.SELinuxOptions, psc.SELinuxOptions))
	out.MaskedPaths, out.ReadonlyPaths = procPaths(csc.ProcMount)
	return out, nil
}

func pick[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

// seccompProfile maps a seccomp profile to CRI. No profile is Unconfined,
// or RuntimeDefault with seccompDefault. A Localhost profile is a file under
// <root-dir>/seccomp; naming none, or a path out of that folder, is an error,
// never a silent Unconfined (upstream CVE-2023-2431).
func seccompProfile(n NodeSettings, p *corev1.SeccompProfile) (*runtimeapi.SecurityProfile, error) {
	if p == nil {
		if n.SeccompDefault {
			return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}, nil
		}
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}, nil
	}
	switch p.Type {
	case corev1.SeccompProfileTypeRuntimeDefault:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}, nil
	case corev1.SeccompProfileTypeUnconfined:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}, nil
	case corev1.SeccompProfileTypeLocalhost:
		if p.LocalhostProfile == nil || *p.LocalhostProfile == "" {
			return nil, &ConfigError{Msg: "localhostProfile must be set if seccompProfile type is Localhost."}
		}
		rel := filepath.Clean(filepath.FromSlash(*p.LocalhostProfile))
		if filepath.IsAbs(rel) || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return nil, &ConfigError{Msg: fmt.Sprintf("localhostProfile %q must be a path relative to %s, inside it", *p.LocalhostProfile, n.SeccompRoot())}
		}
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: filepath.Join(n.SeccompRoot(), rel)}, nil
	default:
		return nil, &ConfigError{Msg: fmt.Sprintf("unknown seccompProfile type %q", p.Type)}
	}
}

// checkRunAsNonRoot refuses a container that would run as root when
// runAsNonRoot is set: by its runAsUser, or by the image's user (checked on
// every start, cached image or not).
func checkRunAsNonRoot(pod *corev1.Pod, c *corev1.Container, imageUID *int64, imageUser string) error {
	psc, csc := pod.Spec.SecurityContext, c.SecurityContext
	var nonRoot *bool
	var uid *int64
	if csc != nil {
		nonRoot, uid = csc.RunAsNonRoot, csc.RunAsUser
	}
	if psc != nil {
		nonRoot, uid = pick(nonRoot, psc.RunAsNonRoot), pick(uid, psc.RunAsUser)
	}
	if nonRoot == nil || !*nonRoot {
		return nil
	}
	if uid != nil {
		if *uid == 0 {
			return &ConfigError{Msg: "container's runAsUser breaks non-root policy (pod: " + podRef(pod) + ", container: " + c.Name + ")"}
		}
		return nil
	}
	switch {
	case imageUID != nil && *imageUID == 0:
		return &ConfigError{Msg: "container has runAsNonRoot and image will run as root (pod: " + podRef(pod) + ", container: " + c.Name + ")"}
	case imageUID == nil && imageUser != "":
		return &ConfigError{Msg: fmt.Sprintf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root (pod: %s, container: %s)", imageUser, podRef(pod), c.Name)}
	case imageUID == nil:
		return &ConfigError{Msg: "container has runAsNonRoot and image will run as root (pod: " + podRef(pod) + ", container: " + c.Name + ")"}
	}
	return nil
}

func podRef(pod *corev1.Pod) string {
	return pod.Name + "_" + pod.Namespace + "(" + string(pod.UID) + ")"
}

// terminationLogMount creates the host file behind a container's
// terminationMessagePath and returns its mount.
func terminationLogMount(n NodeSettings, pod *corev1.Pod, c *corev1.Container) (*runtimeapi.Mount, error) {
	path := c.TerminationMessagePath
	if path == "" {
		path = corev1.TerminationMessagePathDefault
	}
	dir := filepath.Join(n.PodDir(pod), "containers", c.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	host := filepath.Join(dir, hex.EncodeToString(b))
	f, err := os.OpenFile(host, os.O_CREATE|os.O_WRONLY, 0o666)
	if err != nil {
		return nil, fmt.Errorf("failed to create the termination log: %w", err)
	}
	f.Close()
	_ = os.Chmod(host, 0o666)
	return &runtimeapi.Mount{ContainerPath: path, HostPath: host}, nil
}

// etcHosts writes the pod's managed /etc/hosts and returns its mount, or nil
// when the pod uses the host network's file or a container mounts its own.
func etcHostsMount(n NodeSettings, pod *corev1.Pod, c *corev1.Container, podIPs []string) (*runtimeapi.Mount, error) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/etc/hosts" {
			return nil, nil
		}
	}
	file := filepath.Join(n.PodDir(pod), "etc-hosts")
	var content []byte
	if pod.Spec.HostNetwork {
		host, err := os.ReadFile("/etc/hosts")
		if err != nil {
			return nil, err
		}
		content = append([]byte("# Kubernetes-managed hosts file (host network).\n"), host...)
		content = append(content, hostAliases(pod)...)
	} else {
		content = []byte(managedHosts(n, pod, podIPs))
	}
	if err := os.WriteFile(file, content, 0o644); err != nil {
		return nil, fmt.Errorf("failed to write %s: %w", file, err)
	}
	return &runtimeapi.Mount{ContainerPath: "/etc/hosts", HostPath: file}, nil
}

func managedHosts(n NodeSettings, pod *corev1.Pod, podIPs []string) string {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	hostname, _ := podHostname(pod)
	for _, ip := range podIPs {
		if pod.Spec.Subdomain != "" && n.ClusterDomain != "" && !hasHostnameOverride(pod) {
			fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.%s\t%s\n", ip, hostname, pod.Spec.Subdomain, pod.Namespace, strings.TrimSuffix(n.ClusterDomain, "."), hostname)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
		}
	}
	b.WriteString(hostAliases(pod))
	return b.String()
}

// hostAliases is the hosts-file section for spec.hostAliases.
func hostAliases(pod *corev1.Pod) string {
	if len(pod.Spec.HostAliases) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n# Entries added by HostAliases.\n")
	for _, a := range pod.Spec.HostAliases {
		fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
	}
	return b.String()
}
