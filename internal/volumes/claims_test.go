package volumes

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/utils/ptr"

	"github.com/bosun-dev/bosun/internal/csi"
)

type fakeClaims struct {
	pvcs map[string]*corev1.PersistentVolumeClaim
	pvs  map[string]*corev1.PersistentVolume
	gets int
}

func (f *fakeClaims) Claim(_ context.Context, ns, name string) (*corev1.PersistentVolumeClaim, error) {
	f.gets++
	if c := f.pvcs[ns+"/"+name]; c != nil {
		return c, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("persistentvolumeclaims"), name)
}

func (f *fakeClaims) PersistentVolume(_ context.Context, name string) (*corev1.PersistentVolume, error) {
	if v := f.pvs[name]; v != nil {
		return v, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("persistentvolumes"), name)
}

type fakeCSI struct{ set []csi.Volume }

func (f *fakeCSI) SetUp(_ context.Context, _ *corev1.Pod, v csi.Volume) (string, error) {
	f.set = append(f.set, v)
	return "/published/" + v.Name, nil
}

func (f *fakeCSI) SetUpBlock(_ context.Context, _ *corev1.Pod, v csi.Volume) (string, error) {
	f.set = append(f.set, v)
	return "/devices/" + v.Name, nil
}

func (f *fakeCSI) TearDown(context.Context, types.UID) error { return nil }

func (f *fakeCSI) VolumeStats(_ context.Context, _ types.UID, id string) *statsapi.FsStats {
	n := uint64(len(id))
	return &statsapi.FsStats{CapacityBytes: &n, AvailableBytes: &n, UsedBytes: &n, Inodes: &n, InodesFree: &n, InodesUsed: &n}
}

func claim(name, volume string, phase corev1.PersistentVolumeClaimPhase) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name)},
		Spec: corev1.PersistentVolumeClaimSpec{VolumeName: volume}, Status: corev1.PersistentVolumeClaimStatus{Phase: phase}}
}

func boundPV(name, claimUID string, src corev1.PersistentVolumeSource) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: src, ClaimRef: &corev1.ObjectReference{UID: types.UID(claimUID)}}}
}

func claimPod(vols ...corev1.Volume) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "pod-uid"}, Spec: corev1.PodSpec{Volumes: vols}}
}

func pvcVolume(name, claimName string, ro bool) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claimName, ReadOnly: ro}}}
}

func TestClaimsResolveToTheirVolumes(t *testing.T) {
	block := corev1.PersistentVolumeBlock
	blockPV := boundPV("pv-block", "uid-c-block", corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "d", VolumeHandle: "h"}})
	blockPV.Spec.VolumeMode = &block
	claims := &fakeClaims{
		pvcs: map[string]*corev1.PersistentVolumeClaim{
			"ns/c-csi": claim("c-csi", "pv-csi", corev1.ClaimBound), "ns/c-host": claim("c-host", "pv-host", corev1.ClaimBound),
			"ns/c-pending": claim("c-pending", "", corev1.ClaimPending), "ns/c-other": claim("c-other", "pv-other", corev1.ClaimBound),
			"ns/c-block": claim("c-block", "pv-block", corev1.ClaimBound), "ns/p-eph": claim("p-eph", "pv-csi", corev1.ClaimBound),
		},
		pvs: map[string]*corev1.PersistentVolume{
			"pv-csi":   boundPV("pv-csi", "uid-c-csi", corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "d", VolumeHandle: "h"}}),
			"pv-host":  boundPV("pv-host", "uid-c-host", corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp"}}),
			"pv-other": boundPV("pv-other", "uid-someone-else", corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp"}}),
			"pv-block": blockPV,
		},
	}
	c := &fakeCSI{}
	m := &Manager{RootDir: t.TempDir(), Claims: claims, CSI: c}
	ctx := context.Background()
	vols, err := m.Setup(ctx, claimPod(pvcVolume("a", "c-csi", true), pvcVolume("b", "c-host", false)))
	if err != nil {
		t.Fatal(err)
	}
	if vols["a"].Path != "/published/a" || !vols["a"].ReadOnly || len(c.set) != 1 || c.set[0].PV.Name != "pv-csi" || !c.set[0].ReadOnly {
		t.Errorf("CSI claim: %+v, csi calls %+v", vols["a"], c.set)
	}
	if vols["b"].Path != "/tmp" || !vols["b"].HostPath || vols["b"].ReadOnly {
		t.Errorf("hostPath claim: %+v", vols["b"])
	}
	gets := claims.gets
	if _, err := m.Setup(ctx, claimPod(pvcVolume("a", "c-csi", true), pvcVolume("b", "c-host", false))); err != nil || claims.gets != gets {
		t.Errorf("a second sync read the claims again (%d reads, then %d): %v", gets, claims.gets, err)
	}
	for vol, want := range map[corev1.Volume]string{
		pvcVolume("x1", "c-pending", false): `PVC ns/c-pending has non-bound phase ("Pending") or empty pvc.Spec.VolumeName ("")`,
		pvcVolume("x2", "c-other", false):   `does not point to claim.UID "uid-c-other"`,
		pvcVolume("x4", "missing", false):   "failed to fetch PVC from API server",
		{Name: "eph", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}}: "PVC ns/p-eph was not created for pod ns/p (pod is not owner)",
	} {
		_, err := m.Setup(ctx, claimPod(vol))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("volume %s: %v, want %q", vol.Name, err, want)
		}
	}
	owned := claimPod(corev1.Volume{Name: "eph", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}})
	claims.pvcs["ns/p-eph"].OwnerReferences = []metav1.OwnerReference{{UID: owned.UID, Controller: ptr.To(true), Kind: "Pod", Name: "p"}}
	claims.pvs["pv-csi"].Spec.ClaimRef.UID = "uid-p-eph"
	if _, err := m.Setup(ctx, owned); err != nil {
		t.Errorf("an ephemeral volume's own claim: %v", err)
	}
}

// A Block claim's volume is its device, which containers get through
// volumeDevices (read-only for a read-only claim) and cannot mount.
func TestBlockVolumesAreDevices(t *testing.T) {
	block := corev1.PersistentVolumeBlock
	pv := boundPV("pv-block", "uid-c-block", corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "d", VolumeHandle: "h"}})
	pv.Spec.VolumeMode = &block
	hostPV := boundPV("pv-hblock", "uid-c-hblock", corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/dev/null"}})
	hostPV.Spec.VolumeMode = &block
	claims := &fakeClaims{pvcs: map[string]*corev1.PersistentVolumeClaim{"ns/c-block": claim("c-block", "pv-block", corev1.ClaimBound),
		"ns/c-hblock": claim("c-hblock", "pv-hblock", corev1.ClaimBound)},
		pvs: map[string]*corev1.PersistentVolume{"pv-block": pv, "pv-hblock": hostPV}}
	c := &fakeCSI{}
	m := &Manager{RootDir: t.TempDir(), Claims: claims, CSI: c}
	vols, err := m.Setup(context.Background(), claimPod(pvcVolume("raw", "c-block", true)))
	if err != nil {
		t.Fatal(err)
	}
	if v := vols["raw"]; v.Device != "/devices/raw" || v.Path != "" || !v.ReadOnly {
		t.Fatalf("block claim: %+v", v)
	}
	ctr := &corev1.Container{Name: "c", VolumeDevices: []corev1.VolumeDevice{{Name: "raw", DevicePath: "/dev/xvda"}}}
	devs, err := Devices(ctr, vols)
	if err != nil || len(devs) != 1 || devs[0].HostPath != "/devices/raw" || devs[0].ContainerPath != "/dev/xvda" || devs[0].Permissions != "r" {
		t.Fatalf("devices %v: %v", devs, err)
	}
	ctr.VolumeMounts = []corev1.VolumeMount{{Name: "raw", MountPath: "/data"}}
	if _, err := Mounts(ctr, vols, func(s string) string { return s }, false, ""); err == nil || !strings.Contains(err.Error(), "has volumeMode Block, but is specified in volumeMounts") {
		t.Errorf("mounting a block volume: %v", err)
	}
	fs := map[string]Volume{"raw": {Path: "/somewhere"}}
	if _, err := Devices(ctr, fs); err == nil || !strings.Contains(err.Error(), "has volumeMode Filesystem, but is specified in volumeDevices") {
		t.Errorf("a filesystem volume as a device: %v", err)
	}
	if _, err := m.Setup(context.Background(), claimPod(pvcVolume("h", "c-hblock", false))); err == nil || !strings.Contains(err.Error(), "supports for CSI volumes only") {
		t.Errorf("a hostPath block volume: %v", err)
	}
}

// A volume whose only access mode is ReadWriteOncePod is refused to a second
// pod on the node while the first has it set up (a pod bound to the node by
// name skips the scheduler's check), with upstream's message; once the first
// pod's volumes are torn down, the second gets it.
func TestReadWriteOncePodIsRefusedWhileAnotherPodHasIt(t *testing.T) {
	pv := boundPV("pv-rwop", "uid-c-rwop", corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "d", VolumeHandle: "h"}})
	pv.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}
	claims := &fakeClaims{pvcs: map[string]*corev1.PersistentVolumeClaim{"ns/c-rwop": claim("c-rwop", "pv-rwop", corev1.ClaimBound)},
		pvs: map[string]*corev1.PersistentVolume{"pv-rwop": pv}}
	m := &Manager{RootDir: t.TempDir(), Claims: claims, CSI: &fakeCSI{}}
	ctx := context.Background()
	first, second := claimPod(pvcVolume("data", "c-rwop", false)), claimPod(pvcVolume("data", "c-rwop", false))
	second.UID = "pod-uid-2"
	if _, err := m.Setup(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Setup(ctx, first); err != nil {
		t.Errorf("the pod that has the volume, synced again: %v", err)
	}
	_, err := m.Setup(ctx, second)
	if want := `MountVolume.SetUp failed for volume "data" : volume uses the ReadWriteOncePod access mode and is already in use by another pod`; err == nil || err.Error() != want {
		t.Fatalf("second pod: %v, want %q", err, want)
	}
	// A third pod is refused too; refused pods hold nothing, so the second
	// gets the volume once the first pod's volumes are torn down.
	third := claimPod(pvcVolume("data", "c-rwop", false))
	third.UID = "pod-uid-3"
	if _, err := m.Setup(ctx, third); err == nil {
		t.Error("a third pod got the volume")
	}
	m.forget(first.UID)
	if _, err := m.Setup(ctx, second); err != nil {
		t.Errorf("after the first pod's teardown: %v", err)
	}
	// Other access modes are not checked here.
	pv.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod, corev1.ReadWriteOnce}
	m.forget(second.UID)
	m.forget(third.UID)
	if _, err := m.Setup(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Setup(ctx, second); err != nil {
		t.Errorf("a volume with more than one access mode: %v", err)
	}
}
