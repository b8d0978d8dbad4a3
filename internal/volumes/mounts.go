package volumes

import (
	"fmt"
	"golang.org/x/sys/unix"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var propagation = map[corev1.MountPropagationMode]runtimeapi.MountPropagation{
	corev1.MountPropagationNone:            runtimeapi.MountPropagation_PROPAGATION_PRIVATE,
	corev1.MountPropagationHostToContainer: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER,
	corev1.MountPropagationBidirectional:   runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL,
}

// Mounts maps a container's volumeMounts to CRI mounts. subPath and
// subPathExpr (expanded with expand) must stay inside their volume after
// symlinks are resolved: a container that swapped a subPath folder for a
// symlink cannot make the node mount something outside the volume
// (upstream CVE-2017-1002101, CVE-2021-25741).
//
// A read-only mount asking for recursiveReadOnly gets it where the runtime
// handler supports it (rro); Enabled where it does not is an error.
//
// A subPath is bind-mounted to subPathRoot/<volume>/<container>/<index> (the
// upstream kubelet's layout under <root-dir>/pods/<uid>/volume-subpaths) from
// a descriptor opened beneath the volume, and the runtime is given that.
// Devices is the raw block devices a container asks for (volumeDevices):
// each volume's device on the host at the container's devicePath, read and
// write, or read only for a read-only volume, as upstream.
func Devices(c *corev1.Container, vols map[string]Volume) ([]*runtimeapi.Device, error) {
	var out []*runtimeapi.Device
	for _, vd := range c.VolumeDevices {
		vol, ok := vols[vd.Name]
		if !ok {
			return nil, fmt.Errorf("volumeDevice %q of container %q names no volume of the pod", vd.Name, c.Name)
		}
		if vol.Device == "" {
			return nil, fmt.Errorf("volume %q has volumeMode Filesystem, but is specified in volumeDevices of container %q", vd.Name, c.Name)
		}
		perm := "mrw"
		if vol.ReadOnly {
			perm = "r"
		}
		out = append(out, &runtimeapi.Device{ContainerPath: vd.DevicePath, HostPath: vol.Device, Permissions: perm})
	}
	return out, nil
}

func Mounts(c *corev1.Container, vols map[string]Volume, expand func(string) string, rro bool, subPathRoot string) ([]*runtimeapi.Mount, error) {
	var out []*runtimeapi.Mount
	for i, vm := range c.VolumeMounts {
		vol, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %q of container %q names no volume of the pod", vm.Name, c.Name)
		}
		if vol.Device != "" {
			return nil, fmt.Errorf("volume %q has volumeMode Block, but is specified in volumeMounts of container %q", vm.Name, c.Name)
		}
		host := vol.Path
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			sub = expand(vm.SubPathExpr)
		}
		if vol.Image != "" {
			// The runtime mounts the image itself, read-only; a subPath is a
			// folder inside the image, which the runtime resolves there.
			if sub != "" {
				if err := ValidatePath(sub); err != nil {
					return nil, fmt.Errorf("image volume %q of container %q: subPath: %w", vm.Name, c.Name, err)
				}
			}
			out = append(out, &runtimeapi.Mount{ContainerPath: vm.MountPath, Image: &runtimeapi.ImageSpec{Image: vol.Image},
				ImageSubPath: sub, Readonly: true})
			continue
		}
		if sub != "" {
			resolved, err := subPath(vol, sub)
			if err != nil {
				return nil, fmt.Errorf("failed to prepare subPath for volumeMount %q of container %q: %w", vm.Name, c.Name, err)
			}
			if subPathRoot == "" {
				return nil, fmt.Errorf("volumeMount %q of container %q: no folder for subPath mounts", vm.Name, c.Name)
			}
			base, err := filepath.EvalSymlinks(vol.Path)
			if err != nil {
				return nil, err
			}
			rel, err := filepath.Rel(base, resolved)
			if err != nil {
				return nil, err
			}
			target := filepath.Join(subPathRoot, vm.Name, c.Name, strconv.Itoa(i))
			if err := bindSubPath(base, rel, target); err != nil {
				return nil, fmt.Errorf("failed to prepare subPath for volumeMount %q of container %q: %w", vm.Name, c.Name, err)
			}
			host = target
		}
		m := &runtimeapi.Mount{ContainerPath: vm.MountPath, HostPath: host, Readonly: vm.ReadOnly || vol.ReadOnly}
		if vm.MountPropagation != nil {
			m.Propagation = propagation[*vm.MountPropagation]
		}
		recursive, err := recursiveReadOnly(vm, rro)
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", c.Name, err)
		}
		m.RecursiveReadOnly = recursive
		out = append(out, m)
	}
	return out, nil
}

func subPath(vol Volume, sub string) (string, error) {
	if err := ValidatePath(sub); err != nil {
		return "", err
	}
	base, err := filepath.EvalSymlinks(vol.Path)
	if err != nil {
		return "", err
	}
	full := filepath.Join(vol.Path, sub)
	if _, err := os.Lstat(full); os.IsNotExist(err) && !vol.ReadOnly {
		// Created inside the volume, one segment at a time, never through a link.
		if err := mkdirInside(base, sub); err != nil {
			return "", err
		}
	}
	resolved, err := filepath.EvalSymlinks(full)
	if err != nil {
		return "", err
	}
	if resolved != base && !strings.HasPrefix(resolved, base+string(filepath.Separator)) {
		return "", fmt.Errorf("subPath %q resolves to %s, outside the volume", sub, resolved)
	}
	return resolved, nil
}

// mkdirInside creates base/sub folder by folder, refusing symlinks on the way.
// New folders get the volume root's mode, special bits included (an fsGroup
// volume's setgid, tmpfs's sticky bit), as upstream creates them.
func mkdirInside(base, sub string) error {
	perm := os.FileMode(0o777)
	if fi, err := os.Stat(base); err == nil {
		perm = fi.Mode() & (os.ModePerm | os.ModeSetgid | os.ModeSetuid | os.ModeSticky)
	}
	cur := base
	for _, seg := range strings.Split(sub, "/") {
		cur = filepath.Join(cur, seg)
		fi, err := os.Lstat(cur)
		switch {
		case os.IsNotExist(err):
			if err := os.Mkdir(cur, 0o700); err != nil {
				return err
			}
			if err := chmodNoFollow(cur, perm); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&os.ModeSymlink != 0:
			return fmt.Errorf("subPath component %s is a symlink", cur)
		}
	}
	return nil
}

// chmodNoFollow changes a folder's mode through a descriptor opened without
// following links, so a folder swapped for a link meanwhile is refused.
func chmodNoFollow(dir string, perm os.FileMode) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer func() { _ = unix.Close(fd) }()
	mode := uint32(perm.Perm())
	if perm&os.ModeSetgid != 0 {
		mode |= unix.S_ISGID
	}
	if perm&os.ModeSetuid != 0 {
		mode |= unix.S_ISUID
	}
	if perm&os.ModeSticky != 0 {
		mode |= unix.S_ISVTX
	}
	return unix.Fchmod(fd, mode)
}

// recursiveReadOnly decides a mount's recursiveReadOnly as upstream does: only
// on a read-only mount without propagation; IfPossible follows the runtime,
// Enabled needs it.
func recursiveReadOnly(vm corev1.VolumeMount, supported bool) (bool, error) {
	if vm.RecursiveReadOnly == nil || *vm.RecursiveReadOnly == corev1.RecursiveReadOnlyDisabled {
		return false, nil
	}
	if !vm.ReadOnly {
		return false, fmt.Errorf("volume %q requested recursive read-only mode, but it is not read-only", vm.Name)
	}
	if vm.MountPropagation != nil && *vm.MountPropagation != corev1.MountPropagationNone {
		return false, fmt.Errorf("volume %q requested recursive read-only mode, but it is not compatible with propagation %q", vm.Name, *vm.MountPropagation)
	}
	switch *vm.RecursiveReadOnly {
	case corev1.RecursiveReadOnlyIfPossible:
		return supported, nil
	case corev1.RecursiveReadOnlyEnabled:
		if !supported {
			return false, fmt.Errorf("volume %q requested recursive read-only mode, but it is not supported by the runtime", vm.Name)
		}
		return true, nil
	}
	return false, fmt.Errorf("volume %q: unknown recursive read-only mode %q", vm.Name, *vm.RecursiveReadOnly)
}
