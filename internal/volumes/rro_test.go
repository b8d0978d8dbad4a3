package volumes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestRecursiveReadOnlyFollowsRequestAndRuntime(t *testing.T) {
	vols := map[string]Volume{"v": {Path: t.TempDir()}}
	mode := func(m corev1.RecursiveReadOnlyMode) *corev1.RecursiveReadOnlyMode { return &m }
	bidi := corev1.MountPropagationBidirectional
	cases := []struct {
		name      string
		mount     corev1.VolumeMount
		supported bool
		want      bool
		err       string
	}{
		{"not asked", corev1.VolumeMount{ReadOnly: true}, true, false, ""},
		{"disabled", corev1.VolumeMount{ReadOnly: true, RecursiveReadOnly: mode(corev1.RecursiveReadOnlyDisabled)}, true, false, ""},
		{"if possible, supported", corev1.VolumeMount{ReadOnly: true, RecursiveReadOnly: mode(corev1.RecursiveReadOnlyIfPossible)}, true, true, ""},
		{"if possible, unsupported", corev1.VolumeMount{ReadOnly: true, RecursiveReadOnly: mode(corev1.RecursiveReadOnlyIfPossible)}, false, false, ""},
		{"enabled, supported", corev1.VolumeMount{ReadOnly: true, RecursiveReadOnly: mode(corev1.RecursiveReadOnlyEnabled)}, true, true, ""},
		{"enabled, unsupported", corev1.VolumeMount{ReadOnly: true, RecursiveReadOnly: mode(corev1.RecursiveReadOnlyEnabled)}, false, false, "not supported by the runtime"},
		{"enabled on a writable mount", corev1.VolumeMount{RecursiveReadOnly: mode(corev1.RecursiveReadOnlyEnabled)}, true, false, "it is not read-only"},
		{"enabled with propagation", corev1.VolumeMount{ReadOnly: true, MountPropagation: &bidi, RecursiveReadOnly: mode(corev1.RecursiveReadOnlyEnabled)}, true, false, "not compatible with propagation"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.mount.Name, tc.mount.MountPath = "v", "/m"
			got, err := Mounts(&corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{tc.mount}}, vols, func(s string) string { return s }, tc.supported, "")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), `volume "v"`) {
					t.Fatalf("error %v, want one naming the volume and %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got[0].RecursiveReadOnly != tc.want {
				t.Fatalf("RecursiveReadOnly = %v, want %v", got[0].RecursiveReadOnly, tc.want)
			}
		})
	}
}

func TestImageVolumeMountsTheImageReadOnly(t *testing.T) {
	vols := map[string]Volume{"img": {Image: "sha256:abc", ReadOnly: true}}
	c := &corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{{Name: "img", MountPath: "/volume", SubPath: "etc"}}}
	got, err := Mounts(c, vols, func(s string) string { return s }, false, "")
	if err != nil {
		t.Fatal(err)
	}
	m := got[0]
	if m.GetImage().GetImage() != "sha256:abc" || m.HostPath != "" || !m.Readonly || m.ImageSubPath != "etc" || m.ContainerPath != "/volume" {
		t.Fatalf("mount %+v, want the image read-only at /volume with subPath etc and no host path", m)
	}
	c.VolumeMounts[0].SubPath = "../etc"
	if _, err := Mounts(c, vols, func(s string) string { return s }, false, ""); err == nil {
		t.Fatal("an image subPath with .. was accepted")
	}
}

func TestEmptyDirUsageCountsDiskBackedVolumes(t *testing.T) {
	m := &Manager{RootDir: t.TempDir()}
	pod := &corev1.Pod{}
	pod.UID = "u"
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "disk", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
	}
	dir := filepath.Join(m.RootDir, "pods", "u", "volumes", "kubernetes.io~empty-dir", "disk", "sub")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	got := m.EmptyDirUsage(pod)
	if got["disk"] < 1<<20 || got["disk"] > 2<<20 {
		t.Errorf("disk emptyDir with a 1 MiB file uses %d bytes", got["disk"])
	}
	if _, ok := got["mem"]; ok {
		t.Error("a memory-backed emptyDir was counted as disk")
	}
}
