package volumes

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

func TestStatsMeasureEachVolumeKind(t *testing.T) {
	claims := &fakeClaims{
		pvcs: map[string]*corev1.PersistentVolumeClaim{"ns/c-csi": claim("c-csi", "pv-csi", corev1.ClaimBound)},
		pvs: map[string]*corev1.PersistentVolume{"pv-csi": boundPV("pv-csi", "uid-c-csi",
			corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "d", VolumeHandle: "h"}})},
	}
	m := &Manager{RootDir: t.TempDir(), Claims: claims, CSI: &fakeCSI{}}
	pod := claimPod(
		corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp"}}},
		pvcVolume("claimed", "c-csi", false),
	)
	ctx := context.Background()
	if _, err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(m.RootDir, "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", "cache")
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	got := m.Stats(ctx, pod)
	if len(got) != 2 {
		t.Fatalf("stats for %d volumes, want the emptyDir and the claim (hostPath has none): %+v", len(got), got)
	}
	ed := got[0]
	if ed.Name != "cache" || ed.PVCRef != nil || ed.UsedBytes == nil || *ed.UsedBytes < 10000 || *ed.InodesUsed != 2 ||
		ed.CapacityBytes == nil || *ed.CapacityBytes == 0 {
		t.Errorf("emptyDir stats: %+v", ed)
	}
	cl := got[1]
	if cl.Name != "claimed" || cl.PVCRef == nil || *cl.PVCRef != (statsapi.PVCReference{Name: "c-csi", Namespace: "ns"}) || *cl.UsedBytes != uint64(len("pv-csi")) {
		t.Errorf("claim stats (from the driver, by the PV's name): %+v", cl)
	}

	cache := &StatsCache{Volumes: m, Period: time.Hour}
	if s := cache.Get(pod); s != nil {
		t.Errorf("stats before the first measure: %+v", s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for cache.Get(pod) == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := cache.Get(pod); len(s) != 2 {
		t.Fatalf("cached stats: %+v", s)
	}
	if c := cache.Claims(); len(c) != 1 || c[0].PVCRef.Name != "c-csi" {
		t.Errorf("claims: %+v", c)
	}
	cache.Drop(pod.UID)
	if c := cache.Claims(); len(c) != 0 {
		t.Errorf("claims of a dropped pod: %+v", c)
	}
}
