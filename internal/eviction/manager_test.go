package eviction

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestThresholdsAndEviction(t *testing.T) {
	ts, err := ParseThresholds(map[string]string{"memory.available": "100Mi", "nodefs.available": "10%"})
	if err != nil {
		t.Fatal(err)
	}
	ok := Signals{MemoryAvailable: 1 << 30, MemoryCapacity: 8 << 30, NodeFsAvailable: 50, NodeFsCapacity: 100, NodeFsInodes: 10, NodeFsInodesFree: 9}
	if c := Crossed(ts, ok); len(c) != 0 {
		t.Fatalf("crossed %v", c)
	}
	low := ok
	low.MemoryAvailable = 50 << 20
	low.NodeFsAvailable = 5
	if c := Crossed(ts, low); len(c) != 2 {
		t.Fatalf("crossed %v", c)
	}
	if _, err := ParseThresholds(map[string]string{"memory.available": "lots"}); err == nil {
		t.Error("bad quantity accepted")
	}
	prio := int32(100)
	critical := int32(2000001000)
	pods := []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "guaranteed", UID: "g"}, Status: corev1.PodStatus{QOSClass: corev1.PodQOSGuaranteed}},
		{ObjectMeta: metav1.ObjectMeta{Name: "besteffort", UID: "b"}, Status: corev1.PodStatus{QOSClass: corev1.PodQOSBestEffort}},
		{ObjectMeta: metav1.ObjectMeta{Name: "important", UID: "i"}, Spec: corev1.PodSpec{Priority: &prio}, Status: corev1.PodStatus{QOSClass: corev1.PodQOSBestEffort}},
		{ObjectMeta: metav1.ObjectMeta{Name: "critical", UID: "c"}, Spec: corev1.PodSpec{Priority: &critical}},
		{ObjectMeta: metav1.ObjectMeta{Name: "static", UID: "s", Annotations: map[string]string{"kubernetes.io/config.source": "file"}}},
	}
	var evicted []types.UID
	var reason string
	m := New(Config{Thresholds: ts, Pods: func() []*corev1.Pod { return pods },
		Evict: func(uid types.UID, r, msg string) { evicted = append(evicted, uid); reason = r + ": " + msg },
		Read:  func() (Signals, error) { return low, nil }})
	m.Check(context.Background())
	if len(evicted) != 1 || evicted[0] != "b" || reason == "" {
		t.Fatalf("evicted %v (%s), want the BestEffort pod of lowest priority", evicted, reason)
	}
	if mem, disk := m.Pressure(); !mem || !disk {
		t.Errorf("pressure %v %v", mem, disk)
	}
	m.cfg.Read = func() (Signals, error) { return ok, nil }
	m.Check(context.Background())
	if mem, disk := m.Pressure(); mem || disk || len(evicted) != 1 {
		t.Errorf("pressure %v %v after recovery; evictions %v", mem, disk, evicted)
	}
}

// A pressure condition holds for evictionPressureTransitionPeriod after its
// signal was last over a threshold, and then clears.
func TestPressureHoldsForTheTransitionPeriod(t *testing.T) {
	ts, err := ParseThresholds(map[string]string{"memory.available": "100Mi"})
	if err != nil {
		t.Fatal(err)
	}
	ok := Signals{MemoryAvailable: 1 << 30, MemoryCapacity: 8 << 30, NodeFsAvailable: 50, NodeFsCapacity: 100, NodeFsInodes: 10, NodeFsInodesFree: 9}
	low := ok
	low.MemoryAvailable = 50 << 20
	now := time.Unix(1000, 0)
	signals := low
	m := New(Config{Thresholds: ts, TransitionPeriod: 5 * time.Minute, Now: func() time.Time { return now },
		Read: func() (Signals, error) { return signals, nil }})
	m.Check(context.Background())
	if mem, _ := m.Pressure(); !mem {
		t.Fatal("no memory pressure below the threshold")
	}
	signals = ok
	now = now.Add(4 * time.Minute)
	m.Check(context.Background())
	if mem, _ := m.Pressure(); !mem {
		t.Error("memory pressure cleared 4 minutes after the signal recovered, before the 5-minute transition period")
	}
	now = now.Add(2 * time.Minute)
	m.Check(context.Background())
	if mem, disk := m.Pressure(); mem || disk {
		t.Errorf("pressure %v %v after the transition period", mem, disk)
	}
}
