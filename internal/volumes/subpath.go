package volumes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/bosun-dev/bosun/internal/mounts"
)

// bindSubPath bind-mounts base/rel onto target so that the runtime is given
// a path nothing in the volume can redirect. rel was resolved and checked to
// stay inside base; here it is opened again beneath base with no symlink
// allowed on the way, so a container that swapped a component for a symlink
// since then (upstream CVE-2021-25741) gets an error, not the host's files.
// The descriptor, not the path, is what gets mounted.
func bindSubPath(base, rel, target string) error {
	baseFd, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open volume %s: %w", base, err)
	}
	defer func() { _ = unix.Close(baseFd) }()
	fd := baseFd
	if rel != "." && rel != "" {
		fd, err = unix.Openat2(baseFd, rel, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS})
		if err != nil {
			return fmt.Errorf("subPath %q changed while it was being mounted (a symlink on the way, or gone): %w", rel, err)
		}
		defer func() { _ = unix.Close(fd) }()
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return err
	}
	if mountedAt(target) {
		if err := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			return fmt.Errorf("unmount the earlier subPath bind %s: %w", target, err)
		}
	}
	if fi, err := os.Lstat(target); err == nil && (fi.Mode()&os.ModeSymlink != 0 || fi.IsDir() != (st.Mode&unix.S_IFMT == unix.S_IFDIR)) {
		if err := os.Remove(target); err != nil {
			return err
		}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := os.Mkdir(target, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	} else {
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|unix.O_NOFOLLOW, 0o640)
		if err != nil {
			return err
		}
		_ = f.Close()
	}
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind subPath %q to %s: %w", rel, target, err)
	}
	return nil
}

// mountedAt tells whether path is a mount point.
func mountedAt(path string) bool { return mounts.At(path) }
