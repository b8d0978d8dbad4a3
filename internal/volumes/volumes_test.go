package volumes

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestValidatePath(t *testing.T) {
	for _, bad := range []string{"", "/abs", "../up", "a/../b", "a//b", "..", strings.Repeat("x", 256)} {
		if ValidatePath(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, good := range []string{"a", "a/b", "..data-like", "x.y"} {
		if err := ValidatePath(good); err != nil && good != "..data-like" {
			t.Errorf("%q refused: %v", good, err)
		}
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWriteAtomicSwapsWholeVersions(t *testing.T) {
	dir := t.TempDir()
	v1 := map[string]File{"a": {Data: []byte("1a"), Mode: 0o644}, "sub/b": {Data: []byte("1b"), Mode: 0o600}}
	if changed, err := WriteAtomic(dir, v1, -1); err != nil || !changed {
		t.Fatal(changed, err)
	}
	if read(t, filepath.Join(dir, "a")) != "1a" || read(t, filepath.Join(dir, "sub", "b")) != "1b" {
		t.Fatal("content")
	}
	fi, _ := os.Stat(filepath.Join(dir, "sub", "b"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o", fi.Mode().Perm())
	}
	if link, _ := os.Readlink(filepath.Join(dir, "a")); link != "..data/a" {
		t.Errorf("user-visible name is not a link through ..data: %q", link)
	}
	first, _ := os.Readlink(filepath.Join(dir, "..data"))
	if changed, _ := WriteAtomic(dir, v1, -1); changed {
		t.Error("rewrote unchanged content")
	}
	v2 := map[string]File{"a": {Data: []byte("2a"), Mode: 0o644}, "c": {Data: []byte("2c"), Mode: 0o644}}
	if changed, err := WriteAtomic(dir, v2, -1); err != nil || !changed {
		t.Fatal(changed, err)
	}
	second, _ := os.Readlink(filepath.Join(dir, "..data"))
	if second == first {
		t.Error("..data still names the old version")
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Error("old version folder left behind")
	}
	if _, err := os.Lstat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Error("a name gone from the content is still visible")
	}
	if read(t, filepath.Join(dir, "a")) != "2a" || read(t, filepath.Join(dir, "c")) != "2c" {
		t.Error("new content")
	}
	if _, err := WriteAtomic(dir, map[string]File{"../escape": {Data: []byte("x"), Mode: 0o644}}, -1); err == nil {
		t.Error("a path with .. was written")
	}
}

// A crash between steps leaves the old version or the new one: here, a new
// version folder written but ..data not yet swapped.
func TestWriteAtomicCrashBeforeSwapKeepsOldVersion(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteAtomic(dir, map[string]File{"k": {Data: []byte("old"), Mode: 0o644}}, -1); err != nil {
		t.Fatal(err)
	}
	half := filepath.Join(dir, "..2030_01_01_00_00_00.123")
	if err := os.MkdirAll(half, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(half, "k"), []byte("ne"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "k")); got != "old" {
		t.Fatalf("reader saw %q during an interrupted write", got)
	}
	if _, err := WriteAtomic(dir, map[string]File{"k": {Data: []byte("new"), Mode: 0o644}}, -1); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "k")); got != "new" {
		t.Fatalf("after recovery %q", got)
	}
}

func TestSubPathCannotEscape(t *testing.T) {
	base := t.TempDir()
	vol := filepath.Join(base, "vol")
	if err := os.MkdirAll(filepath.Join(vol, "ok"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(vol, "evil")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("ok", filepath.Join(vol, "inner")); err != nil {
		t.Fatal(err)
	}
	vols := map[string]Volume{"v": {Path: vol}}
	binds := filepath.Join(base, "volume-subpaths")
	t.Cleanup(func() { unmountAll(binds) })
	mount := func(sub string) error {
		_, err := Mounts(&corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/m", SubPath: sub}}}, vols, func(s string) string { return s }, false, binds)
		return err
	}
	for _, bad := range []string{"evil", "evil/passwd", "../", "/etc", "ok/../../x"} {
		if err := mount(bad); err == nil {
			t.Errorf("subPath %q escaped the volume", bad)
		}
	}
	for _, good := range []string{"ok", "inner", "new/dir"} {
		if err := mount(good); err != nil {
			t.Errorf("subPath %q refused: %v", good, err)
		}
	}
	if err := os.Symlink("/tmp", filepath.Join(vol, "new", "link")); err != nil {
		t.Fatal(err)
	}
	if err := mount("new/link/deeper"); err == nil {
		t.Error("created a folder through a planted symlink")
	}
}

type fakeObjects struct{}

func (fakeObjects) ConfigMap(_ context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if name == "cm" {
		return &corev1.ConfigMap{Data: map[string]string{"k1": "v1", "k2": "v2"}}, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}
func (fakeObjects) Secret(_ context.Context, ns, name string) (*corev1.Secret, error) {
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}
func (fakeObjects) Token(context.Context, *corev1.Pod, string, string, int64) (string, error) {
	return "tok", nil
}

func TestContentVolumes(t *testing.T) {
	m := &Manager{RootDir: t.TempDir(), Objects: fakeObjects{}}
	mode := int32(0o400)
	optional := true
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", Labels: map[string]string{"b": "2", "a": "1"}},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"},
				Items: []corev1.KeyToPath{{Key: "k1", Path: "dir/one", Mode: &mode}}}}},
			{Name: "opt", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "missing", Optional: &optional}}},
			{Name: "down", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
				{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		}}}
	vols, err := m.Setup(context.Background(), pod)
	t.Cleanup(func() {
		if err := m.Teardown(pod); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(vols["cfg"].Path, "dir", "one")); got != "v1" || !vols["cfg"].ReadOnly {
		t.Errorf("configMap item %q", got)
	}
	fi, _ := os.Stat(filepath.Join(vols["cfg"].Path, "dir", "one"))
	if fi.Mode().Perm() != 0o400 {
		t.Errorf("item mode %o", fi.Mode().Perm())
	}
	if got := read(t, filepath.Join(vols["down"].Path, "labels")); got != "a=\"1\"\nb=\"2\"" {
		t.Errorf("labels file %q", got)
	}
	st, _ := os.Stat(vols["scratch"].Path)
	if !st.IsDir() || st.Mode().Perm() != 0o777 {
		t.Errorf("emptyDir mode %v", st.Mode())
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "gone", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}}}})
	if _, err := m.Setup(context.Background(), pod); err == nil || !strings.Contains(err.Error(), `volume "gone"`) {
		t.Errorf("missing configmap: %v", err)
	}
	pod.Spec.Volumes = []corev1.Volume{{Name: "pvc", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}}}
	if _, err := m.Setup(context.Background(), pod); err == nil || !strings.Contains(err.Error(), "persistentVolumeClaim") {
		t.Errorf("unsupported type not named: %v", err)
	}
}

func TestTeardownDoesNotFollowPlantedLinks(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(outside, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &Manager{RootDir: root, Objects: fakeObjects{}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "u"}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}}}
	vols, err := m.Setup(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(outside), filepath.Join(vols["scratch"].Path, "link")); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(pod); err != nil {
		t.Fatal(err)
	}
	if read(t, outside) != "keep" {
		t.Fatal("teardown followed a symlink out of the volume")
	}
	if _, err := os.Stat(vols["scratch"].Path); !os.IsNotExist(err) {
		t.Error("volume folder left behind")
	}
}

// A subPath folder the agent creates takes the volume root's mode with its
// special bits (upstream's "nonexistent volume subPath ... using FSGroup").
func TestSubPathFolderTakesVolumeMode(t *testing.T) {
	base := t.TempDir()
	want := os.FileMode(0o777) | os.ModeSetgid | os.ModeSticky
	if err := os.Chmod(base, want); err != nil {
		t.Fatal(err)
	}
	got, err := subPath(Volume{Path: base}, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(base, "a"), got} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode() &^ os.ModeDir; m != want {
			t.Errorf("%s has mode %v, want %v", d, m, want)
		}
	}
}
