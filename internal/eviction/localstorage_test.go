package eviction

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

func TestLocalStorageLimitsEvictWithUpstreamMessages(t *testing.T) {
	u := func(n uint64) *uint64 { return &n }
	limit := func(q string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse(q)}}
	}
	size := resource.MustParse("1Mi")
	pods := []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "emptydir", UID: "a"}, Spec: corev1.PodSpec{
			Volumes:    []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &size}}}},
			Containers: []corev1.Container{{Name: "c"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "container", UID: "b"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "writer", Resources: limit("10Mi")}, {Name: "idle"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "within", UID: "c"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: limit("100Mi")}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "unlimited", UID: "d"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}},
	}
	stats := []statsapi.PodStats{
		{PodRef: statsapi.PodReference{UID: "b"}, Containers: []statsapi.ContainerStats{
			{Name: "writer", Rootfs: &statsapi.FsStats{UsedBytes: u(8 << 20)}, Logs: &statsapi.FsStats{UsedBytes: u(4 << 20)}},
			{Name: "idle", Rootfs: &statsapi.FsStats{UsedBytes: u(1 << 20)}}}},
		{PodRef: statsapi.PodReference{UID: "c"}, Containers: []statsapi.ContainerStats{{Name: "c", Rootfs: &statsapi.FsStats{UsedBytes: u(50 << 20)}}}},
		{PodRef: statsapi.PodReference{UID: "d"}, Containers: []statsapi.ContainerStats{{Name: "c", Rootfs: &statsapi.FsStats{UsedBytes: u(900 << 20)}}}},
	}
	evicted := map[types.UID]string{}
	m := New(Config{Pods: func() []*corev1.Pod { return pods },
		Evict: func(uid types.UID, e Eviction) {
			evicted[uid] = fmt.Sprintf("grace %d, disruption %v: %s", e.Grace, e.DisruptionTarget, e.Message)
		},
		Read:               func() (Signals, error) { return Signals{}, nil },
		LocalStorageLimits: true,
		PodStats:           func(context.Context) ([]statsapi.PodStats, error) { return stats, nil },
		EmptyDirUsage: func(p *corev1.Pod) map[string]int64 {
			if p.UID == "a" {
				return map[string]int64{"scratch": 2 << 20}
			}
			return nil
		}})
	m.Check(context.Background())
	want := map[types.UID]string{
		"a": `grace 1, disruption false: Usage of EmptyDir volume "scratch" exceeds the limit "1Mi". `,
		"b": "grace 1, disruption false: Pod ephemeral local storage usage exceeds the total limit of containers 10Mi. ",
	}
	if len(evicted) != len(want) {
		t.Fatalf("evicted %v, want %v", evicted, want)
	}
	for uid, msg := range want {
		if evicted[uid] != msg {
			t.Errorf("pod %s: %q, want %q", uid, evicted[uid], msg)
		}
	}
	// A container over its own limit in a pod whose total is within the sum.
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "small", Resources: limit("1Mi")}, {Name: "big", Resources: limit("100Mi")}}}}
	got := Violation(pod, &statsapi.PodStats{Containers: []statsapi.ContainerStats{{Name: "small", Logs: &statsapi.FsStats{UsedBytes: u(2 << 20)}}}}, nil)
	if !strings.HasPrefix(got, `Container small exceeded its local ephemeral storage limit "1Mi".`) {
		t.Errorf("container over its limit: %q", got)
	}
}

func TestPressureMessageIsUpstreams(t *testing.T) {
	mem := resource.MustParse("100Mi")
	s := Signals{MemoryAvailable: 50 << 20, MemoryCapacity: 1 << 30, NodeFsAvailable: 1 << 30, NodeFsCapacity: 10 << 30, NodeFsInodesFree: 100, NodeFsInodes: 1000}
	cases := []struct {
		t    Threshold
		want string
	}{
		{Threshold{Signal: "memory.available", Value: Value{Quantity: &mem}}, "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. "},
		{Threshold{Signal: "nodefs.available", Value: Value{Percent: 20}}, "The node was low on resource: ephemeral-storage. Threshold quantity: 2Gi, available: 1Gi. "},
		{Threshold{Signal: "nodefs.inodesFree", Value: Value{Percent: 50}}, "The node was low on resource: inodes. Threshold quantity: 500, available: 100. "},
	}
	for _, tc := range cases {
		if got, _ := evictionMessage(tc.t, s, &corev1.Pod{}, nil, signalResource[tc.t.Signal]); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.t.Signal, got, tc.want)
		}
	}
}
