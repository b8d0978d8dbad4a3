package podsource

import (
	"testing"

	"github.com/bosun-dev/bosun/internal/podsync"
)

// A manifest, whatever it holds, decodes into a pod whose names are safe to
// use in paths, or into an error; it never panics.
func FuzzDecodeStatic(f *testing.F) {
	for _, seed := range []string{
		"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: app, image: pause}]}\n",
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"kube-system"},"spec":{"containers":[{"name":"a","image":"i"}]}}`,
		"metadata: {name: ../x}\nspec: {containers: [{name: a, image: i}]}\n",
		"spec: {volumes: [{name: ..}], containers: [{name: a, image: i, volumeMounts: [{name: .., mountPath: /m}]}]}\nmetadata: {name: w}\n",
		"kind: Pod\n", "", "[", "metadata: {name: w}\nspec: {containers: [{name: a/b, image: i}]}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pod, err := DecodeStatic(data, "/etc/kubernetes/manifests/fuzz.yaml", "node-1", "file")
		if err != nil {
			return
		}
		if bad := podsync.UnsafePathName(pod); bad != "" {
			t.Fatalf("accepted a manifest whose %s cannot be a path component:\n%s", bad, data)
		}
		if errs := validateStatic(pod); len(errs) > 0 {
			t.Fatalf("accepted an invalid manifest: %v", errs)
		}
	})
}
