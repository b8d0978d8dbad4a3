package volumes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/bosun-dev/bosun/internal/mounts"
)

func unmountAll(dir string) {
	for _, mp := range mounts.Under(dir) {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(b, &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// The runtime gets a bind of the subPath, made from a descriptor: content
// through it is the volume's, and the bind stays the checked folder.
func TestSubPathIsBoundFromTheVolume(t *testing.T) {
	base := t.TempDir()
	vol := filepath.Join(base, "vol")
	if err := os.MkdirAll(filepath.Join(vol, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "data", "f"), []byte("inside"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "conf"), []byte("a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	binds := filepath.Join(base, "volume-subpaths")
	t.Cleanup(func() { unmountAll(binds) })
	c := &corev1.Container{Name: "app", VolumeMounts: []corev1.VolumeMount{
		{Name: "v", MountPath: "/d", SubPath: "data"}, {Name: "v", MountPath: "/etc/conf", SubPath: "conf"}}}
	got, err := Mounts(c, map[string]Volume{"v": {Path: vol}}, func(s string) string { return s }, false, binds)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(binds, "v", "app", "0"); got[0].HostPath != want {
		t.Fatalf("host path %s, want the bind %s", got[0].HostPath, want)
	}
	if b, err := os.ReadFile(filepath.Join(got[0].HostPath, "f")); err != nil || string(b) != "inside" {
		t.Fatalf("through the folder bind: %q %v", b, err)
	}
	if b, err := os.ReadFile(got[1].HostPath); err != nil || string(b) != "a file" {
		t.Fatalf("through the file bind: %q %v", b, err)
	}
	// A second start of the container binds again over the first.
	if _, err := Mounts(c, map[string]Volume{"v": {Path: vol}}, func(s string) string { return s }, false, binds); err != nil {
		t.Fatalf("binding again: %v", err)
	}
	if n := len(mounts.Under(binds)); n != 2 {
		t.Fatalf("%d binds after a second start, want 2", n)
	}
}

// A component swapped for a symlink to / between the check and the mount
// (what a container sharing the volume does in a loop) makes the bind fail;
// it never mounts the host's root.
func TestSubPathSwappedForASymlinkIsNotMounted(t *testing.T) {
	base := t.TempDir()
	vol := filepath.Join(base, "vol")
	if err := os.MkdirAll(filepath.Join(vol, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	resolvedVol, err := filepath.EvalSymlinks(vol)
	if err != nil {
		t.Fatal(err)
	}
	// The check passed for a/b; then a becomes a link to /.
	if err := os.RemoveAll(filepath.Join(vol, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(vol, "a")); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(base, "binds", "v", "c", "0")
	t.Cleanup(func() { unmountAll(filepath.Join(base, "binds")) })
	err = bindSubPath(resolvedVol, "a/b", target)
	if err == nil || !strings.Contains(err.Error(), "changed while it was being mounted") {
		t.Fatalf("bind after the swap: %v, want it refused", err)
	}
	if mountedAt(target) {
		t.Fatal("something was mounted at the target")
	}
}

// Teardown unmounts the subPath binds before removing anything, so the
// volume's content is never deleted through a bind.
func TestTeardownUnmountsSubPathBindsFirst(t *testing.T) {
	root := t.TempDir()
	m := &Manager{RootDir: root}
	pod := &corev1.Pod{}
	pod.UID = "u"
	hostDir := filepath.Join(root, "host-data") // a hostPath volume's folder
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	binds := filepath.Join(root, "pods", "u", "volume-subpaths")
	c := &corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{{Name: "h", MountPath: "/h", SubPath: "."}}}
	if _, err := Mounts(c, map[string]Volume{"h": {Path: hostDir, HostPath: true}}, func(s string) string { return s }, false, binds); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(pod); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(hostDir, "keep")); err != nil {
		t.Fatalf("the hostPath volume's file is gone after teardown: %v", err)
	}
	if _, err := os.Stat(binds); !os.IsNotExist(err) {
		t.Fatalf("volume-subpaths left: %v", err)
	}
}
