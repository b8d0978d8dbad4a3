package eviction

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

var (
	okSignals = Signals{MemoryAvailable: 1 << 30, MemoryCapacity: 8 << 30, NodeFsAvailable: 50, NodeFsCapacity: 100,
		NodeFsInodes: 10, NodeFsInodesFree: 9, PIDAvailable: 1000, PIDCapacity: 4000}
	lowMemory = func() Signals { s := okSignals; s.MemoryAvailable = 50 << 20; return s }()
)

func memPod(uid string, request string, priority int32) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uid, UID: types.UID(uid)},
		Spec: corev1.PodSpec{Priority: &priority, TerminationGracePeriodSeconds: ptr(int64(30)), Containers: []corev1.Container{{Name: "c"}}}}
	if request != "" {
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(request)}
	}
	return p
}

func ptr[T any](v T) *T { return &v }

func memStats(uid string, workingSet uint64) statsapi.PodStats {
	return statsapi.PodStats{PodRef: statsapi.PodReference{UID: uid}, Memory: &statsapi.MemoryStats{WorkingSetBytes: &workingSet},
		Containers: []statsapi.ContainerStats{{Name: "c", Memory: &statsapi.MemoryStats{WorkingSetBytes: &workingSet}}}}
}

type evictions struct {
	uids []types.UID
	last Eviction
}

func (e *evictions) evict(uid types.UID, ev Eviction) { e.uids = append(e.uids, uid); e.last = ev }

// Under a hard threshold pods go one per check, ranked as upstream: those
// using more memory than they request first, then lower priority, then
// the larger use above the request; static and system-critical pods never.
func TestHardThresholdEvictsByUsageOverRequests(t *testing.T) {
	ts, err := ParseThresholds(map[string]string{"memory.available": "100Mi", "nodefs.available": "10%"})
	if err != nil {
		t.Fatal(err)
	}
	if c := Crossed(ts, okSignals); len(c) != 0 {
		t.Fatalf("crossed %v", c)
	}
	pods := []*corev1.Pod{
		memPod("within-low-prio", "200Mi", -10), // uses less than it requests
		memPod("over-high-prio", "10Mi", 1000),
		memPod("over-small", "10Mi", 0),
		memPod("over-big", "10Mi", 0),
		memPod("critical", "", 2000001000),
		func() *corev1.Pod {
			p := memPod("static", "", 0)
			p.Annotations = map[string]string{"kubernetes.io/config.source": "file"}
			return p
		}(),
	}
	stats := []statsapi.PodStats{memStats("within-low-prio", 100<<20), memStats("over-high-prio", 500<<20),
		memStats("over-small", 20<<20), memStats("over-big", 300<<20), memStats("critical", 900<<20), memStats("static", 900<<20)}
	var ev evictions
	rec := record.NewFakeRecorder(10)
	m := New(Config{Thresholds: ts, Pods: func() []*corev1.Pod { return pods }, Evict: ev.evict, Recorder: rec,
		Node:     &corev1.ObjectReference{Kind: "Node", Name: "n"},
		PodStats: func(context.Context) ([]statsapi.PodStats, error) { return stats, nil },
		Read:     func() (Signals, error) { return lowMemory, nil }})
	var order []types.UID
	for range 4 {
		m.Check(context.Background())
		if len(ev.uids) != len(order)+1 {
			t.Fatalf("check %d evicted %v", len(order)+1, ev.uids)
		}
		order = append(order, ev.uids[len(ev.uids)-1])
		for i, p := range pods {
			if p.UID == order[len(order)-1] {
				pods = append(pods[:i], pods[i+1:]...)
				break
			}
		}
	}
	want := []types.UID{"over-big", "over-small", "over-high-prio", "within-low-prio"}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("eviction order %v, want %v", order, want)
		}
	}
	if ev.last.Grace != 1 || !ev.last.DisruptionTarget {
		t.Errorf("a hard eviction: %+v, want grace 1 and the DisruptionTarget condition", ev.last)
	}
	m.Check(context.Background())
	if len(ev.uids) != 4 {
		t.Errorf("evicted %v: static and critical pods must stay", ev.uids)
	}
	var events []string
	for len(rec.Events) > 0 {
		events = append(events, <-rec.Events)
	}
	all := strings.Join(events, "\n")
	for _, want := range []string{"Warning EvictionThresholdMet Attempting to reclaim memory",
		"Warning Evicted The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. Container c was using 300Mi, request is 10Mi, has larger consumption of memory. "} {
		if !strings.Contains(all, want) {
			t.Errorf("no event %q in:\n%s", want, all)
		}
	}
	if p := m.Pressure(); !p.Memory || p.Disk || p.PID {
		t.Errorf("pressure %+v, want memory alone", p)
	}
	m.cfg.Read = func() (Signals, error) { return okSignals, nil }
	m.Check(context.Background())
	if p := m.Pressure(); p.Memory || p.Disk || len(ev.uids) != 4 {
		t.Errorf("pressure %+v after recovery; evictions %v", p, ev.uids)
	}
}

// A soft threshold reports pressure at once but evicts only once it has
// been met for its grace period, with the pod's grace period capped by
// evictionMaxPodGracePeriod; met again after a gap, its period starts over.
func TestSoftThresholdWaitsForItsGracePeriod(t *testing.T) {
	ts, err := ParseConfig(nil, map[string]string{"memory.available": "200Mi"}, map[string]string{"memory.available": "1m30s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	signals := lowMemory
	pods := []*corev1.Pod{memPod("a", "", 0)}
	var ev evictions
	m := New(Config{Thresholds: ts, MaxPodGracePeriod: 10, Pods: func() []*corev1.Pod { return pods }, Evict: ev.evict,
		Now: func() time.Time { return now }, Read: func() (Signals, error) { return signals, nil }})
	m.Check(context.Background())
	if !m.Pressure().Memory || len(ev.uids) != 0 {
		t.Fatalf("met soft threshold: pressure %+v, evictions %v; want pressure and no eviction yet", m.Pressure(), ev.uids)
	}
	now = now.Add(60 * time.Second)
	m.Check(context.Background())
	if len(ev.uids) != 0 {
		t.Fatalf("evicted %v after 60s of a 90s grace period", ev.uids)
	}
	signals = okSignals // a gap: the period starts over
	now = now.Add(10 * time.Second)
	m.Check(context.Background())
	signals = lowMemory
	now = now.Add(10 * time.Second)
	m.Check(context.Background())
	now = now.Add(80 * time.Second)
	m.Check(context.Background())
	if len(ev.uids) != 0 {
		t.Fatalf("evicted %v 80s into a grace period that started over", ev.uids)
	}
	now = now.Add(10 * time.Second)
	m.Check(context.Background())
	if len(ev.uids) != 1 || ev.last.Grace != 10 || !ev.last.DisruptionTarget {
		t.Fatalf("after the grace period: %v %+v, want one eviction with grace 10 (the pod's 30 capped)", ev.uids, ev.last)
	}
	if !strings.HasPrefix(ev.last.Message, "The node was low on resource: memory. Threshold quantity: 200Mi, available: 50Mi. ") {
		t.Errorf("message %q", ev.last.Message)
	}
}

// Once a threshold has acted it counts until its minimum reclaim is
// available above it, though the signal is back over the threshold.
func TestMinimumReclaimKeepsEvicting(t *testing.T) {
	ts, err := ParseConfig(map[string]string{"memory.available": "100Mi"}, nil, nil, map[string]string{"memory.available": "500Mi"})
	if err != nil {
		t.Fatal(err)
	}
	signals := lowMemory
	pods := []*corev1.Pod{memPod("a", "", 0), memPod("b", "", 0), memPod("c", "", 0)}
	var ev evictions
	m := New(Config{Thresholds: ts, Pods: func() []*corev1.Pod { return pods }, Evict: ev.evict,
		Read: func() (Signals, error) { return signals, nil }})
	m.Check(context.Background())
	signals.MemoryAvailable = 300 << 20 // over the threshold, short of the reclaim
	m.Check(context.Background())
	if len(ev.uids) != 2 {
		t.Fatalf("evicted %v, want a second eviction while less than 100Mi+500Mi is available", ev.uids)
	}
	signals.MemoryAvailable = 700 << 20
	m.Check(context.Background())
	signals.MemoryAvailable = 300 << 20 // not met afresh: the threshold is 100Mi
	m.Check(context.Background())
	if len(ev.uids) != 2 {
		t.Errorf("evicted %v once the minimum reclaim was available", ev.uids)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		hard, soft, grace, reclaim map[string]string
		want                       string
	}{
		{soft: map[string]string{"memory.available": "1Gi"}, want: "grace period must be specified for the soft eviction threshold memory.available"},
		{hard: map[string]string{"memory.available": "lots"}, want: "evictionHard[memory.available]: bad quantity"},
		{hard: map[string]string{"memory.available": "0"}, want: "must be positive"},
		{hard: map[string]string{"cpu.available": "1"}, want: "unsupported eviction signal cpu.available"},
		{soft: map[string]string{"nodefs.available": "10%"}, grace: map[string]string{"nodefs.available": "soon"}, want: "invalid eviction grace period"},
		{reclaim: map[string]string{"memory.available": "0%"}, want: "must be positive"},
	} {
		_, err := ParseConfig(tc.hard, tc.soft, tc.grace, tc.reclaim)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc, err, tc.want)
		}
	}
	ts, err := ParseConfig(map[string]string{"nodefs.available": "0%", "memory.available": "100Mi"}, nil, nil, nil)
	if err != nil || len(ts) != 1 || ts[0].Signal != "memory.available" {
		t.Errorf("0%% turns a threshold off: %v %v", ts, err)
	}
}

// Under memory pressure alone BestEffort pods are refused unless they
// tolerate the memory-pressure taint; under disk pressure every pod but
// critical ones.
func TestAdmitUnderPressure(t *testing.T) {
	m := New(Config{})
	be := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
	burstable := memPod("b", "10Mi", 0)
	if ok, _, _ := m.Admit(be); !ok {
		t.Fatal("refused without pressure")
	}
	m.pressure = Pressure{Memory: true}
	if ok, reason, msg := m.Admit(be); ok || reason != "Evicted" || msg != "The node had condition: [MemoryPressure]. " {
		t.Errorf("BestEffort under memory pressure: %v %q %q", ok, reason, msg)
	}
	if ok, _, _ := m.Admit(burstable); !ok {
		t.Error("Burstable refused under memory pressure")
	}
	tolerant := be.DeepCopy()
	tolerant.Spec.Tolerations = []corev1.Toleration{{Key: corev1.TaintNodeMemoryPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	if ok, _, _ := m.Admit(tolerant); !ok {
		t.Error("a BestEffort pod tolerating memory pressure refused")
	}
	m.pressure = Pressure{Memory: true, Disk: true}
	if ok, _, msg := m.Admit(burstable); ok || msg != "The node had condition: [MemoryPressure DiskPressure]. " {
		t.Errorf("under disk pressure: %v %q", ok, msg)
	}
	if ok, _, _ := m.Admit(memPod("crit", "", 2000000000)); !ok {
		t.Error("critical pod refused")
	}
}

// A pressure condition holds for evictionPressureTransitionPeriod after its
// signal was last over a threshold, and then clears.
func TestPressureHoldsForTheTransitionPeriod(t *testing.T) {
	ts, err := ParseThresholds(map[string]string{"memory.available": "100Mi"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	signals := lowMemory
	m := New(Config{Thresholds: ts, TransitionPeriod: 5 * time.Minute, Now: func() time.Time { return now },
		Read: func() (Signals, error) { return signals, nil }})
	m.Check(context.Background())
	if !m.Pressure().Memory {
		t.Fatal("no memory pressure below the threshold")
	}
	signals = okSignals
	now = now.Add(4 * time.Minute)
	m.Check(context.Background())
	if !m.Pressure().Memory {
		t.Error("memory pressure cleared 4 minutes after the signal recovered, before the 5-minute transition period")
	}
	now = now.Add(2 * time.Minute)
	m.Check(context.Background())
	if p := m.Pressure(); p.Memory || p.Disk {
		t.Errorf("pressure %+v after the transition period", p)
	}
}

// pid.available is observed and reports PID pressure.
func TestPIDPressure(t *testing.T) {
	ts, err := ParseThresholds(map[string]string{"pid.available": "10%"})
	if err != nil {
		t.Fatal(err)
	}
	s := okSignals
	s.PIDAvailable = 100
	m := New(Config{Thresholds: ts, Read: func() (Signals, error) { return s, nil }})
	m.Check(context.Background())
	if p := m.Pressure(); !p.PID || p.Memory || p.Disk {
		t.Errorf("pressure %+v with 100 of 4000 PIDs free, want PID pressure", p)
	}
	if c, a := pids(); c <= 0 || a <= 0 || a > c {
		t.Errorf("this machine's PIDs: %d free of %d", a, c)
	}
}
