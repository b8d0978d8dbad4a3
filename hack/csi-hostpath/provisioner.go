package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// The provisioner is the driver's controller side, in the place of the
// external-provisioner sidecar a real driver runs: it makes a PV for each
// claim the PV controller hands to this driver (the claim's
// volume.kubernetes.io/storage-provisioner annotation), on this node (the
// driver's topology key), and deletes the PV and the volume's folder once a
// PV with the Delete policy is released. It is what lets upstream's storage
// test suites (e2e.test -storage.testdriver) run their dynamic and generic
// ephemeral volume specs against the driver.
type provisioner struct {
	d     *driver
	cs    kubernetes.Interface
	sc    func(name string) (*storagev1.StorageClass, error)
	claim func(ns, name string) (*corev1.PersistentVolumeClaim, error)
}

const (
	annProvisioner   = "volume.kubernetes.io/storage-provisioner"
	annSelectedNode  = "volume.kubernetes.io/selected-node"
	annProvisionedBy = "pv.kubernetes.io/provisioned-by"
	// sizeKey carries the claim's size to the node side, which gives a
	// block volume a backing file of that size.
	sizeKey = "bosun.example/size"
)

func runProvisioner(ctx context.Context, d *driver, kubeconfig string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	f := informers.NewSharedInformerFactory(cs, 30*time.Second)
	claims := f.Core().V1().PersistentVolumeClaims()
	classes := f.Storage().V1().StorageClasses()
	pvs := f.Core().V1().PersistentVolumes()
	p := &provisioner{d: d, cs: cs, sc: classes.Lister().Get,
		claim: func(ns, name string) (*corev1.PersistentVolumeClaim, error) {
			return claims.Lister().PersistentVolumeClaims(ns).Get(name)
		}}
	on := func(fn func(context.Context, any)) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { fn(ctx, o) },
			UpdateFunc: func(_, o any) { fn(ctx, o) },
		}
	}
	if _, err := claims.Informer().AddEventHandler(on(p.claimChanged)); err != nil {
		return err
	}
	if _, err := pvs.Informer().AddEventHandler(on(p.volumeChanged)); err != nil {
		return err
	}
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	logf("provisioner started", map[string]any{"driver": d.name})
	return nil
}

func (p *provisioner) claimChanged(ctx context.Context, o any) {
	c, ok := o.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	if c.Spec.VolumeName != "" && c.Status.Phase == corev1.ClaimBound {
		p.resize(ctx, c)
		return
	}
	if c.Spec.VolumeName != "" || c.Status.Phase != corev1.ClaimPending || c.Annotations[annProvisioner] != p.d.name {
		return
	}
	pv, err := p.volumeFor(c)
	if err != nil {
		logf("provision refused", map[string]any{"claim": c.Namespace + "/" + c.Name, "error": err.Error()})
		return
	}
	if pv == nil {
		return // waiting for the scheduler to pick a node
	}
	if _, err := p.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		logf("provision failed", map[string]any{"claim": c.Namespace + "/" + c.Name, "error": err.Error()})
		return
	}
	logf("provisioned", map[string]any{"claim": c.Namespace + "/" + c.Name, "volume": pv.Name})
}

// volumeFor is the PV for a claim, or nil while the claim waits for its
// first consumer to be scheduled.
func (p *provisioner) volumeFor(c *corev1.PersistentVolumeClaim) (*corev1.PersistentVolume, error) {
	if c.Spec.StorageClassName == nil {
		return nil, fmt.Errorf("no storage class")
	}
	sc, err := p.sc(*c.Spec.StorageClassName)
	if err != nil {
		return nil, err
	}
	if sc.VolumeBindingMode != nil && *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer {
		if n := c.Annotations[annSelectedNode]; n == "" {
			return nil, nil
		} else if n != p.d.node {
			return nil, fmt.Errorf("the claim is for node %s; this driver serves %s", n, p.d.node)
		}
	}
	if c.Spec.DataSource != nil || c.Spec.DataSourceRef != nil {
		return nil, fmt.Errorf("volumes from a data source are not supported")
	}
	size, ok := c.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return nil, fmt.Errorf("the claim requests no storage")
	}
	policy := corev1.PersistentVolumeReclaimDelete
	if sc.ReclaimPolicy != nil {
		policy = *sc.ReclaimPolicy
	}
	handle := "pvc-" + string(c.UID)
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: handle, Annotations: map[string]string{annProvisionedBy: p.d.name}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   c.Spec.AccessModes,
			VolumeMode:                    c.Spec.VolumeMode,
			StorageClassName:              sc.Name,
			PersistentVolumeReclaimPolicy: policy,
			MountOptions:                  sc.MountOptions,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: c.Namespace, Name: c.Name, UID: c.UID},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: TopologyKey, Operator: corev1.NodeSelectorOpIn, Values: []string{p.d.node}}},
			}}}},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: p.d.name, VolumeHandle: handle, FSType: sc.Parameters["csi.storage.k8s.io/fstype"],
				VolumeAttributes: map[string]string{sizeKey: strconv.FormatInt(size.Value(), 10)},
			}},
		},
	}, nil
}

// resize is the external-resizer's part of an expansion, for a bound claim
// of this driver that asks for more than its volume has: the volume grows
// (the driver has nothing to do on the controller side), the PV's capacity
// follows, and the claim waits for the node (allocated resource status
// NodeResizePending, condition FileSystemResizePending), where the node
// agent calls NodeExpandVolume and sets the claim's capacity.
func (p *provisioner) resize(ctx context.Context, c *corev1.PersistentVolumeClaim) {
	want, ok := c.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return
	}
	pvs := p.cs.CoreV1().PersistentVolumes()
	pv, err := pvs.Get(ctx, c.Spec.VolumeName, metav1.GetOptions{})
	if err != nil || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != p.d.name {
		return
	}
	have := pv.Spec.Capacity[corev1.ResourceStorage]
	allocated := c.Status.AllocatedResources[corev1.ResourceStorage]
	switch {
	case want.Cmp(have) > 0:
		logf("ControllerExpandVolume", map[string]any{"volume": pv.Name, "size": want.String()})
		pv.Spec.Capacity[corev1.ResourceStorage] = want
		if _, err := pvs.Update(ctx, pv, metav1.UpdateOptions{}); err != nil {
			logf("resize failed", map[string]any{"volume": pv.Name, "error": err.Error()})
			return
		}
	case want.Cmp(have) == 0 && allocated.Cmp(want) < 0 && c.Status.Capacity.Storage().Cmp(want) < 0:
		// The volume grew but the claim's status update failed: again.
	default:
		return
	}
	st := c.DeepCopy()
	st.Status.AllocatedResources = corev1.ResourceList{corev1.ResourceStorage: want}
	st.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{
		corev1.ResourceStorage: corev1.PersistentVolumeClaimNodeResizePending}
	var conds []corev1.PersistentVolumeClaimCondition
	for _, cond := range st.Status.Conditions {
		if cond.Type != corev1.PersistentVolumeClaimResizing && cond.Type != corev1.PersistentVolumeClaimFileSystemResizePending {
			conds = append(conds, cond)
		}
	}
	st.Status.Conditions = append(conds, corev1.PersistentVolumeClaimCondition{
		Type: corev1.PersistentVolumeClaimFileSystemResizePending, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now(),
		Message: "Waiting for user to (re-)start a pod to finish file system resize of volume on node."})
	if _, err := p.cs.CoreV1().PersistentVolumeClaims(c.Namespace).UpdateStatus(ctx, st, metav1.UpdateOptions{}); err != nil {
		logf("resize failed", map[string]any{"claim": c.Namespace + "/" + c.Name, "error": err.Error()})
	}
}

// volumeChanged deletes a released PV of this driver with the Delete policy,
// and its folder, as the external-provisioner does after DeleteVolume.
func (p *provisioner) volumeChanged(ctx context.Context, o any) {
	pv, ok := o.(*corev1.PersistentVolume)
	if !ok || pv.Annotations[annProvisionedBy] != p.d.name || pv.Spec.CSI == nil ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		return
	}
	if pv.Status.Phase != corev1.VolumeReleased && pv.Status.Phase != corev1.VolumeFailed {
		return
	}
	// A claim of the same name and UID still there means the PV controller
	// has not seen the claim go yet.
	if ref := pv.Spec.ClaimRef; ref != nil {
		if c, err := p.claim(ref.Namespace, ref.Name); err == nil && c.UID == ref.UID {
			return
		}
	}
	if err := p.d.deleteVolume(pv.Spec.CSI.VolumeHandle); err != nil {
		logf("delete failed", map[string]any{"volume": pv.Name, "error": err.Error()})
		return
	}
	if err := p.cs.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		logf("delete failed", map[string]any{"volume": pv.Name, "error": err.Error()})
		return
	}
	logf("deleted", map[string]any{"volume": pv.Name})
}

// deleteVolume removes a volume's folder, once nothing holds its backing
// file on a loop device.
func (d *driver) deleteVolume(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dir, err := d.volumeDir(id)
	if err != nil {
		return err
	}
	if devs := loopsOf(filepath.Join(dir, "block.img")); len(devs) > 0 {
		return fmt.Errorf("volume %s is still on a loop device: %s", id, strings.Join(devs, ", "))
	}
	return os.RemoveAll(dir)
}
