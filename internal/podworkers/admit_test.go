package podworkers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var testMeta = metav1.ObjectMeta{Namespace: "default", Name: "p", UID: "u-1"}

func TestAdmit(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"kubernetes.io/os": "linux", "zone": "a"}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "dedicated", Value: "x", Effect: corev1.TaintEffectNoExecute}}},
		Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
			corev1.ResourcePods: resource.MustParse("2"), corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")}},
	}
	tolerate := []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}
	pod := func(cpu string, mutate func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: testMeta, Spec: corev1.PodSpec{Tolerations: tolerate, Containers: []corev1.Container{{Name: "c"}}}}
		if cpu != "" {
			p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}
		}
		if mutate != nil {
			mutate(p)
		}
		return p
	}
	one := []*corev1.Pod{pod("1", nil)}
	cases := []struct {
		name   string
		pod    *corev1.Pod
		active []*corev1.Pod
		reason string
	}{
		{"fits", pod("1", nil), one, ""},
		{"host port taken", pod("", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{HostPort: 21017, ContainerPort: 80}}
		}),
			[]*corev1.Pod{pod("", func(p *corev1.Pod) {
				p.UID = "other"
				p.Spec.Containers[0].Ports = []corev1.ContainerPort{{HostPort: 21017, HostIP: "10.0.0.1", Protocol: corev1.ProtocolTCP}}
			})}, "NodePorts"},
		{"host port free on another protocol", pod("", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{HostPort: 21017, Protocol: corev1.ProtocolUDP}}
		}), []*corev1.Pod{pod("", func(p *corev1.Pod) {
			p.UID = "other"
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{HostPort: 21017}}
		})}, ""},
		{"host port free on another IP", pod("", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{HostPort: 21017, HostIP: "10.0.0.2"}}
		}), []*corev1.Pod{pod("", func(p *corev1.Pod) {
			p.UID = "other"
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{HostPort: 21017, HostIP: "10.0.0.1"}}
		})}, ""},
		{"container name with a slash", pod("", func(p *corev1.Pod) { p.Spec.Containers[0].Name = "../c" }), nil, "UnsafeName"},
		{"volume name ..", pod("", func(p *corev1.Pod) { p.Spec.Volumes = []corev1.Volume{{Name: ".."}} }), nil, "UnsafeName"},
		{"namespace with a slash", pod("", func(p *corev1.Pod) { p.Namespace = "a/b" }), nil, "UnsafeName"},
		{"too many pods", pod("", nil), []*corev1.Pod{pod("", nil), pod("", nil)}, "OutOfpods"},
		{"cpu beyond allocatable", pod("1500m", nil), one, "OutOfcpu"},
		{"init container counted as the max", pod("", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "i", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")}}}}
		}), nil, "OutOfmemory"},
		{"node selector", pod("", func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"zone": "b"} }), nil, "NodeAffinity"},
		{"required affinity matches", pod("", func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}}}}}}}
		}), nil, ""},
		{"required affinity fails", pod("", func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpDoesNotExist}}}}}}}
		}), nil, "NodeAffinity"},
		{"untolerated NoExecute taint", pod("", func(p *corev1.Pod) { p.Spec.Tolerations = nil }), nil, "Taint"},
		{"wrong OS", pod("", func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: "windows"} }), nil, "PodOSNotSupported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason, msg := Admit(tc.pod, tc.active, node)
			if ok != (tc.reason == "") || reason != tc.reason {
				t.Fatalf("ok=%v reason=%q (%s), want %q", ok, reason, msg, tc.reason)
			}
		})
	}
}

func TestSysctlAdmission(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"kubernetes.io/os": "linux"}}}
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: testMeta, Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: name, Value: "1"}}}}}
	}
	if ok, _, _ := Admit(pod("kernel.shm_rmid_forced"), nil, node); !ok {
		t.Error("a safe sysctl was refused")
	}
	if ok, reason, msg := Admit(pod("kernel.msgmax"), nil, node); ok || reason != "SysctlForbidden" || msg != `Pod forbidden sysctl: "kernel.msgmax" not allowlisted` {
		t.Errorf("unsafe sysctl: %v %q %q", ok, reason, msg)
	}
	AllowedUnsafeSysctls = []string{"kernel.msg*", "net.core.somaxconn"}
	defer func() { AllowedUnsafeSysctls = nil }()
	if ok, _, _ := Admit(pod("kernel.msgmax"), nil, node); !ok {
		t.Error("an allowlisted unsafe sysctl was refused")
	}
	if ok, _, _ := Admit(pod("net/core/somaxconn"), nil, node); !ok {
		t.Error("an allowlisted sysctl written with slashes was refused")
	}
	hostNet, hostIPC := pod("net.ipv4.ip_local_port_range"), pod("kernel.msgmax")
	hostNet.Spec.HostNetwork, hostIPC.Spec.HostIPC = true, true
	if ok, reason, msg := Admit(hostNet, nil, node); ok || reason != "SysctlForbidden" || msg != `Pod forbidden sysctl: "net.ipv4.ip_local_port_range" not allowed with host Net enabled` {
		t.Errorf("net sysctl with hostNetwork: %v %q %q", ok, reason, msg)
	}
	if ok, _, msg := Admit(hostIPC, nil, node); ok || msg != `Pod forbidden sysctl: "kernel.msgmax" not allowed with host IPC enabled` {
		t.Errorf("IPC sysctl with hostIPC: %v %q", ok, msg)
	}
	hostIPC.Spec.HostIPC, hostIPC.Spec.HostNetwork = false, true
	if ok, _, msg := Admit(hostIPC, nil, node); !ok {
		t.Errorf("an IPC sysctl with only hostNetwork was refused: %q", msg)
	}
}

func TestSupplementalGroupsPolicyAdmission(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"kubernetes.io/os": "linux"}}}
	strict, merge := corev1.SupplementalGroupsPolicyStrict, corev1.SupplementalGroupsPolicyMerge
	pod := func(p *corev1.SupplementalGroupsPolicy) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: testMeta, Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{SupplementalGroupsPolicy: p}}}
	}
	if ok, _, _ := Admit(pod(&merge), nil, node); !ok {
		t.Error("Merge refused")
	}
	if ok, reason, msg := Admit(pod(&strict), nil, node); ok || reason != "SupplementalGroupsPolicyNotSupported" || msg != "SupplementalGroupsPolicy=Strict is not supported in this node" {
		t.Errorf("Strict on a runtime without the feature: %v %q %q", ok, reason, msg)
	}
	yes := true
	node.Status.Features = &corev1.NodeFeatures{SupplementalGroupsPolicy: &yes}
	if ok, reason, _ := Admit(pod(&strict), nil, node); !ok {
		t.Errorf("Strict refused where the runtime supports it: %s", reason)
	}
}

func TestAppArmorAdmission(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"kubernetes.io/os": "linux"}}}
	was := AppArmorEnabled
	defer func() { AppArmorEnabled = was }()
	AppArmorEnabled = false
	pod := func(mutate func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: testMeta, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
		mutate(p)
		return p
	}
	confined := []*corev1.Pod{
		pod(func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}}
		}),
		pod(func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeLocalhost}}
		}),
		pod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix + "c": "runtime/default"}
		}),
	}
	for i, p := range confined {
		if ok, reason, msg := Admit(p, nil, node); ok || reason != "AppArmor" || msg != "Cannot enforce AppArmor: AppArmor is not enabled on the host" {
			t.Errorf("pod %d on a host without AppArmor: %v %q %q", i, ok, reason, msg)
		}
	}
	unconfined := pod(func(p *corev1.Pod) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}}
		p.Annotations = map[string]string{corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix + "c": "unconfined"}
	})
	if ok, _, msg := Admit(unconfined, nil, node); !ok {
		t.Errorf("an unconfined pod was refused: %q", msg)
	}
	AppArmorEnabled = true
	if ok, _, msg := Admit(confined[0], nil, node); !ok {
		t.Errorf("a confined pod on a host with AppArmor was refused: %q", msg)
	}
}
