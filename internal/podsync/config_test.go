package podsync

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "alpha", "B": "beta"}
	for in, want := range map[string]string{
		"$(A)-$(B)":    "alpha-beta",
		"$$(A)":        "$(A)",
		"$(MISSING)":   "$(MISSING)",
		"$(A":          "$(A",
		"plain $ sign": "plain $ sign",
		"$":            "$",
		"$$":           "$",
		"x$(A)y":       "xalphay",
	} {
		if got := Expand(in, vars); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeObjects serves ConfigMaps, Secrets and Services from maps.
type fakeObjects struct {
	cms      map[string]*corev1.ConfigMap
	secrets  map[string]*corev1.Secret
	services map[string][]*corev1.Service
}

func (f *fakeObjects) ConfigMap(_ context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if cm, ok := f.cms[ns+"/"+name]; ok {
		return cm, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (f *fakeObjects) Secret(_ context.Context, ns, name string) (*corev1.Secret, error) {
	if s, ok := f.secrets[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func (f *fakeObjects) Services(_ context.Context, ns string) ([]*corev1.Service, error) {
	return f.services[ns], nil
}

var _ Objects = (*fakeObjects)(nil)

func envPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "sa"},
	}
}

func TestContainerEnv(t *testing.T) {
	objs := &fakeObjects{
		cms:     map[string]*corev1.ConfigMap{"ns/cm": {Data: map[string]string{"k": "from-cm", "other": "o"}}},
		secrets: map[string]*corev1.Secret{"ns/s": {Data: map[string][]byte{"pw": []byte("hunter2")}}},
		services: map[string][]*corev1.Service{"default": {{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.254.0.1", Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}}}}}},
	}
	optional := true
	c := &corev1.Container{
		Name:      "c",
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
		EnvFrom:   []corev1.EnvFromSource{{Prefix: "CM_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}},
		Env: []corev1.EnvVar{
			{Name: "PLAIN", Value: "v"},
			{Name: "EXPANDED", Value: "$(PLAIN)-$(CM_k)"},
			{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "LABEL", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "pw"}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "none"}, Key: "k", Optional: &optional}}},
		},
	}
	in := envInputs{pod: envPod(), podIPs: []string{"10.88.0.9"}, hostIPs: []string{"10.0.0.1"},
		allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}}
	kvs, err := containerEnv(context.Background(), objs, in, c)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range kvs {
		got[kv.Key] = kv.Value
	}
	want := map[string]string{
		"PLAIN": "v", "EXPANDED": "v-from-cm", "POD": "p", "LABEL": "web", "IP": "10.88.0.9", "MEM": "64", "CPU": "2",
		"PW": "hunter2", "OPT": "", "CM_k": "from-cm", "CM_other": "o",
		"KUBERNETES_SERVICE_HOST": "10.254.0.1", "KUBERNETES_SERVICE_PORT": "443", "KUBERNETES_SERVICE_PORT_HTTPS": "443",
		"KUBERNETES_PORT": "tcp://10.254.0.1:443", "KUBERNETES_PORT_443_TCP_ADDR": "10.254.0.1",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestContainerEnvMissingRefsAreConfigErrors(t *testing.T) {
	objs := &fakeObjects{cms: map[string]*corev1.ConfigMap{"ns/cm": {Data: map[string]string{}}}}
	cases := map[string]corev1.EnvVar{
		"couldn't find key k in ConfigMap ns/cm": {Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "k"}}},
		`configmap "gone" not found`: {Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "k"}}},
		`secret "gone" not found`: {Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "k"}}},
	}
	for want, e := range cases {
		_, err := containerEnv(context.Background(), objs, envInputs{pod: envPod()}, &corev1.Container{Env: []corev1.EnvVar{e}})
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Msg != want {
			t.Errorf("got %v, want ConfigError %q", err, want)
		}
	}
}

func TestDNSConfig(t *testing.T) {
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 1.1.1.1\nsearch host.example\noptions rotate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n := NodeSettings{ClusterDNS: []string{"10.254.0.2"}, ClusterDomain: "cluster.local", ResolvConf: resolv}
	two := "2"
	cases := []struct {
		name   string
		mutate func(*corev1.Pod)
		node   NodeSettings
		want   *runtimeapi.DNSConfig
	}{
		{"ClusterFirst", func(*corev1.Pod) {}, n, &runtimeapi.DNSConfig{Servers: []string{"10.254.0.2"},
			Searches: []string{"ns.svc.cluster.local", "svc.cluster.local", "cluster.local", "host.example"}, Options: []string{"ndots:5"}}},
		{"Default", func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }, n,
			&runtimeapi.DNSConfig{Servers: []string{"1.1.1.1"}, Searches: []string{"host.example"}, Options: []string{"rotate"}}},
		{"ClusterFirst on the host network falls back to Default", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, n,
			&runtimeapi.DNSConfig{Servers: []string{"1.1.1.1"}, Searches: []string{"host.example"}, Options: []string{"rotate"}}},
		{"ClusterFirstWithHostNet", func(p *corev1.Pod) { p.Spec.HostNetwork = true; p.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet }, n,
			&runtimeapi.DNSConfig{Servers: []string{"10.254.0.2"},
				Searches: []string{"ns.svc.cluster.local", "svc.cluster.local", "cluster.local", "host.example"}, Options: []string{"ndots:5"}}},
		{"None with dnsConfig", func(p *corev1.Pod) {
			p.Spec.DNSPolicy = corev1.DNSNone
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"9.9.9.9"}, Searches: []string{"a.b"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &two}}}
		}, n, &runtimeapi.DNSConfig{Servers: []string{"9.9.9.9"}, Searches: []string{"a.b"}, Options: []string{"ndots:2"}}},
		{"dnsConfig options override", func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &two}, {Name: "edns0"}}}
		}, n, &runtimeapi.DNSConfig{Servers: []string{"10.254.0.2"},
			Searches: []string{"ns.svc.cluster.local", "svc.cluster.local", "cluster.local", "host.example"}, Options: []string{"ndots:2", "edns0"}}},
		{"no clusterDNS: Default", func(*corev1.Pod) {}, NodeSettings{ResolvConf: resolv},
			&runtimeapi.DNSConfig{Servers: []string{"1.1.1.1"}, Searches: []string{"host.example"}, Options: []string{"rotate"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := envPod()
			tc.mutate(pod)
			got, err := DNSConfig(tc.node, pod)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Servers, tc.want.Servers) || !reflect.DeepEqual(got.Searches, tc.want.Searches) || !reflect.DeepEqual(got.Options, tc.want.Options) {
				t.Fatalf("got %v / %v / %v\nwant %v / %v / %v", got.Servers, got.Searches, got.Options, tc.want.Servers, tc.want.Searches, tc.want.Options)
			}
		})
	}
}

func TestQOSAndResources(t *testing.T) {
	res := func(req, lim string) corev1.ResourceRequirements {
		r := corev1.ResourceRequirements{}
		if req != "" {
			r.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(req), corev1.ResourceMemory: resource.MustParse("64Mi")}
		}
		if lim != "" {
			r.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(lim), corev1.ResourceMemory: resource.MustParse("64Mi")}
		}
		return r
	}
	pod := func(r corev1.ResourceRequirements) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "u"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: r}}}}
	}
	n := NodeSettings{CgroupsPerQOS: true, CgroupDriver: "cgroupfs", CPUCFSQuota: true}
	cases := []struct {
		r      corev1.ResourceRequirements
		qos    corev1.PodQOSClass
		parent string
		shares int64
		quota  int64
		oom    int64
	}{
		{corev1.ResourceRequirements{}, corev1.PodQOSBestEffort, "/kubepods/besteffort/podu", 2, 0, 1000},
		{res("500m", "500m"), corev1.PodQOSGuaranteed, "/kubepods/podu", 512, 50000, -997},
		{res("250m", "1"), corev1.PodQOSBurstable, "/kubepods/burstable/podu", 256, 100000, 999},
	}
	for _, tc := range cases {
		p := pod(tc.r)
		if q := QOSClass(p); q != tc.qos {
			t.Errorf("QOS %s, want %s", q, tc.qos)
		}
		if got := CgroupParent(n, p); got != tc.parent {
			t.Errorf("parent %s, want %s", got, tc.parent)
		}
		r := containerResources(n, p, &p.Spec.Containers[0], 1<<40)
		if r.CpuShares != tc.shares || r.CpuQuota != tc.quota || r.OomScoreAdj != tc.oom {
			t.Errorf("%s: shares=%d quota=%d oom=%d, want %d %d %d", tc.qos, r.CpuShares, r.CpuQuota, r.OomScoreAdj, tc.shares, tc.quota, tc.oom)
		}
	}
	rooted := n
	for root, want := range map[string]string{"/bosun-n2": "/bosun-n2/kubepods/burstable/podu", "nodes/a/": "/nodes/a/kubepods/burstable/podu", "/": "/kubepods/burstable/podu"} {
		rooted.CgroupRoot = root
		if got := CgroupParent(rooted, pod(res("250m", "1"))); got != want {
			t.Errorf("cgroupRoot %q: parent %s, want %s", root, got, want)
		}
	}
	sys := NodeSettings{CgroupsPerQOS: true, CgroupDriver: "systemd"}
	if got := CgroupParent(sys, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "a-b"}}); got != "kubepods-besteffort-poda_b.slice" {
		t.Errorf("systemd parent %s", got)
	}
}

func TestManagedEtcHosts(t *testing.T) {
	pod := envPod()
	pod.Spec.Hostname, pod.Spec.Subdomain = "web-0", "web"
	pod.Spec.HostAliases = []corev1.HostAlias{{IP: "1.2.3.4", Hostnames: []string{"foo", "bar"}}}
	got := managedHosts(NodeSettings{ClusterDomain: "cluster.local"}, pod, []string{"10.88.0.5"})
	for _, want := range []string{"# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "10.88.0.5\tweb-0.web.ns.svc.cluster.local\tweb-0", "1.2.3.4\tfoo\tbar"} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts file lacks %q:\n%s", want, got)
		}
	}
}

// With hostnameOverride the override is the whole name: no subdomain FQDN
// (the upstream spec "a pod with subdomain and hostnameOverride fields").
func TestManagedEtcHostsWithHostnameOverride(t *testing.T) {
	pod := envPod()
	override := "override-host"
	pod.Spec.Hostname, pod.Spec.Subdomain, pod.Spec.HostnameOverride = "custom-host", "t", &override
	got := managedHosts(NodeSettings{ClusterDomain: "cluster.local"}, pod, []string{"10.88.0.5"})
	if !strings.Contains(got, "10.88.0.5\toverride-host\n") || strings.Contains(got, "svc.cluster.local") {
		t.Errorf("hosts file:\n%s", got)
	}
	if h, err := podHostname(pod); err != nil || h != "override-host" {
		t.Errorf("hostname %q %v", h, err)
	}
}

func TestRunAsNonRoot(t *testing.T) {
	yes, root, user := true, int64(0), int64(1000)
	pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes}}}
	c := &corev1.Container{Name: "c"}
	if err := checkRunAsNonRoot(pod, c, &root, ""); err == nil || !strings.Contains(err.Error(), "image will run as root") {
		t.Errorf("image uid 0: %v", err)
	}
	if err := checkRunAsNonRoot(pod, c, nil, "nobody"); err == nil || !strings.Contains(err.Error(), "non-numeric user (nobody)") {
		t.Errorf("named user: %v", err)
	}
	if err := checkRunAsNonRoot(pod, c, &user, ""); err != nil {
		t.Errorf("image uid 1000: %v", err)
	}
	c.SecurityContext = &corev1.SecurityContext{RunAsUser: &root}
	if err := checkRunAsNonRoot(pod, c, &user, ""); err == nil {
		t.Error("runAsUser 0 accepted")
	}
}

func TestSeccompProfiles(t *testing.T) {
	n := NodeSettings{RootDir: "/var/lib/kubelet"}
	local := func(p string) *corev1.SeccompProfile {
		return &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: &p}
	}
	for _, tc := range []struct {
		name string
		n    NodeSettings
		p    *corev1.SeccompProfile
		want string // "Type ref" or "error: <substring>"
	}{
		{"none", n, nil, "Unconfined "},
		{"none with seccompDefault", NodeSettings{SeccompDefault: true}, nil, "RuntimeDefault "},
		{"runtime default", n, &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}, "RuntimeDefault "},
		{"unconfined", n, &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}, "Unconfined "},
		{"localhost", n, local("profiles/audit.json"), "Localhost /var/lib/kubelet/seccomp/profiles/audit.json"},
		{"localhost without a name", n, &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost}, "error: localhostProfile must be set"},
		{"localhost empty (CVE-2023-2431)", n, local(""), "error: localhostProfile must be set"},
		{"localhost escaping", n, local("../../etc/profile.json"), "error: must be a path relative"},
		{"localhost absolute", n, local("/etc/profile.json"), "error: must be a path relative"},
	} {
		got, err := seccompProfile(tc.n, tc.p)
		s := ""
		if err != nil {
			s = "error: " + err.Error()
		} else {
			s = got.ProfileType.String() + " " + got.LocalhostRef
		}
		if want, isErr := strings.CutPrefix(tc.want, "error: "); (err != nil) != isErr || !strings.Contains(s, want) {
			t.Errorf("%s: %q, want %q", tc.name, s, tc.want)
		}
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("%s: %T is not a ConfigError (CreateContainerConfigError)", tc.name, err)
			}
		}
	}
	// The container's profile wins over the pod's; a bad one fails the config.
	empty := ""
	pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}}}
	c := &corev1.Container{Name: "c", SecurityContext: &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: &empty}}}
	if _, err := containerSecurity(n, pod, c); err == nil {
		t.Error("an empty Localhost profile on the container was accepted")
	}
	c.SecurityContext = nil
	if sc, err := containerSecurity(n, pod, c); err != nil || sc.Seccomp.ProfileType != runtimeapi.SecurityProfile_RuntimeDefault {
		t.Errorf("pod profile not inherited: %v %v", sc, err)
	}
}

func TestSupplementalGroupsPolicyAndHostUsers(t *testing.T) {
	strict := corev1.SupplementalGroupsPolicyStrict
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"},
		Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{SupplementalGroupsPolicy: &strict}}}
	sc, err := containerSecurity(NodeSettings{}, pod, &corev1.Container{Name: "c"})
	if err != nil || sc.SupplementalGroupsPolicy.String() != "Strict" {
		t.Errorf("container policy %v %v", sc.GetSupplementalGroupsPolicy(), err)
	}
	cfg, err := SandboxConfig(NodeSettings{}, pod, 0)
	if err != nil || cfg.Linux.SecurityContext.SupplementalGroupsPolicy.String() != "Strict" {
		t.Errorf("sandbox policy %v", err)
	}
	no := false
	pod.Spec.HostUsers = &no
	if _, err := SandboxConfig(NodeSettings{}, pod, 0); err == nil || !strings.Contains(err.Error(), "hostUsers: false") {
		t.Errorf("hostUsers false: %v", err)
	}
}

// The pod's user namespace goes to the sandbox and each container, and
// every mount of a container in its own namespace is ID-mapped as it is.
func TestUserNamespaceReachesSandboxContainersAndMounts(t *testing.T) {
	ids := []*runtimeapi.IDMapping{{HostId: 196608, ContainerId: 0, Length: 65536}}
	n := NodeSettings{UserNamespace: func(pod *corev1.Pod) (*runtimeapi.UserNamespace, error) {
		if pod.Spec.HostUsers != nil && !*pod.Spec.HostUsers {
			return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: ids, Gids: ids}, nil
		}
		return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}, nil
	}}
	no := false
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}, Spec: corev1.PodSpec{HostUsers: &no}}
	sb, err := SandboxConfig(n, pod, 0)
	if err != nil || sb.Linux.SecurityContext.NamespaceOptions.UsernsOptions.GetMode() != runtimeapi.NamespaceMode_POD {
		t.Fatalf("sandbox user namespace %v (%v)", sb.GetLinux().GetSecurityContext().GetNamespaceOptions(), err)
	}
	c := &corev1.Container{Name: "c"}
	cfg, err := buildContainerConfig(n, containerParams{pod: pod, container: c, mounts: []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/x"}}})
	if err != nil {
		t.Fatal(err)
	}
	if u := cfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions; u.GetMode() != runtimeapi.NamespaceMode_POD || u.Uids[0].HostId != 196608 {
		t.Errorf("container user namespace %v", u)
	}
	if m := cfg.Mounts[0]; len(m.UidMappings) != 1 || m.UidMappings[0].HostId != 196608 || len(m.GidMappings) != 1 {
		t.Errorf("mount mappings %v %v", m.UidMappings, m.GidMappings)
	}
	pod.Spec.HostUsers = nil
	cfg, err = buildContainerConfig(n, containerParams{pod: pod, container: c, mounts: []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/x"}}})
	if err != nil || cfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions.GetMode() != runtimeapi.NamespaceMode_NODE || cfg.Mounts[0].UidMappings != nil {
		t.Errorf("a host-users pod: %v, mappings %v (%v)", cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(), cfg.GetMounts(), err)
	}
}

func TestProcMountAndSELinuxReachTheRuntime(t *testing.T) {
	unmasked := corev1.UnmaskedProcMount
	level := &corev1.SELinuxOptions{Level: "s0:c1,c2"}
	pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{SELinuxOptions: level}}}
	sc, err := containerSecurity(NodeSettings{}, pod, &corev1.Container{Name: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(sc.MaskedPaths, "/proc/kcore") || !slices.Contains(sc.ReadonlyPaths, "/proc/sysrq-trigger") {
		t.Errorf("default procMount: masked %v, read-only %v", sc.MaskedPaths, sc.ReadonlyPaths)
	}
	if sc.SelinuxOptions.GetLevel() != "s0:c1,c2" {
		t.Errorf("the pod's SELinux level did not reach the container: %v", sc.SelinuxOptions)
	}
	own := &corev1.Container{Name: "c", SecurityContext: &corev1.SecurityContext{ProcMount: &unmasked, SELinuxOptions: &corev1.SELinuxOptions{Type: "spc_t"}}}
	sc, err = containerSecurity(NodeSettings{}, pod, own)
	if err != nil {
		t.Fatal(err)
	}
	if sc.MaskedPaths == nil || len(sc.MaskedPaths) != 0 || sc.ReadonlyPaths == nil || len(sc.ReadonlyPaths) != 0 {
		t.Errorf("Unmasked procMount: masked %v, read-only %v, want both empty and set", sc.MaskedPaths, sc.ReadonlyPaths)
	}
	if sc.SelinuxOptions.GetType() != "spc_t" || sc.SelinuxOptions.GetLevel() != "" {
		t.Errorf("the container's SELinux options should win: %v", sc.SelinuxOptions)
	}
	lx, err := sandboxLinux(NodeSettings{}, pod)
	if err != nil || lx.SecurityContext.SelinuxOptions.GetLevel() != "s0:c1,c2" {
		t.Errorf("sandbox SELinux options %v (%v)", lx.SecurityContext.GetSelinuxOptions(), err)
	}
}

// Swap as upstream: none by default (on cgroup v1, memory+swap capped at
// the memory limit); LimitedSwap on cgroup v2 gives a Burstable container
// its memory request's share of the node's swap, and nothing to others.
func TestSwapLimits(t *testing.T) {
	burstable := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")}}}}}}
	guaranteed := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi"), corev1.ResourceCPU: resource.MustParse("1")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi"), corev1.ResourceCPU: resource.MustParse("1")}}}}}}
	critical := burstable.DeepCopy()
	critical.Spec.Priority = ptrTo(int32(2000001000))
	const memCap, swap = 8 << 30, 4 << 30
	for _, tc := range []struct {
		name    string
		sw      Swap
		pod     *corev1.Pod
		v1Limit int64
		v2Max   string
	}{
		{"no swap accounting", Swap{}, burstable, 0, ""},
		{"cgroup v1", Swap{Controller: true, Behavior: "LimitedSwap", Bytes: swap}, burstable, 2 << 30, ""},
		{"v2 NoSwap", Swap{Controller: true, CgroupV2: true, Bytes: swap}, burstable, 0, "0"},
		{"v2 LimitedSwap burstable", Swap{Controller: true, CgroupV2: true, Behavior: "LimitedSwap", Bytes: swap}, burstable, 0, "536870912"},
		{"v2 LimitedSwap guaranteed", Swap{Controller: true, CgroupV2: true, Behavior: "LimitedSwap", Bytes: swap}, guaranteed, 0, "0"},
		{"v2 LimitedSwap critical", Swap{Controller: true, CgroupV2: true, Behavior: "LimitedSwap", Bytes: swap}, critical, 0, "0"},
	} {
		r := containerResources(NodeSettings{Swap: tc.sw}, tc.pod, &tc.pod.Spec.Containers[0], memCap)
		if r.MemorySwapLimitInBytes != tc.v1Limit || r.Unified["memory.swap.max"] != tc.v2Max {
			t.Errorf("%s: memory+swap %d, memory.swap.max %q; want %d, %q", tc.name, r.MemorySwapLimitInBytes, r.Unified["memory.swap.max"], tc.v1Limit, tc.v2Max)
		}
	}
}

// On cgroup v2 with singleProcessOOMKill false (its default there) the
// container's processes are OOM-killed together, beside the swap limit.
func TestOOMGroup(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
	r := containerResources(NodeSettings{OOMGroup: true, Swap: Swap{Controller: true, CgroupV2: true}}, pod, &pod.Spec.Containers[0], 8<<30)
	if r.Unified["memory.oom.group"] != "1" || r.Unified["memory.swap.max"] != "0" {
		t.Errorf("unified %v: want memory.oom.group 1 and memory.swap.max 0", r.Unified)
	}
	if r := containerResources(NodeSettings{}, pod, &pod.Spec.Containers[0], 8<<30); r.Unified["memory.oom.group"] != "" {
		t.Errorf("without OOMGroup: unified %v", r.Unified)
	}
}

// kubectl debug --target: the ephemeral container joins the PID namespace of
// the target's running instance; a target not running is a config error with
// upstream's message; a pod sharing one PID namespace keeps it.
func TestEphemeralContainerTargetNamespace(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "main"}},
		EphemeralContainers: []corev1.EphemeralContainer{
			{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "dbg"}, TargetContainerName: "main"},
			{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "plain"}},
		},
	}}
	config := func(pid runtimeapi.NamespaceMode) *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: pid}}}}
	}
	status := func(id string, state runtimeapi.ContainerState) *Container {
		return &Container{ContainerStatus: &runtimeapi.ContainerStatus{Id: id, State: state, Metadata: &runtimeapi.ContainerMetadata{Name: "main"}}}
	}
	rp := &RuntimePod{Containers: []*Container{status("c-running", runtimeapi.ContainerState_CONTAINER_RUNNING)}}

	cfg := config(runtimeapi.NamespaceMode_CONTAINER)
	if err := targetNamespace(pod, rp, "dbg", cfg); err != nil {
		t.Fatal(err)
	}
	if ns := cfg.Linux.SecurityContext.NamespaceOptions; ns.Pid != runtimeapi.NamespaceMode_TARGET || ns.TargetId != "c-running" {
		t.Errorf("with a running target: pid %v target %q, want TARGET c-running", ns.Pid, ns.TargetId)
	}
	cfg = config(runtimeapi.NamespaceMode_CONTAINER)
	if err := targetNamespace(pod, rp, "plain", cfg); err != nil || cfg.Linux.SecurityContext.NamespaceOptions.Pid != runtimeapi.NamespaceMode_CONTAINER {
		t.Errorf("no target: %v, pid %v", err, cfg.Linux.SecurityContext.NamespaceOptions.Pid)
	}
	cfg = config(runtimeapi.NamespaceMode_POD)
	if err := targetNamespace(pod, rp, "dbg", cfg); err != nil || cfg.Linux.SecurityContext.NamespaceOptions.Pid != runtimeapi.NamespaceMode_POD {
		t.Errorf("shared process namespace: %v, pid %v", err, cfg.Linux.SecurityContext.NamespaceOptions.Pid)
	}
	exited := &RuntimePod{Containers: []*Container{status("c-old", runtimeapi.ContainerState_CONTAINER_EXITED)}}
	var ce *ConfigError
	if err := targetNamespace(pod, exited, "dbg", config(runtimeapi.NamespaceMode_CONTAINER)); !errors.As(err, &ce) || ce.Msg != "unable to find target container main" {
		t.Errorf("target not running: %v", err)
	}
}

// Under the CPU manager's static policy a container runs on its CPU set; a
// container with CPUs of its own, and its pod cgroup, have no CFS quota, as
// upstream (DisableCPUQuotaWithExclusiveCPUs, on by default).
func TestCPUSetAndExclusiveCPUsLiftTheQuota(t *testing.T) {
	r := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("64Mi")}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "u"}, Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Name: "pinned", Resources: corev1.ResourceRequirements{Requests: r, Limits: r}},
		{Name: "shared", Resources: corev1.ResourceRequirements{Requests: r, Limits: r}},
	}}}
	n := NodeSettings{CPUCFSQuota: true, CgroupsPerQOS: true, CPUs: func(uid types.UID, name string) (string, bool) {
		if uid == "u" && name == "pinned" {
			return "1-2", true
		}
		return "0,3", false
	}}
	pinned := containerResources(n, pod, &pod.Spec.Containers[0], 8<<30)
	shared := containerResources(n, pod, &pod.Spec.Containers[1], 8<<30)
	if pinned.CpusetCpus != "1-2" || pinned.CpuQuota != -1 || pinned.CpuPeriod != 100000 {
		t.Errorf("pinned: cpuset %q quota %d period %d", pinned.CpusetCpus, pinned.CpuQuota, pinned.CpuPeriod)
	}
	if shared.CpusetCpus != "0,3" || shared.CpuQuota != 200000 {
		t.Errorf("shared: cpuset %q quota %d", shared.CpusetCpus, shared.CpuQuota)
	}
	if l := PodCgroupLimits(n, pod); l.CPUQuotaUS > 0 {
		t.Errorf("pod cgroup quota %d with a pinned container", l.CPUQuotaUS)
	}
	n.CPUs = nil
	if l := PodCgroupLimits(n, pod); l.CPUQuotaUS != 400000 {
		t.Errorf("pod cgroup quota %d without the CPU manager", l.CPUQuotaUS)
	}
	if c := containerResources(n, pod, &pod.Spec.Containers[0], 8<<30); c.CpusetCpus != "" || c.CpuQuota != 200000 {
		t.Errorf("no CPU manager: cpuset %q quota %d", c.CpusetCpus, c.CpuQuota)
	}
}

// The reserved cgroups' limits as upstream computes them.
func TestReservedLimits(t *testing.T) {
	l, err := ReservedLimits(map[string]string{"cpu": "100m", "memory": "64Mi", "pid": "1000", "ephemeral-storage": "1Gi"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if l.CPUShares != 102 || l.MemoryBytes != 64<<20 || l.Pids != 1000 || l.CPUQuotaUS != 0 {
		t.Errorf("limits %+v", l)
	}
	l, _ = ReservedLimits(map[string]string{"cpu": "1", "memory": "64Mi"}, true)
	if l.CPUShares != 1024 || l.MemoryBytes != 0 {
		t.Errorf("compressible only: %+v", l)
	}
	if _, err := ReservedLimits(map[string]string{"memory": "lots"}, false); err == nil || !strings.Contains(err.Error(), `reserved memory "lots"`) {
		t.Errorf("bad quantity: %v", err)
	}
}
