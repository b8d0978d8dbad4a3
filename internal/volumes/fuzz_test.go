package volumes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// listAll lists root and every path below it.
func listAll(t *testing.T, root string) []string {
	var out []string
	_ = filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// The atomic writer's keys come from ConfigMap, Secret and downward API item
// paths: whatever they hold, nothing is written outside the volume folder.
func FuzzWriteAtomicKeys(f *testing.F) {
	for _, seed := range [][2]string{{"a", "b/c"}, {"../x", "y"}, {"..data", "z"}, {"a", "a/b"}, {"/etc/x", ""}, {"a//b", "./c"}, {"..2026_01", "d/../../e"}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, k1, k2 string) {
		base := t.TempDir()
		dir := filepath.Join(base, "vol")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		files := map[string]File{k1: {Data: []byte("1"), Mode: 0o644}, k2: {Data: []byte("2"), Mode: 0o644}}
		_, err := WriteAtomic(dir, files, -1)
		for _, k := range []string{k1, k2} {
			if ValidatePath(k) != nil && err == nil {
				t.Fatalf("keys %q, %q: an invalid path was accepted", k1, k2)
			}
		}
		for _, p := range listAll(t, base) {
			if p != base && p != dir && !strings.HasPrefix(p, dir+string(filepath.Separator)) {
				t.Fatalf("keys %q, %q: wrote %s outside the volume", k1, k2, p)
			}
		}
	})
}

// A subPath, whatever it holds, resolves inside its volume or fails; it
// never names a host path outside.
func FuzzSubPath(f *testing.F) {
	for _, seed := range []string{"a", "a/b", "../etc", "/etc", "link/x", "a/../../b", ".", "link", "a//b"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, sub string) {
		base := t.TempDir()
		vol := filepath.Join(base, "vol")
		if err := os.MkdirAll(filepath.Join(vol, "a"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(base, filepath.Join(vol, "link")); err != nil {
			t.Fatal(err)
		}
		resolvedVol, _ := filepath.EvalSymlinks(vol)
		binds := filepath.Join(base, "volume-subpaths")
		defer unmountAll(binds)
		c := &corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/m", SubPath: sub}}}
		mounts, err := Mounts(c, map[string]Volume{"v": {Path: vol}}, func(s string) string { return s }, false, binds)
		if err != nil || sub == "" { // no subPath: the volume itself
			return
		}
		host := mounts[0].HostPath
		if !strings.HasPrefix(host, binds+string(filepath.Separator)) {
			t.Fatalf("subPath %q: the runtime was given %s, not a bind under %s", sub, host, binds)
		}
		// The bind shows a file of the volume: the same inode as the subPath
		// resolved inside it.
		resolved, err := filepath.EvalSymlinks(filepath.Join(vol, sub))
		if err != nil || (resolved != resolvedVol && !strings.HasPrefix(resolved, resolvedVol+string(filepath.Separator))) {
			t.Fatalf("subPath %q was mounted though it resolves to %s (%v), outside the volume", sub, resolved, err)
		}
		if !sameFile(t, host, resolved) {
			t.Fatalf("subPath %q: the bind %s is not %s", sub, host, resolved)
		}
	})
}
