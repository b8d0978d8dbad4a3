package volumes

import (
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
			got, err := Mounts(&corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{tc.mount}}, vols, func(s string) string { return s }, tc.supported)
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
