package volumes

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
)

type expandingCSI struct {
	fakeCSI
	can     bool
	fail    error
	expands []string
}

func (f *expandingCSI) CanExpand(string) bool { return f.can }

func (f *expandingCSI) Expand(_ context.Context, uid types.UID, pv *corev1.PersistentVolume, size resource.Quantity) error {
	f.expands = append(f.expands, string(uid)+" "+pv.Name+" "+size.String())
	return f.fail
}

type writingClaims struct {
	fakeClaims
	writes []corev1.PersistentVolumeClaimStatus
}

func (f *writingClaims) UpdateClaimStatus(_ context.Context, pvc *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, error) {
	f.writes = append(f.writes, *pvc.Status.DeepCopy())
	f.pvcs[pvc.Namespace+"/"+pvc.Name] = pvc.DeepCopy()
	return pvc.DeepCopy(), nil
}

// A claim whose PersistentVolume grew and whose resize waits for the node
// is expanded through the driver, then its status says the new size with
// the resize status and conditions cleared, as upstream's node expander
// leaves it; a resize the controller has not finished is left alone.
func TestPublishedClaimExpandsOnline(t *testing.T) {
	pvc := claim("data", "pv-data", corev1.ClaimBound)
	pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}
	pv := boundPV("pv-data", "uid-data", corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "d", VolumeHandle: "h"}})
	pv.Spec.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}
	claims := &writingClaims{fakeClaims: fakeClaims{pvcs: map[string]*corev1.PersistentVolumeClaim{"ns/data": pvc}, pvs: map[string]*corev1.PersistentVolume{"pv-data": pv}}}
	drv := &expandingCSI{can: true}
	rec := record.NewFakeRecorder(10)
	m := &Manager{RootDir: t.TempDir(), Claims: claims, CSI: drv, Recorder: rec, NodeName: "n1"}
	pod := claimPod(pvcVolume("vol", "data", false))
	if _, err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if len(drv.expands) != 0 || len(claims.writes) != 0 {
		t.Fatalf("a claim of its volume's size: expands %v, writes %v", drv.expands, claims.writes)
	}

	// The controller grew the volume and left the rest to the node.
	pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("2Gi")
	pvc.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{corev1.ResourceStorage: corev1.PersistentVolumeClaimControllerResizeInProgress}
	m.expandChecked = nil
	if _, err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if len(drv.expands) != 0 {
		t.Fatalf("expanded %v while the controller's resize is in progress", drv.expands)
	}
	pvc.Status.AllocatedResourceStatuses[corev1.ResourceStorage] = corev1.PersistentVolumeClaimNodeResizePending
	pvc.Status.Conditions = []corev1.PersistentVolumeClaimCondition{{Type: corev1.PersistentVolumeClaimFileSystemResizePending, Status: corev1.ConditionTrue},
		{Type: "example.com/other", Status: corev1.ConditionTrue}}
	m.expandChecked = nil
	if _, err := m.Setup(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if len(drv.expands) != 1 || drv.expands[0] != "pod-uid pv-data 2Gi" {
		t.Fatalf("expands %v, want one to 2Gi", drv.expands)
	}
	if len(claims.writes) != 2 || claims.writes[0].AllocatedResourceStatuses[corev1.ResourceStorage] != corev1.PersistentVolumeClaimNodeResizeInProgress {
		t.Fatalf("writes %+v: want NodeResizeInProgress first", claims.writes)
	}
	final := claims.writes[1]
	if c := final.Capacity[corev1.ResourceStorage]; c.String() != "2Gi" || final.AllocatedResourceStatuses != nil ||
		len(final.Conditions) != 1 || final.Conditions[0].Type != "example.com/other" {
		t.Errorf("final status %+v: want 2Gi, no resize status, only the foreign condition", final)
	}
	if e := <-rec.Events; e != `Normal FileSystemResizeSuccessful MountVolume.NodeExpandVolume succeeded for volume "pv-data" n1` {
		t.Errorf("event %q", e)
	}

	// Done: looking again does nothing; a driver failure is recorded.
	m.expandChecked = nil
	if _, err := m.Setup(context.Background(), pod); err != nil || len(drv.expands) != 1 {
		t.Errorf("after the expansion: expands %v (%v)", drv.expands, err)
	}
	pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("3Gi")
	claims.pvcs["ns/data"].Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{corev1.ResourceStorage: corev1.PersistentVolumeClaimNodeResizePending}
	drv.fail = errors.New("disk on fire")
	m.expandChecked = nil
	if _, err := m.Setup(context.Background(), pod); err != nil {
		t.Fatalf("a failed expansion stopped the pod's volumes: %v", err)
	}
	last := claims.writes[len(claims.writes)-1]
	if len(last.Conditions) == 0 || last.Conditions[len(last.Conditions)-1].Type != corev1.PersistentVolumeClaimNodeResizeError ||
		!strings.Contains(last.Conditions[len(last.Conditions)-1].Message, "disk on fire") {
		t.Errorf("failure status %+v", last)
	}
}
