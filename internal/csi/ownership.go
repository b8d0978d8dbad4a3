package csi

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
)

func podFSGroup(pod *corev1.Pod) *int64 {
	if sc := pod.Spec.SecurityContext; sc != nil {
		return sc.FSGroup
	}
	return nil
}

func fsGroupChangePolicy(pod *corev1.Pod) *corev1.PodFSGroupChangePolicy {
	if sc := pod.Spec.SecurityContext; sc != nil {
		return sc.FSGroupChangePolicy
	}
	return nil
}

// applyFSGroup is upstream's supportsFSGroup: whether the agent changes a
// published volume's group to the pod's fsGroup, by the CSIDriver's
// fsGroupPolicy (ReadWriteOnceWithFSType when unset).
func applyFSGroup(obj *storagev1.CSIDriver, s spec, fsGroup *int64) bool {
	if fsGroup == nil || s.readOnly {
		return false
	}
	policy := storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy
	if obj != nil && obj.Spec.FSGroupPolicy != nil {
		policy = *obj.Spec.FSGroupPolicy
	}
	switch {
	case policy == storagev1.NoneFSGroupPolicy:
		return false
	case policy == storagev1.FileFSGroupPolicy:
		return true
	case s.fsType == "":
		return false
	case s.mode == storagev1.VolumeLifecycleEphemeral:
		return true // inline volumes are published ReadWriteOnce
	}
	for _, m := range s.accessModes {
		if m == corev1.ReadWriteOnce {
			return true
		}
	}
	return false
}

// SetOwnership gives every file under dir the group gid, group read (and
// write unless readOnly) and setgid folders, as upstream's
// SetVolumeOwnership does. With the OnRootMismatch policy a root that
// already has the group and the bits is left alone. Symlinks get the group
// but are never followed.
func SetOwnership(dir string, gid int64, policy *corev1.PodFSGroupChangePolicy, readOnly bool) error {
	mask := os.FileMode(0o660)
	if readOnly {
		mask = 0o440
	}
	if policy != nil && *policy == corev1.FSGroupChangeOnRootMismatch && !needsChange(dir, gid, mask) {
		return nil
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if err := os.Lchown(path, -1, int(gid)); err != nil {
			return err
		}
		if info.Mode()&os.ModeSymlink != 0 {
			return nil
		}
		m := mask
		if info.IsDir() {
			m |= os.ModeSetgid | 0o110
		}
		return os.Chmod(path, info.Mode()|m)
	})
}

func needsChange(dir string, gid int64, mask os.FileMode) bool {
	info, err := os.Stat(dir)
	if err != nil {
		return true
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || int64(st.Gid) != gid {
		return true
	}
	want := mask | os.ModeSetgid | 0o110
	return info.Mode()&want != want
}
