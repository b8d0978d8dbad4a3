package podsource

import (
	"strings"
	"testing"
)

func TestDecodeStaticRefusesNamesThatBecomePaths(t *testing.T) {
	const good = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: kube-system}
spec:
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: app
    image: registry.k8s.io/pause:3.10.2
    volumeMounts: [{name: data, mountPath: /data, subPath: a/b}]
`
	if _, err := DecodeStatic([]byte(good), "/etc/manifests/web.yaml", "node-1", "file"); err != nil {
		t.Fatalf("a good manifest was refused: %v", err)
	}
	cases := []struct{ name, from, to, want string }{
		{"volume traversal", "{name: data, emptyDir: {}}", "{name: ../../../../etc, emptyDir: {}}", "spec.volumes[0].name"},
		{"container traversal", "  - name: app", "  - name: ../c", "spec.containers[0].name"},
		{"pod name with slash", "name: web,", "name: a/b,", "metadata.name"},
		{"namespace traversal", "namespace: kube-system", "namespace: ../x", "metadata.namespace"},
		{"mount of no volume", "[{name: data, mountPath", "[{name: other, mountPath", "spec.containers[0].volumeMounts[0].name"},
		{"subPath escape", "subPath: a/b", "subPath: ../../etc", "spec.containers[0].volumeMounts[0].subPath"},
		{"absolute subPath", "subPath: a/b", "subPath: /etc", "must be a relative path"},
		{"duplicate volume", "[{name: data, emptyDir: {}}]", "[{name: data, emptyDir: {}}, {name: data, emptyDir: {}}]", "spec.volumes[1].name: Duplicate value"},
		{"no image", "image: registry.k8s.io/pause:3.10.2", "image: ''", "spec.containers[0].image: Required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(good, tc.from, tc.to, 1)
			if bad == good {
				t.Fatalf("the case changes nothing")
			}
			_, err := DecodeStatic([]byte(bad), "/etc/manifests/web.yaml", "node-1", "file")
			if err == nil {
				t.Fatalf("accepted:\n%s", bad)
			}
			for _, want := range []string{"/etc/manifests/web.yaml", tc.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
}
