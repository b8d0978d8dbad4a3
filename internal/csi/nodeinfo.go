package csi

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
)

// NodeIDAnnotation maps each registered driver to its node ID on the Node.
const NodeIDAnnotation = "csi.volume.kubernetes.io/nodeid"

// migratedPlugins are the in-tree volume plugins whose volumes go to their
// CSI drivers in v1.36, as the upstream kubelet lists them on its CSINode.
var migratedPlugins = []string{
	"kubernetes.io/aws-ebs", "kubernetes.io/azure-disk", "kubernetes.io/azure-file", "kubernetes.io/cinder",
	"kubernetes.io/gce-pd", "kubernetes.io/portworx-volume", "kubernetes.io/vsphere-volume",
}

// Init makes sure the node's CSINode object exists, is owned by this Node
// and carries the migrated-plugins annotation, as the upstream kubelet does
// once its Node is registered. A CSINode owned by an earlier Node of the
// same name is deleted and made anew.
func (m *Manager) Init(ctx context.Context) error {
	if m.started.CompareAndSwap(false, true) { // CSIDriver objects from a watch from now on
		m.informers.Start(ctx.Done())
	}
	m.nodeMu.Lock()
	defer m.nodeMu.Unlock()
	_, err := m.csiNode(ctx)
	return err
}

// csiNode returns the node's CSINode, creating it when missing.
func (m *Manager) csiNode(ctx context.Context) (*storagev1.CSINode, error) {
	c := m.cfg.Client
	node, err := c.CoreV1().Nodes().Get(ctx, m.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("failed to read Node %s: %w", m.cfg.NodeName, err)
	}
	cn, err := c.StorageV1().CSINodes().Get(ctx, m.cfg.NodeName, metav1.GetOptions{})
	if err == nil && !ownedBy(cn, node) {
		if err := c.StorageV1().CSINodes().Delete(ctx, cn.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("failed to delete CSINode %s of an earlier Node: %w", cn.Name, err)
		}
		err = apierrors.NewNotFound(storagev1.Resource("csinodes"), cn.Name)
	}
	if apierrors.IsNotFound(err) {
		cn = &storagev1.CSINode{
			ObjectMeta: metav1.ObjectMeta{Name: node.Name, OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
			}}},
			Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{}},
		}
		setMigrated(cn)
		return c.StorageV1().CSINodes().Create(ctx, cn, metav1.CreateOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read CSINode %s: %w", m.cfg.NodeName, err)
	}
	if setMigrated(cn) {
		return c.StorageV1().CSINodes().Update(ctx, cn, metav1.UpdateOptions{})
	}
	return cn, nil
}

func ownedBy(cn *storagev1.CSINode, node *corev1.Node) bool {
	return slices.ContainsFunc(cn.OwnerReferences, func(o metav1.OwnerReference) bool {
		return o.Kind == "Node" && o.Name == node.Name && o.UID == node.UID
	})
}

// setMigrated sets the migrated-plugins annotation; it reports a change.
func setMigrated(cn *storagev1.CSINode) bool {
	want := strings.Join(migratedPlugins, ",")
	if cn.Annotations[corev1.MigratedPluginsAnnotationKey] == want {
		return false
	}
	if cn.Annotations == nil {
		cn.Annotations = map[string]string{}
	}
	cn.Annotations[corev1.MigratedPluginsAnnotationKey] = want
	return true
}

// installDriver records a driver in the Node (nodeid annotation, topology
// labels) and in the CSINode (node ID, topology keys, volume limit).
func (m *Manager) installDriver(ctx context.Context, name, nodeID string, maxVolumes int64, topology map[string]string) error {
	m.nodeMu.Lock()
	defer m.nodeMu.Unlock()
	if err := m.updateNode(ctx, func(node *corev1.Node, ids map[string]string) error {
		for k, v := range topology {
			if old, ok := node.Labels[k]; ok && old != v {
				return fmt.Errorf("detected topology value collision: driver reported %q:%q but existing label is %q:%q", k, v, k, old)
			}
		}
		ids[name] = nodeID
		return nil
	}, topology); err != nil {
		return err
	}
	keys := make([]string, 0, len(topology))
	for k := range topology {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	entry := storagev1.CSINodeDriver{Name: name, NodeID: nodeID, TopologyKeys: keys}
	if maxVolumes > 0 {
		n := int32(min(maxVolumes, math.MaxInt32))
		entry.Allocatable = &storagev1.VolumeNodeResources{Count: &n}
	}
	return m.updateCSINode(ctx, func(drivers []storagev1.CSINodeDriver) []storagev1.CSINodeDriver {
		return append(drivers, entry)
	}, name)
}

// uninstallDriver takes a driver out of the CSINode and the nodeid
// annotation; topology labels stay, as upstream leaves them.
func (m *Manager) uninstallDriver(ctx context.Context, name string) error {
	m.nodeMu.Lock()
	defer m.nodeMu.Unlock()
	if err := m.updateCSINode(ctx, func(d []storagev1.CSINodeDriver) []storagev1.CSINodeDriver { return d }, name); err != nil {
		return err
	}
	return m.updateNode(ctx, func(_ *corev1.Node, ids map[string]string) error {
		delete(ids, name)
		return nil
	}, nil)
}

// updateCSINode drops the named driver's entry and lets change add what it
// wants, retrying on conflicts.
func (m *Manager) updateCSINode(ctx context.Context, change func([]storagev1.CSINodeDriver) []storagev1.CSINodeDriver, name string) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cn, err := m.csiNode(ctx)
		if err != nil {
			return err
		}
		var kept []storagev1.CSINodeDriver
		for _, d := range cn.Spec.Drivers {
			if d.Name != name {
				kept = append(kept, d)
			}
		}
		drivers := change(kept)
		if drivers == nil {
			drivers = []storagev1.CSINodeDriver{}
		}
		if slices.EqualFunc(drivers, cn.Spec.Drivers, sameDriver) {
			return nil
		}
		cn.Spec.Drivers = drivers
		_, err = m.cfg.Client.StorageV1().CSINodes().Update(ctx, cn, metav1.UpdateOptions{})
		return err
	})
}

func sameDriver(a, b storagev1.CSINodeDriver) bool {
	count := func(d storagev1.CSINodeDriver) int32 {
		if d.Allocatable == nil || d.Allocatable.Count == nil {
			return 0
		}
		return *d.Allocatable.Count
	}
	return a.Name == b.Name && a.NodeID == b.NodeID && slices.Equal(a.TopologyKeys, b.TopologyKeys) && count(a) == count(b)
}

// updateNode patches the Node's nodeid annotation (as change leaves the
// driver → node ID map) and adds labels.
func (m *Manager) updateNode(ctx context.Context, change func(*corev1.Node, map[string]string) error, labels map[string]string) error {
	node, err := m.cfg.Client.CoreV1().Nodes().Get(ctx, m.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("failed to read Node %s: %w", m.cfg.NodeName, err)
	}
	ids := map[string]string{}
	if raw := node.Annotations[NodeIDAnnotation]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &ids); err != nil {
			return fmt.Errorf("failed to parse the Node's %s annotation %q: %w", NodeIDAnnotation, raw, err)
		}
	}
	if err := change(node, ids); err != nil {
		return err
	}
	var value any // null removes the annotation
	if len(ids) > 0 {
		b, _ := json.Marshal(ids)
		value = string(b)
	}
	if value == nil && node.Annotations[NodeIDAnnotation] == "" && len(labels) == 0 {
		return nil
	}
	meta := map[string]any{"annotations": map[string]any{NodeIDAnnotation: value}}
	if len(labels) > 0 { // never a null: that would remove every label
		meta["labels"] = labels
	}
	patch, _ := json.Marshal(map[string]any{"metadata": meta})
	_, err = m.cfg.Client.CoreV1().Nodes().Patch(ctx, node.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	return err
}
