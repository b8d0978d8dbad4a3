package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/record"

	"github.com/bosun-dev/bosun/internal/csi"
	"github.com/bosun-dev/bosun/internal/downward"
	"github.com/bosun-dev/bosun/internal/mounts"
)

// Objects reads what volumes are made of.
type Objects interface {
	ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
	// Token returns a service account token bound to the pod.
	Token(ctx context.Context, pod *corev1.Pod, serviceAccount, audience string, expirationSeconds int64) (string, error)
}

// Volume is one set-up volume of a pod.
type Volume struct {
	Path     string // on the host
	ReadOnly bool   // content volumes are always mounted read-only
	HostPath bool   // a hostPath volume: subPath needs no containment check against our own folders
	// Image is an image volume's reference (no host folder: the runtime
	// mounts the image); the pod's sync pulls it and puts the pulled
	// image's reference here before the mounts are made.
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// Device is a raw block volume's device on the host (volumeMode
	// Block), which containers get through volumeDevices; Path is unset.
	Device string
}

// Manager sets volumes up under <root-dir>/pods/<uid>/volumes.
type Manager struct {
	RootDir     string                     // --root-dir
	Objects     Objects                    // ConfigMaps, Secrets, tokens
	Allocatable func() corev1.ResourceList // node allocatable for resourceFieldRef defaults
	Claims      Claims                     // PVCs and PVs; nil: claims are not supported
	CSI         CSI                        // CSI volumes; nil: CSI is not supported
	Recorder    record.EventRecorder       // volume events (node expansion); nil: none
	NodeName    string

	mu    sync.Mutex
	bound map[string]boundClaim // by pod UID/volume name
	// when each pod volume's claim was last looked at for a resize
	expandChecked map[string]time.Time
}

// UnsupportedError names a volume type Bosun cannot set up.
type UnsupportedError struct{ Volume, Type string }

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("volume %q has type %s, which this node does not support", e.Volume, e.Type)
}

func (m *Manager) podVolumesDir(pod *corev1.Pod) string {
	return filepath.Join(m.RootDir, "pods", string(pod.UID), "volumes")
}

// Setup makes every volume of the pod ready (again: content volumes are
// refreshed on each call) and returns them by name.
func (m *Manager) Setup(ctx context.Context, pod *corev1.Pod) (map[string]Volume, error) {
	out := map[string]Volume{}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		vol, err := m.setupOne(ctx, pod, v)
		if err != nil {
			return nil, fmt.Errorf("MountVolume.SetUp failed for volume %q : %w", v.Name, err)
		}
		out[v.Name] = vol
	}
	return out, nil
}

func (m *Manager) setupOne(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) (Volume, error) {
	gid := -1
	if sc := pod.Spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		gid = int(*sc.FSGroup)
	}
	dir := func(plugin string) string {
		return filepath.Join(m.podVolumesDir(pod), "kubernetes.io~"+plugin, v.Name)
	}
	switch {
	case v.Image != nil:
		return Volume{Image: v.Image.Reference, ImagePullPolicy: v.Image.PullPolicy, ReadOnly: true}, nil
	case v.EmptyDir != nil:
		return m.emptyDir(dir("empty-dir"), v.EmptyDir, gid)
	case v.HostPath != nil:
		return hostPath(v.HostPath)
	case v.PersistentVolumeClaim != nil, v.Ephemeral != nil:
		return m.claimVolume(ctx, pod, v)
	case v.CSI != nil && m.CSI != nil:
		path, err := m.CSI.SetUp(ctx, pod, csi.Volume{Name: v.Name, Inline: v.CSI})
		return Volume{Path: path, ReadOnly: v.CSI.ReadOnly != nil && *v.CSI.ReadOnly}, err
	case v.ConfigMap != nil:
		files, err := m.configMapFiles(ctx, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, mode(v.ConfigMap.DefaultMode, 0o644))
		return m.content(dir("configmap"), files, err, gid, false)
	case v.Secret != nil:
		files, err := m.secretFiles(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, mode(v.Secret.DefaultMode, 0o644))
		return m.content(dir("secret"), files, err, gid, true)
	case v.DownwardAPI != nil:
		files, err := m.downwardFiles(pod, v.DownwardAPI.Items, mode(v.DownwardAPI.DefaultMode, 0o644))
		return m.content(dir("downward-api"), files, err, gid, false)
	case v.Projected != nil:
		files, err := m.projectedFiles(ctx, pod, v.Projected)
		return m.content(dir("projected"), files, err, gid, true)
	}
	return Volume{}, &UnsupportedError{Volume: v.Name, Type: volumeType(v)}
}

func mode(m *int32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m) & 0o777
}

// content writes a content volume atomically, on tmpfs when it holds secrets.
func (m *Manager) content(dir string, files map[string]File, err error, gid int, tmpfs bool) (Volume, error) {
	if err != nil {
		return Volume{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Volume{}, err
	}
	if tmpfs && !mounts.IsMountPoint(dir) {
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
			return Volume{}, fmt.Errorf("failed to mount tmpfs at %s: %w", dir, err)
		}
	}
	if gid >= 0 {
		for p, f := range files {
			f.Mode |= 0o440
			files[p] = f
		}
	}
	if _, err := WriteAtomic(dir, files, gid); err != nil {
		return Volume{}, err
	}
	return Volume{Path: dir, ReadOnly: true}, nil
}

func (m *Manager) emptyDir(dir string, ed *corev1.EmptyDirVolumeSource, gid int) (Volume, error) {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return Volume{}, err
	}
	if ed.Medium == corev1.StorageMediumMemory && !mounts.IsMountPoint(dir) {
		// tmpfs's own default mode (1777, sticky) stays, as upstream leaves it.
		opts := ""
		if ed.SizeLimit != nil && ed.SizeLimit.Value() > 0 {
			opts = "size=" + strconv.FormatInt(ed.SizeLimit.Value(), 10)
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
			return Volume{}, fmt.Errorf("failed to mount tmpfs at %s: %w", dir, err)
		}
	}
	perm := os.FileMode(0o777)
	if fi, err := os.Stat(dir); err == nil {
		perm |= fi.Mode() & os.ModeSticky
	}
	if gid >= 0 {
		if err := os.Lchown(dir, -1, gid); err != nil {
			return Volume{}, err
		}
		perm |= os.ModeSetgid
	}
	if err := os.Chmod(dir, perm); err != nil {
		return Volume{}, err
	}
	return Volume{Path: dir}, nil
}

// hostPath checks the path against its type, creating it for the OrCreate types.
func hostPath(hp *corev1.HostPathVolumeSource) (Volume, error) {
	t := corev1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	fi, err := os.Stat(hp.Path)
	switch t {
	case corev1.HostPathDirectoryOrCreate:
		if os.IsNotExist(err) {
			if err := os.MkdirAll(hp.Path, 0o755); err != nil {
				return Volume{}, err
			}
			return Volume{Path: hp.Path, HostPath: true}, nil
		}
		t = corev1.HostPathDirectory
	case corev1.HostPathFileOrCreate:
		if os.IsNotExist(err) {
			if err := os.MkdirAll(filepath.Dir(hp.Path), 0o755); err != nil {
				return Volume{}, err
			}
			f, err := os.OpenFile(hp.Path, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return Volume{}, err
			}
			f.Close()
			return Volume{Path: hp.Path, HostPath: true}, nil
		}
		t = corev1.HostPathFile
	}
	if t == corev1.HostPathUnset {
		return Volume{Path: hp.Path, HostPath: true}, nil
	}
	if err != nil {
		return Volume{}, fmt.Errorf("hostPath type check failed: %s is not a %s", hp.Path, t)
	}
	ok := map[corev1.HostPathType]bool{
		corev1.HostPathDirectory: fi.IsDir(),
		corev1.HostPathFile:      fi.Mode().IsRegular(),
		corev1.HostPathSocket:    fi.Mode()&os.ModeSocket != 0,
		corev1.HostPathCharDev:   fi.Mode()&os.ModeCharDevice != 0,
		corev1.HostPathBlockDev:  fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0,
	}[t]
	if !ok {
		return Volume{}, fmt.Errorf("hostPath type check failed: %s is not a %s", hp.Path, t)
	}
	return Volume{Path: hp.Path, HostPath: true}, nil
}

func notFound(err error, optional *bool) bool {
	return apierrors.IsNotFound(err) && optional != nil && *optional
}

func (m *Manager) configMapFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional *bool, def os.FileMode) (map[string]File, error) {
	cm, err := m.Objects.ConfigMap(ctx, ns, name)
	if notFound(err, optional) {
		return map[string]File{}, nil
	}
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return project(data, items, optional, def, "configmap", name)
}

func (m *Manager) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional *bool, def os.FileMode) (map[string]File, error) {
	s, err := m.Objects.Secret(ctx, ns, name)
	if notFound(err, optional) {
		return map[string]File{}, nil
	}
	if err != nil {
		return nil, err
	}
	return project(s.Data, items, optional, def, "secret", name)
}

// project picks keys to paths: all keys by name, or the listed items.
func project(data map[string][]byte, items []corev1.KeyToPath, optional *bool, def os.FileMode, kind, name string) (map[string]File, error) {
	out := map[string]File{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = File{Data: v, Mode: def}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			return nil, fmt.Errorf("configuration error: %s %q has no key %q", kind, name, it.Key)
		}
		out[it.Path] = File{Data: v, Mode: mode(it.Mode, def)}
	}
	return out, nil
}

func (m *Manager) downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, def os.FileMode) (map[string]File, error) {
	out := map[string]File{}
	for _, it := range items {
		var val string
		var err error
		switch {
		case it.FieldRef != nil:
			val, err = downward.FieldValue(downward.Pod{Pod: pod}, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			val, err = downward.ResourceValue(pod, nil, it.ResourceFieldRef, m.allocatable())
		}
		if err != nil {
			return nil, err
		}
		out[it.Path] = File{Data: []byte(val), Mode: mode(it.Mode, def)}
	}
	return out, nil
}

func (m *Manager) allocatable() corev1.ResourceList {
	if m.Allocatable == nil {
		return nil
	}
	return m.Allocatable()
}

func (m *Manager) projectedFiles(ctx context.Context, pod *corev1.Pod, p *corev1.ProjectedVolumeSource) (map[string]File, error) {
	def := mode(p.DefaultMode, 0o644)
	out := map[string]File{}
	for _, src := range p.Sources {
		var files map[string]File
		var err error
		switch {
		case src.ConfigMap != nil:
			files, err = m.configMapFiles(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, def)
		case src.Secret != nil:
			files, err = m.secretFiles(ctx, pod.Namespace, src.Secret.Name, src.Secret.Items, src.Secret.Optional, def)
		case src.DownwardAPI != nil:
			files, err = m.downwardFiles(pod, src.DownwardAPI.Items, def)
		case src.ServiceAccountToken != nil:
			files, err = m.tokenFile(ctx, pod, src.ServiceAccountToken, def)
		default:
			return nil, fmt.Errorf("projected volume source of an unsupported type (clusterTrustBundle, podCertificate)")
		}
		if err != nil {
			return nil, err
		}
		for k, v := range files {
			out[k] = v
		}
	}
	return out, nil
}

func (m *Manager) tokenFile(ctx context.Context, pod *corev1.Pod, t *corev1.ServiceAccountTokenProjection, def os.FileMode) (map[string]File, error) {
	exp := int64(3600)
	if t.ExpirationSeconds != nil {
		exp = *t.ExpirationSeconds
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tok, err := m.Objects.Token(ctx, pod, sa, t.Audience, exp)
	if err != nil {
		return nil, fmt.Errorf("failed to fetch token: %w", err)
	}
	return map[string]File{t.Path: {Data: []byte(tok), Mode: def}}, nil
}

func volumeType(v *corev1.Volume) string {
	switch {
	case v.PersistentVolumeClaim != nil:
		return "persistentVolumeClaim"
	case v.CSI != nil:
		return "csi"
	case v.Ephemeral != nil:
		return "ephemeral"
	case v.NFS != nil:
		return "nfs"
	case v.ISCSI != nil:
		return "iscsi"
	case v.Image != nil:
		return "image"
	}
	return "unknown"
}

// Teardown unmounts and removes the pod's volume folders. It never follows
// a symlink a container may have planted: unmounts go deepest first, and
// removal deletes links themselves, not what they point at.
//
// The subPath binds under volume-subpaths go first, then the volumes; the
// pod's folder is left with no mount below it, or an error says which
// remain (nothing is removed through a mount).
func (m *Manager) Teardown(pod *corev1.Pod) error {
	podDir := filepath.Join(m.RootDir, "pods", string(pod.UID))
	if m.CSI != nil { // the drivers unpublish their own mounts first
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := m.CSI.TearDown(ctx, pod.UID)
		cancel()
		if err != nil {
			return fmt.Errorf("failed to unpublish CSI volumes: %w", err)
		}
	}
	// What the pod held (a ReadWriteOncePod volume among it) is let go once
	// its CSI volumes are unpublished.
	m.forget(pod.UID)
	var errs []error
	for _, mp := range mounts.Under(podDir) {
		if err := unix.Unmount(mp, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	if left := mounts.Under(podDir); len(left) > 0 {
		errs = append(errs, fmt.Errorf("still mounted: %s", strings.Join(left, ", ")))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(filepath.Join(podDir, "volume-subpaths")); err != nil {
		return err
	}
	return os.RemoveAll(m.podVolumesDir(pod))
}

// EmptyDirUsage is the disk each of the pod's disk-backed emptyDir volumes
// uses, in bytes (allocated blocks, as du counts them), by volume name.
func (m *Manager) EmptyDirUsage(pod *corev1.Pod) map[string]int64 {
	out := map[string]int64{}
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir == nil || v.EmptyDir.Medium == corev1.StorageMediumMemory {
			continue
		}
		out[v.Name] = diskUsage(filepath.Join(m.podVolumesDir(pod), "kubernetes.io~empty-dir", v.Name))
	}
	return out
}

// diskUsage sums the allocated blocks under dir, without following links or
// crossing into other filesystems mounted below it.
func diskUsage(dir string) int64 {
	root, err := os.Lstat(dir)
	if err != nil {
		return 0
	}
	rootDev := uint64(0)
	if st, ok := root.Sys().(*syscall.Stat_t); ok {
		rootDev = st.Dev
	}
	var total int64
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if st.Dev != rootDev {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		total += st.Blocks * 512
		return nil
	})
	return total
}
