package csi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/bosun-dev/bosun/internal/atomicfile"
	"github.com/bosun-dev/bosun/internal/mounts"
)

// Volume is one CSI volume of a pod: an inline one or a PersistentVolume.
type Volume struct {
	Name     string                   // the pod's volume name
	Inline   *corev1.CSIVolumeSource  // an inline (ephemeral) CSI volume, or
	PV       *corev1.PersistentVolume // a bound PersistentVolume with spec.csi
	ReadOnly bool                     // the pod's claim asks for read-only
}

// spec is what one publish needs, from either kind of volume.
type spec struct {
	driver, handle, specVolID string
	mode                      storagev1.VolumeLifecycleMode
	fsType                    string
	attrs                     map[string]string
	publishSecret             *corev1.SecretReference
	stageSecret               *corev1.SecretReference
	access                    corev1.PersistentVolumeAccessMode
	accessModes               []corev1.PersistentVolumeAccessMode
	mountOptions              []string
	readOnly                  bool
}

func specOf(pod *corev1.Pod, v Volume) (spec, error) {
	switch {
	case v.Inline != nil:
		s := spec{driver: v.Inline.Driver, handle: inlineHandle(pod.UID, v.Name), specVolID: v.Name,
			mode: storagev1.VolumeLifecycleEphemeral, attrs: v.Inline.VolumeAttributes, access: corev1.ReadWriteOnce,
			readOnly: v.Inline.ReadOnly != nil && *v.Inline.ReadOnly}
		if v.Inline.FSType != nil {
			s.fsType = *v.Inline.FSType
		}
		if r := v.Inline.NodePublishSecretRef; r != nil {
			s.publishSecret = &corev1.SecretReference{Name: r.Name, Namespace: pod.Namespace}
		}
		return s, nil
	case v.PV != nil && v.PV.Spec.CSI != nil:
		src := v.PV.Spec.CSI
		s := spec{driver: src.Driver, handle: src.VolumeHandle, specVolID: v.PV.Name, mode: storagev1.VolumeLifecyclePersistent,
			fsType: src.FSType, attrs: src.VolumeAttributes, publishSecret: src.NodePublishSecretRef, stageSecret: src.NodeStageSecretRef,
			access: corev1.ReadWriteOnce, accessModes: v.PV.Spec.AccessModes, mountOptions: v.PV.Spec.MountOptions,
			readOnly: v.ReadOnly || src.ReadOnly}
		if len(v.PV.Spec.AccessModes) > 0 {
			s.access = v.PV.Spec.AccessModes[0]
		}
		return s, nil
	}
	return spec{}, fmt.Errorf("volume %q is neither an inline CSI volume nor a CSI PersistentVolume", v.Name)
}

// inlineHandle is the volume ID of an inline volume: upstream's
// csi-<sha256(pod UID + volume name)>.
func inlineHandle(uid types.UID, name string) string {
	return fmt.Sprintf("csi-%x", sha256.Sum256([]byte(string(uid)+name)))
}

// attachmentName is the VolumeAttachment of a volume on a node.
func attachmentName(handle, driver, node string) string {
	return fmt.Sprintf("csi-%x", sha256.Sum256([]byte(handle+driver+node)))
}

// escape is upstream's EscapeQualifiedName: a plugin or volume name as one
// path component.
func escape(name string) string { return strings.ReplaceAll(name, "/", "~") }

func (m *Manager) podCSIDir(uid types.UID) string {
	return filepath.Join(m.cfg.RootDir, "pods", string(uid), "volumes", "kubernetes.io~csi")
}

// TargetPath is where a pod's volume is published.
func (m *Manager) TargetPath(uid types.UID, specVolID string) string {
	return filepath.Join(m.podCSIDir(uid), escape(specVolID), "mount")
}

// stagingPath is where a persistent volume is staged for all pods.
func (m *Manager) stagingPath(driver, handle string) string {
	return filepath.Join(m.cfg.RootDir, "plugins", "kubernetes.io", "csi", driver, fmt.Sprintf("%x", sha256.Sum256([]byte(handle))), "globalmount")
}

// volData is upstream's vol_data.json beside a mount folder.
type volData struct {
	SpecVolID     string `json:"specVolID,omitempty"`
	VolumeHandle  string `json:"volumeHandle"`
	DriverName    string `json:"driverName"`
	NodeName      string `json:"nodeName,omitempty"`
	AttachmentID  string `json:"attachmentID,omitempty"`
	LifecycleMode string `json:"volumeLifecycleMode,omitempty"`
}

const volDataFile = "vol_data.json"

// SetUp publishes the volume for the pod (staging it first when the driver
// stages) and returns the folder to mount into its containers. A volume
// already published, by this agent or by the one before it, is left as it is.
func (m *Manager) SetUp(ctx context.Context, pod *corev1.Pod, v Volume) (string, error) {
	s, err := specOf(pod, v)
	if err != nil {
		return "", err
	}
	target := m.TargetPath(pod.UID, s.specVolID)
	if published(target) {
		return target, nil
	}
	d, obj, err := m.driverFor(ctx, s)
	if err != nil {
		return "", err
	}
	if s.mode == storagev1.VolumeLifecyclePersistent && attachRequired(obj) {
		// in use from now on: not to be detached under the mount
		name := uniqueName(s.driver, s.handle)
		m.mu.Lock()
		m.settingUp[name]++
		m.mu.Unlock()
		defer func() {
			m.mu.Lock()
			if m.settingUp[name]--; m.settingUp[name] <= 0 {
				delete(m.settingUp, name)
			}
			m.mu.Unlock()
		}()
	}
	defer m.lockVolume(s.driver, s.handle)()
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	var publishContext map[string]string
	staging := ""
	if s.mode == storagev1.VolumeLifecyclePersistent {
		if publishContext, err = m.attached(ctx, obj, s); err != nil {
			return "", err
		}
		if d.stage {
			staging = m.stagingPath(s.driver, s.handle)
			if err := m.stageVolume(ctx, d, s, staging, publishContext); err != nil {
				return "", err
			}
		}
	}
	if err := m.publish(ctx, d, obj, pod, s, target, staging, publishContext); err != nil {
		return "", err
	}
	return target, nil
}

// driverFor is the registered driver of a volume and its CSIDriver object,
// which must allow the volume's lifecycle mode.
func (m *Manager) driverFor(ctx context.Context, s spec) (*driver, *storagev1.CSIDriver, error) {
	d, err := m.driver(s.driver)
	if err != nil {
		return nil, nil, err
	}
	obj, err := m.csiDriver(ctx, s.driver)
	if err != nil {
		return nil, nil, err
	}
	return d, obj, lifecycleSupported(obj, s)
}

// published reports whether a target folder is a mount with upstream's
// record beside it.
func published(target string) bool {
	if _, err := os.Stat(filepath.Join(filepath.Dir(target), volDataFile)); err != nil {
		return false
	}
	return mounts.IsMountPoint(target)
}

// csiDriver returns the driver's CSIDriver object, or upstream's defaults
// when there is none (persistent volumes only, attach required, no pod info).
func (m *Manager) csiDriver(ctx context.Context, name string) (*storagev1.CSIDriver, error) {
	var obj *storagev1.CSIDriver
	var err error
	if m.informerSynced() {
		obj, err = m.csiDrivers.Get(name)
	} else {
		obj, err = m.cfg.Client.StorageV1().CSIDrivers().Get(ctx, name, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read CSIDriver %s: %w", name, err)
	}
	return obj, nil
}

func (m *Manager) informerSynced() bool {
	return m.started.Load() && m.informers.Storage().V1().CSIDrivers().Informer().HasSynced()
}

// attachRequired is upstream's CanAttach: a driver needs VolumeAttachments
// unless its CSIDriver (nil: none) says attachRequired: false.
func attachRequired(obj *storagev1.CSIDriver) bool {
	return obj == nil || obj.Spec.AttachRequired == nil || *obj.Spec.AttachRequired
}

// attachable is attachRequired for a driver by name. Before the CSIDriver
// watch has listed, every driver counts as attachable.
func (m *Manager) attachable(name string) bool {
	if !m.informerSynced() {
		return true
	}
	obj, err := m.csiDrivers.Get(name)
	return err != nil || attachRequired(obj)
}

func lifecycleSupported(obj *storagev1.CSIDriver, s spec) error {
	modes := []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}
	if obj == nil {
		if s.mode == storagev1.VolumeLifecyclePersistent {
			return nil
		}
		return fmt.Errorf("volume mode %q not supported by driver %s (no CSIDriver object)", s.mode, s.driver)
	}
	if len(obj.Spec.VolumeLifecycleModes) > 0 {
		modes = obj.Spec.VolumeLifecycleModes
	}
	for _, md := range modes {
		if md == s.mode {
			return nil
		}
	}
	return fmt.Errorf("volume mode %q not supported by driver %s (only supports %q)", s.mode, s.driver, modes)
}

// attached waits for the volume's VolumeAttachment when the driver needs
// one, and returns its publish context.
func (m *Manager) attached(ctx context.Context, obj *storagev1.CSIDriver, s spec) (map[string]string, error) {
	if !attachRequired(obj) {
		return nil, nil
	}
	name := attachmentName(s.handle, s.driver, m.cfg.NodeName)
	va, err := m.cfg.Client.StorageV1().VolumeAttachments().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("volume %s is not attached to node %s yet: %w", s.specVolID, m.cfg.NodeName, err)
	}
	if !va.Status.Attached {
		if e := va.Status.AttachError; e != nil {
			return nil, fmt.Errorf("volume %s failed to attach to node %s (VolumeAttachment %s): %s", s.specVolID, m.cfg.NodeName, name, e.Message)
		}
		return nil, fmt.Errorf("volume %s is not attached to node %s yet (VolumeAttachment %s)", s.specVolID, m.cfg.NodeName, name)
	}
	return va.Status.AttachmentMetadata, nil
}

func capability(s spec) *csipb.VolumeCapability {
	modes := map[corev1.PersistentVolumeAccessMode]csipb.VolumeCapability_AccessMode_Mode{
		corev1.ReadWriteOnce:    csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		corev1.ReadOnlyMany:     csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		corev1.ReadWriteMany:    csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
		corev1.ReadWriteOncePod: csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
	}
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: s.fsType, MountFlags: s.mountOptions}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: modes[s.access]},
	}
}

// stageVolume stages a persistent volume once per node. NodeStageVolume is
// idempotent, so a volume staged by an earlier agent is staged again at no
// cost.
func (m *Manager) stageVolume(ctx context.Context, d *driver, s spec, staging string, publishContext map[string]string) error {
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return fmt.Errorf("failed to create the staging folder %s: %w", staging, err)
	}
	if err := atomicfile.WriteJSON(filepath.Join(filepath.Dir(staging), volDataFile), volData{VolumeHandle: s.handle, DriverName: s.driver}); err != nil {
		return err
	}
	secrets, err := m.secrets(ctx, s.stageSecret)
	if err != nil {
		return err
	}
	_, err = d.node.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{
		VolumeId: s.handle, PublishContext: publishContext, StagingTargetPath: staging,
		VolumeCapability: capability(s), Secrets: secrets, VolumeContext: s.attrs,
	})
	if err != nil {
		return fmt.Errorf("rpc error: NodeStageVolume of volume %s: %w", s.specVolID, err)
	}
	return nil
}

func (m *Manager) secrets(ctx context.Context, ref *corev1.SecretReference) (map[string]string, error) {
	out := map[string]string{}
	if ref == nil {
		return out, nil
	}
	sec, err := m.cfg.Client.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("fetching NodePublishSecretRef %s/%s failed: %w", ref.Namespace, ref.Name, err)
	}
	for k, v := range sec.Data {
		out[k] = string(v)
	}
	return out, nil
}

// publish calls NodePublishVolume for one pod, with the pod's information
// and service account tokens when the CSIDriver asks for them, then applies
// the pod's fsGroup when the driver does not.
func (m *Manager) publish(ctx context.Context, d *driver, obj *storagev1.CSIDriver, pod *corev1.Pod, s spec, target, staging string, publishContext map[string]string) error {
	dir := filepath.Dir(target)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("failed to create the volume folder %s: %w", dir, err)
	}
	if err := atomicfile.WriteJSON(filepath.Join(dir, volDataFile), volData{
		SpecVolID: s.specVolID, VolumeHandle: s.handle, DriverName: s.driver, NodeName: m.cfg.NodeName,
		AttachmentID: attachmentName(s.handle, s.driver, m.cfg.NodeName), LifecycleMode: string(s.mode),
	}); err != nil {
		return err
	}
	secrets, err := m.secrets(ctx, s.publishSecret)
	if err != nil {
		return err
	}
	attrs := map[string]string{}
	for k, v := range s.attrs {
		attrs[k] = v
	}
	if obj != nil && obj.Spec.PodInfoOnMount != nil && *obj.Spec.PodInfoOnMount {
		attrs["csi.storage.k8s.io/pod.name"] = pod.Name
		attrs["csi.storage.k8s.io/pod.namespace"] = pod.Namespace
		attrs["csi.storage.k8s.io/pod.uid"] = string(pod.UID)
		attrs["csi.storage.k8s.io/serviceAccount.name"] = pod.Spec.ServiceAccountName
		attrs["csi.storage.k8s.io/ephemeral"] = strconv.FormatBool(s.mode == storagev1.VolumeLifecycleEphemeral)
	}
	if err := m.tokens(ctx, obj, pod, attrs, secrets); err != nil {
		return err
	}
	fsGroup := podFSGroup(pod)
	req := &csipb.NodePublishVolumeRequest{
		VolumeId: s.handle, PublishContext: publishContext, StagingTargetPath: staging, TargetPath: target,
		VolumeCapability: capability(s), Readonly: s.readOnly, Secrets: secrets, VolumeContext: attrs,
	}
	if d.mountGroup && fsGroup != nil {
		req.VolumeCapability.GetMount().VolumeMountGroup = strconv.FormatInt(*fsGroup, 10)
	}
	if _, err := d.node.NodePublishVolume(ctx, req); err != nil {
		if !mounts.IsMountPoint(target) {
			_ = os.Remove(target)
			_ = os.Remove(filepath.Join(dir, volDataFile))
			_ = os.Remove(dir)
		}
		return fmt.Errorf("rpc error: NodePublishVolume of volume %s: %w", s.specVolID, err)
	}
	if !d.mountGroup && applyFSGroup(obj, s, fsGroup) {
		if err := SetOwnership(target, *fsGroup, fsGroupChangePolicy(pod), s.readOnly); err != nil {
			return fmt.Errorf("applyFSGroup failed for vol %s: %w", s.handle, err)
		}
	}
	return nil
}

// tokens adds the service account tokens a CSIDriver asks for, to the
// volume context or, with serviceAccountTokenInSecrets, to the secrets.
func (m *Manager) tokens(ctx context.Context, obj *storagev1.CSIDriver, pod *corev1.Pod, attrs, secrets map[string]string) error {
	if obj == nil || len(obj.Spec.TokenRequests) == 0 {
		return nil
	}
	out := map[string]authenticationv1.TokenRequestStatus{}
	for _, tr := range obj.Spec.TokenRequests {
		audiences := []string{}
		if tr.Audience != "" {
			audiences = []string{tr.Audience}
		}
		res, err := m.cfg.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: tr.ExpirationSeconds,
				BoundObjectRef: &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("failed to get a service account token for audience %q: %w", tr.Audience, err)
		}
		out[tr.Audience] = res.Status
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	if obj.Spec.ServiceAccountTokenInSecrets != nil && *obj.Spec.ServiceAccountTokenInSecrets {
		secrets["csi.storage.k8s.io/serviceAccount.tokens"] = string(b)
	} else {
		attrs["csi.storage.k8s.io/serviceAccount.tokens"] = string(b)
	}
	return nil
}

// TearDown unpublishes every CSI volume of a pod (known by its folder's
// vol_data.json, whichever agent wrote it) and unstages those no other pod
// on the node uses. What fails is left in place for the next try.
func (m *Manager) TearDown(ctx context.Context, uid types.UID) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	if err := m.tearDownBlock(ctx, uid); err != nil {
		return err
	}
	found, err := eachEntry(m.podCSIDir(uid), func(name string) error {
		return m.tearDownOne(ctx, uid, filepath.Join(m.podCSIDir(uid), name))
	})
	if !found || err != nil {
		return err
	}
	return os.Remove(m.podCSIDir(uid))
}

// eachEntry calls fn with the name of every entry of dir, and returns
// whether dir exists and every error fn returned.
func eachEntry(dir string, fn func(name string) error) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	var errs []error
	for _, e := range entries {
		if err := fn(e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return true, errors.Join(errs...)
}

func (m *Manager) tearDownOne(ctx context.Context, uid types.UID, dir string) error {
	target := filepath.Join(dir, "mount")
	var data volData
	found, err := atomicfile.ReadJSON(filepath.Join(dir, volDataFile), &data)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", filepath.Join(dir, volDataFile), err)
	}
	if !found { // a folder made before its record: nothing was published
		if mounts.IsMountPoint(target) {
			return fmt.Errorf("%s is mounted but has no %s: cannot tell its driver", target, volDataFile)
		}
		_ = os.Remove(target)
		return os.Remove(dir)
	}
	d, err := m.driver(data.DriverName)
	if err != nil {
		return fmt.Errorf("Unmounter.TearDownAt failed to get CSI client: %w", err)
	}
	defer m.lockVolume(data.DriverName, data.VolumeHandle)()
	if _, err := d.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: data.VolumeHandle, TargetPath: target}); err != nil {
		return fmt.Errorf("rpc error: NodeUnpublishVolume of volume %s: %w", data.VolumeHandle, err)
	}
	if mounts.IsMountPoint(target) {
		return fmt.Errorf("%s is still mounted after NodeUnpublishVolume", target)
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove %s: %w", target, err)
	}
	if err := os.Remove(filepath.Join(dir, volDataFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Remove(dir); err != nil {
		return err
	}
	klog.FromContext(ctx).V(2).Info("Unpublished CSI volume", "podUID", uid, "driver", data.DriverName, "volume", data.VolumeHandle)
	if data.LifecycleMode == string(storagev1.VolumeLifecycleEphemeral) || !d.stage {
		return nil
	}
	return m.unstageUnused(ctx, d, data.VolumeHandle)
}

// unstageUnused unstages a volume that no other pod's folder publishes.
func (m *Manager) unstageUnused(ctx context.Context, d *driver, handle string) error {
	staging := m.stagingPath(d.name, handle)
	if _, err := os.Stat(staging); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, other := range m.publishedRecords() {
		if other.DriverName == d.name && other.VolumeHandle == handle {
			return nil // still published for another pod
		}
	}
	if _, err := d.node.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: handle, StagingTargetPath: staging}); err != nil {
		return fmt.Errorf("rpc error: NodeUnstageVolume of volume %s: %w", handle, err)
	}
	if mounts.IsMountPoint(staging) {
		return fmt.Errorf("%s is still mounted after NodeUnstageVolume", staging)
	}
	_ = os.Remove(staging)
	_ = os.Remove(filepath.Join(filepath.Dir(staging), volDataFile))
	return os.Remove(filepath.Dir(staging))
}

// InUse lists the attachable persistent CSI volumes published for a pod on
// this node or being set up now, by upstream's unique name
// (kubernetes.io/csi/<driver>^<handle>), for the Node's volumesInUse: the
// attach/detach controller does not detach them.
func (m *Manager) InUse() []corev1.UniqueVolumeName {
	set := map[corev1.UniqueVolumeName]bool{}
	m.mu.Lock()
	for name := range m.settingUp {
		set[name] = true
	}
	m.mu.Unlock()
	for _, data := range append(m.publishedRecords(), m.blockRecords()...) {
		if data.LifecycleMode != string(storagev1.VolumeLifecycleEphemeral) && m.attachable(data.DriverName) {
			set[uniqueName(data.DriverName, data.VolumeHandle)] = true
		}
	}
	out := make([]corev1.UniqueVolumeName, 0, len(set))
	for name := range set {
		out = append(out, name)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return nil
	}
	return out
}

// publishedRecords reads the vol_data.json of every CSI volume published
// for a pod on this node, by either agent.
func (m *Manager) publishedRecords() []volData {
	return readRecords(filepath.Join(m.podCSIDir("*"), "*", volDataFile))
}

// readRecords reads every vol_data.json the glob pattern finds.
func readRecords(pattern string) []volData {
	paths, _ := filepath.Glob(pattern)
	var out []volData
	for _, p := range paths {
		var data volData
		if found, err := atomicfile.ReadJSON(p, &data); err == nil && found {
			out = append(out, data)
		}
	}
	return out
}

func uniqueName(driver, handle string) corev1.UniqueVolumeName {
	return corev1.UniqueVolumeName("kubernetes.io/csi/" + driver + "^" + handle)
}
