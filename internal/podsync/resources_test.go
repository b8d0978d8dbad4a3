package podsync

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/bosun-dev/bosun/internal/cgroups"
)

func res(req, lim string) corev1.ResourceRequirements {
	r := corev1.ResourceRequirements{}
	if req != "" {
		r.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(req), corev1.ResourceMemory: resource.MustParse("64Mi")}
	}
	if lim != "" {
		r.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(lim), corev1.ResourceMemory: resource.MustParse("128Mi")}
	}
	return r
}

func TestPodCgroupLimits(t *testing.T) {
	n := NodeSettings{CPUCFSQuota: true, CFSPeriodUS: 100000, PodPidsLimit: 1024}
	pod := func(qos corev1.PodQOSClass, rs ...corev1.ResourceRequirements) *corev1.Pod {
		p := &corev1.Pod{Status: corev1.PodStatus{QOSClass: qos}}
		for _, r := range rs {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Resources: r})
		}
		return p
	}
	mi := int64(1 << 20)
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want cgroups.Limits
	}{
		{"best effort", pod(corev1.PodQOSBestEffort, res("", "")), cgroups.Limits{CPUShares: 2, Pids: 1024}},
		{"burstable, one container unlimited", pod(corev1.PodQOSBurstable, res("250m", "500m"), res("250m", "")),
			cgroups.Limits{CPUShares: 512, CPUPeriodUS: 100000, Pids: 1024}},
		{"burstable, all limited", pod(corev1.PodQOSBurstable, res("250m", "500m"), res("250m", "1")),
			cgroups.Limits{CPUShares: 512, CPUQuotaUS: 150000, CPUPeriodUS: 100000, MemoryBytes: 256 * mi, Pids: 1024}},
		{"guaranteed", pod(corev1.PodQOSGuaranteed, res("1", "1")),
			cgroups.Limits{CPUShares: 1024, CPUQuotaUS: 100000, CPUPeriodUS: 100000, MemoryBytes: 128 * mi, Pids: 1024}},
	} {
		if got := PodCgroupLimits(n, tc.pod); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	// Pod-level resources (spec.resources) bound the pod whatever its containers say.
	p := pod(corev1.PodQOSBurstable, res("", ""), res("100m", ""))
	p.Spec.Resources = &corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
	want := cgroups.Limits{CPUShares: 512, CPUQuotaUS: 200000, CPUPeriodUS: 100000, MemoryBytes: 1024 * mi, Pids: 1024}
	if got := PodCgroupLimits(n, p); got != want {
		t.Errorf("pod-level resources: %+v, want %+v", got, want)
	}
	// An init container larger than the app containers sets the requests.
	p = pod(corev1.PodQOSBurstable, res("100m", ""))
	p.Spec.InitContainers = []corev1.Container{{Resources: res("2", "")}}
	if r := PodRequests(p); r.Cpu().MilliValue() != 2000 {
		got := r.Cpu().MilliValue()
		t.Errorf("requests with a big init container: %dm", got)
	}
}
